//! `dapt predict`: classify files with the official test-time pipeline.

use std::path::{Path, PathBuf};

use crate::backend::{BackendChoice, select};
use crate::data::{ReadOptions, Rng, read_cloud};
use crate::model::load::{LoadedClassifier, load_classifier, load_classifier_with_adapter};
use crate::train::batch::{pad_to, test_points};
use crate::train::eval::{logits_of, scale_snapshot};
use crate::train::metrics::softmax;

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// `classification` (default) or `partseg`.
    #[arg(long, value_enum, default_value_t = super::train::CliTask::Classification)]
    pub task: super::train::CliTask,
    /// Part segmentation: the object category (name or index); by default taken from a
    /// file name that starts with a category name (`cap_test_00.txt`).
    #[arg(long)]
    pub category: Option<String>,
    /// Part segmentation: folder for the coloured `<name>.parts.ply` files.
    #[arg(long, default_value = "predictions")]
    pub out: PathBuf,
    /// Native checkpoint (`checkpoints/best.safetensors`) or an official `.pth`.
    #[arg(long, required_unless_present = "adapter", conflicts_with_all = ["backbone", "adapter"])]
    pub checkpoint: Option<PathBuf>,
    /// Model config; required for an official `.pth`.
    #[arg(long, conflicts_with = "adapter")]
    pub config: Option<PathBuf>,
    /// Point-MAE backbone (official `pretrain.pth`, `dapt pretrain`'s `backbone.safetensors` or
    /// `pretrain.pth`, or any checkpoint holding its tensors) to apply `--adapter` on.
    #[arg(long, requires = "adapter")]
    pub backbone: Option<PathBuf>,
    /// A run's `adapter.safetensors`, applied on top of `--backbone`.
    #[arg(long, requires = "backbone")]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
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
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Point-cloud files (PLY, TXT, NPY, OFF, OBJ, ...).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// The classifier of `--checkpoint [--config]` or of `--backbone --adapter` (clap makes
/// sure exactly one of the two is given); shared by `dapt predict` and `dapt eval`.
pub fn load_model(
    checkpoint: Option<&Path>,
    config: Option<&Path>,
    backbone: Option<&Path>,
    adapter: Option<&Path>,
    device: &burn::tensor::Device,
) -> anyhow::Result<LoadedClassifier> {
    match (checkpoint, backbone, adapter) {
        (Some(c), _, _) => Ok(load_classifier(c, config, device)?),
        (None, Some(b), Some(a)) => Ok(load_classifier_with_adapter(b, a, device)?),
        _ => anyhow::bail!("pass --checkpoint, or --backbone with --adapter"),
    }
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    if args.task == super::train::CliTask::Partseg {
        return super::partseg::predict(&args);
    }
    let selected = select(args.backend);
    if !args.json {
        eprintln!("backend: {}", selected.description);
    }
    let device = selected.device;
    let mut loaded = load_model(
        args.checkpoint.as_deref(),
        args.config.as_deref(),
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
        if !args.json {
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
    if args.json {
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
