//! `dapt info`: parameter and token counts and the resolved configuration.

use std::path::PathBuf;

use burn::tensor::Device;

use crate::model::checkpoint::{LoadMode, load_into, read_state_dict};
use crate::model::names::{count_params, dapt_trainable, named_params};
use crate::model::{Classifier, ModelConfig, ModelKind};

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Official YAML or our JSON config.
    #[arg(long)]
    pub config: PathBuf,
    /// Also check that this checkpoint loads into the model.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let cfg = ModelConfig::load(&args.config)?;
    // an official YAML names its dataset through `_base_`, which decides the normalisation
    let is_json = args
        .config
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let official = if is_json {
        None
    } else {
        Some(crate::model::yaml::OfficialYaml::read(&args.config)?)
    };
    let dataset = official.as_ref().and_then(|y| y.dataset_name());
    let normalize = official.as_ref().and_then(|y| y.normalization());
    let device = Device::flex();
    let model = Classifier::new(&cfg, &device)?;
    let params = named_params(&model);
    let (trainable, total) = match cfg.kind {
        ModelKind::Dapt => count_params(&params, dapt_trainable),
        ModelKind::PointMae => count_params(&params, |_| true),
    };
    let g = cfg.num_group;
    let tokens_in: Vec<usize> = (0..cfg.depth)
        .map(|l| match cfg.kind {
            ModelKind::Dapt => 1 + l + g,
            ModelKind::PointMae => 1 + g,
        })
        .collect();
    let final_tokens = match cfg.kind {
        ModelKind::Dapt => 1 + cfg.depth + g,
        ModelKind::PointMae => 1 + g,
    };
    let mut checkpoint = serde_json::Value::Null;
    if let Some(ck) = &args.checkpoint {
        let dict = read_state_dict(ck)?;
        let (_, report) = load_into(model, &dict, LoadMode::Strict)?;
        checkpoint = serde_json::json!({"path": ck, "tensors_loaded": report.applied.len()});
    }
    let v = serde_json::json!({
        "trainable_params": trainable,
        "total_params": total,
        "trainable_ratio": trainable as f64 / total.max(1) as f64,
        "num_group": g,
        "group_size": cfg.group_size,
        "tokens_per_block_input": tokens_in,
        "final_tokens": final_tokens,
        "head_in_dim": cfg.head_in_dim(),
        "config": cfg,
        "dataset": dataset,
        "input_normalization": normalize,
        "checkpoint": checkpoint,
    });
    for n in official.iter().flat_map(|y| &y.notes) {
        eprintln!("note: {n}");
    }
    if args.json {
        super::output::print_json(&v);
    } else {
        println!(
            "model: {:?}, {} blocks x {} wide, {} heads",
            cfg.kind, cfg.depth, cfg.trans_dim, cfg.num_heads
        );
        println!(
            "parameters: {trainable} trainable of {total} ({:.2}%)",
            100.0 * trainable as f64 / total.max(1) as f64
        );
        println!(
            "tokens: {g} patches of {} points from {} points; {} tokens after the last block; head input {}",
            cfg.group_size,
            cfg.npoints,
            final_tokens,
            cfg.head_in_dim()
        );
        if let Some(d) = &dataset {
            let norm = match normalize {
                Some(true) => "pc_normalize",
                Some(false) => "none (raw coordinates)",
                None => "unknown",
            };
            println!("dataset: {d}; input normalisation: {norm}");
        }
        if let Some(ck) = &args.checkpoint {
            println!("checkpoint {} loads strictly", ck.display());
        }
    }
    Ok(())
}
