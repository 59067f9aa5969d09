//! Kernel launch counts on wgpu (Mesa's lavapipe when there is no GPU): one AdamW update,
//! and what `dapt bench --with-data` adds to a step.
//!
//! In their own test binary, one test at a time ([`COUNTING`]): CubeCL's launch observer
//! counts every launch of the process, so tests running beside them on other threads would
//! be counted too.

mod common;

use burn::module::Module;
use burn::tensor::{Device, DeviceKind, Tensor};
use common::clouds::{Kind, batch};
use dapt::data::rng::Rng;
use dapt::model::{ModelConfig, ModelKind, Pool};
use dapt::train::engine::{build_model, train_step};
use dapt::train::optim::{AdamW, AdamWConfig};
use dapt::train::{Mode, TrainConfig};

/// Held by each test for its whole run, so no other test's kernels enter its counts.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn small_model() -> ModelConfig {
    ModelConfig {
        kind: ModelKind::Dapt,
        trans_dim: 48,
        depth: 2,
        num_heads: 4,
        group_size: 8,
        num_group: 8,
        encoder_dims: 48,
        rank: 8,
        drop_path_rate: 0.0,
        drop_adapter_rate: 0.0,
        class_token: Pool::Use,
        prompt_token: Pool::Mean,
        patch_token: Pool::Max,
        cls_dim: 10,
        npoints: 64,
    }
}

/// Kernels one AdamW update launches on wgpu, measured as a whole training step's launches
/// minus those of its forward and backward alone (fused kernels are issued at the sync).
/// The multi-tensor update joins each group's tensors in a tree of fused cats and updates
/// the flat vector in a few kernels: measured 39 launches for the 60 tensors here, where the
/// per-tensor update it replaced took 244 (BENCHMARKS.md).
#[test]
fn adamw_on_wgpu_launches_a_few_kernels_per_tensor() {
    let _alone = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    use dapt::launches::LaunchCount;
    use dapt::model::classifier::cross_entropy;
    use dapt::model::layers::ForwardCtx;
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    let cfg = TrainConfig {
        model: small_model(),
        mode: Mode::Dapt,
        ..TrainConfig::default()
    };
    let mut model = build_model(&cfg, &device).unwrap().train();
    let mut rng = Rng::new(1);
    let (b, n) = (4, 64);
    let pts = batch(&mut rng, Kind::Normal, b, n);
    let labels = [0, 1, 2, 3];
    let mut opt = AdamW::new(AdamWConfig::default());
    let ad = device.clone().autodiff();
    let sync = || device.sync().unwrap();
    // the first step compiles kernels and creates the moments
    for _ in 0..2 {
        model = train_step(model, &mut opt, &pts, &labels, n, 1e-3, &mut rng, &ad)
            .unwrap()
            .0;
    }
    sync();
    let count = LaunchCount::start();
    model = train_step(model, &mut opt, &pts, &labels, n, 1e-3, &mut rng, &ad)
        .unwrap()
        .0;
    sync();
    let step = count.total();
    drop(count);
    let count = LaunchCount::start();
    let mut ctx = ForwardCtx::train(&mut rng);
    let (out, _) = model.forward_points(&pts, b, n, &ad, &mut ctx).unwrap();
    let grads = cross_entropy(out.logits, &labels).backward();
    sync();
    let forward_backward = count.total();
    drop(count);
    let tensors = {
        struct Count<'a>(&'a burn::tensor::Gradients, usize);
        impl burn::module::ModuleVisitor for Count<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                self.1 += usize::from(p.val().grad(self.0).is_some());
            }
        }
        let mut c = Count(&grads, 0);
        model.visit(&mut c);
        c.1
    };
    let optimizer = step.saturating_sub(forward_backward);
    eprintln!(
        "launches: step {step}, forward+backward {forward_backward}, AdamW {optimizer} for {tensors} tensors"
    );
    assert!(step > forward_backward, "the update launched nothing");
    assert!(tensors > 20, "{tensors}");
    assert!(
        optimizer as usize <= tensors,
        "AdamW launched {optimizer} kernels for {tensors} tensors"
    );
}

/// `dapt bench --with-data` runs `dapt train`'s batch pipeline on the device: the step
/// launches more kernels (the FPS pre-sampling rounds) and still reads nothing back.
#[test]
fn with_data_adds_the_pipelines_launches_on_wgpu() {
    use dapt::backend::BackendChoice;
    use dapt::cli::bench::{BenchArgs, BenchMode, Preset, measure};
    let _alone = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_config(dir.path(), 4);
    let args = |with_data: bool| BenchArgs {
        config: Some(cfg.clone()),
        preset: Preset::Modelnet40,
        mode: BenchMode::Dapt,
        batch: 2,
        points: None,
        steps: 2,
        warmup: 1,
        backend: BackendChoice::Wgpu,
        with_data,
        no_checkpointing: false,
        recompute_blocks: false,
        stored_points: with_data.then_some(300),
        roofline: false,
        json: true,
    };
    let plain = measure(&args(false)).unwrap();
    let data = measure(&args(true)).unwrap();
    assert_eq!(data["host_reads_per_step"].as_f64(), Some(0.0), "{data}");
    let launches = |v: &serde_json::Value| v["kernel_launches_per_step"].as_f64().unwrap();
    eprintln!(
        "launches per step: {} without the pipeline, {} with it",
        launches(&plain),
        launches(&data)
    );
    assert!(
        launches(&data) > launches(&plain),
        "the device pipeline adds FPS rounds: {plain} vs {data}"
    );
}
