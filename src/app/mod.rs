//! The desktop app (eframe on wgpu): a 3D point view with colouring, legends and hover
//! inspection, model predictions and dynamic-scale heatmaps, and a run panel for fine-tuning.
//!
//! The model and the training engine plug in through [`Analyzer`] and [`TrainingLauncher`];
//! both run off the UI thread. See docs/ux.md for the feature list this follows.

pub mod adapters;
pub mod analysis;
pub mod colouring;
pub mod dataset_browser;
pub mod file_dialog;
pub mod keymap;
pub mod loader;
pub mod model_hook;
mod pick;
pub mod run_history;
pub mod scene;
mod screenshot;
pub mod training;
mod view3d;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use analysis::{Analyzer, BlockSelect, CloudAnalysis, PointReduction, ScaleData};
pub use colouring::{ColourBy, ColourSettings, Legend, RangeMode};
pub use keymap::{Action, KEYMAP, KeyBinding};
pub use scene::{LayerKind, LayerSettings};
pub use screenshot::difference_matte;
pub use training::{
    PlotSettings, RunPanel, RunSettings, RunStatus, TrainingHandle, TrainingLauncher,
};
pub use view3d::VIEW_BACKGROUND;

use crate::data::PointCloud;
use crate::render::{Camera, Colormap, PointData, UpAxis};

/// How the app is started.
#[derive(Default)]
pub struct AppOptions {
    /// Clouds to open at start.
    pub files: Vec<PathBuf>,
    /// The model; `None` shows "no model loaded".
    pub analyzer: Option<Arc<dyn Analyzer>>,
    /// The training engine; `None` disables Start in the run panel.
    pub launcher: Option<Arc<dyn TrainingLauncher>>,
    /// Close after this many frames (smoke tests).
    pub max_frames: Option<u64>,
    /// Save a PNG of the window here after the first frames, then exit.
    pub screenshot: Option<PathBuf>,
    /// Where `P` saves screenshots (`None`: the current directory).
    pub screenshot_dir: Option<PathBuf>,
    /// Where UI settings are loaded from and saved to (`None`: defaults, not saved).
    pub settings_path: Option<PathBuf>,
    /// Use this wgpu setup (e.g. burn's device, rust-stack.md §1) instead of a new one.
    pub wgpu_setup: Option<egui_wgpu::WgpuSetup>,
    /// A message to show at start (e.g. why the checkpoint could not be loaded).
    pub startup_message: Option<String>,
    /// Start with this colouring instead of the saved one (`dapt view --colour-by`).
    pub colour_by: Option<ColourBy>,
    /// Start with patch centres shown.
    pub show_centers: bool,
    /// Start with view-only screenshots (the 3D view without panels).
    pub screenshot_view_only: bool,
    /// Start with transparent-background screenshots.
    pub screenshot_transparent: bool,
    /// Start with these layers shown instead of the saved ones.
    pub layers: Option<LayerSettings>,
}

/// UI settings that survive restarts; `#[serde(default)]` so old files still load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UiSettings {
    pub colours: ColourSettings,
    /// Point radius in UI points.
    pub point_radius: f32,
    pub up: UpAxis,
    pub show_legend: bool,
    pub show_centers: bool,
    pub plot: PlotSettings,
    pub follow_training: bool,
    pub run: RunSettings,
    pub last_dir: Option<PathBuf>,
    /// Screenshots (`P`) of the 3D view alone, without panels: figures for papers.
    pub screenshot_view_only: bool,
    /// Point size in world units (points shrink with distance) instead of pixels.
    pub point_size_world: bool,
    /// The world-space point radius used when `point_size_world` is on.
    pub point_radius_world: f32,
    /// The scene tree's layer visibility.
    pub layers: LayerSettings,
    /// Screenshots of the 3D view with a transparent background (implies view-only).
    pub screenshot_transparent: bool,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            colours: ColourSettings::default(),
            point_radius: 2.5,
            up: UpAxis::PlusY,
            show_legend: true,
            show_centers: false,
            plot: PlotSettings::default(),
            follow_training: true,
            run: RunSettings::default(),
            last_dir: None,
            screenshot_view_only: false,
            point_size_world: false,
            point_radius_world: 0.01,
            layers: LayerSettings::default(),
            screenshot_transparent: false,
        }
    }
}

