//! Point-MAE pre-training (dapt-spec.md §6): masked point modelling with a Chamfer-L2
//! reconstruction loss.
//!
//! The network is the official `Point_MAE` model: the mini-PointNet encodes *every* patch
//! (so BatchNorm statistics cover all B·G·M point slots, as in the official code), then the
//! visible tokens go through the encoder blocks with their positional embedding re-added
//! before every block; the decoder sees `[visible ; mask tokens]` with `decoder_pos_embed`
//! re-added before every block, normalises only the trailing masked tokens and predicts
//! `group_size` local xyz offsets per masked patch with `increase_dim`.
//!
//! Tokens are kept in the official order: visible (resp. masked) patches of a cloud in
//! ascending group index, clouds one after the other, exactly what PyTorch's boolean
//! indexing `x[~mask]` / `x[mask]` produces.
//!
//! Parameter names: the burn module paths translate through [`official_name`] to an
//! *internal* name (`mae_encoder.blocks.blocks.0.attn.qkv.weight`) that [`pretrain_key`] maps
//! to the official `pretrain.pth` key (`MAE_encoder.blocks.blocks.0.attn.qkv.weight`) and
//! [`internal_key`] maps back, so the shared checkpoint reader, loader and AdamW (all keyed
//! by `official_name`) work unchanged.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::linear::Linear;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::block::{Block, run_plain};
use super::checkpoint::{LoadMode, LoadReport, StateDict, load_into};
use super::config::{ModelConfig, ModelKind};
use super::encoder::{PatchEncoder, PosEmbed};
use super::grouping::Patches;
use super::layers::{ForwardCtx, LayerNorm, host_vec, linear, param};
use super::names::{RawTensor, Reader, Trainable, named_params, official_name};
use crate::data::Rng;

/// How the masked patches of a cloud are chosen (the official `mask_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MaskType {
    /// Patches drawn uniformly without replacement (the official recipe's `rand`).
    #[default]
    Rand,
    /// The patches nearest to one random patch centre: one contiguous hole per cloud.
    Block,
}

/// Architecture of the pre-training model (the official `model:` block of `pretrain.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaeConfig {
    pub trans_dim: usize,
    /// Encoder blocks.
    pub depth: usize,
    pub num_heads: usize,
    pub decoder_depth: usize,
    pub decoder_num_heads: usize,
    pub group_size: usize,
    pub num_group: usize,
    /// Fraction of patches masked per cloud; exactly `int(mask_ratio * num_group)` are.
    pub mask_ratio: f64,
    /// Absent from run configurations written before block masking existed: `rand`.
    #[serde(default)]
    pub mask_type: MaskType,
    /// Encoder drop-path maximum (linspace over blocks); the decoder uses the same rate.
    pub drop_path_rate: f64,
    /// Points per cloud fed to the model.
    pub npoints: usize,
}

impl MaeConfig {
    /// The official ShapeNet-55 pre-training configuration (`cfgs/pretrain.yaml`).
    pub fn official() -> Self {
        Self {
            trans_dim: 384,
            depth: 12,
            num_heads: 6,
            decoder_depth: 4,
            decoder_num_heads: 6,
            group_size: 32,
            num_group: 64,
            mask_ratio: 0.6,
            mask_type: MaskType::Rand,
            drop_path_rate: 0.1,
            npoints: 1024,
        }
    }

    /// The backbone of [`ModelConfig::small`] with a 2-block decoder: the synthetic demo,
    /// a few minutes on 2 CPU cores.
    pub fn small() -> Self {
        let m = ModelConfig::small(1);
        Self {
            trans_dim: m.trans_dim,
            depth: m.depth,
            num_heads: m.num_heads,
            decoder_depth: 2,
            decoder_num_heads: m.num_heads,
            group_size: m.group_size,
            num_group: m.num_group,
            mask_ratio: 0.6,
            mask_type: MaskType::Rand,
            drop_path_rate: 0.1,
            npoints: m.npoints,
        }
    }

