//! Where the library meets the app: a checkpoint becomes an [`Analyzer`] (prediction and
//! dynamic scales of a cloud, computed on the app's worker thread), and the training engine
//! becomes a [`TrainingLauncher`] for the run panel.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use burn::tensor::Device;

use super::analysis::{Analyzer, CloudAnalysis};
use super::training::{RunSettings, TrainingHandle, TrainingLauncher};
use crate::backend::{BackendChoice, select};
use crate::data::{PointCloud, Rng};
use crate::gpu::cpu::fps;
use crate::model::Classifier;
use crate::model::load::load_classifier;
use crate::train::eval::{logits_of, scale_snapshot};
use crate::train::{Mode, TrainConfig};

/// A loaded classifier run with the official test-time pipeline.
pub struct ModelAnalyzer {
    model: Mutex<Classifier>,
    class_names: Vec<String>,
    normalize: bool,
    device: Device,
    checkpoint: PathBuf,
}

/// Indices into a cloud of `n` points giving the model's `npoints` input: FPS when there are
/// more, all when equal, all plus seeded repeats when fewer. Keeping indices (not copies) lets
/// patch membership refer to the points the user sees.
pub fn sample_indices(points: &[[f32; 3]], npoints: usize) -> Vec<usize> {
    let n = points.len();
    match n.cmp(&npoints) {
        std::cmp::Ordering::Equal => (0..n).collect(),
        std::cmp::Ordering::Greater => fps(points, npoints),
        std::cmp::Ordering::Less => {
            let mut rng = Rng::new(0);
            let mut idx: Vec<usize> = (0..n).collect();
            while idx.len() < npoints && n > 0 {
                idx.push(rng.below(n));
            }
            idx
        }
    }
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

impl Analyzer for ModelAnalyzer {
    fn name(&self) -> String {
        self.checkpoint
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into())
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

pub fn analyzer_from_checkpoint(
    checkpoint: &Path,
    config: Option<&Path>,
) -> anyhow::Result<Arc<dyn Analyzer>> {
    let selected = select(BackendChoice::Auto);
    let loaded = load_classifier(checkpoint, config, &selected.device)?;
    Ok(Arc::new(ModelAnalyzer {
        model: Mutex::new(loaded.model),
        class_names: loaded.class_names,
        normalize: loaded.normalize,
        device: selected.device,
        checkpoint: checkpoint.to_path_buf(),
    }))
}

/// Starts `crate::train::run` on a worker thread for the run panel.
pub struct EngineLauncher;

impl TrainingLauncher for EngineLauncher {
    fn start(&self, s: &RunSettings) -> Result<TrainingHandle, String> {
        let mode = match s.mode.as_str() {
            "dapt" => Mode::Dapt,
            "full" => Mode::Full,
            "linear" => Mode::Linear,
            other => return Err(format!("unknown mode {other:?} (dapt, full or linear)")),
        };
        let demo = crate::cli::train::demo_config();
        let data = if s.data.trim().is_empty() {
            "synthetic".to_string()
        } else {
            s.data.trim().to_string()
        };
        // the data set must be readable before a thread is spent on it
        crate::data::DataSpec::parse(&data).map_err(|e| e.to_string())?;
        let mut cfg = TrainConfig {
            mode,
            data,
            init: s.init.clone(),
            epochs: s.epochs.max(1),
            batch: s.batch.max(1),
            out: s.out.clone().unwrap_or_else(|| PathBuf::from("runs/app")),
            ..demo
        };
        cfg.optim.lr = s.lr;
        cfg.warmup_epochs = cfg.warmup_epochs.min(cfg.epochs / 2);
        let resume = s.resume.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("dapt-train".into())
            .spawn(move || {
                // errors arrive as TrainEvent::Failed; the summary is in the run directory
                let _ = crate::train::run(cfg, resume.as_deref(), Some(tx), stop2);
            })
            .map_err(|e| format!("cannot start the training thread: {e}"))?;
        Ok(TrainingHandle { events: rx, stop })
    }
}
