//! Backbone + adapters in the viewer: one Point-MAE backbone, read once and kept in memory,
//! and any number of runs' `adapter.safetensors` files, one of them active. Choosing another
//! adapter assembles its model from the cached backbone tensors and the adapter's own
//! (`model::load::assemble_classifier` / `assemble_partseg`, the same calls as
//! `dapt predict --backbone --adapter`) on a worker thread; neither file is read again.
//!
//! The panel never blocks the UI thread and never panics on a user's file: reading, checking
//! and assembling happen on workers, and every failure becomes a message for the app's
//! banner list, naming the files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError, channel};

use super::analysis::Analyzer;
use crate::model::load::{ADAPTER_KIND, Adapter, Backbone, PARTSEG_ADAPTER_KIND, peek_native_meta};

/// Extensions of model files (checkpoints, backbones, adapters).
pub const MODEL_EXTENSIONS: [&str; 3] = ["safetensors", "pth", "pt"];

/// Whether `path` names a model file rather than a point cloud.
pub fn is_model_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MODEL_EXTENSIONS.iter().any(|m| m.eq_ignore_ascii_case(e)))
}

/// `parent/file`: adapters are all called `adapter.safetensors`, their run directory tells
/// them apart.
pub fn display_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    match path.parent().and_then(|p| p.file_name()) {
        Some(dir) => format!("{}/{file}", dir.to_string_lossy()),
        None => file,
    }
}

enum BackboneSlot {
    None,
    Loading(PathBuf, Receiver<Result<Backbone, String>>),
    Ready(Arc<Backbone>),
}

enum EntryState {
    Loading(Receiver<Result<Adapter, String>>),
    Ready(Arc<Adapter>),
    Failed(String),
}

/// One opened adapter file.
pub struct AdapterEntry {
    id: u64,
    pub path: PathBuf,
    pub name: String,
    state: EntryState,
}

impl AdapterEntry {
    pub fn is_ready(&self) -> bool {
        matches!(self.state, EntryState::Ready(_))
    }
    /// Why the file could not be read as an adapter.
    pub fn error(&self) -> Option<&str> {
        match &self.state {
            EntryState::Failed(e) => Some(e),
            _ => None,
        }
    }
}

type Built = Result<Arc<dyn Analyzer>, String>;
/// Builds a model from a backbone and an adapter (a seam, so the panel holds no model code).
type Assemble = Arc<dyn Fn(&Backbone, &Adapter) -> Built + Send + Sync>;

/// What the panel hands to the app after a poll.
#[derive(Default)]
pub struct PanelOutput {
    /// A newly assembled model to make the app's analyzer.
    pub analyzer: Option<Arc<dyn Analyzer>>,
    pub messages: Vec<String>,
}

/// Which file the picker window is choosing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PickFor {
    Backbone,
    Adapter,
}

#[derive(Default)]
struct Picker {
    purpose: Option<PickFor>,
    dir: PathBuf,
    entries: Vec<(PathBuf, bool)>,
    error: Option<String>,
}

impl Picker {
    fn open(&mut self, purpose: PickFor, dir: PathBuf) {
        self.purpose = Some(purpose);
        self.set_dir(dir);
    }

