//! Building blocks with the exact PyTorch semantics the official models rely on
//! (LayerNorm with biased variance, BatchNorm with unbiased running variance, exact GELU,
//! timm DropPath, SSF-style scale-and-shift).

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use crate::data::Rng;

pub use super::linear::Linear;
use super::row_split::spread;

/// A parameter holding `value`, trainable unless frozen later.
pub fn param<const D: usize>(value: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(value)
}

/// A non-trainable buffer (BatchNorm running statistics).
pub fn buffer<const D: usize>(value: Tensor<D>) -> Param<Tensor<D>> {
    Param::initialized(ParamId::new(), value).set_require_grad(false)
}

/// `nn.Linear` with PyTorch's default init (kaiming-uniform a=√5 → U(±1/√fan_in) for
/// weight and bias). Weight stored `[in, out]`.
pub fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    Linear::new(d_in, d_out, bias, device)
}

/// LayerNorm over the last dimension, eps 1e-5, biased variance (PyTorch).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
}

impl LayerNorm {
    pub fn new(dim: usize, device: &Device) -> Self {
        Self {
            weight: param(Tensor::ones([dim], device)),
            bias: param(Tensor::zeros([dim], device)),
        }
    }

    /// One pass per row (`model::norm`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        super::norm::layer_norm(x, self.weight.val(), self.bias.val())
    }

    /// This LayerNorm followed by `tfts` (DAPT's norm → TFTS pairs) as one LayerNorm:
    /// `(x̂·w + b)·γ + β = x̂·(w·γ) + (b·γ + β)`, the folded `[c]` parameters computed (and
    /// differentiated) per call, so the tokens are read and written once instead of twice.
    pub fn forward_then<const D: usize>(&self, x: Tensor<D>, tfts: Option<&Tfts>) -> Tensor<D> {
        match tfts {
            None => self.forward(x),
            Some(t) => {
                let gamma = t.gamma.val();
                let scale = self.weight.val() * gamma.clone();
                let shift = self.bias.val() * gamma + t.beta.val();
                super::norm::layer_norm(x, scale, shift)
            }
        }
    }
}

/// BatchNorm1d over the channel (last) dimension of a `[rows, channels]` tensor.
///
/// Training mode normalises with the biased batch variance and moves the running statistics
/// by momentum 0.1 using the unbiased variance, as PyTorch does; the running statistics are
/// updated even when the affine parameters are frozen (dapt-spec.md §4.7).
#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: Param<Tensor<1>>,
    pub running_var: Param<Tensor<1>>,
}

