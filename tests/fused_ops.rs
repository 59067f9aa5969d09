//! The model's fused operations on both backends we ship, burn-flex's threaded kernels and the
//! CubeCL kernels on wgpu (Mesa's lavapipe without a GPU), against burn's own ops on burn-flex:
//! `model::norm`'s LayerNorm and scale-and-shift, `model::softmax`'s last-dimension softmax and
//! `model::attention`'s attention core,
//! forward and every gradient, with and without gradient checkpointing; and the launches a
//! training step of each costs on wgpu, fused against burn's ops.

mod common;

use std::sync::Mutex;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use common::devices;
use dapt::launches::LaunchCount;
use dapt::model::attention::{attention_core, by_ops as attention_by_ops};
use dapt::model::norm::{layer_norm, scale_shift};
use dapt::model::softmax::softmax_last;

/// The launch counter is process-wide: the tests of this file take turns on the device.
static DEVICE: Mutex<()> = Mutex::new(());

type Op = fn(Tensor<3>, Tensor<1>, Tensor<1>) -> Tensor<3>;

fn burns_layer_norm(x: Tensor<3>, s: Tensor<1>, b: Tensor<1>) -> Tensor<3> {
    let (var, mean) = x.clone().var_mean_bias(2);
    (x - mean) / (var + 1e-5).sqrt() * s.unsqueeze() + b.unsqueeze()
}

fn burns_scale_shift(x: Tensor<3>, s: Tensor<1>, b: Tensor<1>) -> Tensor<3> {
    x * s.unsqueeze() + b.unsqueeze()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap_or_default()
}

/// Host values of one case: input, output weights, scale, shift.
struct Case {
    shape: [usize; 3],
    x: Vec<f32>,
    w: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl Case {
    fn new(shape: [usize; 3]) -> Self {
        let d = Device::flex();
        let c = shape[2];
        let draw = |shape: Vec<usize>, dist| {
            host(Tensor::<1>::random(
                [shape.iter().product::<usize>()],
                dist,
                &d,
            ))
        };
        Self {
            shape,
            x: draw(shape.to_vec(), Distribution::Normal(0.3, 2.0)),
            w: draw(shape.to_vec(), Distribution::Default),
            scale: draw(vec![c], Distribution::Normal(1.0, 0.3)),
            shift: draw(vec![c], Distribution::Normal(0.0, 0.3)),
        }
    }

    /// Output and the gradients of x, scale and shift of `op` on `device` (autodiff).
    fn run(&self, op: Op, device: &Device) -> [Vec<f32>; 4] {
        let t3 =
            |v: &Vec<f32>| Tensor::<3>::from_data(TensorData::new(v.clone(), self.shape), device);
        let t1 = |v: &Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), device).require_grad()
        };
        let x = t3(&self.x).require_grad();
        let (s, b) = (t1(&self.scale), t1(&self.shift));
        // a tracked op before and after, as in the model
        let y = op(x.clone() * 1.5, s.clone(), b.clone()) * t3(&self.w);
        let out = host(y.clone().inner());
        let grads = y.sum().backward();
        [
            x.grad(&grads).map(host).unwrap_or_default(),
            s.grad(&grads).map(host).unwrap_or_default(),
            b.grad(&grads).map(host).unwrap_or_default(),
            out,
        ]
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    assert!(!got.is_empty(), "{what}: nothing came back");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / (1.0 + w.abs());
        assert!(err <= tol, "{what}[{i}]: {g} against {w}");
    }
}

fn check(fused: Op, reference: Op) {
    // rows across the workgroup and chunk splits, widths below, at and above the row threads
    for shape in [[2, 3, 5], [3, 77, 384], [1, 130, 97]] {
        let case = Case::new(shape);
        let want = case.run(reference, &Device::flex().autodiff());
        for (name, device) in devices() {
            for (mode, ad) in [
                ("", device.clone().autodiff()),
                (
                    " with checkpointing",
                    device.autodiff().gradient_checkpointing(),
                ),
            ] {
                let got = case.run(fused, &ad);
                for (i, what) in ["x gradient", "scale gradient", "shift gradient", "output"]
                    .iter()
                    .enumerate()
                {
                    assert_close(
                        &got[i],
                        &want[i],
                        5e-5,
                        &format!("{name}{mode} {what} {shape:?}"),
                    );
                }
            }
        }
    }
}

#[test]
fn fused_layer_norm_matches_burns_ops_on_every_backend() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    check(layer_norm::<3>, burns_layer_norm);
}

