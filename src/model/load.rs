//! Loading a classifier for inference from any checkpoint a user has: a native run
//! checkpoint (config inside), or an official `.pth` with its YAML config.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::checkpoint::{CheckpointFormat, LoadMode, StateDict, load_into, read_state_dict};
use super::{Classifier, ModelConfig, ModelError};

/// The standard ModelNet40 class order (`modelnet40_shape_names.txt`).
pub const MODELNET40: [&str; 40] = [
    "airplane",
    "bathtub",
    "bed",
    "bench",
    "bookshelf",
    "bottle",
    "bowl",
    "car",
    "chair",
    "cone",
    "cup",
    "curtain",
    "desk",
    "door",
    "dresser",
    "flower_pot",
    "glass_box",
    "guitar",
    "keyboard",
    "lamp",
    "laptop",
    "mantel",
    "monitor",
    "night_stand",
    "person",
    "piano",
    "plant",
    "radio",
    "range_hood",
    "sink",
    "sofa",
    "stairs",
    "stool",
    "table",
    "tent",
    "toilet",
    "tv_stand",
    "vase",
    "wardrobe",
    "xbox",
];

/// The ScanObjectNN class order.
pub const SCANOBJECTNN: [&str; 15] = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
];

pub struct LoadedClassifier {
    pub model: Classifier,
    pub class_names: Vec<String>,
    /// Whether inputs get `pc_normalize` (the training run's or the dataset's choice).
    pub normalize: bool,
    pub checkpoint: PathBuf,
}

/// Normalisation implied by an official YAML: ModelNet40 normalises, ScanObjectNN does not,
/// a bare `model:` block says nothing (none).
pub fn yaml_normalization(path: &Path) -> bool {
    super::yaml::OfficialYaml::read(path)
        .ok()
        .and_then(|y| y.normalization())
        .unwrap_or(false)
}

pub fn load_classifier(
    checkpoint: &Path,
    config: Option<&Path>,
    device: &Device,
) -> Result<LoadedClassifier, ModelError> {
    load_classifier_from(read_state_dict(checkpoint)?, config, device)
}

/// [`load_classifier`] on a state dict already read (callers that inspect it first).
pub fn load_classifier_from(
    dict: StateDict,
    config: Option<&Path>,
    device: &Device,
) -> Result<LoadedClassifier, ModelError> {
    let meta = dict.meta.clone().unwrap_or(serde_json::Value::Null);
    let (cfg, mut class_names, normalize) = match config {
        Some(p) => {
            let cfg = ModelConfig::load(p)?;
            let norm = if p.extension().is_some_and(|e| e == "json") {
                meta.get("normalize")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false)
            } else {
                yaml_normalization(p)
            };
            (cfg, Vec::new(), norm)
        }
        None => {
            if dict.format != CheckpointFormat::Native {
                return Err(ModelError::Checkpoint {
                    path: dict.path.clone(),
                    message: "an official .pth checkpoint carries no model configuration: pass --config with its cfgs/finetune_*.yaml".into(),
                });
            }
            let model = meta
                .get("model")
                .cloned()
                .ok_or_else(|| ModelError::Checkpoint {
                    path: dict.path.clone(),
                    message: "native checkpoint without a model configuration".into(),
                })?;
            let cfg: ModelConfig =
                serde_json::from_value(model).map_err(|e| ModelError::Checkpoint {
                    path: dict.path.clone(),
                    message: format!("bad model configuration: {e}"),
                })?;
            let names: Vec<String> = meta
                .get("class_names")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let norm = meta
                .get("normalize")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            (cfg, names, norm)
        }
    };
    if class_names.len() != cfg.cls_dim {
        class_names = match cfg.cls_dim {
            40 => MODELNET40.iter().map(|s| s.to_string()).collect(),
            15 => SCANOBJECTNN.iter().map(|s| s.to_string()).collect(),
            k => (0..k).map(|i| format!("class_{i}")).collect(),
        };
    }
    let model = Classifier::new(&cfg, device)?;
    let (model, _) = load_into(model, &dict, LoadMode::Strict)?;
    Ok(LoadedClassifier {
        model,
        class_names,
        normalize,
        checkpoint: dict.path.clone(),
    })
}
