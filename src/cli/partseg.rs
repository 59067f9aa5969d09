//! `--task partseg` for `dapt train`, `dapt eval` and `dapt predict`: part segmentation with
//! the Point-MAE segmentation head (plain or DAPT backbone), ShapeNetPart mIoU, per-point
//! labels as JSON and coloured PLY files.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use anyhow::Context;

use super::eval::EvalArgs;
use super::predict::PredictArgs;
use super::train::TrainArgs;
use crate::backend::select;
use crate::data::{PointCloud, ReadOptions, read_cloud, write_ply};
use crate::model::layers::{ForwardCtx, host_vec};
use crate::train::TrainEvent;
use crate::train::miou::{CategoryIou, predict_parts};
use crate::train::partseg::{
    LoadedPartSeg, PartSegTrainConfig, evaluate_seg, load_partseg_checkpoint, prepare_seg_test,
    run_partseg,
};

/// `dapt train --task partseg`: the synthetic demo unless `--data` names another set, in
/// which case the official recipe (width 384, 2048 points, batch 16, lr 2e-4, 300 epochs).
pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let resume = args.resume.clone();
    let cfg = if resume.is_some() {
        PartSegTrainConfig::default() // replaced by the run's config.json
    } else {
        config_from_args(&args)?
    };
    let json = args.json;
    let s = super::interrupt::run_reported(json, report, |tx, stop| {
        run_partseg(cfg, resume.as_deref(), Some(tx), &stop)
    })?;
    if json {
        super::output::print_json(&serde_json::json!({"event": "summary", "summary": s}));
    } else {
        // the table is the last evaluation's; the headline is the best epoch's
        print_table(&s.per_category);
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

fn config_from_args(args: &TrainArgs) -> anyhow::Result<PartSegTrainConfig> {
    let data = args.data.clone().unwrap_or_else(|| "synthetic".into());
    let mut cfg = match &args.config {
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
    cfg.data = data;
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
    if let Some(v) = args.backend {
        cfg.backend = v;
    }
    if args.normalize {
        cfg.normalize = Some(true);
    }
    if args.no_normalize {
        cfg.normalize = Some(false);
    }
    cfg.out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let tag: String = cfg
                .data
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            PathBuf::from(format!("runs/partseg-{}-{tag}", cfg.mode.as_str()))
        }
    };
    Ok(cfg)
}

/// Progress lines for a segmentation run (mIoU instead of class accuracies).
fn report(rx: Receiver<TrainEvent>, json: bool) {
    for ev in rx {
        match ev {
            TrainEvent::Started {
                run_dir,
                backend,
                total_epochs,
                steps_per_epoch,
                trainable_params,
                total_params,
                ..
            } => {
                if json {
                    super::output::print_json(
                        &serde_json::json!({"event": "started", "run_dir": run_dir,
                        "backend": backend, "epochs": total_epochs, "steps_per_epoch": steps_per_epoch,
                        "trainable_params": trainable_params, "total_params": total_params}),
                    );
                } else {
                    println!("backend: {backend}");
                    println!(
                        "run: {} | params: {trainable_params} trainable of {total_params} ({:.2}%) | {total_epochs} epochs x {steps_per_epoch} steps",
                        run_dir.display(),
                        100.0 * trainable_params as f64 / total_params.max(1) as f64
                    );
                }
            }
            TrainEvent::Metrics(m) => {
                if json {
                    super::output::print_json(
                        &serde_json::json!({"event": "metrics", "metrics": m}),
                    );
                } else {
                    println!(
                        "epoch {:>3} {:<5} loss {:.4}  point acc {:.2}%  instance mIoU {:.2}%  class mIoU {:.2}%  lr {:.2e}  {:.0}s",
                        m.epoch,
                        m.split,
                        m.loss,
                        100.0 * m.overall_accuracy,
                        100.0 * m.instance_miou.unwrap_or(0.0),
                        100.0 * m.class_miou.unwrap_or(0.0),
                        m.lr,
                        m.wall_secs
                    );
                }
            }
            TrainEvent::Stopped { epoch } => {
                println!("stopped during epoch {epoch}; the last completed epoch is saved")
            }
            TrainEvent::Failed { message } if json => {
                super::output::print_json(&serde_json::json!({"event": "failed", "error": message}))
            }
            _ => {}
        }
    }
}