    /// Masked patches per cloud (the official `int(mask_ratio * G)`).
    pub fn num_mask(&self) -> usize {
        (self.mask_ratio * self.num_group as f64) as usize
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Config(m));
        for (name, heads) in [
            ("num_heads", self.num_heads),
            ("decoder_num_heads", self.decoder_num_heads),
        ] {
            if heads == 0 || self.trans_dim == 0 || !self.trans_dim.is_multiple_of(heads) {
                return err(format!(
                    "trans_dim {} must be a positive multiple of {name} {heads}",
                    self.trans_dim
                ));
            }
        }
        if self.depth == 0 || self.decoder_depth == 0 || self.group_size == 0 {
            return err("depth, decoder_depth and group_size must be positive".into());
        }
        if !(0.0..1.0).contains(&self.mask_ratio) {
            return err(format!("mask_ratio {} must be in [0, 1)", self.mask_ratio));
        }
        let nm = self.num_mask();
        if nm == 0 || nm >= self.num_group {
            return err(format!(
                "mask_ratio {} of {} groups masks {nm}: at least one patch must be masked and one visible",
                self.mask_ratio, self.num_group
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return err(format!(
                "drop_path_rate {} must be in [0, 1)",
                self.drop_path_rate
            ));
        }
        if self.npoints < self.group_size {
            return err(format!(
                "npoints {} is smaller than group_size {}",
                self.npoints, self.group_size
            ));
        }
        Ok(())
    }

    /// The fine-tuning configuration whose backbone this pre-trains (`kind` DAPT, the small
    /// demo's head recipe; callers adjust the head and class count).
    pub fn backbone_config(&self, cls_dim: usize) -> ModelConfig {
        ModelConfig {
            kind: ModelKind::Dapt,
            trans_dim: self.trans_dim,
            depth: self.depth,
            num_heads: self.num_heads,
            group_size: self.group_size,
            num_group: self.num_group,
            encoder_dims: self.trans_dim,
            npoints: self.npoints,
            ..ModelConfig::small(cls_dim)
        }
    }

    /// Parses an official pre-training YAML (`model: {NAME: Point_MAE, ...,
    /// transformer_config: {...}}`, top-level `npoints`).
    pub fn from_yaml_str(text: &str) -> Result<Self, ModelError> {
        let root: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| ModelError::Config(format!("not valid YAML: {e}")))?;
        let model = root
            .get("model")
            .ok_or_else(|| ModelError::Config("no `model:` block".into()))?;
        match model.get("NAME").and_then(|v| v.as_str()) {
            Some("Point_MAE") => {}
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "model.NAME {other:?} is not a pre-training model this build supports (Point_MAE)"
                )));
            }
            None => return Err(ModelError::Config("model.NAME is missing".into())),
        }
        let tc = model
            .get("transformer_config")
            .ok_or_else(|| ModelError::Config("model.transformer_config is missing".into()))?;
        let int = |v: &serde_yaml::Value, k: &str| -> Result<usize, ModelError> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| ModelError::Config(format!("{k} is missing or not an integer")))
        };
        let float = |k: &str, default: f64| -> Result<f64, ModelError> {
            match tc.get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| ModelError::Config(format!("{k} is not a number"))),
            }
        };
        let mask_type = match tc.get("mask_type") {
            None => MaskType::Rand,
            Some(v) => match v.as_str() {
                Some("rand") => MaskType::Rand,
                Some("block") => MaskType::Block,
                _ => {
                    return Err(ModelError::Config(format!(
                        "mask_type {v:?} is not one of 'rand', 'block'"
                    )));
                }
            },
        };
        let trans_dim = int(tc, "trans_dim")?;
        if let Some(e) = tc.get("encoder_dims").and_then(|v| v.as_u64())
            && e as usize != trans_dim
        {
            return Err(ModelError::Config(format!(
                "encoder_dims {e} must equal trans_dim {trans_dim}"
            )));
        }
        let num_heads = int(tc, "num_heads")?;
        let cfg = MaeConfig {
            trans_dim,
            depth: int(tc, "depth")?,
            num_heads,
            decoder_depth: int(tc, "decoder_depth")?,
            decoder_num_heads: tc
                .get("decoder_num_heads")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .unwrap_or(num_heads),
            group_size: int(model, "group_size")?,
            num_group: int(model, "num_group")?,
            mask_ratio: float("mask_ratio", 0.6)?,
            mask_type,
            drop_path_rate: float("drop_path_rate", 0.1)?,
            npoints: root
                .get("npoints")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .unwrap_or(1024),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_yaml_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_yaml_str(&text).map_err(|e| e.with_path(path))
    }
}

/// Which patches of each cloud are masked: `flags[b * G + g]` is true for a masked patch.
/// Every cloud masks the same number of patches (the token tensors are rectangular).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchMask {
    pub batch: usize,
    pub num_group: usize,
    pub flags: Vec<bool>,
}

impl PatchMask {
    /// Exactly `num_mask` masked patches per cloud, an independent shuffle per cloud.
    pub fn random(batch: usize, num_group: usize, num_mask: usize, rng: &mut Rng) -> Self {
        let mut flags = Vec::with_capacity(batch * num_group);
        for _ in 0..batch {
            let mut f: Vec<bool> = (0..num_group).map(|g| g >= num_group - num_mask).collect();
            rng.shuffle(&mut f);
            flags.extend(f);
        }
        Self {
            batch,
            num_group,
            flags,
        }
    }