impl UiSettings {
    pub fn load(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, path)
    }
}

/// `$XDG_CONFIG_HOME/dapt/ui.json` (or `~/.config/dapt/ui.json`).
pub fn default_settings_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("dapt").join("ui.json"))
}

#[derive(Clone, Debug)]
pub enum AnalysisState {
    /// No analyzer.
    None,
    Pending,
    Done(Box<CloudAnalysis>),
    Failed(String),
}

/// A cloud open in the app.
pub struct OpenCloud {
    pub id: u64,
    pub name: String,
    pub cloud: Arc<PointCloud>,
    positions: Arc<Vec<[f32; 3]>>,
    pub analysis: AnalysisState,
    scales: Option<ScaleData>,
}

impl OpenCloud {
    pub fn analysis(&self) -> Option<&CloudAnalysis> {
        match &self.analysis {
            AnalysisState::Done(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideTab {
    Viewer,
    Run,
}

/// What the colours were computed from; recolour when it changes.
#[derive(Clone, Debug, PartialEq)]
struct ColourKey {
    source: (u64, u64),
    analysis_done: bool,
    settings: ColourSettings,
    layers: LayerSettings,
    up: UpAxis,
}

type AnalysisResult = (u64, Result<CloudAnalysis, String>);
/// What a background job delivers to the UI thread.
enum JobOutput {
    Model(PathBuf, Result<Arc<dyn Analyzer>, String>),
    /// (name of the reconstructed cloud, its reconstruction)
    Reconstruction(String, Result<PointCloud, String>),
}

/// A job the UI does not wait for: loading a model, reconstructing a cloud.
struct BackgroundJob {
    /// What is shown while it runs, e.g. "loading best.safetensors".
    label: String,
    /// The job's output, or the message of its panic.
    rx: Receiver<Result<JobOutput, String>>,
}

/// (scales generation, cloud, its positions, its scales) of the latest training snapshot.
type TrainingView = (u64, Arc<PointCloud>, Arc<Vec<[f32; 3]>>, ScaleData);

pub struct StudioApp {
    analyzer: Option<Arc<dyn Analyzer>>,
    launcher: Option<Arc<dyn TrainingLauncher>>,
    pub settings: UiSettings,
    settings_path: Option<PathBuf>,
    pub clouds: Vec<OpenCloud>,
    pub current: Option<usize>,
    next_id: u64,
    pub camera: Camera,
    camera_fitted: bool,
    /// Messages shown as dismissible banners (load errors name the file).
    pub messages: Vec<String>,
    pub help_open: bool,
    pub tab: SideTab,
    pub run: RunPanel,
    file_dialog: file_dialog::FileDialog,
    /// The data-set browser (split, class filter, index).
    pub dataset: dataset_browser::DatasetBrowser,
    analysis_tx: Sender<AnalysisResult>,
    analysis_rx: Receiver<AnalysisResult>,
    // colouring cache
    colour_key: Option<ColourKey>,
    point_data: PointData,
    generation: u64,
    colouring: Option<Arc<colouring::Colouring>>,
    /// The drawn layers; `point_data` holds their concatenated positions and colours.
    scene: scene::Scene,
    /// What the drawn positions were built from (cloud and layer layout).
    positions_key: Option<((u64, u64), Vec<LayerKind>)>,
    /// The direction of the row of copies (the camera's right axis when it was laid out).
    copy_axis: [f32; 3],
    /// Frame the whole scene after the next colouring (set by a camera reset).
    frame_after_colouring: bool,
    /// The snapshot cloud shown while following training.
    training_view: Option<TrainingView>,
    // hover picking
    hover: view3d::HoverState,
    /// Screen buckets of the projected points, rebuilt when the camera or data change.
    pick_grid: std::cell::RefCell<Option<pick::PickGrid>>,
    screenshots: screenshot::Screenshots,
    pub frame: u64,
    /// Where the 3D view was drawn last frame (UI points), for view-only screenshots.
    view_rect: Option<egui::Rect>,
    max_frames: Option<u64>,
    /// The running background job, one at a time.
    background: Option<BackgroundJob>,
    /// A backbone and the adapters switched on top of it.
    pub adapters: adapters::AdapterPanel,
}

impl StudioApp {
    pub fn new(options: AppOptions) -> Self {
        let settings = options
            .settings_path
            .as_deref()
            .map(UiSettings::load)
            .unwrap_or_default();
        let (analysis_tx, analysis_rx) = channel();
        let mut app = Self {
            analyzer: options.analyzer,
            launcher: options.launcher,
            run: RunPanel::new(settings.run.clone()),
            settings,
            settings_path: options.settings_path,
            clouds: Vec::new(),
            current: None,
            next_id: 1,
            camera: Camera::default(),
            camera_fitted: false,
            messages: options.startup_message.into_iter().collect(),
            help_open: false,
            tab: SideTab::Viewer,
            file_dialog: file_dialog::FileDialog::default(),
            dataset: dataset_browser::DatasetBrowser::default(),
            analysis_tx,
            analysis_rx,
            colour_key: None,
            point_data: PointData::default(),
            generation: 0,
            colouring: None,
            scene: scene::Scene::default(),
            positions_key: None,
            copy_axis: [1.0, 0.0, 0.0],
            frame_after_colouring: false,
            training_view: None,
            hover: Default::default(),
            pick_grid: Default::default(),
            screenshots: screenshot::Screenshots::new(options.screenshot, options.screenshot_dir),
            frame: 0,
            view_rect: None,
            max_frames: options.max_frames,
            background: None,
            adapters: adapters::AdapterPanel::default(),
        };
        if let Some(c) = options.colour_by {
            app.settings.colours.colour_by = c;
        }
        if options.show_centers {
            app.settings.show_centers = true;
        }
        if options.screenshot_view_only {
            app.settings.screenshot_view_only = true;
        }
        if options.screenshot_transparent {
            app.settings.screenshot_transparent = true;
        }
        if let Some(layers) = options.layers {
            app.settings.layers = layers;
        }
        app.camera.up = app.settings.up;
        for f in options.files {
            app.open_file(&f);
        }
        app
    }

    pub fn has_analyzer(&self) -> bool {
        self.analyzer.is_some()
    }

    /// Opens a file; a failure becomes a message naming the file, never a panic.
    pub fn open_file(&mut self, path: &Path) {
        if adapters::is_model_file(path) {
            if let Some(checkpoint) = self.adapters.open_path(path) {
                self.load_model(checkpoint);
            }
            return;
        }
        match loader::load_cloud(path) {
            Ok(cloud) => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string());
                self.add_cloud(name, cloud);
                if let Some(dir) = path.parent() {
                    self.settings.last_dir = Some(dir.to_path_buf());
                }
            }
            Err(e) => self
                .messages
                .push(format!("could not open {}: {e}", path.display())),
        }
    }

    /// Adds a cloud, makes it current and starts its analysis on a worker thread.
    pub fn add_cloud(&mut self, name: String, cloud: PointCloud) {
        let id = self.next_id;
        self.next_id += 1;
        let cloud = Arc::new(cloud);
        let analysis = self.spawn_analysis(id, &cloud);
        self.clouds.push(OpenCloud {
            id,
            name,
            positions: Arc::new(cloud.positions.clone()),
            cloud,
            analysis,
            scales: None,
        });
        self.current = Some(self.clouds.len() - 1);
        if !self.camera_fitted {
            self.reset_camera();
        }
    }

    /// Runs the analyzer on `cloud` on a worker thread; the result arrives tagged with `id`.
    fn spawn_analysis(&self, id: u64, cloud: &Arc<PointCloud>) -> AnalysisState {
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

    fn poll_background(&mut self) {
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
    fn set_analyzer(&mut self, a: Arc<dyn Analyzer>) {
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

    pub fn current_cloud(&self) -> Option<&OpenCloud> {
        self.current.and_then(|i| self.clouds.get(i))
    }

    /// True once no analysis is running.
    pub fn analyses_settled(&self) -> bool {
        !self
            .clouds
            .iter()
            .any(|c| matches!(c.analysis, AnalysisState::Pending))
    }

    pub fn select_offset(&mut self, delta: isize) {
        let n = self.clouds.len() as isize;
        if n == 0 {
            return;
        }
        let cur = self.current.unwrap_or(0) as isize;
        self.current = Some((cur + delta).rem_euclid(n) as usize);
    }

    /// Default orientation, framing the shown cloud; several shown copies are laid out again
    /// facing the new view and framed together once coloured.
    pub fn reset_camera(&mut self) {
        self.camera.up = self.settings.up;
        if let Some(p) = self.display_positions().filter(|p| !p.is_empty()) {
            self.camera.reset(&p);
            self.camera_fitted = true;
            self.copy_axis = self.camera.view_axes().0;
            self.frame_after_colouring = true;
            if self.scene.slots.len() > 1 {
                // rebuild the row along the new right axis
                self.colour_key = None;
                self.positions_key = None;
            }
        }
    }

    /// Frames the drawn scene keeping the orientation, leaving room on the right for the
    /// legends drawn over the view.
    fn frame_scene(&mut self) {
        self.camera.fit(&self.point_data.positions);
        if let Some(rect) = self.view_rect
            && self.settings.show_legend
            && rect.width() > 400.0
        {
            const LEGEND_W: f32 = 190.0;
            let w = rect.width();
            self.camera.zoom(w / (w - LEGEND_W));
            self.camera.pan(-LEGEND_W * 0.5, 0.0, rect.height());
        }
    }

    fn following_training(&self) -> bool {
        self.settings.follow_training && self.run.latest_scales.is_some()
    }

    fn display_positions(&self) -> Option<Arc<Vec<[f32; 3]>>> {
        if self.following_training() {
            return self.training_view.as_ref().map(|t| t.2.clone());
        }
        self.current_cloud().map(|c| c.positions.clone())
    }

    pub fn apply(&mut self, action: Action, ctx: &egui::Context) {
        let s = &mut self.settings;
        match action {
            Action::ToggleHelp => self.help_open = !self.help_open,
            Action::ResetCamera => self.reset_camera(),
            Action::Screenshot => self.request_screenshot(ctx, None),
            Action::PointSizeUp if s.point_size_world => {
                s.point_radius_world = (s.point_radius_world * 1.25).min(0.2)
            }
            Action::PointSizeDown if s.point_size_world => {
                s.point_radius_world = (s.point_radius_world / 1.25).max(0.0005)
            }
            Action::PointSizeUp => s.point_radius = (s.point_radius * 1.25).min(40.0),
            Action::PointSizeDown => s.point_radius = (s.point_radius / 1.25).max(0.5),
            Action::NextCloud => self.select_offset(1),
            Action::PreviousCloud => self.select_offset(-1),
            Action::CycleColormap => s.colours.colormap = s.colours.colormap.next(),
            Action::ToggleLegend => s.show_legend = !s.show_legend,
            Action::ColourByRgb => s.colours.colour_by = ColourBy::Rgb,
            Action::ColourByHeight => s.colours.colour_by = ColourBy::Height,
            Action::ColourByTruth => s.colours.colour_by = ColourBy::Truth,
            Action::ColourByPrediction => s.colours.colour_by = ColourBy::Prediction,
            Action::ColourByError => s.colours.colour_by = ColourBy::Error,
            Action::ColourByScale => s.colours.colour_by = ColourBy::Scale,
        }
    }

    fn poll_analyses(&mut self) {
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

    fn update_training_view(&mut self) {
        let Some((_, _, snap)) = &self.run.latest_scales else {
            self.training_view = None;
            return;
        };
        let gen_ = self.run.scales_generation;
        if self.training_view.as_ref().map(|t| t.0) == Some(gen_) {
            return;
        }
        let positions = Arc::new(snap.points.clone());
        let cloud = Arc::new(PointCloud::from_positions(snap.points.clone()));
        let first = self.training_view.is_none();
        self.training_view = Some((gen_, cloud, positions, ScaleData::from(snap)));
        // frame the snapshot once; later snapshots never move the camera (ux.md #5)
        if first && self.settings.follow_training && !self.camera_fitted {
            self.reset_camera();
        }
    }

    /// Recomputes colours when the data or the colour settings changed.
    fn update_colours(&mut self) {
        let following = self.following_training();
        let (source, cloud, positions, analysis, scales) = if following {
            let Some((g, cloud, pos, scales)) = &self.training_view else {
                return;
            };
            (
                (0, *g),
                cloud.clone(),
                pos.clone(),
                None,
                Some(scales.clone()),
            )
        } else {
            let Some(c) = self.current_cloud() else {
                self.point_data = PointData::default();
                self.colouring = None;
                self.colour_key = None;
                self.scene = scene::Scene::default();
                self.positions_key = None;
                return;
            };
            (
                (c.id, 0),
                c.cloud.clone(),
                c.positions.clone(),
                c.analysis().cloned(),
                c.scales.clone(),
            )
        };
        let key = ColourKey {
            source,
            analysis_done: analysis.is_some(),
            settings: self.settings.colours.clone(),
            layers: self.settings.layers.clone(),
            up: self.settings.up,
        };
        if self.colour_key.as_ref() == Some(&key) {
            return;
        }
        let names = analysis
            .as_ref()
            .map(|a| a.class_names.clone())
            .unwrap_or_default();
        let inputs = colouring::ColourInputs {
            cloud: &cloud,
            analysis: analysis.as_ref(),
            scales: scales.as_ref(),
            up: self.settings.up,
            class_names: &names,
        };
        let (mut scene, main) = scene::compose(
            &inputs,
            &positions,
            &self.settings.layers,
            &mut self.settings.colours,
            self.copy_axis,
        );
        self.generation += 1;
        let positions_key = (source, scene::layout_of(&scene));
        // a camera reset asked for the scene to be framed once it is built
        let mut refit = std::mem::take(&mut self.frame_after_colouring) && scene.slots.len() > 1;
        if self.positions_key.as_ref() != Some(&positions_key) {
            // copies shown or hidden on the same cloud: lay the row out facing the viewer and
            // frame it. New data (another cloud, a training snapshot) never moves the camera
            // and keeps the row where it was (ux.md #5).
            if self.positions_key.as_ref().is_some_and(|k| k.0 == source) && scene.slots.len() > 1 {
                self.copy_axis = self.camera.view_axes().0;
                scene.place(&positions, self.copy_axis);
                refit = true;
            }
            self.point_data.positions = scene.positions.clone();
            self.point_data.positions_generation = self.generation;
            self.positions_key = Some(positions_key);
        }
        self.point_data.colors = Arc::new(std::mem::take(&mut scene.colors));
        self.point_data.colors_generation = self.generation;
        self.colouring = Some(main);
        self.scene = scene;
        self.colour_key = Some(ColourKey {
            settings: self.settings.colours.clone(),
            ..key
        });
        if refit {
            self.frame_scene();
        }
    }

    /// The whole UI; eframe's `App::ui` and the kittest harness both call this.
    pub fn ui_root(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.frame += 1;
        self.poll_analyses();
        self.poll_background();
        let adapted = self.adapters.poll();
        self.messages.extend(adapted.messages);
        if let Some(a) = adapted.analyzer {
            self.set_analyzer(a);
        }
        self.run.drain(Duration::from_millis(4));
        self.update_training_view();
        self.handle_dropped_files(&ctx);
        if !ctx.egui_wants_keyboard_input() {
            let actions = ctx.input(keymap::pressed_actions);
            for a in actions {
                self.apply(a, &ctx);
            }
        }
        if self.settings.up != self.camera.up {
            self.camera.up = self.settings.up;
        }
        self.update_colours();
        self.start_pending_screenshot(&ctx);

        egui::Panel::left("side_panel")
            .resizable(true)
            .default_size(340.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.side_panel_ui(ui));
            });
        egui::CentralPanel::default()
            .frame(egui::Frame::NONE)
            .show(ui, |ui| self.view_ui(ui));

        keymap::help_ui(&ctx, &mut self.help_open);
        self.adapters.windows_ui(&ctx);
        if let Some(path) = self.file_dialog.ui(&ctx) {
            self.open_file(&path);
        }

        self.poll_screenshot(&ctx);
        if self.run.is_active()
            || !self.analyses_settled()
            || self.background.is_some()
            || self.adapters.busy()
        {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        if let Some(max) = self.max_frames {
            if self.frame >= max {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            } else {
                ctx.request_repaint();
            }
        }
    }

    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for path in dropped {
            self.open_file(&path);
        }
    }

    fn side_panel_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tab, SideTab::Viewer, "Viewer");
            ui.selectable_value(&mut self.tab, SideTab::Run, "Run");
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("?").on_hover_text("controls (H)").clicked() {
                    self.help_open = !self.help_open;
                }
            });
        });
        ui.separator();
        match self.tab {
            SideTab::Viewer => self.viewer_tab_ui(ui),
            SideTab::Run => {
                let launcher = self.launcher.clone();
                self.run.ui(
                    ui,
                    launcher.as_deref(),
                    &mut self.settings.plot,
                    &mut self.settings.follow_training,
                );
                self.settings.run = self.run.settings.clone();
                if let Some(ckpt) = self.run.inspect_request.take() {
                    self.load_model(ckpt);
                    self.tab = SideTab::Viewer;
                }
                if let Some(dir) = self.run.reconstruct_request.take() {
                    self.reconstruct_current(dir);
                    self.tab = SideTab::Viewer;
                }
            }
        }
    }

    fn viewer_tab_ui(&mut self, ui: &mut egui::Ui) {
        egui::CollapsingHeader::new("Files")
            .default_open(true)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    if ui.button("Open...").clicked() {
                        self.file_dialog.open_at(self.settings.last_dir.clone());
                    }
                    if ui.button("< Prev").clicked() {
                        self.select_offset(-1);
                    }
                    if ui.button("Next >").clicked() {
                        self.select_offset(1);
                    }
                });
                if self.clouds.is_empty() {
                    ui.weak("drop PLY / TXT / NPY / OFF / OBJ files on the window");
                }
                let mut select = None;
                let mut close = None;
                for (i, c) in self.clouds.iter().enumerate() {
                    ui.horizontal(|ui| {
                        let text = format!("{} ({} pts)", c.name, c.cloud.len());
                        if ui.selectable_label(self.current == Some(i), text).clicked() {
                            select = Some(i);
                        }
                        if ui.small_button("x").on_hover_text("close").clicked() {
                            close = Some(i);
                        }
                    });
                }
                if let Some(i) = select {
                    self.current = Some(i);
                }
                if let Some(i) = close {
                    self.clouds.remove(i);
                    self.current = if self.clouds.is_empty() {
                        None
                    } else {
                        Some(self.current.unwrap_or(0).min(self.clouds.len() - 1))
                    };
                }
            });
        egui::CollapsingHeader::new("Scene")
            .default_open(true)
            .show(ui, |ui| self.scene_ui(ui));
        let shown = egui::CollapsingHeader::new("Data set")
            .default_open(false)
            .show(ui, |ui| self.dataset.ui(ui))
            .body_returned
            .flatten()
            .or_else(|| self.dataset.poll());
        if let Some((name, cloud)) = shown {
            // one slot for the browsed sample: replace the previous one instead of piling up
            if let Some(i) = self
                .clouds
                .iter()
                .position(|c| c.name.starts_with("[set] "))
            {
                self.clouds.remove(i);
            }
            self.add_cloud(format!("[set] {name}"), cloud);
        }
        egui::CollapsingHeader::new("Backbone and adapters")
            .default_open(true)
            .show(ui, |ui| {
                self.adapters.ui(ui, self.settings.last_dir.as_deref());
            });
        egui::CollapsingHeader::new("Prediction")
            .default_open(true)
            .show(ui, |ui| self.prediction_ui(ui));
        egui::CollapsingHeader::new("Colour")
            .default_open(true)
            .show(ui, |ui| self.colour_ui(ui));
        egui::CollapsingHeader::new("Dynamic scales")
            .default_open(true)
            .show(ui, |ui| self.scales_ui(ui));
    }

    fn prediction_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(job) = &self.background {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("{} ...", job.label));
            });
        }
        let Some(analyzer) = &self.analyzer else {
            ui.label("no model loaded");
            ui.weak("start with --checkpoint to see predictions and dynamic scales");
            return;
        };
        ui.weak(format!("model: {}", analyzer.name()));
        let Some(c) = self.current_cloud() else {
            ui.weak("open a cloud to run the model");
            return;
        };
        match &c.analysis {
            AnalysisState::None => {}
            AnalysisState::Pending => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("analysing...");
                });
            }
            AnalysisState::Failed(e) => {
                ui.colored_label(ui.visuals().error_fg_color, format!("analysis failed: {e}"));
            }
            AnalysisState::Done(a) => {
                let truth = c.cloud.class_label;
                egui::Grid::new("topk").num_columns(2).show(ui, |ui| {
                    for (k, p) in a.top_k(5) {
                        let name = a
                            .class_names
                            .get(k)
                            .cloned()
                            .unwrap_or_else(|| format!("class {k}"));
                        let marker = if truth == Some(k) { " (truth)" } else { "" };
                        ui.label(format!("{name}{marker}"));
                        ui.add(
                            egui::ProgressBar::new(p.clamp(0.0, 1.0))
                                .desired_width(120.0)
                                .text(format!("{:.1} %", p * 100.0)),
                        );
                        ui.end_row();
                    }
                });
            }
        }
    }

    fn colour_ui(&mut self, ui: &mut egui::Ui) {
        // the cloud the colouring reads: a followed training snapshot has no scalar fields
        let shown = (!self.following_training())
            .then(|| self.current_cloud())
            .flatten()
            .map(|c| &*c.cloud);
        let fields = colouring::scalar_menu(shown);
        let selected = colouring::mode_label(&self.settings.colours, shown);
        let shown_field = shown
            .and_then(|c| colouring::shown_scalar(c, &self.settings.colours))
            .map(|f| f.name.clone());
        let s = &mut self.settings;
        egui::ComboBox::from_label("Colour by")
            .selected_text(selected)
            // every mode and field in view at once: a scrolled popup hides the scalar fields
            .height(600.0)
            .show_ui(ui, |ui| {
                for c in ColourBy::ALL {
                    ui.selectable_value(&mut s.colours.colour_by, c, c.label());
                }
                for name in fields {
                    let on = s.colours.colour_by == ColourBy::Scalar
                        && shown_field.as_deref() == Some(name.as_str());
                    let text = colouring::scalar_mode_label(&name);
                    if ui.selectable_label(on, text).clicked() {
                        s.colours.colour_by = ColourBy::Scalar;
                        s.colours.scalar_field = Some(name);
                    }
                }
            });
        egui::ComboBox::from_label("Colormap")
            .selected_text(s.colours.colormap.name())
            .show_ui(ui, |ui| {
                for c in Colormap::ALL {
                    ui.selectable_value(&mut s.colours.colormap, c, c.name());
                }
            });
        let before = s.colours.range_mode;
        egui::ComboBox::from_label("Range")
            .selected_text(s.colours.range_mode.label())
            .show_ui(ui, |ui| {
                for r in RangeMode::ALL {
                    ui.selectable_value(&mut s.colours.range_mode, r, r.label());
                }
            });
        if s.colours.range_mode != before {
            if s.colours.range_mode == RangeMode::Locked {
                // lock what is shown now
                s.colours.locked_range = match self.colouring.as_ref().map(|c| &c.legend) {
                    Some(Legend::Colorbar { range, .. }) => Some(*range),
                    _ => None,
                };
            }
            if s.colours.range_mode == RangeMode::Manual
                && let Some(Legend::Colorbar { range, .. }) =
                    self.colouring.as_ref().map(|c| &c.legend)
            {
                s.colours.manual_range = *range;
            }
        }
        match s.colours.range_mode {
            RangeMode::Manual => {
                ui.horizontal(|ui| {
                    let l = ui.label("min");
                    ui.add(egui::DragValue::new(&mut s.colours.manual_range.0).speed(0.01))
                        .labelled_by(l.id);
                    let l = ui.label("max");
                    ui.add(egui::DragValue::new(&mut s.colours.manual_range.1).speed(0.01))
                        .labelled_by(l.id);
                });
            }
            RangeMode::Locked => {
                if let Some((lo, hi)) = s.colours.locked_range {
                    ui.weak(format!("locked at {lo:.4} ... {hi:.4}"));
                }
            }
            _ => {}
        }
        ui.checkbox(&mut s.point_size_world, "point size in world units");
        if s.point_size_world {
            // a fixed, logarithmic range: never derived from a raw bounding box (one outlier
            // would make the slider useless)
            ui.add(
                egui::Slider::new(&mut s.point_radius_world, 0.0005..=0.2)
                    .logarithmic(true)
                    .text("point radius (world)"),
            );
        } else {
            ui.add(egui::Slider::new(&mut s.point_radius, 0.5..=20.0).text("point size (px)"));
        }
        egui::ComboBox::from_label("Up axis")
            .selected_text(s.up.label())
            .show_ui(ui, |ui| {
                for u in UpAxis::ALL {
                    ui.selectable_value(&mut s.up, u, u.label());
                }
            });
        ui.checkbox(&mut s.show_legend, "show colorbar / legend");
        ui.checkbox(&mut s.screenshot_view_only, "screenshots (P): 3D view only")
            .on_hover_text(
                "crop P screenshots to the 3D view (with its legend), without the panels",
            );
        ui.checkbox(
            &mut s.screenshot_transparent,
            "screenshots (P): transparent background",
        )
        .on_hover_text("the 3D view alone, background alpha 0 (for figures)");
        if let Some(note) = self.colouring.as_ref().and_then(|c| c.note.clone()) {
            ui.weak(note);
        }
    }

    fn scales_ui(&mut self, ui: &mut egui::Ui) {
        let scales = self.shown_scales().cloned();
        let s = &mut self.settings;
        let blocks = scales.as_ref().map_or(0, |s| s.num_blocks());
        egui::ComboBox::from_label("Block")
            .selected_text(s.colours.block.label())
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut s.colours.block, BlockSelect::Mean, "mean over blocks");
                ui.selectable_value(&mut s.colours.block, BlockSelect::Max, "max over blocks");
                for b in 0..blocks.max(12) {
                    ui.selectable_value(
                        &mut s.colours.block,
                        BlockSelect::Block(b),
                        format!("block {b}"),
                    );
                }
            });
        egui::ComboBox::from_label("Onto points")
            .selected_text(s.colours.reduction.label())
            .show_ui(ui, |ui| {
                for r in PointReduction::ALL {
                    ui.selectable_value(&mut s.colours.reduction, r, r.label());
                }
            });
        if ui.button("colour by patch membership").clicked() {
            s.colours.colour_by = ColourBy::Patch;
        }
        let Some(scales) = scales else {
            ui.weak(
                if self.analyzer.is_none() && self.run.latest_scales.is_none() {
                    "no model loaded"
                } else {
                    "no scales yet"
                },
            );
            return;
        };
        let prompts = scales.prompt_values(s.colours.block);
        ui.label(format!(
            "{} blocks · {} patches · {} prompts",
            blocks,
            scales.centers.len(),
            prompts.len()
        ));
        egui::CollapsingHeader::new("prompt and cls scales")
            .default_open(false)
            .show(ui, |ui| {
                egui::Grid::new("prompt_cls").striped(true).show(ui, |ui| {
                    ui.strong("block");
                    ui.strong("cls");
                    ui.strong("prompts");
                    ui.end_row();
                    for b in 0..blocks {
                        ui.label(b.to_string());
                        ui.label(scales.cls.get(b).map_or("-".into(), |v| format!("{v:.3}")));
                        let p = scales.prompts.get(b).map_or(String::new(), |row| {
                            row.iter()
                                .map(|v| format!("{v:.2}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        });
                        ui.label(p);
                        ui.end_row();
                    }
                });
            });
    }

    /// Saves the settings (best effort).
    pub fn save_settings(&self) {
        if let Some(path) = &self.settings_path
            && let Err(e) = self.settings.save(path)
        {
            log::warn!("could not save UI settings to {}: {e}", path.display());
        }
    }
}

struct EframeApp(StudioApp);

impl eframe::App for EframeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.0.ui_root(ui);
    }

    fn on_exit(&mut self) {
        self.0.save_settings();
    }
}

/// Opens the app window and runs until it is closed.
pub fn run_app(mut options: AppOptions) -> anyhow::Result<()> {
    let mut wgpu_options = egui_wgpu::WgpuConfiguration::default();
    if let Some(setup) = options.wgpu_setup.take() {
        wgpu_options.wgpu_setup = setup;
    }
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("DAPT Studio")
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        ..Default::default()
    };
    eframe::run_native(
        "DAPT Studio",
        native,
        Box::new(move |cc| {
            let rs = cc
                .wgpu_render_state
                .as_ref()
                .ok_or("the wgpu renderer is not available")?;
            crate::render::install(rs);
            Ok(Box::new(EframeApp(StudioApp::new(options))))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the app window failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip() {
        // old or partial settings files still load (serde default)
        let s: UiSettings = serde_json::from_str(r#"{"point_radius": 4.0}"#).unwrap();
        assert_eq!(s.point_radius, 4.0);
        assert_eq!(s.colours, ColourSettings::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ui.json");
        s.save(&path).unwrap();
        assert_eq!(UiSettings::load(&path), s);
        assert_eq!(
            UiSettings::load(&dir.path().join("missing.json")),
            UiSettings::default()
        );
    }
}
