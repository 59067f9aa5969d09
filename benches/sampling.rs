//! Sampling benchmark: FPS and KNN on the CPU reference and on the WGSL kernels, at the shapes
//! the model uses (batch 32; 64 groups of 1024 points and 128 of 2048; k = 32 around the FPS
//! centres). Prints the median wall time of a few repeats and the GPU/CPU ratio.
//!
//! Run with `cargo bench --bench sampling`. GPU times include upload, dispatch and read-back,
//! i.e. what a caller of `fps_gpu`/`knn_gpu` pays; the pipelines are compiled in a warm-up call
//! that is not timed. On lavapipe (software Vulkan) the GPU column is the CPU emulating a GPU.

use std::time::Instant;

use dapt::data::rng::Rng;
use dapt::gpu::{GpuContext, cpu, fps_gpu, knn_gpu};

const BATCH: usize = 32;
const REPEATS: usize = 5;
const K: usize = 32;

/// Median milliseconds of `REPEATS` timed runs after one untimed warm-up.
fn median_ms<T>(mut f: impl FnMut() -> T) -> f64 {
    std::hint::black_box(f());
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = GpuContext::new()?;
    println!(
        "adapter: {} ({:?}, {:?}); batch {BATCH}, median of {REPEATS} runs",
        ctx.adapter_info.name, ctx.adapter_info.backend, ctx.adapter_info.device_type
    );
    println!(
        "{:<28} {:>10} {:>10} {:>9}",
        "kernel", "CPU ms", "GPU ms", "GPU/CPU"
    );
    let mut rng = Rng::new(2024);
    for (n, m) in [(1024usize, 64usize), (2048, 128)] {
        let points: Vec<[f32; 3]> = (0..BATCH * n)
            .map(|_| [rng.normal(), rng.normal(), rng.normal()])
            .collect();

        let centres_idx = cpu::fps_batch(&points, BATCH, n, m);
        if fps_gpu(&ctx, &points, BATCH, n, m)?
            != centres_idx.iter().map(|&i| i as u32).collect::<Vec<_>>()
        {
            return Err("GPU FPS differs from the CPU reference".into());
        }
        let cpu_fps = median_ms(|| cpu::fps_batch(&points, BATCH, n, m));
        let gpu_fps = median_ms(|| fps_gpu(&ctx, &points, BATCH, n, m));
        row(&format!("FPS {m} of {n}"), cpu_fps, gpu_fps);

        let centres: Vec<[f32; 3]> = centres_idx
            .chunks(m)
            .enumerate()
            .flat_map(|(c, idx)| idx.iter().map(move |&i| (c, i)))
            .map(|(c, i)| points[c * n + i])
            .collect();
        let cpu_knn = median_ms(|| cpu::knn_batch(&points, &centres, BATCH, n, m, K));
        let gpu_knn = median_ms(|| knn_gpu(&ctx, &points, &centres, BATCH, n, m, K));
        row(&format!("KNN k={K}, {m} queries of {n}"), cpu_knn, gpu_knn);
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    println!("CPU FPS is single-threaded; CPU KNN uses {threads} threads over the batch.");
    Ok(())
}

fn row(name: &str, cpu: f64, gpu: f64) {
    println!("{name:<28} {cpu:>10.2} {gpu:>10.2} {:>9.2}", gpu / cpu);
}
