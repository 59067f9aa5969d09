//! Part-segmentation inference: a model with its category tables, from a native checkpoint
//! (configuration inside) or an official `part_seg.pth` (configuration read off the shapes).

use std::path::Path;

use burn::tensor::Device;

use crate::model::ModelError;
use crate::model::checkpoint::{CheckpointFormat, LoadMode, StateDict, read_state_dict};
use crate::model::partseg::{PartSegConfig, PartSegModel, load_partseg};

/// A part-segmentation model ready for inference, with its category tables.
pub struct LoadedPartSeg {
    pub model: PartSegModel,
    pub category_names: Vec<String>,
    pub category_parts: Vec<Vec<usize>>,
    pub normalize: bool,
}

/// Infers the official model's configuration from an official `part_seg.pth` state dict:
/// widths, depth and class counts come from tensor shapes; the grouping (128 x 32), the heads
/// (6) and the taps (d/3, 2d/3, d) are not stored in the file and take the official values.
pub fn config_from_state_dict(dict: &StateDict) -> Result<PartSegConfig, ModelError> {
    let shape = |k: &str| {
        dict.tensors
            .get(k)
            .map(|t| t.shape.clone())
            .ok_or_else(|| ModelError::Checkpoint {
                path: dict.path.clone(),
                message: format!("not a part-segmentation checkpoint: no `{k}`"),
            })
    };
    let c = shape("norm.weight")?[0];
    let depth = (0..)
        .take_while(|i| {
            dict.tensors
                .contains_key(&format!("blocks.blocks.{i}.norm1.weight"))
        })
        .count();
    let parts = shape("convs3.bias")?[0];
    let cats = shape("label_conv.0.weight")?.get(1).copied().unwrap_or(0);
    let prop = shape("propagation_0.mlp_convs.1.bias")?[0];
    let h1 = shape("convs1.bias")?[0];
    let h2 = shape("convs2.bias")?[0];
    let kind = if dict.tensors.contains_key("tfts_gamma_1") {
        crate::model::ModelKind::Dapt
    } else {
        crate::model::ModelKind::PointMae
    };
    let rank = dict
        .tensors
        .get("blocks.blocks.0.Adapter_MLP.down_proj.bias")
        .map(|t| t.shape[0])
        .unwrap_or(64);
    Ok(PartSegConfig {
        kind,
        trans_dim: c,
        depth,
        taps: PartSegConfig::default_taps(depth),
        num_parts: parts,
        num_categories: cats,
        prop_dim: prop,
        head_dims: [h1, h2],
        rank,
        ..PartSegConfig::official(kind)
    })
}

/// Loads a native part-segmentation checkpoint (configuration inside) or an official
/// `part_seg.pth` (configuration inferred, ShapeNetPart tables, inputs normalised).
pub fn load_partseg_checkpoint(path: &Path, device: &Device) -> Result<LoadedPartSeg, ModelError> {
    load_partseg_from(read_state_dict(path)?, device)
}

/// [`load_partseg_checkpoint`] on a state dict already read.
pub fn load_partseg_from(dict: StateDict, device: &Device) -> Result<LoadedPartSeg, ModelError> {
    let meta = dict.meta.clone().unwrap_or(serde_json::Value::Null);
    let shapenet = || {
        let c = &crate::data::dataset::SHAPENETPART_CATEGORIES;
        (
            c.iter().map(|(n, _, _)| n.to_string()).collect::<Vec<_>>(),
            c.iter().map(|(_, _, p)| p.to_vec()).collect::<Vec<_>>(),
        )
    };
    let (cfg, names, parts, normalize) = if dict.format == CheckpointFormat::Native {
        if meta.get("task").and_then(|v| v.as_str()) != Some("partseg") {
            return Err(ModelError::Checkpoint {
                path: dict.path.clone(),
                message: "not a part-segmentation checkpoint (use --task classification)".into(),
            });
        }
        let bad = |what: &str, e: serde_json::Error| ModelError::Checkpoint {
            path: dict.path.clone(),
            message: format!("bad {what} in the metadata: {e}"),
        };
        let cfg: PartSegConfig =
            serde_json::from_value(meta["model"].clone()).map_err(|e| bad("model", e))?;
        let names: Vec<String> = serde_json::from_value(meta["class_names"].clone())
            .map_err(|e| bad("class_names", e))?;
        let parts: Vec<Vec<usize>> = serde_json::from_value(meta["category_parts"].clone())
            .map_err(|e| bad("category_parts", e))?;
        let norm = meta
            .get("normalize")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        (cfg, names, parts, norm)
    } else {
        let cfg = config_from_state_dict(&dict)?;
        let (names, parts) = shapenet();
        (cfg, names, parts, true)
    };
    if names.len() != cfg.num_categories || parts.len() != cfg.num_categories {
        return Err(ModelError::Checkpoint {
            path: dict.path.clone(),
            message: format!(
                "the model has {} categories but the metadata lists {}",
                cfg.num_categories,
                names.len()
            ),
        });
    }
    let model = PartSegModel::new(&cfg, device)?;
    let (model, _) = load_partseg(model, &dict, LoadMode::Strict)?;
    Ok(LoadedPartSeg {
        model,
        category_names: names,
        category_parts: parts,
        normalize,
    })
}
