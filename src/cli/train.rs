//! `dapt train`: fine-tuning with the official recipe; with no arguments, a small complete
//! demonstration on the built-in synthetic data set.

use std::path::PathBuf;

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
    /// `folder:PATH`, `modelnet40fewshot:PATH`, or a path whose layout is detected.
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

/// The run configuration the flags describe (everything but `--resume`).
fn config_from_args(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => config_from_file(p)?,
        None => TrainConfig::demo(),
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
        return super::partseg::train(args);
    }
    if args.fewshot.is_some() {
        return run_fewshot(args);
    }
    let json = args.json;
    let resume = args.resume.clone();
    let cfg = if resume.is_some() {
        TrainConfig::default() // replaced by the run's own config.json
    } else {
        let cfg = config_from_args(&args)?;
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
    let summary = super::interrupt::run_reported(json, super::output::report_events, |tx, stop| {
        crate::train::run(cfg, resume.as_deref(), Some(tx), stop)
    })?;
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
    if summary.stopped {
        return Err(super::interrupt::interrupted("dapt train", &summary.run_dir));
    }
    Ok(())
}

/// One fold's outcome in `fewshot.json`.
#[derive(serde::Serialize)]
struct FoldResult {
    fold: usize,
    data: PathBuf,
    run_dir: PathBuf,
    epochs_done: usize,
    best_epoch: usize,
    best_overall_accuracy: f64,
}

