//! `dapt predict`: classify files with the official test-time pipeline, or label every
//! point of them with a part-segmentation model (`--task partseg`, coloured PLY files).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::{PointCloud, ReadOptions, Rng, read_cloud, write_ply};
use crate::infer::classify::{logits_of, scale_snapshot, softmax};
use crate::infer::sampling::{pad_to, test_points};
use crate::model::layers::{ForwardCtx, host_vec};
use crate::render::colormap::categorical;
use crate::train::miou::predict_parts;

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: super::args::ModelArgs,
    /// Part segmentation: the object category (name or index); by default taken from a
    /// file name that starts with a category name (`cap_test_00.txt`).
    #[arg(long)]
    pub category: Option<String>,
    /// Part segmentation: folder for the coloured `<name>.parts.ply` files.
    #[arg(long, default_value = "predictions")]
    pub out: PathBuf,
    /// Include per-block dynamic scales of every token.
    #[arg(long)]
    pub scales: bool,
    /// How many classes to list.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[arg(long, overrides_with = "no_normalize")]
    pub normalize: bool,
    #[arg(long)]
    pub no_normalize: bool,
    /// Point-cloud files (PLY, TXT, NPY, OFF, OBJ, ...).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

impl PredictArgs {
    /// `--normalize` / `--no-normalize`, else what the model was trained with.
    fn normalize(&self, recorded: bool) -> bool {
        if self.normalize {
            true
        } else if self.no_normalize {
            false
        } else {
            recorded
        }
    }
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    if args.model.task == super::args::CliTask::Partseg {
        return predict_partseg(&args);
    }
    let device = args.model.device();
    let mut loaded = args.model.classifier(&device)?;
    let normalize = args.normalize(loaded.normalize);
    let npoints = loaded.model.config.npoints;
    let mut results = Vec::new();
    let mut failures = 0;
    let mut rng = Rng::new(0);
    for file in &args.files {
        let cloud = match read_cloud(file, &ReadOptions::default()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                failures += 1;
                continue;
            }
        };
        let mut pts = cloud.positions;
        if normalize {
            crate::data::transform::pc_normalize(&mut pts);
        }
        let n0 = pts.len();
        if pad_to(&mut pts, npoints, &mut rng) {
            eprintln!(
                "note: {} has {n0} points, fewer than the model's {npoints}: resampled with replacement",
                file.display()
            );
        }
        let pts = test_points(&pts, npoints);
        let logits = match logits_of(&mut loaded.model, &[pts.as_slice()], &device) {
            Ok(mut l) => l.remove(0),
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                failures += 1;
                continue;
            }
        };
        let probs = softmax(&logits);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<serde_json::Value> = order
            .iter()
            .take(args.top)
            .map(|&i| serde_json::json!({"index": i, "class": loaded.class_names[i], "probability": probs[i]}))
            .collect();
        let mut r = serde_json::json!({
            "file": file,
            "logits": logits,
            "probabilities": probs,
            "predicted": loaded.class_names[order[0]],
            "predicted_index": order[0],
            "top": top,
        });
        if args.scales
            && let Ok(s) = scale_snapshot(&mut loaded.model, &pts, &device)
        {
            r["scales"] = serde_json::json!({"patch": s.patch, "prompts": s.prompts, "cls": s.cls, "centers": s.centers});
        }
        if !args.model.json {
            println!(
                "{}: {} ({:.1}%)",
                file.display(),
                loaded.class_names[order[0]],
                100.0 * probs[order[0]]
            );
            for &i in order.iter().take(args.top).skip(1) {
                println!("    {:<16} {:.1}%", loaded.class_names[i], 100.0 * probs[i]);
            }
        }
        results.push(r);
    }
    if args.model.json {
        super::output::print_json(&serde_json::json!({"results": results}));
    }
    if failures > 0 {
        anyhow::bail!(
            "{failures} of {} files could not be classified",
            args.files.len()
        );
    }
    Ok(())
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
fn predict_partseg(args: &PredictArgs) -> anyhow::Result<()> {
    let device = args.model.device();
    let mut loaded = args.model.segmenter(&device)?;
    let normalize = args.normalize(loaded.normalize);
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
                colors: Some(labels.iter().map(|&l| categorical(l)).collect()),
                labels: Some(labels.iter().map(|&l| l as i64).collect()),
                ..PointCloud::default()
            };
            write_ply(&ply, &colored, true)?;
            let mut counts = std::collections::BTreeMap::new();
            for &l in &labels {
                *counts.entry(l).or_insert(0usize) += 1;
            }
            if !args.model.json {
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
    if args.model.json {
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
