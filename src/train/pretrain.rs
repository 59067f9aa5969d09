//! Point-MAE pre-training runs (dapt-spec.md §6): the official recipe (AdamW lr 1e-3,
//! wd 0.05, cosine with warm-up, no gradient clipping, random `npoints` subset per cloud,
//! `pc_normalize`, ScaleAndTranslate) on any data set, labels ignored.
//!
//! A run directory has the fine-tuning layout: `config.json` (tagged `"kind": "pretrain"`),
//! `metrics.jsonl` (`epoch`, `split`, `wall_secs`, `lr`, `loss`), `checkpoints/{last,best}
//! .safetensors` (the full model under the official `pretrain.pth` keys; best = lowest
//! held-out loss), optimizer and RNG state for `--resume`, plus `backbone.safetensors` (the
//! `MAE_encoder.*` tensors of the best epoch, what `dapt train --init` takes) and, at the
//! end, `pretrain.pth` in the official PyTorch layout. Every write is atomic.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::batch::{pad_to, scale_and_translate, test_points};
use super::driver::{Outcome, Score, Task};
use super::events::{EpochMetrics, TrainEvent};
use super::optim::{AdamW, AdamWConfig};
use super::run_dir::{CheckpointFile, RunDir, read_json, write_json};
use crate::backend::BackendChoice;
use crate::data::{DataSpec, ReadOptions, Rng};
use crate::model::checkpoint::{read_state_dict, write_native, write_pytorch};
use crate::model::names::{count_params, named_params};
use crate::model::pretrain::{MaeConfig, PointMae, load_pretrain};
use crate::phases::{Clock, Phase};

/// Tag in `config.json` and checkpoint metadata telling pre-training runs apart.
pub const KIND: &str = "pretrain";

/// Everything needed to reproduce a pre-training run; saved as `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PretrainConfig {
    pub model: MaeConfig,
    /// Any data set `DataSpec` parses; labels are ignored. The test split, when there is one,
    /// gives the held-out loss that picks `best`.
    pub data: String,
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub batch: usize,
    pub optim: AdamWConfig,
    pub min_lr: f64,
    pub warmup_lr_init: f64,
    pub seed: u64,
    pub backend: BackendChoice,
    /// burn's gradient checkpointing: element-wise and shape ops are recomputed in backward
    /// instead of kept alive (BENCHMARKS.md: DAPT at the OBJ_BG config, batch 32, 3.3 GB to
    /// 2.3 GB peak; ~9% more time per step). `--no-checkpointing` turns it off.
    pub checkpointing: bool,
    /// Apply `pc_normalize` to every cloud (the official ShapeNet-55 loader does).
    pub normalize: bool,
    pub out: PathBuf,
    /// Where to write the official-layout checkpoint at the end (default `RUN_DIR/pretrain.pth`).
    pub export_pth: Option<PathBuf>,
}

impl Default for PretrainConfig {
    /// The official recipe (`cfgs/pretrain.yaml`).
    fn default() -> Self {
        Self {
            model: MaeConfig::official(),
            data: "synthetic".into(),
            epochs: 300,
            warmup_epochs: 10,
            batch: 128,
            optim: AdamWConfig {
                lr: 1e-3,
                weight_decay: 0.05,
                grad_clip: None,
                ..AdamWConfig::default()
            },
            min_lr: 1e-6,
            warmup_lr_init: 1e-6,
            seed: 0,
            backend: BackendChoice::Auto,
            checkpointing: true,
            normalize: true,
            out: PathBuf::from("runs/pretrain"),
            export_pth: None,
        }
    }
}

