//! The training engine: learning on the synthetic set in every mode, the official recipe's
//! pieces (frozen set, BN drift, decay groups), reproducibility, resume and atomic writes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::tensor::Device;
use dapt::backend::BackendChoice;
use dapt::data::Rng;
use dapt::model::names::{Reader, no_weight_decay};
use dapt::model::{ModelConfig, ModelKind, Pool};
use dapt::train::engine::{build_model, train_step};
use dapt::train::optim::{AdamW, AdamWConfig};
use dapt::train::{Mode, TrainConfig};

/// A model small enough to train in seconds in a debug build.
fn tiny_model() -> ModelConfig {
    ModelConfig {
        kind: ModelKind::Dapt,
        trans_dim: 48,
        depth: 2,
        num_heads: 4,
        group_size: 16,
        num_group: 16,
        encoder_dims: 48,
        rank: 8,
        drop_path_rate: 0.0,
        drop_adapter_rate: 0.0,
        class_token: Pool::Use,
        prompt_token: Pool::Mean,
        patch_token: Pool::Max,
        cls_dim: 10,
        npoints: 256,
    }
}

fn tiny_cfg(mode: Mode, out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        model: tiny_model(),
        mode,
        data: "synthetic:seed=1,train=12,test=4,points=300".into(),
        epochs,
        warmup_epochs: 0,
        batch: 16,
        val_batch: 40,
        optim: AdamWConfig {
            lr: 2e-3,
            ..Default::default()
        },
        seed: 3,
        backend: BackendChoice::Cpu,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    }
}

fn metrics_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The metrics without wall-clock time, for exact comparisons.
fn comparable(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.as_object_mut().unwrap().remove("wall_secs");
            l.to_string()
        })
        .collect()
}

