//! Part segmentation: the Point-MAE segmentation network (`segmentation/models/pt.py`,
//! dapt-spec.md §5.2) and a DAPT variant of it, generic over width, depth and grouping.
//!
//! Point-MAE form (`ModelKind::PointMae`): patch tokens, positional embedding re-added before
//! every block, no cls token; the outputs of the tapped blocks (1-based 4, 8, 12 for depth 12)
//! each go through the shared final `norm` and are concatenated (3C channels per patch);
//! global max and mean over patches plus the object-category branch (one-hot → Conv1d 16→64
//! without bias → BN → LeakyReLU 0.2) form a per-shape vector; PointNet++ feature
//! propagation interpolates the patch features to every input point from its 3 nearest
//! centres (weights `1/(d + 1e-8)` normalised, `d` squared distance), concatenates xyz in
//! front and runs two conv+BN+ReLU; the head (conv+BN+ReLU, dropout 0.5, conv+BN+ReLU,
//! conv) gives log-probabilities over the parts.
//!
//! DAPT form (`ModelKind::Dapt`). The paper reports DAPT part segmentation but no code was
//! released, so these choices are ours and **[unverified]** against the authors':
//! * The backbone is exactly the DAPT classification backbone: TFTS on the patch tokens, a
//!   cls token and cls position, positional embedding added **once**, DAPT blocks
//!   (`Block::forward_dapt`: TFTS, dynamic adapter, one internal prompt per block). The cls
//!   token is kept although the head never reads it, because `forward_dapt` inserts each
//!   new prompt right after token 0 and the classification recipe trains it; it still
//!   takes part in attention and in the prompts' token mean.
//! * Taps: the same block indices as Point-MAE; from each tapped output only the last G
//!   tokens (the patches; cls and prompts excluded) are taken, passed through the shared
//!   frozen `norm` and then the model-level TFTS (`tfts_*_2`), as DAPT does after its final
//!   norm.
//! * The head keeps Point-MAE's parameter names (`label_conv`, `propagation_0`, `convs*`,
//!   `bns*`) rather than IDPT's `_cls` suffixes; the trainable set is the official DAPT
//!   rule (`cls`, `tfts`, `Adapter`) **plus** every head parameter ([`partseg_trainable`]).
//!
//! Checkpoints use the official `part_seg.pth` key names. Our module paths differ only for
//! the category branch (`label_conv_0` / `label_conv_1` here, `label_conv.0` / `.1` there);
//! [`to_official`] / [`to_internal`] translate, everything else goes through
//! [`crate::model::names::official_name`].
//!
//! Two exact algebraic rewrites keep the CPU cost down without changing the function: the
//! first propagation conv is applied to the G patch features *before* interpolating
//! (interpolation is linear, so `W·Σwᵢxᵢ = Σwᵢ(W·xᵢ)`), and `convs1` is split into its
//! per-point and per-shape column blocks so the 2368-wide per-shape part is computed once per
//! shape instead of once per point.
//!
//! Grouping and the interpolation weights are made where the network runs: on the host for
//! burn-flex, as device kernels on a GPU backend ([`grouping::device::interpolation`] keeps
//! the host rules), so a batch goes up once and nothing comes back during a step.

use std::collections::HashMap;

use super::linear::Linear;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData, activation};
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::block::{Block, run_dapt, run_plain};
use super::checkpoint::{LoadMode, LoadReport, StateDict, load_into};
use super::config::{ModelKind, check_dapt_and_rates, check_width};
use super::encoder::{PatchEncoder, PosEmbed};
use super::grouping::{self, Patches, Placement, check, group, upload};
use super::layers::{BatchNorm, ForwardCtx, LayerNorm, Tfts, linear, param, trunc_normal};
use super::names::{RawTensor, Trainable, dapt_trainable};

/// Width of the category branch (`label_conv`), fixed by the official code.
pub const LABEL_DIM: usize = 64;

