//! The scene tree (ux.md #13): what the 3D view draws, as layers with visibility toggles.
//!
//! One point cloud can be shown several times at once: as itself (coloured by the chosen
//! quantity), and as copies coloured by ground truth, prediction and errors. Shown copies sit
//! side by side along x, in that order, so truth and prediction are compared at a glance
//! instead of by flipping a combo box (the overlapping alternative would z-fight). Patch
//! centres and kNN groups are overlays drawn on the first shown copy.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::colouring::{self, ColourBy, ColourInputs, ColourSettings, Colouring};
use crate::render::camera::{Vec3, robust_bounds};

/// A copy of the cloud in the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    /// The cloud coloured by the "Colour by" choice.
    Points,
    Truth,
    Prediction,
    Errors,
}

impl LayerKind {
    /// Left-to-right order of the copies.
    pub const ALL: [LayerKind; 4] = [
        LayerKind::Points,
        LayerKind::Truth,
        LayerKind::Prediction,
        LayerKind::Errors,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LayerKind::Points => "points",
            LayerKind::Truth => "ground truth",
            LayerKind::Prediction => "prediction",
            LayerKind::Errors => "errors",
        }
    }

    /// The fixed colouring of a copy; `None` for the points, which follow "Colour by".
    fn colour_by(self) -> Option<ColourBy> {
        match self {
            LayerKind::Points => None,
            LayerKind::Truth => Some(ColourBy::Truth),
            LayerKind::Prediction => Some(ColourBy::Prediction),
            LayerKind::Errors => Some(ColourBy::Error),
        }
    }
}

/// Visibility of every layer; saved with the UI settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayerSettings {
    pub points: bool,
    pub truth: bool,
    pub prediction: bool,
    pub errors: bool,
    /// kNN groups: a line from each patch centre to each of its member points.
    pub groups: bool,
}

impl Default for LayerSettings {
    fn default() -> Self {
        Self {
            points: true,
            truth: false,
            prediction: false,
            errors: false,
            groups: false,
        }
    }
}

impl LayerSettings {
    pub fn visible(&self, kind: LayerKind) -> bool {
        match kind {
            LayerKind::Points => self.points,
            LayerKind::Truth => self.truth,
            LayerKind::Prediction => self.prediction,
            LayerKind::Errors => self.errors,
        }
    }

    pub fn toggle(&mut self, kind: LayerKind) -> &mut bool {
        match kind {
            LayerKind::Points => &mut self.points,
            LayerKind::Truth => &mut self.truth,
            LayerKind::Prediction => &mut self.prediction,
            LayerKind::Errors => &mut self.errors,
        }
    }
}

/// One drawn copy.
#[derive(Clone, Debug)]
pub struct Slot {
    pub kind: LayerKind,
    /// Added to every position of the copy.
    pub offset: Vec3,
    /// Shared with the app's main colouring for the points layer (no copy).
    pub colouring: Arc<Colouring>,
}

/// The layers of the shown cloud, ready to draw: copies concatenated in slot order.
#[derive(Clone, Debug, Default)]
pub struct Scene {
    pub slots: Vec<Slot>,
    /// Points per copy.
    pub points_per_copy: usize,
    pub positions: Arc<Vec<Vec3>>,
    /// The copies' colours; the app moves them into its draw data.
    pub colors: Vec<[u8; 4]>,
    /// Layers that are switched on but cannot be drawn for this cloud, with the reason.
    pub unavailable: Vec<(LayerKind, String)>,
    /// The cloud's bounding box (one copy, no offset), for captions above the copies.
    pub bounds: Option<(Vec3, Vec3)>,
}

impl Scene {
    /// The copy and the cloud index behind a drawn point index.
    pub fn locate(&self, drawn: usize) -> Option<(&Slot, usize)> {
        let n = self.points_per_copy;
        if n == 0 {
            return None;
        }
        self.slots.get(drawn / n).map(|s| (s, drawn % n))
    }

    pub fn offset_of_first(&self) -> Vec3 {
        self.slots.first().map_or([0.0; 3], |s| s.offset)
    }

