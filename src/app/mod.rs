//! The desktop app (eframe on wgpu): a 3D point view with colouring, legends and hover
//! inspection, model predictions and dynamic-scale heatmaps, and a run panel for fine-tuning.
//!
//! The model and the training engine plug in through [`Analyzer`] and [`TrainingLauncher`];
//! both run off the UI thread. See docs/ux.md for the feature list this follows.
//!
//! This file holds the app's state ([`StudioApp`]) and its frame loop ([`StudioApp::ui_root`]);
//! the rest lives in one module per concern.

pub mod adapters;
pub mod analysis;
pub mod colouring;
pub mod dataset_browser;
pub mod file_dialog;
mod jobs;
pub mod keymap;
pub mod loader;
pub mod model_hook;
pub mod native;
mod pick;
mod recolour;
pub mod run_history;
pub mod scene;
mod screenshot;
mod settings;
mod side_panel;
pub mod training;
mod view3d;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

pub use analysis::{Analyzer, BlockSelect, CloudAnalysis, PointReduction, ScaleData};
pub use colouring::{ColourBy, ColourSettings, Legend, RangeMode};
pub use jobs::AnalysisState;
pub use keymap::{Action, KEYMAP, KeyBinding};
pub use native::run_app;
pub use scene::{LayerKind, LayerSettings};
pub use screenshot::difference_matte;
pub use settings::{UiSettings, default_settings_path};
pub use training::{
    PlotSettings, RunPanel, RunSettings, RunStatus, TrainingHandle, TrainingLauncher,
};
pub use view3d::VIEW_BACKGROUND;

use crate::data::PointCloud;
use crate::render::{Camera, PointData};
use jobs::{AnalysisResult, BackgroundJob};
use recolour::{ColourKey, TrainingView};

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

    /// Saves the settings (best effort).
    pub fn save_settings(&self) {
        if let Some(path) = &self.settings_path
            && let Err(e) = self.settings.save(path)
        {
            log::warn!("could not save UI settings to {}: {e}", path.display());
        }
    }
}
