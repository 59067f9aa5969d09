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
use dapt::model::names::{GradReader, count_params, named_params};
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

/// Loads `partseg_small`, checks the parameter count, log-probabilities (1e-4 relative), the
/// NLL loss (1e-5) and the listed gradients (`grad_tol`).
fn check_partseg_small(device: &Device, grad_tol: f64) {
    let device = device.clone();
    let io = load_io("partseg_small");
    let dict = read_state_dict(&fixture_dir("partseg_small").join("model.pth")).unwrap();
    let model = PartSegModel::new(&fixture_config(), &device).unwrap();
    let (model, report) = load_partseg(model, &dict, LoadMode::Strict).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("partseg_small").join("meta.json")).unwrap(),
    )
    .unwrap();
    let (_, total) = count_params(&named_params(&model), |_| true);
    assert_eq!(total as u64, meta["total_params"].as_u64().unwrap());
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
    if std::env::var("PARITY_VERBOSE").is_ok() {
        eprintln!("log_probs: rel {:.3e}", rel_err(&lp, &io["log_probs"].data));
    }
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
        assert_close(name, g, want, grad_tol);
        checked += 1;
    }
    // convs3, label_conv (conv + BN) and the first propagation conv
    assert_eq!(checked, 7);
}

#[test]
fn partseg_small_matches_pytorch_on_flex() {
    check_partseg_small(&Device::flex(), 1e-3);
}

/// The same model on burn's wgpu backend (Mesa's lavapipe here and in CI): the same
/// tolerances hold (gradients measured within 5.1e-6 relative, log-probabilities within 1e-4).
#[test]
fn partseg_small_matches_pytorch_on_wgpu() {
    check_partseg_small(&Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), 1e-3);
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
    let points: Vec<[f32; 3]> = common::clouds::uniform_cube(&mut rng, b * n);
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

/// Baselines the trained model must clear on `test`: uniformly random predictions among each
/// shape's category parts, and every point given the category's most frequent part (counted
/// on the test labels themselves, so it is an upper bound for any constant predictor).
fn baselines(test: &[dapt::train::partseg::SegItem], parts: &[Vec<usize>]) -> (f64, f64) {
    let mut rng = dapt::data::Rng::new(99);
    let mut random = dapt::train::miou::MiouAccumulator::new(parts.to_vec(), vec![]);
    let mut constant = random.clone();
    for it in test {
        let p = &parts[it.category];
        let pred: Vec<usize> = it.labels.iter().map(|_| p[rng.below(p.len())]).collect();
        random
            .add_predictions(it.category, &pred, &it.labels)
            .unwrap();
    }
    for (cat, p) in parts.iter().enumerate() {
        let count = |part: usize| {
            test.iter()
                .filter(|it| it.category == cat)
                .flat_map(|it| it.labels.iter())
                .filter(|&&l| l == part)
                .count()
        };
        let Some(&major) = p.iter().max_by_key(|&&q| count(q)) else {
            continue;
        };
        for it in test.iter().filter(|it| it.category == cat) {
            let pred = vec![major; it.labels.len()];
            constant.add_predictions(cat, &pred, &it.labels).unwrap();
        }
    }
    (random.instance_miou(), constant.instance_miou())
}

/// Parameter counts of the full-size models (printed for the docs; the Point-MAE total is
/// the fixture's formula at width 384).
#[test]
fn official_size_parameter_counts() {
    let device = Device::flex();
    for kind in [ModelKind::PointMae, ModelKind::Dapt] {
        let m = PartSegModel::new(&PartSegConfig::official(kind), &device).unwrap();
        let params: Vec<_> = named_params(&m)
            .into_iter()
            .map(|mut p| {
                p.name = to_official(&p.name);
                p
            })
            .collect();
        let (t, total) = count_params(&params, |n| {
            dapt::model::partseg::partseg_trainable(kind, n)
        });
        eprintln!("{kind:?}: {t} trainable of {total}");
        assert!(t <= total && t > 0);
        if kind == ModelKind::Dapt {
            // the head alone is most of DAPT's trainable set; the backbone stays frozen
            assert!(t < total / 4);
        }
    }
}

