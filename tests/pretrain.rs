//! Point-MAE pre-training: parity with the official PyTorch model
//! (shared/fixtures/reference/pretrain_small), checkpoint round trips (native backbone into
//! the fine-tuning model, official `pretrain.pth` layout through the user-file reader) and the
//! training loop's resume.

mod common;

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::Device;
use common::*;
use dapt::model::checkpoint::read_state_dict;
use dapt::model::layers::ForwardCtx;
use dapt::model::names::GradReader;
use dapt::model::pretrain::{
    MaeConfig, PatchMask, PointMae, load_pretrain, pretrain_key, reconstructions,
};

fn load_fixture_model(device: &Device) -> PointMae {
    let dir = fixture_dir("pretrain_small");
    let cfg = MaeConfig::from_yaml_file(&dir.join("config.yaml")).unwrap();
    assert_eq!((cfg.trans_dim, cfg.depth, cfg.decoder_depth), (96, 3, 2));
    let model = PointMae::new(&cfg, device).unwrap();
    // the same path a user's downloaded pretrain.pth takes
    let dict = read_state_dict(&dir.join("model.pth")).unwrap();
    let (model, report) = load_pretrain(model, &dict).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    model
}

fn fixture_mask(io: &HashMap<String, Fx>) -> PatchMask {
    let m = &io["mask"];
    let flags = m.data.iter().map(|&v| v != 0.0).collect();
    PatchMask::from_flags(m.shape[0], m.shape[1], flags).unwrap()
}

/// Loss, reconstruction, visible patches and gradients (held to `grad_tol`) against the
/// fixture. Returns the loss relative error.
fn check_pretrain(device: &Device, grad_tol: f64) -> f64 {
    let io = load_io("pretrain_small");
    let pts = &io["points"];
    let (b, n) = (pts.shape[0], pts.shape[1]);
    let points = to_points(pts);
    let mask = fixture_mask(&io);
    let model = load_fixture_model(device);

    // eval-mode forward, as the fixture was made; gradients through the autodiff device
    let mut model = model.train();
    let ad = device.clone().autodiff();
    let mut ctx = ForwardCtx::eval();
    let (out, groups) = model
        .forward_points(&points, b, n, &mask, &ad, &mut ctx)
        .unwrap();
    let loss_v = out.loss.clone().into_scalar::<f32>() as f64;
    let want = io["loss"].data[0];
    let loss_err = ((loss_v - want) / want).abs();

    // the vis=True outputs: visible patches of the batch, then the rebuilt masked patches
    let recs = reconstructions(&out, &groups, &mask);
    let visible: Vec<f32> = recs
        .iter()
        .flat_map(|r| r.visible.iter().flatten().copied())
        .collect();
    let mut full = visible.clone();
    full.extend(
        recs.iter()
            .flat_map(|r| r.predicted.iter().flatten().copied()),
    );
    if std::env::var("PARITY_VERBOSE").is_ok() {
        eprintln!(
            "loss rel {loss_err:.3e}; visible rel {:.3e}; reconstruction rel {:.3e}",
            rel_err(&visible, &io["visible"].data),
            rel_err(&full, &io["reconstruction"].data)
        );
    }
    assert_close("visible", &visible, &io["visible"], 1e-4);
    assert_close("reconstruction", &full, &io["reconstruction"], 1e-4);
    // ground truth of the masked patches is the input cloud's own points
    for r in &recs {
        assert_eq!(r.ground_truth.len(), r.predicted.len());
        assert_eq!(r.visible.len() + r.ground_truth.len(), 16 * 8);
        for p in &r.ground_truth {
            // centre + (point - centre) rounds back to within an ulp or two of the point
            let near = points
                .iter()
                .any(|q| (0..3).all(|k| (q[k] - p[k]).abs() <= 1e-6));
            assert!(near, "ground truth point {p:?} not in the cloud");
        }
    }

    {
        let grads = out.loss.backward();
        let mut reader = GradReader::new(&grads);
        model.visit(&mut reader);
        let got: HashMap<String, Vec<f32>> = reader
            .out
            .into_iter()
            .map(|(k, v)| (pretrain_key(&k), v.data))
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
        assert_eq!(checked, 5, "the fixture lists five gradients");
    }
    loss_err
}

#[test]
fn pretrain_small_matches_pytorch_on_flex() {
    let err = check_pretrain(&Device::flex(), 1e-3);
    assert!(err <= 1e-5, "loss relative error {err:.3e}");
}

/// The same code on burn's wgpu backend (Mesa lavapipe here and in CI). Measured on
/// lavapipe: loss relative error 7.4e-8, reconstruction 3.6e-7, visible patches exact (they
/// are input points); gradients 7e-7 (head) to 3.8e-4 (first conv, behind two max-pools and
/// every block). The differences come from lavapipe's transcendental functions and
/// reduction order: the forward meets the CPU tolerances (loss 1e-5, tensors 1e-4) with two
/// orders of magnitude to spare, while the deepest gradients sit within 3x of 1e-3, so they
/// are held to 1e-2 here (as the classifier's wgpu parity test does); any real divergence
/// (a wrong mask or token order) moves the loss by percent.
#[test]
fn pretrain_small_matches_pytorch_on_wgpu() {
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    let err = check_pretrain(&device, 1e-2);
    assert!(err <= 1e-5, "loss relative error {err:.3e}");
}

#[test]
fn checkpoint_errors_name_the_keys() {
    let device = Device::flex();
    let dir = fixture_dir("pretrain_small");
    let mut dict = read_state_dict(&dir.join("model.pth")).unwrap();
    dict.tensors.remove("mask_token");
    dict.tensors.insert(
        "cls_token".into(),
        dapt::model::names::RawTensor {
            shape: vec![1, 1, 96],
            data: vec![0.0; 96],
        },
    );
    let cfg = MaeConfig::from_yaml_file(&dir.join("config.yaml")).unwrap();
    let err = load_pretrain(PointMae::new(&cfg, &device).unwrap(), &dict)
        .err()
        .expect("a broken checkpoint must not load")
        .to_string();
    assert!(err.contains("missing keys: mask_token"), "{err}");
    assert!(err.contains("unexpected keys: cls_token"), "{err}");
    // a configuration of another width reports shapes, by official name
    let mut wide = cfg.clone();
    wide.trans_dim = 120;
    let dict = read_state_dict(&dir.join("model.pth")).unwrap();
    let err = load_pretrain(PointMae::new(&wide, &device).unwrap(), &dict)
        .err()
        .expect("shape mismatch")
        .to_string();
    assert!(
        err.contains(
            "MAE_decoder.blocks.0.attn.proj.bias: checkpoint shape [96], model expects [120]"
        ),
        "{err}"
    );
}
