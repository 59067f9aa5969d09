//! Parity with the official PyTorch models (shared/fixtures/reference): grouping, every
//! intermediate tensor, logits, loss and the gradients of all trainable parameters.

mod common;

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use common::*;
use dapt::model::checkpoint::{LoadMode, load_into, read_state_dict};
use dapt::model::classifier::cross_entropy;
use dapt::model::layers::{ForwardCtx, host_vec};
use dapt::model::names::{GradReader, Trainable, count_params, dapt_trainable, named_params};
use dapt::model::{Classifier, ModelConfig, ModelKind};

fn vec3(t: Tensor<3>) -> Vec<f32> {
    host_vec(t)
}

fn load_model(case: &str, device: &Device) -> Classifier {
    let dir = fixture_dir(case);
    let cfg = ModelConfig::from_yaml_file(&dir.join("config.yaml")).unwrap();
    let model = Classifier::new(&cfg, device).unwrap();
    let dict = read_state_dict(&dir.join("model.pth")).unwrap();
    let (model, report) = load_into(model, &dict, LoadMode::Strict).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    model
}

/// Forward in eval mode, then loss and gradients (eval-mode BN, no dropout), as the
/// fixtures were made.
#[allow(clippy::too_many_lines)]
fn check_case(case: &str, device: &Device, check_intermediates: bool, grad_tol: f64) {
    let io = load_io(case);
    let mut model = load_model(case, device);
    let kind = model.config.kind;
    let pts = io["points"].clone();
    let (b, n) = (pts.shape[0], pts.shape[1]);
    let points = to_points(&pts);

    let mut ctx = ForwardCtx::eval();
    let (out, groups) = model
        .forward_points(&points, b, n, device, &mut ctx)
        .unwrap();
    if check_intermediates {
        let want_c: Vec<f64> = io["centers"].data.clone();
        let got_c: Vec<f32> = groups.centers_host().iter().flatten().copied().collect();
        assert_close("centers", &got_c, &io["centers"], 0.0);
        assert_eq!(got_c.len(), want_c.len());
        // KNN index sets equal per group (order within a group is irrelevant downstream)
        let want_idx = io["knn_idx"].usize();
        let m = model.config.group_size;
        let got_idx = groups.knn_idx_host();
        for (g, (a, w)) in got_idx.chunks(m).zip(want_idx.chunks(m)).enumerate() {
            let mut a = a.to_vec();
            let mut w = w.to_vec();
            a.sort();
            w.sort();
            assert_eq!(a, w, "knn set of group {g}");
        }
        assert_close(
            "patch_tokens",
            &vec3(out.patch_tokens.clone()),
            &io["patch_tokens"],
            1e-4,
        );
        for (i, t) in out.block_out.iter().enumerate() {
            assert_close(
                &format!("block_out.{i}"),
                &vec3(t.clone()),
                &io[&format!("block_out.{i}")],
                1e-4,
            );
        }
        for (i, s) in out.scales.iter().enumerate() {
            assert_close(
                &format!("scale.{i}"),
                &vec3(s.clone()),
                &io[&format!("scale.{i}")],
                1e-4,
            );
        }
        let hi: Vec<f32> = host_vec(out.head_input.clone());
        assert_close("head_input", &hi, &io["head_input"], 1e-4);
    }
    let logits: Vec<f32> = host_vec(out.logits);
    assert_close("logits", &logits, &io["logits"], 1e-4);

    // loss and gradients on the autodiff device
    let labels = io["label"].usize();
    let rule: Box<dyn Fn(&str) -> bool> = match kind {
        ModelKind::Dapt => Box::new(dapt_trainable),
        ModelKind::PointMae => Box::new(|_: &str| true),
    };
    let model = model.map(&mut Trainable::new(rule));
    let mut model = model.train();
    let ad = device.clone().autodiff();
    let mut ctx = ForwardCtx::eval();
    let (out, _) = model.forward_points(&points, b, n, &ad, &mut ctx).unwrap();
    let loss = cross_entropy(out.logits, &labels);
    let loss_v: Vec<f32> = host_vec(loss.clone());
    let want_loss = io["loss"].data[0];
    assert!(
        ((loss_v[0] as f64 - want_loss) / want_loss).abs() <= 1e-5,
        "loss {} vs {want_loss}",
        loss_v[0]
    );
    let grads = loss.backward();
    let mut reader = GradReader::new(&grads);
    model.visit(&mut reader);
    let got: HashMap<String, Vec<f32>> = reader.out.into_iter().map(|(k, v)| (k, v.data)).collect();
    // Max-pooling routes a gradient to one point; where two points tie to float precision
    // the choice is decided by rounding, which no port can reproduce. Only then are the
    // encoder gradients compared at 5e-3 (full_small has gaps of 4e-8 and an exact tie).
    let encoder_tol: f64 = if min_maxpool_gap(&mut model.valid(), &points, b, n, device) < 1e-6 {
        5e-3
    } else {
        1e-3
    };
    let mut checked = 0;
    for (name, want) in io.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let key = &name["grad.".len()..];
        let g = got
            .get(key)
            .unwrap_or_else(|| panic!("no gradient for {key}"));
        let tol = if name.starts_with("grad.encoder.") {
            encoder_tol.max(grad_tol)
        } else {
            grad_tol
        };
        if std::env::var("PARITY_VERBOSE").is_ok() {
            eprintln!(
                "{name}: rel {:.3e} got {:?} want {:?}",
                rel_err(g, &want.data),
                &g[..g.len().min(3)],
                &want.data[..want.data.len().min(3)]
            );
        }
        assert_close(name, g, want, tol);
        checked += 1;
    }
    assert!(checked > 0);
    if kind == ModelKind::Dapt {
        // frozen parameters get no gradient at all
        assert!(
            got.keys().all(|k| dapt_trainable(k)),
            "a frozen tensor got a gradient"
        );
    }
}

