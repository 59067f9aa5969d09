//! Loading a model for inference from any checkpoint a user has: a native run checkpoint
//! (config inside), an official `.pth` with its YAML config, or a Point-MAE backbone plus a
//! run's `adapter.safetensors` ([`load_classifier_with_adapter`], [`assemble_partseg`]).

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::checkpoint::{CheckpointFormat, LoadMode, StateDict, load_into, read_state_dict};
use super::names::RawTensor;
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
    class_names = class_names_or_default(class_names, cfg.cls_dim);
    let model = Classifier::new(&cfg, device)?;
    let (model, _) = load_into(model, &dict, LoadMode::Strict)?;
    Ok(LoadedClassifier {
        model,
        class_names,
        normalize,
        checkpoint: dict.path.clone(),
    })
}

// ---------------------------------------------------------------------------------------
// Adapters: a run's `adapter.safetensors` applied on top of a Point-MAE backbone.
//
// A run's model splits into the tensors a backbone file determines (the Point-MAE encoder,
// positional embedding, blocks and final norm, frozen in DAPT and linear runs) and the rest:
// what was trained, the BatchNorm running statistics (they drift in train mode even where
// the affine parameters are frozen) and anything the backbone has no tensor for (cls token
// and position, the head). The adapter file holds the rest, plus a content hash of the
// frozen part, so `backbone + adapter` is checked to rebuild exactly the run's model.

/// `kind` in the metadata of a classification run's adapter file.
pub const ADAPTER_KIND: &str = "adapter";
/// `kind` in the metadata of a part-segmentation run's adapter file.
pub const PARTSEG_ADAPTER_KIND: &str = "partseg_adapter";

/// Why a backbone and an adapter do not make a model.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error(
        "{path}: not an adapter file ({found}); an adapter is a run's adapter.safetensors{}",
        .backbone.as_ref().map_or(String::new(), |b| format!(" (backbone {})", b.display()))
    )]
    NotAdapter {
        path: PathBuf,
        found: String,
        /// The backbone it was to be applied on, when known.
        backbone: Option<PathBuf>,
    },
    #[error("{backbone} cannot be the backbone for adapter {adapter}: {source}")]
    Backbone {
        backbone: PathBuf,
        adapter: PathBuf,
        source: ModelError,
    },
    #[error(
        "adapter {adapter} is a {task} adapter and cannot be used {wanted} (backbone {backbone}): {hint}"
    )]
    WrongTask {
        adapter: PathBuf,
        backbone: PathBuf,
        task: &'static str,
        wanted: &'static str,
        hint: &'static str,
    },
    #[error("adapter {adapter} does not fit backbone {backbone}: {problem}")]
    Mismatch {
        adapter: PathBuf,
        backbone: PathBuf,
        problem: String,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// BatchNorm running statistics: state that changes in train mode, frozen or not.
pub fn is_bn_buffer(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// Whether a Point-MAE backbone file holds this tensor (official name, after the
/// `MAE_encoder.` remapping): the patch encoder, positional embedding, the blocks' attention,
/// MLP and norms, and the final norm. DAPT's additions (TFTS, adapters) and the cls token are
/// not part of it.
pub fn is_backbone_tensor(name: &str) -> bool {
    ["encoder.", "pos_embed.", "blocks.blocks.", "norm."]
        .iter()
        .any(|p| name.starts_with(p))
        && !super::names::dapt_trainable(name)
}

/// Content hash of tensors by official name (order-free; trailing or inner size-1 dimensions
/// ignored, since a Conv1d weight `[o, i, 1]` and a Linear one `[o, i]` hold the same
/// values): equal for the same backbone stored as `.pth` or `.safetensors`.
pub fn backbone_hash<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a RawTensor)>) -> String {
    // FNV-1a, 128 bits: no hashing crate in the dependency tree, and identity (not an
    // adversary) is what is checked
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u128;
            h = h.wrapping_mul(PRIME);
        }
    };
    let mut v: Vec<(&str, &RawTensor)> = tensors.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    for (name, t) in v {
        eat(name.as_bytes());
        eat(&[0]);
        for &d in t.shape.iter().filter(|&&d| d != 1) {
            eat(&(d as u64).to_le_bytes());
        }
        eat(&[1]);
        for x in &t.data {
            eat(&x.to_bits().to_le_bytes());
        }
    }
    format!("fnv1a128:{h:032x}")
}