/// `--folds`: `3`, `0-4`, `0,3,7`, or a mix (`0-2,5`).
fn parse_folds(s: &str) -> anyhow::Result<Vec<usize>> {
    let bad = || anyhow::anyhow!("--folds {s}: expected fold numbers like 0-4 or 0,3,7");
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b - a > 10_000 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Mean and population standard deviation (NumPy's `np.std`, ddof 0) and the sample one
/// (ddof 1; 0 for a single fold).
fn mean_std(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
    let sample = if v.len() > 1 {
        (ss / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, (ss / n).sqrt(), sample)
}

/// `dapt train --fewshot WwayKshot`: the official protocol of Point-MAE's few-shot table
/// (dapt-spec.md §7, §8.2), one ordinary training run per fold through the same engine.
fn run_fewshot(args: TrainArgs) -> anyhow::Result<()> {
    use crate::data::DataSpec;
    use crate::data::fewshot::{FewShotSetting, fold_files};

    let text = args.fewshot.clone().unwrap_or_default();
    let setting = FewShotSetting::parse(&text).ok_or_else(|| {
        anyhow::anyhow!("--fewshot {text}: expected WwayKshot, e.g. 5way10shot (or 5x10)")
    })?;
    if args.shots.is_some() {
        anyhow::bail!(
            "--fewshot trains on the official folds; --shots (K shapes per class of an \
             ordinary data set) does not combine with it"
        );
    }
    let data = args.data.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "--fewshot needs --data modelnet40fewshot:PATH (the ModelNetFewshot folder)"
        )
    })?;
    let root = match DataSpec::parse(&data)? {
        DataSpec::ModelNet40FewShot(p) if p.is_file() => anyhow::bail!(
            "{}: one fold file; --fewshot needs the ModelNetFewshot folder (train a single \
             fold without --fewshot)",
            p.display()
        ),
        DataSpec::ModelNet40FewShot(p) => p,
        other => anyhow::bail!(
            "--fewshot needs the official few-shot layout \
             (ModelNetFewshot/{{W}}way_{{K}}shot/N.pkl); --data {data} is `{other}`"
        ),
    };
    let (dir, mut folds) = fold_files(&root, setting)?;
    if let Some(list) = &args.folds {
        let want = parse_folds(list)?;
        if let Some(n) = want.iter().find(|n| !folds.iter().any(|(f, _)| f == *n)) {
            anyhow::bail!(
                "{}: fold {n} asked for, but there is no {n}.pkl",
                dir.display()
            );
        }
        folds.retain(|(f, _)| want.contains(f));
    }
    let base = config_from_args(&args)?;
    let out = match (&args.resume, &args.out) {
        (Some(r), Some(o)) if r != o => {
            anyhow::bail!(
                "--resume {} and --out {} disagree",
                r.display(),
                o.display()
            )
        }
        (Some(r), _) => r.clone(),
        (None, Some(o)) => o.clone(),
        (None, None) => PathBuf::from(format!("runs/{}-fewshot-{setting}", base.mode.as_str())),
    };
    let started = |n: usize| {
        out.join(format!("fold-{n}"))
            .join("checkpoints/state.json")
            .exists()
    };
    if args.resume.is_none()
        && let Some((n, _)) = folds.iter().find(|(n, _)| started(*n))
    {
        anyhow::bail!(
            "{}: already holds few-shot folds (fold-{n}); pass --resume {} to continue them \
             or choose another --out",
            out.display(),
            out.display()
        );
    }
    let json = args.json;
    if !json {
        println!(
            "few-shot {setting}: {} fold(s) from {} into {}",
            folds.len(),
            dir.display(),
            out.display()
        );
    }
    let mut results = Vec::new();
    for (n, file) in &folds {
        let fold_dir = out.join(format!("fold-{n}"));
        let mut cfg = base.clone();
        cfg.data = DataSpec::ModelNet40FewShot(file.clone()).to_string();
        cfg.out = fold_dir.clone();
        let resume = started(*n).then_some(fold_dir.clone());
        if !json {
            println!("fold {n}: {}", file.display());
        }
        let summary = super::interrupt::run_reported(json, super::output::report_events, |tx, stop| {
            crate::train::run(cfg, resume.as_deref(), Some(tx), stop)
        })
        .with_context(|| format!("fold {n} ({})", file.display()))?;
        if summary.stopped {
            return Err(super::interrupt::interrupted("dapt train --fewshot", &out));
        }
        if json {
            super::output::print_json(&serde_json::json!({
                "event": "fold", "fold": n, "data": file, "summary": summary
            }));
        } else {
            println!(
                "fold {n}: best held-out accuracy {:.2}% (epoch {})",
                100.0 * summary.best_overall_accuracy,
                summary.best_epoch
            );
        }
        results.push(FoldResult {
            fold: *n,
            data: file.clone(),
            run_dir: summary.run_dir.clone(),
            epochs_done: summary.epochs_done,
            best_epoch: summary.best_epoch,
            best_overall_accuracy: summary.best_overall_accuracy,
        });
    }
    let accs: Vec<f64> = results.iter().map(|r| r.best_overall_accuracy).collect();
    let (mean, std, sample_std) = mean_std(&accs);
    let report = serde_json::json!({
        "event": "fewshot",
        "setting": setting.to_string(),
        "way": setting.way,
        "shot": setting.shot,
        "folds": results,
        "mean_accuracy": mean,
        "std_accuracy": std,
        "sample_std_accuracy": sample_std,
        "out": out,
    });
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    let file = out.join("fewshot.json");
    let tmp = out.join("fewshot.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&report)? + "\n")
        .and_then(|()| std::fs::rename(&tmp, &file))
        .with_context(|| file.display().to_string())?;
    if json {
        super::output::print_json(&report);
    } else {
        println!(
            "few-shot {setting}, {} fold(s): {:.2} ± {:.2}% (mean ± standard deviation of each \
             fold's best held-out accuracy; sample std {:.2})",
            accs.len(),
            100.0 * mean,
            100.0 * std,
            100.0 * sample_std
        );
        println!("summary: {}", file.display());
    }
    Ok(())
}

#[cfg(test)]
mod fewshot_tests {
    use super::*;

    #[test]
    fn folds_lists_and_ranges() {
        assert_eq!(parse_folds("0-2,5, 1").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_folds("7").unwrap(), vec![7]);
        for bad in ["", "a", "3-1", "1-", ",", "0-99999"] {
            assert!(parse_folds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mean_and_both_deviations() {
        let (m, p, s) = mean_std(&[0.9, 1.0]);
        assert!((m - 0.95).abs() < 1e-12);
        assert!((p - 0.05).abs() < 1e-12);
        assert!((s - 0.05 * 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0, 0.0));
    }
}
