//! `dapt eval`: accuracy, mean class accuracy, per-class accuracy and confusion matrix of a
//! checkpoint on a data set's test split; optional ModelNet40 voting.

use crate::data::Rng;
use crate::train::TrainConfig;
use crate::train::eval::{evaluate, evaluate_vote};
use crate::train::partseg::{evaluate_seg, prepare_seg_test};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: super::args::ModelArgs,
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
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.model.task == super::args::CliTask::Partseg {
        return eval_partseg(&args);
    }
    let device = args.model.device();
    let mut loaded = args.model.classifier(&device)?;
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
    if args.model.json {
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

/// `dapt eval --task partseg`.
fn eval_partseg(args: &EvalArgs) -> anyhow::Result<()> {
    let device = args.model.device();
    let mut loaded = args.model.segmenter(&device)?;
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
    if args.model.json {
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
        super::output::print_seg_table(&table);
    }
    Ok(())
}