/// Every architectural hyper-parameter of the part-segmentation model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartSegConfig {
    pub kind: ModelKind,
    pub trans_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub group_size: usize,
    pub num_group: usize,
    /// 0-based indices of the blocks whose outputs feed the head (official: 3, 7, 11).
    pub taps: Vec<usize>,
    /// Number of global part ids (ShapeNetPart: 50).
    pub num_parts: usize,
    /// Number of object categories fed one-hot (ShapeNetPart: 16).
    pub num_categories: usize,
    /// Output width of the feature propagation (official 1024); its hidden width is 4C.
    pub prop_dim: usize,
    /// Widths of `convs1` and `convs2` (official 512, 256).
    pub head_dims: [usize; 2],
    pub drop_path_rate: f64,
    /// DAPT: adapter bottleneck width r.
    pub rank: usize,
    /// DAPT: dropout inside the adapter bottleneck.
    pub drop_adapter_rate: f64,
    /// Points per cloud fed to the model in training (official 2048).
    pub npoints: usize,
}

impl PartSegConfig {
    /// The taps of the official model scaled to `depth`: after blocks d/3, 2d/3 and d (1-based).
    pub fn default_taps(depth: usize) -> Vec<usize> {
        let mut t: Vec<usize> = [depth / 3, 2 * depth / 3, depth]
            .iter()
            .map(|&k| k.max(1) - 1)
            .collect();
        t.dedup();
        t
    }

    /// The official ShapeNetPart model: width 384, depth 12, 6 heads, 128 x 32 groups,
    /// 2048 points, 50 parts in 16 categories.
    pub fn official(kind: ModelKind) -> Self {
        Self {
            kind,
            trans_dim: 384,
            depth: 12,
            num_heads: 6,
            group_size: 32,
            num_group: 128,
            taps: vec![3, 7, 11],
            num_parts: 50,
            num_categories: 16,
            prop_dim: 1024,
            head_dims: [512, 256],
            drop_path_rate: 0.1,
            rank: 64,
            drop_adapter_rate: 0.0,
            npoints: 2048,
        }
    }

    /// A small model for the synthetic demo and CI: trains in minutes on 2 CPU cores.
    pub fn small(kind: ModelKind, num_parts: usize, num_categories: usize) -> Self {
        Self {
            kind,
            trans_dim: 96,
            depth: 4,
            num_heads: 4,
            group_size: 16,
            num_group: 32,
            taps: Self::default_taps(4),
            num_parts,
            num_categories,
            prop_dim: 256,
            head_dims: [256, 128],
            drop_path_rate: 0.1,
            rank: 16,
            drop_adapter_rate: 0.0,
            npoints: 512,
        }
    }

    /// Channels per patch after concatenating the tapped blocks.
    pub fn feature_dim(&self) -> usize {
        self.taps.len() * self.trans_dim
    }

    /// Per-shape channels: max ‖ mean ‖ category branch.
    pub fn global_dim(&self) -> usize {
        2 * self.feature_dim() + LABEL_DIM
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Config(m));
        check_width(self.trans_dim, self.num_heads)?;
        if self.depth == 0 || self.group_size == 0 || self.num_group == 0 {
            return err("depth, group_size and num_group must be positive".into());
        }
        if self.num_parts == 0 || self.num_categories == 0 {
            return err("num_parts and num_categories must be positive".into());
        }
        if self.taps.is_empty() || self.taps.iter().any(|&t| t >= self.depth) {
            return err(format!(
                "taps {:?} must be non-empty block indices below depth {}",
                self.taps, self.depth
            ));
        }
        if self.prop_dim == 0 || self.head_dims.contains(&0) {
            return err("prop_dim and head_dims must be positive".into());
        }
        check_dapt_and_rates(
            self.kind,
            self.rank,
            (self.npoints, self.group_size),
            self.drop_path_rate,
            self.drop_adapter_rate,
        )?;
        Ok(())
    }
}

/// PointNet++ feature propagation (`propagation_0`): `mlp_convs.{0,1}` and `mlp_bns.{0,1}`.
#[derive(Module, Debug)]
pub struct Propagation {
    pub mlp_convs: Vec<Linear>,
    pub mlp_bns: Vec<BatchNorm>,
}

