//! The classification models: `PointTransformer_DAPT` (§4) and Point-MAE full fine-tuning
//! `PointTransformer` (§3.4), with the official head (§5.1). One struct, one code path for
//! every burn backend; which parts exist follows [`ModelKind`].

use super::linear::Linear;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData, activation};

use super::ModelError;
use super::block::{Block, BlockAux, stack};
use super::config::{ModelConfig, ModelKind, Pool};
use super::encoder::{PatchEncoder, PosEmbed};
use super::grouping::Patches;
use super::layers::{BatchNorm, ForwardCtx, LayerNorm, Tfts, linear, param, trunc_normal};

/// `cls_head_finetune`: Linear → BN → ReLU → Dropout(0.5) → Linear → BN → ReLU → Dropout → Linear.
#[derive(Module, Debug)]
pub struct ClsHead {
    pub fc0: Linear,
    pub bn1: BatchNorm,
    pub fc4: Linear,
    pub bn5: BatchNorm,
    pub fc8: Linear,
}

impl ClsHead {
    pub fn new(d_in: usize, classes: usize, device: &Device) -> Self {
        Self {
            fc0: linear(d_in, 256, true, device),
            bn1: BatchNorm::new(256, device),
            fc4: linear(256, 256, true, device),
            bn5: BatchNorm::new(256, device),
            fc8: linear(256, classes, true, device),
        }
    }

    pub fn forward(&mut self, x: Tensor<2>, ctx: &mut ForwardCtx) -> Tensor<2> {
        let x = activation::relu(self.bn1.forward(self.fc0.forward(x), ctx.training));
        let x = ctx.dropout(x, 0.5);
        let x = activation::relu(self.bn5.forward(self.fc4.forward(x), ctx.training));
        let x = ctx.dropout(x, 0.5);
        self.fc8.forward(x)
    }
}

#[derive(Module, Debug)]
pub struct Classifier {
    pub cls_token: Param<Tensor<3>>,
    pub cls_pos: Param<Tensor<3>>,
    pub encoder: PatchEncoder,
    pub pos_embed: PosEmbed,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    /// DAPT: on the patch tokens after the encoder / on all tokens after the final norm.
    pub tfts_1: Option<Tfts>,
    pub tfts_2: Option<Tfts>,
    pub head: ClsHead,
    #[module(skip)]
    pub config: ModelConfig,
    /// Training memory policy, not part of the model: when set, a training step keeps only
    /// each block's input and recomputes the block in backward (`dapt train
    /// --recompute-blocks`, `train::recompute`).
    #[module(skip)]
    pub recompute_blocks: bool,
}

/// Everything a caller may want from one forward pass besides the logits.
pub struct ForwardOutput {
    /// `[b, k]`
    pub logits: Tensor<2>,
    /// `[b, head_in]`
    pub head_input: Tensor<2>,
    /// Patch tokens out of the encoder, before TFTS: `[b, g, c]`.
    pub patch_tokens: Tensor<3>,
    /// Output of each block (DAPT: including its new prompt).
    pub block_out: Vec<Tensor<3>>,
    /// DAPT: dynamic scale of each block's input tokens, `[b, t_l, 1]`.
    pub scales: Vec<Tensor<3>>,
}

/// The grouping of the last forward pass, kept for the viewer (patch membership, centres).
pub type ForwardState = Patches;

impl Classifier {
    /// A freshly initialised model (official init where it matters: adapters start at zero,
    /// TFTS at identity ± noise, cls token/pos trunc-normal 0.02).
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Self, ModelError> {
        config.validate()?;
        let c = config.trans_dim;
        let dapt = config.kind == ModelKind::Dapt;
        let adapter = dapt.then_some((config.rank, config.drop_adapter_rate));
        let blocks = stack(
            c,
            config.num_heads,
            config.depth,
            config.drop_path_rate,
            adapter,
            device,
        );
        Ok(Self {
            cls_token: param(trunc_normal([1, 1, c], 0.02, device)),
            cls_pos: param(trunc_normal([1, 1, c], 0.02, device)),
            encoder: PatchEncoder::new(config.encoder_dims, device),
            pos_embed: PosEmbed::new(c, device),
            blocks,
            norm: LayerNorm::new(c, device),
            tfts_1: dapt.then(|| Tfts::new(c, device)),
            tfts_2: dapt.then(|| Tfts::new(c, device)),
            head: ClsHead::new(config.head_in_dim(), config.cls_dim, device),
            config: config.clone(),
            recompute_blocks: false,
        })
    }

    /// Groups raw clouds `points` (`[b, n, 3]` flattened) and runs the network.
    pub fn forward_points(
        &mut self,
        points: &[[f32; 3]],
        b: usize,
        n: usize,
        device: &Device,
        ctx: &mut ForwardCtx,
    ) -> Result<(ForwardOutput, Patches), ModelError> {
        let (g, m) = (self.config.num_group, self.config.group_size);
        let patches = Patches::build(points, b, n, g, m, device)?;
        let out = self.forward_groups(patches.neighborhoods.clone(), patches.centers.clone(), ctx);
        Ok((out, patches))
    }

    /// Groups clouds already on the device (`[b, n, 3]`) with the device kernels and runs
    /// the network.
    pub fn forward_cloud(
        &mut self,
        cloud: &Tensor<3>,
        ctx: &mut ForwardCtx,
    ) -> (ForwardOutput, Patches) {
        let (g, m) = (self.config.num_group, self.config.group_size);
        let patches = Patches::on_device(cloud, g, m);
        let out = self.forward_groups(patches.neighborhoods.clone(), patches.centers.clone(), ctx);
        (out, patches)
    }

