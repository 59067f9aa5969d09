//! Parity of the optimisation path with the official PyTorch recipe (reference case
//! `train_small`, see the fixtures' README): `model.pth` loaded through the checkpoint import,
//! the DAPT trainable set, train-mode forwards (BatchNorm on batch statistics, running stats
//! updated), cross-entropy, `clip_grad_norm_`, AdamW with the DAPT decay / no-decay groups and
//! timm's cosine schedule, replayed step by step; then the trained tensors, the encoder
//! BatchNorm running statistics and an eval-mode forward after training.
//!
//! Every size, the step count and the recipe come from the case's `meta.json` and
//! `config.yaml` (other cases of this kind exist with other shapes).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use common::*;
use dapt::model::checkpoint::{LoadMode, load_into, read_state_dict};
use dapt::model::layers::{ForwardCtx, host_vec};
use dapt::model::names::{Trainable, named_params};
use dapt::model::{Classifier, ModelConfig};
use dapt::readback::host_scalar;
use dapt::train::Mode;
use dapt::train::engine::{model_tensors, train_step_in};
use dapt::train::optim::{AdamW, AdamWConfig};
use dapt::train::schedule::CosineSchedule;

const CASE: &str = "train_small";

/// The recipe of a trajectory case, as `meta.json` states it.
struct Recipe {
    steps: usize,
    batch: usize,
    npoints: usize,
    optim: AdamWConfig,
    schedule: CosineSchedule,
    trainable: Vec<String>,
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("meta.json: `{key}` is not a number: {v}"))
}

fn u(v: &serde_json::Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("meta.json: `{key}` is not an integer: {v}")) as usize
}

fn read_recipe(dir: &Path) -> Recipe {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["kind"], "dapt_training_trajectory");
    assert_eq!(meta["mode"], "train");
    let o = &meta["optimizer"];
    assert_eq!(o["type"], "AdamW");
    let betas = o["betas"].as_array().expect("optimizer.betas");
    let optim = AdamWConfig {
        lr: f(o, "lr"),
        weight_decay: f(o, "weight_decay"),
        beta1: betas[0].as_f64().unwrap(),
        beta2: betas[1].as_f64().unwrap(),
        eps: f(o, "eps"),
        grad_clip: Some(f(&meta, "grad_norm_clip")),
    };
    let s = &meta["scheduler"];
    assert_eq!(s["type"], "CosLR");
    // timm CosineLRScheduler(t_initial = epochs, warmup_t = initial_epochs, lr_min,
    // warmup_lr_init), as the official `build_lr_scheduler` makes it
    let schedule = CosineSchedule {
        base_lr: optim.lr,
        min_lr: f(s, "lr_min"),
        warmup_lr_init: f(s, "warmup_lr_init"),
        warmup_epochs: u(s, "initial_epochs"),
        t_initial: u(s, "epochs"),
    };
    let trainable = meta["trainable_names"]
        .as_array()
        .expect("trainable_names")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    Recipe {
        steps: u(&meta, "steps"),
        batch: u(&meta, "batch"),
        npoints: u(&meta, "npoints"),
        optim,
        schedule,
        trainable,
    }
}

/// The case's model with `model.pth` loaded (every tensor, the random head included) and the
/// trainable set `dapt train --mode dapt` marks (`engine::build_model` does the same mapping
/// after loading a backbone, which would leave the head at its initialisation).
fn load_model(dir: &Path, device: &Device) -> Classifier {
    let cfg = ModelConfig::from_yaml_file(&dir.join("config.yaml")).unwrap();
    let model = Classifier::new(&cfg, device).unwrap();
    let dict = read_state_dict(&dir.join("model.pth")).unwrap();
    let (model, report) = load_into(model, &dict, LoadMode::Strict).unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "model.pth: missing {:?}, unexpected {:?}",
        report.missing,
        report.unexpected
    );
    let mode = Mode::Dapt;
    model.map(&mut Trainable::new(move |n: &str| mode.trainable(n)))
}