#[test]
fn fused_scale_shift_matches_burns_ops_on_every_backend() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    check(scale_shift::<3>, burns_scale_shift);
}

#[test]
fn fused_forward_without_autodiff_matches_on_every_backend() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new([4, 9, 16]);
    let flex = Device::flex();
    let on = |d: &Device| {
        (
            Tensor::<3>::from_data(TensorData::new(case.x.clone(), case.shape), d),
            Tensor::<1>::from_data(TensorData::new(case.scale.clone(), [16]), d),
            Tensor::<1>::from_data(TensorData::new(case.shift.clone(), [16]), d),
        )
    };
    let (x, s, b) = on(&flex);
    let want = host(burns_layer_norm(x, s, b));
    for (name, device) in devices() {
        let (x, s, b) = on(&device);
        assert_close(&host(layer_norm(x, s, b)), &want, 2e-5, name);
    }
}

/// Kernel launches on `device` of one `run` after a first, compiling run, everything synced:
/// the total and the count per kernel name (printed for the test log).
fn launches_of<T>(device: &Device, run: impl Fn() -> T) -> (u64, Vec<(String, u64)>) {
    let _ = run();
    let _ = device.sync();
    let count = LaunchCount::start();
    let _ = run();
    let _ = device.sync();
    let kernels = count.by_kernel();
    println!("{kernels:?}");
    (count.total(), kernels)
}

/// Launches of a LayerNorm's forward and backward on wgpu, everything synced.
fn launches(op: Op) -> u64 {
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff();
    let case = Case::new([4, 65, 384]);
    launches_of(&device, || case.run(op, &device)).0
}

#[test]
fn a_fused_layer_norm_step_launches_fewer_kernels_on_wgpu() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let fused = launches(layer_norm::<3>);
    let by_ops = launches(burns_layer_norm);
    println!("launches per LayerNorm step on wgpu: fused {fused}, burn's ops {by_ops}");
    assert!(fused > 0, "nothing was launched");
    assert!(
        fused < by_ops,
        "fused {fused} launches, burn's ops {by_ops}"
    );
}

/// TFTS between two element-wise ops is why `model::layers::Tfts` keeps burn's broadcast ops
/// on wgpu: fusion merges them with their neighbours, and the opaque `scale_shift` op of
/// `model::norm` is a fusion boundary on both sides.
#[test]
fn tfts_between_element_wise_ops_launches_fewer_kernels_as_burns_ops_on_wgpu() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let opaque = launches(scale_shift::<3>);
    let by_ops = launches(burns_scale_shift);
    println!("launches per TFTS step on wgpu: opaque op {opaque}, burn's ops {by_ops}");
    assert!(by_ops > 0, "nothing was launched");
    assert!(
        by_ops < opaque,
        "burn's ops {by_ops} launches, the opaque op {opaque}"
    );
}

/// Softmax's output and input gradient under a weighted sum on `device` (autodiff).
fn softmax_case(
    x: &[f32],
    w: &[f32],
    shape: [usize; 4],
    device: &Device,
    burns: bool,
) -> [Vec<f32>; 2] {
    let t = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), device);
    let xa = t(x).require_grad();
    let scores = xa.clone() * 2.0;
    let y = if burns {
        burn::tensor::activation::softmax(scores, 3)
    } else {
        softmax_last(scores)
    } * t(w);
    let out = host(y.clone().inner());
    let grads = y.sum().backward();
    [xa.grad(&grads).map(host).unwrap_or_default(), out]
}

fn softmax_inputs(shape: [usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let d = Device::flex();
    let n: usize = shape.iter().product();
    (
        host(Tensor::<1>::random([n], Distribution::Normal(0.0, 4.0), &d)),
        host(Tensor::<1>::random([n], Distribution::Default, &d)),
    )
}

#[test]
fn fused_softmax_matches_burns_on_every_backend() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    // rows shorter than, equal to and longer than the row threads; the attention's shape
    for shape in [[2, 3, 5, 5], [2, 2, 64, 64], [2, 6, 77, 77], [1, 1, 3, 300]] {
        let (x, w) = softmax_inputs(shape);
        let want = softmax_case(&x, &w, shape, &Device::flex().autodiff(), true);
        for (name, device) in devices() {
            for (mode, ad) in [
                ("", device.clone().autodiff()),
                (
                    " with checkpointing",
                    device.autodiff().gradient_checkpointing(),
                ),
            ] {
                let got = softmax_case(&x, &w, shape, &ad, false);
                assert_close(
                    &got[0],
                    &want[0],
                    1e-5,
                    &format!("{name}{mode} gradient {shape:?}"),
                );
                assert_close(
                    &got[1],
                    &want[1],
                    1e-6,
                    &format!("{name}{mode} output {shape:?}"),
                );
            }
        }
    }
}

