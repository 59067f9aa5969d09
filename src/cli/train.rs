//! `dapt train`: fine-tuning with the official recipe, for classification and part
//! segmentation (`--task partseg`); with no arguments, a small complete demonstration on the
//! built-in synthetic data set. `--fewshot` is in `cli::fewshot`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::args::{CliTask, FineTuneArgs, FineTuneSettings, RunArgs};
use crate::model::ModelConfig;
use crate::train::partseg::{PartSegTrainConfig, run_partseg};
use crate::train::{Mode, TrainConfig};

#[derive(clap::Args, Debug, Default)]
pub struct TrainArgs {
    /// `classification` (default) or `partseg`.
    #[arg(long, value_enum, default_value_t = CliTask::Classification)]
    pub task: CliTask,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub tune: FineTuneArgs,
    /// Few-shot: train on K labelled shapes per class, drawn with the seed (a class with
    /// fewer is used whole, and a note says so; the test split stays whole). Classification only.
    #[arg(long, value_name = "K")]
    pub shots: Option<usize>,
    /// ModelNet40 few-shot in the official layout: train every fold of the setting
    /// (`5way10shot`, also written `5way_10shot` or `5x10`) found under `--data
    /// modelnet40fewshot:PATH` (the `ModelNetFewshot` folder), each a full run in
    /// `OUT/fold-N/`; reports each fold's best held-out accuracy, their mean and standard
    /// deviation, and writes `OUT/fewshot.json`. `--resume OUT` continues the folds.
    #[arg(long, value_name = "WwayKshot")]
    pub fewshot: Option<String>,
    /// With --fewshot: the folds to run, e.g. `0-4` or `0,3,7` (default: every N.pkl found,
    /// 0 to 9 in the official release).
    #[arg(long, requires = "fewshot", value_name = "LIST")]
    pub folds: Option<String>,
    /// Token-scale snapshot of a fixed test cloud every N steps (0: once per epoch).
    #[arg(long)]
    pub snapshot_every: Option<usize>,
    /// Keep only each transformer block's input through the forward pass and recompute the
    /// block in backward, one at a time: the lowest training memory (DAPT keeps almost
    /// nothing but the head's graph), for one more forward of the blocks per step; the
    /// results are the same. Classification only.
    #[arg(long)]
    pub recompute_blocks: bool,
}

/// A config from `--config`: our JSON, or an official YAML whose recipe keys we honour.
pub fn config_from_file(path: &std::path::Path) -> anyhow::Result<TrainConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let cfg: TrainConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run configuration", path.display()))?;
        return Ok(cfg);
    }
    let yaml = crate::model::yaml::OfficialYaml::read(path)?;
    for n in &yaml.notes {
        eprintln!("note: {n}");
    }
    let model = ModelConfig::from_yaml_value(&yaml.root).map_err(|e| e.with_path(path))?;
    let root = &yaml.root;
    let mut cfg = TrainConfig {
        mode: match model.kind {
            crate::model::ModelKind::Dapt => Mode::Dapt,
            crate::model::ModelKind::PointMae => Mode::Full,
        },
        model,
        ..TrainConfig::default()
    };
    let r = super::recipe::OfficialRecipe::from_yaml(root);
    cfg.optim.lr = r.lr.unwrap_or(cfg.optim.lr);
    cfg.optim.weight_decay = r.weight_decay.unwrap_or(cfg.optim.weight_decay);
    cfg.epochs = r.epochs.unwrap_or(cfg.epochs);
    cfg.warmup_epochs = r.warmup_epochs.unwrap_or(cfg.warmup_epochs);
    cfg.batch = r.batch.unwrap_or(cfg.batch);
    cfg.optim.grad_clip = r.grad_clip.or(cfg.optim.grad_clip);
    // the dataset block decides the official input normalisation (§2.1)
    cfg.normalize = yaml.normalization().or(cfg.normalize);
    Ok(cfg)
}

/// The classification run the flags describe (everything but `--resume`).
pub fn classification_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut cfg = match &args.run.config {
        Some(p) => config_from_file(p)?,
        None => TrainConfig::demo(),
    };
    args.run.apply(&mut cfg);
    // the demo recipe on the synthetic shapes starts from the backbone pre-trained on them
    if args.run.config.is_none() && !args.tune.init_given() && cfg.data.starts_with("synthetic") {
        cfg.init = Some(crate::train::demo_backbone::materialise(Path::new(
            crate::train::demo_backbone::FILE,
        ))?);
    }
    args.tune.apply(FineTuneSettings {
        mode: &mut cfg.mode,
        init: &mut cfg.init,
        npoints: &mut cfg.model.npoints,
        normalize: &mut cfg.normalize,
    });
    if args.shots.is_some() {
        cfg.shots = args.shots;
    }
    if let Some(v) = args.snapshot_every {
        cfg.snapshot_every = v;
    }
    if args.recompute_blocks {
        cfg.recompute_blocks = true;
    }
    cfg.out = if args.run.is_demo() {
        PathBuf::from("runs/demo")
    } else {
        args.run.out_or(cfg.mode.as_str(), &cfg.data)
    };
    Ok(cfg)
}