    /// Lays the copies out in a row along the unit vector `along`, the first at the cloud's
    /// own place, and rebuilds the drawn positions.
    pub fn place(&mut self, positions: &Arc<Vec<Vec3>>, along: Vec3) {
        self.bounds = robust_bounds(positions, 0.0);
        let step = copy_spacing(positions, along);
        for (k, s) in self.slots.iter_mut().enumerate() {
            s.offset = along.map(|a| a * k as f32 * step);
        }
        self.positions = match self.slots.len() {
            0 => Arc::new(Vec::new()),
            // the common case shares the cloud's array: nothing is copied or re-uploaded
            1 => positions.clone(),
            _ => Arc::new(
                self.slots
                    .iter()
                    .flat_map(|s| {
                        let o = s.offset;
                        positions
                            .iter()
                            .map(move |p| [p[0] + o[0], p[1] + o[1], p[2] + o[2]])
                    })
                    .collect(),
            ),
        };
    }
}

/// Colours every visible layer and lays the copies out in a row along `along` (a unit
/// vector; the app passes the camera's horizontal right axis, so the row faces the viewer).
/// `settings` is the user's colouring (the points layer may update its locked range); copies
/// use their own fixed colour-by. Returns the scene and the points layer's colouring, which
/// exists even when that layer is hidden (the colour panel shows its range).
pub fn compose(
    inputs: &ColourInputs,
    positions: &Arc<Vec<Vec3>>,
    layers: &LayerSettings,
    settings: &mut ColourSettings,
    along: Vec3,
) -> (Scene, Arc<Colouring>) {
    let main = Arc::new(colouring::colour(inputs, settings));
    let n = positions.len();
    let mut scene = Scene {
        points_per_copy: n,
        ..Default::default()
    };
    for kind in LayerKind::ALL {
        if !layers.visible(kind) {
            continue;
        }
        let colouring = match kind.colour_by() {
            None => main.clone(),
            Some(by) => {
                let mut s = settings.clone();
                s.colour_by = by;
                let c = colouring::colour(inputs, &mut s);
                if let Some(note) = &c.note {
                    scene.unavailable.push((kind, note.clone()));
                    continue;
                }
                Arc::new(c)
            }
        };
        scene.slots.push(Slot {
            kind,
            offset: [0.0; 3],
            colouring,
        });
    }
    scene.place(positions, along);
    scene.colors = scene
        .slots
        .iter()
        .flat_map(|s| s.colouring.colors.iter().copied())
        .collect();
    (scene, main)
}

/// Distance between neighbouring copies: the cloud's robust width along `along` plus a
/// quarter of it (a stray point must not push the copies apart).
fn copy_spacing(positions: &[Vec3], along: Vec3) -> f32 {
    let projected: Vec<Vec3> = positions
        .iter()
        .map(|p| {
            [
                p[0] * along[0] + p[1] * along[1] + p[2] * along[2],
                0.0,
                0.0,
            ]
        })
        .collect();
    let extent = robust_bounds(positions, 0.005).map_or(1.0, |(lo, hi)| {
        (0..3).map(|k| hi[k] - lo[k]).fold(0.0f32, f32::max)
    });
    match robust_bounds(&projected, 0.005) {
        Some((lo, hi)) => 1.25 * (hi[0] - lo[0]).max(0.1 * extent).max(1e-3),
        None => 1.0,
    }
}

impl super::StudioApp {
    /// The scene tree of the shown cloud: a visibility toggle per layer.
    pub(super) fn scene_ui(&mut self, ui: &mut egui::Ui) {
        let title = if self.following_training() {
            "training snapshot".to_string()
        } else {
            match self.current_cloud() {
                Some(c) => c.name.clone(),
                None => {
                    ui.weak("no cloud open");
                    return;
                }
            }
        };
        let counts = self
            .shown_scales()
            .map(|s| (s.centers.len(), s.groups.first().map_or(0, Vec::len)));
        let colour_by = self.settings.colours.colour_by.label();
        egui::CollapsingHeader::new(title)
            .id_salt("scene_root")
            .default_open(true)
            .show(ui, |ui| {
                for kind in LayerKind::ALL {
                    let text = match kind {
                        LayerKind::Points => format!("points (colour: {colour_by})"),
                        _ => kind.label().to_string(),
                    };
                    ui.horizontal(|ui| {
                        ui.checkbox(self.settings.layers.toggle(kind), text);
                        if let Some((_, why)) =
                            self.scene.unavailable.iter().find(|(k, _)| *k == kind)
                        {
                            ui.weak(format!("({why})"));
                        }
                    });
                }
                let (centres, group) = counts.unwrap_or((0, 0));
                let note = |ui: &mut egui::Ui| {
                    if counts.is_none() {
                        ui.weak("(no model output)");
                    }
                };
                ui.horizontal(|ui| {
                    ui.checkbox(
                        &mut self.settings.show_centers,
                        format!("patch centres ({centres})"),
                    );
                    note(ui);
                });
                ui.horizontal(|ui| {
                    ui.checkbox(
                        &mut self.settings.layers.groups,
                        format!("kNN groups ({centres} x {group})"),
                    );
                    note(ui);
                });
            });
        if self.scene.slots.len() > 1 {
            ui.weak("shown copies sit side by side along x; R refits the camera");
        }
    }
}

