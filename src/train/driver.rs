//! The one training loop. Classification, part segmentation and pre-training each supply a
//! [`Task`] (their data, their step, their evaluation, what their checkpoints hold); the
//! driver owns everything else once: the run directory, resume, epochs and steps, the
//! schedule, the stop flag, [`TrainEvent`]s, evaluation after each epoch, best-epoch
//! tracking and the per-epoch commit (`run_dir`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::TrainError;
use super::events::{CheckpointKind, EpochMetrics, TrainEvent};
use super::optim::{AdamW, AdamWConfig};
use super::run_dir::{CheckpointFile, EpochCommit, RunDir, RunState};
use super::schedule::CosineSchedule;
use crate::backend::{self, BackendChoice};
use crate::data::Rng;
use crate::readback::host_vec;

/// The loop settings a task's configuration fixes.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub batch: usize,
    pub optim: AdamWConfig,
    pub min_lr: f64,
    pub warmup_lr_init: f64,
    pub seed: u64,
    pub backend: BackendChoice,
    pub checkpointing: bool,
    pub out: PathBuf,
}

/// The same fields, borrowed for writing (the CLI's shared flags set them).
pub struct RecipeMut<'a> {
    pub data: &'a mut String,
    pub epochs: &'a mut usize,
    pub warmup_epochs: &'a mut usize,
    pub batch: &'a mut usize,
    pub optim: &'a mut AdamWConfig,
    pub seed: &'a mut u64,
    pub backend: &'a mut BackendChoice,
    pub checkpointing: &'a mut bool,
    pub out: &'a mut PathBuf,
}

/// A task configuration: every one carries the loop settings under the same names.
pub trait RecipeFields {
    fn recipe(&self) -> Recipe;
    fn recipe_mut(&mut self) -> RecipeMut<'_>;
}

macro_rules! recipe_fields {
    ($($t:ty),+) => {$(
        impl RecipeFields for $t {
            fn recipe(&self) -> Recipe {
                Recipe {
                    epochs: self.epochs,
                    warmup_epochs: self.warmup_epochs,
                    batch: self.batch,
                    optim: self.optim.clone(),
                    min_lr: self.min_lr,
                    warmup_lr_init: self.warmup_lr_init,
                    seed: self.seed,
                    backend: self.backend,
                    checkpointing: self.checkpointing,
                    out: self.out.clone(),
                }
            }
            fn recipe_mut(&mut self) -> RecipeMut<'_> {
                RecipeMut {
                    data: &mut self.data,
                    epochs: &mut self.epochs,
                    warmup_epochs: &mut self.warmup_epochs,
                    batch: &mut self.batch,
                    optim: &mut self.optim,
                    seed: &mut self.seed,
                    backend: &mut self.backend,
                    checkpointing: &mut self.checkpointing,
                    out: &mut self.out,
                }
            }
        }
    )+};
}

recipe_fields!(
    super::TrainConfig,
    super::partseg::PartSegTrainConfig,
    super::pretrain::PretrainConfig
);

/// `model` in training mode on the autodiff device a run steps on, and that device: burn's
/// autodiff with gradient checkpointing when `checkpointing` (element-wise and shape ops
/// recomputed in backward instead of kept; the results are the same bit for bit). burn
/// panics when an op meets operands of two strategies and `Module::train` tags parameters
/// with none, so the parameters are given the device's strategy here, in the one place
/// every trainer (the driver, `dapt bench`, the parity replay) goes through.
pub fn for_training<M: Module>(model: M, device: &Device, checkpointing: bool) -> (M, Device) {
    let ad = device.clone().autodiff();
    let ad = if checkpointing {
        ad.gradient_checkpointing()
    } else {
        ad
    };
    let model = crate::model::layers::with_checkpointing_of(model.train(), &ad);
    (model, ad)
}

