//! `dapt bench`: times the real training (or inference) path on random clouds, for speed
//! and memory comparisons with the PyTorch implementation.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;

use crate::backend::{BackendChoice, select};
use crate::data::Rng;
use crate::model::ModelConfig;
use crate::model::layers::ForwardCtx;
use crate::train::engine::{build_model, train_step};
use crate::train::optim::AdamW;
use crate::train::{Mode, TrainConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Dapt,
    Full,
    Linear,
    Infer,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model config (default: the official ModelNet40 DAPT model).
    #[arg(long)]
    pub config: Option<PathBuf>,
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
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut model_cfg = match &args.config {
        Some(p) => ModelConfig::load(p)?,
        None => ModelConfig::dapt_modelnet40(),
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
    let clouds: Vec<[f32; 3]> = (0..b * npoints)
        .map(|_| {
            [
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
            ]
        })
        .collect();
    let labels: Vec<usize> = (0..b).map(|i| i % model_cfg.cls_dim).collect();
    let mut times = Vec::new();
    if args.mode == BenchMode::Infer {
        let mut model = model.valid();
        for i in 0..args.warmup + args.steps {
            let t = Instant::now();
            let mut ctx = ForwardCtx::eval();
            let (out, _) = model.forward_points(&clouds, b, npoints, &device, &mut ctx)?;
            let _ = out.logits.into_data();
            if i >= args.warmup {
                times.push(t.elapsed().as_secs_f64());
            }
        }
    } else {
        let ad = device.clone().autodiff();
        let mut model = model.train();
        let mut opt = AdamW::new(cfg.optim.clone());
        for i in 0..args.warmup + args.steps {
            let t = Instant::now();
            // the batch sampling of `dapt train` is per-batch host work; include FPS grouping
            // (inside forward_points) but not data loading, as PyTorch benchmarks do
            let (m, _loss, _) = train_step(
                model, &mut opt, &clouds, &labels, npoints, 1e-4, &mut rng, &ad,
            )?;
            model = m;
            if i >= args.warmup {
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let v = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "batch": b,
        "points": npoints,
        "steps": args.steps,
        "ms_per_step": median * 1e3,
        "samples_per_s": b as f64 / median.max(1e-12),
        "peak_memory_mib": super::output::peak_rss_mib(),
        "backend": selected.description,
        "threads": threads,
    });
    if args.json {
        super::output::print_json(&v);
    } else {
        println!(
            "{} batch {b} x {npoints} points on {}: {:.1} ms/step (median of {}), {:.1} samples/s, peak RSS {:.0} MiB",
            v["mode"].as_str().unwrap_or(""),
            selected.description,
            median * 1e3,
            args.steps,
            b as f64 / median.max(1e-12),
            super::output::peak_rss_mib().unwrap_or(0.0)
        );
    }
    Ok(())
}