#[test]
fn a_fused_softmax_step_launches_fewer_kernels_on_wgpu() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let shape = [2, 6, 65, 65];
    let (x, w) = softmax_inputs(shape);
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff();
    let count =
        |burns: bool| launches_of(&device, || softmax_case(&x, &w, shape, &device, burns)).0;
    let (fused, by_ops) = (count(false), count(true));
    println!("launches per softmax step on wgpu: fused {fused}, burn's ops {by_ops}");
    assert!(fused > 0, "nothing was launched");
    assert!(
        fused < by_ops,
        "fused {fused} launches, burn's ops {by_ops}"
    );
}

/// The attention core's output and qkv gradient under a weighted sum on `device` (autodiff).
fn attention_case(
    x: &[f32],
    w: &[f32],
    [b, t, c]: [usize; 3],
    heads: usize,
    device: &Device,
    burns: bool,
) -> [Vec<f32>; 2] {
    let xa =
        Tensor::<3>::from_data(TensorData::new(x.to_vec(), [b, t, 3 * c]), device).require_grad();
    let wt = Tensor::<3>::from_data(TensorData::new(w.to_vec(), [b, t, c]), device);
    let qkv = xa.clone() * 1.5;
    let y = if burns {
        attention_by_ops(qkv, heads)
    } else {
        attention_core(qkv, heads)
    } * wt;
    let out = host(y.clone().inner());
    let grads = y.sum().backward();
    [xa.grad(&grads).map(host).unwrap_or_default(), out]
}

fn attention_inputs([b, t, c]: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let d = Device::flex();
    (
        host(Tensor::<1>::random(
            [b * t * 3 * c],
            Distribution::Normal(0.0, 1.0),
            &d,
        )),
        host(Tensor::<1>::random([b * t * c], Distribution::Default, &d)),
    )
}

#[test]
fn fused_attention_core_matches_burns_ops_on_every_backend() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    // heads narrower and wider than the row threads, one token, the model's shape
    for (shape, heads) in [
        ([2, 5, 8], 2),
        ([1, 1, 12], 3),
        ([2, 70, 384], 6),
        ([1, 9, 256], 2),
    ] {
        let (x, w) = attention_inputs(shape);
        let want = attention_case(&x, &w, shape, heads, &Device::flex().autodiff(), true);
        for (name, device) in devices() {
            for (mode, ad) in [
                ("", device.clone().autodiff()),
                (
                    " with checkpointing",
                    device.autodiff().gradient_checkpointing(),
                ),
            ] {
                let got = attention_case(&x, &w, shape, heads, &ad, false);
                assert_close(
                    &got[0],
                    &want[0],
                    1e-4,
                    &format!("{name}{mode} gradient {shape:?}"),
                );
                assert_close(
                    &got[1],
                    &want[1],
                    1e-5,
                    &format!("{name}{mode} output {shape:?}"),
                );
            }
        }
    }
}

#[test]
fn a_fused_attention_step_launches_fewer_kernels_on_wgpu() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let shape = [2, 65, 384];
    let (x, w) = attention_inputs(shape);
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff();
    let count =
        |burns: bool| launches_of(&device, || attention_case(&x, &w, shape, 6, &device, burns)).0;
    let (fused, by_ops) = (count(false), count(true));
    println!("launches per attention step on wgpu: fused {fused}, burn's ops {by_ops}");
    assert!(fused > 0, "nothing was launched");
    assert!(
        fused < by_ops,
        "fused {fused} launches, burn's ops {by_ops}"
    );
}

type Knn = fn(&Tensor<3>, &Tensor<3>, usize) -> Tensor<3, burn::tensor::Int>;

