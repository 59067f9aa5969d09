//! The sampling kernels against the reference fixtures and against each other:
//! the CPU reference (`dapt::gpu::cpu`) must reproduce `shared/fixtures/reference/sampling`,
//! and the WGSL kernels must return exactly the CPU's indices, on the fixtures and on seeded
//! random inputs built to hit the edge cases (ties, duplicates, points near the origin,
//! exhausted clouds, sizes that are not multiples of the workgroup size, batches).
//!
//! The GPU tests need a wgpu adapter. Without a GPU that is Mesa's lavapipe
//! (`apt-get install mesa-vulkan-drivers`); when no adapter exists they fail, never skip.
//! Shapes are kept small because lavapipe is slow.

mod common;

use std::collections::HashMap;
use std::sync::OnceLock;

use common::clouds::{Kind, batch};
use dapt::data::rng::Rng;
use dapt::gpu::{GpuContext, GpuError, cpu, fps_gpu, knn_gpu};

/// A fixture tensor: its shape and its values (floats as f32, int64 indices as usize).
struct Tensor {
    shape: Vec<usize>,
    f32s: Vec<f32>,
    ints: Vec<usize>,
}

impl Tensor {
    fn points(&self) -> Vec<[f32; 3]> {
        self.f32s
            .chunks_exact(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect()
    }
}

/// Every tensor of `sampling/io.safetensors`, read once.
fn fixture() -> &'static HashMap<String, Tensor> {
    static FIXTURE: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = common::fixture_dir("sampling").join("io.safetensors");
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{} is not a safetensors file: {e}", path.display()));
        st.tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = view.data();
                let (f32s, ints) = match view.dtype() {
                    safetensors::Dtype::F32 => (
                        data.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                        Vec::new(),
                    ),
                    safetensors::Dtype::I64 => (
                        Vec::new(),
                        data.chunks_exact(8)
                            .map(|c| {
                                let mut a = [0u8; 8];
                                a.copy_from_slice(c);
                                usize::try_from(i64::from_le_bytes(a))
                                    .expect("fixture indices are non-negative")
                            })
                            .collect(),
                    ),
                    other => panic!("unexpected dtype {other:?} for {name}"),
                };
                let shape = view.shape().to_vec();
                (name, Tensor { shape, f32s, ints })
            })
            .collect()
    })
}

fn tensor(name: &str) -> &'static Tensor {
    fixture()
        .get(name)
        .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
}

/// One device for the whole test binary: lavapipe compiles each pipeline once.
fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(c) => c,
        // GpuError::NoAdapter's message already says to install mesa-vulkan-drivers
        Err(e) => panic!("the GPU sampling tests need a wgpu adapter: {e}"),
    })
}

fn as_u32(v: &[usize]) -> Vec<u32> {
    v.iter().map(|&i| i as u32).collect()
}