#[test]
fn every_mode_learns_the_synthetic_set_well_above_chance() {
    // chance is 10% (10 classes, 40 held-out clouds); 6 epochs reached 0.65 / 0.88 / 0.78
    // (10 epochs: 0.83 / 0.90 / 0.75; 8 epochs on half the clouds only 0.25 for DAPT)
    for (mode, threshold) in [(Mode::Dapt, 0.3), (Mode::Full, 0.3), (Mode::Linear, 0.25)] {
        let epochs = 6;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = tiny_cfg(mode, dir.path(), epochs);
        cfg.data = "synthetic:seed=1,train=20,test=4,points=300".into();
        let s = dapt::train::run(cfg, None, None, Arc::new(AtomicBool::new(false))).unwrap();
        eprintln!(
            "{mode:?}: best held-out accuracy {:.3}",
            s.best_overall_accuracy
        );
        assert!(
            s.best_overall_accuracy >= threshold,
            "{mode:?} reached only {:.3}",
            s.best_overall_accuracy
        );
        // the run directory is complete
        for f in [
            "config.json",
            "metrics.jsonl",
            "checkpoints/last.safetensors",
            "checkpoints/best.safetensors",
            "adapter.safetensors",
            "checkpoints/state.json",
        ] {
            assert!(dir.path().join(f).is_file(), "{f} missing");
        }
        let lines = metrics_lines(dir.path());
        assert_eq!(lines.len(), 2 * epochs);
        for l in &lines {
            for k in [
                "epoch",
                "split",
                "wall_secs",
                "lr",
                "loss",
                "overall_accuracy",
                "mean_class_accuracy",
            ] {
                assert!(l.get(k).is_some(), "metrics line without {k}: {l}");
            }
            let a = l["overall_accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&a));
        }
    }
}

#[test]
fn two_runs_with_the_same_seed_give_identical_metrics() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [&a, &b] {
        dapt::train::run(
            tiny_cfg(Mode::Dapt, d.path(), 2),
            None,
            None,
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
    }
    assert_eq!(
        comparable(&metrics_lines(a.path())),
        comparable(&metrics_lines(b.path()))
    );
}

#[test]
fn resume_after_interruption_matches_an_uninterrupted_run() {
    let full = tempfile::tempdir().unwrap();
    dapt::train::run(
        tiny_cfg(Mode::Dapt, full.path(), 4),
        None,
        None,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();

    // interrupt: ask to stop once epoch 1 is evaluated; the engine stops inside epoch 2
    let cut = tempfile::tempdir().unwrap();
    let (tx, stop, watcher) = common::stop_after_epoch(1);
    let s = dapt::train::run(tiny_cfg(Mode::Dapt, cut.path(), 4), None, Some(tx), stop).unwrap();
    assert!(watcher.join().unwrap(), "no Stopped event");
    assert!(s.stopped);
    assert_eq!(s.epochs_done, 2);

    let s2 = dapt::train::run(
        TrainConfig::default(),
        Some(cut.path()),
        None,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    assert_eq!(s2.epochs_done, 4);
    assert_eq!(
        comparable(&metrics_lines(full.path())),
        comparable(&metrics_lines(cut.path()))
    );
}

#[test]
fn a_step_leaves_frozen_tensors_bit_identical_and_moves_encoder_bn_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cfg(Mode::Dapt, dir.path(), 1);
    let device = Device::flex();
    let model = build_model(&cfg, &device).unwrap();
    let snapshot = |m: &dapt::model::Classifier| {
        let mut r = Reader::new();
        m.visit(&mut r);
        r.out
    };
    let before = snapshot(&model);
    let mut rng = Rng::new(0);
    let n = cfg.model.npoints;
    let pts: Vec<[f32; 3]> = common::clouds::uniform_cube(&mut rng, 8 * n);
    let labels: Vec<usize> = (0..8).collect();
    let mut opt = AdamW::new(cfg.optim.clone());
    let ad = device.clone().autodiff();
    let (model, out) = train_step(
        model.train(),
        &mut opt,
        &pts,
        &labels,
        n,
        1e-3,
        &mut rng,
        &ad,
    )
    .unwrap();
    assert!(dapt::readback::host_scalar(out.loss).is_finite());
    let after = snapshot(&model.valid());
    let mut changed_trainable = 0;
    for ((name, a), (name2, b)) in before.iter().zip(after.iter()) {
        assert_eq!(name, name2);
        let same = a.data == b.data;
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            if name.starts_with("encoder.") {
                assert!(
                    !same,
                    "{name}: BN statistics of the frozen encoder must drift (train mode)"
                );
            }
        } else if Mode::Dapt.trainable(name) {
            changed_trainable += usize::from(!same);
        } else {
            assert!(same, "{name} is frozen but changed");
        }
    }
    assert!(
        changed_trainable > 10,
        "only {changed_trainable} trainable tensors moved"
    );
}

#[test]
fn weight_decay_groups_follow_the_official_rule() {
    assert!(no_weight_decay("cls_token", &[1, 1, 384]));
    assert!(
        !no_weight_decay("cls_pos", &[1, 1, 384]),
        "cls_pos is decayed (3-D, no `token`)"
    );
    assert!(!no_weight_decay(
        "blocks.blocks.0.Adapter_MLP.scale.weight",
        &[1, 384]
    ));
    assert!(no_weight_decay(
        "blocks.blocks.0.Adapter_MLP.scale.bias",
        &[1]
    ));
    assert!(no_weight_decay("blocks.blocks.3.tfts_gamma_1", &[384]));
    assert!(no_weight_decay("cls_head_finetune.1.weight", &[256]));
    assert!(!no_weight_decay("cls_head_finetune.0.weight", &[256, 1152]));
    assert!(!no_weight_decay(
        "blocks.blocks.0.Adapter_MLP.down_proj.weight",
        &[64, 384]
    ));
}

#[test]
fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ck.bin");
    dapt::model::checkpoint::atomic_write(&p, b"first").unwrap();
    dapt::model::checkpoint::atomic_write(&p, b"second version").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second version");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["ck.bin".to_string()]);
    // a write into a missing, uncreatable place fails without touching anything else
    assert!(dapt::model::checkpoint::atomic_write(Path::new("/proc/nonexistent/x"), b"x").is_err());
}