/// The official double `optimizer.step()` replay moves AdamW twice per batch.
#[test]
fn official_double_step_is_replayed_on_request() {
    use dapt::train::optim::{AdamW, AdamWConfig};
    use dapt::train::partseg::{SegItem, seg_train_step};
    let device = Device::flex();
    let cfg = PartSegConfig {
        depth: 1,
        taps: vec![0],
        ..PartSegConfig::small(ModelKind::PointMae, 4, 2)
    };
    let mut rng = dapt::data::Rng::new(5);
    let items: Vec<SegItem> = (0..2)
        .map(|c| SegItem {
            points: common::clouds::uniform_cube(&mut rng, 64),
            labels: (0..64).map(|i| 2 * c + usize::from(i % 3 == 0)).collect(),
            category: c,
        })
        .collect();
    let ad = device.clone().autodiff();
    for (double, steps) in [(false, 1), (true, 2)] {
        let model = PartSegModel::new(&cfg, &device)
            .unwrap()
            .with_trainable_rule()
            .train();
        let mut opt = AdamW::new(AdamWConfig::default());
        let (_, loss, lp) =
            seg_train_step(model, &mut opt, &items, 1e-3, double, &mut rng, &ad).unwrap();
        assert!(dapt::readback::host_scalar(loss).is_finite());
        assert_eq!(lp.dims(), [2, 64, 4]);
        assert_eq!(opt.step, steps);
        assert_eq!(opt.config.grad_clip, Some(10.0), "clipping is restored");
    }
}

/// Chance levels of the default synthetic test split (run with `--ignored` to print them).
#[test]
#[ignore]
fn synthetic_baselines() {
    let t = dapt::train::partseg::prepare_seg_test("synthetic", 512, None, 0).unwrap();
    let (random, constant) = baselines(&t.test, &t.category_parts);
    eprintln!(
        "synthetic: {} test shapes; random {random:.4}, best constant {constant:.4}",
        t.test.len()
    );
}

/// Tests on shared/ (research samples, the real-size checkpoint): `scripts/test.sh` runs them
/// when shared/ is present and says in one line when it is not.
mod shared {
    use super::*;

    /// End to end on real ShapeNetPart shapes (the Cap subset in shared/data: 5 training shapes,
    /// 11 test shapes, parts 6 and 7): train, select the best epoch, reload its checkpoint,
    /// reproduce its score, then extend the run by one epoch through resume.
    #[test]
    fn partseg_learns_shapenetpart_caps_and_resumes() {
        use dapt::train::partseg::{
            PartSegTrainConfig, evaluate_seg, load_partseg_checkpoint, prepare_seg_test,
            run_partseg,
        };
        let data = format!(
            "shapenetpart:{}",
            shared_data_dir().join("shapenetpart-cap-tp3d").display()
        );
        let dir = tempfile::tempdir().unwrap();
        let env = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let epochs = env("PARTSEG_E2E_EPOCHS", 25);
        // a small model trained from scratch, fully (a frozen random backbone would leave only
        // the adapters and the head to learn)
        let mut cfg = PartSegTrainConfig::synthetic_demo();
        cfg.mode = dapt::train::Mode::Full;
        cfg.data = data.clone();
        cfg.epochs = epochs;
        cfg.out = dir.path().join("run");
        cfg.model.npoints = 512;
        cfg.model.depth = 2;
        cfg.model.taps = PartSegConfig::default_taps(2);
        cfg.optim.lr = 3e-3;
        cfg.batch = 5;
        // the CPU backend, so the reloaded checkpoint is scored on the device it was trained on
        cfg.backend = dapt::backend::BackendChoice::Cpu;
        let t0 = std::time::Instant::now();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let s = run_partseg(cfg.clone(), None, None, &stop).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let test = prepare_seg_test(&data, cfg.model.npoints, None, cfg.seed).unwrap();
        assert_eq!(test.test.len(), 11);
        let (random, constant) = baselines(&test.test, &test.category_parts);
        let lines = std::fs::read_to_string(s.run_dir.join("metrics.jsonl")).unwrap();
        if std::env::var("PARTSEG_E2E_VERBOSE").is_ok() {
            for l in lines.lines().filter(|l| l.contains("test")) {
                eprintln!("{l}");
            }
        }
        eprintln!(
            "partseg e2e (caps): {epochs} epochs in {secs:.0}s; best instance mIoU {:.4} (epoch {}); random {random:.4}, best constant {constant:.4}",
            s.best_instance_miou, s.best_epoch
        );
        assert_eq!(s.epochs_done, epochs);
        assert_eq!(lines.lines().count(), 2 * epochs);
        assert!(lines.contains("instance_miou") && lines.contains("class_miou"));
        let floor = random.max(constant);
        assert!(
            s.best_instance_miou > floor + 0.1,
            "instance mIoU {} is not well above the baselines {random} / {constant}",
            s.best_instance_miou
        );
        // the best checkpoint reloads and reproduces its test score
        let best = s.run_dir.join("checkpoints/best.safetensors");
        let mut loaded = load_partseg_checkpoint(&best, &Device::flex()).unwrap();
        let r = evaluate_seg(
            &mut loaded.model,
            &test.test,
            16,
            &loaded.category_parts,
            &loaded.category_names,
            &Device::flex(),
        )
        .unwrap();
        assert!((r.miou.instance_miou() - s.best_instance_miou).abs() < 1e-9);
        // extend the finished run by one epoch through resume
        let cpath = s.run_dir.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
        c["epochs"] = serde_json::json!(epochs + 1);
        std::fs::write(&cpath, c.to_string()).unwrap();
        let s2 = run_partseg(PartSegTrainConfig::default(), Some(&s.run_dir), None, &stop).unwrap();
        assert_eq!(s2.epochs_done, epochs + 1);
        let lines = std::fs::read_to_string(s.run_dir.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 2 * (epochs + 1));
    }
}

