//! Where the library meets the app: a checkpoint becomes an [`Analyzer`] (prediction and
//! dynamic scales of a cloud, computed on the app's worker thread), and the training engine
//! becomes a [`TrainingLauncher`] for the run panel.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::tensor::Device;

use super::analysis::{Analyzer, CloudAnalysis};
use super::training::{RunSettings, TrainingHandle, TrainingLauncher};
use crate::backend::{BackendChoice, select};
use crate::data::PointCloud;
use crate::infer::classify::{logits_of, scale_snapshot, softmax};
use crate::model::Classifier;
use crate::model::load::{
    Adapter, AdapterTask, Backbone, assemble_classifier, assemble_partseg, load_classifier_from,
};
use crate::train::{Mode, TrainConfig};

/// A loaded classifier run with the official test-time pipeline.
pub struct ModelAnalyzer {
    model: Mutex<Classifier>,
    class_names: Vec<String>,
    normalize: bool,
    device: Device,
    /// What the prediction panel calls the model (a file name, or adapter on backbone).
    name: String,
}

pub use crate::infer::sampling::sample_indices;

impl Analyzer for ModelAnalyzer {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn analyze(&self, cloud: &PointCloud) -> Result<CloudAnalysis, String> {
        let mut model = self
            .model
            .lock()
            .map_err(|_| "the model is unavailable".to_string())?;
        let mut pts = cloud.positions.clone();
        if self.normalize {
            crate::data::transform::pc_normalize(&mut pts);
        }
        let npoints = model.config.npoints;
        let idx = sample_indices(&pts, npoints);
        if idx.is_empty() {
            return Err("the cloud has no points".into());
        }
        let input: Vec<[f32; 3]> = idx.iter().map(|&i| pts[i]).collect();
        let logits = logits_of(&mut model, &[input.as_slice()], &self.device)
            .map_err(|e| e.to_string())?
            .pop()
            .unwrap_or_default();
        let snap = scale_snapshot(&mut model, &input, &self.device).map_err(|e| e.to_string())?;
        // centres and groups back in the displayed cloud's coordinates and indices
        let groups = snap
            .groups
            .iter()
            .map(|g| g.iter().map(|&j| idx[j]).collect())
            .collect();
        let centers = snap
            .groups
            .iter()
            .zip(snap.centers.iter())
            .map(|(g, c)| g.first().map(|&j| cloud.positions[idx[j]]).unwrap_or(*c))
            .collect();
        Ok(CloudAnalysis {
            class_names: self.class_names.clone(),
            probabilities: softmax(&logits),
            centers,
            groups,
            patch_scales: snap.patch,
            prompt_scales: snap.prompts,
            cls_scales: snap.cls,
            part_pred: None,
        })
    }
}

/// A part-segmentation checkpoint: per-point parts of the displayed cloud.
pub struct PartSegAnalyzer {
    loaded: Mutex<crate::train::partseg::LoadedPartSeg>,
    device: Device,
    name: String,
}

impl PartSegAnalyzer {
    /// The object category: the cloud's class label, else a file-name prefix naming one,
    /// else none (the analyzer then tries every category).
    fn given_category(&self, cloud: &PointCloud, names: &[String]) -> Option<usize> {
        if let Some(c) = cloud.class_label.filter(|&c| c < names.len()) {
            return Some(c);
        }
        let stem = cloud
            .source
            .as_ref()?
            .file_stem()?
            .to_string_lossy()
            .to_lowercase();
        names
            .iter()
            .position(|n| stem.starts_with(&n.to_lowercase()))
    }
}