#[test]
fn the_adapter_file_of_the_real_size_model_is_under_5_mb() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_cfg(Mode::Dapt, dir.path(), 1);
    cfg.model = ModelConfig::dapt_modelnet40();
    let model = build_model(&cfg, &Device::flex()).unwrap();
    use dapt::model::checkpoint::write_native;
    use dapt::train::classification::{adapter_file, checkpoint_meta, model_tensors};
    let meta = checkpoint_meta(&cfg, &[], 0);
    let a = adapter_file(&model, &cfg, &meta);
    let adapter =
        write_native(&dir.path().join("adapter.safetensors"), &a.tensors, &a.meta).unwrap();
    let full = write_native(
        &dir.path().join("last.safetensors"),
        &model_tensors(&model),
        &meta,
    )
    .unwrap();
    eprintln!("adapter {adapter} bytes, full checkpoint {full} bytes");
    assert!(adapter < 5_000_000, "adapter is {adapter} bytes");
    assert!(full > 80_000_000);
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_cfg(Mode::Full, dir.path(), 3);
    cfg.optim.lr = 1e12;
    cfg.optim.grad_clip = None;
    let err = dapt::train::run(cfg, None, None, Arc::new(AtomicBool::new(false)));
    match err {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("diverged"), "{msg}");
        }
        Ok(s) => panic!("a learning rate of 1e12 did not diverge: {:?}", s.last),
    }
}

/// The official fine-tuning YAML (flow style, `key : value`, `_base_` includes) as shipped.
#[test]
fn an_official_finetune_yaml_is_accepted_as_it_is() {
    let yaml = r#"optimizer : {
  type: AdamW,
  part: dapt,
  kwargs: {
  lr : 0.0005,
  weight_decay : 0.05
}}

scheduler: {
  type: CosLR,
  kwargs: {
    epochs: 300,
    initial_epochs : 10
}}

dataset : {
  train : { _base_: cfgs/dataset_configs/ModelNet40.yaml,
            others: {subset: 'train'}},
  val : { _base_: cfgs/dataset_configs/ModelNet40.yaml,
            others: {subset: 'test'}},
  test : { _base_: cfgs/dataset_configs/ModelNet40.yaml,
            others: {subset: 'test'}}}
model : {
  NAME: PointTransformer_DAPT,
  trans_dim: 384,
  depth: 12,
  drop_path_rate: 0.1,
  cls_dim: 40,
  num_heads: 6,
  group_size: 32,
  num_group: 64,
  encoder_dims: 384,
  rank: 72,
  drop_adapter_rate: 0.0,
  class_token: use,
  prompt_token: None,
  patch_token: max,
}

npoints: 1024
total_bs : 32
step_per_update : 1
max_epoch : 300
grad_norm_clip : 10
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("finetune_modelnet_dapt.yaml");
    std::fs::write(&p, yaml).unwrap();
    let cfg = dapt::cli::train::config_from_file(&p).unwrap();
    assert_eq!(cfg.model, ModelConfig::dapt_modelnet40());
    assert_eq!(cfg.mode, Mode::Dapt);
    assert_eq!(cfg.optim.lr, 5e-4);
    assert_eq!(cfg.optim.weight_decay, 0.05);
    assert_eq!((cfg.epochs, cfg.warmup_epochs, cfg.batch), (300, 10, 32));
    assert_eq!(cfg.optim.grad_clip, Some(10.0));
    assert_eq!(
        cfg.normalize,
        Some(true),
        "ModelNet40 inputs are pc_normalized"
    );
    // the same file names the model for predict/eval
    let m = ModelConfig::load(&p).unwrap();
    assert_eq!(m.npoints, 1024);
}

