//! Classification inference: eval-mode logits of sampled clouds, class probabilities, and the
//! per-block dynamic scales of every token (what the viewer's heatmaps draw).

use burn::tensor::Device;

use crate::model::layers::{ForwardCtx, host_vec};
use crate::model::{Classifier, ModelError};
use serde::{Deserialize, Serialize};

/// Eval-mode forward of clouds that already have `npoints` points each.
pub fn logits_of(
    model: &mut Classifier,
    clouds: &[&[[f32; 3]]],
    device: &Device,
) -> Result<Vec<Vec<f32>>, ModelError> {
    let b = clouds.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    let n = clouds[0].len();
    let flat: Vec<[f32; 3]> = clouds.iter().flat_map(|c| c.iter().copied()).collect();
    let mut ctx = ForwardCtx::eval();
    let (out, _) = model.forward_points(&flat, b, n, device, &mut ctx)?;
    let k = model.config.cls_dim;
    Ok(host_vec(out.logits).chunks(k).map(|c| c.to_vec()).collect())
}

/// Dynamic scales of every block for one cloud: what the adapter weighs per token.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScaleSnapshot {
    /// Patch centres, `[patch][xyz]`.
    pub centers: Vec<[f32; 3]>,
    /// Point indices of each patch (into the cloud the snapshot was taken on).
    pub groups: Vec<Vec<usize>>,
    /// The cloud the snapshot was taken on (after test-time sampling).
    pub points: Vec<[f32; 3]>,
    /// `[block][patch]` dynamic scale of each patch token.
    pub patch: Vec<Vec<f32>>,
    /// `[block][prompt]` dynamic scale of the internal prompts present at that block.
    pub prompts: Vec<Vec<f32>>,
    /// `[block]` dynamic scale of the cls token.
    pub cls: Vec<f32>,
}

/// Probabilities of one row of logits.
pub fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Dynamic scales of every block for one cloud (already sampled to `npoints`).
pub fn scale_snapshot(
    model: &mut Classifier,
    points: &[[f32; 3]],
    device: &Device,
) -> Result<ScaleSnapshot, ModelError> {
    let n = points.len();
    let mut ctx = ForwardCtx::eval();
    let (out, groups) = model.forward_points(points, 1, n, device, &mut ctx)?;
    let g = model.config.num_group;
    let mut snap = ScaleSnapshot {
        centers: groups.centers_host(),
        groups: groups.members(0),
        points: points.to_vec(),
        ..Default::default()
    };
    for s in out.scales {
        let v: Vec<f32> = host_vec(s);
        let t = v.len();
        // layout of block l's input: [cls, prompts (l of them), patches (g)]
        // a model whose blocks return fewer tokens than this layout is a bug worth naming,
        // not a panic in the viewer
        if t < g + 1 {
            return Err(ModelError::Input(format!(
                "a block's dynamic scales cover {t} tokens, fewer than the class token and {g} patches"
            )));
        }
        snap.cls.push(v[0]);
        snap.prompts.push(v[1..t - g].to_vec());
        snap.patch.push(v[t - g..].to_vec());
    }
    Ok(snap)
}