#[test]
fn grouping_launches_one_kernel_each_for_fps_and_knn_on_wgpu() {
    use dapt::model::grouping::device as dg;
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let (b, n, g, k) = (2, 1024, 64, 32);
    let v: Vec<f32> = (0..b * n * 3)
        .map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0)
        .collect();
    // on the autodiff device the training step uses: the points carry no gradient
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff();
    let cloud = Tensor::<3>::from_data(TensorData::new(v, [b, n, 3]), &device);
    let count = |by_ops: bool| {
        let run = || {
            let (centre_idx, knn): (_, Knn) = if by_ops {
                (dg::fps_by_ops(&cloud, g), dg::knn_by_ops)
            } else {
                (dg::fps(&cloud, g), dg::knn)
            };
            let centres = dg::gather_points(&cloud, centre_idx);
            let idx = knn(&cloud, &centres, k);
            assert_eq!(idx.dims(), [b, g, k]);
            idx
        };
        let (total, kernels) = launches_of(&device, run);
        let named = |name: &str| {
            kernels
                .iter()
                .find(|(k, _)| k == name)
                .map_or(0, |(_, n)| *n)
        };
        (total, named("FpsKernel"), named("KnnKernel"))
    };
    let (ours, fps_launches, knn_launches) = count(false);
    let (by_ops, _, _) = count(true);
    println!(
        "launches to group {b} clouds on wgpu: one operation each {ours}, tensor-op rounds {by_ops}"
    );
    assert_eq!((fps_launches, knn_launches), (1, 1));
    // the centres' gather around them (its slices and fused element-wise kernels), no rounds
    assert!(ours <= 12, "{ours} launches");
    assert!(by_ops > 10 * ours, "tensor-op rounds took {by_ops}");
}

/// BatchNorm in training mode and a biased linear layer over a long row axis, forward and
/// gradients (input, scale, shift, bias, weight) and the running statistics: on wgpu the row
/// axis is split in two for every reduction (`model::row_split`), on burn-flex it is not.
fn long_rows_case(device: &Device, rows: usize) -> Vec<Vec<f32>> {
    use burn::module::Param;
    use dapt::model::layers::{BatchNorm, linear};
    let c = 24;
    let ad = device.clone().autodiff();
    let v = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 2003) as f32) / 1001.0 - 1.0)
            .collect()
    };
    let x = Tensor::<2>::from_data(TensorData::new(v(rows * c, 1), [rows, c]), &ad).require_grad();
    let mut bn = BatchNorm::new(c, &ad);
    bn.weight = Param::from_tensor(Tensor::from_data(TensorData::new(v(c, 5), [c]), &ad));
    bn.bias = Param::from_tensor(Tensor::from_data(TensorData::new(v(c, 9), [c]), &ad));
    let mut lin = linear(c, 16, true, &ad);
    lin.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(v(c * 16, 3), [c, 16]),
        &ad,
    ));
    lin.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(v(16, 4), [16]),
        &ad,
    )));
    let y = lin.forward(bn.forward(x.clone() * 3.0 + 0.5, true));
    let w = Tensor::<2>::from_data(TensorData::new(v(rows * 16, 7), [rows, 16]), &ad);
    let grads = (y.clone() * w).sum().backward();
    let grad = |t: Tensor<1>| host(t.grad(&grads).expect("a gradient"));
    vec![
        host(y.inner()),
        host(x.grad(&grads).expect("input gradient")),
        grad(bn.weight.val()),
        grad(bn.bias.val()),
        grad(lin.bias.as_ref().expect("bias").val()),
        host(lin.weight.val().grad(&grads).expect("weight gradient")),
        host(bn.running_mean.val()),
        host(bn.running_var.val()),
    ]
}

#[test]
fn long_row_reductions_split_on_wgpu_match_burn_flex() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let want = long_rows_case(&Device::flex(), 8192);
    let got = long_rows_case(&Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), 8192);
    let names = [
        "output",
        "input grad",
        "scale grad",
        "shift grad",
        "bias grad",
        "weight grad",
        "running mean",
        "running var",
    ];
    for ((g, w), name) in got.iter().zip(&want).zip(names) {
        assert!(!w.is_empty(), "{name}: nothing");
        // sums over 8,192 rows in another order: relative to the largest value
        let scale = w.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        assert_close(g, w, 2e-5 * scale.max(1.0), name);
    }
}

#[test]
fn long_row_reductions_run_in_two_stages_on_wgpu() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    let reductions = |rows: usize| {
        println!("{rows} rows:");
        let (_, kernels) = launches_of(&device, || long_rows_case(&device, rows));
        kernels
            .iter()
            .filter(|(k, _)| k.starts_with("Reduce"))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    // 4,000 rows are below the split, 8,192 above it: the same graph, each row reduction twice
    let (one_stage, two_stage) = (reductions(4000), reductions(8192));
    println!("row reductions: {one_stage} in one stage, {two_stage} in two");
    assert!(one_stage > 0);
    assert!(two_stage >= one_stage + 6, "{one_stage} and {two_stage}");
}
