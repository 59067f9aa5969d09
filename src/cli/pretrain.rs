//! `dapt pretrain`: Point-MAE masked point modelling on any data set; with no arguments, a
//! short demonstration on the built-in synthetic shapes that yields a backbone for
//! `dapt train --init RUN_DIR/backbone.safetensors`.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};

use anyhow::Context;

use super::args::RunArgs;
use crate::model::pretrain::MaeConfig;
use crate::train::TrainEvent;
use crate::train::pretrain::{PretrainConfig, read_config};

#[derive(clap::Args, Debug, Default)]
pub struct PretrainArgs {
    /// `--config`: the official pre-training YAML (`cfgs/pretrain.yaml`: model block plus
    /// optimizer, scheduler and total_bs) or a pre-training run's config.json. `--data`:
    /// labels are ignored. `--out`: also where `--reconstruct` writes.
    #[command(flatten)]
    pub run: RunArgs,
    /// Fraction of patches masked per cloud (official 0.6).
    #[arg(long)]
    pub mask_ratio: Option<f64>,
    /// `rand` (official: patches drawn uniformly) or `block` (the patches nearest to one
    /// random centre).
    #[arg(long, value_enum)]
    pub mask_type: Option<crate::model::pretrain::MaskType>,
    /// Also write the best epoch in the official `pretrain.pth` layout here (default
    /// `RUN_DIR/pretrain.pth`).
    #[arg(long)]
    pub export_pth: Option<PathBuf>,
    /// Instead of training: reconstruct FILES with the best checkpoint of this pre-training run
    /// and write `<stem>.reconstruction.ply` into `--out` (labels 0 visible, 1 predicted masked,
    /// 2 true masked patches; open them in `dapt view` and colour by ground truth).
    #[arg(long, value_name = "RUN_DIR")]
    pub reconstruct: Option<PathBuf>,
    /// Point-cloud files for `--reconstruct`.
    pub files: Vec<PathBuf>,
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
    // no gradient clipping in the pre-training loop, whatever the file says
    let r = super::recipe::OfficialRecipe::from_yaml(&root);
    cfg.optim.lr = r.lr.unwrap_or(cfg.optim.lr);
    cfg.optim.weight_decay = r.weight_decay.unwrap_or(cfg.optim.weight_decay);
    cfg.epochs = r.epochs.unwrap_or(cfg.epochs);
    cfg.warmup_epochs = r.warmup_epochs.unwrap_or(cfg.warmup_epochs);
    cfg.batch = r.batch.unwrap_or(cfg.batch);
    Ok(cfg)
}

/// Builds the run configuration from the arguments (not used with `--resume`).
pub fn build_config(args: &PretrainArgs) -> anyhow::Result<PretrainConfig> {
    let mut cfg = match &args.run.config {
        Some(p) => config_from_file(p)?,
        None => PretrainConfig::demo(),
    };
    args.run.apply(&mut cfg);
    if let Some(v) = args.mask_ratio {
        cfg.model.mask_ratio = v;
    }
    if let Some(v) = args.mask_type {
        cfg.model.mask_type = v;
    }
    if args.export_pth.is_some() {
        cfg.export_pth = args.export_pth.clone();
    }
    cfg.model.validate()?;
    if !args.run.is_demo() {
        cfg.out = args.run.out_or("pretrain", &cfg.data);
    }
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

/// `--reconstruct RUN_DIR FILES...`: the official `vis=True` views as coloured PLY files.
fn reconstruct(run_dir: &std::path::Path, args: &PretrainArgs) -> anyhow::Result<()> {
    use crate::data::{ReadOptions, read_cloud, write_ply};
    use anyhow::Context;
    anyhow::ensure!(
        !args.files.is_empty(),
        "--reconstruct needs point-cloud files to reconstruct"
    );
    let selected = crate::backend::select(args.run.backend.unwrap_or_default());
    let mut rec = crate::train::reconstruct::Reconstructor::open(
        run_dir,
        &selected.device,
        args.run.seed.unwrap_or(0),
    )?;
    let out_dir = args.run.out.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&out_dir)?;
    let mut failures = 0;
    for file in &args.files {
        let mut one = || -> anyhow::Result<PathBuf> {
            let cloud = read_cloud(file, &ReadOptions::default())?;
            let cloud = rec
                .reconstruct(&cloud.positions)
                .with_context(|| format!("{}", file.display()))?;
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "cloud".into());
            let path = out_dir.join(format!("{stem}.reconstruction.ply"));
            write_ply(&path, &cloud, true)?;
            Ok(path)
        };
        match one() {
            Ok(p) => {
                if args.run.json {
                    super::output::print_json(
                        &serde_json::json!({"file": file, "reconstruction": p}),
                    );
                } else {
                    println!("{} -> {}", file.display(), p.display());
                }
            }
            Err(e) => {
                eprintln!("error: {}", super::output::error_chain(&e));
                failures += 1;
            }
        }
    }
    anyhow::ensure!(
        failures == 0,
        "{failures} of {} files could not be reconstructed",
        args.files.len()
    );
    Ok(())
}

pub fn run(args: PretrainArgs) -> anyhow::Result<()> {
    if let Some(dir) = args.reconstruct.clone() {
        return reconstruct(&dir, &args);
    }
    let json = args.run.json;
    let resume = args.run.resume.clone();
    let cfg = match &resume {
        Some(dir) => {
            // says what a resumable run directory needs before reading its config
            crate::train::run_dir::RunDir::open(dir)?;
            read_config(dir)?
        }
        None => {
            let cfg = build_config(&args)?;
            // the demo may be run again: start it afresh rather than refuse
            if args.run.is_demo() && cfg.out.join("checkpoints/state.json").exists() {
                let _ = std::fs::remove_dir_all(&cfg.out);
            }
            cfg
        }
    };
    let summary = super::interrupt::run_reported(json, report, |tx, stop| {
        crate::train::pretrain::run(cfg, resume.as_deref(), Some(tx), stop)
    })?;
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
    if summary.stopped {
        return Err(super::interrupt::interrupted(
            "dapt pretrain",
            &summary.run_dir,
        ));
    }
    Ok(())
}