#[derive(Module, Debug)]
pub struct PartSegModel {
    /// DAPT only (see the module doc).
    pub cls_token: Option<Param<Tensor<3>>>,
    pub cls_pos: Option<Param<Tensor<3>>>,
    pub encoder: PatchEncoder,
    pub pos_embed: PosEmbed,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    /// DAPT: on the patch tokens after the encoder / after the final norm of each tap.
    pub tfts_1: Option<Tfts>,
    pub tfts_2: Option<Tfts>,
    /// `label_conv.0`: Conv1d(categories → 64, no bias).
    pub label_conv_0: Linear,
    /// `label_conv.1`: BatchNorm1d(64).
    pub label_conv_1: BatchNorm,
    pub propagation_0: Propagation,
    pub convs1: Linear,
    pub bns1: BatchNorm,
    pub convs2: Linear,
    pub bns2: BatchNorm,
    pub convs3: Linear,
    #[module(skip)]
    pub config: PartSegConfig,
}

/// What one forward pass returns.
pub struct PartSegOutput {
    /// `[b, n, parts]` log-probabilities.
    pub log_probs: Tensor<3>,
    /// The grouping used (centres, patch membership; read back only when asked for).
    pub patches: Patches,
}

/// Official checkpoint key → our module's key.
pub fn to_internal(official: &str) -> String {
    if let Some(rest) = official.strip_prefix("label_conv.0.") {
        format!("label_conv_0.{rest}")
    } else if let Some(rest) = official.strip_prefix("label_conv.1.") {
        format!("label_conv_1.{rest}")
    } else {
        official.to_string()
    }
}

/// Our module's key (as produced by `names::official_name`) → official checkpoint key.
pub fn to_official(internal: &str) -> String {
    if let Some(rest) = internal.strip_prefix("label_conv_0.") {
        format!("label_conv.0.{rest}")
    } else if let Some(rest) = internal.strip_prefix("label_conv_1.") {
        format!("label_conv.1.{rest}")
    } else {
        internal.to_string()
    }
}

/// Whether an official name belongs to the segmentation head.
pub fn is_head(official: &str) -> bool {
    [
        "label_conv.",
        "propagation_0.",
        "convs1.",
        "convs2.",
        "convs3.",
        "bns1.",
        "bns2.",
    ]
    .iter()
    .any(|p| official.starts_with(p))
}

/// The trainable rule of a part-segmentation model of `kind` (official names): everything for
/// Point-MAE full fine-tuning; DAPT's rule plus the head for DAPT.
pub fn partseg_trainable(kind: ModelKind, official: &str) -> bool {
    match kind {
        ModelKind::PointMae => true,
        ModelKind::Dapt => dapt_trainable(official) || is_head(official),
    }
}

/// The trainable rule expressed on internal names (what `names::Trainable` sees).
pub fn internal_rule(kind: ModelKind) -> impl Fn(&str) -> bool {
    move |n: &str| partseg_trainable(kind, &to_official(n))
}

impl PartSegModel {
    pub fn new(config: &PartSegConfig, device: &Device) -> Result<Self, ModelError> {
        config.validate()?;
        let c = config.trans_dim;
        let dapt = config.kind == ModelKind::Dapt;
        let adapter = dapt.then_some((config.rank, config.drop_adapter_rate));
        let blocks = super::block::stack(
            c,
            config.num_heads,
            config.depth,
            config.drop_path_rate,
            adapter,
            device,
        );
        let f = config.feature_dim();
        let hidden = 4 * c;
        let [h1, h2] = config.head_dims;
        Ok(Self {
            cls_token: dapt.then(|| param(trunc_normal([1, 1, c], 0.02, device))),
            cls_pos: dapt.then(|| param(trunc_normal([1, 1, c], 0.02, device))),
            encoder: PatchEncoder::new(c, device),
            pos_embed: PosEmbed::new(c, device),
            blocks,
            norm: LayerNorm::new(c, device),
            tfts_1: dapt.then(|| Tfts::new(c, device)),
            tfts_2: dapt.then(|| Tfts::new(c, device)),
            label_conv_0: linear(config.num_categories, LABEL_DIM, false, device),
            label_conv_1: BatchNorm::new(LABEL_DIM, device),
            propagation_0: Propagation {
                mlp_convs: vec![
                    linear(3 + f, hidden, true, device),
                    linear(hidden, config.prop_dim, true, device),
                ],
                mlp_bns: vec![
                    BatchNorm::new(hidden, device),
                    BatchNorm::new(config.prop_dim, device),
                ],
            },
            convs1: linear(config.prop_dim + config.global_dim(), h1, true, device),
            bns1: BatchNorm::new(h1, device),
            convs2: linear(h1, h2, true, device),
            bns2: BatchNorm::new(h2, device),
            convs3: linear(h2, config.num_parts, true, device),
            config: config.clone(),
        })
    }