pub const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    pub fn new(dim: usize, device: &Device) -> Self {
        Self {
            weight: param(Tensor::ones([dim], device)),
            bias: param(Tensor::zeros([dim], device)),
            running_mean: buffer(Tensor::zeros([dim], device)),
            running_var: buffer(Tensor::ones([dim], device)),
        }
    }

    /// `x`: `[rows, channels]`. In training mode the running statistics are updated in place.
    pub fn forward(&mut self, x: Tensor<2>, training: bool) -> Tensor<2> {
        self.normalise(x, training, false)
    }

    /// `relu(self.forward(x, training))`, as one pass over `x` where no gradient flows through
    /// (`model::affine_relu`: inference, the frozen encoder of DAPT).
    pub fn forward_relu(&mut self, x: Tensor<2>, training: bool) -> Tensor<2> {
        self.normalise(x, training, true)
    }

    fn normalise(&mut self, x: Tensor<2>, training: bool, relu: bool) -> Tensor<2> {
        let apply = |x: Tensor<2>, alpha: Tensor<2>, beta: Tensor<2>| {
            if relu {
                super::affine_relu::affine_relu(x, alpha, beta)
            } else {
                x * alpha + beta
            }
        };
        let [rows, c] = x.dims();
        let w = self.weight.val().unsqueeze::<2>();
        let b = self.bias.val().unsqueeze::<2>();
        if training && rows > 1 {
            let split = super::row_split::split(rows, &x.device());
            let (var, mean) = match split {
                // on a GPU, the statistics and (under autodiff) their gradients in two short
                // reductions each (`model::row_split`); the mean of equal chunks' means
                Some((s, r)) => {
                    let x3 = x.clone().reshape([s, r, c]);
                    let mean = x3.clone().mean_dim(1).mean_dim(0);
                    let centred = x3 - spread(mean.clone(), r);
                    let var = (centred.clone() * centred).mean_dim(1).mean_dim(0);
                    (var.reshape([1, c]), mean.reshape([1, c]))
                }
                None => super::batch_stats::var_mean(x.clone()),
            };
            // `x * alpha + beta` with per-channel alpha and beta, the form PyTorch's CPU
            // kernel applies batch statistics in (there as one fused multiply-add): two passes
            // over the input instead of four, and two saved tensors fewer for backward. The
            // input is the patch encoder's `[points, 512]` (128 MiB at batch 32).
            let alpha = w / (var.clone() + 1e-5).sqrt();
            let beta = b - mean.clone() * alpha.clone();
            let out = match split {
                Some((s, r)) => {
                    let y = (x.reshape([s, r, c]) * spread(alpha.clone(), r) + spread(beta, r))
                        .reshape([rows, c]);
                    if relu {
                        burn::tensor::activation::relu(y)
                    } else {
                        y
                    }
                }
                None => apply(x, alpha.clone(), beta),
            };
            let n = rows as f64;
            let unbiased = var.detach().squeeze_dim::<1>(0) * (n / (n - 1.0));
            let mean = mean.detach().squeeze_dim::<1>(0);
            let rm =
                self.running_mean.val().inner() * (1.0 - BN_MOMENTUM) + mean.inner() * BN_MOMENTUM;
            let rv = self.running_var.val().inner() * (1.0 - BN_MOMENTUM)
                + unbiased.inner() * BN_MOMENTUM;
            // keep the ids: optimizers and snapshots address buffers by id or name
            self.running_mean =
                Param::initialized(self.running_mean.id, rm).set_require_grad(false);
            self.running_var = Param::initialized(self.running_var.id, rv).set_require_grad(false);
            out
        } else {
            let device = x.device();
            let mean = self
                .running_mean
                .val()
                .with_autodiff_context_of(&device)
                .unsqueeze::<2>();
            let var = self
                .running_var
                .val()
                .with_autodiff_context_of(&device)
                .unsqueeze::<2>();
            // folded as PyTorch's CPU inference kernel does (x * alpha + beta), so values
            // near the following ReLU's threshold round the same way
            let alpha = w / (var + 1e-5).sqrt();
            let beta = b - mean * alpha.clone();
            apply(x, alpha, beta)
        }
    }
}

/// Extension so buffers created on a plain device can meet autodiff activations.
pub trait AutodiffContext {
    fn with_autodiff_context_of(self, device: &Device) -> Self;
}

impl<const D: usize> AutodiffContext for Tensor<D> {
    fn with_autodiff_context_of(self, device: &Device) -> Self {
        match device.gradient_checkpointing_strategy() {
            // every autodiff operand of an op must carry the device's checkpointing strategy
            Some(strategy) => self
                .autodiff()
                .with_gradient_checkpointing_strategy(strategy),
            None => self.inner(),
        }
    }
}

/// Gives every autodiff parameter of `module` the gradient-checkpointing strategy of `ad`
/// (an autodiff device); `train::driver::for_training` calls it after `Module::train`, which
/// tags parameters with none.
pub fn with_checkpointing_of<M: Module>(module: M, ad: &Device) -> M {
    struct Retag(burn::tensor::GradientCheckpointingStrategy);
    impl burn::module::ModuleMapper for Retag {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let strategy = self.0;
            param.map(move |t| {
                if t.is_autodiff() {
                    t.with_gradient_checkpointing_strategy(strategy)
                } else {
                    t
                }
            })
        }
    }
    match ad.gradient_checkpointing_strategy() {
        Some(strategy) => module.map(&mut Retag(strategy)),
        None => module,
    }
}

/// timm's `trunc_normal_(std)` with absolute bounds ±2: the clamp stands in for redraws,
/// which at std 0.02 never happen in practice.
pub fn trunc_normal(shape: [usize; 3], std: f64, device: &Device) -> Tensor<3> {
    Tensor::random(shape, Distribution::Normal(0.0, std), device).clamp(-2.0, 2.0)
}

/// SSF-style per-channel scale and shift (TFTS): `x ⊙ γ + β`, γ ~ N(1, 0.02), β ~ N(0, 0.02).
#[derive(Module, Debug)]
pub struct Tfts {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
}