#[test]
fn host_initialisation_is_seeded_and_follows_the_official_rules() {
    let device = Device::flex();
    let dump = |seed: u64| {
        let m = dapt::model::init::host_init(
            dapt::model::Classifier::new(&tiny_model(), &device).unwrap(),
            seed,
        );
        let mut r = Reader::new();
        m.visit(&mut r);
        r.out
    };
    let (a, b, c) = (dump(5), dump(5), dump(6));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.1.data == y.1.data),
        "same seed, same tensors"
    );
    assert!(a.iter().zip(&c).any(|(x, y)| x.1.data != y.1.data));
    for (name, t) in &a {
        let max = t.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        if name.ends_with("Adapter_MLP.up_proj.weight") || name.ends_with("running_mean") {
            assert_eq!(max, 0.0, "{name}");
        } else if name.ends_with("norm1.weight") || name.ends_with("running_var") {
            assert!(t.data.iter().all(|v| *v == 1.0), "{name}");
        } else if name.contains("tfts_gamma") {
            assert!(t.data.iter().all(|v| (v - 1.0).abs() < 0.2), "{name}");
        } else if name == "blocks.blocks.0.mlp.fc1.weight" {
            // U(±1/√48)
            assert!(max <= 1.0 / 48f32.sqrt() && max > 0.1, "{name}: {max}");
        }
    }
}

/// Gradient checkpointing (on by default) recomputes element-wise ops in backward instead of
/// keeping them: the run must be the same bit for bit as one that keeps everything, in every
/// mode (the frozen backbone, full fine-tuning with drop path, and the head alone).
#[test]
fn gradient_checkpointing_changes_no_result() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [Mode::Dapt, Mode::Full, Mode::Linear] {
        let run = |checkpointing: bool| {
            let out = dir
                .path()
                .join(format!("{}-{checkpointing}", mode.as_str()));
            let mut cfg = tiny_cfg(mode, &out, 2);
            cfg.model.drop_path_rate = 0.1;
            cfg.checkpointing = checkpointing;
            dapt::train::run(cfg, None, None, Arc::new(AtomicBool::new(false))).unwrap();
            (
                comparable(&metrics_lines(&out)),
                std::fs::read(out.join("checkpoints/last.safetensors")).unwrap(),
                std::fs::read(out.join("checkpoints/optimizer.safetensors")).unwrap(),
            )
        };
        let (m1, w1, o1) = run(true);
        let (m0, w0, o0) = run(false);
        assert_eq!(m1, m0, "{mode:?}: metrics");
        assert!(w1 == w0, "{mode:?}: the trained weights differ");
        assert!(o1 == o0, "{mode:?}: the optimizer moments differ");
    }
}

/// Every parameter's gradient, by parameter id, as host values.
fn grads_of(model: &dapt::model::Classifier, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
    struct Collect<'a>(&'a burn::tensor::Gradients, Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            if let Some(g) = param.val().grad(self.0) {
                self.1.push(dapt::readback::host_vec(g.reshape([-1])));
            }
        }
    }
    let mut c = Collect(grads, Vec::new());
    model.visit(&mut c);
    c.1
}

