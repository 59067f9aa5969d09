//! `dapt pretrain`: Point-MAE masked point modelling on any data set; with no arguments, a
//! short demonstration on the built-in synthetic shapes that yields a backbone for
//! `dapt train --init RUN_DIR/backbone.safetensors`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, channel};

use anyhow::Context;

use crate::backend::BackendChoice;
use crate::model::pretrain::MaeConfig;
use crate::train::TrainEvent;
use crate::train::pretrain::{PretrainConfig, read_config};

#[derive(clap::Args, Debug, Default)]
pub struct PretrainArgs {
    /// Official pre-training YAML (`cfgs/pretrain.yaml`: model block plus optimizer,
    /// scheduler and total_bs) or a pre-training run's config.json.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `synthetic` (default), `shapenet55:PATH`, `modelnet40:PATH`, `folder:PATH`, ... or a
    /// path whose layout is detected; labels are ignored.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Fraction of patches masked per cloud (official 0.6).
    #[arg(long)]
    pub mask_ratio: Option<f64>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Run directory (default `runs/pretrain-demo`, or `runs/pretrain-<data>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted pre-training run from its last checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Also write the best epoch in the official `pretrain.pth` layout here (default
    /// `RUN_DIR/pretrain.pth`).
    #[arg(long)]
    pub export_pth: Option<PathBuf>,
    /// JSON lines only on stdout.
    #[arg(long)]
    pub json: bool,
}

fn yaml_f64(v: &serde_yaml::Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_f64()
}

/// A config from `--config`: a run's config.json, or an official YAML whose recipe keys we
/// honour (optimizer lr / weight_decay, scheduler epochs / initial_epochs, total_bs).
pub fn config_from_file(path: &std::path::Path) -> anyhow::Result<PretrainConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a pre-training configuration", path.display()));
    }
    let model = MaeConfig::from_yaml_str(&text).map_err(|e| e.with_path(path))?;
    let root: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let mut cfg = PretrainConfig {
        model,
        ..PretrainConfig::default()
    };
    if let Some(lr) = yaml_f64(&root, &["optimizer", "kwargs", "lr"]) {
        cfg.optim.lr = lr;
    }
    if let Some(wd) = yaml_f64(&root, &["optimizer", "kwargs", "weight_decay"]) {
        cfg.optim.weight_decay = wd;
    }
    if let Some(e) = yaml_f64(&root, &["scheduler", "kwargs", "epochs"]) {
        cfg.epochs = e as usize;
    }
    if let Some(w) = yaml_f64(&root, &["scheduler", "kwargs", "initial_epochs"]) {
        cfg.warmup_epochs = w as usize;
    }
    if let Some(b) = yaml_f64(&root, &["total_bs"]) {
        cfg.batch = b as usize;
    }
    Ok(cfg)
}

/// Builds the run configuration from the arguments (not used with `--resume`).
pub fn build_config(args: &PretrainArgs) -> anyhow::Result<PretrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => config_from_file(p)?,
        None => PretrainConfig::demo(),
    };
    if let Some(d) = &args.data {
        cfg.data = d.clone();
    }
    if let Some(v) = args.epochs {
        cfg.epochs = v;
        cfg.warmup_epochs = cfg.warmup_epochs.min(v / 2);
    }
    if let Some(v) = args.warmup_epochs {
        cfg.warmup_epochs = v;
    }
    if let Some(v) = args.mask_ratio {
        cfg.model.mask_ratio = v;
    }
    if let Some(v) = args.batch {
        cfg.batch = v;
    }
    if let Some(v) = args.lr {
        cfg.optim.lr = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = args.backend {
        cfg.backend = v;
    }
    if args.export_pth.is_some() {
        cfg.export_pth = args.export_pth.clone();
    }
    cfg.model.validate()?;
    cfg.out = match &args.out {
        Some(o) => o.clone(),
        None if args.config.is_none() && args.data.is_none() => cfg.out.clone(),
        None => {
            let tag: String = cfg
                .data
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            PathBuf::from(format!("runs/pretrain-{tag}"))
        }
    };
    Ok(cfg)
}

/// Prints pre-training epochs (loss only) and hands every other event to the shared
/// reporter, so progress bars, `--json` lines and checkpoint messages match `dapt train`.
fn report(rx: Receiver<TrainEvent>, json: bool) {
    let (tx, inner) = channel();
    let shared = std::thread::spawn(move || super::output::report_events(inner, json));
    for ev in rx {
        match ev {
            TrainEvent::Metrics(m) => {
                if json {
                    super::output::print_json(&serde_json::json!({"event": "metrics", "metrics": {
                        "epoch": m.epoch, "split": m.split, "wall_secs": m.wall_secs, "lr": m.lr, "loss": m.loss}}));
                } else {
                    // the progress bar (stderr) redraws below this line
                    println!(
                        "epoch {:>3} {:<5} chamfer-L2 {:.6}  lr {:.2e}  {:.0}s",
                        m.epoch, m.split, m.loss, m.lr, m.wall_secs
                    );
                }
            }
            TrainEvent::Finished {
                best_epoch,
                run_dir,
                ..
            } => {
                // the shared line speaks of accuracy; pre-training has a loss
                if json {
                    super::output::print_json(&serde_json::json!({"event": "finished",
                        "best_epoch": best_epoch, "run_dir": run_dir}));
                }
            }
            other => {
                let _ = tx.send(other);
            }
        }
    }
    drop(tx);
    let _ = shared.join();
}

pub fn run(args: PretrainArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let json = args.json;
    let resume = args.resume.clone();
    let cfg = match &resume {
        Some(dir) => {
            // says what a resumable run directory needs before reading its config
            crate::train::run_dir::RunDir::open(dir)?;
            read_config(dir)?
        }
        None => {
            let cfg = build_config(&args)?;
            // the demo may be run again: start it afresh rather than refuse
            if args.config.is_none()
                && args.data.is_none()
                && args.out.is_none()
                && cfg.out.join("checkpoints/state.json").exists()
            {
                let _ = std::fs::remove_dir_all(&cfg.out);
            }
            cfg
        }
    };
    let printer = std::thread::spawn(move || report(rx, json));
    let result = crate::train::pretrain::run(cfg, resume.as_deref(), Some(tx), stop);
    let _ = printer.join();
    let summary = result?;
    if json {
        super::output::print_json(&serde_json::json!({"event": "summary", "summary": summary}));
    } else {
        println!(
            "done: {} epochs; best held-out Chamfer-L2 {:.6} (epoch {})",
            summary.epochs_done, summary.best_loss, summary.best_epoch
        );
        println!(
            "backbone for `dapt train --init`: {}",
            summary.backbone.display()
        );
        if let Some(p) = &summary.pth {
            println!("official-layout checkpoint: {}", p.display());
        }
    }
    Ok(())
}
