//! Work the UI does not wait for: each open cloud's analysis, and the one background job at
//! a time (loading a model, reconstructing a cloud). Both run on [`super::worker`] threads
//! and are polled once a frame.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use super::{Analyzer, CloudAnalysis, ColourBy, StudioApp, model_hook, worker};
use crate::data::PointCloud;

#[derive(Clone, Debug)]
pub enum AnalysisState {
    /// No analyzer.
    None,
    Pending,
    Done(Box<CloudAnalysis>),
    Failed(String),
}

pub(super) type AnalysisResult = (u64, Result<CloudAnalysis, String>);

/// What a background job delivers to the UI thread.
enum JobOutput {
    Model(PathBuf, Result<Arc<dyn Analyzer>, String>),
    /// (name of the reconstructed cloud, its reconstruction)
    Reconstruction(String, Result<PointCloud, String>),
}

/// A job the UI does not wait for: loading a model, reconstructing a cloud.
pub(super) struct BackgroundJob {
    /// What is shown while it runs, e.g. "loading best.safetensors".
    pub(super) label: String,
    /// The job's output, or the message of its panic.
    rx: Receiver<Result<JobOutput, String>>,
}

impl StudioApp {
    /// Runs the analyzer on `cloud` on a worker thread; the result arrives tagged with `id`.
    pub(super) fn spawn_analysis(&self, id: u64, cloud: &Arc<PointCloud>) -> AnalysisState {
        let Some(a) = &self.analyzer else {
            return AnalysisState::None;
        };
        let (a, c, tx) = (a.clone(), cloud.clone(), self.analysis_tx.clone());
        // a panicking analyzer fails this cloud's analysis like an error it returned
        let spawned = worker::spawn(
            "dapt-analyze",
            move || a.analyze(&c),
            move |result| {
                let _ = tx.send((id, result.and_then(|r| r)));
            },
        );
        match spawned {
            Ok(_) => AnalysisState::Pending,
            Err(e) => AnalysisState::Failed(format!("could not start analysis: {e}")),
        }
    }

    /// Runs `job` on a worker thread; its output is taken by [`Self::poll_background`].
    fn spawn_job(&mut self, label: String, job: impl FnOnce() -> JobOutput + Send + 'static) {
        if let Some(running) = &self.background {
            self.messages.push(format!(
                "{label}: wait until {} has finished",
                running.label
            ));
            return;
        }
        let (tx, rx) = channel();
        let spawned = worker::spawn("dapt-job", job, move |output| {
            let _ = tx.send(output);
        });
        match spawned {
            Ok(_) => self.background = Some(BackgroundJob { label, rx }),
            Err(e) => self.messages.push(format!("could not start {label}: {e}")),
        }
    }

    /// Loads a checkpoint as the model on a worker thread; once loaded it replaces the current
    /// model and every open cloud is analysed again. Failures become a message.
    pub fn load_model(&mut self, checkpoint: PathBuf) {
        let label = format!("loading {}", checkpoint.display());
        self.spawn_job(label, move || {
            let r = model_hook::analyzer_from_checkpoint(&checkpoint, None)
                .map_err(|e| format!("{e:#}"));
            JobOutput::Model(checkpoint, r)
        });
    }

    /// Reconstructs the shown cloud with a pre-training run's best model on a worker thread
    /// and opens the result: visible patches grey, predicted red, masked truth blue.
    pub fn reconstruct_current(&mut self, run_dir: PathBuf) {
        let Some(c) = self.current_cloud() else {
            self.messages.push("open a cloud to reconstruct".into());
            return;
        };
        let (name, cloud) = (c.name.clone(), c.cloud.clone());
        self.spawn_job(format!("reconstructing {name}"), move || {
            let device = crate::backend::select(crate::backend::BackendChoice::Auto).device;
            let r = crate::train::reconstruct::Reconstructor::open(&run_dir, &device, 0)
                .and_then(|mut r| r.reconstruct(&cloud.positions))
                .map_err(|e| e.to_string());
            JobOutput::Reconstruction(name, r)
        });
    }

    /// A background job that panics with `message`, as a bug in a loader would: the only way
    /// for a test to reach the panic path of [`Self::load_model`]'s worker.
    #[doc(hidden)]
    pub fn spawn_panicking_job(&mut self, label: &str, message: &'static str) {
        self.spawn_job(label.to_string(), move || -> JobOutput {
            panic!("{message}")
        });
    }

    /// True while a background job (model load, reconstruction) runs.
    pub fn background_busy(&self) -> bool {
        self.background.is_some()
    }

    pub(super) fn poll_background(&mut self) {
        let Some(job) = &self.background else {
            return;
        };
        let output = match job.rx.try_recv() {
            Ok(Ok(o)) => o,
            Ok(Err(panic)) => {
                let label = job.label.clone();
                self.background = None;
                self.messages.push(format!("{label} failed: {panic}"));
                return;
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => return,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                let label = job.label.clone();
                self.background = None;
                self.messages
                    .push(format!("{label}: the worker thread ended unexpectedly"));
                return;
            }
        };
        self.background = None;
        match output {
            JobOutput::Model(path, Err(e)) => self
                .messages
                .push(format!("could not load the model {}: {e}", path.display())),
            JobOutput::Model(_, Ok(a)) => {
                self.adapters.model_replaced();
                self.set_analyzer(a);
            }
            JobOutput::Reconstruction(name, Err(e)) => self
                .messages
                .push(format!("could not reconstruct {name}: {e}")),
            JobOutput::Reconstruction(name, Ok(cloud)) => {
                self.add_cloud(format!("[reconstruction] {name}"), cloud);
                self.settings.colours.colour_by = ColourBy::Rgb;
                self.messages.push(format!(
                    "reconstruction of {name}: grey {}, red {}, blue {}",
                    crate::train::reconstruct::PART_NAMES[0],
                    crate::train::reconstruct::PART_NAMES[1],
                    crate::train::reconstruct::PART_NAMES[2]
                ));
            }
        }
    }

    /// Makes `a` the model and analyses every open cloud again.
    pub(super) fn set_analyzer(&mut self, a: Arc<dyn Analyzer>) {
        self.messages.push(format!("model loaded: {}", a.name()));
        self.analyzer = Some(a);
        let clouds: Vec<(u64, Arc<PointCloud>)> = self
            .clouds
            .iter()
            .map(|c| (c.id, c.cloud.clone()))
            .collect();
        for (id, cloud) in clouds {
            let state = self.spawn_analysis(id, &cloud);
            if let Some(c) = self.clouds.iter_mut().find(|c| c.id == id) {
                c.analysis = state;
                c.scales = None;
            }
        }
        // recolour with the new results as they arrive
        self.colour_key = None;
    }

    pub(super) fn poll_analyses(&mut self) {
        while let Ok((id, result)) = self.analysis_rx.try_recv() {
            if let Some(c) = self.clouds.iter_mut().find(|c| c.id == id) {
                match result {
                    Ok(a) => {
                        c.scales = Some(a.scales());
                        c.analysis = AnalysisState::Done(Box::new(a));
                    }
                    Err(e) => {
                        self.messages
                            .push(format!("analysis of {} failed: {e}", c.name));
                        c.analysis = AnalysisState::Failed(e);
                    }
                }
            }
        }
    }
}
