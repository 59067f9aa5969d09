//! The run panel: fine-tuning from the app. The app edits [`RunSettings`], starts a run through
//! a [`TrainingLauncher`] (provided by the training engine), drains [`TrainEvent`]s each frame
//! within a small time budget, and plots live curves. The UI thread never blocks on training.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use egui_plot::{Legend, Line, Plot};
use serde::{Deserialize, Serialize};

use crate::train::{ScaleSnapshot, TrainEvent};

/// What a run needs; mirrors the `dapt train` flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// Data set directory or name.
    pub data: String,
    /// `dapt`, `full` or `linear`.
    pub mode: String,
    /// Pretrained checkpoint to start from.
    pub init: Option<PathBuf>,
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    /// Few-shot: at most this many labelled shapes per class (`None`: all).
    pub shots: Option<usize>,
    /// `--recompute-blocks`: recompute each block in backward instead of keeping its
    /// intermediates (DAPT: about half the memory, a third more time per step).
    pub low_memory: bool,
    /// Run directory.
    pub out: Option<PathBuf>,
    /// Checkpoint to resume from.
    pub resume: Option<PathBuf>,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            data: String::new(),
            mode: "dapt".into(),
            init: None,
            epochs: 300,
            lr: 5e-4,
            batch: 32,
            shots: None,
            low_memory: false,
            out: None,
            resume: None,
        }
    }
}

pub const MODES: [&str; 3] = ["dapt", "full", "linear"];

/// A started run: its events and its stop flag (set to stop at the next safe point).
pub struct TrainingHandle {
    pub events: Receiver<TrainEvent>,
    pub stop: Arc<AtomicBool>,
}

/// Starts training runs; provided by the training engine.
pub trait TrainingLauncher: Send + Sync {
    fn start(&self, settings: &RunSettings) -> Result<TrainingHandle, String>;
}

/// Runs `job` on the `dapt-train` thread with the run's event sender and stop flag. A panic
/// in it arrives as [`TrainEvent::Failed`] with the panic's message, so the panel shows the
/// run as failed with it instead of "ended unexpectedly".
pub fn spawn_training(
    job: impl FnOnce(Sender<TrainEvent>, Arc<AtomicBool>) + Send + 'static,
) -> Result<TrainingHandle, String> {
    let (tx, events) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (on_panic, stop_flag) = (tx.clone(), stop.clone());
    super::worker::spawn(
        "dapt-train",
        move || job(tx, stop_flag),
        move |r| {
            if let Err(message) = r {
                let _ = on_panic.send(TrainEvent::Failed { message });
            }
        },
    )
    .map_err(|e| format!("cannot start the training thread: {e}"))?;
    Ok(TrainingHandle { events, stop })
}

#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    Idle,
    Running,
    Stopping,
    Stopped,
    Finished(String),
    Failed(String),
}

/// Plot options, persisted with the UI settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlotSettings {
    /// EMA weight 0..1 (0 = raw).
    pub smoothing: f32,
    pub log_y: bool,
    pub show_train_loss: bool,
    pub show_test_loss: bool,
    pub show_train_acc: bool,
    pub show_test_acc: bool,
}

impl Default for PlotSettings {
    fn default() -> Self {
        Self {
            smoothing: 0.6,
            log_y: false,
            show_train_loss: true,
            show_test_loss: true,
            show_train_acc: true,
            show_test_acc: true,
        }
    }
}

/// Live state of the current (or last) run.
pub struct RunPanel {
    pub settings: RunSettings,
    pub status: RunStatus,
    handle: Option<TrainingHandle>,
    pub backend: String,
    pub total_epochs: usize,
    pub start_epoch: usize,
    /// (epoch, step, steps_per_epoch) of the last step event.
    pub progress: Option<(usize, usize, usize)>,
    pub samples_per_sec: f64,
    started_at: Option<Instant>,
    /// Steps done when the clock started (resumed runs start mid-way).
    pub step_loss: Vec<[f64; 2]>,
    pub step_lr: Vec<[f64; 2]>,
    pub train_loss: Vec<[f64; 2]>,
    pub test_loss: Vec<[f64; 2]>,
    pub train_acc: Vec<[f64; 2]>,
    pub test_acc: Vec<[f64; 2]>,
    /// Latest dynamic-scale snapshot: (epoch, step, snapshot), and a counter bumped on change.
    pub latest_scales: Option<(usize, usize, ScaleSnapshot)>,
    pub scales_generation: u64,
    pub log: Vec<String>,
    pub error: Option<String>,
    /// The directory of the running, last or opened run.
    pub run_dir: Option<PathBuf>,
    /// Its best checkpoint once one exists (from the run's events, or found when opened).
    best_checkpoint: Option<PathBuf>,
    /// Whether the opened run is a pre-training run (it reconstructs instead of classifying).
    pretrain_run: bool,
    /// What the "open run" field holds.
    pub open_path: String,
    /// A checkpoint the user asked to inspect in the viewer; the app takes it.
    pub inspect_request: Option<PathBuf>,
    /// A pre-training run whose model should reconstruct the shown cloud; the app takes it.
    pub reconstruct_request: Option<PathBuf>,
}