impl Analyzer for PartSegAnalyzer {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn analyze(&self, cloud: &PointCloud) -> Result<CloudAnalysis, String> {
        use crate::model::layers::{ForwardCtx, host_vec};
        let mut guard = self
            .loaded
            .lock()
            .map_err(|_| "the model is unavailable".to_string())?;
        let loaded = &mut *guard;
        let mut pts = cloud.positions.clone();
        if loaded.normalize {
            crate::data::transform::pc_normalize(&mut pts);
        }
        let n = pts.len();
        let need = loaded
            .model
            .config
            .group_size
            .max(loaded.model.config.num_group);
        if n < need {
            return Err(format!("{n} points; the model needs at least {need}"));
        }
        let names = loaded.category_names.clone();
        let given = self.given_category(cloud, &names);
        let parts_n = loaded.model.config.num_parts;
        // score = mean over points of the best log-probability among the category's parts;
        // every candidate in one pass (one grouping, one backbone run)
        let candidates: Vec<usize> = match given {
            Some(c) => vec![c],
            None => (0..names.len()).collect(),
        };
        if candidates.is_empty() {
            return Err("the model has no categories".into());
        }
        let out = loaded
            .model
            .forward_categories(&pts, &candidates, n, &self.device, &mut ForwardCtx::eval())
            .map_err(|e| e.to_string())?;
        let all = host_vec(out.log_probs);
        let mut scores = vec![f32::NEG_INFINITY; names.len()];
        let mut best: Option<(usize, f32, &[f32])> = None;
        for (&c, lp) in candidates.iter().zip(all.chunks(n * parts_n)) {
            let parts = &loaded.category_parts[c];
            let score = lp
                .chunks(parts_n)
                .map(|row| {
                    parts
                        .iter()
                        .map(|&p| row[p])
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .sum::<f32>()
                / n as f32;
            scores[c] = score;
            if best.is_none_or(|b| score > b.1) {
                best = Some((c, score, lp));
            }
        }
        let Some((cat, _, lp)) = best else {
            return Err("the model has no categories".into());
        };
        let patches = out.patches;
        let labels = crate::train::miou::predict_parts(lp, parts_n, &loaded.category_parts[cat])
            .map_err(|e| e.to_string())?;
        let probabilities = if given.is_some() {
            (0..names.len())
                .map(|i| if i == cat { 1.0 } else { 0.0 })
                .collect()
        } else {
            softmax(&scores)
        };
        Ok(CloudAnalysis {
            class_names: names,
            probabilities,
            centers: patches.centers_host(),
            groups: patches.members(0),
            patch_scales: Vec::new(),
            prompt_scales: Vec::new(),
            cls_scales: Vec::new(),
            part_pred: Some(labels),
        })
    }
}

/// Whether a state dict holds a part-segmentation model (ours or the official layout).
fn is_partseg(dict: &crate::model::checkpoint::StateDict) -> bool {
    dict.meta
        .as_ref()
        .and_then(|m| m.get("task"))
        .and_then(|t| t.as_str())
        == Some("partseg")
        || dict.tensors.contains_key("convs3.weight")
}

pub fn analyzer_from_checkpoint(
    checkpoint: &Path,
    config: Option<&Path>,
) -> anyhow::Result<Arc<dyn Analyzer>> {
    let selected = select(BackendChoice::Auto);
    // read once; the kind of model decides which loader gets it
    let dict = crate::model::checkpoint::read_state_dict(checkpoint)?;
    if is_partseg(&dict) {
        let loaded = crate::train::partseg::load_partseg_from(dict, &selected.device)?;
        return Ok(Arc::new(PartSegAnalyzer {
            loaded: Mutex::new(loaded),
            device: selected.device,
            name: format!("{} (parts)", file_name(checkpoint)),
        }));
    }
    let loaded = load_classifier_from(dict, config, &selected.device)?;
    Ok(Arc::new(ModelAnalyzer {
        model: Mutex::new(loaded.model),
        class_names: loaded.class_names,
        normalize: loaded.normalize,
        device: selected.device,
        name: file_name(checkpoint),
    }))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into())
}

/// The model of `backbone + adapter` (`model::load`), for the adapters panel: the backbone
/// tensors come from memory, so switching adapters reads no file.
pub fn analyzer_from_adapter(
    backbone: &Backbone,
    adapter: &Adapter,
) -> anyhow::Result<Arc<dyn Analyzer>> {
    let selected = select(BackendChoice::Auto);
    let name = format!(
        "{} on {}",
        super::adapters::display_name(&adapter.path),
        file_name(&backbone.path)
    );
    Ok(match adapter.task {
        AdapterTask::Classification => {
            let loaded = assemble_classifier(backbone, adapter, &selected.device)?;
            Arc::new(ModelAnalyzer {
                model: Mutex::new(loaded.model),
                class_names: loaded.class_names,
                normalize: loaded.normalize,
                device: selected.device,
                name,
            })
        }
        AdapterTask::PartSegmentation => {
            let m = assemble_partseg(backbone, adapter, &selected.device)?;
            Arc::new(PartSegAnalyzer {
                loaded: Mutex::new(crate::train::partseg::LoadedPartSeg {
                    model: m.model,
                    category_names: m.category_names,
                    category_parts: m.category_parts,
                    normalize: m.normalize,
                }),
                device: selected.device,
                name: format!("{name} (parts)"),
            })
        }
    })
}

/// The run the panel's settings describe: the demo recipe with the panel's fields, the data
/// set checked readable before a thread is spent on it.
pub fn run_config(s: &RunSettings) -> Result<TrainConfig, String> {
    let mode = match s.mode.as_str() {
        "dapt" => Mode::Dapt,
        "full" => Mode::Full,
        "linear" => Mode::Linear,
        other => return Err(format!("unknown mode {other:?} (dapt, full or linear)")),
    };
    let demo = crate::train::TrainConfig::demo();
    let data = if s.data.trim().is_empty() {
        "synthetic".to_string()
    } else {
        s.data.trim().to_string()
    };
    crate::data::DataSpec::parse(&data).map_err(|e| e.to_string())?;
    let mut cfg = TrainConfig {
        mode,
        data,
        init: s.init.clone(),
        epochs: s.epochs.max(1),
        batch: s.batch.max(1),
        shots: s.shots.map(|k| k.max(1)),
        recompute_blocks: s.low_memory,
        out: s.out.clone().unwrap_or_else(|| PathBuf::from("runs/app")),
        ..demo
    };
    cfg.optim.lr = s.lr;
    cfg.warmup_epochs = cfg.warmup_epochs.min(cfg.epochs / 2);
    Ok(cfg)
}

/// Starts `crate::train::run` on a worker thread for the run panel.
pub struct EngineLauncher;

impl TrainingLauncher for EngineLauncher {
    fn start(&self, s: &RunSettings) -> Result<TrainingHandle, String> {
        let cfg = run_config(s)?;
        let resume = s.resume.clone();
        super::training::spawn_training(move |tx, stop| {
            // errors arrive as TrainEvent::Failed; the summary is in the run directory
            let _ = crate::train::run(cfg, resume.as_deref(), Some(tx), stop);
        })
    }
}
