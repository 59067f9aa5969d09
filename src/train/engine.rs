//! The training loop: one engine for the CLI and the app. It runs on the caller's thread
//! (the app puts it on a worker), reports through [`TrainEvent`]s and stops at a safe point
//! when the stop flag is set.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::batch::{Item, pad_to, test_points, train_batch};
use super::config::TrainConfig;
use super::eval::{EvalResult, evaluate, scale_snapshot};
use super::events::{CheckpointKind, EpochMetrics, TrainEvent};
use super::metrics::{Confusion, argmax};
use super::optim::AdamW;
use super::run_dir::{RunDir, RunState};
use super::schedule::CosineSchedule;
use crate::backend;
use crate::data::{DataSpec, ReadOptions, Rng, ShortClass};
use crate::model::Classifier;
use crate::model::checkpoint::{LoadMode, load_into, read_state_dict};
use crate::model::classifier::cross_entropy;
use crate::model::layers::{ForwardCtx, host_vec};
use crate::model::names::{Trainable, count_params, named_params};

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub epochs_done: usize,
    pub best_epoch: usize,
    pub best_overall_accuracy: f64,
    pub best_mean_class_accuracy: f64,
    pub last: Option<EpochMetrics>,
    pub stopped: bool,
    pub trainable_params: usize,
    pub total_params: usize,
    pub adapter_bytes: u64,
    pub backend: String,
}

/// The loaded data set, ready for batching.
pub struct Prepared {
    pub class_names: Vec<String>,
    pub train: Vec<Item>,
    /// Test clouds after the official test-time sampling.
    pub test: Vec<Item>,
    pub normalize: bool,
    pub padded: usize,
    /// `--shots`: classes with fewer training shapes than asked for, used whole.
    pub short_classes: Vec<ShortClass>,
}

/// Loads and samples a data set for `npoints`-point models.
pub fn prepare_data(cfg: &TrainConfig, rng: &mut Rng) -> Result<Prepared, TrainError> {
    let spec = DataSpec::parse(&cfg.data)?;
    let mut ds = spec.open()?;
    let short_classes = match cfg.shots {
        Some(k) => ds
            .keep_shots(k, cfg.seed)
            .map_err(|e| TrainError::Config(format!("{}: {e}", cfg.data)))?,
        None => Vec::new(),
    };
    // The synthetic generator already normalises each cloud; recording `true` for it makes
    // predictions on users' files (any scale, any offset) go through the same normalisation.
    let synthetic = matches!(spec, DataSpec::Synthetic(_));
    let normalize = cfg.normalize.unwrap_or(ds.normalize || synthetic);
    // `Dataset::load` applies pc_normalize exactly when this flag is set
    ds.normalize = normalize;
    let opts = ReadOptions::default();
    let npoints = cfg.model.npoints;
    let mut padded = 0;
    let mut load = |samples: &[crate::data::Sample], test: bool| -> Result<Vec<Item>, TrainError> {
        let mut out = Vec::with_capacity(samples.len());
        for s in samples {
            let cloud = ds.load(s, &opts)?;
            let mut pts = cloud.positions;
            if pad_to(&mut pts, npoints, rng) {
                padded += 1;
            }
            let pts = if test {
                test_points(&pts, npoints)
            } else {
                pts
            };
            out.push(Item {
                points: pts,
                label: s.label,
            });
        }
        Ok(out)
    };
    let train = load(&ds.train, false)?;
    let test = load(&ds.test, true)?;
    if train.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: the training split is empty",
            cfg.data
        )));
    }
    Ok(Prepared {
        class_names: ds.class_names.clone(),
        train,
        test,
        normalize,
        padded,
        short_classes,
    })
}

/// The test split as stored (normalised, padded), for protocols that sample themselves.
pub fn prepare_raw_test(cfg: &TrainConfig, rng: &mut Rng) -> Result<Vec<Item>, TrainError> {
    let spec = DataSpec::parse(&cfg.data)?;
    let mut ds = spec.open()?;
    ds.normalize = cfg.normalize.unwrap_or(ds.normalize);
    let mut out = Vec::new();
    for s in &ds.test {
        let cloud = ds.load(s, &ReadOptions::default())?;
        let mut pts = cloud.positions;
        pad_to(&mut pts, cfg.model.npoints, rng);
        out.push(Item {
            points: pts,
            label: s.label,
        });
    }
    Ok(out)
}

