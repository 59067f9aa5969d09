//! The official YAML configs as shipped: a copy of the DAPT repository's `cfgs/` layout, whose
//! `_base_` includes (`cfgs/dataset_configs/*.yaml`, relative to the repository root) decide
//! the dataset and with it the input normalisation.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dapt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dapt"))
}

fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// `cfgs/finetune_scan_objbg_dapt.yaml` of the official repository, with `MODEL` in place of
/// its model block.
fn finetune(base: &str, model: &str) -> String {
    format!(
        "optimizer: {{\n  type: AdamW,\n  part: dapt,\n  kwargs: {{\n    lr: 0.0005,\n    weight_decay: 0.05\n  }} }}\n\n\
         scheduler: {{\n  type: CosLR,\n  kwargs: {{\n    epochs: 300,\n    initial_epochs: 10\n  }} }}\n\n\
         dataset: {{\n  train: {{ _base_: {base},\n           others: {{ subset: 'train' }} }},\n  \
         val: {{ _base_: {base},\n         others: {{ subset: 'test' }} }},\n  \
         test: {{ _base_: {base},\n          others: {{ subset: 'test' }} }} }}\n\
         {model}\n\nnpoints: 2048\ntotal_bs: 32\nstep_per_update: 1\nmax_epoch: 300\ngrad_norm_clip: 10\n"
    )
}

const OFFICIAL_MODEL: &str = "model: {\n  NAME: PointTransformer_DAPT,\n  trans_dim: 384,\n  depth: 12,\n  drop_path_rate: 0.3,\n  drop_rate: 0.,\n  cls_dim: 15,\n  num_heads: 6,\n  group_size: 32,\n  num_group: 128,\n  encoder_dims: 384,\n  rank: 64,\n  drop_adapter_rate: 0.5,\n  class_token: \"use\",\n  prompt_token: \"mean\",\n  patch_token: \"max\",\n}";

const SMALL_MODEL: &str = "model: {\n  NAME: PointTransformer_DAPT,\n  trans_dim: 48,\n  depth: 2,\n  drop_path_rate: 0.0,\n  drop_rate: 0.,\n  cls_dim: 10,\n  num_heads: 4,\n  group_size: 8,\n  num_group: 8,\n  encoder_dims: 48,\n  rank: 4,\n  drop_adapter_rate: 0.0,\n  class_token: \"use\",\n  prompt_token: \"mean\",\n  patch_token: \"max\",\n}";

fn info(cfg: &Path) -> serde_json::Value {
    let out = dapt()
        .args(["info", "--json", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn base_includes_resolve_from_the_official_repository_root() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("DAPT");
    write(
        &repo,
        "cfgs/dataset_configs/ScanObjectNN_objectbg.yaml",
        "NAME: ScanObjectNN\nROOT: data/ScanObjectNN/main_split\n",
    );
    write(
        &repo,
        "cfgs/dataset_configs/ModelNet40.yaml",
        "NAME: ModelNet\nDATA_PATH: data/ModelNet/modelnet40_normal_resampled\nN_POINTS: 8192\nNUM_CATEGORY: 40\nUSE_NORMALS: FALSE\n",
    );
    let scan = write(
        &repo,
        "cfgs/finetune_scan_objbg_dapt.yaml",
        &finetune(
            "cfgs/dataset_configs/ScanObjectNN_objectbg.yaml",
            OFFICIAL_MODEL,
        ),
    );
    let v = info(&scan);
    assert_eq!(v["dataset"], "ScanObjectNN");
    assert_eq!(v["input_normalization"], false);
    assert_eq!(v["trainable_params"], 1_087_771);

    // the include's own NAME decides, not its file name: a renamed ModelNet include
    write(
        &repo,
        "cfgs/dataset_configs/mine.yaml",
        "NAME: ModelNet\nDATA_PATH: data/x\n",
    );
    let mine = write(
        &repo,
        "cfgs/finetune_mine.yaml",
        &finetune("cfgs/dataset_configs/mine.yaml", OFFICIAL_MODEL),
    );
    let v = info(&mine);
    assert_eq!(v["dataset"], "ModelNet");
    assert_eq!(v["input_normalization"], true);
}

#[test]
fn a_lone_config_without_its_includes_still_loads_with_a_note() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write(
        d.path(),
        "finetune_scan_objbg_dapt.yaml",
        &finetune(
            "cfgs/dataset_configs/ScanObjectNN_objectbg.yaml",
            OFFICIAL_MODEL,
        ),
    );
    let out = dapt()
        .args(["info", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ScanObjectNN_objectbg.yaml") && err.contains("not found"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["input_normalization"], false);
}

#[test]
fn train_takes_the_normalisation_from_the_resolved_include() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("DAPT");
    write(
        &repo,
        "cfgs/dataset_configs/renamed.yaml",
        "NAME: ModelNet\nDATA_PATH: data/ModelNet/modelnet40_normal_resampled\n",
    );
    let cfg = write(
        &repo,
        "cfgs/finetune_small.yaml",
        &finetune("cfgs/dataset_configs/renamed.yaml", SMALL_MODEL),
    );
    let run = d.path().join("run");
    let out = dapt()
        .args([
            "train", "--json", "--epochs", "1", "--batch", "4", "--points", "64",
        ])
        .args(["--data", "synthetic:train=1,test=1,points=96"])
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["normalize"], true, "{c}");
    // the official recipe keys still come through
    assert_eq!(c["optim"]["grad_clip"], 10.0, "{c}");
}

#[test]
fn an_include_cycle_is_an_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let a = write(
        d.path(),
        "cfgs/a.yaml",
        &finetune("cfgs/b.yaml", OFFICIAL_MODEL),
    );
    write(d.path(), "cfgs/b.yaml", "_base_: cfgs/a.yaml\n");
    let out = dapt().args(["info", "--config"]).arg(&a).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("includes itself"), "{err}");
}
