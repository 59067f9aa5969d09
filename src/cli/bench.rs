//! `dapt bench`: times the real training (or inference) path on random clouds, for speed
//! and memory comparisons with the PyTorch implementation.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;

use crate::backend::{BackendChoice, select};
use crate::data::Rng;
use crate::launches::LaunchCount;
use crate::model::ModelConfig;
use crate::model::grouping::Placement;
use crate::model::layers::ForwardCtx;
use crate::readback::reads_on_this_thread;
use crate::train::batch::Item;
use crate::train::engine::{build_model, train_step, train_step_items};
use crate::train::optim::AdamW;
use crate::train::{Mode, TrainConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Dapt,
    Full,
    Linear,
    Infer,
}

/// The official model configurations `dapt bench` knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// ModelNet40: 1024 points, 64 groups of 32, 40 classes.
    Modelnet40,
    /// ScanObjectNN OBJ_BG: 2048 points, 128 groups of 32, 15 classes.
    Objbg,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model config file (overrides --preset).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// One of the official DAPT model configurations.
    #[arg(long, value_enum, default_value_t = Preset::Modelnet40)]
    pub preset: Preset,
    #[arg(long, value_enum, default_value_t = BenchMode::Dapt)]
    pub mode: BenchMode,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Points per cloud (default: the config's npoints).
    #[arg(long)]
    pub points: Option<usize>,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Include `dapt train`'s input pipeline in each training step: FPS pre-sampling of
    /// stored clouds to the official size (1200 for 1024 points), the random column subset
    /// and the per-sample scale and translate.
    #[arg(long)]
    pub with_data: bool,
    /// Keep every intermediate for backward, as `dapt train --no-checkpointing` does (by
    /// default element-wise and shape ops are recomputed, as in `dapt train`).
    #[arg(long)]
    pub no_checkpointing: bool,
    /// Recompute each transformer block in backward from its input, as `dapt train
    /// --recompute-blocks` does (training modes only).
    #[arg(long)]
    pub recompute_blocks: bool,
    /// Points per stored cloud for `--with-data` (default: 8192, the official ModelNet40
    /// files, or the model's npoints when it is larger).
    #[arg(long)]
    pub stored_points: Option<usize>,
    /// Also time plain matmuls on the backend, the model's own shapes and a square 2048³ (the
    /// roofline), and for `--mode infer` report the fraction of it the model reaches.
    #[arg(long)]
    pub roofline: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let v = measure(&args)?;
    if args.json {
        super::output::print_json(&v);
    } else {
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        println!(
            "{} batch {} x {} points on {}: {:.1} ms/step (mean of {}{}), {:.1} samples/s, peak RSS {:.0} MiB (heap {}{}), {} host reads per step, grouping on the {}{}",
            v["mode"].as_str().unwrap_or(""),
            v["batch"],
            v["points"],
            v["backend"].as_str().unwrap_or(""),
            f("ms_per_step"),
            args.steps,
            match v["ms_per_step_median"].as_f64() {
                Some(m) => format!("; median {m:.1}"),
                None => String::new(),
            },
            f("samples_per_s"),
            f("peak_memory_mib"),
            v["heap"].as_str().unwrap_or(""),
            match v["minor_faults_per_step"].as_f64() {
                Some(n) => format!(", {n:.0} page faults per step"),
                None => String::new(),
            },
            f("host_reads_per_step"),
            v["grouping"].as_str().unwrap_or(""),
            match v["kernel_launches_per_step"].as_f64() {
                Some(n) => format!(", {n:.0} kernel launches per step"),
                None => String::new(),
            },
        );
        if let Some(r) = v["matmul_gflop_per_s"].as_f64() {
            let reached = match (v["gflop_per_s"].as_f64(), v["roofline_fraction"].as_f64()) {
                (Some(g), Some(f)) => {
                    format!("; the model {g:.1} GFLOP/s, {:.0}% of it", f * 100.0)
                }
                _ => String::new(),
            };
            println!("matmul roofline {r:.1} GFLOP/s{reached}");
        }
        if let Some(phases) = v["phases_ms"].as_object() {
            let parts: Vec<String> = crate::phases::Phase::ALL
                .iter()
                .map(|p| {
                    let ms = phases.get(p.name()).and_then(|v| v.as_f64());
                    format!("{} {:.1} ms", p.name(), ms.unwrap_or(0.0))
                })
                .collect();
            println!("per step: {}", parts.join(", "));
        }
    }
    Ok(())
}

