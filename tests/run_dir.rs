//! The run directory's epoch commit, tried on the states a kill can leave behind: a torn
//! staging directory, a kill between the two renames, metrics lines of an epoch that never
//! committed, a run stopped before its first epoch, a full disk in the middle of a commit,
//! and runs of the layout older versions wrote. Each one resumes to the metrics of an
//! uninterrupted run. (tests/crash_safety.rs kills real processes.)

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{dapt, s};
use dapt::backend::BackendChoice;
use dapt::model::{ModelConfig, ModelKind, Pool};
use dapt::train::optim::AdamWConfig;
use dapt::train::{Mode, TrainConfig, TrainEvent};

fn tiny_cfg(out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        model: ModelConfig {
            kind: ModelKind::Dapt,
            trans_dim: 32,
            depth: 2,
            num_heads: 4,
            group_size: 16,
            num_group: 16,
            encoder_dims: 32,
            rank: 8,
            drop_path_rate: 0.0,
            drop_adapter_rate: 0.0,
            class_token: Pool::Use,
            prompt_token: Pool::Mean,
            patch_token: Pool::Max,
            cls_dim: 10,
            npoints: 256,
        },
        mode: Mode::Dapt,
        data: "synthetic:seed=1,train=8,test=3,points=300".into(),
        epochs,
        warmup_epochs: 0,
        batch: 16,
        val_batch: 40,
        optim: AdamWConfig {
            lr: 2e-3,
            ..Default::default()
        },
        seed: 5,
        backend: BackendChoice::Cpu,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    }
}

const EPOCHS: usize = 4;

fn metrics(dir: &Path) -> Vec<String> {
    common::comparable_metrics(dir)
}

fn reference() -> &'static Vec<String> {
    static REF: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        dapt::train::run(tiny_cfg(d.path(), EPOCHS), None, None, Default::default()).unwrap();
        metrics(d.path())
    })
}

/// A run stopped once `epochs` epochs have committed.
fn stopped_after(dir: &Path, epochs: usize) {
    let stop = Arc::new(AtomicBool::new(epochs == 0));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = Arc::clone(&stop);
    let watcher = std::thread::spawn(move || {
        let mut saved = 0;
        for ev in rx {
            if let TrainEvent::CheckpointSaved {
                kind: dapt::train::CheckpointKind::Last,
                ..
            } = ev
            {
                saved += 1;
                if saved == epochs {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
    });
    let s = dapt::train::run(tiny_cfg(dir, EPOCHS), None, Some(tx), stop).unwrap();
    watcher.join().unwrap();
    assert!(s.stopped);
    assert_eq!(s.epochs_done, epochs);
}

fn resume(dir: &Path) -> dapt::train::RunSummary {
    dapt::train::run(TrainConfig::default(), Some(dir), None, Default::default()).unwrap()
}

fn assert_resumes_to_the_reference(dir: &Path, what: &str) {
    let s = resume(dir);
    assert_eq!(s.epochs_done, EPOCHS, "{what}");
    assert_eq!(&metrics(dir), reference(), "{what}");
    for stale in ["checkpoints.next", "checkpoints.prev"] {
        assert!(!dir.join(stale).exists(), "{what}: {stale} left behind");
    }
}

#[test]
fn a_torn_staging_directory_and_uncommitted_metrics_are_discarded() {
    let d = tempfile::tempdir().unwrap();
    stopped_after(d.path(), 2);
    // a kill while epoch 2 was being written: half a checkpoint, its metrics lines (one cut
    // short) already appended
    let next = d.path().join("checkpoints.next");
    std::fs::create_dir_all(&next).unwrap();
    std::fs::write(next.join("last.safetensors"), b"torn").unwrap();
    let mut m = std::fs::read_to_string(d.path().join("metrics.jsonl")).unwrap();
    m.push_str("{\"epoch\":2,\"split\":\"train\",\"loss\":1.0}\n{\"epoch\":2,\"spl");
    std::fs::write(d.path().join("metrics.jsonl"), m).unwrap();
    assert_resumes_to_the_reference(d.path(), "torn staging");
}

#[test]
fn a_kill_between_the_two_renames_keeps_one_consistent_epoch() {
    // after the first rename: the old epoch is `prev`, the new one complete in `next`
    let d = tempfile::tempdir().unwrap();
    stopped_after(d.path(), 2);
    let (cur, next, prev) = (
        d.path().join("checkpoints"),
        d.path().join("checkpoints.next"),
        d.path().join("checkpoints.prev"),
    );
    std::fs::rename(&cur, &next).unwrap();
    std::fs::create_dir_all(&prev).unwrap();
    assert_resumes_to_the_reference(d.path(), "complete next, no checkpoints");

    // the first rename done, the staging not yet complete: the old epoch comes back
    let d = tempfile::tempdir().unwrap();
    stopped_after(d.path(), 1);
    let (cur, next, prev) = (
        d.path().join("checkpoints"),
        d.path().join("checkpoints.next"),
        d.path().join("checkpoints.prev"),
    );
    std::fs::rename(&cur, &prev).unwrap();
    std::fs::create_dir_all(&next).unwrap();
    assert_resumes_to_the_reference(d.path(), "only prev");
}

#[test]
fn a_run_stopped_before_its_first_epoch_starts_again_from_its_config() {
    let d = tempfile::tempdir().unwrap();
    stopped_after(d.path(), 0);
    assert!(d.path().join("config.json").is_file());
    assert!(!d.path().join("checkpoints/state.json").exists());
    assert_resumes_to_the_reference(d.path(), "no epoch committed");
}

#[test]
fn a_run_of_the_older_layout_still_resumes() {
    // before the shared driver, state.json had no metrics length and checkpoints/ no adapter
    let d = tempfile::tempdir().unwrap();
    stopped_after(d.path(), 2);
    let p = d.path().join("checkpoints/state.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert!(st.get("best_overall_accuracy").is_some(), "{st}");
    st.as_object_mut().unwrap().remove("metrics_bytes");
    std::fs::write(&p, st.to_string()).unwrap();
    std::fs::remove_file(d.path().join("checkpoints/adapter.safetensors")).unwrap();
    assert_resumes_to_the_reference(d.path(), "older layout");
    assert!(d.path().join("adapter.safetensors").is_file());
}

#[test]
fn a_full_disk_stops_the_run_naming_the_path_and_damages_nothing() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg.json");
    let run = d.path().join("run");
    std::fs::write(
        &cfg,
        serde_json::to_string(&tiny_cfg(&run, EPOCHS)).unwrap(),
    )
    .unwrap();
    // config.json, then 4-5 files per epoch: the disk fills inside the third epoch's commit
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dapt"))
        .args(["train", "--config", &s(&cfg), "--out", &s(&run)])
        .env("DAPT_TEST_FAIL_WRITES_AFTER", "10")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(&s(&run)), "the error names the path: {err}");
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/state.json")).unwrap())
            .unwrap();
    let done = st["epochs_done"].as_u64().unwrap();
    assert!((1..EPOCHS as u64).contains(&done), "{st}");
    // space freed: the run continues from what was committed
    let out = dapt(&["train", "--resume", &s(&run)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&metrics(&run), reference());
}

#[test]
fn an_unwritable_run_directory_is_a_clear_error() {
    let out = dapt(&[
        "train",
        "--epochs",
        "1",
        "--out",
        "/proc/dapt-cannot-write-here",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/proc/dapt-cannot-write-here"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn resuming_a_directory_without_a_config_says_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let out = dapt(&["train", "--resume", &s(d.path())]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no config.json"), "{err}");
    assert!(err.contains("start it again"), "{err}");
}