impl PretrainConfig {
    /// The synthetic demo: the small backbone of `ModelConfig::small`, a few minutes on two
    /// CPU cores. No warm-up: with the scheduler's one-epoch lag a short run would spend its
    /// first epochs near 1e-6.
    pub fn demo() -> Self {
        Self {
            model: MaeConfig::small(),
            epochs: 10,
            warmup_epochs: 0,
            batch: 32,
            out: PathBuf::from("runs/pretrain-demo"),
            ..Self::default()
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PretrainMetrics {
    pub epoch: usize,
    /// `"train"` (mean loss of the epoch's steps) or `"test"` (held-out loss, fixed masks).
    pub split: String,
    pub wall_secs: f64,
    pub lr: f64,
    /// Chamfer-L2 over the masked patches.
    pub loss: f64,
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainSummary {
    pub run_dir: PathBuf,
    pub epochs_done: usize,
    pub best_epoch: usize,
    pub best_loss: f64,
    pub last_train_loss: Option<f64>,
    pub last_test_loss: Option<f64>,
    pub stopped: bool,
    pub total_params: usize,
    pub backend: String,
    /// `MAE_encoder.*` tensors of the best epoch (native safetensors, for `--init`).
    pub backbone: PathBuf,
    /// The official-layout checkpoint, when written.
    pub pth: Option<PathBuf>,
}

/// Training and held-out clouds, normalised and padded to `npoints`.
pub struct PretrainData {
    pub train: Vec<Vec<[f32; 3]>>,
    /// Deterministically sampled (FPS) to exactly `npoints`.
    pub test: Vec<Vec<[f32; 3]>>,
}

/// Loads every cloud of `cfg.data` (labels dropped).
pub fn prepare(cfg: &PretrainConfig, rng: &mut Rng) -> Result<PretrainData, TrainError> {
    let spec = DataSpec::parse(&cfg.data)?;
    let mut ds = spec.open()?;
    ds.normalize = cfg.normalize;
    let opts = ReadOptions::default();
    let n = cfg.model.npoints;
    let mut load = |samples: &[crate::data::Sample], test: bool| {
        let mut out = Vec::with_capacity(samples.len());
        for s in samples {
            let mut pts = ds.load(s, &opts)?.positions;
            if pts.is_empty() {
                continue;
            }
            pad_to(&mut pts, n, rng);
            out.push(if test { test_points(&pts, n) } else { pts });
        }
        Ok::<_, TrainError>(out)
    };
    let train = load(&ds.train, false)?;
    let test = load(&ds.test, true)?;
    if train.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: the training split is empty",
            cfg.data
        )));
    }
    Ok(PretrainData { train, test })
}

/// One batch as the official ShapeNet-55 pre-training pipeline builds it: a random subset
/// of `npoints` of each cloud, then per-cloud ScaleAndTranslate.
pub fn pretrain_batch(clouds: &[&Vec<[f32; 3]>], npoints: usize, rng: &mut Rng) -> Vec<[f32; 3]> {
    let mut out = Vec::with_capacity(clouds.len() * npoints);
    for c in clouds {
        let idx = rng.choose_distinct(c.len(), npoints);
        let mut sel: Vec<[f32; 3]> = idx.iter().map(|&i| c[i]).collect();
        scale_and_translate(&mut sel, rng);
        out.extend(sel);
    }
    out
}

/// One optimisation step: random masks, forward in training mode on the autodiff device,
/// Chamfer-L2, backward, AdamW (no clipping unless configured), queued without a read: the
/// loss comes back on the device (`[1]`) and the driver checks it when it reads it.
pub fn pretrain_step(
    mut model: PointMae,
    opt: &mut AdamW,
    points: &[[f32; 3]],
    b: usize,
    lr: f64,
    rng: &mut Rng,
    ad: &Device,
) -> Result<(PointMae, Tensor<1>), TrainError> {
    let mut clock = Clock::start(ad);
    let (out, _, _) = model.forward_drawn(points, b, model.config.npoints, ad, rng, true)?;
    let loss_value = out.loss.clone().inner();
    clock.lap(Phase::Forward);
    let grads = out.loss.backward();
    clock.lap(Phase::Backward);
    let (model, _norm) = opt.step(model, &grads, lr);
    clock.lap(Phase::Optimizer);
    Ok((model, loss_value))
}

/// Mean masked-reconstruction loss over `clouds` in eval mode, with masks drawn from a fixed
/// seed so that epochs compare on the same masks.
pub fn held_out_loss(
    model: &mut PointMae,
    clouds: &[Vec<[f32; 3]>],
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<f64, TrainError> {
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut sum = 0.0;
    let mut count = 0usize;
    for chunk in clouds.chunks(batch.max(1)) {
        let b = chunk.len();
        let pts: Vec<[f32; 3]> = chunk.iter().flatten().copied().collect();
        let (out, _, _) =
            model.forward_drawn(&pts, b, model.config.npoints, device, &mut rng, false)?;
        // the loss is a mean over the batch's masked points: weight batches by size
        sum += out.loss.into_scalar::<f32>() as f64 * b as f64;
        count += b;
    }
    Ok(sum / count.max(1) as f64)
}

/// Reads a pre-training run's `config.json`, refusing a fine-tuning run's.
pub fn read_config(dir: &Path) -> Result<PretrainConfig, TrainError> {
    let p = dir.join("config.json");
    let v: serde_json::Value = read_json(&p)?;
    if v.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
        return Err(TrainError::Config(format!(
            "{}: not a pre-training run (resume fine-tuning runs with `dapt train --resume`)",
            dir.display()
        )));
    }
    serde_json::from_value(v).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))
}