/// Builds the model for `cfg` on `device`, loading `init` as a backbone, with the mode's
/// trainable set.
pub fn build_model(cfg: &TrainConfig, device: &Device) -> Result<Classifier, TrainError> {
    build_model_reporting(cfg, device).map(|(m, _)| m)
}

/// [`build_model`], also describing what loading the backbone did.
pub fn build_model_reporting(
    cfg: &TrainConfig,
    device: &Device,
) -> Result<(Classifier, Option<String>), TrainError> {
    let mut mcfg = cfg.model.clone();
    mcfg.kind = cfg.mode.model_kind();
    // initialised from the host Rng: burn's device RNG is process-wide, so concurrent runs
    // (parallel tests, the app) would otherwise perturb each other's initialisation
    let mut model = crate::model::init::host_init(Classifier::new(&mcfg, device)?, cfg.seed);
    let mut note = None;
    if let Some(init) = &cfg.init {
        let dict = read_state_dict(init)?;
        let (m, r) = load_into(model, &dict, LoadMode::Backbone)?;
        model = m;
        let list = |v: &[String]| {
            let mut s = v.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 6 {
                s.push_str(&format!(", ... ({} in all)", v.len()));
            }
            s
        };
        note = Some(format!(
            "backbone {}: {} tensors loaded; left at their initialisation: {}; ignored: {}",
            init.display(),
            r.applied.len(),
            if r.missing.is_empty() {
                "none".into()
            } else {
                list(&r.missing)
            },
            if r.unexpected.is_empty() {
                "none".into()
            } else {
                list(&r.unexpected)
            },
        ));
    }
    if cfg.init.is_none() {
        // measured on the furniture benchmark: the first BatchNorm's running variance goes
        // from 1 to ~0.003, so eval-mode features are ~20x too small until 0.9^steps < 0.003
        note = Some(
            "no --init: the backbone starts from random weights (and with --mode dapt or linear \
             stays random). Held-out accuracy can sit at one class for the first ~60 optimisation \
             steps while the patch encoder's BatchNorm running variances (initialised to 1, \
             momentum 0.1) settle to the data's; a pre-trained backbone brings its own."
                .into(),
        );
    }
    let mode = cfg.mode;
    Ok((
        model.map(&mut Trainable::new(move |n: &str| mode.trainable(n))),
        note,
    ))
}

fn send(events: &Option<Sender<TrainEvent>>, e: TrainEvent) {
    if let Some(tx) = events {
        let _ = tx.send(e);
    }
}

/// One optimisation step of the real training path (also what `dapt bench` times):
/// forward in training mode on the autodiff device, cross-entropy, backward, clip, AdamW.
/// Returns the updated model, the loss and the batch logits. A non-finite loss leaves the
/// model untouched.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    mut model: Classifier,
    opt: &mut AdamW,
    points: &[[f32; 3]],
    labels: &[usize],
    npoints: usize,
    lr: f64,
    rng: &mut Rng,
    ad: &Device,
) -> Result<(Classifier, f64, Vec<f32>), TrainError> {
    let b = labels.len();
    let mut ctx = ForwardCtx::train(rng);
    let (out, _) = model.forward_points(points, b, npoints, ad, &mut ctx)?;
    let logits_host = host_vec(out.logits.clone());
    let loss = cross_entropy(out.logits, labels);
    let loss_v = loss.clone().into_scalar::<f32>() as f64;
    if !loss_v.is_finite() {
        return Ok((model, loss_v, logits_host));
    }
    let grads = loss.backward();
    let (model, _norm) = opt.step(model, &grads, lr);
    Ok((model, loss_v, logits_host))
}

