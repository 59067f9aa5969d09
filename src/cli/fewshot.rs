//! `dapt train --fewshot WwayKshot`: the official few-shot protocol, one ordinary training
//! run per fold through the same driver, and the folds' mean and deviation.

use std::path::PathBuf;

use anyhow::Context;

use super::train::TrainArgs;

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
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
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
    let data = args.run.data.clone().ok_or_else(|| {
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
    let base = super::train::classification_config(&args)?;
    let out = match (&args.run.resume, &args.run.out) {
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
    if args.run.resume.is_none()
        && let Some((n, _)) = folds.iter().find(|(n, _)| started(*n))
    {
        anyhow::bail!(
            "{}: already holds few-shot folds (fold-{n}); pass --resume {} to continue them \
             or choose another --out",
            out.display(),
            out.display()
        );
    }
    let json = args.run.json;
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
        let summary =
            super::interrupt::run_reported(json, super::output::report_events, |tx, stop| {
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
    let text = serde_json::to_string_pretty(&report)? + "\n";
    crate::atomic_file::write(&file, text.as_bytes())
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