#[test]
fn dapt_small_matches_pytorch_on_flex() {
    check_case("dapt_small", &Device::flex(), true, 1e-3);
}

#[test]
fn dapt_small_variant_matches_pytorch_on_flex() {
    check_case("dapt_small_variant", &Device::flex(), true, 1e-3);
}

#[test]
fn full_small_matches_pytorch_on_flex() {
    check_case("full_small", &Device::flex(), false, 1e-3);
}

#[test]
fn parameter_counts_match_the_official_ones() {
    let device = Device::flex();
    let count = |cfg: &ModelConfig| {
        let m = Classifier::new(cfg, &device).unwrap();
        count_params(&named_params(&m), dapt_trainable)
    };
    assert_eq!(
        count(&ModelConfig::dapt_scan_objbg()),
        (1_087_771, 22_912_795)
    );
    assert_eq!(
        count(&ModelConfig::dapt_modelnet40()),
        (1_069_716, 22_894_740)
    );
    // the fixtures' own counts
    for case in ["dapt_small", "dapt_small_variant"] {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture_dir(case).join("meta.json")).unwrap(),
        )
        .unwrap();
        let cfg = ModelConfig::from_yaml_file(&fixture_dir(case).join("config.yaml")).unwrap();
        let (t, total) = count(&cfg);
        assert_eq!(
            t as u64,
            meta["trainable_params"].as_u64().unwrap(),
            "{case}"
        );
        assert_eq!(
            total as u64,
            meta["total_params"].as_u64().unwrap(),
            "{case}"
        );
        let names: Vec<String> = named_params(&Classifier::new(&cfg, &device).unwrap())
            .into_iter()
            .filter(|p| !p.is_buffer && dapt_trainable(&p.name))
            .map(|p| p.name)
            .collect();
        let want: Vec<String> = meta["trainable_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let mut a = names.clone();
        let mut w = want.clone();
        a.sort();
        w.sort();
        assert_eq!(a, w, "{case}: trainable names");
    }
}

/// Smallest gap between the largest and second largest value of any max-pool in the patch
/// encoder (the global max over points, then the token max), over all groups and channels.
fn min_maxpool_gap(
    model: &mut Classifier,
    points: &[[f32; 3]],
    b: usize,
    n: usize,
    device: &Device,
) -> f32 {
    let cfg = model.config.clone();
    let (gsz, ng) = (cfg.group_size, cfg.num_group);
    let g = dapt::model::grouping::group(points, b, n, ng, gsz).unwrap();
    let rows = b * ng * gsz;
    let enc = &mut model.encoder;
    let h = burn::tensor::activation::relu(
        enc.first_conv1.forward(
            enc.first_conv0
                .forward(g.neighborhoods_tensor(device).reshape([rows, 3])),
            false,
        ),
    );
    let f = enc.first_conv3.forward(h);
    let gap = |v: &[f32], c: usize| {
        let mut best = f32::INFINITY;
        for grp in 0..b * ng {
            for ch in 0..c {
                let mut col: Vec<f32> = (0..gsz).map(|m| v[(grp * gsz + m) * c + ch]).collect();
                col.sort_by(|a, b| b.total_cmp(a));
                best = best.min(col[0] - col[1]);
            }
        }
        best
    };
    let g1 = gap(&host_vec(f.clone()), 256);
    let f3 = f.reshape([b * ng, gsz, 256]);
    let glob = f3.clone().max_dim(1).expand([b * ng, gsz, 256]);
    let x2 = Tensor::cat(vec![glob, f3], 2).reshape([rows, 512]);
    let x2 = enc
        .second_conv1
        .forward(enc.second_conv0.forward(x2), false);
    let y = enc.second_conv3.forward(burn::tensor::activation::relu(x2));
    let g2 = gap(&host_vec(y), cfg.trans_dim);
    g1.min(g2)
}

/// The same model code on burn's wgpu backend (Mesa's lavapipe in CI). Every forward tensor
/// meets 1e-4 as on the CPU; gradients come out within ~6e-4 except the scalar
/// `Adapter_MLP.scale.bias` sums (5.4e-3 measured), as lavapipe's transcendental functions and
/// reduction order differ from PyTorch's CPU arithmetic, so gradients are held to 1e-2 here.
#[test]
fn dapt_small_matches_pytorch_on_wgpu() {
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    check_case("dapt_small", &device, true, 1e-2);
}

/// Tests on shared/ (research samples, the real-size checkpoint): `scripts/test.sh` runs them
/// when shared/ is present and says in one line when it is not.
mod shared {
    use super::*;

    #[test]
    fn dapt_modelnet_full_matches_pytorch_on_flex() {
        check_case("dapt_modelnet_full", &Device::flex(), true, 1e-3);
    }

    /// The real-size model on wgpu: FPS and kNN as one kernel launch each over 1,024 points
    /// (the official centres exactly, the official neighbour sets), the encoder's biases added
    /// over its 4,096 rows in two stages, and the gradients held as `dapt_small`'s on wgpu.
    #[test]
    fn dapt_modelnet_full_matches_pytorch_on_wgpu() {
        let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        check_case("dapt_modelnet_full", &device, true, 1e-2);
    }
}
