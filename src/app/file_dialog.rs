//! A small in-app file browser (no native dialog dependency): lists directories and supported
//! point-cloud files; click a directory to enter it, a file to open it.

use std::path::{Path, PathBuf};

use super::loader::is_supported;

#[derive(Default)]
pub struct FileDialog {
    pub open: bool,
    dir: PathBuf,
    entries: Vec<(PathBuf, bool)>,
    path_text: String,
    error: Option<String>,
}

impl FileDialog {
    pub fn open_at(&mut self, dir: Option<PathBuf>) {
        let dir = dir
            .filter(|d| d.is_dir())
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        self.open = true;
        self.set_dir(dir);
    }

    fn set_dir(&mut self, dir: PathBuf) {
        (self.entries, self.error) = match list_dir(&dir, is_supported) {
            Ok(entries) => (entries, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        self.path_text = dir.display().to_string();
        self.dir = dir;
    }

    /// Shows the dialog when open; returns a file the user chose.
    pub fn ui(&mut self, ctx: &egui::Context) -> Option<PathBuf> {
        if !self.open {
            return None;
        }
        let mut chosen = None;
        let mut go_to: Option<PathBuf> = None;
        let mut open = self.open;
        egui::Window::new("Open point cloud")
            .open(&mut open)
            .default_size([420.0, 380.0])
            .show(ctx, |ui| {
                ui.horizontal(|ui| {
                    if ui.button("Up").clicked()
                        && let Some(parent) = self.dir.parent()
                    {
                        go_to = Some(parent.to_path_buf());
                    }
                    let edit = ui.text_edit_singleline(&mut self.path_text);
                    if edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                        let p = PathBuf::from(self.path_text.trim());
                        if p.is_dir() {
                            go_to = Some(p);
                        } else {
                            chosen = Some(p);
                        }
                    }
                });
                ui.weak("PLY, TXT, NPY, OFF, OBJ");
                if let Some(e) = &self.error {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                let (dir, file) = entries_ui(ui, &self.entries);
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
        self.open = open && chosen.is_none();
        chosen
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The folder listing of a picker: folders marked `[dir]`; returns the folder clicked (to go
/// into) or the file clicked (chosen). Shared by every file picker of the app.
pub fn entries_ui(
    ui: &mut egui::Ui,
    entries: &[(PathBuf, bool)],
) -> (Option<PathBuf>, Option<PathBuf>) {
    let (mut go_to, mut chosen) = (None, None);
    egui::ScrollArea::vertical().show(ui, |ui| {
        for (p, is_dir) in entries {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let label = if *is_dir {
                format!("[dir] {name}")
            } else {
                name
            };
            if ui.selectable_label(false, label).clicked() {
                if *is_dir {
                    go_to = Some(p.clone());
                } else {
                    chosen = Some(p.clone());
                }
            }
        }
    });
    (go_to, chosen)
}

/// The entries a picker lists in `dir`: its folders and the files `keep` accepts, hidden ones
/// left out, folders first, then by name. The error says which folder could not be read.
pub fn list_dir(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<(PathBuf, bool)>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut entries = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let is_dir = p.is_dir();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && (is_dir || keep(&p)) {
            entries.push((p, is_dir));
        }
    }
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(entries)
}
