//! Mini-PointNet patch encoder (`encoder.*`, dapt-spec.md §3.1) and the positional
//! embedding MLP (`pos_embed.*`, §3.2).

use super::linear::Linear;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::layers::{BatchNorm, gelu, linear};
use super::linear_max::linear_max;

/// Conv1d(k=1) stacks as per-point Linear layers; field names mirror the official
/// `first_conv.{0,1,3}` / `second_conv.{0,1,3}` indices.
///
/// `second_conv.0` reads `cat(global, local)` per point, where the global half is the same
/// for every point of a patch. It is computed as `W_g·global + W_l·local`, an exact algebraic
/// rewrite (float sums in another order): 512x512 becomes 256x512 per point plus 256x512 per
/// patch, ~10% of the official model's forward FLOPs, and the `[points, 512]` concatenation
/// is never built.
#[derive(Module, Debug)]
pub struct PatchEncoder {
    pub first_conv0: Linear,
    pub first_conv1: BatchNorm,
    pub first_conv3: Linear,
    pub second_conv0: Linear,
    pub second_conv1: BatchNorm,
    pub second_conv3: Linear,
}

impl PatchEncoder {
    pub fn new(out_dim: usize, device: &Device) -> Self {
        Self {
            first_conv0: linear(3, 128, true, device),
            first_conv1: BatchNorm::new(128, device),
            first_conv3: linear(128, 256, true, device),
            second_conv0: linear(512, 512, true, device),
            second_conv1: BatchNorm::new(512, device),
            second_conv3: linear(512, out_dim, true, device),
        }
    }

    /// `neighborhoods`: `[b, g, m, 3]` local coordinates → patch tokens `[b, g, c]`.
    pub fn forward(&mut self, neighborhoods: Tensor<4>, training: bool) -> Tensor<3> {
        let [b, g, m, _] = neighborhoods.dims();
        let rows = b * g * m;
        let x = neighborhoods.reshape([rows, 3]);
        let x = self.first_conv0.forward(x);
        let h = self.first_conv1.forward_relu(x, training); // [bgm, 128]
        // first_conv3 and the pool as one operation: trained, its backward visits only the
        // rows that won (`model::linear_max`)
        let global = linear_max(h.clone(), &self.first_conv3, m); // [bg, 256]
        // second_conv0 over cat(global, local), split into its two column blocks: the global
        // half once per patch instead of once per point, and no [bgm, 512] concatenation
        let w = self.second_conv0.weight.val(); // [512 in, 512 out], global rows first
        let width = w.dims()[1];
        let w_local = w.clone().slice_dim(0, 256..512);
        let mut per_patch = global.matmul(w.slice_dim(0, 0..256));
        // the bias joins the per-patch half (`[bg, 512]`) rather than every point's row: one
        // pass over the `[bgm, 512]` product fewer
        if let Some(bias) = &self.second_conv0.bias {
            per_patch = super::row_split::add_to_rows(per_patch, bias.val());
        }
        // nothing lies between first_conv3 and the local half but the product, so
        // `(h·W3 + b3)·W_l = h·(W3·W_l) + b3·W_l`: a 128→512 product per point in place of
        // 256→512 (8.6 GFLOP fewer per batch of 32), the bias term once per patch. Trained,
        // both weights' gradients come through the [128, 512] product: `hᵀ·dY` (128-deep)
        // in place of `fᵀ·dY` and `dY·W_lᵀ` (256-deep), 17 GFLOP fewer per batch of 32
        let w3 = self.first_conv3.weight.val(); // [128, 256]
        if let Some(b3) = &self.first_conv3.bias {
            per_patch = per_patch + b3.val().unsqueeze::<2>().matmul(w_local.clone());
        }
        let per_point =
            super::linear::apply(h, w3.matmul(w_local), None).reshape([b * g, m, width]);
        let x = (per_point + per_patch.reshape([b * g, 1, width])).reshape([rows, width]);
        let x = self.second_conv1.forward_relu(x, training);
        let x = linear_max(x, &self.second_conv3, m); // [bg, c]
        let c = x.dims()[1];
        x.reshape([b, g, c])
    }
}

/// π(c) = Linear(128→C)(GELU(Linear(3→128)(c))): `pos_embed.0` and `pos_embed.2`.
#[derive(Module, Debug)]
pub struct PosEmbed {
    pub fc0: Linear,
    pub fc2: Linear,
}

impl PosEmbed {
    pub fn new(dim: usize, device: &Device) -> Self {
        Self {
            fc0: linear(3, 128, true, device),
            fc2: linear(128, dim, true, device),
        }
    }

    /// `centers`: `[b, g, 3]` → `[b, g, c]`.
    pub fn forward(&self, centers: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(gelu(self.fc0.forward(centers)))
    }
}