    /// For each cloud, the `num_mask` patches whose centres are nearest to one patch centre
    /// drawn uniformly (that patch included): the official `_mask_center_block`.
    /// `centers` is `[batch][num_group]` flattened, as [`Patches::centers_host`] gives them.
    pub fn block(
        centers: &[[f32; 3]],
        batch: usize,
        num_group: usize,
        num_mask: usize,
        rng: &mut Rng,
    ) -> Self {
        let mut flags = vec![false; batch * num_group];
        for (cloud, row) in centers.chunks(num_group).take(batch).enumerate() {
            let seed = row[rng.below(row.len())];
            let d2 = |c: &[f32; 3]| (0..3).map(|i| (c[i] - seed[i]).powi(2)).sum::<f32>();
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&i, &j| d2(&row[i]).total_cmp(&d2(&row[j])));
            for &g in order.iter().take(num_mask) {
                flags[cloud * num_group + g] = true;
            }
        }
        Self {
            batch,
            num_group,
            flags,
        }
    }

    /// A mask of `kind` for grouped clouds. Random masks need nothing from the grouping;
    /// block masks need the centres, which on a GPU backend is one read-back per batch.
    pub fn draw(kind: MaskType, patches: &Patches, num_mask: usize, rng: &mut Rng) -> Self {
        match kind {
            MaskType::Rand => Self::random(patches.batch, patches.num_group, num_mask, rng),
            MaskType::Block => Self::block(
                &patches.centers_host(),
                patches.batch,
                patches.num_group,
                num_mask,
                rng,
            ),
        }
    }

    /// A given mask (e.g. a fixture's); every cloud must mask the same count, at least one
    /// patch masked and one visible.
    pub fn from_flags(
        batch: usize,
        num_group: usize,
        flags: Vec<bool>,
    ) -> Result<Self, ModelError> {
        if flags.len() != batch * num_group {
            return Err(ModelError::Input(format!(
                "mask has {} entries, expected {batch}x{num_group}",
                flags.len()
            )));
        }
        let m = Self {
            batch,
            num_group,
            flags,
        };
        let counts: Vec<usize> = (0..batch).map(|b| m.masked(b).len()).collect();
        if counts.windows(2).any(|w| w[0] != w[1]) {
            return Err(ModelError::Input(format!(
                "every cloud must mask the same number of patches, got {counts:?}"
            )));
        }
        if counts.first().is_some_and(|&c| c == 0 || c == num_group) {
            return Err(ModelError::Input(
                "at least one patch must be masked and one visible".into(),
            ));
        }
        Ok(m)
    }

    /// Masked group indices of cloud `b`, ascending.
    pub fn masked(&self, b: usize) -> Vec<usize> {
        self.indices(b, true)
    }

    /// Visible group indices of cloud `b`, ascending.
    pub fn visible(&self, b: usize) -> Vec<usize> {
        self.indices(b, false)
    }

    fn indices(&self, b: usize, masked: bool) -> Vec<usize> {
        let row = &self.flags[b * self.num_group..(b + 1) * self.num_group];
        (0..self.num_group).filter(|&g| row[g] == masked).collect()
    }

    pub fn num_mask(&self) -> usize {
        if self.batch == 0 {
            0
        } else {
            self.masked(0).len()
        }
    }

    /// Flattened `b * G + g` indices of the masked (or visible) patches, cloud-major.
    fn flat(&self, masked: bool) -> Vec<i64> {
        (0..self.batch)
            .flat_map(|b| {
                self.indices(b, masked)
                    .into_iter()
                    .map(move |g| (b * self.num_group + g) as i64)
            })
            .collect()
    }
}

