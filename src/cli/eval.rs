//! `dapt eval`: accuracy, mean class accuracy, per-class accuracy and confusion matrix of a
//! checkpoint on a data set's test split; optional ModelNet40 voting.

use std::path::PathBuf;

use crate::backend::{BackendChoice, select};
use crate::data::Rng;
use crate::train::TrainConfig;
use crate::train::eval::{evaluate, evaluate_vote};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// `classification` (default) or `partseg`.
    #[arg(long, value_enum, default_value_t = super::train::CliTask::Classification)]
    pub task: super::train::CliTask,
    #[arg(long, required_unless_present = "adapter", conflicts_with_all = ["backbone", "adapter"])]
    pub checkpoint: Option<PathBuf>,
    #[arg(long, conflicts_with = "adapter")]
    pub config: Option<PathBuf>,
    /// Point-MAE backbone to apply `--adapter` on (as `dapt predict --backbone`).
    #[arg(long, requires = "adapter")]
    pub backbone: Option<PathBuf>,
    /// A run's `adapter.safetensors`, applied on top of `--backbone`.
    #[arg(long, requires = "backbone")]
    pub adapter: Option<PathBuf>,
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Voting with N views per cloud (ModelNet40 protocol; `--vote` alone: the official 10);
    /// reports mean and max over repeats.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10")]
    pub vote: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub vote_repeats: usize,
    /// Clouds per voting batch: each batch shares one random view draw, as the official
    /// `test_vote` does with its test loader's batch (`total_bs` = 32).
    #[arg(long, default_value_t = 32)]
    pub vote_batch: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.task == super::train::CliTask::Partseg {
        return super::partseg::eval(&args);
    }
    let selected = select(args.backend);
    if !args.json {
        eprintln!("backend: {}", selected.description);
    }
    let device = selected.device;
    let mut loaded = super::predict::load_model(
        args.checkpoint.as_deref(),
        args.config.as_deref(),
        args.backbone.as_deref(),
        args.adapter.as_deref(),
        &device,
    )?;
    let cfg = TrainConfig {
        model: loaded.model.config.clone(),
        data: args.data.clone(),
        normalize: Some(loaded.normalize),
        ..TrainConfig::default()
    };
    let mut rng = Rng::new(0);
    let data = test_split(&cfg, &mut rng)?;
    if data.class_names.len() != loaded.model.config.cls_dim {
        anyhow::bail!(
            "{}: {} classes, but the model has {}",
            args.data,
            data.class_names.len(),
            loaded.model.config.cls_dim
        );
    }
    let r = evaluate(&mut loaded.model, &data.test, args.batch, &device)?;
    let per_class: Vec<serde_json::Value> = r
        .confusion
        .per_class_accuracy()
        .iter()
        .zip(data.class_names.iter())
        .map(|(a, n)| serde_json::json!({"class": n, "accuracy": a}))
        .collect();
    let mut v = serde_json::json!({
        "samples": data.test.len(),
        "loss": r.loss,
        "overall_accuracy": r.confusion.overall_accuracy(),
        "mean_class_accuracy": r.confusion.mean_class_accuracy(),
        "per_class": per_class,
        "confusion": r.confusion.counts,
        "class_names": data.class_names,
    });
    if let Some(views) = args.vote {
        // voting needs the raw clouds, not the FPS-sampled test set
        let raw = &data.raw;
        let npoints = loaded.model.config.npoints;
        let vr = evaluate_vote(
            &mut loaded.model,
            raw,
            npoints,
            cfg.point_all_for(npoints),
            views,
            args.vote_repeats,
            args.vote_batch,
            0,
            &device,
        )?;
        v["vote"] = serde_json::to_value(&vr)?;
    }
    if args.json {
        super::output::print_json(&v);
    } else {
        println!(
            "{} test clouds: overall accuracy {:.2}%, mean class accuracy {:.2}%, loss {:.4}",
            data.test.len(),
            100.0 * r.confusion.overall_accuracy(),
            100.0 * r.confusion.mean_class_accuracy(),
            r.loss
        );
        // a few-shot fold fills only W of the head's 40 classes: list the classes that occur
        let mut absent = 0;
        for (name, a) in data
            .class_names
            .iter()
            .zip(r.confusion.per_class_accuracy())
        {
            match a {
                Some(a) => println!("  {name:<16} {:.1}%", 100.0 * a),
                None => absent += 1,
            }
        }
        if absent > 0 {
            println!("  ({absent} classes have no test clouds and are not listed)");
        }
        if let Some(vr) = v.get("vote") {
            println!(
                "voting ({} views x {} repeats): mean {:.2}%, max {:.2}% (the official protocol reports the max)",
                vr["views"],
                vr["repeats"],
                100.0 * vr["mean_accuracy"].as_f64().unwrap_or(0.0),
                100.0 * vr["max_accuracy"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

/// The test split as `dapt eval` needs it, read once: `test` after the official test-time
/// FPS, `raw` as stored (normalised, padded) for voting. Only the test split is read, so
/// evaluating on the ModelNet40 caches does not parse the 1.9 GB training cache (twice).
struct TestSplit {
    class_names: Vec<String>,
    test: Vec<crate::train::batch::Item>,
    raw: Vec<crate::train::batch::Item>,
}

fn test_split(cfg: &TrainConfig, rng: &mut Rng) -> anyhow::Result<TestSplit> {
    use crate::train::batch::{Item, pad_to, test_points};
    let spec = crate::data::DataSpec::parse(&cfg.data)?;
    let mut ds = spec.open_test()?;
    // the model's recorded choice (set by the caller), as `prepare_data` applies it
    ds.normalize = cfg.normalize.unwrap_or(ds.normalize);
    let npoints = cfg.model.npoints;
    let opts = crate::data::ReadOptions::default();
    let mut test = Vec::with_capacity(ds.test.len());
    let mut raw = Vec::with_capacity(ds.test.len());
    for s in &ds.test {
        let mut pts = ds.load(s, &opts)?.positions;
        pad_to(&mut pts, npoints, rng);
        test.push(Item {
            points: test_points(&pts, npoints),
            label: s.label,
        });
        raw.push(Item {
            points: pts,
            label: s.label,
        });
    }
    if test.is_empty() {
        anyhow::bail!("{}: the test split is empty", cfg.data);
    }
    Ok(TestSplit {
        class_names: ds.class_names.clone(),
        test,
        raw,
    })
}