/// Runs (or resumes) training. `resume` names an existing run directory.
pub fn run(
    mut cfg: TrainConfig,
    resume: Option<&Path>,
    events: Option<Sender<TrainEvent>>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, TrainError> {
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

fn run_inner(
    cfg: &mut TrainConfig,
    resume: Option<&Path>,
    events: &Option<Sender<TrainEvent>>,
    stop: &AtomicBool,
) -> Result<RunSummary, TrainError> {
    let (run_dir, state) = match resume {
        Some(dir) => {
            let rd = RunDir::open(dir)?;
            *cfg = rd.read_config()?;
            let st = rd.read_state()?;
            (rd, Some(st))
        }
        None => {
            cfg.model.kind = cfg.mode.model_kind();
            cfg.model.validate()?;
            (RunDir::create(&cfg.out)?, None)
        }
    };
    let selected = backend::select(cfg.backend);
    let device = selected.device.clone();
    let mut rng = Rng::new(cfg.seed);
    let data = prepare_data(cfg, &mut rng)?;
    if data.class_names.len() != cfg.model.cls_dim {
        if resume.is_some() {
            return Err(TrainError::Config(format!(
                "{}: the data set has {} classes, the run's model {}",
                cfg.data,
                data.class_names.len(),
                cfg.model.cls_dim
            )));
        }
        cfg.model.cls_dim = data.class_names.len();
    }
    if cfg.normalize.is_none() {
        cfg.normalize = Some(data.normalize);
    }
    // notes follow the `started` event, which scripts can rely on being the first
    let mut notes = Vec::new();
    if let (Some(k), false) = (cfg.shots, data.short_classes.is_empty()) {
        let list: Vec<String> = data
            .short_classes
            .iter()
            .map(|c| format!("{} ({})", c.name, c.shapes))
            .collect();
        notes.push(format!(
            "--shots {k}: {} class(es) have fewer training shapes and are used whole: {}",
            list.len(),
            list.join(", ")
        ));
    }
    let (mut model, note) = build_model_reporting(cfg, &device)?;
    notes.extend(note.filter(|_| state.is_none()));
    let mut opt = AdamW::new(cfg.optim.clone());
    let mut start_epoch = 0;
    let mut best = (0usize, -1.0f64, 0.0f64);
    if let Some(st) = &state {
        let dict = read_state_dict(&run_dir.last_path())?;
        let (m, _) = load_into(model, &dict, LoadMode::Strict)?;
        let mode = cfg.mode;
        model = m.map(&mut Trainable::new(move |n: &str| mode.trainable(n)));
        let opt_dict = read_state_dict(&run_dir.optimizer_path())?;
        opt.load_state(st.optimizer_step, &opt_dict.tensors, &device);
        rng = st.rng.clone();
        start_epoch = st.epochs_done;
        best = (
            st.best_epoch,
            st.best_overall_accuracy,
            st.best_mean_class_accuracy,
        );
    } else {
        run_dir.write_config(cfg, &data.class_names)?;
    }
    let params = named_params(&model);
    let mode = cfg.mode;
    let (trainable, total) = count_params(&params, |n| mode.trainable(n));
    let npoints = cfg.model.npoints;
    let point_all = cfg.point_all_for(npoints);
    let batch = cfg.batch.max(1).min(data.train.len());
    let steps_per_epoch = data.train.len() / batch; // drop_last
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
            run_dir: run_dir.path.clone(),
            backend: selected.description.clone(),
            start_epoch,
            total_epochs: cfg.epochs,
            steps_per_epoch,
            trainable_params: trainable,
            total_params: total,
        },
    );
    for message in notes {
        send(events, TrainEvent::Note { message });
    }
    let ad = device.clone().autodiff();
    let mut model = model.train();
    let t0 = Instant::now();
    let mut last_metrics = None;
    let mut adapter_bytes = 0;
    let mut stopped = false;
    let class_names = data.class_names.clone();
    for epoch in start_epoch..cfg.epochs {
        let lr = schedule.lr_for_epoch(epoch);
        let mut order: Vec<usize> = (0..data.train.len()).collect();
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0;
        let mut conf = Confusion::new(cfg.model.cls_dim);
        for step in 0..steps_per_epoch {
            if stop.load(Ordering::Relaxed) {
                stopped = true;
                break;
            }
            let step_start = Instant::now();
            let items: Vec<&Item> = order[step * batch..(step + 1) * batch]
                .iter()
                .map(|&i| &data.train[i])
                .collect();
            let (pts, labels) = train_batch(&items, npoints, point_all, true, &mut rng);
            let (m, loss_v, logits_host) =
                train_step(model, &mut opt, &pts, &labels, npoints, lr, &mut rng, &ad)?;
            model = m;
            if !loss_v.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    step,
                    loss: loss_v,
                });
            }
            loss_sum += loss_v;
            let k = cfg.model.cls_dim;
            for (i, &l) in labels.iter().enumerate() {
                conf.add(l, argmax(&logits_host[i * k..(i + 1) * k]));
            }
            let secs = step_start.elapsed().as_secs_f64().max(1e-9);
            send(
                events,
                TrainEvent::Step {
                    epoch,
                    step,
                    steps_per_epoch,
                    loss: loss_v,
                    accuracy: Some(conf.overall_accuracy()),
                    lr,
                    samples_per_sec: batch as f64 / secs,
                },
            );
            let global = epoch * steps_per_epoch + step + 1;
            if cfg.snapshot_every > 0 && global % cfg.snapshot_every == 0 && !data.test.is_empty() {
                let mut valid = model.valid();
                if let Ok(s) = scale_snapshot(&mut valid, &data.test[0].points, &device) {
                    send(
                        events,
                        TrainEvent::TokenScales {
                            epoch,
                            step,
                            snapshot: s,
                        },
                    );
                }
            }
        }
        if stopped {
            send(events, TrainEvent::Stopped { epoch });
            break;
        }
        let train_m = EpochMetrics {
            epoch,
            split: "train".into(),
            wall_secs: t0.elapsed().as_secs_f64(),
            lr,
            loss: loss_sum / steps_per_epoch.max(1) as f64,
            overall_accuracy: conf.overall_accuracy(),
            mean_class_accuracy: conf.mean_class_accuracy(),
            instance_miou: None,
            class_miou: None,
        };
        run_dir.append_metrics(&train_m)?;
        send(events, TrainEvent::Metrics(train_m.clone()));
        let mut valid = model.valid();
        let test_m = if data.test.is_empty() {
            None
        } else {
            let r: EvalResult = evaluate(&mut valid, &data.test, cfg.val_batch, &device)?;
            let m = EpochMetrics {
                epoch,
                split: "test".into(),
                wall_secs: t0.elapsed().as_secs_f64(),
                lr,
                loss: r.loss,
                overall_accuracy: r.confusion.overall_accuracy(),
                mean_class_accuracy: r.confusion.mean_class_accuracy(),
                instance_miou: None,
                class_miou: None,
            };
            run_dir.append_metrics(&m)?;
            send(events, TrainEvent::Metrics(m.clone()));
            Some(m)
        };
        if cfg.snapshot_every == 0
            && !data.test.is_empty()
            && let Ok(s) = scale_snapshot(&mut valid, &data.test[0].points, &device)
        {
            send(
                events,
                TrainEvent::TokenScales {
                    epoch,
                    step: steps_per_epoch,
                    snapshot: s,
                },
            );
        }
        let acc = test_m
            .as_ref()
            .map(|m| m.overall_accuracy)
            .unwrap_or(train_m.overall_accuracy);
        let macc = test_m
            .as_ref()
            .map(|m| m.mean_class_accuracy)
            .unwrap_or(train_m.mean_class_accuracy);
        let meta = run_dir.checkpoint_meta(cfg, &class_names, epoch);
        if acc > best.1 {
            best = (epoch, acc, macc);
            let p = run_dir.save_model(&valid, CheckpointKind::Best, &meta)?;
            // the adapter is the best model's, so backbone + adapter = best.safetensors
            adapter_bytes = run_dir.save_adapter(&valid, cfg, &meta)?;
            send(
                events,
                TrainEvent::CheckpointSaved {
                    kind: CheckpointKind::Best,
                    path: p,
                },
            );
        }
        // `last` and its optimizer/RNG state move together: state.json is written last,
        // so a crash in between resumes from the previous epoch's consistent state.
        let p = run_dir.save_model(&valid, CheckpointKind::Last, &meta)?;
        run_dir.save_optimizer(&opt)?;
        run_dir.write_state(&RunState {
            epochs_done: epoch + 1,
            optimizer_step: opt.step,
            rng: rng.clone(),
            best_epoch: best.0,
            best_overall_accuracy: best.1,
            best_mean_class_accuracy: best.2,
        })?;
        send(
            events,
            TrainEvent::CheckpointSaved {
                kind: CheckpointKind::Last,
                path: p,
            },
        );
        last_metrics = test_m.or(Some(train_m));
    }
    let done = RunState::read(&run_dir)
        .map(|s| s.epochs_done)
        .unwrap_or(start_epoch);
    if adapter_bytes == 0 {
        // resumed past the best epoch: the adapter on disk is still the best one
        adapter_bytes = std::fs::metadata(run_dir.adapter_path()).map_or(0, |m| m.len());
    }
    if !stopped {
        send(
            events,
            TrainEvent::Finished {
                best_accuracy: best.1.max(0.0),
                best_epoch: best.0,
                run_dir: run_dir.path.clone(),
            },
        );
    }
    Ok(RunSummary {
        run_dir: run_dir.path.clone(),
        epochs_done: done,
        best_epoch: best.0,
        best_overall_accuracy: best.1.max(0.0),
        best_mean_class_accuracy: best.2,
        last: last_metrics,
        stopped,
        trainable_params: trainable,
        total_params: total,
        adapter_bytes,
        backend: selected.description,
    })
}