    /// `neighborhoods`: `[b, g, m, 3]`, `centers`: `[b, g, 3]`.
    pub fn forward_groups(
        &mut self,
        neighborhoods: Tensor<4>,
        centers: Tensor<3>,
        ctx: &mut ForwardCtx,
    ) -> ForwardOutput {
        let stem = self.stem(neighborhoods, centers, ctx);
        let g = stem.groups();
        let mut x = stem.tokens;
        let mut block_out = Vec::with_capacity(self.blocks.len());
        let mut scales = Vec::new();
        for blk in &self.blocks {
            let (y, aux) = self.config.kind.block_forward(blk, x, &stem.pos, ctx);
            scales.extend(aux.scale);
            block_out.push(y.clone());
            x = y;
        }
        let (head_input, logits) = self.tail(x, g, ctx);
        ForwardOutput {
            logits,
            head_input,
            patch_tokens: stem.patch_tokens,
            block_out,
            scales,
        }
    }

    /// Everything before block 0: the patch encoder, DAPT's first TFTS, the cls token and the
    /// positions (added once for DAPT, kept in [`Stem::pos`] for Point-MAE's every block).
    pub fn stem(
        &mut self,
        neighborhoods: Tensor<4>,
        centers: Tensor<3>,
        ctx: &mut ForwardCtx,
    ) -> Stem {
        let b = neighborhoods.dims()[0];
        let c = self.config.trans_dim;
        let patch_tokens = self.encoder.forward(neighborhoods, ctx.training);
        let mut tokens = patch_tokens.clone();
        if let Some(tf) = &self.tfts_1 {
            tokens = tf.forward(tokens);
        }
        let cls = self.cls_token.val().expand([b, 1, c]);
        let cls_pos = self.cls_pos.val().expand([b, 1, c]);
        let pos = Tensor::cat(vec![cls_pos, self.pos_embed.forward(centers)], 1);
        let x = Tensor::cat(vec![cls, tokens], 1);
        let (tokens, pos) = match self.config.kind {
            // added once: the token count grows per block
            ModelKind::Dapt => (x + pos.clone(), pos),
            ModelKind::PointMae => (x, pos),
        };
        Stem {
            tokens,
            pos,
            patch_tokens,
        }
    }

    /// Everything after the last block: the final norm (and DAPT's last TFTS), the pooling
    /// the config names and the head. Returns `(head input, logits)`.
    pub fn tail(&mut self, x: Tensor<3>, g: usize, ctx: &mut ForwardCtx) -> (Tensor<2>, Tensor<2>) {
        let [b, t, c] = x.dims();
        let feats = match self.config.kind {
            ModelKind::Dapt => {
                let z = self.norm.forward_then(x, self.tfts_2.as_ref());
                let l = self.blocks.len();
                let mut parts = Vec::new();
                if self.config.class_token.enabled() {
                    parts.push(z.clone().slice_dim(1, 0..1).reshape([b, c]));
                }
                let pool = |x: Tensor<3>, p: Pool| match p {
                    Pool::Max => x.max_dim(1).reshape([b, c]),
                    _ => x.mean_dim(1).reshape([b, c]),
                };
                if self.config.prompt_token.enabled() {
                    parts.push(pool(
                        z.clone().slice_dim(1, 1..1 + l),
                        self.config.prompt_token,
                    ));
                }
                if self.config.patch_token.enabled() {
                    parts.push(pool(z.slice_dim(1, t - g..t), self.config.patch_token));
                }
                Tensor::cat(parts, 1)
            }
            ModelKind::PointMae => {
                let z = self.norm.forward(x);
                let cls = z.clone().slice_dim(1, 0..1).reshape([b, c]);
                let rest = z.slice_dim(1, 1..t).max_dim(1).reshape([b, c]);
                Tensor::cat(vec![cls, rest], 1)
            }
        };
        let logits = self.head.forward(feats.clone(), ctx);
        (feats, logits)
    }
}

/// What enters block 0 (see [`Classifier::stem`]).
pub struct Stem {
    /// `[b, 1 + g, c]`, DAPT's with the positions added.
    pub tokens: Tensor<3>,
    /// `[b, 1 + g, c]`: Point-MAE adds them before every block.
    pub pos: Tensor<3>,
    /// Out of the encoder, before TFTS: `[b, g, c]`.
    pub patch_tokens: Tensor<3>,
}

impl Stem {
    /// Patches per cloud, `g`.
    pub fn groups(&self) -> usize {
        self.patch_tokens.dims()[1]
    }
}

impl ModelKind {
    /// Block `blk` of this kind's stack on `x`: DAPT's block with its prompt and dynamic
    /// scale, or Point-MAE's plain block after adding `pos`.
    pub fn block_forward(
        self,
        blk: &Block,
        x: Tensor<3>,
        pos: &Tensor<3>,
        ctx: &mut ForwardCtx,
    ) -> (Tensor<3>, BlockAux) {
        match self {
            ModelKind::Dapt => blk.forward_dapt(x, ctx),
            ModelKind::PointMae => (
                blk.forward_plain(x + pos.clone(), ctx),
                BlockAux { scale: None },
            ),
        }
    }
}

/// Mean cross-entropy of `logits` `[b, k]` against integer `labels`.
pub fn cross_entropy(logits: Tensor<2>, labels: &[usize]) -> Tensor<1> {
    let [b, k] = logits.dims();
    let device = logits.device();
    let mut onehot = vec![0f32; b * k];
    for (i, &l) in labels.iter().enumerate() {
        if l < k {
            onehot[i * k + l] = 1.0;
        }
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [b, k]), &device);
    let logp = activation::log_softmax(logits, 1);
    (logp * onehot).sum().neg() / b as f64
}
