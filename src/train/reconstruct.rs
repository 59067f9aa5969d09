//! Reconstruction views of a pre-training run's best model (the official `vis=True` output):
//! one cloud holding the visible patches, the masked patches as predicted and as they were.
//! `dapt pretrain --reconstruct` writes them as PLY files; the app shows them directly.

use std::path::Path;

use burn::tensor::Device;

use super::TrainError;
use super::batch::test_points;
use super::pretrain::{load_checkpoint, read_config};
use crate::data::transform::pc_normalize;
use crate::data::{PointCloud, Rng};
use crate::model::pretrain::PointMae;

/// The three parts by label: 0 visible patches, 1 predicted masked patches, 2 true masked
/// patches; their colours (grey, red, blue) are stored in the cloud as RGB.
pub const PART_NAMES: [&str; 3] = ["visible patches", "predicted patches", "masked truth"];
const PART_COLOURS: [[f32; 3]; 3] = [[0.6, 0.6, 0.6], [0.9, 0.3, 0.2], [0.2, 0.5, 0.9]];

/// A pre-training run's best model, ready to reconstruct clouds.
pub struct Reconstructor {
    model: PointMae,
    npoints: usize,
    device: Device,
    /// Draws the random masks, so one seed gives the same views.
    rng: Rng,
}

impl Reconstructor {
    /// Loads `run_dir/checkpoints/best.safetensors` with the run's configuration.
    pub fn open(run_dir: &Path, device: &Device, seed: u64) -> Result<Self, TrainError> {
        let cfg = read_config(run_dir)?;
        let ckpt = run_dir.join("checkpoints/best.safetensors");
        let model = load_checkpoint(&cfg.model, &ckpt, device)?;
        Ok(Self {
            model,
            npoints: cfg.model.npoints,
            device: device.clone(),
            rng: Rng::new(seed),
        })
    }

    /// The reconstruction of `points` (any scale; normalised and sampled like the model's
    /// input) in the model's normalised coordinates, labelled and coloured by part.
    pub fn reconstruct(&mut self, points: &[[f32; 3]]) -> Result<PointCloud, TrainError> {
        let mut pts = points.to_vec();
        pc_normalize(&mut pts);
        let n = self.npoints;
        let pts = test_points(&pts, n.min(pts.len()));
        if pts.len() != n {
            return Err(TrainError::Config(format!(
                "{} points, the model needs {n}",
                pts.len()
            )));
        }
        let r = self.model.reconstruct(&pts, &self.device, &mut self.rng)?;
        let parts = [&r.visible, &r.predicted, &r.ground_truth];
        let mut positions = Vec::new();
        let mut labels = Vec::new();
        for (label, part) in parts.into_iter().enumerate() {
            positions.extend_from_slice(part);
            labels.extend(std::iter::repeat_n(label as i64, part.len()));
        }
        let colors = labels.iter().map(|&l| PART_COLOURS[l as usize]).collect();
        Ok(PointCloud {
            positions,
            colors: Some(colors),
            labels: Some(labels),
            ..PointCloud::default()
        })
    }
}