    /// Groups the clouds (`points` flattened `[b][n]`), then runs the network. `categories`
    /// holds each cloud's object category (fed one-hot).
    pub fn forward_points(
        &mut self,
        points: &[[f32; 3]],
        categories: &[usize],
        b: usize,
        n: usize,
        device: &Device,
        ctx: &mut ForwardCtx,
    ) -> Result<PartSegOutput, ModelError> {
        if categories.len() != b {
            return Err(ModelError::Input(format!(
                "{} categories for {b} clouds",
                categories.len()
            )));
        }
        self.check_categories(categories)?;
        let (patches, interp, xyz) = self.group(points, b, n, device)?;
        let onehot = self.onehot(categories, device);
        let log_probs = self.forward_tensors(
            patches.neighborhoods.clone(),
            patches.centers.clone(),
            xyz,
            interp,
            onehot,
            ctx,
        );
        Ok(PartSegOutput { log_probs, patches })
    }

    /// One cloud (`points`, `n` of them) under each of `categories`, as [`Self::forward_points`]
    /// would give it for each alone, but grouped and run through the backbone once: only the
    /// head sees the category. `log_probs` is `[categories, n, parts]`. The viewer scores a
    /// cloud of unknown category this way (16 categories in ShapeNetPart).
    pub fn forward_categories(
        &mut self,
        points: &[[f32; 3]],
        categories: &[usize],
        n: usize,
        device: &Device,
        ctx: &mut ForwardCtx,
    ) -> Result<PartSegOutput, ModelError> {
        let c = categories.len();
        if c == 0 {
            return Err(ModelError::Input("no object category to score".into()));
        }
        self.check_categories(categories)?;
        let (patches, interp, xyz) = self.group(points, 1, n, device)?;
        let x = self.backbone(patches.neighborhoods.clone(), patches.centers.clone(), ctx);
        let onehot = self.onehot(categories, device);
        let log_probs = self.head(
            x.repeat_dim(0, c),
            xyz.repeat_dim(0, c),
            interp.repeat_dim(0, c),
            onehot,
            ctx,
        );
        Ok(PartSegOutput { log_probs, patches })
    }

    fn check_categories(&self, categories: &[usize]) -> Result<(), ModelError> {
        let k = self.config.num_categories;
        match categories.iter().find(|&&c| c >= k) {
            Some(&c) => Err(ModelError::Input(format!(
                "object category {c} is out of range (the model knows {k})"
            ))),
            None => Ok(()),
        }
    }

    /// `[b, categories]` one-hot rows (categories already checked).
    fn onehot(&self, categories: &[usize], device: &Device) -> Tensor<2> {
        let k = self.config.num_categories;
        let b = categories.len();
        let mut onehot = vec![0f32; b * k];
        for (i, &c) in categories.iter().enumerate() {
            onehot[i * k + c] = 1.0;
        }
        Tensor::<2>::from_data(TensorData::new(onehot, [b, k]), device)
    }

    /// The grouping, the 3-nearest-centre interpolation weights `[b, n, g]` and the points as
    /// `[b·n, 3]`: on the host or on the device, as the backend groups.
    fn group(
        &self,
        points: &[[f32; 3]],
        b: usize,
        n: usize,
        device: &Device,
    ) -> Result<(Patches, Tensor<3>, Tensor<2>), ModelError> {
        let (g, m) = (self.config.num_group, self.config.group_size);
        check(points, b, n, m)?;
        let cloud = upload(points, b, n, device);
        let (patches, interp) = match Placement::for_device(device) {
            Placement::Host => {
                let groups = group(points, b, n, g, m)?;
                let weights = interpolation_matrix(points, &groups.centers, b, n, g);
                let interp = Tensor::<3>::from_data(TensorData::new(weights, [b, n, g]), device);
                (Patches::from_groups(&groups, device), interp)
            }
            Placement::Device => {
                let patches = Patches::on_device(&cloud, g, m);
                let interp = grouping::device::interpolation(&cloud, &patches.centers);
                (patches, interp)
            }
        };
        Ok((patches, interp, cloud.reshape([b * n, 3])))
    }