impl Tfts {
    pub fn new(dim: usize, device: &Device) -> Self {
        Self {
            gamma: param(Tensor::random(
                [dim],
                Distribution::Normal(1.0, 0.02),
                device,
            )),
            beta: param(Tensor::random(
                [dim],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
        }
    }

    /// `x·γ + β` over the last dimension ([`scale_shift`]).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        scale_shift(x, self.gamma.val(), self.beta.val())
    }
}

/// TFTS's `x·scale + shift` over the last dimension, where each backend runs it best. On
/// burn-flex one threaded pass per row (`model::norm`). On wgpu burn's two broadcast ops:
/// fusion merges them with their neighbours (the residual add, drop-path, GELU), which the
/// opaque CubeCL op of `model::norm` cannot join; a DAPT step launched 10% fewer kernels and
/// held 5% less device memory this way (BENCHMARKS.md).
pub fn scale_shift<const D: usize>(x: Tensor<D>, scale: Tensor<1>, shift: Tensor<1>) -> Tensor<D> {
    if super::on_flex(&x.device()) {
        super::norm::scale_shift(x, scale, shift)
    } else {
        x * scale.unsqueeze() + shift.unsqueeze()
    }
}

/// Exact GELU: threaded on burn-flex (`model::gelu`), burn's own elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    super::gelu::gelu(x)
}

/// Per-forward randomness and mode. Masks are drawn on the host from our own [`Rng`] so a
/// run is reproducible from its seed on every backend and resumable from a saved state.
pub struct ForwardCtx<'a> {
    pub training: bool,
    pub rng: Option<&'a mut Rng>,
}

impl<'a> ForwardCtx<'a> {
    pub fn eval() -> Self {
        Self {
            training: false,
            rng: None,
        }
    }

    pub fn train(rng: &'a mut Rng) -> Self {
        Self {
            training: true,
            rng: Some(rng),
        }
    }

    /// timm DropPath: per-sample keep mask scaled by 1/keep, shape `[b, 1, 1]`.
    pub fn drop_path(&mut self, x: Tensor<3>, prob: f64) -> Tensor<3> {
        if !self.training || prob <= 0.0 {
            return x;
        }
        let Some(rng) = self.rng.as_deref_mut() else {
            return x;
        };
        let [b, _, _] = x.dims();
        let keep = 1.0 - prob;
        let mask: Vec<f32> = (0..b)
            .map(|_| {
                if (rng.uniform_f64()) < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let device = x.device();
        let m = Tensor::<1>::from_data(TensorData::new(mask, [b]), &device).reshape([b, 1, 1]);
        // not `x * m`: with the constant mask as a parent, checkpointing would keep the product
        super::drop_path::sample_scale(x, m)
    }

    /// Element-wise dropout with survivors scaled by 1/keep.
    pub fn dropout<const D: usize>(&mut self, x: Tensor<D>, prob: f64) -> Tensor<D> {
        if !self.training || prob <= 0.0 {
            return x;
        }
        let Some(rng) = self.rng.as_deref_mut() else {
            return x;
        };
        let shape = x.shape();
        let n = shape.num_elements();
        let keep = 1.0 - prob;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = (0..n)
            .map(|_| if rng.uniform_f64() < keep { scale } else { 0.0 })
            .collect();
        let device = x.device();
        let m = Tensor::<D>::from_data(TensorData::new(mask, shape), &device);
        x * m
    }
}

pub use crate::readback::host_vec;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{close, values};

    #[test]
    fn a_layer_norm_with_its_tfts_folded_in_matches_the_two_in_turn() {
        let ad = Device::flex().autodiff();
        let x = Tensor::<3>::random([3, 7, 24], Distribution::Normal(0.5, 2.0), &ad).require_grad();
        let w = Tensor::<3>::random([3, 7, 24], Distribution::Default, &ad);
        let mut norm = LayerNorm::new(24, &ad);
        norm.weight = param(Tensor::random([24], Distribution::Normal(1.0, 0.3), &ad));
        norm.bias = param(Tensor::random([24], Distribution::Normal(0.0, 0.3), &ad));
        let tfts = Tfts::new(24, &ad);
        let run = |y: Tensor<3>| {
            let y = y * w.clone();
            let out = values(y.clone().inner());
            let grads = y.sum().backward();
            let g1 = |p: &Param<Tensor<1>>| p.val().grad(&grads).map(values).unwrap_or_default();
            let gx = x.grad(&grads).map(values).unwrap_or_default();
            [
                out,
                gx,
                g1(&norm.weight),
                g1(&norm.bias),
                g1(&tfts.gamma),
                g1(&tfts.beta),
            ]
        };
        let apart = run(tfts.forward(norm.forward(x.clone())));
        let folded = run(norm.forward_then(x.clone(), Some(&tfts)));
        let names = ["output", "x", "weight", "bias", "gamma", "beta"];
        for ((a, f), name) in apart.iter().zip(&folded).zip(names) {
            assert!(!a.is_empty(), "{name}: no value");
            close(f, a, 1e-5, name);
        }
        assert_eq!(
            values(norm.forward_then(x.clone(), None).inner()),
            values(norm.forward(x).inner())
        );
    }
}