/// The pre-trained encoder: the same parts (and, through [`pretrain_key`], the same keys
/// under `MAE_encoder.`) as the fine-tuning backbone.
#[derive(Module, Debug)]
pub struct MaeEncoder {
    pub encoder: PatchEncoder,
    pub pos_embed: PosEmbed,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct MaeDecoder {
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
}

/// The official `Point_MAE` pre-training model.
#[derive(Module, Debug)]
pub struct PointMae {
    pub mae_encoder: MaeEncoder,
    pub mask_token: Param<Tensor<3>>,
    pub decoder_pos_embed: PosEmbed,
    pub mae_decoder: MaeDecoder,
    /// Conv1d(C, 3·M, 1) as a per-token Linear.
    pub increase_dim: Linear,
    #[module(skip)]
    pub config: MaeConfig,
}

/// One forward pass.
pub struct PretrainOutput {
    /// Chamfer-L2 over all masked patches of the batch.
    pub loss: Tensor<1>,
    /// Predicted local offsets of the masked patches, `[b * masked, M, 3]`, cloud-major.
    pub predicted: Tensor<3>,
    /// Ground-truth local neighbourhoods of the masked patches, same layout.
    pub target: Tensor<3>,
}

/// The official initialisation (§6), drawn on the host from our own [`Rng`] so a seed gives
/// the same model on every backend and no other thread's use of the device RNG can change
/// it: encoder Linear/Conv1d trunc-normal(0.02) with zero bias, decoder Linear
/// xavier-uniform with zero bias, `mask_token` trunc-normal(0.02), `decoder_pos_embed` and
/// `increase_dim` PyTorch's default U(±1/√fan_in) for weight and bias; norms at 1/0.
struct OfficialInit {
    path: Vec<String>,
    rng: Rng,
    trans_dim: usize,
}

impl ModuleMapper for OfficialInit {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = official_name(&self.path.join("."));
        let dims = param.lazy_shape().to_vec();
        let device = param.lazy_device();
        let shape: [usize; D] = match dims.clone().try_into() {
            Ok(s) => s,
            Err(_) => return param,
        };
        let n: usize = dims.iter().product();
        let rng = &mut self.rng;
        let mut trunc = |std: f32| -> Vec<f32> {
            // |x| > 2 (timm's absolute bounds) does not happen at std 0.02: clamp suffices
            (0..n)
                .map(|_| (rng.normal() * std).clamp(-2.0, 2.0))
                .collect()
        };
        let is_bias = name.ends_with(".bias");
        let default_fan_in = match name.as_str() {
            "decoder_pos_embed.fc0.bias" => Some(3),
            "decoder_pos_embed.fc2.bias" => Some(128),
            "increase_dim.bias" => Some(self.trans_dim),
            _ if D == 2
                && (name.starts_with("decoder_pos_embed.")
                    || name.starts_with("increase_dim.")) =>
            {
                Some(dims[0]) // burn Linear weight is [in, out]
            }
            _ => None,
        };
        let values: Option<Vec<f32>> = if name == "mask_token" {
            Some(trunc(0.02))
        } else if let Some(fan_in) = default_fan_in {
            let bound = 1.0 / (fan_in as f32).sqrt();
            Some((0..n).map(|_| self.rng.range(-bound, bound)).collect())
        } else if name.starts_with("mae_encoder.") && D == 2 {
            Some(trunc(0.02))
        } else if name.starts_with("mae_decoder.") && D == 2 {
            let bound = (6.0 / (dims[0] + dims[1]) as f32).sqrt();
            Some((0..n).map(|_| self.rng.range(-bound, bound)).collect())
        } else if is_bias {
            // Linear/Conv1d biases of encoder and decoder (norm biases are 0 already)
            Some(vec![0.0; n])
        } else {
            None
        };
        match values {
            Some(v) => {
                let t = Tensor::<D>::from_data(TensorData::new(v, shape), &device);
                param.map(|_| t)
            }
            None => param,
        }
    }
}

/// Official `pretrain.pth` key of an internal name (see the module docs).
pub fn pretrain_key(internal: &str) -> String {
    if let Some(rest) = internal.strip_prefix("mae_encoder.") {
        return format!("MAE_encoder.{rest}");
    }
    if let Some(rest) = internal.strip_prefix("mae_decoder.blocks.blocks.") {
        return format!("MAE_decoder.blocks.{rest}");
    }
    if let Some(rest) = internal.strip_prefix("mae_decoder.") {
        return format!("MAE_decoder.{rest}");
    }
    if let Some(rest) = internal.strip_prefix("decoder_pos_embed.fc0.") {
        return format!("decoder_pos_embed.0.{rest}");
    }
    if let Some(rest) = internal.strip_prefix("decoder_pos_embed.fc2.") {
        return format!("decoder_pos_embed.2.{rest}");
    }
    if let Some(rest) = internal.strip_prefix("increase_dim.") {
        return format!("increase_dim.0.{rest}");
    }
    internal.to_string()
}

/// Inverse of [`pretrain_key`]; `None` for a key the pre-training model has no place for.
pub fn internal_key(official: &str) -> Option<String> {
    let map = |prefix: &str, to: &str| {
        official
            .strip_prefix(prefix)
            .map(|rest| format!("{to}{rest}"))
    };
    map("MAE_decoder.blocks.", "mae_decoder.blocks.blocks.")
        .or_else(|| map("MAE_decoder.norm.", "mae_decoder.norm."))
        .or_else(|| map("MAE_encoder.", "mae_encoder."))
        .or_else(|| map("decoder_pos_embed.0.", "decoder_pos_embed.fc0."))
        .or_else(|| map("decoder_pos_embed.2.", "decoder_pos_embed.fc2."))
        .or_else(|| map("increase_dim.0.", "increase_dim."))
        .or_else(|| (official == "mask_token").then(|| official.to_string()))
}