    /// Per-patch features `[b, g, taps·C]` from the backbone.
    fn backbone(
        &mut self,
        neighborhoods: Tensor<4>,
        centers: Tensor<3>,
        ctx: &mut ForwardCtx,
    ) -> Tensor<3> {
        let [b, g, _, _] = neighborhoods.dims();
        let c = self.config.trans_dim;
        let tokens = self.encoder.forward(neighborhoods, ctx.training);
        let pos = self.pos_embed.forward(centers);
        let taps = self.config.taps.clone();
        let mut feats = Vec::with_capacity(taps.len());
        match (&self.cls_token, &self.cls_pos, &self.tfts_1) {
            (Some(cls), Some(cls_pos), Some(tf1)) => {
                let tokens = tf1.forward(tokens);
                let x = Tensor::cat(vec![cls.val().expand([b, 1, c]), tokens], 1)
                    + Tensor::cat(vec![cls_pos.val().expand([b, 1, c]), pos], 1);
                run_dapt(&self.blocks, x, ctx, |i, x, _| {
                    if taps.contains(&i) {
                        let t = x.dims()[1];
                        let z = x.clone().slice_dim(1, t - g..t);
                        feats.push(self.norm.forward_then(z, self.tfts_2.as_ref()));
                    }
                });
            }
            _ => {
                run_plain(&self.blocks, tokens, &pos, ctx, |i, x| {
                    if taps.contains(&i) {
                        feats.push(self.norm.forward(x.clone()));
                    }
                });
            }
        }
        Tensor::cat(feats, 2)
    }

    /// The network on prepared tensors: `neighborhoods` `[b, g, m, 3]`, `centers` `[b, g, 3]`,
    /// `xyz` `[b·n, 3]`, `interp` `[b, n, g]` (rows of 3 normalised weights), `onehot`
    /// `[b, categories]`. Returns `[b, n, parts]` log-probabilities.
    pub fn forward_tensors(
        &mut self,
        neighborhoods: Tensor<4>,
        centers: Tensor<3>,
        xyz: Tensor<2>,
        interp: Tensor<3>,
        onehot: Tensor<2>,
        ctx: &mut ForwardCtx,
    ) -> Tensor<3> {
        let x = self.backbone(neighborhoods, centers, ctx);
        self.head(x, xyz, interp, onehot, ctx)
    }