impl Default for RunPanel {
    fn default() -> Self {
        Self::new(RunSettings::default())
    }
}

impl RunPanel {
    pub fn new(settings: RunSettings) -> Self {
        Self {
            settings,
            status: RunStatus::Idle,
            handle: None,
            backend: String::new(),
            total_epochs: 0,
            start_epoch: 0,
            progress: None,
            samples_per_sec: 0.0,
            started_at: None,
            step_loss: Vec::new(),
            step_lr: Vec::new(),
            train_loss: Vec::new(),
            test_loss: Vec::new(),
            train_acc: Vec::new(),
            test_acc: Vec::new(),
            latest_scales: None,
            scales_generation: 0,
            log: Vec::new(),
            error: None,
            run_dir: None,
            best_checkpoint: None,
            pretrain_run: false,
            open_path: String::new(),
            inspect_request: None,
            reconstruct_request: None,
        }
    }

    /// Shows a finished or interrupted run from its directory: its epoch curves and state.
    /// An interrupted run becomes the one Start resumes.
    pub fn open_run(&mut self, dir: &std::path::Path) {
        if self.is_active() {
            self.error = Some("stop the current run before opening another".into());
            return;
        }
        match super::run_history::read_run(dir) {
            Err(e) => self.error = Some(format!("could not open the run: {e}")),
            Ok(run) => {
                let settings = self.settings.clone();
                *self = Self::new(settings);
                for p in &run.points {
                    let x = p.epoch as f64 + 1.0;
                    let (loss, acc) = if p.test {
                        (&mut self.test_loss, &mut self.test_acc)
                    } else {
                        (&mut self.train_loss, &mut self.train_acc)
                    };
                    loss.push([x, p.loss]);
                    if let Some(a) = p.accuracy {
                        acc.push([x, a]);
                    }
                }
                for s in &run.skipped {
                    self.log.push(format!("metrics.jsonl {s}: skipped"));
                }
                self.total_epochs = run.total_epochs.unwrap_or(0);
                if !run.finished() && run.epochs_done.is_some() {
                    self.settings.resume = Some(run.dir.clone());
                }
                self.log.push(run.summary());
                self.status = RunStatus::Finished(run.summary());
                self.open_path = run.dir.display().to_string();
                self.best_checkpoint = run.best_checkpoint;
                self.pretrain_run = run.pretrain;
                self.run_dir = Some(run.dir);
            }
        }
    }

    pub fn is_active(&self) -> bool {
        self.handle.is_some()
    }

    /// Starts a run; any previous curves are cleared.
    pub fn start(&mut self, launcher: &dyn TrainingLauncher) {
        let settings = self.settings.clone();
        match launcher.start(&settings) {
            Ok(handle) => {
                *self = Self::new(settings);
                self.handle = Some(handle);
                self.status = RunStatus::Running;
                self.started_at = Some(Instant::now());
            }
            Err(e) => self.error = Some(format!("could not start training: {e}")),
        }
    }

    /// Asks the run to stop at its next safe point (the last checkpoint is saved).
    pub fn request_stop(&mut self) {
        if let Some(h) = &self.handle {
            h.stop.store(true, Ordering::Relaxed);
            self.status = RunStatus::Stopping;
        }
    }

