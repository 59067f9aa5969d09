//! Part segmentation: parity of the Point-MAE segmentation model with the official PyTorch
//! model (`partseg_small`), mIoU on hand-made cases, the DAPT variant's trainable set, and a
//! short end-to-end training run on the synthetic set.

mod common;

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::Device;
use common::*;
use dapt::model::checkpoint::{LoadMode, read_state_dict};
use dapt::model::config::ModelKind;
use dapt::model::layers::{ForwardCtx, host_vec};
use dapt::model::names::GradReader;
use dapt::model::partseg::{PartSegConfig, PartSegModel, load_partseg, nll_loss, to_official};

fn fixture_config() -> PartSegConfig {
    // meta.json: width 96, depth 12, 32 groups x 16, 50 parts; heads as the official seg model
    PartSegConfig {
        trans_dim: 96,
        depth: 12,
        num_heads: 6,
        group_size: 16,
        num_group: 32,
        taps: vec![3, 7, 11],
        npoints: 512,
        ..PartSegConfig::official(ModelKind::PointMae)
    }
}

#[test]
fn partseg_small_matches_pytorch_on_flex() {
    let device = Device::flex();
    let io = load_io("partseg_small");
    let dict = read_state_dict(&fixture_dir("partseg_small").join("model.pth")).unwrap();
    let model = PartSegModel::new(&fixture_config(), &device).unwrap();
    let (model, report) = load_partseg(model, &dict, LoadMode::Strict).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    let pts = &io["points"];
    let (b, n) = (pts.shape[0], pts.shape[1]);
    let points = to_points(pts);
    let cats = io["category"].usize();
    let targets = io["target"].usize();

    let mut model = model.train();
    let ad = device.clone().autodiff();
    let mut ctx = ForwardCtx::eval();
    let out = model
        .forward_points(&points, &cats, b, n, &ad, &mut ctx)
        .unwrap();
    let lp: Vec<f32> = host_vec(out.log_probs.clone());
    assert_close("log_probs", &lp, &io["log_probs"], 1e-4);
    let loss = nll_loss(out.log_probs, &targets).unwrap();
    let loss_v = host_vec(loss.clone())[0] as f64;
    let want = io["loss"].data[0];
    assert!(
        ((loss_v - want) / want).abs() <= 1e-5,
        "loss {loss_v} vs {want}"
    );
    let grads = loss.backward();
    let mut reader = GradReader::new(&grads);
    model.visit(&mut reader);
    let got: HashMap<String, Vec<f32>> = reader
        .out
        .into_iter()
        .map(|(k, v)| (to_official(&k), v.data))
        .collect();
    let mut checked = 0;
    for (name, want) in io.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let key = &name["grad.".len()..];
        let g = got
            .get(key)
            .unwrap_or_else(|| panic!("no gradient for {key}"));
        if std::env::var("PARITY_VERBOSE").is_ok() {
            eprintln!("{name}: rel {:.3e}", rel_err(g, &want.data));
        }
        assert_close(name, g, want, 1e-3);
        checked += 1;
    }
    // convs3, label_conv (conv + BN) and the first propagation conv
    assert_eq!(checked, 7);
}

#[test]
fn dapt_variant_trains_only_its_rule_and_the_head() {
    let device = Device::flex();
    let cfg = PartSegConfig {
        depth: 3,
        taps: vec![0, 1, 2],
        ..PartSegConfig::small(ModelKind::Dapt, 12, 4)
    };
    let model = PartSegModel::new(&cfg, &device)
        .unwrap()
        .with_trainable_rule();
    let mut model = model.train();
    let ad = device.clone().autodiff();
    let mut rng = dapt::data::Rng::new(3);
    let (b, n) = (2, 200);
    let points: Vec<[f32; 3]> = (0..b * n)
        .map(|_| {
            [
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
            ]
        })
        .collect();
    let targets: Vec<usize> = (0..b * n).map(|i| i % 12).collect();
    let mut ctx = ForwardCtx::train(&mut rng);
    let out = model
        .forward_points(&points, &[1, 3], b, n, &ad, &mut ctx)
        .unwrap();
    assert_eq!(out.log_probs.dims(), [b, n, 12]);
    let lp = host_vec(out.log_probs.clone());
    for row in lp.chunks(12) {
        let s: f32 = row.iter().map(|v| v.exp()).sum();
        assert!((s - 1.0).abs() < 1e-4, "probabilities sum to {s}");
    }
    let grads = nll_loss(out.log_probs, &targets).unwrap().backward();
    let mut reader = GradReader::new(&grads);
    model.visit(&mut reader);
    let names: Vec<String> = reader.out.iter().map(|(k, _)| to_official(k)).collect();
    for want in [
        "cls_token",
        "tfts_gamma_2",
        "blocks.blocks.2.Adapter_MLP.up_proj.weight",
        "label_conv.0.weight",
        "propagation_0.mlp_convs.0.weight",
        "convs3.bias",
    ] {
        assert!(names.iter().any(|n| n == want), "no gradient for {want}");
    }
    for frozen in [
        "encoder.",
        "pos_embed.",
        ".qkv.",
        ".fc1.",
        "norm.weight",
        ".norm1.",
    ] {
        assert!(
            !names
                .iter()
                .any(|n| n.contains(frozen) && !n.contains("Adapter")),
            "a frozen {frozen} tensor got a gradient"
        );
    }
    // a bad category is an error, not a panic
    assert!(
        model
            .forward_points(&points, &[1, 9], b, n, &ad, &mut ForwardCtx::eval())
            .is_err()
    );
}