/// `--recompute-blocks` computes the plain backward's gradients: DAPT (drop path and adapter
/// dropout on, so each recomputed block must replay its masks), full fine-tuning (positions
/// added before every block, everything trainable) and the linear probe (nothing to replay),
/// on burn-flex and on wgpu.
/// Loss and logits are the same values, every trainable parameter gets a gradient equal to
/// the plain one, the random state ends where the plain forward leaves it, and
/// `train_step` takes this path exactly when the model asks for it.
#[test]
fn recomputing_blocks_gives_the_plain_gradients() {
    use dapt::model::grouping::Patches;
    use dapt::model::layers::ForwardCtx;
    use dapt::train::recompute;
    for (backend, device) in common::devices() {
        for mode in [Mode::Dapt, Mode::Full, Mode::Linear] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = tiny_cfg(mode, dir.path(), 1);
            cfg.model = ModelConfig {
                group_size: 8,
                num_group: 8,
                npoints: 64,
                drop_path_rate: 0.3,
                drop_adapter_rate: 0.3,
                ..tiny_model()
            };
            let (n, b) = (cfg.model.npoints, 6);
            let mut rng = Rng::new(5);
            let pts: Vec<[f32; 3]> = common::clouds::uniform_cube(&mut rng, b * n);
            let labels: Vec<usize> = vec![0, 1, 2, 3, 1, 0];
            let base = build_model(&cfg, &device).unwrap();
            let (g, m) = (cfg.model.num_group, cfg.model.group_size);
            let what = format!("{backend} {mode:?}");

            let (mut plain, ad) = dapt::train::driver::for_training(base.clone(), &device, true);
            let p = Patches::build(&pts, b, n, g, m, &ad).unwrap();
            let mut rng_plain = Rng::new(9);
            let mut ctx = ForwardCtx::train(&mut rng_plain);
            let out = plain.forward_groups(p.neighborhoods, p.centers, &mut ctx);
            let logits_plain = dapt::readback::host_vec(out.logits.clone().inner());
            let loss = dapt::model::classifier::cross_entropy(out.logits, &labels);
            let loss_plain = dapt::readback::host_scalar(loss.clone().inner());
            let grads_plain = grads_of(&plain, &loss.backward());

            let (mut re, ad) = dapt::train::driver::for_training(base.clone(), &device, true);
            let p = Patches::build(&pts, b, n, g, m, &ad).unwrap();
            let mut rng_re = Rng::new(9);
            let mut ctx = ForwardCtx::train(&mut rng_re);
            let r = recompute::loss_and_grads(
                &mut re,
                p.neighborhoods,
                p.centers,
                &labels,
                &mut ctx,
                &ad,
                &mut dapt::phases::Clock::start(&ad),
            );
            assert_eq!(rng_plain, rng_re, "{what}: the random state differs");
            assert_eq!(
                dapt::readback::host_vec(r.logits),
                logits_plain,
                "{what}: logits"
            );
            assert_eq!(
                dapt::readback::host_scalar(r.loss),
                loss_plain,
                "{what}: loss"
            );
            let grads_re = grads_of(&re, &r.grads);
            assert_eq!(
                grads_plain.len(),
                grads_re.len(),
                "{what}: parameters with a gradient"
            );
            // the head alone has 10 tensors; DAPT and full fine-tuning train blocks too
            let least = if mode == Mode::Linear { 10 } else { 20 };
            assert!(
                grads_plain.len() >= least,
                "{what}: {} gradients",
                grads_plain.len()
            );
            for (i, (a, b)) in grads_plain.iter().zip(&grads_re).enumerate() {
                let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
                let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    worst <= 1e-5 * scale,
                    "{what}: gradient {i} differs by {worst} (max {scale})"
                );
            }

            // the step takes the path when the model asks for it, and only then
            for recompute_blocks in [false, true] {
                let (mut model, ad) =
                    dapt::train::driver::for_training(base.clone(), &device, true);
                model.recompute_blocks = recompute_blocks;
                let mut opt = AdamW::new(cfg.optim.clone());
                let before = recompute::steps_on_this_thread();
                let (_, out) = train_step(
                    model,
                    &mut opt,
                    &pts,
                    &labels,
                    n,
                    1e-3,
                    &mut Rng::new(9),
                    &ad,
                )
                .unwrap();
                assert_eq!(
                    dapt::readback::host_scalar(out.loss) as f32,
                    loss_plain as f32,
                    "{what}"
                );
                let took = recompute::steps_on_this_thread() - before;
                assert_eq!(took, usize::from(recompute_blocks), "{what}");
            }
        }
    }
}
