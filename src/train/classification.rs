//! Shape classification as a [`Task`] of the shared driver: the data set, the official
//! training step (cross-entropy, clipping, AdamW), evaluation by overall and mean class
//! accuracy, token-scale snapshots, and the adapter file of the best epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::batch::{Item, pad_to, test_points, train_batch, train_batch_on_device};
use super::config::TrainConfig;
use super::driver::{Outcome, Score, Task};
use super::eval::{EvalResult, evaluate, scale_snapshot};
use super::events::{EpochMetrics, TrainEvent};
use super::metrics::{Confusion, confusion_tensor};
use super::optim::AdamW;
use super::recompute;
use super::run_dir::{CheckpointFile, RunDir, write_json};
use crate::data::{DataSpec, ReadOptions, Rng, ShortClass};
use crate::model::Classifier;
use crate::model::checkpoint::{LoadMode, load_into, read_state_dict};
use crate::model::classifier::cross_entropy;
use crate::model::grouping::{Patches, Placement};
use crate::model::layers::{ForwardCtx, host_vec};
use crate::model::load::{ADAPTER_KIND, adapter_metadata, split_for_adapter};
use crate::model::names::{RawTensor, Reader, Trainable, count_params, named_params};
use crate::phases::{Clock, Phase};

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

/// Metadata stored in every native checkpoint of a classification run.
pub fn checkpoint_meta(
    cfg: &TrainConfig,
    class_names: &[String],
    epoch: usize,
) -> serde_json::Value {
    serde_json::json!({
        "kind": "classifier",
        "model": cfg.model,
        "mode": cfg.mode,
        "class_names": class_names,
        "normalize": cfg.normalize.unwrap_or(false),
        "epoch": epoch,
        "init": cfg.init,
    })
}

/// The model's tensors by official name.
pub fn model_tensors(model: &Classifier) -> Vec<(String, RawTensor)> {
    let mut r = Reader::new();
    Module::visit(model, &mut r);
    r.out
}

/// The adapter file of the model `meta` describes: the trained tensors, the BatchNorm
/// buffers (which drift in train mode) and whatever a backbone file has no tensor for, with
/// the content hash of the frozen backbone tensors so `dapt predict --backbone B --adapter A`
/// can check B is the backbone it was trained on (`model::load`).
pub fn adapter_file(
    model: &Classifier,
    cfg: &TrainConfig,
    meta: &serde_json::Value,
) -> CheckpointFile {
    let mode = cfg.mode;
    let split = split_for_adapter(model_tensors(model), |n| mode.trainable(n));
    let mut meta = adapter_metadata(meta, ADAPTER_KIND, &split, cfg.init.as_deref());
    if let Some(o) = meta.as_object_mut() {
        o.insert("task".into(), serde_json::json!("classification"));
        o.insert("seed".into(), serde_json::json!(cfg.seed));
    }
    CheckpointFile {
        tensors: split.tensors,
        meta,
    }
}

/// What one optimisation step leaves on the device (no autodiff graph attached). Nothing
/// here has been read: on a GPU the step has only been queued.
pub struct StepTensors {
    /// Cross-entropy of the batch, `[1]`.
    pub loss: Tensor<1>,
    /// `[b, classes]`.
    pub logits: Tensor<2>,
    /// L2 norm of the gradients before clipping, `[1]`.
    pub grad_norm: Tensor<1>,
}

/// One optimisation step of the real training path (also what `dapt bench` times):
/// forward in training mode on the autodiff device, cross-entropy, backward, clip, AdamW,
/// all queued on the device without a read-back.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: Classifier,
    opt: &mut AdamW,
    points: &[[f32; 3]],
    labels: &[usize],
    npoints: usize,
    lr: f64,
    rng: &mut Rng,
    ad: &Device,
) -> Result<(Classifier, StepTensors), TrainError> {
    let mut ctx = ForwardCtx::train(rng);
    train_step_in(model, opt, points, labels, npoints, lr, &mut ctx, ad)
}