/// Chamfer-L2 as the official `ChamferDistanceL2`: mean over every point of `x` of the
/// squared distance to its nearest point of `y`, plus the same from `y` to `x`.
/// `x`: `[p, n, 3]`, `y`: `[p, m, 3]`. Pure tensor ops (broadcast differences, min over a
/// dimension), so it runs and differentiates on every backend.
pub fn chamfer_l2(x: Tensor<3>, y: Tensor<3>) -> Tensor<1> {
    let [p, n, _] = x.dims();
    let [_, m, _] = y.dims();
    // differences rather than x² + y² − 2xy: no cancellation for nearby points
    let d = (x.unsqueeze_dim::<4>(2).expand([p, n, m, 3])
        - y.unsqueeze_dim::<4>(1).expand([p, n, m, 3]))
    .square()
    .sum_dim(3)
    .reshape([p, n, m]);
    let d1 = d.clone().min_dim(2); // [p, n, 1]: x → nearest y
    let d2 = d.min_dim(1); // [p, 1, m]: y → nearest x
    d1.mean() + d2.mean()
}

fn index_tensor(idx: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = idx.len();
    Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device)
}

impl PointMae {
    /// A freshly initialised model with the official initialisation, drawn from `seed`.
    pub fn new(config: &MaeConfig, seed: u64, device: &Device) -> Result<Self, ModelError> {
        config.validate()?;
        let c = config.trans_dim;
        let enc_blocks = crate::model::block::drop_path_rates(config.drop_path_rate, config.depth)
            .into_iter()
            .map(|dp| Block::new(c, config.num_heads, dp, None, device))
            .collect();
        let dec_blocks =
            crate::model::block::drop_path_rates(config.drop_path_rate, config.decoder_depth)
                .into_iter()
                .map(|dp| Block::new(c, config.decoder_num_heads, dp, None, device))
                .collect();
        let model = Self {
            mae_encoder: MaeEncoder {
                encoder: PatchEncoder::new(c, device),
                pos_embed: PosEmbed::new(c, device),
                blocks: enc_blocks,
                norm: LayerNorm::new(c, device),
            },
            mask_token: param(Tensor::zeros([1, 1, c], device)),
            decoder_pos_embed: PosEmbed::new(c, device),
            mae_decoder: MaeDecoder {
                blocks: dec_blocks,
                norm: LayerNorm::new(c, device),
            },
            increase_dim: linear(c, 3 * config.group_size, true, device),
            config: config.clone(),
        };
        Ok(model.map(&mut OfficialInit {
            path: Vec::new(),
            rng: Rng::new(seed),
            trans_dim: c,
        }))
    }

    /// Groups raw clouds (`[b, n, 3]` flattened) for this model, where `device` groups
    /// (host kernels on burn-flex, device kernels on a GPU backend).
    pub fn group(
        &self,
        points: &[[f32; 3]],
        b: usize,
        n: usize,
        device: &Device,
    ) -> Result<Patches, ModelError> {
        let (g, m) = (self.config.num_group, self.config.group_size);
        Patches::build(points, b, n, g, m, device)
    }

    /// This model's mask (`mask_type`, `mask_ratio`) for grouped clouds.
    pub fn draw_mask(&self, patches: &Patches, rng: &mut Rng) -> PatchMask {
        PatchMask::draw(self.config.mask_type, patches, self.config.num_mask(), rng)
    }

    /// Groups `b` clouds of `n` points, draws this model's mask from `rng` (after grouping:
    /// block masks need the centres) and runs the network; `training` selects
    /// drop path (from `rng` too) and BatchNorm batch statistics.
    pub fn forward_drawn(
        &mut self,
        points: &[[f32; 3]],
        b: usize,
        n: usize,
        device: &Device,
        rng: &mut Rng,
        training: bool,
    ) -> Result<(PretrainOutput, Patches, PatchMask), ModelError> {
        let patches = self.group(points, b, n, device)?;
        let mask = self.draw_mask(&patches, rng);
        let mut ctx = if training {
            ForwardCtx::train(rng)
        } else {
            ForwardCtx::eval()
        };
        let out = self.forward_groups(
            patches.neighborhoods.clone(),
            patches.centers.clone(),
            &mask,
            &mut ctx,
        )?;
        Ok((out, patches, mask))
    }

    /// Groups raw clouds (`[b, n, 3]` flattened) and runs the network with `mask`.
    pub fn forward_points(
        &mut self,
        points: &[[f32; 3]],
        b: usize,
        n: usize,
        mask: &PatchMask,
        device: &Device,
        ctx: &mut ForwardCtx,
    ) -> Result<(PretrainOutput, Patches), ModelError> {
        let patches = self.group(points, b, n, device)?;
        let out = self.forward_groups(
            patches.neighborhoods.clone(),
            patches.centers.clone(),
            mask,
            ctx,
        )?;
        Ok((out, patches))
    }