/// How a task's epochs are compared to pick `best`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Decides (`best_overall_accuracy`, `best_instance_miou`, `best_loss`).
    pub primary: f64,
    /// Reported beside it (`best_mean_class_accuracy`, `best_class_miou`).
    pub secondary: f64,
}

/// What a finished or stopped run did, for the task's summary.
pub struct Outcome {
    pub run_dir: RunDir,
    pub epochs_done: usize,
    pub best_epoch: usize,
    pub best: Score,
    /// The last epoch of this session: its held-out line (its training line without one).
    pub last: Option<EpochMetrics>,
    /// The last epoch's training line.
    pub last_train: Option<EpochMetrics>,
    pub stopped: bool,
    pub trainable_params: usize,
    pub total_params: usize,
    pub backend: String,
    pub device: Device,
}

/// What differs between classification, segmentation and pre-training.
pub trait Task: Sized {
    type Config: Clone + RecipeFields;
    type Model: Module;
    type Summary;

    /// `"classification"`, `"partseg"` or `"pretrain"`: how `config.json` tells runs apart.
    const KIND: &'static str;
    /// The names of [`Score`]'s two fields in `state.json`.
    const STATE_KEYS: (&'static str, Option<&'static str>);
    /// Pre-training keeps the lowest held-out loss; the others the highest accuracy / mIoU.
    const LOWER_IS_BETTER: bool = false;

    /// Checks a new run's configuration before anything is written.
    fn validate(cfg: &mut Self::Config) -> Result<(), TrainError>;
    /// The configuration saved in `run`.
    fn read_config(run: &RunDir) -> Result<Self::Config, TrainError>;
    fn write_config(&self, cfg: &Self::Config, run: &RunDir) -> Result<(), TrainError>;

    /// Loads the data (fitting the configuration to it where it is open, e.g. the class
    /// count) and builds the model at its initialisation; returns notes for the user.
    /// `resuming`: the configuration came from a run directory and must not change.
    fn prepare(
        cfg: &mut Self::Config,
        device: &Device,
        rng: &mut Rng,
        resuming: bool,
    ) -> Result<(Self, Self::Model, Vec<String>), TrainError>;
    /// The model of the committed epoch (`checkpoints/last.safetensors`) in training setup.
    fn load_last(&self, model: Self::Model, path: &Path) -> Result<Self::Model, TrainError>;
    /// Trainable and total parameter counts.
    fn param_counts(&self, model: &Self::Model) -> (usize, usize);

    /// Training items an epoch shuffles and batches.
    fn train_len(&self) -> usize;
    /// Clears the epoch's running training metrics.
    fn begin_epoch(&mut self);
    /// One optimisation step on the training items `items`: returns the model and the
    /// batch loss, still on the device (`[1]`). The task accumulates its running training
    /// metrics on the device too; nothing in a step reads back.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        model: Self::Model,
        opt: &mut AdamW,
        items: &[usize],
        lr: f64,
        rng: &mut Rng,
        ad: &Device,
    ) -> Result<(Self::Model, Tensor<1>), TrainError>;
    /// Reads the epoch's running training metrics accumulated since the last call and
    /// returns the running accuracy so far (`None` where there is none). Called at progress
    /// points and before [`Task::train_metrics`].
    fn read_running(&mut self) -> Result<Option<f64>, TrainError> {
        Ok(None)
    }
    /// Called after every step with the global step count (token-scale snapshots).
    fn after_step(
        &mut self,
        _model: &Self::Model,
        _epoch: usize,
        _step: usize,
        _global: usize,
    ) -> Option<TrainEvent> {
        None
    }
    /// Fills the task's fields of the epoch's training line.
    fn train_metrics(&self, m: EpochMetrics) -> EpochMetrics;
    /// Evaluates the held-out split (`None` when there is none); `m` carries epoch and lr.
    fn evaluate(
        &mut self,
        model: &mut Self::Model,
        m: EpochMetrics,
    ) -> Result<Option<EpochMetrics>, TrainError>;
    /// Called after the evaluation with the eval-mode model (end-of-epoch snapshots).
    fn after_eval(
        &mut self,
        _model: &mut Self::Model,
        _epoch: usize,
        _steps: usize,
    ) -> Option<TrainEvent> {
        None
    }
    fn score(&self, m: &EpochMetrics) -> Score;
    /// The line metrics.jsonl gets for `m`.
    fn metrics_line(&self, m: &EpochMetrics) -> serde_json::Value {
        serde_json::to_value(m).unwrap_or_default()
    }

    /// The model as a checkpoint file of epoch `epoch`.
    fn checkpoint(&self, model: &Self::Model, epoch: usize) -> Result<CheckpointFile, TrainError>;
    /// The file published beside the run for a new best epoch (name and contents).
    fn published(
        &self,
        model: &Self::Model,
        best: &CheckpointFile,
    ) -> Result<Option<(&'static str, CheckpointFile)>, TrainError>;

    /// The task's summary; may write end-of-run exports.
    fn finish(&self, cfg: &Self::Config, outcome: Outcome) -> Result<Self::Summary, TrainError>;
}