    /// Handles queued events for at most `budget`; returns how many were handled.
    pub fn drain(&mut self, budget: Duration) -> usize {
        let t0 = Instant::now();
        let mut handled = 0;
        while let Some(h) = &self.handle {
            match h.events.try_recv() {
                Ok(ev) => {
                    self.handle_event(ev);
                    handled += 1;
                    if t0.elapsed() >= budget {
                        break;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.handle = None;
                    if matches!(self.status, RunStatus::Running | RunStatus::Stopping) {
                        self.status =
                            RunStatus::Failed("the training thread ended unexpectedly".into());
                    }
                }
            }
        }
        handled
    }

    pub fn handle_event(&mut self, ev: TrainEvent) {
        match ev {
            TrainEvent::Started {
                run_dir,
                backend,
                start_epoch,
                total_epochs,
                steps_per_epoch,
                trainable_params,
                total_params,
            } => {
                self.backend = backend;
                self.start_epoch = start_epoch;
                self.total_epochs = total_epochs;
                self.progress = Some((start_epoch, 0, steps_per_epoch));
                self.started_at = Some(Instant::now());
                self.log.push(format!(
                    "started in {}: {trainable_params} of {total_params} parameters trainable",
                    run_dir.display()
                ));
                self.run_dir = Some(run_dir);
            }
            TrainEvent::Step {
                epoch,
                step,
                steps_per_epoch,
                loss,
                lr,
                samples_per_sec,
                ..
            } => {
                let x = epoch as f64 + step as f64 / steps_per_epoch.max(1) as f64;
                self.step_loss.push([x, loss]);
                self.step_lr.push([x, lr]);
                self.progress = Some((epoch, step, steps_per_epoch));
                self.samples_per_sec = samples_per_sec;
            }
            TrainEvent::Metrics(m) => {
                let x = m.epoch as f64 + 1.0;
                let (loss, acc) = if m.split == "train" {
                    (&mut self.train_loss, &mut self.train_acc)
                } else {
                    (&mut self.test_loss, &mut self.test_acc)
                };
                loss.push([x, m.loss]);
                acc.push([x, m.overall_accuracy]);
            }
            TrainEvent::TokenScales {
                epoch,
                step,
                snapshot,
            } => {
                self.latest_scales = Some((epoch, step, snapshot));
                self.scales_generation += 1;
            }
            TrainEvent::CheckpointSaved { kind, path } => {
                self.log
                    .push(format!("{kind:?} checkpoint saved: {}", path.display()));
                if kind == crate::train::CheckpointKind::Best {
                    self.best_checkpoint = Some(path);
                }
            }
            TrainEvent::Stopped { epoch } => {
                self.status = RunStatus::Stopped;
                self.log.push(format!("stopped at epoch {epoch}"));
                self.handle = None;
            }
            TrainEvent::Finished {
                best_accuracy,
                best_epoch,
                run_dir,
            } => {
                let msg = format!(
                    "best accuracy {:.2} % at epoch {best_epoch} ({})",
                    best_accuracy * 100.0,
                    run_dir.display()
                );
                self.log.push(format!("finished: {msg}"));
                self.status = RunStatus::Finished(msg);
                self.handle = None;
            }
            TrainEvent::Failed { message } => {
                self.log.push(format!("failed: {message}"));
                self.status = RunStatus::Failed(message);
                self.handle = None;
            }
            TrainEvent::Note { message } => self.log.push(message),
        }
    }

    /// Fraction of the run done, and the estimated time left (after a short warm-up).
    pub fn progress_and_eta(&self) -> Option<(f32, Option<Duration>)> {
        let (epoch, step, spe) = self.progress?;
        let total = self.total_epochs.saturating_sub(self.start_epoch) * spe;
        if total == 0 {
            return None;
        }
        let done = (epoch.saturating_sub(self.start_epoch) * spe + step).min(total);
        let frac = done as f32 / total as f32;
        let eta = self.started_at.and_then(|t| {
            let elapsed = t.elapsed().as_secs_f64();
            (done >= 3 && elapsed > 1.0)
                .then(|| Duration::from_secs_f64(elapsed / done as f64 * (total - done) as f64))
        });
        Some((frac, eta))
    }

    /// The panel UI. `launcher` is `None` when no training engine is plugged in.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        launcher: Option<&dyn TrainingLauncher>,
        plot: &mut PlotSettings,
        follow_training: &mut bool,
    ) {
        let running = self.is_active();
        ui.add_enabled_ui(!running, |ui| self.settings_ui(ui));
        ui.horizontal(|ui| {
            let can_start = launcher.is_some() && !running;
            if ui
                .add_enabled(can_start, egui::Button::new("Start"))
                .clicked()
                && let Some(l) = launcher
            {
                self.start(l);
            }
            if ui
                .add_enabled(
                    running && self.status != RunStatus::Stopping,
                    egui::Button::new("Stop"),
                )
                .on_hover_text("stop at the next safe point; the last checkpoint is saved")
                .clicked()
            {
                self.request_stop();
            }
            ui.checkbox(follow_training, "follow training")
                .on_hover_text("show the latest dynamic-scale snapshot in the 3D view");
        });
        if launcher.is_none() {
            ui.weak("no training engine connected");
        }
        ui.add_enabled_ui(!running, |ui| {
            ui.horizontal(|ui| {
                let l = ui.label("run directory");
                ui.add(egui::TextEdit::singleline(&mut self.open_path).desired_width(150.0))
                    .labelled_by(l.id);
                if ui
                    .button("Open run")
                    .on_hover_text("show the curves of a run written by dapt train or this panel")
                    .clicked()
                {
                    let dir = PathBuf::from(self.open_path.trim());
                    self.open_run(&dir);
                }
            });
        });
        // decided from the run's events and files when it started or was opened, not by
        // looking at the disk every frame
        let best = self.best_checkpoint.clone();
        if self.pretrain_run {
            if ui
                .add_enabled(
                    best.is_some(),
                    egui::Button::new("Reconstruct the shown cloud"),
                )
                .on_hover_text(
                    "mask patches as in pre-training and show what the pre-trained model predicts",
                )
                .clicked()
            {
                self.reconstruct_request = self.run_dir.clone();
            }
        } else if ui
            .add_enabled(
                best.is_some(),
                egui::Button::new("Inspect best checkpoint in the viewer"),
            )
            .on_hover_text("load the run's best model: predictions and dynamic scales")
            .clicked()
        {
            self.inspect_request = best;
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        ui.label(format!("status: {}", status_text(&self.status)));
        if let Some((frac, eta)) = self.progress_and_eta() {
            let (epoch, step, spe) = self.progress.unwrap_or_default();
            let eta = eta.map_or("estimating...".to_string(), format_duration);
            ui.add(egui::ProgressBar::new(frac).show_percentage());
            ui.label(format!(
                "epoch {epoch}/{} · step {step}/{spe} · {:.1} samples/s · ETA {eta}",
                self.total_epochs, self.samples_per_sec
            ));
        }
        ui.separator();
        self.curves_ui(ui, plot);
        if !self.log.is_empty() {
            egui::CollapsingHeader::new("run log").show(ui, |ui| {
                for line in self.log.iter().rev().take(20) {
                    ui.small(line);
                }
            });
        }
    }

    fn settings_ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut self.settings;
        egui::Grid::new("run_settings")
            .num_columns(2)
            .show(ui, |ui| {
                let l = ui.label("data");
                ui.text_edit_singleline(&mut s.data).labelled_by(l.id);
                ui.end_row();
                let l = ui.label("mode");
                egui::ComboBox::from_id_salt("run_mode")
                    .selected_text(s.mode.clone())
                    .show_ui(ui, |ui| {
                        for m in MODES {
                            ui.selectable_value(&mut s.mode, m.to_string(), m);
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                path_row(ui, "init", &mut s.init);
                let l = ui.label("epochs");
                ui.add(egui::DragValue::new(&mut s.epochs).range(1..=10_000))
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("lr");
                ui.add(
                    egui::DragValue::new(&mut s.lr)
                        .range(1e-7..=1.0)
                        .speed(1e-5)
                        .max_decimals(7),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("batch");
                ui.add(egui::DragValue::new(&mut s.batch).range(1..=4096))
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("shots per class");
                ui.horizontal(|ui| {
                    let mut few = s.shots.is_some();
                    ui.checkbox(&mut few, "").labelled_by(l.id).on_hover_text(
                        "Few-shot: train on at most this many labelled shapes per class, \
                             drawn with the seed; the test split stays whole",
                    );
                    if few != s.shots.is_some() {
                        s.shots = few.then_some(10);
                    }
                    if let Some(k) = &mut s.shots {
                        ui.add(egui::DragValue::new(k).range(1..=100_000));
                    } else {
                        ui.weak("all");
                    }
                });
                ui.end_row();
                let l = ui.label("low memory");
                ui.checkbox(&mut s.low_memory, "recompute blocks")
                    .labelled_by(l.id)
                    .on_hover_text(
                        "Keep only each transformer block's input and recompute the block in \
                         backward (dapt train --recompute-blocks): DAPT needs about half the \
                         memory, for about a third more time per step; same results",
                    );
                ui.end_row();
                path_row(ui, "out", &mut s.out);
                path_row(ui, "resume", &mut s.resume);
            });
    }

    fn curves_ui(&self, ui: &mut egui::Ui, plot: &mut PlotSettings) {
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut plot.show_train_loss, "train loss");
            ui.checkbox(&mut plot.show_test_loss, "test loss");
            ui.checkbox(&mut plot.show_train_acc, "train acc");
            ui.checkbox(&mut plot.show_test_acc, "test acc");
            ui.checkbox(&mut plot.log_y, "log y");
        });
        ui.add(egui::Slider::new(&mut plot.smoothing, 0.0..=0.99).text("smoothing"));
        let log_y = plot.log_y;
        let ty = move |v: f64| if log_y { v.max(1e-12).log10() } else { v };
        let series = |pts: &[[f64; 2]]| -> Vec<[f64; 2]> {
            decimate(pts, MAX_PLOT_POINTS)
                .into_iter()
                .map(|[x, y]| [x, ty(y)])
                .collect()
        };
        let colors = [
            egui::Color32::from_rgb(31, 119, 180),
            egui::Color32::from_rgb(255, 127, 14),
            egui::Color32::from_rgb(44, 160, 44),
            egui::Color32::from_rgb(214, 39, 40),
        ];
        let smoothing = plot.smoothing as f64;
        let show = [
            plot.show_train_loss,
            plot.show_test_loss,
            plot.show_train_acc,
            plot.show_test_acc,
        ];
        // per-step train loss when there are steps, else per-epoch train loss
        let train_loss = if self.step_loss.is_empty() {
            &self.train_loss
        } else {
            &self.step_loss
        };
        let data: [(&str, &Vec<[f64; 2]>); 4] = [
            ("train loss", train_loss),
            ("test loss", &self.test_loss),
            ("train acc", &self.train_acc),
            ("test acc", &self.test_acc),
        ];
        Plot::new("loss_acc_plot")
            .height(220.0)
            .legend(Legend::default().position(egui_plot::Corner::RightTop))
            .x_axis_label("epoch")
            .y_axis_formatter(move |mark, _| {
                if log_y {
                    format!("{:.3e}", 10f64.powf(mark.value))
                } else {
                    format!("{:.3}", mark.value)
                }
            })
            .show(ui, |plot_ui| {
                for (k, (name, pts)) in data.iter().enumerate() {
                    if !show[k] || pts.is_empty() {
                        continue;
                    }
                    let raw = series(pts);
                    if smoothing > 0.0 {
                        // raw line faint behind the smoothed one
                        // an empty name keeps the raw line out of the legend
                        plot_ui.line(
                            Line::new("", raw.clone())
                                .color(colors[k].gamma_multiply(0.3))
                                .allow_hover(true),
                        );
                        plot_ui.line(Line::new(*name, ema(&raw, smoothing)).color(colors[k]));
                    } else {
                        plot_ui.line(Line::new(*name, raw).color(colors[k]));
                    }
                }
            });
        if !self.step_lr.is_empty() {
            Plot::new("lr_plot")
                .height(90.0)
                .legend(Legend::default())
                .x_axis_label("epoch")
                .show(ui, |plot_ui| {
                    plot_ui.line(Line::new("lr", decimate(&self.step_lr, MAX_PLOT_POINTS)));
                });
        }
    }
}

fn path_row(ui: &mut egui::Ui, label: &str, value: &mut Option<PathBuf>) {
    let l = ui.label(label);
    let mut text = value
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if ui
        .text_edit_singleline(&mut text)
        .labelled_by(l.id)
        .changed()
    {
        *value = (!text.trim().is_empty()).then(|| PathBuf::from(text.trim()));
    }
    ui.end_row();
}

fn status_text(s: &RunStatus) -> String {
    match s {
        RunStatus::Idle => "idle".into(),
        RunStatus::Running => "running".into(),
        RunStatus::Stopping => "stopping at the next safe point...".into(),
        RunStatus::Stopped => "stopped".into(),
        RunStatus::Finished(m) => format!("finished: {m}"),
        RunStatus::Failed(m) => format!("failed: {m}"),
    }
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Points per drawn series; longer series are min-max decimated.
pub const MAX_PLOT_POINTS: usize = 2000;

/// Keeps the first and last point and, per bucket, the min and max (in x order), so spikes
/// survive; returns `pts` unchanged when it is short enough.
pub fn decimate(pts: &[[f64; 2]], max_points: usize) -> Vec<[f64; 2]> {
    if pts.len() <= max_points || max_points < 4 {
        return pts.to_vec();
    }
    let buckets = (max_points - 2) / 2;
    let inner = &pts[1..pts.len() - 1];
    let mut out = Vec::with_capacity(max_points);
    out.push(pts[0]);
    for b in 0..buckets {
        let lo = b * inner.len() / buckets;
        let hi = ((b + 1) * inner.len() / buckets).max(lo + 1);
        let chunk = &inner[lo..hi.min(inner.len())];
        let (mut imin, mut imax) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            if p[1] < chunk[imin][1] {
                imin = i;
            }
            if p[1] > chunk[imax][1] {
                imax = i;
            }
        }
        let (a, b) = if imin <= imax {
            (imin, imax)
        } else {
            (imax, imin)
        };
        out.push(chunk[a]);
        if b != a {
            out.push(chunk[b]);
        }
    }
    out.push(pts[pts.len() - 1]);
    out
}

/// Debiased exponential moving average (TensorBoard's fix for the first-value bias).
pub fn ema(pts: &[[f64; 2]], weight: f64) -> Vec<[f64; 2]> {
    let mut acc = 0.0;
    let mut out = Vec::with_capacity(pts.len());
    for (i, &[x, y]) in pts.iter().enumerate() {
        if !y.is_finite() {
            out.push([x, y]);
            continue;
        }
        acc = acc * weight + (1.0 - weight) * y;
        let debias = 1.0 - weight.powi(i as i32 + 1);
        out.push([x, if debias > 0.0 { acc / debias } else { y }]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::EpochMetrics;
    use std::sync::mpsc;

    #[test]
    fn ema_is_debiased_and_decimation_keeps_extremes() {
        let flat: Vec<[f64; 2]> = (0..10).map(|i| [i as f64, 5.0]).collect();
        assert!(ema(&flat, 0.9).iter().all(|p| (p[1] - 5.0).abs() < 1e-9));
        let mut long: Vec<[f64; 2]> = (0..100_000).map(|i| [i as f64, 1.0]).collect();
        long[54_321][1] = 100.0;
        let d = decimate(&long, MAX_PLOT_POINTS);
        assert!(d.len() <= MAX_PLOT_POINTS);
        assert!(d.iter().any(|p| p[1] == 100.0), "the spike survives");
        assert_eq!(d.first(), long.first());
        assert_eq!(d.last(), long.last());
        assert!(d.windows(2).all(|w| w[0][0] <= w[1][0]));
    }

    struct Fake;
    impl TrainingLauncher for Fake {
        fn start(&self, _: &RunSettings) -> Result<TrainingHandle, String> {
            let (tx, rx) = mpsc::channel();
            let stop = Arc::new(AtomicBool::new(false));
            tx.send(TrainEvent::Started {
                run_dir: "runs/x".into(),
                backend: "test".into(),
                start_epoch: 0,
                total_epochs: 2,
                steps_per_epoch: 10,
                trainable_params: 1,
                total_params: 2,
            })
            .unwrap();
            for s in 0..10 {
                tx.send(TrainEvent::Step {
                    epoch: 0,
                    step: s + 1,
                    steps_per_epoch: 10,
                    loss: 1.0 / (s + 1) as f64,
                    accuracy: Some(0.5),
                    lr: 1e-3,
                    samples_per_sec: 100.0,
                })
                .unwrap();
            }
            tx.send(TrainEvent::Metrics(EpochMetrics {
                epoch: 0,
                split: "test".into(),
                wall_secs: 1.0,
                lr: 1e-3,
                loss: 0.5,
                overall_accuracy: 0.8,
                mean_class_accuracy: 0.7,
                instance_miou: None,
                class_miou: None,
            }))
            .unwrap();
            std::mem::forget(tx); // keep the channel open like a live run
            Ok(TrainingHandle { events: rx, stop })
        }
    }

    #[test]
    fn events_fill_curves_progress_and_stop_sets_the_flag() {
        let mut p = RunPanel::default();
        p.start(&Fake);
        assert_eq!(p.status, RunStatus::Running);
        p.drain(Duration::from_millis(50));
        assert_eq!(p.step_loss.len(), 10);
        assert_eq!(p.test_acc, vec![[1.0, 0.8]]);
        let (frac, _) = p.progress_and_eta().unwrap();
        assert!((frac - 0.5).abs() < 1e-6);
        let stop = p.handle.as_ref().unwrap().stop.clone();
        p.request_stop();
        assert!(stop.load(Ordering::Relaxed));
        assert_eq!(p.status, RunStatus::Stopping);
    }
}