/// One FPS fixture case: name, points, b, n, m, expected indices.
type FpsCase = (&'static str, Vec<[f32; 3]>, usize, usize, usize, Vec<usize>);

/// The three FPS fixture cases.
fn fps_cases() -> Vec<FpsCase> {
    ["a", "near_origin", "exhaust"]
        .into_iter()
        .map(|case| {
            let p = tensor(&format!("fps.{case}.points"));
            let idx = tensor(&format!("fps.{case}.idx"));
            let (b, n) = (p.shape[0], p.shape[1]);
            assert_eq!(idx.shape[0], b);
            let m = idx.shape[1];
            (case, p.points(), b, n, m, idx.ints.clone())
        })
        .collect()
}

/// Sorted copy of each row of `k` indices, for set comparisons.
fn sorted_rows(v: &[usize], k: usize) -> Vec<Vec<usize>> {
    v.chunks(k)
        .map(|r| {
            let mut r = r.to_vec();
            r.sort_unstable();
            r
        })
        .collect()
}

// ---------------------------------------------------------------- CPU vs fixtures

#[test]
fn cpu_fps_reproduces_every_fixture_case_in_order() {
    for (case, pts, b, n, m, want) in fps_cases() {
        let got = cpu::fps_batch(&pts, b, n, m);
        assert_eq!(got, want, "fps.{case}");
    }
    // the exhaust case really exercises the duplicates
    let exhaust = tensor("fps.exhaust.idx");
    assert!(exhaust.ints[1..].contains(&0));
}

#[test]
fn cpu_knn_reproduces_the_fixture() {
    let refs = tensor("fps.a.points");
    let q = tensor("knn.query");
    let idx = tensor("knn.idx");
    let dist = tensor("knn.dist");
    let (b, n, g, k) = (refs.shape[0], refs.shape[1], q.shape[1], idx.shape[2]);
    assert_eq!(k, 32);
    let (rp, qp) = (refs.points(), q.points());
    let got = cpu::knn_batch(&rp, &qp, b, n, g, k);
    assert_eq!(sorted_rows(&got, k), sorted_rows(&idx.ints, k));
    // the neighbours' Euclidean distances are the fixture's, in ascending order
    for (row, (ids, want)) in got.chunks(k).zip(dist.f32s.chunks(k)).enumerate() {
        let cloud = row / g;
        let qq = qp[row];
        for (j, (&i, &w)) in ids.iter().zip(want).enumerate() {
            let p = rp[cloud * n + i];
            let d =
                ((p[0] - qq[0]).powi(2) + (p[1] - qq[1]).powi(2) + (p[2] - qq[2]).powi(2)).sqrt();
            assert!(
                (d - w).abs() <= 1e-5 * (1.0 + w),
                "row {row} #{j}: {d} vs {w}"
            );
        }
    }
}

// ---------------------------------------------------------------- GPU vs fixtures

#[test]
fn gpu_fps_reproduces_every_fixture_case_in_order() {
    let ctx = ctx();
    for (case, pts, b, n, m, want) in fps_cases() {
        let got = fps_gpu(ctx, &pts, b, n, m).expect("fps_gpu");
        assert_eq!(got, as_u32(&want), "fps.{case}");
    }
}

#[test]
fn gpu_knn_reproduces_the_fixture_and_the_cpu_order() {
    let refs = tensor("fps.a.points");
    let q = tensor("knn.query");
    let idx = tensor("knn.idx");
    let (b, n, g, k) = (refs.shape[0], refs.shape[1], q.shape[1], idx.shape[2]);
    let (rp, qp) = (refs.points(), q.points());
    let got = knn_gpu(ctx(), &rp, &qp, b, n, g, k).expect("knn_gpu");
    let got: Vec<usize> = got.into_iter().map(|i| i as usize).collect();
    assert_eq!(sorted_rows(&got, k), sorted_rows(&idx.ints, k));
    assert_eq!(got, cpu::knn_batch(&rp, &qp, b, n, g, k));
}

// ---------------------------------------------------------------- GPU vs CPU, random

#[test]
fn gpu_fps_equals_cpu_on_random_inputs() {
    let ctx = ctx();
    let mut rng = Rng::new(0x5eed_f00d);
    // (kind, b, n, m): n off the workgroup size, m above the eligible count, batches
    let cases = [
        (Kind::Normal, 3, 1000, 64),
        (Kind::Normal, 1, 257, 257),
        (Kind::Normal, 2, 1, 3),
        (Kind::Normal, 1, 5, 1),
        (Kind::Grid, 2, 600, 90),
        (Kind::Duplicated, 2, 300, 150),
        (Kind::NearOrigin, 3, 200, 200),
        (Kind::AllNearOrigin, 2, 50, 6),
    ];
    for (kind, b, n, m) in cases {
        let pts = batch(&mut rng, kind, b, n);
        let want = as_u32(&cpu::fps_batch(&pts, b, n, m));
        let got = fps_gpu(ctx, &pts, b, n, m).expect("fps_gpu");
        assert_eq!(got, want, "{kind:?} b={b} n={n} m={m}");
    }
}

#[test]
fn gpu_knn_equals_cpu_on_random_inputs() {
    let ctx = ctx();
    let mut rng = Rng::new(0xc0ff_ee11);
    // (kind, b, n, g, k): queries drawn from the refs (self-matches) and off them
    let cases = [
        (Kind::Normal, 3, 500, 40, 32),
        (Kind::Normal, 1, 70, 65, 64),
        (Kind::Normal, 2, 7, 3, 7),
        (Kind::Normal, 2, 100, 5, 1),
        (Kind::Grid, 2, 300, 50, 32),
        (Kind::Duplicated, 2, 200, 20, 16),
        (Kind::NearOrigin, 1, 150, 30, 20),
    ];
    for (kind, b, n, g, k) in cases {
        let refs = batch(&mut rng, kind, b, n);
        let mut queries = Vec::with_capacity(b * g);
        for c in 0..b {
            for j in 0..g {
                queries.push(if j % 2 == 0 {
                    refs[c * n + rng.below(n)]
                } else {
                    [rng.normal(), rng.normal(), rng.normal()]
                });
            }
        }
        let want = as_u32(&cpu::knn_batch(&refs, &queries, b, n, g, k));
        let got = knn_gpu(ctx, &refs, &queries, b, n, g, k).expect("knn_gpu");
        assert_eq!(got, want, "{kind:?} b={b} n={n} g={g} k={k}");
    }
}

#[test]
fn gpu_rejects_bad_arguments_with_typed_errors() {
    let ctx = ctx();
    let pts = vec![[1.0f32, 2.0, 3.0]; 10];
    assert!(matches!(
        fps_gpu(ctx, &pts, 2, 4, 2),
        Err(GpuError::InvalidInput(_))
    ));
    assert!(matches!(
        knn_gpu(ctx, &pts, &pts[..2], 2, 5, 1, 6),
        Err(GpuError::InvalidInput(_))
    ));
    let many = vec![[1.0f32, 2.0, 3.0]; 100];
    assert!(matches!(
        knn_gpu(ctx, &many, &many[..1], 1, 100, 1, 65),
        Err(GpuError::InvalidInput(_))
    ));
    assert_eq!(
        fps_gpu(ctx, &pts, 1, 10, 0).expect("m = 0"),
        Vec::<u32>::new()
    );
}

/// A device whose limits force the batch to be split: tiny storage buffers and at most two
/// workgroups per dispatch. Results must not depend on the chunking.
#[test]
fn gpu_splits_batches_that_exceed_the_device_limits() {
    let base = ctx();
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let adapter = adapters
        .into_iter()
        .find(|a| a.get_info() == base.adapter_info)
        .expect("the adapter of the shared context");
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 4096,
        max_buffer_size: 4096,
        max_compute_workgroups_per_dimension: 2,
        ..adapter.limits()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("limited"),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("device with lowered limits");
    let small = GpuContext::from_existing(device, queue, adapter.get_info());
    assert_eq!(small.max_storage_bytes(), 4096);

    let mut rng = Rng::new(7);
    // 100 points = 1200 bytes a cloud: 3 clouds per buffer, 2 per dispatch
    let (b, n, m) = (5, 100, 20);
    let pts = batch(&mut rng, Kind::Normal, b, n);
    let want = as_u32(&cpu::fps_batch(&pts, b, n, m));
    assert_eq!(fps_gpu(&small, &pts, b, n, m).expect("fps_gpu"), want);

    // 20 queries x 16 neighbours = 1280 bytes a cloud; 128 queries per dispatch
    let g = 20;
    let queries = batch(&mut rng, Kind::Normal, b, g);
    let want = as_u32(&cpu::knn_batch(&pts, &queries, b, n, g, 16));
    assert_eq!(
        knn_gpu(&small, &pts, &queries, b, n, g, 16).expect("knn_gpu"),
        want
    );

    // one cloud larger than a buffer cannot be split
    let big = batch(&mut rng, Kind::Normal, 1, 400);
    assert!(matches!(
        fps_gpu(&small, &big, 1, 400, 4),
        Err(GpuError::BufferTooLarge { .. })
    ));
}

/// FPS as a kernel whose compiler fused the distance into FMAs would compute it.
fn fps_fused(points: &[[f32; 3]], m: usize) -> Vec<usize> {
    let eligible: Vec<bool> = points
        .iter()
        .map(|p| p[0] * p[0] + p[1] * p[1] + p[2] * p[2] > 1e-3)
        .collect();
    let mut temp = vec![1e10f32; points.len()];
    let mut out = vec![0usize];
    for _ in 1..m {
        let po = points[out[out.len() - 1]];
        let (mut best, mut besti) = (-1.0f32, 0usize);
        for (k, p) in points.iter().enumerate() {
            if !eligible[k] {
                continue;
            }
            let (dx, dy, dz) = (p[0] - po[0], p[1] - po[1], p[2] - po[2]);
            let d = dz.mul_add(dz, dx.mul_add(dx, dy * dy));
            temp[k] = d.min(temp[k]);
            if temp[k] > best {
                best = temp[k];
                besti = k;
            }
        }
        out.push(besti);
    }
    out
}

/// Points on a sphere around the seed: their squared distances are equal up to rounding, so
/// the pick depends on the last bit. A kernel that lets the compiler fuse `a*b + c` into an
/// FMA (which rounds once) picks differently from the CPU on these clouds.
#[test]
fn gpu_distances_round_like_the_cpu_even_where_fma_would_differ() {
    let ctx = ctx();
    let mut rng = Rng::new(11);
    let mut found = 0;
    for _ in 0..2000 {
        let mut pts = vec![[0.5f32, 0.25, 0.125]];
        for _ in 0..15 {
            let v = [rng.normal(), rng.normal(), rng.normal()];
            let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-6) / 0.75;
            pts.push([
                pts[0][0] + v[0] / r,
                pts[0][1] + v[1] / r,
                pts[0][2] + v[2] / r,
            ]);
        }
        let want = cpu::fps(&pts, 4);
        if fps_fused(&pts, 4) == want {
            continue;
        }
        found += 1;
        let got = fps_gpu(ctx, &pts, 1, pts.len(), 4).expect("fps_gpu");
        assert_eq!(got, as_u32(&want), "FMA-sensitive cloud {found}");
        if found == 5 {
            break;
        }
    }
    assert!(found > 0, "the search found no FMA-sensitive cloud");
}