fn print_table(rows: &[CategoryIou]) {
    if rows.iter().any(|r| r.shapes > 0) {
        println!("per category:");
    }
    for r in rows.iter().filter(|r| r.shapes > 0) {
        println!(
            "  {:<16} {:>5} shapes  mIoU {:.2}%",
            r.name,
            r.shapes,
            100.0 * r.miou.unwrap_or(0.0)
        );
    }
}

/// The segmentation model of `--checkpoint` or of `--backbone --adapter` (a partseg run's
/// adapter file).
fn load_seg(
    checkpoint: Option<&Path>,
    backbone: Option<&Path>,
    adapter: Option<&Path>,
    device: &burn::tensor::Device,
) -> anyhow::Result<LoadedPartSeg> {
    use crate::model::load::{assemble_partseg, read_backbone_and_adapter};
    match (checkpoint, backbone, adapter) {
        (Some(c), _, _) => Ok(load_partseg_checkpoint(c, device)?),
        (None, Some(b), Some(a)) => {
            let (backbone, adapter) = read_backbone_and_adapter(b, a)?;
            let m = assemble_partseg(&backbone, &adapter, device)?;
            Ok(LoadedPartSeg {
                model: m.model,
                category_names: m.category_names,
                category_parts: m.category_parts,
                normalize: m.normalize,
            })
        }
        _ => anyhow::bail!("pass --checkpoint, or --backbone with --adapter"),
    }
}

/// `dapt eval --task partseg`.
pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let selected = select(args.backend);
    if !args.json {
        eprintln!("backend: {}", selected.description);
    }
    let device = selected.device;
    let mut loaded = load_seg(
        args.checkpoint.as_deref(),
        args.backbone.as_deref(),
        args.adapter.as_deref(),
        &device,
    )?;
    let npoints = loaded.model.config.npoints;
    let data = prepare_seg_test(&args.data, npoints, Some(loaded.normalize), 0)?;
    if data.num_parts != loaded.model.config.num_parts
        || data.category_names.len() != loaded.model.config.num_categories
    {
        anyhow::bail!(
            "{}: {} categories / {} parts, but the model has {} / {}",
            args.data,
            data.category_names.len(),
            data.num_parts,
            loaded.model.config.num_categories,
            loaded.model.config.num_parts
        );
    }
    if data.test.is_empty() {
        anyhow::bail!("{}: the test split is empty", args.data);
    }
    let r = evaluate_seg(
        &mut loaded.model,
        &data.test,
        args.batch,
        &loaded.category_parts,
        &loaded.category_names,
        &device,
    )?;
    let table = r.per_category();
    if args.json {
        super::output::print_json(&serde_json::json!({
            "shapes": data.test.len(),
            "loss": r.loss,
            "point_accuracy": r.miou.point_accuracy(),
            "instance_miou": r.miou.instance_miou(),
            "class_miou": r.miou.class_miou(),
            "per_category": table,
        }));
    } else {
        println!(
            "{} test shapes: instance mIoU {:.2}%, class mIoU {:.2}%, point accuracy {:.2}%, loss {:.4}",
            data.test.len(),
            100.0 * r.miou.instance_miou(),
            100.0 * r.miou.class_miou(),
            100.0 * r.miou.point_accuracy(),
            r.loss
        );
        print_table(&table);
    }
    Ok(())
}

