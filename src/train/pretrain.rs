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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::batch::{pad_to, scale_and_translate, test_points};
use super::events::{CheckpointKind, EpochMetrics, TrainEvent};
use super::optim::{AdamW, AdamWConfig};
use super::run_dir::RunDir;
use super::schedule::CosineSchedule;
use crate::backend::{self, BackendChoice};
use crate::data::{DataSpec, ReadOptions, Rng};
use crate::model::checkpoint::{atomic_write, read_state_dict, write_native, write_pytorch};
use crate::model::names::{count_params, named_params};
use crate::model::pretrain::{MaeConfig, PointMae, load_pretrain};

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

/// What `--resume` needs besides the `last` checkpoint and the optimizer moments.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainState {
    pub epochs_done: usize,
    pub optimizer_step: u64,
    pub rng: Rng,
    pub best_epoch: usize,
    pub best_loss: f64,
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
/// Chamfer-L2, backward, AdamW (no clipping unless configured). A non-finite loss leaves the
/// model untouched.
pub fn pretrain_step(
    mut model: PointMae,
    opt: &mut AdamW,
    points: &[[f32; 3]],
    b: usize,
    lr: f64,
    rng: &mut Rng,
    ad: &Device,
) -> Result<(PointMae, f64), TrainError> {
    let (out, _, _) = model.forward_drawn(points, b, model.config.npoints, ad, rng, true)?;
    let loss_v = out.loss.clone().into_scalar::<f32>() as f64;
    if !loss_v.is_finite() {
        return Ok((model, loss_v));
    }
    let grads = out.loss.backward();
    let (model, _norm) = opt.step(model, &grads, lr);
    Ok((model, loss_v))
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

fn send(events: &Option<Sender<TrainEvent>>, e: TrainEvent) {
    if let Some(tx) = events {
        let _ = tx.send(e);
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn json_err(e: serde_json::Error) -> TrainError {
    TrainError::Config(e.to_string())
}

fn write_config(rd: &RunDir, cfg: &PretrainConfig) -> Result<(), TrainError> {
    let mut v = serde_json::to_value(cfg).map_err(json_err)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), serde_json::json!(KIND));
    }
    let p = rd.path.join("config.json");
    let text = serde_json::to_string_pretty(&v).map_err(json_err)?;
    atomic_write(&p, text.as_bytes()).map_err(io_err(&p))
}

/// Reads a pre-training run's `config.json`, refusing a fine-tuning run's.
pub fn read_config(dir: &Path) -> Result<PretrainConfig, TrainError> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
    if v.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
        return Err(TrainError::Config(format!(
            "{}: not a pre-training run (resume fine-tuning runs with `dapt train --resume`)",
            dir.display()
        )));
    }
    serde_json::from_value(v).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))
}

fn state_path(rd: &RunDir) -> PathBuf {
    rd.path.join("checkpoints/state.json")
}