    fn set_dir(&mut self, dir: PathBuf) {
        (self.entries, self.error) = match super::file_dialog::list_dir(&dir, is_model_file) {
            Ok(entries) => (entries, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        self.dir = dir;
    }

    fn ui(&mut self, ctx: &egui::Context) -> Option<(PickFor, PathBuf)> {
        let purpose = self.purpose?;
        let title = match purpose {
            PickFor::Backbone => "Open backbone",
            PickFor::Adapter => "Open adapter",
        };
        let mut open = true;
        let mut chosen = None;
        let mut go_to = None;
        egui::Window::new(title)
            .open(&mut open)
            .default_size([420.0, 360.0])
            .show(ctx, |ui| {
                ui.horizontal(|ui| {
                    if ui.button("Up").clicked()
                        && let Some(parent) = self.dir.parent()
                    {
                        go_to = Some(parent.to_path_buf());
                    }
                    ui.label(self.dir.display().to_string());
                });
                ui.weak(match purpose {
                    PickFor::Backbone => {
                        "pretrain.pth, backbone.safetensors, or a checkpoint holding the backbone"
                    }
                    PickFor::Adapter => "a run's adapter.safetensors",
                });
                if let Some(e) = &self.error {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                let (dir, file) = super::file_dialog::entries_ui(ui, &self.entries);
                if dir.is_some() {
                    go_to = dir;
                }
                if file.is_some() {
                    chosen = file;
                }
            });
        if let Some(d) = go_to {
            self.set_dir(d);
        }
        if !open || chosen.is_some() {
            self.purpose = None;
        }
        chosen.map(|p| (purpose, p))
    }
}

/// The "Backbone and adapters" panel and its state.
pub struct AdapterPanel {
    backbone: BackboneSlot,
    pub adapters: Vec<AdapterEntry>,
    next_id: u64,
    /// The adapter the user chose.
    selected: Option<u64>,
    /// The adapter whose model is the app's analyzer.
    active: Option<u64>,
    /// A model being assembled: (adapter id, result).
    building: Option<(u64, Receiver<Built>)>,
    /// A path typed into the panel.
    pub path_text: String,
    picker: Picker,
    pending_messages: Vec<String>,
    /// How the model is assembled (the app's: [`super::model_hook::analyzer_from_adapter`]).
    assemble: Assemble,
}

impl Default for AdapterPanel {
    fn default() -> Self {
        Self {
            backbone: BackboneSlot::None,
            adapters: Vec::new(),
            next_id: 1,
            selected: None,
            active: None,
            building: None,
            path_text: String::new(),
            picker: Picker::default(),
            pending_messages: Vec::new(),
            assemble: Arc::new(|b, a| {
                super::model_hook::analyzer_from_adapter(b, a).map_err(|e| format!("{e:#}"))
            }),
        }
    }
}

/// Runs `job` on a worker; a panic in it arrives as its error.
fn spawn<T: Send + 'static>(
    name: &str,
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Receiver<Result<T, String>> {
    let (tx, rx) = channel();
    // a failed spawn drops `tx`: the receiver reports Disconnected and the poll says so
    let _ = super::worker::spawn(name, job, move |r| {
        let _ = tx.send(r.and_then(|r| r));
    });
    rx
}

impl AdapterPanel {
    /// Reads `path` as the backbone on a worker thread; once read, the selected adapter (if
    /// any) is assembled on it.
    pub fn open_backbone(&mut self, path: PathBuf) {
        let p = path.clone();
        let rx = spawn("dapt-backbone", move || {
            Backbone::read(&p).map_err(|e| e.to_string())
        });
        self.backbone = BackboneSlot::Loading(path, rx);
        // the model in use was built on the previous backbone: rebuild the selection on
        // this one, and drop an assembly still running on the old one
        self.active = None;
        self.building = None;
    }

    /// Reads `path` as an adapter on a worker thread and selects it.
    pub fn open_adapter(&mut self, path: PathBuf) {
        if let Some(e) = self.adapters.iter().find(|e| e.path == path) {
            self.selected = Some(e.id);
            return;
        }
        let p = path.clone();
        let rx = spawn("dapt-adapter", move || {
            Adapter::read(&p).map_err(|e| e.to_string())
        });
        let id = self.next_id;
        self.next_id += 1;
        self.adapters.push(AdapterEntry {
            id,
            name: display_name(&path),
            path,
            state: EntryState::Loading(rx),
        });
        self.selected = Some(id);
    }

    /// Opens a dropped or chosen model file by what its metadata says: an adapter joins the
    /// list, a backbone replaces the backbone. A full fine-tuned native checkpoint is
    /// returned for the app to load as its model, as before.
    pub fn open_path(&mut self, path: &Path) -> Option<PathBuf> {
        let kind = peek_native_meta(path)
            .and_then(|m| m.get("kind").and_then(|k| k.as_str()).map(str::to_string));
        match kind.as_deref() {
            Some(ADAPTER_KIND | PARTSEG_ADAPTER_KIND) => self.open_adapter(path.to_path_buf()),
            Some("classifier" | "partseg") => return Some(path.to_path_buf()),
            _ => self.open_backbone(path.to_path_buf()),
        }
        None
    }

    /// The app loaded a full checkpoint as its model: no adapter is in use any more.
    pub fn model_replaced(&mut self) {
        self.active = None;
        self.selected = None;
        self.building = None;
    }

    /// Makes the `index`-th adapter of the list the selected one; its model replaces the
    /// app's once assembled.
    pub fn select(&mut self, index: usize) {
        if let Some(e) = self.adapters.get(index) {
            self.selected = Some(e.id);
        }
    }

    pub fn backbone_path(&self) -> Option<&Path> {
        match &self.backbone {
            BackboneSlot::None => None,
            BackboneSlot::Loading(p, _) => Some(p),
            BackboneSlot::Ready(b) => Some(&b.path),
        }
    }

    pub fn backbone_ready(&self) -> bool {
        matches!(self.backbone, BackboneSlot::Ready(_))
    }

    /// The adapter whose model the app is using.
    pub fn active_adapter(&self) -> Option<&Path> {
        let id = self.active?;
        self.adapters
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.path.as_path())
    }

    /// Index in the list of the adapter the user selected.
    pub fn selected_index(&self) -> Option<usize> {
        let id = self.selected?;
        self.adapters.iter().position(|e| e.id == id)
    }

    /// True while a file is read or a model assembled, or the selection is not yet in use.
    pub fn busy(&self) -> bool {
        matches!(self.backbone, BackboneSlot::Loading(..))
            || self.building.is_some()
            || self
                .adapters
                .iter()
                .any(|e| matches!(e.state, EntryState::Loading(_)))
            || (self.backbone_ready() && self.wanted_ready().is_some())
    }

    /// The selected adapter, read and not yet the active one.
    fn wanted_ready(&self) -> Option<(u64, Arc<Adapter>)> {
        let id = self.selected?;
        if self.active == Some(id) {
            return None;
        }
        match &self.adapters.iter().find(|e| e.id == id)?.state {
            EntryState::Ready(a) => Some((id, a.clone())),
            _ => None,
        }
    }

    /// Collects finished reads and assemblies; starts assembling the selected adapter when
    /// it and the backbone are ready. Call once a frame.
    pub fn poll(&mut self) -> PanelOutput {
        let mut out = PanelOutput {
            messages: std::mem::take(&mut self.pending_messages),
            ..PanelOutput::default()
        };
        if let BackboneSlot::Loading(path, rx) = &self.backbone {
            match rx.try_recv() {
                Ok(Ok(b)) => {
                    out.messages.push(format!(
                        "backbone loaded: {} ({} tensors)",
                        display_name(&b.path),
                        b.tensors.len()
                    ));
                    self.backbone = BackboneSlot::Ready(Arc::new(b));
                }
                Ok(Err(e)) => {
                    out.messages.push(format!(
                        "could not load the backbone {}: {e}",
                        path.display()
                    ));
                    self.backbone = BackboneSlot::None;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    out.messages.push(format!(
                        "could not load the backbone {}: the worker thread ended unexpectedly",
                        path.display()
                    ));
                    self.backbone = BackboneSlot::None;
                }
            }
        }
        for e in &mut self.adapters {
            if let EntryState::Loading(rx) = &e.state {
                let r = match rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => continue,
                    Err(TryRecvError::Disconnected) => {
                        Err("the worker thread ended unexpectedly".into())
                    }
                };
                e.state = match r {
                    Ok(a) => EntryState::Ready(Arc::new(a)),
                    Err(msg) => {
                        out.messages.push(format!(
                            "could not open the adapter {}: {msg}",
                            e.path.display()
                        ));
                        if self.selected == Some(e.id) {
                            self.selected = self.active;
                        }
                        EntryState::Failed(msg)
                    }
                };
            }
        }
        if let Some((id, rx)) = &self.building {
            let id = *id;
            let r = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    Some(Err("the worker thread ended unexpectedly".into()))
                }
            };
            if let Some(r) = r {
                self.building = None;
                match r {
                    Ok(a) => {
                        self.active = Some(id);
                        out.analyzer = Some(a);
                    }
                    Err(e) => {
                        out.messages.push(e);
                        // back to the model in use (unless another was chosen meanwhile);
                        // choosing the adapter again retries
                        if self.selected == Some(id) {
                            self.selected = self.active;
                        }
                    }
                }
            }
        }
        if self.building.is_none()
            && let BackboneSlot::Ready(b) = &self.backbone
            && let Some((id, adapter)) = self.wanted_ready()
        {
            let (b, assemble) = (b.clone(), self.assemble.clone());
            self.building = Some((id, spawn("dapt-assemble", move || assemble(&b, &adapter))));
        }
        out
    }

    /// The panel: backbone, the adapter list (click one to use it), open buttons.
    pub fn ui(&mut self, ui: &mut egui::Ui, last_dir: Option<&Path>) {
        let start_dir = || {
            last_dir
                .map(Path::to_path_buf)
                .filter(|d| d.is_dir())
                .or_else(|| std::env::current_dir().ok())
                .unwrap_or_else(|| PathBuf::from("."))
        };
        ui.horizontal(|ui| {
            match &self.backbone {
                BackboneSlot::None => ui.weak("no backbone"),
                BackboneSlot::Loading(p, _) => {
                    ui.spinner();
                    ui.label(format!("reading {} ...", display_name(p)))
                }
                BackboneSlot::Ready(b) => ui
                    .label(format!("backbone: {}", display_name(&b.path)))
                    .on_hover_text(b.path.display().to_string()),
            };
        });
        ui.horizontal(|ui| {
            if ui.button("Open backbone...").clicked() {
                self.picker.open(PickFor::Backbone, start_dir());
            }
            if ui.button("Open adapter...").clicked() {
                self.picker.open(PickFor::Adapter, start_dir());
            }
        });
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut self.path_text)
                    .hint_text("path to a backbone or adapter")
                    .desired_width(200.0),
            );
            if ui.button("Open").clicked() && !self.path_text.trim().is_empty() {
                let p = PathBuf::from(self.path_text.trim());
                if let Some(ckpt) = self.open_path(&p) {
                    self.pending_messages.push(format!(
                        "{}: a full checkpoint, not a backbone or adapter; drop it on the window to use it as the model",
                        ckpt.display()
                    ));
                }
            }
        });
        if self.adapters.is_empty() {
            ui.weak("open a backbone, then one or more runs' adapter.safetensors (or drop them on the window)");
        }
        let mut choose = None;
        let mut close = None;
        for (i, e) in self.adapters.iter().enumerate() {
            ui.horizontal(|ui| {
                let is_selected = self.selected == Some(e.id);
                let mut text = e.name.clone();
                if let EntryState::Ready(a) = &e.state
                    && let Some(ep) = a.epoch
                {
                    text.push_str(&format!(" (epoch {ep})"));
                }
                let r = ui.selectable_label(is_selected, text);
                let r = match &e.state {
                    EntryState::Loading(_) => r.on_hover_text("reading..."),
                    EntryState::Failed(msg) => r.on_hover_text(msg.as_str()),
                    EntryState::Ready(a) => r.on_hover_text(format!(
                        "{}\ntrained on {}",
                        e.path.display(),
                        a.init
                            .as_ref()
                            .map_or("a randomly initialised backbone".into(), |p| p
                                .display()
                                .to_string())
                    )),
                };
                if r.clicked() {
                    choose = Some(i);
                }
                if self.active == Some(e.id) {
                    ui.weak("in use");
                } else if self.building.as_ref().is_some_and(|(id, _)| *id == e.id) {
                    ui.spinner();
                } else if e.error().is_some() {
                    ui.colored_label(ui.visuals().error_fg_color, "unreadable");
                }
                if ui.small_button("x").on_hover_text("close").clicked() {
                    close = Some(i);
                }
            });
        }
        if let Some(i) = choose {
            self.select(i);
            if !self.backbone_ready() && self.backbone_path().is_none() {
                self.pending_messages
                    .push("open a backbone first: adapters are applied on top of one".into());
            }
        }
        if let Some(i) = close {
            let e = self.adapters.remove(i);
            if self.selected == Some(e.id) {
                self.selected = self.active.filter(|&a| a != e.id);
            }
            // the app keeps the model it has; nothing in the list is marked as in use
            if self.active == Some(e.id) {
                self.active = None;
            }
        }
    }

    /// The picker window (drawn whatever panel is shown).
    pub fn windows_ui(&mut self, ctx: &egui::Context) {
        match self.picker.ui(ctx) {
            Some((PickFor::Backbone, p)) => self.open_backbone(p),
            Some((PickFor::Adapter, p)) => self.open_adapter(p),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_panicking_read_arrives_as_its_error() {
        let rx = spawn("dapt-adapter", || -> Result<(), String> {
            panic!("bad tensor")
        });
        let r = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(
            r,
            Ok(Err("internal error in dapt-adapter: bad tensor".into()))
        );
    }
}
