//! Keeping the drawn points up to date: the colours and positions are rebuilt only when
//! what they are computed from (cloud, analysis, colour settings, layers, up axis, training
//! snapshot) changes.

use std::sync::Arc;

use super::{ColourSettings, LayerSettings, ScaleData, StudioApp, colouring, scene};
use crate::data::PointCloud;
use crate::render::{PointData, UpAxis};

/// What the colours were computed from; recolour when it changes.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ColourKey {
    source: (u64, u64),
    analysis_done: bool,
    settings: ColourSettings,
    layers: LayerSettings,
    up: UpAxis,
}

/// (scales generation, cloud, its positions, its scales) of the latest training snapshot.
pub(super) type TrainingView = (u64, Arc<PointCloud>, Arc<Vec<[f32; 3]>>, ScaleData);

impl StudioApp {
    pub(super) fn update_training_view(&mut self) {
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
    pub(super) fn update_colours(&mut self) {
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
}