/// Metadata of every native checkpoint a pre-training run writes.
fn checkpoint_meta(cfg: &PretrainConfig, epoch: usize) -> serde_json::Value {
    serde_json::json!({
        "kind": KIND,
        "pretrain_model": cfg.model,
        "normalize": cfg.normalize,
        "epoch": epoch,
    })
}

/// The backbone part of a pre-training model (`MAE_encoder.*`, official names): what
/// `LoadMode::Backbone` maps onto the fine-tuning model.
pub fn backbone_tensors(model: &PointMae) -> Vec<(String, crate::model::names::RawTensor)> {
    model
        .official_tensors()
        .into_iter()
        .filter(|(k, _)| k.starts_with("MAE_encoder."))
        .collect()
}

fn backbone_meta(model: &PointMae, epoch: usize) -> serde_json::Value {
    serde_json::json!({
        "kind": "backbone",
        "pretrain_model": model.config,
        "epoch": epoch,
        "source": KIND,
    })
}

/// Writes the backbone as a native checkpoint `dapt train --init` accepts.
pub fn export_backbone(model: &PointMae, path: &Path, epoch: usize) -> Result<u64, TrainError> {
    Ok(write_native(
        path,
        &backbone_tensors(model),
        &backbone_meta(model, epoch),
    )?)
}

/// Writes the whole model in the official `pretrain.pth` layout.
pub fn export_pth(model: &PointMae, path: &Path, epoch: usize) -> Result<u64, TrainError> {
    Ok(write_pytorch(path, &model.official_tensors(), epoch)?)
}

/// Loads a pre-training checkpoint (native or official `.pth`) into a model of `cfg`.
pub fn load_checkpoint(
    cfg: &MaeConfig,
    path: &Path,
    device: &Device,
) -> Result<PointMae, TrainError> {
    let dict = read_state_dict(path)?;
    // every tensor is replaced by the checkpoint's: the init seed does not matter
    let model = PointMae::new(cfg, 0, device)?;
    Ok(load_pretrain(model, &dict)?.0)
}

/// Pre-training for the driver: the clouds (labels dropped).
pub struct Pretrain {
    cfg: PretrainConfig,
    data: PretrainData,
    device: Device,
}

impl Task for Pretrain {
    type Config = PretrainConfig;
    type Model = PointMae;
    type Summary = PretrainSummary;
    const KIND: &'static str = KIND;
    const STATE_KEYS: (&'static str, Option<&'static str>) = ("best_loss", None);
    const LOWER_IS_BETTER: bool = true;

    fn validate(cfg: &mut PretrainConfig) -> Result<(), TrainError> {
        Ok(cfg.model.validate()?)
    }

    fn read_config(run: &RunDir) -> Result<PretrainConfig, TrainError> {
        read_config(&run.path)
    }

    fn write_config(&self, cfg: &PretrainConfig, run: &RunDir) -> Result<(), TrainError> {
        let mut v = serde_json::to_value(cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("kind".into(), serde_json::json!(KIND));
        }
        write_json(&run.config_path(), &v)
    }

    fn prepare(
        cfg: &mut PretrainConfig,
        device: &Device,
        rng: &mut Rng,
        _resuming: bool,
    ) -> Result<(Self, PointMae, Vec<String>), TrainError> {
        let data = prepare(cfg, rng)?;
        let model = PointMae::new(&cfg.model, cfg.seed, device)?;
        Ok((
            Self {
                cfg: cfg.clone(),
                data,
                device: device.clone(),
            },
            model,
            Vec::new(),
        ))
    }

    fn load_last(&self, _model: PointMae, path: &Path) -> Result<PointMae, TrainError> {
        load_checkpoint(&self.cfg.model, path, &self.device)
    }