/// [`train_step`] under the caller's forward context (the training-parity test runs it
/// without a random source, so the head's dropout is off as in the reference trajectory).
/// A non-finite loss is not caught here (that would need a read): the driver checks the
/// losses when it reads them and stops the run before anything is saved.
#[allow(clippy::too_many_arguments)]
pub fn train_step_in(
    model: Classifier,
    opt: &mut AdamW,
    points: &[[f32; 3]],
    labels: &[usize],
    npoints: usize,
    lr: f64,
    ctx: &mut ForwardCtx<'_>,
    ad: &Device,
) -> Result<(Classifier, StepTensors), TrainError> {
    train_step_on(
        model,
        opt,
        Batch::Host { points, npoints },
        labels,
        lr,
        ctx,
        ad,
    )
}

/// A training batch: host clouds (grouped where the device groups) or clouds already on
/// the device (`[b, n, 3]`, from [`super::batch::train_batch_on_device`]).
pub enum Batch<'a> {
    Host {
        points: &'a [[f32; 3]],
        npoints: usize,
    },
    Device(Box<Tensor<3>>),
}

/// The step of [`train_step_in`] on either kind of batch.
pub fn train_step_on(
    mut model: Classifier,
    opt: &mut AdamW,
    batch: Batch<'_>,
    labels: &[usize],
    lr: f64,
    ctx: &mut ForwardCtx<'_>,
    ad: &Device,
) -> Result<(Classifier, StepTensors), TrainError> {
    let b = labels.len();
    let mut clock = Clock::start(ad);
    let (logits, loss_value, grads) = if model.recompute_blocks {
        let (g, m) = (model.config.num_group, model.config.group_size);
        let patches = match batch {
            Batch::Host { points, npoints } => Patches::build(points, b, npoints, g, m, ad)?,
            Batch::Device(cloud) => Patches::on_device(&cloud, g, m),
        };
        let r = recompute::loss_and_grads(
            &mut model,
            patches.neighborhoods,
            patches.centers,
            labels,
            ctx,
            ad,
            &mut clock,
        );
        clock.lap(Phase::Backward);
        (r.logits, r.loss, r.grads)
    } else {
        let out = match batch {
            Batch::Host { points, npoints } => model.forward_points(points, b, npoints, ad, ctx)?.0,
            Batch::Device(cloud) => model.forward_cloud(&cloud, ctx).0,
        };
        let logits = out.logits.clone().inner();
        let loss = cross_entropy(out.logits, labels);
        let loss_value = loss.clone().inner();
        clock.lap(Phase::Forward);
        let grads = loss.backward();
        (logits, loss_value, grads)
    };
    clock.lap(Phase::Backward);
    let (model, grad_norm) = opt.step(model, &grads, lr);
    clock.lap(Phase::Optimizer);
    Ok((
        model,
        StepTensors {
            loss: loss_value,
            logits,
            grad_norm,
        },
    ))
}

/// One step of `dapt train` from stored clouds: the batch pipeline (FPS pre-sampling to
/// `point_all`, the shared column subset of `npoints`, per-sample scale and translate; on the
/// device where the backend groups there) and then [`train_step_on`]. `dapt bench
/// --with-data` times exactly this. Returns the labels in batch order.
#[allow(clippy::too_many_arguments)]
pub fn train_step_items(
    model: Classifier,
    opt: &mut AdamW,
    batch: &[&Item],
    npoints: usize,
    point_all: usize,
    lr: f64,
    rng: &mut Rng,
    ad: &Device,
) -> Result<(Classifier, StepTensors, Vec<usize>), TrainError> {
    let mut clock = Clock::start(ad);
    let on_device = (Placement::for_device(ad) == Placement::Device)
        .then(|| train_batch_on_device(batch, npoints, point_all, true, rng, ad))
        .flatten();
    match on_device {
        Some((cloud, labels)) => {
            clock.lap(Phase::Data);
            let mut ctx = ForwardCtx::train(rng);
            let cloud = Batch::Device(Box::new(cloud));
            let (model, out) = train_step_on(model, opt, cloud, &labels, lr, &mut ctx, ad)?;
            Ok((model, out, labels))
        }
        None => {
            let (pts, labels) = train_batch(batch, npoints, point_all, true, rng);
            clock.lap(Phase::Data);
            let (model, out) = train_step(model, opt, &pts, &labels, npoints, lr, rng, ad)?;
            Ok((model, out, labels))
        }
    }
}