/// Runs `step` `warmup` times, syncs, then times `steps` more between two device syncs: on a
/// GPU a step only queues work, so per-step wall times would measure the host alone. Where
/// the backend computes as it is called (`synchronous`: burn-flex), each step's wall time is
/// kept too. Returns the seconds, the host reads the timed steps made and the kernels they
/// launched.
fn time_steps(
    device: &Device,
    warmup: usize,
    steps: usize,
    synchronous: bool,
    mut step: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Timed> {
    let sync = || {
        device
            .sync()
            .map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))
    };
    for _ in 0..warmup {
        step()?;
    }
    sync()?;
    let phases_before = crate::phases::totals();
    let reads_before = reads_on_this_thread();
    let launches = LaunchCount::start();
    let faults_before = crate::heap::minor_faults();
    let mut step_secs = Vec::with_capacity(if synchronous { steps } else { 0 });
    let t = Instant::now();
    for _ in 0..steps {
        let t_step = Instant::now();
        step()?;
        if synchronous {
            step_secs.push(t_step.elapsed().as_secs_f64());
        }
    }
    // fused kernels are issued at the flush the sync forces, so count after it
    sync()?;
    Ok(Timed {
        secs: t.elapsed().as_secs_f64(),
        step_secs,
        minor_faults: crate::heap::minor_faults()
            .zip(faults_before)
            .map(|(after, before)| after.saturating_sub(before)),
        reads: reads_on_this_thread() - reads_before,
        launches: launches.total(),
        by_kernel: launches.by_kernel(),
        phases: crate::phases::totals().since(&phases_before),
    })
}

/// The median of `values` (the mean of the middle two for an even count), `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

struct Timed {
    secs: f64,
    /// Each timed step's wall time, on a synchronous backend; empty on a GPU.
    step_secs: Vec<f64>,
    /// Page faults over the timed steps (every thread of the process), where the OS counts them.
    minor_faults: Option<u64>,
    reads: u64,
    launches: u64,
    by_kernel: Vec<(String, u64)>,
    /// Seconds per phase over the timed steps (all zero unless `DAPT_PHASE_TIMES` is set).
    phases: crate::phases::PhaseTotals,
}

/// The best matmul throughput (GFLOP/s) of `device`: over the model's three main shapes at
/// batch `b` (the encoder's per-point layer, the blocks' qkv, the MLP's first layer) and a
/// square 2048³ product, the shape matmul kernels reach their peak on. Each is timed over a
/// few products queued back to back between two syncs, after a warm-up.
fn matmul_roofline(
    device: &Device,
    cfg: &ModelConfig,
    b: usize,
) -> anyhow::Result<(f64, serde_json::Value)> {
    use burn::tensor::{Distribution, Tensor};
    let c = cfg.trans_dim;
    let tokens = b * (1 + cfg.num_group);
    let shapes = [
        (b * cfg.num_group * cfg.group_size, 256, 512),
        (tokens, c, 3 * c),
        (tokens, c, 4 * c),
        (2048, 2048, 2048),
    ];
    let sync = || {
        device
            .sync()
            .map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))
    };
    let mut best = 0.0f64;
    let mut each = Vec::new();
    for (m, k, n) in shapes {
        let a = Tensor::<2>::random([m, k], Distribution::Default, device);
        let w = Tensor::<2>::random([k, n], Distribution::Default, device);
        drop(a.clone().matmul(w.clone()));
        sync()?;
        let reps = 4;
        let t = Instant::now();
        // keep the products alive so no backend can skip them
        let products: Vec<Tensor<2>> = (0..reps).map(|_| a.clone().matmul(w.clone())).collect();
        sync()?;
        let secs = t.elapsed().as_secs_f64() / reps as f64;
        drop(products);
        let rate = 2.0 * (m * k * n) as f64 / secs.max(1e-12) / 1e9;
        each.push(serde_json::json!({"m": m, "k": k, "n": n, "gflop_per_s": rate}));
        best = best.max(rate);
    }
    Ok((best, each.into()))
}