/// A trained model's tensors split for the adapter file.
pub struct AdapterSplit {
    /// What the adapter file stores.
    pub tensors: Vec<(String, RawTensor)>,
    /// [`backbone_hash`] of the other tensors: those the backbone must supply.
    pub backbone_hash: String,
    pub frozen_tensors: usize,
}

/// Splits `tensors` (official names) into the adapter part — trained (`trainable`), BatchNorm
/// buffers, and whatever a backbone file has no tensor for — and the frozen backbone part,
/// of which only the hash is kept.
pub fn split_for_adapter(
    tensors: Vec<(String, RawTensor)>,
    trainable: impl Fn(&str) -> bool,
) -> AdapterSplit {
    let (keep, frozen): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .partition(|(n, _)| trainable(n) || is_bn_buffer(n) || !is_backbone_tensor(n));
    AdapterSplit {
        backbone_hash: backbone_hash(frozen.iter().map(|(n, t)| (n.as_str(), t))),
        frozen_tensors: frozen.len(),
        tensors: keep,
    }
}

/// Adds the adapter entries to a run checkpoint's metadata (`meta` holds model, mode, class
/// names, normalisation, epoch, init).
pub fn adapter_metadata(
    meta: &serde_json::Value,
    kind: &str,
    split: &AdapterSplit,
    init: Option<&Path>,
) -> serde_json::Value {
    let mut meta = meta.clone();
    if let Some(o) = meta.as_object_mut() {
        o.insert("kind".into(), serde_json::json!(kind));
        o.insert("adapter_format".into(), serde_json::json!(1));
        // `backbone` kept for files read by older code; `init` is the same path
        o.insert("backbone".into(), serde_json::json!(init));
        o.insert("init".into(), serde_json::json!(init));
        o.insert(
            "backbone_hash".into(),
            serde_json::json!(split.backbone_hash),
        );
        o.insert(
            "frozen_tensors".into(),
            serde_json::json!(split.frozen_tensors),
        );
    }
    meta
}

/// Reads the JSON metadata of a native (safetensors) file from its header only, without the
/// tensors: cheap enough for the UI thread to decide what a dropped file is.
pub fn peek_native_meta(path: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    // a header is a few KB; anything huge is not ours
    if len == 0 || len > 64 << 20 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let text = v
        .get("__metadata__")?
        .get(super::checkpoint::META_KEY)?
        .as_str()?;
    serde_json::from_str(text).ok()
}

/// A Point-MAE backbone read once, tensors under the fine-tuning model's official names.
#[derive(Clone, Debug)]
pub struct Backbone {
    pub path: PathBuf,
    pub tensors: std::collections::HashMap<String, RawTensor>,
    pub meta: Option<serde_json::Value>,
}

impl Backbone {
    /// Reads the official `pretrain.pth`, `dapt pretrain`'s `backbone.safetensors` or
    /// `pretrain.pth`, or any checkpoint holding the backbone tensors (a fine-tuned one too).
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        Self::from_dict(read_state_dict(path)?)
    }

    pub fn from_dict(dict: StateDict) -> Result<Self, ModelError> {
        let kind = dict
            .meta
            .as_ref()
            .and_then(|m| m.get("kind"))
            .and_then(|k| k.as_str());
        if matches!(kind, Some(ADAPTER_KIND | PARTSEG_ADAPTER_KIND)) {
            return Err(ModelError::Checkpoint {
                path: dict.path,
                message: "an adapter file, not a backbone (pass it as the adapter)".into(),
            });
        }
        let tensors: std::collections::HashMap<String, RawTensor> = dict
            .tensors
            .into_iter()
            .map(|(k, v)| (super::checkpoint::backbone_key(&k), v))
            .collect();
        if !tensors.keys().any(|k| is_backbone_tensor(k)) {
            return Err(ModelError::Checkpoint {
                path: dict.path,
                message:
                    "no Point-MAE backbone tensor (encoder.*, blocks.blocks.*, norm.*) in this file"
                        .into(),
            });
        }
        Ok(Self {
            path: dict.path,
            tensors,
            meta: dict.meta,
        })
    }

    /// Width and depth read off the tensors (the file may carry no configuration).
    fn shape_summary(&self) -> (Option<usize>, usize) {
        let width = self.tensors.get("norm.weight").map(|t| t.shape[0]);
        let depth = (0..)
            .take_while(|i| {
                self.tensors
                    .contains_key(&format!("blocks.blocks.{i}.norm1.weight"))
            })
            .count();
        (width, depth)
    }
}