/// Steps between two reads of the losses on a GPU (CPU runs read after every step).
pub const GPU_PROGRESS_EVERY: usize = 10;

/// Steps whose losses are still on the device.
struct Window {
    steps: Vec<usize>,
    losses: Vec<Tensor<1>>,
    since: Instant,
}

impl Window {
    fn new() -> Self {
        Self {
            steps: Vec::new(),
            losses: Vec::new(),
            since: Instant::now(),
        }
    }

    fn len(&self) -> usize {
        self.steps.len()
    }

    fn push(&mut self, step: usize, loss: Tensor<1>) {
        self.steps.push(step);
        self.losses.push(loss);
    }

    /// Reads the window's losses and the task's running metrics (one read each), stops the
    /// run at the first non-finite loss, sends one step event per step and returns the sum
    /// of the losses.
    fn report<T: Task>(
        &mut self,
        epoch: usize,
        steps_per_epoch: usize,
        batch: usize,
        lr: f64,
        task: &mut T,
        events: &Option<Sender<TrainEvent>>,
    ) -> Result<f64, TrainError> {
        let steps = std::mem::take(&mut self.steps);
        let losses = host_vec(Tensor::cat(std::mem::take(&mut self.losses), 0));
        let accuracy = task.read_running()?;
        let secs = self.since.elapsed().as_secs_f64().max(1e-9) / steps.len().max(1) as f64;
        self.since = Instant::now();
        let mut sum = 0.0;
        for (i, &step) in steps.iter().enumerate() {
            let loss = losses.get(i).map_or(f64::NAN, |&l| l as f64);
            if !loss.is_finite() {
                return Err(TrainError::Diverged { epoch, step, loss });
            }
            sum += loss;
            send(
                events,
                TrainEvent::Step {
                    epoch,
                    step,
                    steps_per_epoch,
                    loss,
                    accuracy,
                    lr,
                    samples_per_sec: batch as f64 / secs,
                },
            );
        }
        Ok(sum)
    }
}

fn send(events: &Option<Sender<TrainEvent>>, e: TrainEvent) {
    if let Some(tx) = events {
        let _ = tx.send(e);
    }
}