/// One step through `dapt train`'s own `train_step_in`, in train mode (BatchNorm on batch
/// statistics, running statistics updated) without a random source, so the head's fixed
/// Dropout(0.5) is off as in the fixture. Returns the model, the loss and the gradient norm
/// before clipping, as `AdamW::step` reports it.
fn step(
    model: Classifier,
    opt: &mut AdamW,
    points: &[[f32; 3]],
    labels: &[usize],
    npoints: usize,
    lr: f64,
    ad: &Device,
) -> (Classifier, f64, f64) {
    let mut ctx = ForwardCtx {
        training: true,
        rng: None,
    };
    let (model, out) =
        train_step_in(model, opt, points, labels, npoints, lr, &mut ctx, ad).unwrap();
    let loss = host_scalar(out.loss);
    let norm = host_scalar(out.grad_norm);
    assert!(loss.is_finite(), "loss {loss}");
    (model, loss, norm)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Replays the case through `dapt train`'s step; `checkpointing` as `dapt train` (on) or
/// `--no-checkpointing`.
fn replay(device: &Device, backend: &str, checkpointing: bool) {
    let dir = fixture_dir(CASE);
    let recipe = read_recipe(&dir);
    let io = load_io(CASE);
    let model = load_model(&dir, device);
    let cfg = model.config.clone();
    assert_eq!(
        cfg.npoints, recipe.npoints,
        "config.yaml and meta.json disagree on npoints"
    );

    // the trainable set is the fixture's, frozen tensors noted to check they stay put
    let params = named_params(&model);
    let mut ours: Vec<String> = params
        .iter()
        .filter(|p| !p.is_buffer && Mode::Dapt.trainable(&p.name))
        .map(|p| p.name.clone())
        .collect();
    let mut want = recipe.trainable.clone();
    ours.sort();
    want.sort();
    assert_eq!(ours, want, "trainable names");
    let trainable: HashSet<String> = want.into_iter().collect();
    let buffers: HashSet<String> = params
        .iter()
        .filter(|p| p.is_buffer)
        .map(|p| p.name.clone())
        .collect();
    let before: HashMap<String, Vec<f32>> = model_tensors(&model)
        .into_iter()
        .map(|(k, t)| (k, t.data))
        .collect();

    let lrs = &io["lr"].data;
    let losses = &io["loss"].data;
    let norms = &io["grad_norm"].data;
    assert_eq!(lrs.len(), recipe.steps);
    assert_eq!(losses.len(), recipe.steps);
    assert_eq!(norms.len(), recipe.steps);

    let (mut model, ad) = dapt::train::driver::for_training(model, device, checkpointing);
    let mut opt = AdamW::new(recipe.optim.clone());
    let mut failures = Vec::new();
    for i in 0..recipe.steps {
        let p = &io[&format!("points.{i}")];
        assert_eq!(p.shape, [recipe.batch, recipe.npoints, 3], "points.{i}");
        let points = to_points(p);
        let labels = io[&format!("label.{i}")].usize();
        assert_eq!(labels.len(), recipe.batch, "label.{i}");
        // `sched.step(i)` before step i: the step runs at timm's value for time i. `dapt train`
        // runs epoch e at `lr_for_epoch(e)` = the value of time e - 1 (`step(epoch)` called at
        // the end of each epoch), so step i here is its epoch i + 1.
        let lr = recipe.schedule.at(i);
        assert_eq!(recipe.schedule.lr_for_epoch(i + 1), lr);
        let lr_err = (lr - lrs[i]).abs();
        let (m, loss, norm) = step(model, &mut opt, &points, &labels, recipe.npoints, lr, &ad);
        model = m;
        let loss_err = ((loss - losses[i]) / losses[i]).abs();
        let norm_err = ((norm - norms[i]) / norms[i]).abs();
        eprintln!(
            "[{backend}] step {i}: lr {lr:.6e} (abs err {lr_err:.2e}), loss {loss:.7} \
             (rel err {loss_err:.2e}), grad norm {norm:.7} (rel err {norm_err:.2e}, clip {})",
            recipe.optim.grad_clip.unwrap()
        );
        if lr_err > 1e-7 {
            failures.push(format!("step {i}: lr {lr:e} vs {:e}", lrs[i]));
        }
        if loss_err > 1e-5 {
            failures.push(format!(
                "step {i}: loss {loss} vs {} (rel {loss_err:.2e} > 1e-5)",
                losses[i]
            ));
        }
        // The norm jumps where a ReLU of the head changes side: flipping one unit moves it by
        // 1e-4 to 1e-3 here. Units sit within ~3e-4 of zero, and BN1's bias (whose gradient
        // is exactly zero wherever the unit passes every sample, BN5 removing the batch mean)
        // takes ±lr AdamW steps driven by rounding, so a seed may flip one against PyTorch.
        // On wgpu the first step's norm meets 1e-4 like the CPU's; later steps get 3e-4:
        // the backend's reductions round differently from PyTorch's CPU ones (step 0: 1.7e-5
        // here against 1.5e-6 on flex, with the loss exact), and the kink above amplifies
        // that along the trajectory: 9.2e-5 at step 3 on lavapipe without burn's fusion,
        // 1.27e-4 with it, while losses stay within 2e-6 and the trained tensors' median
        // within 2e-6. Changing only the summation order of the norm moves flex's step-3
        // value from 9e-6 to 3.7e-5 (measured), so this is rounding, not a port error.
        let norm_tol = if backend == "wgpu" && i > 0 {
            3e-4
        } else {
            1e-4
        };
        if norm_err > norm_tol {
            failures.push(format!(
                "step {i}: grad norm {norm} vs {} (rel {norm_err:.2e} > {norm_tol:e})",
                norms[i]
            ));
        }
    }
    assert_eq!(opt.step, recipe.steps as u64);

    // trained tensors and BatchNorm running statistics
    let after: HashMap<String, Vec<f32>> = model_tensors(&model)
        .into_iter()
        .map(|(k, t)| (k, t.data))
        .collect();
    let mut trained_errs = Vec::new();
    let mut worst = (String::new(), 0.0f64);
    let mut bn_worst = (String::new(), 0.0f64);
    let mut seen = HashSet::new();
    for (key, want) in io.iter().filter(|(k, _)| k.starts_with("after.")) {
        let name = &key["after.".len()..];
        seen.insert(name.to_string());
        let got = after
            .get(name)
            .unwrap_or_else(|| panic!("{key}: no such tensor in the model"));
        let e = rel_err(got, &want.data);
        if buffers.contains(name) {
            eprintln!("[{backend}] {name}: rel err {e:.3e}");
            if e > bn_worst.1 {
                bn_worst = (name.to_string(), e);
            }
            if e > 1e-5 {
                failures.push(format!("{name}: running stat rel err {e:.3e} > 1e-5"));
            }
        } else {
            assert!(
                trainable.contains(name),
                "{key}: neither trainable nor a buffer"
            );
            if std::env::var("PARITY_VERBOSE").is_ok() {
                eprintln!("[{backend}] {name}: rel err {e:.3e}");
            }
            trained_errs.push(e);
            if e > worst.1 {
                worst = (name.to_string(), e);
            }
            if e > 1e-2 {
                failures.push(format!("{name}: trained tensor rel err {e:.3e} > 1e-2"));
            }
        }
    }
    let missing: Vec<&String> = trainable.iter().filter(|n| !seen.contains(*n)).collect();
    assert!(missing.is_empty(), "no after.* for {missing:?}");
    assert!(
        seen.iter().any(|n| buffers.contains(n)),
        "no BatchNorm running statistics in after.*"
    );
    let med = median(&trained_errs);
    eprintln!(
        "[{backend}] trained tensors ({}): median rel err {med:.3e}, max {:.3e} ({})",
        trained_errs.len(),
        worst.1,
        worst.0
    );
    eprintln!(
        "[{backend}] BatchNorm running stats: max rel err {:.3e} ({})",
        bn_worst.1, bn_worst.0
    );
    if med >= 1e-5 {
        failures.push(format!("median trained-tensor rel err {med:.3e} >= 1e-5"));
    }
    // frozen parameters do not move
    for (name, t) in &before {
        if !trainable.contains(name) && !buffers.contains(name) {
            assert_eq!(&after[name], t, "frozen tensor {name} changed");
        }
    }

    // eval mode after training
    let held = &io["held_points"];
    let (hb, hn) = (held.shape[0], held.shape[1]);
    let mut valid = model.valid();
    let mut ctx = ForwardCtx::eval();
    let (out, _) = valid
        .forward_points(&to_points(held), hb, hn, device, &mut ctx)
        .unwrap();
    let logits = host_vec(out.logits);
    let e = rel_err(&logits, &io["held_logits"].data);
    eprintln!("[{backend}] held_logits: rel err {e:.3e}");
    if e > 1e-3 {
        failures.push(format!("held_logits rel err {e:.3e} > 1e-3"));
    }

    assert!(
        failures.is_empty(),
        "[{backend}] {CASE} ({}): {}",
        dir.display(),
        failures.join("; ")
    );
}

/// On the shared case only: the repository's copy (seed 2026) puts one head ReLU unit within
/// 3e-4 of its kink at step 3 (sample 2, channel 138 after the head's first BatchNorm, whose
/// bias gradient is zero in exact arithmetic, so AdamW turns rounding into a move of ~lr).
/// The unit flips, and the step-3 gradient norm misses 1e-4 by 3x there on both backends while
/// every other check passes. The tolerance stays; that case needs regenerating with another seed.
mod shared {
    use super::*;

    #[test]
    fn train_small_trajectory_matches_pytorch_on_flex() {
        replay(&Device::flex(), "flex", true);
    }

    /// `--no-checkpointing`: every intermediate kept for backward.
    #[test]
    fn train_small_trajectory_matches_pytorch_on_flex_without_checkpointing() {
        replay(&Device::flex(), "flex, no checkpointing", false);
    }

    /// The same replay on burn's wgpu backend (Mesa's lavapipe in CI), with the encoder's
    /// row reductions in two stages (`model::row_split`, which real sizes take from 4,096 rows
    /// on and this case's 512 rows only when told): BatchNorm's batch statistics, running
    /// statistics and the trainable biases' gradients all meet PyTorch's. Flex never splits;
    /// the one-stage path on wgpu is held to burn-flex in `tests/fused_ops.rs`.
    #[test]
    fn train_small_trajectory_matches_pytorch_on_wgpu() {
        dapt::model::row_split::split_from(Some(512));
        let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        replay(&device, "wgpu", true);
    }
}
