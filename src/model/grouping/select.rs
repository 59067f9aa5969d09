//! FPS and kNN index selection as backend operations, so each runs as one kernel launch on a
//! GPU (`model::cube::grouping`) instead of one small kernel chain per round. On burn-flex the
//! tensors are host memory, so the operations run the host kernels of `gpu::cpu` on them; under
//! autodiff they pass through (indices carry no gradient). What a kernel does not take goes to
//! the tensor-op forms in [`super::device`].

use burn::backend::Dispatch;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::{DType, Int, Shape, Tensor, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use burn_flex::FlexTensor;

use crate::gpu::cpu;
use crate::model::cube::grouping as kernels;

/// Farthest point sampling and k-nearest-neighbour selection over `[b, n, 3]` f32 points, with
/// the CPU kernels' rules (`gpu::cpu`). Indices come back as i32.
#[backend_extension(Flex, Cube, Fusion, Autodiff)]
pub trait PointSelection: Backend {
    /// `m` FPS indices per cloud: `[b, m]` (`n >= 1`, `m >= 1`).
    #[fusion(meta = fps_spec)]
    fn fps_indices(points: FloatTensor<Self>, m: usize) -> IntTensor<Self>;
    /// The `k` nearest of `refs` to each of `queries` `[b, g, 3]`, ascending, ties to the lower
    /// index: `[b, g, k]` (`1 <= k <= n`).
    #[fusion(meta = knn_spec)]
    fn knn_indices(
        refs: FloatTensor<Self>,
        queries: FloatTensor<Self>,
        k: usize,
    ) -> IntTensor<Self>;
}

fn fps_spec(points: &TensorSpec, m: &usize) -> TensorSpec {
    TensorSpec::new(Shape::new([points.shape[0], *m]), DType::I32)
}

fn knn_spec(refs: &TensorSpec, queries: &TensorSpec, k: &usize) -> TensorSpec {
    TensorSpec::new(
        Shape::new([refs.shape[0], queries.shape[1], *k]),
        DType::I32,
    )
}

/// `[b, n, 3]` host points as `(b, n, points)`.
fn host_points(t: FlexTensor) -> (usize, usize, Vec<[f32; 3]>) {
    let shape = t.layout().shape().clone();
    let values = t.into_data().convert::<f32>().try_into_vec::<f32>();
    let points = values.unwrap_or_default();
    let points = points.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    (shape[0], shape[1], points)
}

fn flex_ints(idx: Vec<usize>, shape: Shape) -> FlexTensor {
    let v: Vec<i32> = idx.into_iter().map(|i| i as i32).collect();
    FlexTensor::from_data(TensorData::new(v, shape))
}

impl PointSelection for Flex {
    fn fps_indices(points: FlexTensor, m: usize) -> FlexTensor {
        let (b, n, pts) = host_points(points);
        flex_ints(cpu::fps_batch(&pts, b, n, m), Shape::new([b, m]))
    }

    fn knn_indices(refs: FlexTensor, queries: FlexTensor, k: usize) -> FlexTensor {
        let (b, n, r) = host_points(refs);
        let (_, g, q) = host_points(queries);
        let idx = cpu::knn_batch(&r, &q, b, n, g, k);
        flex_ints(idx, Shape::new([b, g, k.min(n)]))
    }
}

impl PointSelection for CubeBackend {
    fn fps_indices(points: CubeTensor, m: usize) -> CubeTensor {
        kernels::fps(points, m)
    }

    fn knn_indices(refs: CubeTensor, queries: CubeTensor, k: usize) -> CubeTensor {
        kernels::knn(refs, queries, k)
    }
}

impl<B: Backend + PointSelection, C: CheckpointStrategy> PointSelection for Autodiff<B, C> {
    fn fps_indices(points: FloatTensor<Self>, m: usize) -> IntTensor<Self> {
        B::fps_indices(points.into_primitive(), m)
    }

    fn knn_indices(
        refs: FloatTensor<Self>,
        queries: FloatTensor<Self>,
        k: usize,
    ) -> IntTensor<Self> {
        B::knn_indices(refs.into_primitive(), queries.into_primitive(), k)
    }
}

/// Clouds per launch the FPS kernel takes (one workgroup each, one grid dimension).
const MAX_CLOUDS: usize = 65_535;

/// Whether the operations take f32 `[b, n, 3]` points with `rows` outputs of `width` indices
/// each: something to select from, and every index within 32 bits.
fn takes(points: &Tensor<3>, rows: usize, width: usize) -> bool {
    let [b, n, _] = points.dims();
    points.dtype() == DType::F32
        && b > 0
        && n > 0
        && width > 0
        && b * n * 3 < i32::MAX as usize
        && rows * width < i32::MAX as usize
}

/// The indices as the device's default integer type (the kernels write i32).
fn as_default_int<const D: usize>(t: Tensor<D, Int>, points: &Tensor<3>) -> Tensor<D, Int> {
    let dtype = points.device().settings().int_dtype;
    t.cast(dtype)
}

/// FPS of `m` indices per cloud of `points` `[b, n, 3]` as one operation, or `None` where the
/// operation does not take the input (see [`takes`]).
pub fn fps(points: &Tensor<3>, m: usize) -> Option<Tensor<2, Int>> {
    let b = points.dims()[0];
    if !takes(points, b, m) || b > MAX_CLOUDS {
        return None;
    }
    let idx = <Dispatch as PointSelection>::fps_indices(points.clone().into_dispatch(), m);
    Some(as_default_int(Tensor::from_dispatch(idx), points))
}

/// The `k` nearest of `refs` `[b, n, 3]` to each of `queries` `[b, g, 3]` as one operation
/// (`k` above `n` gives `n`), or `None` where the operation does not take the input.
pub fn knn(refs: &Tensor<3>, queries: &Tensor<3>, k: usize) -> Option<Tensor<3, Int>> {
    let [b, n, _] = refs.dims();
    let [qb, g, _] = queries.dims();
    let k = k.min(n);
    if qb != b || queries.dtype() != DType::F32 || !takes(refs, b * g, k) || g == 0 {
        return None;
    }
    let idx = <Dispatch as PointSelection>::knn_indices(
        refs.clone().into_dispatch(),
        queries.clone().into_dispatch(),
        k,
    );
    Some(as_default_int(Tensor::from_dispatch(idx), refs))
}