/// Classification for the driver: the prepared data, the epoch's running confusion matrix.
pub struct Classification {
    cfg: TrainConfig,
    data: Prepared,
    conf: Confusion,
    /// This epoch's counts not yet read back (`[classes, classes]` on the device).
    conf_pending: Option<Tensor<2>>,
    device: Device,
}

impl Classification {
    /// Adds a batch's predictions to the epoch's confusion counts on the device.
    fn count(&mut self, logits: Tensor<2>, labels: &[usize]) {
        let counts = confusion_tensor(logits, labels);
        self.conf_pending = Some(match self.conf_pending.take() {
            Some(acc) => acc + counts,
            None => counts,
        });
    }
}

impl Task for Classification {
    type Config = TrainConfig;
    type Model = Classifier;
    type Summary = RunSummary;
    const KIND: &'static str = "classification";
    const STATE_KEYS: (&'static str, Option<&'static str>) =
        ("best_overall_accuracy", Some("best_mean_class_accuracy"));

    fn validate(cfg: &mut TrainConfig) -> Result<(), TrainError> {
        cfg.model.kind = cfg.mode.model_kind();
        Ok(cfg.model.validate()?)
    }

    fn read_config(run: &RunDir) -> Result<TrainConfig, TrainError> {
        let v = run.read_config_value(Self::KIND)?;
        serde_json::from_value(v)
            .map_err(|e| TrainError::Config(format!("{}: {e}", run.config_path().display())))
    }

