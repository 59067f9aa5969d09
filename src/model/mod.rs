//! The DAPT model and its Point-MAE backbone in burn, written once for every backend
//! (dapt-spec.md §3-§5), plus checkpoint import and export.

use std::path::{Path, PathBuf};

pub mod adapter;
pub mod affine_relu;
pub mod attention;
pub mod batch_stats;
pub mod block;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod cube;
pub mod drop_path;
pub mod encoder;
pub mod gelu;
pub mod gelu_math;
pub mod group_max;
pub mod grouping;
pub mod init;
pub mod layers;
pub mod linear;
pub mod linear_max;
pub mod load;
pub mod names;
pub mod norm;
pub mod partseg;
pub mod pretrain;
pub mod prompt_insert;
pub mod row_split;
pub mod scaled_gelu;
pub mod softmax;
pub mod unary_node;
pub mod yaml;

pub use classifier::{Classifier, ForwardOutput, ForwardState};
pub use config::{ModelConfig, ModelKind, Pool};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
}

impl ModelError {
    /// Attaches the file a configuration error came from.
    pub fn with_path(self, path: &Path) -> Self {
        match self {
            ModelError::Config(m) => ModelError::Config(format!("{}: {m}", path.display())),
            other => other,
        }
    }
}

/// Whether `device` is burn-flex, with or without autodiff: where the model's threaded host
/// kernels run and the GPU-shaped code paths (`row_split`, device grouping) stay off.
pub(crate) fn on_flex(device: &burn::tensor::Device) -> bool {
    device.clone().without_autodiff() == burn::tensor::Device::flex()
}

/// What the backend extensions' unit tests share.
#[cfg(test)]
pub(crate) mod test_util {
    use burn::tensor::Tensor;

    /// The f32 values of a burn-flex tensor.
    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        crate::readback::flex_values(t)
    }

    /// Output and the gradients of `x`, `scale` and `shift` of a three-input op (`x` `[b, t,
    /// c]`, `scale` and `shift` `[c]`) on the autodiff device `ad`, with a tracked op before
    /// and a weighted product after it, as in the model.
    pub fn ternary_grads(
        op: fn(Tensor<3>, Tensor<1>, Tensor<1>) -> Tensor<3>,
        ad: &burn::tensor::Device,
        [x, w]: [&Tensor<3>; 2],
        scale: &Tensor<1>,
        shift: &Tensor<1>,
    ) -> [Vec<f32>; 4] {
        let xa = Tensor::<3>::from_data(x.clone().into_data(), ad).require_grad();
        let sa = Tensor::<1>::from_data(scale.clone().into_data(), ad).require_grad();
        let ba = Tensor::<1>::from_data(shift.clone().into_data(), ad).require_grad();
        let wa = Tensor::<3>::from_data(w.clone().into_data(), ad);
        let y = op(xa.clone() * 1.5, sa.clone(), ba.clone()) * wa;
        let out = values(y.clone().inner());
        let grads = y.sum().backward();
        let g = |t: Option<Tensor<3>>| t.map(values).unwrap_or_default();
        let g1 = |t: Option<Tensor<1>>| t.map(values).unwrap_or_default();
        [
            out,
            g(xa.grad(&grads)),
            g1(sa.grad(&grads)),
            g1(ba.grad(&grads)),
        ]
    }

    /// A layer's output and the gradients of its input, weight and bias (empty where none
    /// reached them), as the linear layers' tests compare them.
    pub struct LayerRun {
        pub out: Vec<f32>,
        pub dx: Vec<f32>,
        pub dw: Vec<f32>,
        pub db: Vec<f32>,
    }

    impl LayerRun {
        /// Backpropagates `sum(y)` and reads the gradients of `x`, `w` and `b`.
        pub fn backward<const D: usize, const E: usize>(
            y: Tensor<E>,
            x: &Tensor<D>,
            w: &Tensor<2>,
            b: Option<Tensor<1>>,
        ) -> Self {
            let out = values(y.clone().inner());
            let grads = y.sum().backward();
            Self {
                out,
                dx: x.grad(&grads).map(values).unwrap_or_default(),
                dw: w.grad(&grads).map(values).unwrap_or_default(),
                db: b
                    .and_then(|b| b.grad(&grads))
                    .map(values)
                    .unwrap_or_default(),
            }
        }
    }

    /// `a` bit for bit equal to burn's `b` (any NaN matching any NaN).
    pub fn same_bits(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                "{what}: element {i}: {x} against burn's {y}"
            );
        }
    }

    /// `a` within `tol` of burn's `b`, absolute below 1 and relative above.
    pub fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}: element {i}: {x} against burn's {y}"
            );
        }
    }
}
