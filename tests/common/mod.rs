//! Helpers shared by the integration tests: locating `shared/`, reading fixture tensors,
//! comparing with relative tolerances.
#![allow(dead_code)]

pub mod clouds;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `shared/` beside the checkout (CI lays it there) or `$DAPT_SHARED_DIR`, when it exists.
pub fn shared_root() -> Option<PathBuf> {
    let p = match std::env::var_os("DAPT_SHARED_DIR") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    p.is_dir().then_some(p)
}

/// The research-licensed samples (`shared/data`), which never enter the repository. Only the
/// `shared::` tests use them (with the real-size reference checkpoint, too large for the
/// repository); `scripts/test.sh` skips those, saying so in one line, when shared/ is absent.
pub fn shared_data_dir() -> PathBuf {
    let dir = shared_root().map(|p| p.join("data"));
    match dir {
        Some(d) if d.is_dir() => d,
        _ => panic!(
            "the research samples are missing: expected shared/data beside the checkout \
             ({}/../shared/data) or under $DAPT_SHARED_DIR; scripts/test.sh skips the \
             shared:: tests when they are absent",
            env!("CARGO_MANIFEST_DIR")
        ),
    }
}

/// A reference case folder. `shared/fixtures/reference/CASE` wins when it exists (CI lays out
/// the current cases there, including ones with other shapes); otherwise the copy in
/// `tests/fixtures/reference/CASE`, written by the same generator from the official code
/// (see its README), so a plain clone runs the parity tests too.
pub fn fixture_dir(case: &str) -> PathBuf {
    if let Some(d) = shared_root()
        .map(|p| p.join("fixtures/reference").join(case))
        .filter(|d| d.is_dir())
    {
        return d;
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(case);
    assert!(
        local.is_dir(),
        "reference case {case} not found in shared/fixtures/reference (beside the checkout or \
         under $DAPT_SHARED_DIR) nor in {}",
        local.display()
    );
    local
}

#[derive(Clone, Debug)]
pub struct Fx {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Fx {
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
    pub fn usize(&self) -> Vec<usize> {
        self.data.iter().map(|&v| v as usize).collect()
    }
}

/// Every tensor of a fixture's `io.safetensors`, as f64.
pub fn load_io(case: &str) -> HashMap<String, Fx> {
    let path = fixture_dir(case).join("io.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut out = HashMap::new();
    for (name, v) in st.iter() {
        let data: Vec<f64> = match v.dtype() {
            safetensors::Dtype::F32 => v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            safetensors::Dtype::I64 => v
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        };
        out.insert(
            name.to_string(),
            Fx {
                shape: v.shape().to_vec(),
                data,
            },
        );
    }
    out
}

/// ‖a − b‖ / ‖b‖ (absolute norm when b is zero).
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut num = 0.0;
    let mut den = 0.0;
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - y).powi(2);
        den += y * y;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

pub fn assert_close(name: &str, got: &[f32], want: &Fx, tol: f64) {
    let e = rel_err(got, &want.data);
    // `DAPT_PARITY_REPORT=1 cargo test --test model_parity -- --nocapture` lists every error,
    // to see what a numerical change moved, not only whether it stayed within tolerance
    if std::env::var_os("DAPT_PARITY_REPORT").is_some() {
        eprintln!("parity {name}: relative error {e:.3e} (tolerance {tol:.0e})");
    }
    assert!(e <= tol, "{name}: relative error {e:.3e} > {tol:.0e}");
}

pub fn to_points(fx: &Fx) -> Vec<[f32; 3]> {
    fx.f32()
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect()
}

/// Runs the `dapt` binary of this build (no GPU probe: the tests choose their backend).
pub fn dapt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dapt"))
        .args(args)
        .env("DAPT_NO_GPU_PROBE", "1")
        .output()
        .expect("run dapt")
}

/// The JSON lines of a run that must have succeeded (its stderr otherwise).
pub fn ok(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

/// A tiny DAPT run config (48 wide, 2 blocks, 8 groups of 8, 32 points) with `classes`
/// outputs, written as `dir/tiny.json`.
pub fn tiny_config(dir: &Path, classes: usize) -> PathBuf {
    let cfg = serde_json::json!({
        "model": {"kind": "dapt", "trans_dim": 48, "depth": 2, "num_heads": 4, "group_size": 8,
            "num_group": 8, "encoder_dims": 48, "rank": 8, "drop_path_rate": 0.0,
            "drop_adapter_rate": 0.0, "class_token": "use", "prompt_token": "mean",
            "patch_token": "max", "cls_dim": classes, "npoints": 32},
        "mode": "dapt", "data": "synthetic", "epochs": 1,
        "warmup_epochs": 0, "batch": 4, "backend": "cpu"
    });
    let p = dir.join("tiny.json");
    std::fs::write(&p, cfg.to_string()).unwrap();
    p
}

/// metrics.jsonl of the run in `dir` without wall-clock times, one string per line (empty
/// when there is no file yet), for exact comparisons between runs.
pub fn comparable_metrics(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("wall_secs");
            v.to_string()
        })
        .collect()
}

/// An event sink that sets the returned stop flag once epoch `epoch` has been evaluated;
/// the thread's result says whether a `Stopped` event followed.
pub fn stop_after_epoch(
    epoch: usize,
) -> (
    std::sync::mpsc::Sender<dapt::train::TrainEvent>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<bool>,
) {
    use dapt::train::TrainEvent;
    use std::sync::atomic::Ordering;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut saw_stopped = false;
        for ev in rx {
            match ev {
                TrainEvent::Metrics(m) if m.epoch == epoch && m.split == "test" => {
                    flag.store(true, Ordering::SeqCst)
                }
                TrainEvent::Stopped { .. } => saw_stopped = true,
                _ => {}
            }
        }
        saw_stopped
    });
    (tx, stop, watcher)
}

/// The backends every model test runs on: burn-flex, and wgpu (Mesa's lavapipe without a GPU).
pub fn devices() -> [(&'static str, burn::tensor::Device); 2] {
    use burn::tensor::{Device, DeviceKind};
    [
        ("flex", Device::flex()),
        ("wgpu", Device::wgpu(DeviceKind::DefaultDevice)),
    ]
}

/// A Point-MAE pre-training model small enough for a test: width 32, 2 + 1 blocks, 8 patches
/// of 8 points, 128 points, the official 60% random masks.
pub fn tiny_mae_config() -> dapt::model::pretrain::MaeConfig {
    dapt::model::pretrain::MaeConfig {
        trans_dim: 32,
        depth: 2,
        num_heads: 2,
        decoder_depth: 1,
        decoder_num_heads: 2,
        group_size: 8,
        num_group: 8,
        mask_ratio: 0.6,
        mask_type: Default::default(),
        drop_path_rate: 0.1,
        npoints: 128,
    }
}