/// The part-segmentation run the flags describe: the synthetic demo unless `--data` names
/// another set, in which case the official recipe (width 384, 2048 points, batch 16, lr
/// 2e-4, 300 epochs).
fn partseg_config(args: &TrainArgs) -> anyhow::Result<PartSegTrainConfig> {
    let data = args.run.data.clone().unwrap_or_else(|| "synthetic".into());
    let mut cfg = match &args.run.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: not a part-segmentation run configuration (config.json)",
                    p.display()
                )
            })?
        }
        None if data.starts_with("synthetic") => PartSegTrainConfig::synthetic_demo(),
        None => PartSegTrainConfig::default(),
    };
    args.run.apply(&mut cfg);
    cfg.data = data;
    args.tune.apply(FineTuneSettings {
        mode: &mut cfg.mode,
        init: &mut cfg.init,
        npoints: &mut cfg.model.npoints,
        normalize: &mut cfg.normalize,
    });
    cfg.out = args
        .run
        .out_or(&format!("partseg-{}", cfg.mode.as_str()), &cfg.data);
    Ok(cfg)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.task == CliTask::Partseg {
        if args.shots.is_some() {
            anyhow::bail!("--shots draws K shapes per class; it is for classification only");
        }
        if args.fewshot.is_some() {
            anyhow::bail!("--fewshot trains ModelNet40 classifiers; it is for classification only");
        }
        if args.recompute_blocks {
            anyhow::bail!(
                "--recompute-blocks is for classification only (part segmentation's head reads \
                 the outputs of three blocks); --no-checkpointing and the default apply there"
            );
        }
        return train_partseg(args);
    }
    if args.fewshot.is_some() {
        return super::fewshot::run(args);
    }
    let json = args.run.json;
    let resume = args.run.resume.clone();
    let cfg = if resume.is_some() {
        TrainConfig::default() // replaced by the run's own config.json
    } else {
        let cfg = classification_config(&args)?;
        // the demo may be run again: start it afresh rather than refuse
        if args.run.is_demo() && cfg.out.join("checkpoints/state.json").exists() {
            let _ = std::fs::remove_dir_all(&cfg.out);
        }
        cfg
    };
    // the demo names its starting point when classification_config chose the shipped backbone
    let from_demo_backbone = args.run.is_demo()
        && resume.is_none()
        && cfg.init == std::path::absolute(crate::train::demo_backbone::FILE).ok();
    let summary =
        super::interrupt::run_reported(json, super::output::report_events, |tx, stop| {
            crate::train::run(cfg, resume.as_deref(), Some(tx), stop)
        })?;
    if json {
        super::output::print_json(&serde_json::json!({"event": "summary", "summary": summary}));
    } else {
        let last = summary.last.as_ref();
        // wall_secs counts from the run's start, across resumed sessions
        let took = last
            .map(|m| {
                let s = m.wall_secs.round() as u64;
                format!(" in {} min {:02} s", s / 60, s % 60)
            })
            .unwrap_or_default();
        println!(
            "done: {} epochs{took}; best held-out accuracy {:.2}% (epoch {}), mean class accuracy {:.2}%{}",
            summary.epochs_done,
            100.0 * summary.best_overall_accuracy,
            summary.best_epoch,
            100.0 * summary.best_mean_class_accuracy,
            last.map(|m| format!("; final {:.2}%", 100.0 * m.overall_accuracy))
                .unwrap_or_default()
        );
        println!(
            "run directory: {} (adapter file {:.2} MB)",
            summary.run_dir.display(),
            summary.adapter_bytes as f64 / 1e6
        );
        if from_demo_backbone {
            println!(
                "started from the small backbone pre-trained here on synthetic shapes (assets/demo/README.md); \
                 `dapt train --init none` runs the same recipe from random weights"
            );
        }
    }
    if summary.stopped {
        return Err(super::interrupt::interrupted(
            "dapt train",
            &summary.run_dir,
        ));
    }
    Ok(())
}

/// `dapt train --task partseg`: the synthetic demo unless `--data` names another set, in
/// which case the official recipe (width 384, 2048 points, batch 16, lr 2e-4, 300 epochs).
fn train_partseg(args: TrainArgs) -> anyhow::Result<()> {
    let resume = args.run.resume.clone();
    let cfg = if resume.is_some() {
        PartSegTrainConfig::default() // replaced by the run's config.json
    } else {
        partseg_config(&args)?
    };
    let json = args.run.json;
    let s = super::interrupt::run_reported(json, super::output::report_seg_events, |tx, stop| {
        run_partseg(cfg, resume.as_deref(), Some(tx), &stop)
    })?;
    if json {
        super::output::print_json(&serde_json::json!({"event": "summary", "summary": s}));
    } else {
        // the table is the last evaluation's; the headline is the best epoch's
        super::output::print_seg_table(&s.per_category);
        println!(
            "done: {} epochs; best instance mIoU {:.2}%, class mIoU {:.2}% (epoch {})",
            s.epochs_done,
            100.0 * s.best_instance_miou,
            100.0 * s.best_class_miou,
            s.best_epoch
        );
        println!("run directory: {}", s.run_dir.display());
    }
    if s.stopped {
        return Err(super::interrupt::interrupted(
            "dapt train --task partseg",
            &s.run_dir,
        ));
    }
    Ok(())
}