/// A distinct, stable colour per part id (golden-ratio hue steps).
pub fn part_color(part: usize) -> [f32; 3] {
    let h = (part as f32 * 0.618_034).fract() * 6.0;
    let (s, v) = (0.75f32, 0.95f32);
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// The category of `file`: `--category` (name or index) or a file-name prefix.
fn category_of(arg: Option<&str>, file: &Path, names: &[String]) -> anyhow::Result<usize> {
    if let Some(a) = arg {
        if let Ok(i) = a.parse::<usize>() {
            anyhow::ensure!(
                i < names.len(),
                "category {i} is out of range (0..{})",
                names.len()
            );
            return Ok(i);
        }
        return names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(a))
            .ok_or_else(|| {
                anyhow::anyhow!("unknown category `{a}` (one of: {})", names.join(", "))
            });
    }
    let stem = file
        .file_name()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let prefix = stem.split(['_', '.', '-']).next().unwrap_or("");
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(prefix))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: pass --category (one of: {}); part segmentation needs the object category",
                file.display(),
                names.join(", ")
            )
        })
}

/// `dapt predict --task partseg`: per-point part labels of every point of each file, as JSON
/// and as a coloured PLY with a `label` property.
pub fn predict(args: &PredictArgs) -> anyhow::Result<()> {
    let selected = select(args.backend);
    if !args.json {
        eprintln!("backend: {}", selected.description);
    }
    let device = selected.device;
    let mut loaded = load_seg(
        args.checkpoint.as_deref(),
        args.backbone.as_deref(),
        args.adapter.as_deref(),
        &device,
    )?;
    let normalize = if args.normalize {
        true
    } else if args.no_normalize {
        false
    } else {
        loaded.normalize
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let parts_n = loaded.model.config.num_parts;
    let min_points = loaded
        .model
        .config
        .group_size
        .max(loaded.model.config.num_group);
    let mut results = Vec::new();
    let mut failures = 0;
    for file in &args.files {
        let mut one = || -> anyhow::Result<serde_json::Value> {
            let cat = category_of(args.category.as_deref(), file, &loaded.category_names)?;
            let cloud = read_cloud(file, &ReadOptions::default())?;
            let n = cloud.positions.len();
            anyhow::ensure!(
                n >= min_points,
                "{}: {n} points, the model needs at least {min_points}",
                file.display()
            );
            let mut pts = cloud.positions.clone();
            if normalize {
                crate::data::transform::pc_normalize(&mut pts);
            }
            // every point of the file goes through the network: propagation interpolates the
            // patch features to any number of points
            let out = loaded.model.forward_points(
                &pts,
                &[cat],
                1,
                n,
                &device,
                &mut ForwardCtx::eval(),
            )?;
            let lp = host_vec(out.log_probs);
            let labels = predict_parts(&lp, parts_n, &loaded.category_parts[cat])?;
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "cloud".into());
            let ply = args.out.join(format!("{stem}.parts.ply"));
            let colored = PointCloud {
                positions: cloud.positions,
                colors: Some(labels.iter().map(|&l| part_color(l)).collect()),
                labels: Some(labels.iter().map(|&l| l as i64).collect()),
                ..PointCloud::default()
            };
            write_ply(&ply, &colored, true)?;
            let mut counts = std::collections::BTreeMap::new();
            for &l in &labels {
                *counts.entry(l).or_insert(0usize) += 1;
            }
            if !args.json {
                let c: Vec<String> = counts
                    .iter()
                    .map(|(p, k)| format!("part {p}: {k}"))
                    .collect();
                println!(
                    "{}: {} ({n} points) {} -> {}",
                    file.display(),
                    loaded.category_names[cat],
                    c.join(", "),
                    ply.display()
                );
            }
            Ok(serde_json::json!({
                "file": file,
                "category": loaded.category_names[cat],
                "category_index": cat,
                "labels": labels,
                "part_counts": counts,
                "ply": ply,
            }))
        };
        match one() {
            Ok(v) => results.push(v),
            Err(e) => {
                eprintln!("error: {}", super::output::error_chain(&e));
                failures += 1;
            }
        }
    }
    if args.json {
        super::output::print_json(&serde_json::json!({"results": results}));
    }
    if failures > 0 {
        anyhow::bail!(
            "{failures} of {} files could not be segmented",
            args.files.len()
        );
    }
    Ok(())
}
