//! Pre-norm transformer block (dapt-spec.md §3.3) and its DAPT form (§4.3): the same frozen
//! weights, with TFTS units, a Dynamic Adapter and an internal prompt when `dapt` parts exist.

use super::linear::Linear;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::adapter::DynamicAdapter;
use super::layers::{ForwardCtx, LayerNorm, Tfts, gelu, linear};

#[derive(Module, Debug)]
pub struct Attention {
    /// No bias (official).
    pub qkv: Linear,
    pub proj: Linear,
    /// DAPT: on the raw 3C qkv output, before the q/k/v split.
    pub tfts_1: Option<Tfts>,
    /// DAPT: on the proj output.
    pub tfts_2: Option<Tfts>,
    #[module(skip)]
    pub num_heads: usize,
}

impl Attention {
    pub fn new(dim: usize, num_heads: usize, dapt: bool, device: &Device) -> Self {
        Self {
            qkv: linear(dim, 3 * dim, false, device),
            proj: linear(dim, dim, true, device),
            tfts_1: dapt.then(|| Tfts::new(3 * dim, device)),
            tfts_2: dapt.then(|| Tfts::new(dim, device)),
            num_heads,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mut qkv = self.qkv.forward(x); // [b, t, 3c]
        if let Some(tf) = &self.tfts_1 {
            qkv = tf.forward(qkv);
        }
        let out = super::attention::attention_core(qkv, self.num_heads);
        let mut out = self.proj.forward(out);
        if let Some(tf) = &self.tfts_2 {
            out = tf.forward(out);
        }
        out
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    /// DAPT: on the fc1 output, before GELU.
    pub tfts_1: Option<Tfts>,
    /// DAPT: on the fc2 output.
    pub tfts_2: Option<Tfts>,
}

impl Mlp {
    pub fn new(dim: usize, dapt: bool, device: &Device) -> Self {
        Self {
            fc1: linear(dim, 4 * dim, true, device),
            fc2: linear(4 * dim, dim, true, device),
            tfts_1: dapt.then(|| Tfts::new(4 * dim, device)),
            tfts_2: dapt.then(|| Tfts::new(dim, device)),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.fc1.forward(x);
        // DAPT: TFTS and GELU as one pass over the `[b, t, 4c]` hidden layer
        let h = match &self.tfts_1 {
            Some(tf) => super::scaled_gelu::scaled_gelu(h, tf.gamma.val(), tf.beta.val()),
            None => gelu(h),
        };
        let mut out = self.fc2.forward(h);
        if let Some(tf) = &self.tfts_2 {
            out = tf.forward(out);
        }
        out
    }
}

/// timm's stochastic-depth schedule: `linspace(0, rate, depth)` by block index.
pub fn drop_path_rates(rate: f64, depth: usize) -> Vec<f64> {
    (0..depth)
        .map(|i| {
            if depth > 1 {
                rate * i as f64 / (depth - 1) as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// `depth` blocks with the linspace drop-path schedule; with DAPT parts when `adapter`
/// (rank, bottleneck dropout) is given.
pub fn stack(
    dim: usize,
    num_heads: usize,
    depth: usize,
    drop_path_rate: f64,
    adapter: Option<(usize, f64)>,
    device: &Device,
) -> Vec<Block> {
    drop_path_rates(drop_path_rate, depth)
        .into_iter()
        .map(|dp| Block::new(dim, num_heads, dp, adapter, device))
        .collect()
}

#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// DAPT: after norm1 / after norm2 / on the new prompt.
    pub tfts_1: Option<Tfts>,
    pub tfts_2: Option<Tfts>,
    pub tfts_3: Option<Tfts>,
    pub adapter: Option<DynamicAdapter>,
    #[module(skip)]
    pub drop_path: f64,
}

/// What a DAPT block exposes besides its output.
pub struct BlockAux {
    /// Dynamic scale `[b, t, 1]` of every input token.
    pub scale: Option<Tensor<3>>,
}

impl Block {
    pub fn new(
        dim: usize,
        num_heads: usize,
        drop_path: f64,
        adapter: Option<(usize, f64)>,
        device: &Device,
    ) -> Self {
        let dapt = adapter.is_some();
        Self {
            norm1: LayerNorm::new(dim, device),
            attn: Attention::new(dim, num_heads, dapt, device),
            norm2: LayerNorm::new(dim, device),
            mlp: Mlp::new(dim, dapt, device),
            tfts_1: dapt.then(|| Tfts::new(dim, device)),
            tfts_2: dapt.then(|| Tfts::new(dim, device)),
            tfts_3: dapt.then(|| Tfts::new(dim, device)),
            adapter: adapter.map(|(rank, p)| DynamicAdapter::new(dim, rank, p, device)),
            drop_path,
        }
    }

    /// Plain Point-MAE block: `x + DropPath(Attn(LN1 x))`, then `+ DropPath(MLP(LN2 x))`.
    pub fn forward_plain(&self, x: Tensor<3>, ctx: &mut ForwardCtx) -> Tensor<3> {
        let a = self.attn.forward(self.norm1.forward(x.clone()));
        let x = x + ctx.drop_path(a, self.drop_path);
        let f = self.mlp.forward(self.norm2.forward(x.clone()));
        x.clone() + ctx.drop_path(f, self.drop_path)
    }

    /// DAPT block (§4.3): returns the output with the new prompt inserted after cls
    /// (`t + 1` tokens) and the dynamic scale of the `t` input tokens.
    pub fn forward_dapt(&self, x: Tensor<3>, ctx: &mut ForwardCtx) -> (Tensor<3>, BlockAux) {
        let (Some(t1), Some(t2), Some(t3), Some(adapter)) =
            (&self.tfts_1, &self.tfts_2, &self.tfts_3, &self.adapter)
        else {
            return (self.forward_plain(x, ctx), BlockAux { scale: None });
        };
        let [b, t, c] = x.dims();
        let a = self
            .attn
            .forward(self.norm1.forward_then(x.clone(), Some(t1)));
        let x = x + ctx.drop_path(a, self.drop_path);
        let y = self.norm2.forward_then(x.clone(), Some(t2));
        let (ad, scale) = adapter.forward(y.clone(), ctx);
        let f = self.mlp.forward(y);
        let x = x + ctx.drop_path(f + ad.clone(), self.drop_path);
        let prompt = t3.forward(gelu(ad).mean_dim(1)); // [b, 1, c]
        let out = super::prompt_insert::insert_prompt(x, prompt);
        debug_assert_eq!(out.dims(), [b, t + 1, c]);
        (out, BlockAux { scale: Some(scale) })
    }
}

/// The plain (Point-MAE) stack, written once for the classifier, the segmentation backbone
/// and both halves of the MAE: `pos` is added before every block; `tap(i, &x)` sees the
/// output of block `i`.
pub fn run_plain(
    blocks: &[Block],
    mut x: Tensor<3>,
    pos: &Tensor<3>,
    ctx: &mut ForwardCtx,
    mut tap: impl FnMut(usize, &Tensor<3>),
) -> Tensor<3> {
    for (i, blk) in blocks.iter().enumerate() {
        x = blk.forward_plain(x + pos.clone(), ctx);
        tap(i, &x);
    }
    x
}

/// The DAPT stack (positions already added once, since every block adds a prompt token):
/// `tap(i, &x, aux)` sees the output of block `i` and its dynamic scales.
pub fn run_dapt(
    blocks: &[Block],
    mut x: Tensor<3>,
    ctx: &mut ForwardCtx,
    mut tap: impl FnMut(usize, &Tensor<3>, BlockAux),
) -> Tensor<3> {
    for (i, blk) in blocks.iter().enumerate() {
        let (y, aux) = blk.forward_dapt(x, ctx);
        tap(i, &y, aux);
        x = y;
    }
    x
}