fn append_metrics(rd: &RunDir, m: &PretrainMetrics) -> Result<(), TrainError> {
    let p = rd.path.join("metrics.jsonl");
    let line = serde_json::to_string(m).map_err(json_err)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(io_err(&p))?;
    writeln!(f, "{line}").map_err(io_err(&p))?;
    f.sync_data().map_err(io_err(&p))
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

/// Writes the backbone as a native checkpoint `dapt train --init` accepts.
pub fn export_backbone(model: &PointMae, path: &Path, epoch: usize) -> Result<u64, TrainError> {
    let mut meta =
        serde_json::json!({"kind": "backbone", "pretrain_model": model.config, "epoch": epoch});
    if let Some(o) = meta.as_object_mut() {
        o.insert("source".into(), serde_json::json!(KIND));
    }
    Ok(write_native(path, &backbone_tensors(model), &meta)?)
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

/// Runs (or resumes, when `resume` names a run directory) pre-training.
pub fn run(
    mut cfg: PretrainConfig,
    resume: Option<&Path>,
    events: Option<Sender<TrainEvent>>,
    stop: std::sync::Arc<AtomicBool>,
) -> Result<PretrainSummary, TrainError> {
    let result = run_inner(&mut cfg, resume, &events, &stop);
    if let Err(e) = &result {
        send(
            &events,
            TrainEvent::Failed {
                message: e.to_string(),
            },
        );
    }
    result
}

#[allow(clippy::too_many_lines)]
fn run_inner(
    cfg: &mut PretrainConfig,
    resume: Option<&Path>,
    events: &Option<Sender<TrainEvent>>,
    stop: &AtomicBool,
) -> Result<PretrainSummary, TrainError> {
    let (rd, state) = match resume {
        Some(dir) => {
            let rd = RunDir::open(dir)?;
            *cfg = read_config(dir)?;
            let p = state_path(&rd);
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            let st: PretrainState = serde_json::from_str(&text)
                .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
            (rd, Some(st))
        }
        None => {
            cfg.model.validate()?;
            (RunDir::create(&cfg.out)?, None)
        }
    };
    let selected = backend::select(cfg.backend);
    let device = selected.device.clone();
    let mut rng = Rng::new(cfg.seed);
    let data = prepare(cfg, &mut rng)?;
    let mut model = PointMae::new(&cfg.model, cfg.seed, &device)?;
    let mut opt = AdamW::new(cfg.optim.clone());
    let mut start_epoch = 0;
    let mut best = (0usize, f64::INFINITY);
    if let Some(st) = &state {
        model = load_checkpoint(&cfg.model, &rd.last_path(), &device)?;
        let opt_dict = read_state_dict(&rd.optimizer_path())?;
        opt.load_state(st.optimizer_step, &opt_dict.tensors, &device);
        rng = st.rng.clone();
        start_epoch = st.epochs_done;
        best = (st.best_epoch, st.best_loss);
    } else {
        write_config(&rd, cfg)?;
    }
    let (_, total) = count_params(&named_params(&model), |_| true);
    let npoints = cfg.model.npoints;
    let batch = cfg.batch.max(1).min(data.train.len());
    let steps_per_epoch = data.train.len() / batch; // drop_last, as the official loader
    let schedule = CosineSchedule {
        base_lr: cfg.optim.lr,
        min_lr: cfg.min_lr,
        warmup_lr_init: cfg.warmup_lr_init,
        warmup_epochs: cfg.warmup_epochs,
        t_initial: cfg.epochs.max(1),
    };
    send(
        events,
        TrainEvent::Started {
            run_dir: rd.path.clone(),
            backend: selected.description.clone(),
            start_epoch,
            total_epochs: cfg.epochs,
            steps_per_epoch,
            trainable_params: total,
            total_params: total,
        },
    );
    let ad = device.clone().autodiff();
    let mut model = model.train();
    let t0 = Instant::now();
    let mut stopped = false;
    let mut last_train = None;
    let mut last_test = None;
    let metrics_event = |epoch: usize, split: &str, lr: f64, loss: f64, wall: f64| {
        // pre-training has no accuracy; the shared event carries the loss
        TrainEvent::Metrics(EpochMetrics {
            epoch,
            split: split.into(),
            wall_secs: wall,
            lr,
            loss,
            overall_accuracy: 0.0,
            mean_class_accuracy: 0.0,
            instance_miou: None,
            class_miou: None,
        })
    };
    for epoch in start_epoch..cfg.epochs {
        let lr = schedule.lr_for_epoch(epoch);
        let mut order: Vec<usize> = (0..data.train.len()).collect();
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0;
        for step in 0..steps_per_epoch {
            if stop.load(Ordering::Relaxed) {
                stopped = true;
                break;
            }
            let step_start = Instant::now();
            let clouds: Vec<&Vec<[f32; 3]>> = order[step * batch..(step + 1) * batch]
                .iter()
                .map(|&i| &data.train[i])
                .collect();
            let pts = pretrain_batch(&clouds, npoints, &mut rng);
            let (m, loss_v) = pretrain_step(model, &mut opt, &pts, batch, lr, &mut rng, &ad)?;
            model = m;
            if !loss_v.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    step,
                    loss: loss_v,
                });
            }
            loss_sum += loss_v;
            send(
                events,
                TrainEvent::Step {
                    epoch,
                    step,
                    steps_per_epoch,
                    loss: loss_v,
                    accuracy: None,
                    lr,
                    samples_per_sec: batch as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
                },
            );
        }
        if stopped {
            send(events, TrainEvent::Stopped { epoch });
            break;
        }
        let train_loss = loss_sum / steps_per_epoch.max(1) as f64;
        let wall = t0.elapsed().as_secs_f64();
        append_metrics(
            &rd,
            &PretrainMetrics {
                epoch,
                split: "train".into(),
                wall_secs: wall,
                lr,
                loss: train_loss,
            },
        )?;
        send(events, metrics_event(epoch, "train", lr, train_loss, wall));
        last_train = Some(train_loss);
        let mut valid = model.valid();
        let score = if data.test.is_empty() {
            train_loss
        } else {
            let l = held_out_loss(&mut valid, &data.test, batch, cfg.seed, &device)?;
            let wall = t0.elapsed().as_secs_f64();
            append_metrics(
                &rd,
                &PretrainMetrics {
                    epoch,
                    split: "test".into(),
                    wall_secs: wall,
                    lr,
                    loss: l,
                },
            )?;
            send(events, metrics_event(epoch, "test", lr, l, wall));
            last_test = Some(l);
            l
        };
        let meta = checkpoint_meta(cfg, epoch);
        if score < best.1 {
            best = (epoch, score);
            let p = rd.best_path();
            write_native(&p, &valid.official_tensors(), &meta)?;
            export_backbone(&valid, &rd.path.join("backbone.safetensors"), epoch)?;
            send(
                events,
                TrainEvent::CheckpointSaved {
                    kind: CheckpointKind::Best,
                    path: p,
                },
            );
        }
        // `last`, the optimizer and the RNG move together; state.json is written last so a
        // crash in between resumes from the previous epoch's consistent state
        let p = rd.last_path();
        write_native(&p, &valid.official_tensors(), &meta)?;
        rd.save_optimizer(&opt)?;
        let st = PretrainState {
            epochs_done: epoch + 1,
            optimizer_step: opt.step,
            rng: rng.clone(),
            best_epoch: best.0,
            best_loss: best.1,
        };
        let sp = state_path(&rd);
        let text = serde_json::to_string_pretty(&st).map_err(json_err)?;
        atomic_write(&sp, text.as_bytes()).map_err(io_err(&sp))?;
        send(
            events,
            TrainEvent::CheckpointSaved {
                kind: CheckpointKind::Last,
                path: p,
            },
        );
    }
    let epochs_done = std::fs::read_to_string(state_path(&rd))
        .ok()
        .and_then(|t| serde_json::from_str::<PretrainState>(&t).ok())
        .map(|s| s.epochs_done)
        .unwrap_or(start_epoch);
    let backbone = rd.path.join("backbone.safetensors");
    let mut pth = None;
    if epochs_done > 0 && rd.best_path().is_file() {
        // the official-layout export of the best epoch
        let best_model = load_checkpoint(&cfg.model, &rd.best_path(), &device)?;
        let p = cfg
            .export_pth
            .clone()
            .unwrap_or_else(|| rd.path.join("pretrain.pth"));
        export_pth(&best_model, &p, best.0)?;
        pth = Some(p);
    }
    if !stopped {
        send(
            events,
            TrainEvent::Finished {
                best_accuracy: 0.0,
                best_epoch: best.0,
                run_dir: rd.path.clone(),
            },
        );
    }
    Ok(PretrainSummary {
        run_dir: rd.path.clone(),
        epochs_done,
        best_epoch: best.0,
        best_loss: best.1,
        last_train_loss: last_train,
        last_test_loss: last_test,
        stopped,
        total_params: total,
        backend: selected.description,
        backbone,
        pth,
    })
}