    fn write_config(&self, cfg: &TrainConfig, run: &RunDir) -> Result<(), TrainError> {
        let mut v = serde_json::to_value(cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "class_names".into(),
                serde_json::json!(self.data.class_names),
            );
        }
        write_json(&run.config_path(), &v)
    }

    fn prepare(
        cfg: &mut TrainConfig,
        device: &Device,
        rng: &mut Rng,
        resuming: bool,
    ) -> Result<(Self, Classifier, Vec<String>), TrainError> {
        let data = prepare_data(cfg, rng)?;
        if data.class_names.len() != cfg.model.cls_dim {
            if resuming {
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
        let (model, note) = build_model_reporting(cfg, device)?;
        // what loading the backbone did was said when the run started
        notes.extend(note.filter(|_| !resuming));
        let conf = Confusion::new(cfg.model.cls_dim);
        Ok((
            Self {
                cfg: cfg.clone(),
                data,
                conf,
                conf_pending: None,
                device: device.clone(),
            },
            model,
            notes,
        ))
    }

    fn load_last(&self, model: Classifier, path: &Path) -> Result<Classifier, TrainError> {
        let dict = read_state_dict(path)?;
        let (m, _) = load_into(model, &dict, LoadMode::Strict)?;
        let mode = self.cfg.mode;
        Ok(m.map(&mut Trainable::new(move |n: &str| mode.trainable(n))))
    }

    fn param_counts(&self, model: &Classifier) -> (usize, usize) {
        let mode = self.cfg.mode;
        count_params(&named_params(model), |n| mode.trainable(n))
    }

    fn train_len(&self) -> usize {
        self.data.train.len()
    }

    fn begin_epoch(&mut self) {
        self.conf = Confusion::new(self.cfg.model.cls_dim);
        self.conf_pending = None;
    }

    fn step(
        &mut self,
        model: Classifier,
        opt: &mut AdamW,
        items: &[usize],
        lr: f64,
        rng: &mut Rng,
        ad: &Device,
    ) -> Result<(Classifier, Tensor<1>), TrainError> {
        let npoints = self.cfg.model.npoints;
        let point_all = self.cfg.point_all_for(npoints);
        let batch: Vec<&Item> = items.iter().map(|&i| &self.data.train[i]).collect();
        let mut model = model;
        model.recompute_blocks = self.cfg.recompute_blocks;
        let (model, out, labels) =
            train_step_items(model, opt, &batch, npoints, point_all, lr, rng, ad)?;
        self.count(out.logits.clone(), &labels);
        Ok((model, out.loss))
    }

    fn read_running(&mut self) -> Result<Option<f64>, TrainError> {
        if let Some(counts) = self.conf_pending.take() {
            self.conf.add_counts(&host_vec(counts));
        }
        Ok(Some(self.conf.overall_accuracy()))
    }

    fn after_step(
        &mut self,
        model: &Classifier,
        epoch: usize,
        step: usize,
        global: usize,
    ) -> Option<TrainEvent> {
        let every = self.cfg.snapshot_every;
        if every == 0 || !global.is_multiple_of(every) {
            return None;
        }
        let first = self.data.test.first()?;
        let mut valid = model.valid();
        let snapshot = scale_snapshot(&mut valid, &first.points, &self.device).ok()?;
        Some(TrainEvent::TokenScales {
            epoch,
            step,
            snapshot,
        })
    }

    fn train_metrics(&self, m: EpochMetrics) -> EpochMetrics {
        EpochMetrics {
            overall_accuracy: self.conf.overall_accuracy(),
            mean_class_accuracy: self.conf.mean_class_accuracy(),
            ..m
        }
    }

    fn evaluate(
        &mut self,
        model: &mut Classifier,
        m: EpochMetrics,
    ) -> Result<Option<EpochMetrics>, TrainError> {
        if self.data.test.is_empty() {
            return Ok(None);
        }
        let r: EvalResult = evaluate(model, &self.data.test, self.cfg.val_batch, &self.device)?;
        Ok(Some(EpochMetrics {
            loss: r.loss,
            overall_accuracy: r.confusion.overall_accuracy(),
            mean_class_accuracy: r.confusion.mean_class_accuracy(),
            ..m
        }))
    }

    fn after_eval(
        &mut self,
        model: &mut Classifier,
        epoch: usize,
        steps: usize,
    ) -> Option<TrainEvent> {
        if self.cfg.snapshot_every != 0 {
            return None;
        }
        let first = self.data.test.first()?;
        let snapshot = scale_snapshot(model, &first.points, &self.device).ok()?;
        Some(TrainEvent::TokenScales {
            epoch,
            step: steps,
            snapshot,
        })
    }

    fn score(&self, m: &EpochMetrics) -> Score {
        Score {
            primary: m.overall_accuracy,
            secondary: m.mean_class_accuracy,
        }
    }

    fn checkpoint(&self, model: &Classifier, epoch: usize) -> Result<CheckpointFile, TrainError> {
        Ok(CheckpointFile {
            tensors: model_tensors(model),
            meta: checkpoint_meta(&self.cfg, &self.data.class_names, epoch),
        })
    }

    fn published(
        &self,
        model: &Classifier,
        best: &CheckpointFile,
    ) -> Result<Option<(&'static str, CheckpointFile)>, TrainError> {
        // the adapter is the best model's, so backbone + adapter = best.safetensors
        Ok(Some((
            "adapter.safetensors",
            adapter_file(model, &self.cfg, &best.meta),
        )))
    }

    fn finish(&self, _cfg: &TrainConfig, o: Outcome) -> Result<RunSummary, TrainError> {
        let adapter_bytes = std::fs::metadata(o.run_dir.adapter_path()).map_or(0, |m| m.len());
        Ok(RunSummary {
            run_dir: o.run_dir.path.clone(),
            epochs_done: o.epochs_done,
            best_epoch: o.best_epoch,
            best_overall_accuracy: o.best.primary,
            best_mean_class_accuracy: o.best.secondary,
            last: o.last,
            stopped: o.stopped,
            trainable_params: o.trainable_params,
            total_params: o.total_params,
            adapter_bytes,
            backend: o.backend,
        })
    }
}

/// Runs (or resumes) classification training. `resume` names an existing run directory.
pub fn run(
    cfg: TrainConfig,
    resume: Option<&Path>,
    events: Option<Sender<TrainEvent>>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, TrainError> {
    super::driver::run::<Classification>(cfg, resume, events, &stop)
}