    /// `neighborhoods`: `[b, G, M, 3]` local coordinates, `centers`: `[b, G, 3]`.
    pub fn forward_groups(
        &mut self,
        neighborhoods: Tensor<4>,
        centers: Tensor<3>,
        mask: &PatchMask,
        ctx: &mut ForwardCtx,
    ) -> Result<PretrainOutput, ModelError> {
        let [b, g, m, _] = neighborhoods.dims();
        if mask.batch != b || mask.num_group != g {
            return Err(ModelError::Input(format!(
                "mask is {}x{}, the batch has {b} clouds of {g} groups",
                mask.batch, mask.num_group
            )));
        }
        let c = self.config.trans_dim;
        let nm = mask.num_mask();
        let nv = g - nm;
        let device = neighborhoods.device();
        let vis_idx = index_tensor(mask.flat(false), &device);
        let mask_idx = index_tensor(mask.flat(true), &device);

        // encoder: every patch through the mini-PointNet, then the visible tokens only
        let tokens = self
            .mae_encoder
            .encoder
            .forward(neighborhoods.clone(), ctx.training);
        let x_vis = tokens
            .reshape([b * g, c])
            .select(0, vis_idx.clone())
            .reshape([b, nv, c]);
        let flat_centers = centers.reshape([b * g, 3]);
        let c_vis = flat_centers.clone().select(0, vis_idx).reshape([b, nv, 3]);
        let c_mask = flat_centers.select(0, mask_idx.clone()).reshape([b, nm, 3]);
        let pos = self.mae_encoder.pos_embed.forward(c_vis.clone());
        let x = run_plain(&self.mae_encoder.blocks, x_vis, &pos, ctx, |_, _| {});
        let x_vis = self.mae_encoder.norm.forward(x);

        // decoder: [visible ; mask tokens], positions of [visible ; masked] centres
        let pos_full = Tensor::cat(
            vec![
                self.decoder_pos_embed.forward(c_vis),
                self.decoder_pos_embed.forward(c_mask),
            ],
            1,
        );
        let tokens = self.mask_token.val().expand([b, nm, c]);
        let x = Tensor::cat(vec![x_vis, tokens], 1);
        let x = run_plain(&self.mae_decoder.blocks, x, &pos_full, ctx, |_, _| {});
        let x_rec = self.mae_decoder.norm.forward(x.slice_dim(1, nv..g));
        let predicted = self.increase_dim.forward(x_rec).reshape([b * nm, m, 3]);
        let target = neighborhoods.reshape([b * g, m, 3]).select(0, mask_idx);
        let loss = chamfer_l2(predicted.clone(), target.clone());
        Ok(PretrainOutput {
            loss,
            predicted,
            target,
        })
    }

    /// Reconstruction of one cloud in eval mode with a mask drawn from `rng`, in absolute
    /// coordinates (what the official `vis=True` path returns).
    pub fn reconstruct(
        &mut self,
        points: &[[f32; 3]],
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Reconstruction, ModelError> {
        let (out, patches, mask) =
            self.forward_drawn(points, 1, points.len(), device, rng, false)?;
        reconstructions(&out, &patches, &mask)
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::Input("empty reconstruction".into()))
    }

    /// Every tensor under its official `pretrain.pth` name and shape (`increase_dim.0.weight`
    /// as the Conv1d `[3M, C, 1]`).
    pub fn official_tensors(&self) -> Vec<(String, RawTensor)> {
        let mut r = Reader::new();
        self.visit(&mut r);
        r.out
            .into_iter()
            .map(|(name, mut t)| {
                let key = pretrain_key(&name);
                if key == "increase_dim.0.weight" && t.shape.len() == 2 {
                    t.shape.push(1);
                }
                (key, t)
            })
            .collect()
    }
}

/// One cloud's reconstruction in absolute coordinates, patch by patch (`group_size` points
/// each). Patches overlap, so the point counts exceed the cloud's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Reconstruction {
    pub group_size: usize,
    pub visible_centers: Vec<[f32; 3]>,
    pub masked_centers: Vec<[f32; 3]>,
    /// Visible patches (input points).
    pub visible: Vec<[f32; 3]>,
    /// Masked patches as predicted: centre + predicted offsets.
    pub predicted: Vec<[f32; 3]>,
    /// Masked patches as they were: centre + true offsets.
    pub ground_truth: Vec<[f32; 3]>,
}

/// Per-cloud reconstructions of a batch forward pass (three read-backs on a GPU: the
/// prediction, the centres and the neighbourhoods).
pub fn reconstructions(
    out: &PretrainOutput,
    patches: &Patches,
    mask: &PatchMask,
) -> Vec<Reconstruction> {
    let m = patches.group_size;
    let g = patches.num_group;
    let nm = mask.num_mask();
    let pred = host_vec(out.predicted.clone());
    let centers = patches.centers_host();
    let neighborhoods = patches.neighborhoods_host();
    let n = mask.batch * g;
    if centers.len() < n || neighborhoods.len() < n * m || pred.len() < mask.batch * nm * m * 3 {
        // a failed read-back: no reconstruction rather than a wrong one
        return Vec::new();
    }
    let add = |c: [f32; 3], o: &[f32]| [c[0] + o[0], c[1] + o[1], c[2] + o[2]];
    (0..mask.batch)
        .map(|b| {
            let mut r = Reconstruction {
                group_size: m,
                ..Default::default()
            };
            for gi in mask.visible(b) {
                let c = centers[b * g + gi];
                r.visible_centers.push(c);
                let base = (b * g + gi) * m;
                for o in &neighborhoods[base..base + m] {
                    r.visible.push(add(c, o));
                }
            }
            for (k, gi) in mask.masked(b).into_iter().enumerate() {
                let c = centers[b * g + gi];
                r.masked_centers.push(c);
                let base = (b * g + gi) * m;
                for o in &neighborhoods[base..base + m] {
                    r.ground_truth.push(add(c, o));
                }
                let p0 = ((b * nm + k) * m) * 3;
                for o in pred[p0..p0 + m * 3].chunks_exact(3) {
                    r.predicted.push(add(c, o));
                }
            }
            r
        })
        .collect()
}

