//! The app's backbone + adapters panel: a backbone and two runs' adapters opened, switched
//! from the list, each giving its own run's best-checkpoint prediction; switching reads no
//! file; a wrong pairing is a banner message, not a panic.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use dapt::app::model_hook::analyzer_from_checkpoint;
use dapt::app::{AppOptions, StudioApp};
use dapt::data::PointCloud;
use dapt::model::pretrain::{MaeConfig, PointMae};
use dapt::train::{Mode, TrainConfig};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn mae_config() -> MaeConfig {
    MaeConfig {
        drop_path_rate: 0.0,
        ..common::tiny_mae_config()
    }
}

fn export(cfg: &MaeConfig, seed: u64, path: &Path) {
    let m = PointMae::new(cfg, seed, &Device::flex()).unwrap();
    dapt::train::pretrain::export_backbone(&m, path, 0).unwrap();
}

/// A one-epoch DAPT run on `backbone`; returns its directory.
fn train(dir: &Path, name: &str, backbone: &Path, seed: u64, lr: f64) -> PathBuf {
    let mut model = mae_config().backbone_config(10);
    model.rank = 4;
    let mut cfg = TrainConfig {
        model,
        mode: Mode::Dapt,
        data: "synthetic:seed=4,train=2,test=1,points=200".into(),
        init: Some(backbone.to_path_buf()),
        epochs: 1,
        warmup_epochs: 0,
        batch: 8,
        seed,
        backend: dapt::backend::BackendChoice::Cpu,
        out: dir.join(name),
        ..TrainConfig::default()
    };
    cfg.optim.lr = lr;
    dapt::train::run(cfg, None, None, Arc::new(AtomicBool::new(false))).unwrap();
    dir.join(name)
}

fn ring() -> PointCloud {
    PointCloud::from_positions(
        (0..300)
            .map(|i| {
                let t = i as f32 * 0.05;
                [t.cos(), t.sin(), 0.2 * (3.0 * t).sin()]
            })
            .collect(),
    )
}

/// Steps until no file is being read, no model assembled or loaded, no analysis running.
fn settle(h: &mut Harness<'_, StudioApp>) {
    let t0 = Instant::now();
    h.run_steps(1);
    while h.state().adapters.busy() || h.state().background_busy() || !h.state().analyses_settled()
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "never settled");
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    h.run_steps(2);
}

fn shown(h: &Harness<'_, StudioApp>) -> Vec<f32> {
    h.state().clouds[0]
        .analysis()
        .unwrap_or_else(|| panic!("no analysis shown; {:?}", h.state().messages))
        .probabilities
        .clone()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d <= 1e-6, "{what}: probabilities differ by {d}");
}

fn has_label(h: &Harness<'_, StudioApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

#[test]
fn the_app_switches_adapters_on_one_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = dir.path().join("backbone.safetensors");
    export(&mae_config(), 9, &backbone);
    let run_a = train(dir.path(), "run_a", &backbone, 1, 2e-3);
    let run_b = train(dir.path(), "run_b", &backbone, 2, 5e-3);
    let cloud = ring();
    let own = |run: &Path| {
        analyzer_from_checkpoint(&run.join("checkpoints/best.safetensors"), None)
            .unwrap()
            .analyze(&cloud)
            .unwrap()
            .probabilities
    };
    let (want_a, want_b) = (own(&run_a), own(&run_b));
    let gap = want_a
        .iter()
        .zip(&want_b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(gap > 1e-4, "the two runs should predict differently");

    let mut app = StudioApp::new(AppOptions::default());
    app.add_cloud("ring".into(), cloud.clone());
    let mut h = Harness::builder()
        .with_size([900.0, 1100.0])
        .build_ui_state(|ui, app: &mut StudioApp| app.ui_root(ui), app);
    h.run_steps(2);
    assert!(has_label(&h, "no backbone"));

    // as a drop does: the file's metadata says backbone or adapter
    h.state_mut().open_file(&backbone);
    h.state_mut().open_file(&run_a.join("adapter.safetensors"));
    settle(&mut h);
    assert!(
        h.state().adapters.backbone_ready(),
        "{:?}",
        h.state().messages
    );
    assert_eq!(
        h.state().adapters.active_adapter(),
        Some(run_a.join("adapter.safetensors").as_path())
    );
    assert_close(&shown(&h), &want_a, "adapter a");
    assert!(has_label(
        &h,
        "model: run_a/adapter.safetensors on backbone.safetensors"
    ));

    // the second adapter joins the list and becomes the model
    h.state_mut()
        .adapters
        .open_adapter(run_b.join("adapter.safetensors"));
    settle(&mut h);
    assert_eq!(h.state().adapters.adapters.len(), 2);
    assert_eq!(h.state().adapters.selected_index(), Some(1));
    assert_close(&shown(&h), &want_b, "adapter b");
    assert!(has_label(&h, "model: run_b/adapter.safetensors on"));

    // switching back from the list reads no file: the backbone is gone from disk by now
    std::fs::remove_file(&backbone).unwrap();
    h.get_by_label("run_a/adapter.safetensors (epoch 0)")
        .click();
    settle(&mut h);
    assert_eq!(h.state().adapters.selected_index(), Some(0));
    assert_close(&shown(&h), &want_a, "adapter a again");
    h.get_by_label("run_b/adapter.safetensors (epoch 0)")
        .click();
    settle(&mut h);
    assert_close(&shown(&h), &want_b, "adapter b again");

    // a file that is not an adapter: a message, the model stays
    h.state_mut()
        .adapters
        .open_adapter(run_a.join("checkpoints/last.safetensors"));
    settle(&mut h);
    assert!(
        has_label(&h, "could not open the adapter"),
        "{:?}",
        h.state().messages
    );
    assert_close(&shown(&h), &want_b, "model kept");

    // another backbone (other width): the selected adapter does not fit; both files named
    let wide = dir.path().join("wide.safetensors");
    export(
        &MaeConfig {
            trans_dim: 48,
            ..mae_config()
        },
        3,
        &wide,
    );
    h.state_mut().open_file(&wide);
    h.get_by_label("run_a/adapter.safetensors (epoch 0)")
        .click();
    settle(&mut h);
    let msg = h
        .state()
        .messages
        .iter()
        .find(|m| m.contains("does not fit") && m.contains("run_a"))
        .cloned()
        .unwrap_or_else(|| panic!("no mismatch message: {:?}", h.state().messages));
    assert!(msg.contains(&wide.display().to_string()), "{msg}");
    assert!(has_label(&h, "does not fit backbone"));
    assert_close(&shown(&h), &want_b, "model kept after a mismatch");
}