/// Which layers a scene key depends on (a layout change re-uploads the positions).
pub fn layout_of(scene: &Scene) -> Vec<LayerKind> {
    scene.slots.iter().map(|s| s.kind).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::analysis::CloudAnalysis;
    use crate::data::PointCloud;
    use crate::render::UpAxis;

    fn cloud() -> PointCloud {
        let pts: Vec<Vec3> = (0..10).map(|i| [i as f32 * 0.1, 0.0, 0.0]).collect();
        let mut c = PointCloud::from_positions(pts);
        c.labels = Some((0..10).map(|i| (i % 2) as i64).collect());
        c
    }

    #[test]
    fn copies_sit_side_by_side_and_unavailable_layers_are_reported() {
        let c = cloud();
        let positions = Arc::new(c.positions.clone());
        let inputs = ColourInputs {
            cloud: &c,
            analysis: None::<&CloudAnalysis>,
            scales: None,
            up: UpAxis::PlusY,
            class_names: &[],
        };
        let mut settings = ColourSettings::default();
        let layers = LayerSettings {
            truth: true,
            prediction: true,
            ..Default::default()
        };
        let (scene, main) = compose(&inputs, &positions, &layers, &mut settings, [1.0, 0.0, 0.0]);
        // no model: the prediction copy is reported, not drawn grey
        assert_eq!(layout_of(&scene), vec![LayerKind::Points, LayerKind::Truth]);
        assert_eq!(scene.unavailable.len(), 1);
        assert_eq!(scene.unavailable[0].0, LayerKind::Prediction);
        assert_eq!(scene.positions.len(), 20);
        assert_eq!(scene.colors.len(), 20);
        assert_eq!(&scene.colors[..10], main.colors.as_slice());
        // the copy is shifted by more than the cloud's width (0.9), along x only
        let dx = scene.positions[10][0] - scene.positions[0][0];
        assert!(dx > 0.9 && dx < 1.5, "{dx}");
        assert_eq!(scene.positions[13][1], scene.positions[3][1]);
        let (slot, i) = scene.locate(13).unwrap();
        assert_eq!((slot.kind, i), (LayerKind::Truth, 3));
        assert!(scene.locate(20).is_none());
        // ground truth colours alternate with the labels
        assert_ne!(scene.colors[10], scene.colors[11]);
        assert_eq!(scene.colors[10], scene.colors[12]);

        // a single shown layer shares the cloud's positions array
        let (single, _) = compose(
            &inputs,
            &positions,
            &LayerSettings::default(),
            &mut settings,
            [1.0, 0.0, 0.0],
        );
        assert!(Arc::ptr_eq(&single.positions, &positions));
        // everything hidden: nothing drawn
        let none = LayerSettings {
            points: false,
            ..Default::default()
        };
        let (empty, _) = compose(&inputs, &positions, &none, &mut settings, [1.0, 0.0, 0.0]);
        assert!(empty.positions.is_empty() && empty.slots.is_empty());
        // another row direction: the copy moves along it only
        let mut along_z = scene.clone();
        along_z.place(&positions, [0.0, 0.0, 1.0]);
        let d = along_z.positions[13];
        assert_eq!((d[0], d[1]), (positions[3][0], positions[3][1]));
        assert!(d[2] > 0.05 && d[2] < 1.0, "{d:?}");
    }
}