/// The viewer's scoring of a cloud under every category (`forward_categories`: one grouping,
/// one backbone run, the head per category) equals a forward pass per category, on burn-flex
/// and on wgpu, for the Point-MAE and the DAPT model; an empty or unknown category list is an
/// error, not a panic.
#[test]
fn scoring_every_category_at_once_equals_one_pass_per_category() {
    for (backend, device) in common::devices() {
        for kind in [ModelKind::PointMae, ModelKind::Dapt] {
            let cfg = PartSegConfig {
                trans_dim: 32,
                depth: 3,
                num_heads: 2,
                group_size: 8,
                num_group: 8,
                taps: PartSegConfig::default_taps(3),
                prop_dim: 32,
                head_dims: [32, 16],
                rank: 4,
                npoints: 64,
                ..PartSegConfig::small(kind, 7, 4)
            };
            let mut model = PartSegModel::new(&cfg, &device).unwrap();
            let n = cfg.npoints;
            let mut rng = dapt::data::Rng::new(4);
            let points: Vec<[f32; 3]> = common::clouds::uniform_cube(&mut rng, n);
            let cats = [2, 0, 3];
            let mut ctx = ForwardCtx::eval();
            let all = model
                .forward_categories(&points, &cats, n, &device, &mut ctx)
                .unwrap();
            assert_eq!(all.log_probs.dims(), [3, n, 7]);
            let all = host_vec(all.log_probs);
            for (i, &c) in cats.iter().enumerate() {
                let one = model
                    .forward_points(&points, &[c], 1, n, &device, &mut ctx)
                    .unwrap();
                let one = host_vec(one.log_probs);
                let row = &all[i * n * 7..(i + 1) * n * 7];
                let worst = one
                    .iter()
                    .zip(row)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    worst <= 1e-5,
                    "{backend} {kind:?} category {c}: off by {worst}"
                );
            }
            let err = |cats: &[usize], model: &mut PartSegModel, ctx: &mut ForwardCtx| match model
                .forward_categories(&points, cats, n, &device, ctx)
            {
                Ok(_) => panic!("{cats:?} was accepted"),
                Err(e) => e.to_string(),
            };
            let e = err(&[], &mut model, &mut ctx);
            assert!(e.contains("no object category"), "{e}");
            let e = err(&[9], &mut model, &mut ctx);
            assert!(e.contains("out of range"), "{e}");
        }
    }
}
