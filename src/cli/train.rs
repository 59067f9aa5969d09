//! `dapt train`: fine-tuning with the official recipe; with no arguments, a small complete
//! demonstration on the built-in synthetic data set.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::backend::BackendChoice;
use crate::model::ModelConfig;
use crate::train::{Mode, TrainConfig};

/// What `train`, `eval` and `predict` work on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CliTask {
    /// Shape classification (the default).
    #[default]
    Classification,
    /// Part segmentation (Point-MAE segmentation head; ShapeNetPart or synthetic parts).
    Partseg,
}

#[derive(clap::Args, Debug, Default)]
pub struct TrainArgs {
    /// `classification` (default) or `partseg`.
    #[arg(long, value_enum, default_value_t = CliTask::Classification)]
    pub task: CliTask,
    /// Official YAML (`cfgs/finetune_*.yaml` or a bare `model:` block) or a run's config.json.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `synthetic` (default), `modelnet40:PATH`, `scanobjectnn:PATH`, `shapenetpart:PATH`,
    /// `folder:PATH`, or a path whose layout is detected.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Backbone to start from: the official Point-MAE `pretrain.pth` or a native checkpoint.
    #[arg(long)]
    pub init: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Points fed to the model (overrides the config's npoints).
    #[arg(long)]
    pub points: Option<usize>,
    /// Run directory (default `runs/<mode>-<data>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Few-shot: train on K labelled shapes per class, drawn with the seed (a class with
    /// fewer is used whole, and a note says so; the test split stays whole). Classification only.
    #[arg(long, value_name = "K")]
    pub shots: Option<usize>,
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Token-scale snapshot of a fixed test cloud every N steps (0: once per epoch).
    #[arg(long)]
    pub snapshot_every: Option<usize>,
    /// Force / forbid pc_normalize on inputs (default: the data set's official choice).
    #[arg(long, overrides_with = "no_normalize")]
    pub normalize: bool,
    #[arg(long)]
    pub no_normalize: bool,
    /// JSON lines only on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The demonstration settings used when no config is given.
pub fn demo_config() -> TrainConfig {
    TrainConfig {
        model: ModelConfig::small(8),
        epochs: 15,
        // no warm-up: with the official one-epoch scheduler lag a short demo would spend
        // its first epochs at 1e-6
        warmup_epochs: 0,
        batch: 32,
        optim: crate::train::optim::AdamWConfig {
            lr: 2e-3,
            ..Default::default()
        },
        out: PathBuf::from("runs/demo"),
        ..TrainConfig::default()
    }
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

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.task == CliTask::Partseg {
        if args.shots.is_some() {
            anyhow::bail!("--shots draws K shapes per class; it is for classification only");
        }
        return super::partseg::train(args);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let json = args.json;
    let resume = args.resume.clone();
    let cfg = if resume.is_some() {
        TrainConfig::default() // replaced by the run's own config.json
    } else {
        let mut cfg = match &args.config {
            Some(p) => config_from_file(p)?,
            None => demo_config(),
        };
        if let Some(d) = &args.data {
            cfg.data = d.clone();
        }
        if let Some(m) = args.mode {
            cfg.mode = m;
        }
        cfg.init = args.init.clone().or(cfg.init);
        if let Some(v) = args.epochs {
            cfg.epochs = v;
            cfg.warmup_epochs = cfg.warmup_epochs.min(v / 2);
        }
        if let Some(v) = args.warmup_epochs {
            cfg.warmup_epochs = v;
        }
        if let Some(v) = args.batch {
            cfg.batch = v;
        }
        if let Some(v) = args.lr {
            cfg.optim.lr = v;
        }
        if let Some(v) = args.weight_decay {
            cfg.optim.weight_decay = v;
        }
        if let Some(v) = args.points {
            cfg.model.npoints = v;
        }
        if let Some(v) = args.seed {
            cfg.seed = v;
        }
        if args.shots.is_some() {
            cfg.shots = args.shots;
        }
        if let Some(v) = args.backend {
            cfg.backend = v;
        }
        if let Some(v) = args.snapshot_every {
            cfg.snapshot_every = v;
        }
        if args.normalize {
            cfg.normalize = Some(true);
        }
        if args.no_normalize {
            cfg.normalize = Some(false);
        }
        cfg.out = match &args.out {
            Some(o) => o.clone(),
            None if args.config.is_none() && args.data.is_none() => PathBuf::from("runs/demo"),
            None => {
                let tag: String = cfg
                    .data
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                PathBuf::from(format!("runs/{}-{}", cfg.mode.as_str(), tag))
            }
        };
        // the demo may be run again: start it afresh rather than refuse
        if args.config.is_none()
            && args.data.is_none()
            && args.out.is_none()
            && cfg.out.join("checkpoints/state.json").exists()
        {
            let _ = std::fs::remove_dir_all(&cfg.out);
        }
        cfg
    };
    let printer = std::thread::spawn(move || super::output::report_events(rx, json));
    let result = crate::train::run(cfg, resume.as_deref(), Some(tx), stop);
    let _ = printer.join();
    let summary = result?;
    if json {
        super::output::print_json(&serde_json::json!({"event": "summary", "summary": summary}));
    } else {
        let last = summary.last.as_ref();
        println!(
            "done: {} epochs; best held-out accuracy {:.2}% (epoch {}), mean class accuracy {:.2}%{}",
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
    }
    Ok(())
}