/// Runs (or, when `resume` names a run directory, continues) a run of task `T`. A failure
/// is also reported as [`TrainEvent::Failed`].
pub fn run<T: Task>(
    mut cfg: T::Config,
    resume: Option<&Path>,
    events: Option<Sender<TrainEvent>>,
    stop: &AtomicBool,
) -> Result<T::Summary, TrainError> {
    let result = run_inner::<T>(&mut cfg, resume, &events, stop);
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
fn run_inner<T: Task>(
    cfg: &mut T::Config,
    resume: Option<&Path>,
    events: &Option<Sender<TrainEvent>>,
    stop: &AtomicBool,
) -> Result<T::Summary, TrainError> {
    let (run_dir, state) = match resume {
        Some(dir) => {
            let rd = RunDir::open(dir)?;
            *cfg = T::read_config(&rd)?;
            let st = rd.resume_state()?;
            (rd, st)
        }
        None => {
            T::validate(cfg)?;
            (RunDir::create(&cfg.recipe().out)?, None)
        }
    };
    let recipe = cfg.recipe();
    let selected = backend::select(recipe.backend);
    let device = selected.device.clone();
    let mut rng = Rng::new(recipe.seed);
    let (mut task, mut model, notes) = T::prepare(cfg, &device, &mut rng, resume.is_some())?;
    let mut opt = AdamW::new(recipe.optim.clone());
    let mut start_epoch = 0;
    let mut best_epoch = 0;
    let mut best = Score {
        primary: if T::LOWER_IS_BETTER {
            f64::INFINITY
        } else {
            -1.0
        },
        secondary: 0.0,
    };
    if let Some(st) = &state {
        model = task.load_last(model, &run_dir.last_path())?;
        let opt_dict = crate::model::checkpoint::read_state_dict(&run_dir.optimizer_path())?;
        opt.load_state(st.optimizer_step, &opt_dict.tensors, &device);
        rng = st.rng.clone();
        start_epoch = st.epochs_done;
        best_epoch = st.best_epoch;
        best = Score {
            primary: st.best_score,
            secondary: st.best_secondary,
        };
    } else {
        // a new run, or one interrupted before its first epoch committed: from the start
        task.write_config(cfg, &run_dir)?;
    }
    let (trainable, total) = task.param_counts(&model);
    let n = task.train_len();
    let batch = recipe.batch.max(1).min(n);
    let steps_per_epoch = n / batch; // drop_last, as the official loaders
    let schedule = CosineSchedule {
        base_lr: recipe.optim.lr,
        min_lr: recipe.min_lr,
        warmup_lr_init: recipe.warmup_lr_init,
        warmup_epochs: recipe.warmup_epochs,
        t_initial: recipe.epochs.max(1),
    };
    send(
        events,
        TrainEvent::Started {
            run_dir: run_dir.path.clone(),
            backend: selected.description.clone(),
            start_epoch,
            total_epochs: recipe.epochs,
            steps_per_epoch,
            trainable_params: trainable,
            total_params: total,
        },
    );
    // notes follow the `started` event, which scripts can rely on being the first
    for message in notes {
        send(events, TrainEvent::Note { message });
    }
    let (mut model, ad) = for_training(model, &device, recipe.checkpointing);
    // on a GPU every read waits for the queue to drain: read the losses every few steps
    let progress_every = if selected.is_gpu {
        GPU_PROGRESS_EVERY
    } else {
        1
    };
    let t0 = Instant::now();
    let mut last_metrics = None;
    let mut last_train = None;
    let mut stopped = false;
    for epoch in start_epoch..recipe.epochs {
        let phases_before = crate::phases::totals();
        let lr = schedule.lr_for_epoch(epoch);
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        task.begin_epoch();
        let mut loss_sum = 0.0;
        let mut window = Window::new();
        for step in 0..steps_per_epoch {
            if stop.load(Ordering::Relaxed) {
                stopped = true;
                break;
            }
            let items = &order[step * batch..(step + 1) * batch];
            let (m, loss) = task.step(model, &mut opt, items, lr, &mut rng, &ad)?;
            model = m;
            window.push(step, loss);
            let last = step + 1 == steps_per_epoch;
            if window.len() >= progress_every || last {
                loss_sum += window.report(epoch, steps_per_epoch, batch, lr, &mut task, events)?;
            }
            let global = epoch * steps_per_epoch + step + 1;
            if let Some(e) = task.after_step(&model, epoch, step, global) {
                send(events, e);
            }
        }
        if stopped && window.len() > 0 {
            // the steps done are reported; the partial epoch is not committed
            window.report(epoch, steps_per_epoch, batch, lr, &mut task, events)?;
        }
        if stopped {
            send(events, TrainEvent::Stopped { epoch });
            break;
        }
        let base = |split: &str, loss: f64| EpochMetrics {
            epoch,
            split: split.into(),
            wall_secs: t0.elapsed().as_secs_f64(),
            lr,
            loss,
            overall_accuracy: 0.0,
            mean_class_accuracy: 0.0,
            instance_miou: None,
            class_miou: None,
        };
        if crate::phases::enabled() {
            let spent = crate::phases::totals().since(&phases_before);
            let message = format!(
                "epoch {epoch} phases, mean per step (DAPT_PHASE_TIMES): {}",
                spent.describe(steps_per_epoch)
            );
            send(events, TrainEvent::Note { message });
        }
        let train_m = task.train_metrics(base("train", loss_sum / steps_per_epoch.max(1) as f64));
        run_dir.append_metrics(&task.metrics_line(&train_m))?;
        send(events, TrainEvent::Metrics(train_m.clone()));
        let mut valid = model.valid();
        let test_m = task.evaluate(&mut valid, base("test", 0.0))?.map(|mut m| {
            m.wall_secs = t0.elapsed().as_secs_f64();
            m
        });
        if let Some(m) = &test_m {
            run_dir.append_metrics(&task.metrics_line(m))?;
            send(events, TrainEvent::Metrics(m.clone()));
        }
        if let Some(e) = task.after_eval(&mut valid, epoch, steps_per_epoch) {
            send(events, e);
        }
        let score = task.score(test_m.as_ref().unwrap_or(&train_m));
        let improved = if T::LOWER_IS_BETTER {
            score.primary < best.primary
        } else {
            score.primary > best.primary
        };
        if improved {
            best = score;
            best_epoch = epoch;
        }
        let last = task.checkpoint(&valid, epoch)?;
        let published = if improved {
            task.published(&valid, &last)?
        } else {
            None
        };
        run_dir
            .commit(EpochCommit {
                last: &last,
                optimizer: &opt,
                best: improved.then_some(published),
                state: RunState {
                    epochs_done: epoch + 1,
                    optimizer_step: opt.step,
                    rng: rng.clone(),
                    best_epoch,
                    best_score: best.primary,
                    best_secondary: best.secondary,
                    metrics_bytes: None,
                },
                state_keys: T::STATE_KEYS,
            })
            .map_err(|e| TrainError::Save {
                epoch,
                run_dir: run_dir.path.clone(),
                source: Box::new(e),
            })?;
        if improved {
            send(
                events,
                TrainEvent::CheckpointSaved {
                    kind: CheckpointKind::Best,
                    path: run_dir.best_path(),
                },
            );
        }
        send(
            events,
            TrainEvent::CheckpointSaved {
                kind: CheckpointKind::Last,
                path: run_dir.last_path(),
            },
        );
        last_metrics = test_m.or(Some(train_m.clone()));
        last_train = Some(train_m);
    }
    let epochs_done = run_dir
        .read_state()
        .map(|s| s.epochs_done)
        .unwrap_or(start_epoch);
    if !stopped {
        send(
            events,
            TrainEvent::Finished {
                // the shared event carries the selection metric; a loss is not an accuracy
                best_accuracy: if T::LOWER_IS_BETTER {
                    0.0
                } else {
                    best.primary.max(0.0)
                },
                best_epoch,
                run_dir: run_dir.path.clone(),
            },
        );
    }
    let best = Score {
        primary: if T::LOWER_IS_BETTER {
            best.primary
        } else {
            best.primary.max(0.0)
        },
        ..best
    };
    task.finish(
        cfg,
        Outcome {
            run_dir,
            epochs_done,
            best_epoch,
            best,
            last: last_metrics,
            last_train,
            stopped,
            trainable_params: trainable,
            total_params: total,
            backend: selected.description,
            device,
        },
    )
}