/// Runs the benchmark `args` describes and returns its JSON line.
pub fn measure(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    if args.with_data && args.mode == BenchMode::Infer {
        anyhow::bail!(
            "--with-data times dapt train's input pipeline; inference samples each test cloud once (drop --with-data or pick a training mode)"
        );
    }
    let mut model_cfg = match &args.config {
        Some(p) => ModelConfig::load(p)?,
        None => match args.preset {
            Preset::Modelnet40 => ModelConfig::dapt_modelnet40(),
            Preset::Objbg => ModelConfig::dapt_scan_objbg(),
        },
    };
    if let Some(p) = args.points {
        model_cfg.npoints = p;
    }
    let mode = match args.mode {
        BenchMode::Dapt | BenchMode::Infer => Mode::Dapt,
        BenchMode::Full => Mode::Full,
        BenchMode::Linear => Mode::Linear,
    };
    let cfg = TrainConfig {
        model: model_cfg.clone(),
        mode,
        ..TrainConfig::default()
    };
    let selected = select(args.backend);
    let device = selected.device.clone();
    let model = build_model(&cfg, &device)?;
    let npoints = model_cfg.npoints;
    let b = args.batch.max(1);
    let mut rng = Rng::new(0);
    let mut random_points = |n: usize| -> Vec<[f32; 3]> {
        (0..n)
            .map(|_| {
                [
                    rng.range(-1.0, 1.0),
                    rng.range(-1.0, 1.0),
                    rng.range(-1.0, 1.0),
                ]
            })
            .collect()
    };
    let clouds = random_points(b * npoints);
    let labels: Vec<usize> = (0..b).map(|i| i % model_cfg.cls_dim).collect();
    // `--with-data`: stored clouds as `dapt train` holds them, sampled by its batch pipeline
    let stored = args
        .stored_points
        .unwrap_or(8192)
        .max(npoints)
        .max(model_cfg.group_size);
    let items: Vec<Item> = if args.with_data {
        labels
            .iter()
            .map(|&label| Item {
                points: random_points(stored),
                label,
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut rng = Rng::new(1);
    let timed = if args.mode == BenchMode::Infer {
        let mut model = model.valid();
        time_steps(&device, args.warmup, args.steps, !selected.is_gpu, || {
            let mut ctx = ForwardCtx::eval();
            let (out, _) = model.forward_points(&clouds, b, npoints, &device, &mut ctx)?;
            // a prediction reads its logits
            crate::readback::host_vec(out.logits);
            Ok(())
        })?
    } else {
        let (mut model, ad) =
            crate::train::driver::for_training(model, &device, !args.no_checkpointing);
        model.recompute_blocks = args.recompute_blocks;
        let mut model = Some(model);
        let mut opt = AdamW::new(cfg.optim.clone());
        // Without `--with-data` a step starts from sampled clouds (grouping included, inside
        // the forward), as the PyTorch benchmark times it; with it, from stored clouds
        // through `dapt train`'s batch pipeline.
        let batch: Vec<&Item> = items.iter().collect();
        let point_all = cfg.point_all_for(npoints);
        let lr = 1e-4;
        time_steps(&device, args.warmup, args.steps, !selected.is_gpu, || {
            let m = model.take().ok_or_else(|| anyhow::anyhow!("no model"))?;
            let m = if batch.is_empty() {
                train_step(m, &mut opt, &clouds, &labels, npoints, lr, &mut rng, &ad)?.0
            } else {
                train_step_items(m, &mut opt, &batch, npoints, point_all, lr, &mut rng, &ad)?.0
            };
            model = Some(m);
            Ok(())
        })?
    };
    let steps = args.steps.max(1);
    let reads_per_step = timed.reads as f64 / steps as f64;
    let mean = timed.secs / steps as f64;
    // burn-flex computes on the host: no kernels to count
    let on_cubecl = selected.is_gpu;
    let per_step = |n: u64| n as f64 / steps as f64;
    let launches_per_step = on_cubecl.then(|| per_step(timed.launches));
    let top_kernels: Option<serde_json::Map<String, serde_json::Value>> = on_cubecl.then(|| {
        timed
            .by_kernel
            .iter()
            .take(8)
            .map(|(k, n)| (k.clone(), serde_json::json!(per_step(*n))))
            .collect()
    });
    let device_mib = device
        .memory_pool_usage()
        .map(|u| u.bytes_reserved as f64 / (1024.0 * 1024.0));
    let gflop_per_sample = model_cfg.forward_flops() / 1e9;
    let infer = args.mode == BenchMode::Infer;
    let gflop_per_s = infer.then(|| gflop_per_sample * b as f64 / mean.max(1e-12));
    // read before the roofline's matrices can raise it
    let peak_memory_mib = super::output::peak_rss_mib();
    let (roofline, matmul_shapes) = if args.roofline {
        let (best, each) = matmul_roofline(&device, &model_cfg, b)?;
        (Some(best), Some(each))
    } else {
        (None, None)
    };
    let fraction = gflop_per_s.zip(roofline).map(|(g, r)| g / r.max(1e-12));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let v = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "config": match &args.config {
            Some(p) => p.display().to_string(),
            None => format!("{:?}", args.preset).to_lowercase(),
        },
        "batch": b,
        "points": npoints,
        "with_data": args.with_data,
        "checkpointing": !args.no_checkpointing && args.mode != BenchMode::Infer,
        "recompute_blocks": args.recompute_blocks && args.mode != BenchMode::Infer,
        "stored_points": (!items.is_empty()).then_some(stored),
        "steps": args.steps,
        "ms_per_step": mean * 1e3,
        // on a synchronous backend: each step's time and their median, which a slow step
        // (a heap growing, the machine busy) moves less than the mean; PyTorch's reference
        // benchmark reports the median
        "ms_per_step_median": median(&timed.step_secs).map(|s| s * 1e3),
        "step_ms": (!timed.step_secs.is_empty())
            .then(|| timed.step_secs.iter().map(|s| s * 1e3).collect::<Vec<_>>()),
        "host_reads_per_step": reads_per_step,
        "phases_ms": (crate::phases::enabled() && args.mode != BenchMode::Infer)
            .then(|| timed.phases.per_step_ms(steps)),
        "kernel_launches_per_step": launches_per_step,
        "top_kernels_per_step": top_kernels,
        "grouping": Placement::for_device(&device).name(),
        "device_memory_mib": device_mib,
        "samples_per_s": b as f64 / mean.max(1e-12),
        "gflop_per_sample": gflop_per_sample,
        "gflop_per_s": gflop_per_s,
        "matmul_gflop_per_s": roofline,
        "matmul_shapes": matmul_shapes,
        "roofline_fraction": fraction,
        "peak_memory_mib": peak_memory_mib,
        "backend": selected.description,
        "threads": threads,
        "heap": crate::heap::policy().name(),
        "minor_faults_per_step": timed.minor_faults.map(|n| n as f64 / steps as f64),
    });
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_odd_and_even_counts_ignores_non_finite_values() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // one slow step moves the mean, not the median
        assert_eq!(median(&[1.5, 1.8, 1.5]), Some(1.5));
        assert_eq!(median(&[2.0, f64::INFINITY, 1.0]), Some(1.5));
    }
}
