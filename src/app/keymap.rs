//! Controls as data: one table binds keys to actions; the same table drives the input
//! handling and the help overlay (`H`), so the two cannot drift apart (ux.md #19).

/// Everything a key can do in the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    ToggleHelp,
    ResetCamera,
    Screenshot,
    PointSizeUp,
    PointSizeDown,
    NextCloud,
    PreviousCloud,
    CycleColormap,
    ToggleLegend,
    ColourByRgb,
    ColourByHeight,
    ColourByTruth,
    ColourByPrediction,
    ColourByError,
    ColourByScale,
}

pub struct KeyBinding {
    pub key: egui::Key,
    /// How the key is written in the help overlay.
    pub key_label: &'static str,
    pub action: Action,
    pub description: &'static str,
}

const fn bind(
    key: egui::Key,
    key_label: &'static str,
    action: Action,
    description: &'static str,
) -> KeyBinding {
    KeyBinding {
        key,
        key_label,
        action,
        description,
    }
}

use egui::Key as K;

/// The key table. Several keys may map to one action (`+` and `=`).
pub const KEYMAP: &[KeyBinding] = &[
    bind(K::H, "H", Action::ToggleHelp, "show / hide this help"),
    bind(
        K::R,
        "R",
        Action::ResetCamera,
        "reset the camera to fit the cloud",
    ),
    bind(
        K::P,
        "P",
        Action::Screenshot,
        "save a screenshot (PNG, current directory)",
    ),
    bind(K::Plus, "+", Action::PointSizeUp, "larger points"),
    bind(K::Equals, "=", Action::PointSizeUp, "larger points"),
    bind(K::Minus, "-", Action::PointSizeDown, "smaller points"),
    bind(K::N, "N", Action::NextCloud, "next open cloud"),
    bind(K::B, "B", Action::PreviousCloud, "previous open cloud"),
    bind(K::C, "C", Action::CycleColormap, "cycle the colormap"),
    bind(
        K::L,
        "L",
        Action::ToggleLegend,
        "show / hide colorbar and legend",
    ),
    bind(K::Num1, "1", Action::ColourByRgb, "colour by RGB"),
    bind(K::Num2, "2", Action::ColourByHeight, "colour by height"),
    bind(
        K::Num3,
        "3",
        Action::ColourByTruth,
        "colour by ground-truth class / part",
    ),
    bind(
        K::Num4,
        "4",
        Action::ColourByPrediction,
        "colour by predicted class / part",
    ),
    bind(
        K::Num5,
        "5",
        Action::ColourByError,
        "colour by error (correct vs wrong)",
    ),
    bind(
        K::Num6,
        "6",
        Action::ColourByScale,
        "colour by dynamic scale",
    ),
];

/// Mouse controls, listed in the help overlay (handled in the 3D view).
pub const MOUSE_HELP: &[(&str, &str)] = &[
    ("left drag", "orbit (turntable)"),
    ("right / middle drag, shift + left drag", "pan"),
    ("wheel", "zoom"),
    ("ctrl + wheel", "point size"),
    ("double-click a point", "orbit around that point"),
    (
        "hover a point",
        "inspect index, coordinates, labels, patch, scale",
    ),
];

/// Actions whose key was pressed this frame (without ctrl/alt/cmd), in table order.
pub fn pressed_actions(input: &egui::InputState) -> Vec<Action> {
    let m = input.modifiers;
    if m.ctrl || m.alt || m.command || m.mac_cmd {
        return Vec::new();
    }
    let mut out = Vec::new();
    for b in KEYMAP {
        if input.key_pressed(b.key) && !out.contains(&b.action) {
            out.push(b.action);
        }
    }
    out
}

/// (keys, description) rows of the help overlay: keys sharing an action are merged.
pub fn help_rows() -> Vec<(String, &'static str)> {
    let mut rows: Vec<(String, &'static str, Action)> = Vec::new();
    for b in KEYMAP {
        if let Some(row) = rows.iter_mut().find(|r| r.2 == b.action) {
            row.0.push_str(" / ");
            row.0.push_str(b.key_label);
        } else {
            rows.push((b.key_label.to_string(), b.description, b.action));
        }
    }
    let mut out: Vec<(String, &'static str)> = rows.into_iter().map(|r| (r.0, r.1)).collect();
    out.extend(MOUSE_HELP.iter().map(|(k, d)| (k.to_string(), *d)));
    out
}

/// The help overlay window.
pub fn help_ui(ctx: &egui::Context, open: &mut bool) {
    egui::Window::new("Controls")
        .open(open)
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
        .show(ctx, |ui| {
            egui::Grid::new("help_grid").striped(true).show(ui, |ui| {
                for (keys, description) in help_rows() {
                    ui.monospace(keys);
                    ui.label(description);
                    ui.end_row();
                }
            });
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_a_key_and_keys_are_unique() {
        let mut keys: Vec<egui::Key> = KEYMAP.iter().map(|b| b.key).collect();
        let n = keys.len();
        keys.sort_by_key(|k| k.name());
        keys.dedup();
        assert_eq!(keys.len(), n, "a key is bound twice");
        let rows = help_rows();
        assert!(rows.iter().any(|(k, _)| k == "+ / ="));
        for b in KEYMAP {
            assert!(
                rows.iter()
                    .any(|(k, d)| k.contains(b.key_label) && *d == b.description)
            );
        }
    }
}