/// Which model an adapter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterTask {
    Classification,
    PartSegmentation,
}

/// A run's adapter file.
#[derive(Clone, Debug)]
pub struct Adapter {
    pub path: PathBuf,
    pub task: AdapterTask,
    pub tensors: std::collections::HashMap<String, RawTensor>,
    /// The run's checkpoint metadata: model, mode, class names, normalisation, epoch, init.
    pub meta: serde_json::Value,
    pub backbone_hash: String,
    /// The `--init` the run started from (`None`: a randomly initialised backbone).
    pub init: Option<PathBuf>,
    /// The epoch whose tensors these are (the best one).
    pub epoch: Option<usize>,
}

impl Adapter {
    pub fn read(path: &Path) -> Result<Self, AdapterError> {
        let dict = read_state_dict(path)?;
        let not = |found: String| AdapterError::NotAdapter {
            path: path.to_path_buf(),
            found,
            backbone: None,
        };
        let Some(meta) = dict.meta else {
            return Err(not("a PyTorch checkpoint".into()));
        };
        let task = match meta.get("kind").and_then(|k| k.as_str()) {
            Some(ADAPTER_KIND) => AdapterTask::Classification,
            Some(PARTSEG_ADAPTER_KIND) => AdapterTask::PartSegmentation,
            Some(other) => return Err(not(format!("a `{other}` checkpoint"))),
            None => return Err(not("no `kind` in its metadata".into())),
        };
        let Some(hash) = meta.get("backbone_hash").and_then(|h| h.as_str()) else {
            return Err(not(
                "written before adapters recorded their backbone's identity; retrain, or use the run's checkpoints/best.safetensors".into(),
            ));
        };
        Ok(Self {
            path: dict.path,
            task,
            tensors: dict.tensors,
            backbone_hash: hash.to_string(),
            init: meta.get("init").and_then(|v| v.as_str()).map(PathBuf::from),
            epoch: meta
                .get("epoch")
                .and_then(|v| v.as_u64())
                .map(|e| e as usize),
            meta,
        })
    }

    fn wrong_task(&self, backbone: &Backbone, want: AdapterTask) -> AdapterError {
        let (task, wanted, hint) = match want {
            AdapterTask::Classification => (
                "part-segmentation",
                "for classification",
                "use --task partseg",
            ),
            AdapterTask::PartSegmentation => (
                "classification",
                "for part segmentation",
                "drop --task partseg",
            ),
        };
        AdapterError::WrongTask {
            adapter: self.path.clone(),
            backbone: backbone.path.clone(),
            task,
            wanted,
            hint,
        }
    }

    fn model_value(&self, key: &str) -> Option<u64> {
        self.meta.get("model")?.get(key)?.as_u64()
    }
}