fn strip_ones(s: &[usize]) -> Vec<usize> {
    s.iter().copied().filter(|&d| d != 1).collect()
}

/// Loads a full pre-training state dict (official `pretrain.pth` names, `module.` already
/// stripped by the reader) strictly: every tensor present with its shape, nothing extra.
/// Errors name the official keys.
pub fn load_pretrain(
    model: PointMae,
    dict: &StateDict,
) -> Result<(PointMae, LoadReport), ModelError> {
    let expected: Vec<(String, Vec<usize>)> = named_params(&model)
        .into_iter()
        .map(|p| (pretrain_key(&p.name), p.torch_shape))
        .collect();
    let names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut missing: Vec<String> = expected
        .iter()
        .filter(|(n, _)| !dict.tensors.contains_key(n))
        .map(|(n, _)| n.clone())
        .collect();
    let mut unexpected: Vec<String> = dict
        .tensors
        .keys()
        .filter(|k| !names.contains(k.as_str()))
        .cloned()
        .collect();
    let mut shape_errors: Vec<String> = expected
        .iter()
        .filter_map(|(n, want)| {
            let t = dict.tensors.get(n)?;
            (t.shape != *want && strip_ones(&t.shape) != strip_ones(want)).then(|| {
                format!(
                    "{n}: checkpoint shape {:?}, model expects {want:?}",
                    t.shape
                )
            })
        })
        .collect();
    missing.sort();
    unexpected.sort();
    shape_errors.sort();
    if !missing.is_empty() || !unexpected.is_empty() || !shape_errors.is_empty() {
        let show = |v: &[String]| {
            let mut s = v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 8 {
                s.push_str(&format!(", ... ({} in all)", v.len()));
            }
            s
        };
        let mut msg =
            String::from("is not a Point-MAE pre-training checkpoint of this configuration");
        if !missing.is_empty() {
            msg.push_str(&format!("; missing keys: {}", show(&missing)));
        }
        if !unexpected.is_empty() {
            msg.push_str(&format!("; unexpected keys: {}", show(&unexpected)));
        }
        if !shape_errors.is_empty() {
            msg.push_str(&format!("; {}", show(&shape_errors)));
        }
        return Err(ModelError::Checkpoint {
            path: dict.path.clone(),
            message: msg,
        });
    }
    let tensors: HashMap<String, RawTensor> = dict
        .tensors
        .iter()
        .filter_map(|(k, v)| internal_key(k).map(|ik| (ik, v.clone())))
        .collect();
    let translated = StateDict {
        tensors,
        ..dict.clone()
    };
    let (model, mut report) = load_into(model, &translated, LoadMode::Strict)?;
    // pre-training trains every parameter; loading replaced them without a gradient flag
    let model = model.map(&mut Trainable::new(|_: &str| true));
    report.applied = report.applied.iter().map(|n| pretrain_key(n)).collect();
    Ok((model, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_match_the_official_layout() {
        let device = Device::flex();
        let mut cfg = MaeConfig::small();
        cfg.depth = 2;
        let model = PointMae::new(&cfg, 0, &device).unwrap();
        let keys: Vec<String> = model
            .official_tensors()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for want in [
            "MAE_encoder.encoder.first_conv.0.weight",
            "MAE_encoder.encoder.second_conv.1.running_var",
            "MAE_encoder.pos_embed.2.bias",
            "MAE_encoder.blocks.blocks.1.attn.qkv.weight",
            "MAE_encoder.norm.weight",
            "mask_token",
            "decoder_pos_embed.0.weight",
            "decoder_pos_embed.2.bias",
            "MAE_decoder.blocks.1.mlp.fc2.weight",
            "MAE_decoder.norm.bias",
            "increase_dim.0.weight",
        ] {
            assert!(
                keys.iter().any(|k| k == want),
                "{want} missing from {keys:?}"
            );
        }
        for k in &keys {
            let internal = internal_key(k).unwrap_or_else(|| panic!("{k} has no internal name"));
            assert_eq!(&pretrain_key(&internal), k);
        }
        assert_eq!(internal_key("cls_token"), None);
    }

    #[test]
    fn random_masks_have_exact_counts_and_differ_per_cloud() {
        let mut rng = Rng::new(5);
        let m = PatchMask::random(8, 64, 38, &mut rng);
        for b in 0..8 {
            assert_eq!(m.masked(b).len(), 38);
            assert_eq!(m.visible(b).len(), 26);
        }
        let rows: HashSet<Vec<bool>> = m.flags.chunks(64).map(|r| r.to_vec()).collect();
        assert!(rows.len() > 1, "every cloud got the same mask");
        assert!(
            PatchMask::from_flags(
                2,
                4,
                vec![true, false, false, false, true, true, false, false]
            )
            .is_err()
        );
    }

    #[test]
    fn block_masks_are_the_patches_nearest_one_centre() {
        let mut rng = Rng::new(3);
        let (batch, g, nm) = (6, 40, 24);
        let centers: Vec<[f32; 3]> = (0..batch * g)
            .map(|_| [rng.normal(), rng.normal(), rng.normal()])
            .collect();
        let m = PatchMask::block(&centers, batch, g, nm, &mut rng);
        let d2 = |a: [f32; 3], b: [f32; 3]| (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f32>();
        for b in 0..batch {
            let row = &centers[b * g..(b + 1) * g];
            let (masked, visible) = (m.masked(b), m.visible(b));
            assert_eq!((masked.len(), visible.len()), (nm, g - nm));
            // some masked centre (the drawn one) has every masked patch nearer than every
            // visible one
            let hole = masked.iter().any(|&c| {
                let far = masked
                    .iter()
                    .map(|&i| d2(row[c], row[i]))
                    .fold(0.0, f32::max);
                visible.iter().all(|&i| d2(row[c], row[i]) >= far)
            });
            assert!(hole, "cloud {b}: the masked patches are not one block");
        }
        let rows: HashSet<Vec<bool>> = m.flags.chunks(g).map(|r| r.to_vec()).collect();
        assert!(rows.len() > 1, "every cloud got the same mask");
        // a random mask of the same clouds is almost surely not a block
        let r = PatchMask::random(batch, g, nm, &mut rng);
        assert_ne!(r.flags, m.flags);
    }

    #[test]
    fn the_yaml_mask_type_is_read_and_an_unknown_one_refused() {
        let yaml = |t: &str| {
            format!(
                "model: {{NAME: Point_MAE, group_size: 16, num_group: 32, transformer_config: \
                 {{mask_ratio: 0.6, mask_type: '{t}', trans_dim: 96, depth: 2, num_heads: 4, \
                 decoder_depth: 1}}}}\nnpoints: 512\n"
            )
        };
        assert_eq!(
            MaeConfig::from_yaml_str(&yaml("block")).unwrap().mask_type,
            MaskType::Block
        );
        assert_eq!(
            MaeConfig::from_yaml_str(&yaml("rand")).unwrap().mask_type,
            MaskType::Rand
        );
        let e = MaeConfig::from_yaml_str(&yaml("tube")).unwrap_err();
        assert!(e.to_string().contains("'rand', 'block'"), "{e}");
        // configs saved before mask types existed read as `rand`
        let mut v = serde_json::to_value(MaeConfig::small()).unwrap();
        v.as_object_mut().unwrap().remove("mask_type");
        let old: MaeConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old.mask_type, MaskType::Rand);
    }

    #[test]
    fn chamfer_matches_a_direct_computation() {
        let device = Device::flex();
        let mut rng = Rng::new(1);
        let (p, n, m) = (3, 5, 4);
        let xs: Vec<f32> = (0..p * n * 3).map(|_| rng.normal()).collect();
        let ys: Vec<f32> = (0..p * m * 3).map(|_| rng.normal()).collect();
        let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [p, n, 3]), &device);
        let y = Tensor::<3>::from_data(TensorData::new(ys.clone(), [p, m, 3]), &device);
        let got = chamfer_l2(x, y).into_scalar::<f32>() as f64;
        let d =
            |a: &[f32], b: &[f32]| -> f64 { (0..3).map(|k| ((a[k] - b[k]) as f64).powi(2)).sum() };
        let (mut s1, mut s2) = (0.0, 0.0);
        for q in 0..p {
            let xq: Vec<&[f32]> = xs[q * n * 3..(q + 1) * n * 3].chunks(3).collect();
            let yq: Vec<&[f32]> = ys[q * m * 3..(q + 1) * m * 3].chunks(3).collect();
            for a in &xq {
                s1 += yq.iter().map(|b| d(a, b)).fold(f64::INFINITY, f64::min);
            }
            for b in &yq {
                s2 += xq.iter().map(|a| d(a, b)).fold(f64::INFINITY, f64::min);
            }
        }
        let want = s1 / (p * n) as f64 + s2 / (p * m) as f64;
        assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    }
}