    /// The segmentation head on the backbone's per-patch features `x` `[b, g, f]`; the other
    /// inputs as in [`Self::forward_tensors`].
    fn head(
        &mut self,
        x: Tensor<3>,
        xyz: Tensor<2>,
        interp: Tensor<3>,
        onehot: Tensor<2>,
        ctx: &mut ForwardCtx,
    ) -> Tensor<3> {
        let training = ctx.training;
        let [b, n, g] = interp.dims();
        let f = self.config.feature_dim();

        // per-shape vector: max ‖ mean ‖ category branch
        let x_max = x.clone().max_dim(1).reshape([b, f]);
        let x_avg = x.clone().mean_dim(1).reshape([b, f]);
        let label = self
            .label_conv_1
            .forward(self.label_conv_0.forward(onehot), training);
        let label = activation::leaky_relu(label, 0.2);
        let global = Tensor::cat(vec![x_max, x_avg, label], 1); // [b, global_dim]

        // feature propagation; conv 0 applied before interpolating (see the module doc)
        let conv0 = &self.propagation_0.mlp_convs[0];
        let w0 = conv0.weight.val(); // [3 + f, hidden]
        let hidden = w0.dims()[1];
        let w_xyz = w0.clone().slice_dim(0, 0..3);
        let w_feat = w0.slice_dim(0, 3..3 + f);
        let per_patch = x.reshape([b * g, f]).matmul(w_feat).reshape([b, g, hidden]);
        let mut h = interp.matmul(per_patch).reshape([b * n, hidden]) + xyz.matmul(w_xyz);
        if let Some(bias) = &conv0.bias {
            h = h + bias.val().unsqueeze::<2>();
        }
        let h = activation::relu(self.propagation_0.mlp_bns[0].forward(h, training));
        let h = self.propagation_0.mlp_convs[1].forward(h);
        let h = activation::relu(self.propagation_0.mlp_bns[1].forward(h, training));

        // convs1 over [propagated ; global], split into its two column blocks
        let p = self.config.prop_dim;
        let w1 = self.convs1.weight.val(); // [p + global_dim, h1]
        let gd = w1.dims()[0] - p;
        let h1 = w1.dims()[1];
        let per_point = h.matmul(w1.clone().slice_dim(0, 0..p)).reshape([b, n, h1]);
        let mut per_shape = global.matmul(w1.slice_dim(0, p..p + gd));
        if let Some(bias) = &self.convs1.bias {
            per_shape = per_shape + bias.val().unsqueeze::<2>();
        }
        let y = (per_point + per_shape.reshape([b, 1, h1])).reshape([b * n, h1]);
        let y = activation::relu(self.bns1.forward(y, training));
        let y = ctx.dropout(y, 0.5);
        let y = activation::relu(self.bns2.forward(self.convs2.forward(y), training));
        let y = self.convs3.forward(y);
        let parts = self.config.num_parts;
        activation::log_softmax(y, 1).reshape([b, n, parts])
    }

    /// Marks the parameters trainable under the model kind's rule (see [`partseg_trainable`]).
    pub fn with_trainable_rule(self) -> Self {
        let kind = self.config.kind;
        self.map(&mut Trainable::new(internal_rule(kind)))
    }
}

/// Dense `[b][n][g]` inverse-distance weights of each point's 3 nearest centres (PointNet++
/// `PointNetFeaturePropagation`). Squared distances are computed as the official
/// `square_distance` does (`-2 p·c + |p|² + |c|²`, float32), so a point that is itself a
/// centre gets the same near-zero distance and near-one weight.
pub fn interpolation_matrix(
    points: &[[f32; 3]],
    centers: &[[f32; 3]],
    b: usize,
    n: usize,
    g: usize,
) -> Vec<f32> {
    let k = g.min(3);
    let mut out = vec![0f32; b * n * g];
    for bi in 0..b {
        let cs = &centers[bi * g..(bi + 1) * g];
        let c2: Vec<f32> = cs
            .iter()
            .map(|c| c[0] * c[0] + c[1] * c[1] + c[2] * c[2])
            .collect();
        for pi in 0..n {
            let p = points[bi * n + pi];
            let p2 = p[0] * p[0] + p[1] * p[1] + p[2] * p[2];
            let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
            for (j, c) in cs.iter().enumerate() {
                let dot = p[0] * c[0] + p[1] * c[1] + p[2] * c[2];
                let d = -2.0 * dot + p2 + c2[j];
                // keep the k smallest, earliest index first on ties
                let pos = best
                    .iter()
                    .position(|&(bd, _)| d < bd)
                    .unwrap_or(best.len());
                if pos < k {
                    best.insert(pos, (d, j));
                    best.truncate(k);
                }
            }
            let row = &mut out[(bi * n + pi) * g..(bi * n + pi + 1) * g];
            let recip: Vec<f32> = best.iter().map(|&(d, _)| 1.0 / (d + 1e-8)).collect();
            let norm: f32 = recip.iter().sum();
            if k == 1 || !norm.is_finite() || norm == 0.0 || recip.iter().any(|r| !r.is_finite()) {
                // a centre exactly at the point: it takes all the weight
                row[best[0].1] = 1.0;
            } else {
                for (&(_, j), r) in best.iter().zip(&recip) {
                    row[j] = r / norm;
                }
            }
        }
    }
    out
}