/// Every tensor of the model: the adapter's, and the backbone's for the rest, after checking
/// the backbone supplies each of them with the right shape and is the one the adapter was
/// trained on. `expected` lists the model's tensors (official name, torch shape).
fn combine(
    backbone: &Backbone,
    adapter: &Adapter,
    expected: &[(String, Vec<usize>)],
) -> Result<StateDict, AdapterError> {
    let mismatch = |problem: String| AdapterError::Mismatch {
        adapter: adapter.path.clone(),
        backbone: backbone.path.clone(),
        problem,
    };
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    let mut frozen = Vec::new();
    for (name, shape) in expected {
        if adapter.tensors.contains_key(name) {
            continue;
        }
        match backbone.tensors.get(name) {
            None => missing.push(name.clone()),
            Some(t) if squeeze(&t.shape) != squeeze(shape) => misshaped.push(format!(
                "{name}: backbone {:?}, adapter's model {:?}",
                t.shape, shape
            )),
            Some(t) => frozen.push((name.as_str(), t)),
        }
    }
    let (width, depth) = backbone.shape_summary();
    let (a_width, a_depth) = (
        adapter.model_value("trans_dim"),
        adapter.model_value("depth"),
    );
    let sizes = || {
        format!(
            "the adapter's model is {} wide with {} blocks, the backbone {} wide with {depth} blocks",
            a_width.map_or("?".into(), |w| w.to_string()),
            a_depth.map_or("?".into(), |d| d.to_string()),
            width.map_or("?".into(), |w| w.to_string()),
        )
    };
    let sizes_differ = a_width.is_some_and(|w| Some(w as usize) != width)
        || a_depth.is_some_and(|d| d as usize != depth);
    // a deeper backbone holds every tensor the adapter's model needs: only the sizes tell
    if sizes_differ && misshaped.is_empty() && missing.is_empty() {
        return Err(mismatch(sizes()));
    }
    if !misshaped.is_empty() || !missing.is_empty() {
        let mut problem = if sizes_differ {
            format!("{}; ", sizes())
        } else {
            String::new()
        };
        let list = |v: &[String]| {
            let mut s = v.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 4 {
                s.push_str(&format!(", ... ({} in all)", v.len()));
            }
            s
        };
        if !misshaped.is_empty() {
            problem.push_str(&format!("mis-shaped tensors: {}", list(&misshaped)));
        }
        if !missing.is_empty() {
            if !misshaped.is_empty() {
                problem.push_str("; ");
            }
            problem.push_str(&format!("the backbone lacks {}", list(&missing)));
        }
        return Err(mismatch(problem));
    }
    let hash = backbone_hash(frozen.iter().copied());
    if hash != adapter.backbone_hash {
        let problem = match &adapter.init {
            None => format!(
                "the run started from a randomly initialised backbone (no --init), which no backbone file holds; use that run's checkpoints/best.safetensors (as --checkpoint, or as the backbone) (backbone hash {hash}, the adapter's {})",
                adapter.backbone_hash
            ),
            Some(init) => {
                let mut p = format!(
                    "another backbone than the one the adapter was trained on ({}): content hash {hash}, the adapter's {}",
                    init.display(),
                    adapter.backbone_hash
                );
                // the grouping is not visible in the tensors, only in a pre-training run's metadata
                let pre = backbone.meta.as_ref().and_then(|m| m.get("pretrain_model"));
                let groups = |v: Option<&serde_json::Value>| {
                    let v = v?;
                    Some((
                        v.get("num_group")?.as_u64()?,
                        v.get("group_size")?.as_u64()?,
                    ))
                };
                if let (Some(b), Some(a)) = (groups(pre), groups(adapter.meta.get("model")))
                    && a != b
                {
                    p.push_str(&format!(
                        "; the backbone was pre-trained with {} groups of {} points, the adapter's model uses {} of {}",
                        b.0, b.1, a.0, a.1
                    ));
                }
                p
            }
        };
        return Err(mismatch(problem));
    }
    let mut tensors: std::collections::HashMap<String, RawTensor> = frozen
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    tensors.extend(adapter.tensors.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(StateDict {
        path: adapter.path.clone(),
        tensors,
        meta: Some(adapter.meta.clone()),
        format: CheckpointFormat::Native,
    })
}

fn bad_meta(adapter: &Adapter, what: &str, e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Model(ModelError::Checkpoint {
        path: adapter.path.clone(),
        message: format!("bad {what} in the adapter's metadata: {e}"),
    })
}

/// The classifier of `backbone + adapter`: the run's best model, tensor for tensor.
pub fn assemble_classifier(
    backbone: &Backbone,
    adapter: &Adapter,
    device: &Device,
) -> Result<LoadedClassifier, AdapterError> {
    if adapter.task != AdapterTask::Classification {
        return Err(adapter.wrong_task(backbone, AdapterTask::Classification));
    }
    let cfg: ModelConfig = serde_json::from_value(adapter.meta["model"].clone())
        .map_err(|e| bad_meta(adapter, "model configuration", e))?;
    let model = Classifier::new(&cfg, device)?;
    let expected: Vec<(String, Vec<usize>)> = super::names::named_params(&model)
        .into_iter()
        .map(|p| (p.name, p.torch_shape))
        .collect();
    let dict = combine(backbone, adapter, &expected)?;
    let (model, _) = load_into(model, &dict, LoadMode::Strict)?;
    let names: Vec<String> = adapter
        .meta
        .get("class_names")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    Ok(LoadedClassifier {
        class_names: class_names_or_default(names, cfg.cls_dim),
        normalize: adapter
            .meta
            .get("normalize")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        model,
        checkpoint: adapter.path.clone(),
    })
}

/// Reads a backbone and an adapter; errors name both files.
pub fn read_backbone_and_adapter(
    backbone: &Path,
    adapter: &Path,
) -> Result<(Backbone, Adapter), AdapterError> {
    // the adapter first: it is small, and "not an adapter" is the likelier mistake
    let a = Adapter::read(adapter).map_err(|e| match e {
        AdapterError::NotAdapter { path, found, .. } => AdapterError::NotAdapter {
            path,
            found,
            backbone: Some(backbone.to_path_buf()),
        },
        other => other,
    })?;
    let b = Backbone::read(backbone).map_err(|source| AdapterError::Backbone {
        backbone: backbone.to_path_buf(),
        adapter: adapter.to_path_buf(),
        source,
    })?;
    Ok((b, a))
}

/// [`assemble_classifier`] from the two files.
pub fn load_classifier_with_adapter(
    backbone: &Path,
    adapter: &Path,
    device: &Device,
) -> Result<LoadedClassifier, AdapterError> {
    let (backbone, adapter) = read_backbone_and_adapter(backbone, adapter)?;
    assemble_classifier(&backbone, &adapter, device)
}

/// A part-segmentation model assembled from a backbone and an adapter, with its tables.
pub struct AssembledPartSeg {
    pub model: super::partseg::PartSegModel,
    pub category_names: Vec<String>,
    pub category_parts: Vec<Vec<usize>>,
    pub normalize: bool,
}

/// The part-segmentation model of `backbone + adapter` (a `--task partseg` run's adapter).
pub fn assemble_partseg(
    backbone: &Backbone,
    adapter: &Adapter,
    device: &Device,
) -> Result<AssembledPartSeg, AdapterError> {
    use super::partseg::{PartSegConfig, PartSegModel, load_partseg, official_tensors};
    if adapter.task != AdapterTask::PartSegmentation {
        return Err(adapter.wrong_task(backbone, AdapterTask::PartSegmentation));
    }
    let cfg: PartSegConfig = serde_json::from_value(adapter.meta["model"].clone())
        .map_err(|e| bad_meta(adapter, "model configuration", e))?;
    let category_names: Vec<String> = serde_json::from_value(adapter.meta["class_names"].clone())
        .map_err(|e| bad_meta(adapter, "class_names", e))?;
    let category_parts: Vec<Vec<usize>> =
        serde_json::from_value(adapter.meta["category_parts"].clone())
            .map_err(|e| bad_meta(adapter, "category_parts", e))?;
    if category_names.len() != cfg.num_categories || category_parts.len() != cfg.num_categories {
        return Err(bad_meta(
            adapter,
            "category tables",
            format!(
                "{} categories in the model, {} names, {} part lists",
                cfg.num_categories,
                category_names.len(),
                category_parts.len()
            ),
        ));
    }
    let model = PartSegModel::new(&cfg, device)?;
    let expected: Vec<(String, Vec<usize>)> = official_tensors(&model)
        .into_iter()
        .map(|(n, t)| (n, t.shape))
        .collect();
    let dict = combine(backbone, adapter, &expected)?;
    let (model, _) = load_partseg(model, &dict, LoadMode::Strict)?;
    Ok(AssembledPartSeg {
        model,
        category_names,
        category_parts,
        normalize: adapter
            .meta
            .get("normalize")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    })
}

fn class_names_or_default(names: Vec<String>, cls_dim: usize) -> Vec<String> {
    if names.len() == cls_dim {
        return names;
    }
    match cls_dim {
        40 => MODELNET40.iter().map(|s| s.to_string()).collect(),
        15 => SCANOBJECTNN.iter().map(|s| s.to_string()).collect(),
        k => (0..k).map(|i| format!("class_{i}")).collect(),
    }
}
