//! The Dynamic Adapter (`Adapter_MLP`, dapt-spec.md §4.2): parallel to the frozen MLP, with
//! a per-token, per-layer dynamic scale s = ReLU(Linear(LN(y))).

use super::linear::Linear;
use burn::module::Module;
use burn::tensor::{Device, Tensor, activation};

use super::layers::{ForwardCtx, LayerNorm, gelu, linear, param};

#[derive(Module, Debug)]
pub struct DynamicAdapter {
    /// `adapter_layer_norm_before`
    pub norm: LayerNorm,
    /// `scale`: Linear C→1
    pub scale: Linear,
    pub down_proj: Linear,
    pub up_proj: Linear,
    #[module(skip)]
    pub dropout: f64,
}

impl DynamicAdapter {
    /// Official init: down/scale weights PyTorch-default (U(±1/√C)), all biases and the whole
    /// up-projection zero, so the adapter output is exactly 0 at step 0.
    pub fn new(dim: usize, rank: usize, dropout: f64, device: &Device) -> Self {
        let mut down_proj = linear(dim, rank, true, device);
        let mut scale = linear(dim, 1, true, device);
        let mut up_proj = linear(rank, dim, true, device);
        down_proj.bias = Some(param(Tensor::zeros([rank], device)));
        scale.bias = Some(param(Tensor::zeros([1], device)));
        up_proj.weight = param(Tensor::zeros([rank, dim], device));
        up_proj.bias = Some(param(Tensor::zeros([dim], device)));
        Self {
            norm: LayerNorm::new(dim, device),
            scale,
            down_proj,
            up_proj,
            dropout,
        }
    }

    /// Returns `(adapter output a = s ⊙ u, dynamic scale s [b, t, 1])`.
    pub fn forward(&self, y: Tensor<3>, ctx: &mut ForwardCtx) -> (Tensor<3>, Tensor<3>) {
        let yhat = self.norm.forward(y);
        let s = activation::relu(self.scale.forward(yhat.clone()));
        let h = gelu(self.down_proj.forward(yhat));
        let h = ctx.dropout(h, self.dropout);
        let u = self.up_proj.forward(h);
        (u * s.clone(), s)
    }
}