/// Mean negative log-likelihood of `log_probs` `[b, n, parts]` against per-point part ids
/// (`targets` flattened `[b][n]`), PyTorch's `nll_loss` with mean reduction.
pub fn nll_loss(log_probs: Tensor<3>, targets: &[usize]) -> Result<Tensor<1>, ModelError> {
    let [b, n, p] = log_probs.dims();
    if targets.len() != b * n {
        return Err(ModelError::Input(format!(
            "{} targets for {b}x{n} points",
            targets.len()
        )));
    }
    if let Some(&t) = targets.iter().find(|&&t| t >= p) {
        return Err(ModelError::Input(format!(
            "part id {t} is out of range (the model has {p} parts)"
        )));
    }
    let mut mask = vec![0f32; b * n * p];
    for (i, &t) in targets.iter().enumerate() {
        mask[i * p + t] = 1.0;
    }
    let device = log_probs.device();
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b * n, p]), &device);
    Ok((log_probs.reshape([b * n, p]) * mask).sum().neg() / (b * n) as f64)
}

/// Applies a state dict with official `part_seg.pth` names to `model`.
pub fn load_partseg(
    model: PartSegModel,
    dict: &StateDict,
    mode: LoadMode,
) -> Result<(PartSegModel, LoadReport), ModelError> {
    let tensors: HashMap<String, RawTensor> = dict
        .tensors
        .iter()
        .map(|(k, v)| (to_internal(k), v.clone()))
        .collect();
    let internal = StateDict {
        path: dict.path.clone(),
        tensors,
        meta: dict.meta.clone(),
        format: dict.format,
    };
    let (model, mut report) = load_into(model, &internal, mode)?;
    for v in [
        &mut report.applied,
        &mut report.missing,
        &mut report.unexpected,
    ] {
        for s in v.iter_mut() {
            *s = to_official(s);
        }
    }
    Ok((model.with_trainable_rule(), report))
}

/// Every tensor of `model` under its official name, in the official layout (for saving).
pub fn official_tensors(model: &PartSegModel) -> Vec<(String, RawTensor)> {
    let mut r = super::names::Reader::new();
    model.visit(&mut r);
    r.out
        .into_iter()
        .map(|(k, v)| (to_official(&k), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_scale_with_depth() {
        assert_eq!(PartSegConfig::default_taps(12), vec![3, 7, 11]);
        assert_eq!(PartSegConfig::default_taps(4), vec![0, 1, 3]);
        assert_eq!(PartSegConfig::default_taps(1), vec![0]);
    }

    #[test]
    fn key_translation_round_trips() {
        for k in [
            "label_conv.0.weight",
            "label_conv.1.running_var",
            "convs1.bias",
        ] {
            assert_eq!(to_official(&to_internal(k)), k);
        }
        assert_eq!(to_internal("label_conv.1.bias"), "label_conv_1.bias");
        assert!(partseg_trainable(
            ModelKind::Dapt,
            "propagation_0.mlp_bns.1.weight"
        ));
        assert!(partseg_trainable(
            ModelKind::Dapt,
            "blocks.blocks.0.tfts_gamma_1"
        ));
        assert!(!partseg_trainable(
            ModelKind::Dapt,
            "blocks.blocks.0.attn.qkv.weight"
        ));
        assert!(!partseg_trainable(
            ModelKind::Dapt,
            "encoder.first_conv.0.weight"
        ));
    }

    #[test]
    fn interpolation_weights_are_normalised_inverse_distances() {
        let centers = [
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 2.0, 0.0],
            [5.0, 5.0, 5.0],
        ];
        let points = [[0.5, 0.0, 0.0], [5.0, 5.0, 5.0]];
        let w = interpolation_matrix(&points, &centers, 1, 2, 4);
        // point 0: d = 0.25, 0.25, 4.25; farthest centre unused
        let r = [4.0, 4.0, 1.0 / 4.25];
        let s: f32 = r.iter().sum();
        assert!((w[0] - r[0] / s).abs() < 1e-6 && (w[1] - r[1] / s).abs() < 1e-6);
        assert!((w[2] - r[2] / s).abs() < 1e-6 && w[3] == 0.0);
        // point 1 sits on a centre: (almost) all weight there
        assert!(w[4 + 3] > 0.999);
        let row: f32 = w[4..8].iter().sum();
        assert!((row - 1.0).abs() < 1e-5);
    }
}