    fn param_counts(&self, model: &PointMae) -> (usize, usize) {
        let (_, total) = count_params(&named_params(model), |_| true);
        (total, total)
    }

    fn train_len(&self) -> usize {
        self.data.train.len()
    }

    fn begin_epoch(&mut self) {}

    fn step(
        &mut self,
        model: PointMae,
        opt: &mut AdamW,
        items: &[usize],
        lr: f64,
        rng: &mut Rng,
        ad: &Device,
    ) -> Result<(PointMae, Tensor<1>), TrainError> {
        let mut clock = Clock::start(ad);
        let clouds: Vec<&Vec<[f32; 3]>> = items.iter().map(|&i| &self.data.train[i]).collect();
        let pts = pretrain_batch(&clouds, self.cfg.model.npoints, rng);
        clock.lap(Phase::Data);
        pretrain_step(model, opt, &pts, items.len(), lr, rng, ad)
    }

    fn train_metrics(&self, m: EpochMetrics) -> EpochMetrics {
        m
    }

    fn evaluate(
        &mut self,
        model: &mut PointMae,
        m: EpochMetrics,
    ) -> Result<Option<EpochMetrics>, TrainError> {
        if self.data.test.is_empty() {
            return Ok(None);
        }
        let batch = self.cfg.batch.max(1).min(self.data.train.len());
        let loss = held_out_loss(model, &self.data.test, batch, self.cfg.seed, &self.device)?;
        Ok(Some(EpochMetrics { loss, ..m }))
    }

    fn score(&self, m: &EpochMetrics) -> Score {
        Score {
            primary: m.loss,
            secondary: 0.0,
        }
    }

    /// Pre-training has no accuracy: its lines hold the loss alone.
    fn metrics_line(&self, m: &EpochMetrics) -> serde_json::Value {
        serde_json::to_value(PretrainMetrics {
            epoch: m.epoch,
            split: m.split.clone(),
            wall_secs: m.wall_secs,
            lr: m.lr,
            loss: m.loss,
        })
        .unwrap_or_default()
    }

    fn checkpoint(&self, model: &PointMae, epoch: usize) -> Result<CheckpointFile, TrainError> {
        Ok(CheckpointFile {
            tensors: model.official_tensors(),
            meta: checkpoint_meta(&self.cfg, epoch),
        })
    }

    fn published(
        &self,
        model: &PointMae,
        best: &CheckpointFile,
    ) -> Result<Option<(&'static str, CheckpointFile)>, TrainError> {
        let epoch = best.meta.get("epoch").and_then(|e| e.as_u64()).unwrap_or(0);
        Ok(Some((
            "backbone.safetensors",
            CheckpointFile {
                tensors: backbone_tensors(model),
                meta: backbone_meta(model, epoch as usize),
            },
        )))
    }

    fn finish(&self, cfg: &PretrainConfig, o: Outcome) -> Result<PretrainSummary, TrainError> {
        let rd = &o.run_dir;
        let mut pth = None;
        if o.epochs_done > 0 && rd.best_path().is_file() {
            // the official-layout export of the best epoch
            let best_model = load_checkpoint(&cfg.model, &rd.best_path(), &o.device)?;
            let p = cfg
                .export_pth
                .clone()
                .unwrap_or_else(|| rd.path.join("pretrain.pth"));
            export_pth(&best_model, &p, o.best_epoch)?;
            pth = Some(p);
        }
        Ok(PretrainSummary {
            run_dir: rd.path.clone(),
            epochs_done: o.epochs_done,
            best_epoch: o.best_epoch,
            best_loss: o.best.primary,
            last_train_loss: o.last_train.as_ref().map(|m| m.loss),
            last_test_loss: o
                .last
                .as_ref()
                .filter(|m| m.split == "test")
                .map(|m| m.loss),
            stopped: o.stopped,
            total_params: o.total_params,
            backend: o.backend,
            backbone: rd.path.join("backbone.safetensors"),
            pth,
        })
    }
}

/// Runs (or resumes, when `resume` names a run directory) pre-training.
pub fn run(
    cfg: PretrainConfig,
    resume: Option<&Path>,
    events: Option<Sender<TrainEvent>>,
    stop: std::sync::Arc<AtomicBool>,
) -> Result<PretrainSummary, TrainError> {
    super::driver::run::<Pretrain>(cfg, resume, events, &stop)
}
