//! The UI settings that survive restarts and where they are kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ColourSettings, LayerSettings, PlotSettings, RunSettings};
use crate::render::UpAxis;

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

    /// Writes the settings as JSON; a crash mid-save leaves the previous file (the directory
    /// is created when missing).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::atomic_file::write(path, text.as_bytes())
    }
}

/// `$XDG_CONFIG_HOME/dapt/ui.json` (or `~/.config/dapt/ui.json`).
pub fn default_settings_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("dapt").join("ui.json"))
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
        // saved again over the old file: only ui.json is left, no temporary beside it
        s.save(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ui.json"]);
    }
}
