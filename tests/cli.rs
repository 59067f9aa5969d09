//! The command-line interface as users and scripts call it: exit codes, JSON keys, errors
//! naming files, and predictions equal to the official model's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use dapt::data::{PointCloud, write_ply};

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn tiny_config(dir: &Path) -> PathBuf {
    let cfg = serde_json::json!({
        "model": {"kind": "dapt", "trans_dim": 48, "depth": 2, "num_heads": 4, "group_size": 16,
            "num_group": 16, "encoder_dims": 48, "rank": 8, "drop_path_rate": 0.0,
            "drop_adapter_rate": 0.0, "class_token": "use", "prompt_token": "mean",
            "patch_token": "max", "cls_dim": 10, "npoints": 256},
        "mode": "dapt", "data": "synthetic:seed=1,train=4,test=2,points=300", "epochs": 1,
        "warmup_epochs": 0, "batch": 8, "backend": "cpu"
    });
    let p = dir.join("tiny.json");
    std::fs::write(&p, cfg.to_string()).unwrap();
    p
}

#[test]
fn info_reports_the_official_parameter_counts() {
    // the model block of the official cfgs/finetune_modelnet_dapt.yaml
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("finetune_modelnet_dapt.yaml");
    std::fs::write(
        &cfg,
        "model: {\n  NAME: PointTransformer_DAPT,\n  trans_dim: 384,\n  depth: 12,\n  \
         drop_path_rate: 0.1,\n  drop_rate: 0.,\n  cls_dim: 40,\n  num_heads: 6,\n  \
         group_size: 32,\n  num_group: 64,\n  encoder_dims: 384,\n  rank: 72,\n  \
         drop_adapter_rate: 0,\n  class_token: \"use\",\n  prompt_token: \"None\",\n  \
         patch_token: \"max\",\n}\n\nnpoints: 1024\n",
    )
    .unwrap();
    let out = dapt(&["info", "--config", &s(&cfg), "--json"]);
    let v = &ok(&out)[0];
    assert_eq!(v["trainable_params"], 1_069_716);
    assert_eq!(v["total_params"], 22_894_740);
    assert_eq!(v["final_tokens"], 1 + 12 + 64);
}

#[test]
fn predict_with_an_official_checkpoint_matches_pytorch_and_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let io = load_io("dapt_small");
    let pts = to_points(&io["points"]);
    let n = io["points"].shape[1];
    let good = dir.path().join("cloud0.ply");
    write_ply(&good, &PointCloud::from_positions(pts[..n].to_vec()), true).unwrap();
    let bad = dir.path().join("missing.ply");
    let case = fixture_dir("dapt_small");
    let out = dapt(&[
        "predict",
        "--backend",
        "cpu",
        "--json",
        "--scales",
        "--checkpoint",
        &s(&case.join("model.pth")),
        "--config",
        &s(&case.join("config.yaml")),
        &s(&good),
        &s(&bad),
    ]);
    assert!(
        !out.status.success(),
        "an unreadable file must give a non-zero exit"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.ply"), "{stderr}");
    let v = &json_lines(&out)[0];
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "the readable file's result still prints");
    let r = &results[0];
    assert!(r["file"].as_str().unwrap().ends_with("cloud0.ply"));
    let logits: Vec<f32> = serde_json::from_value(r["logits"].clone()).unwrap();
    // a cloud of exactly npoints goes in as it is: the logits are the official model's
    let k = logits.len();
    let want = Fx {
        shape: vec![k],
        data: io["logits"].data[..k].to_vec(),
    };
    assert_close("logits", &logits, &want, 1e-4);
    let p: f32 = serde_json::from_value::<Vec<f32>>(r["probabilities"].clone())
        .unwrap()
        .iter()
        .sum();
    assert!((p - 1.0).abs() < 1e-4);
    assert!(!r["top"].as_array().unwrap().is_empty());
    assert_eq!(
        r["scales"]["patch"].as_array().unwrap().len(),
        3,
        "one row per block"
    );
}

#[test]
fn predict_without_config_for_a_pth_says_what_is_missing() {
    let case = fixture_dir("dapt_small");
    let out = dapt(&[
        "predict",
        "--backend",
        "cpu",
        "--checkpoint",
        &s(&case.join("model.pth")),
        "x.ply",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--config") && e.contains("model.pth"), "{e}");
}

#[test]
fn a_foreign_file_as_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.pth");
    std::fs::write(&f, b"hello, not a checkpoint").unwrap();
    let case = fixture_dir("dapt_small");
    let out = dapt(&[
        "predict",
        "--backend",
        "cpu",
        "--checkpoint",
        &s(&f),
        "--config",
        &s(&case.join("config.yaml")),
        "x.ply",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("notes.pth") && e.contains("not a checkpoint"),
        "{e}"
    );
}

#[test]
fn train_json_then_eval_and_predict_with_the_native_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let out = dapt(&["train", "--config", &s(&cfg), "--out", &s(&run), "--json"]);
    let lines = ok(&out);
    assert_eq!(lines[0]["event"], "started");
    assert!(lines.iter().any(|l| l["event"] == "metrics"));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["epochs_done"], 1);

    let best = run.join("checkpoints/best.safetensors");
    let out = dapt(&[
        "eval",
        "--backend",
        "cpu",
        "--json",
        "--checkpoint",
        &s(&best),
        "--data",
        "synthetic:seed=1,train=4,test=2,points=300",
    ]);
    let v = &ok(&out)[0];
    let acc = v["overall_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(v["samples"], 20);
    assert_eq!(v["confusion"].as_array().unwrap().len(), 10);

    // a short cloud is resampled with replacement, and stderr says so
    let small = dir.path().join("small.ply");
    let pts: Vec<[f32; 3]> = (0..100)
        .map(|i| {
            let t = i as f32 * 0.1;
            [t.cos(), t.sin(), 0.01 * i as f32]
        })
        .collect();
    write_ply(&small, &PointCloud::from_positions(pts), false).unwrap();
    let out = dapt(&[
        "predict",
        "--backend",
        "cpu",
        "--json",
        "--checkpoint",
        &s(&best),
        &s(&small),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resampled with replacement"));
    let v = &json_lines(&out)[0];
    let names = [
        "sphere",
        "cube",
        "cylinder",
        "cone",
        "torus",
        "capsule",
        "pyramid",
        "ellipsoid",
        "octahedron",
        "disk",
    ];
    assert!(names.contains(&v["results"][0]["predicted"].as_str().unwrap()));

    // resuming a finished run is fine and does nothing more
    let out = dapt(&["train", "--resume", &s(&run), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shots_trains_on_k_shapes_per_class_and_says_when_a_class_has_fewer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let train = |shots: &str, out: &str| {
        let run = dir.path().join(out);
        let out = dapt(&[
            "train",
            "--config",
            &s(&cfg),
            "--out",
            &s(&run),
            "--shots",
            shots,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (run, json_lines(&out))
    };
    // 4 shapes per class, batch 8: 5 steps per epoch on the whole split, 2 on 2 shots
    let (run, lines) = train("2", "two");
    let started = lines.iter().find(|l| l["event"] == "started").unwrap();
    assert_eq!(started["steps_per_epoch"], 2, "{started}");
    let notes: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "note")
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(!notes.iter().any(|m| m.contains("--shots")), "{notes:?}");
    assert!(
        notes.iter().any(|m| m.starts_with("no --init")),
        "{notes:?}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["shots"], 2);

    // more shots than a class has: the class is used whole, and a note says which
    let (_, lines) = train("5", "five");
    let started = lines.iter().find(|l| l["event"] == "started").unwrap();
    assert_eq!(started["steps_per_epoch"], 5, "{started}");
    let m = lines
        .iter()
        .filter(|l| l["event"] == "note")
        .filter_map(|l| l["message"].as_str())
        .find(|m| m.starts_with("--shots"))
        .unwrap();
    assert!(
        m.contains("--shots 5: 10 class(es)") && m.contains("sphere (4)"),
        "{m}"
    );

    let zero = dir.path().join("zero");
    let out = dapt(&[
        "train",
        "--config",
        &s(&cfg),
        "--out",
        &s(&zero),
        "--shots",
        "0",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--shots must be at least 1"), "{e}");
}

#[test]
fn bench_prints_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let cfg_path = s(&cfg);
    // the first JSON line of a successful `dapt bench` on the CPU backend
    let bench = |mode: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "bench",
            "--config",
            &cfg_path,
            "--mode",
            mode,
            "--batch",
            "2",
            "--steps",
            "1",
            "--backend",
            "cpu",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = dapt(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out).swap_remove(0)
    };
    let model: dapt::model::ModelConfig = serde_json::from_value(
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&cfg).unwrap()).unwrap()
            ["model"]
            .clone(),
    )
    .unwrap();
    for mode in ["dapt", "infer"] {
        let v = &bench(mode, &[]);
        for k in [
            "ms_per_step",
            "samples_per_s",
            "peak_memory_mib",
            "backend",
            "threads",
        ] {
            assert!(v.get(k).is_some(), "{mode}: no {k}");
        }
        assert!(v["ms_per_step"].as_f64().unwrap() > 0.0);
        // the CPU backend launches no kernels: the count is null, not a misleading 0
        assert!(v["kernel_launches_per_step"].is_null(), "{mode}: {v}");
        // the official model's forward FLOPs for this config; no roofline unless asked
        let gflop = v["gflop_per_sample"].as_f64().unwrap();
        assert!((gflop - model.forward_flops() / 1e9).abs() < 1e-9, "{v}");
        assert!(v["matmul_gflop_per_s"].is_null() && v["roofline_fraction"].is_null());
        assert_eq!(v["gflop_per_s"].is_null(), mode != "infer", "{v}");
    }

    assert_eq!(bench("dapt", &[])["recompute_blocks"], false);
    assert_eq!(
        bench("dapt", &["--recompute-blocks"])["recompute_blocks"],
        true
    );

    // `--roofline`: matmuls of the model's shapes timed on the backend, and for inference
    // the fraction of that rate the model reaches
    let v = &bench("infer", &["--roofline"]);
    let roof = v["matmul_gflop_per_s"].as_f64().unwrap();
    let got = v["gflop_per_s"].as_f64().unwrap();
    assert!(roof > 0.0 && got > 0.0, "{v}");
    let fraction = v["roofline_fraction"].as_f64().unwrap();
    assert!((fraction - got / roof).abs() < 1e-9, "{v}");
}

/// `DAPT_PHASE_TIMES=1` splits the step into data, forward, backward and optimizer time in
/// `dapt bench --json` and in a note per epoch of `dapt train`; without it there is no
/// breakdown (and no extra device waits).
#[test]
fn phase_times_break_the_step_down_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = |args: &[&str], phases: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dapt"));
        c.args(args).env("DAPT_NO_GPU_PROBE", "1");
        if phases {
            c.env("DAPT_PHASE_TIMES", "1");
        } else {
            c.env_remove("DAPT_PHASE_TIMES");
        }
        let out = c.output().expect("run dapt");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out)
    };
    let bench = [
        "bench",
        "--config",
        &s(&cfg),
        "--batch",
        "2",
        "--steps",
        "2",
        "--with-data",
        "--stored-points",
        "400",
        "--backend",
        "cpu",
        "--json",
    ];
    let v = &run(&bench, true)[0];
    let phases = v["phases_ms"].as_object().expect("phases_ms");
    let mut sum = 0.0;
    for k in ["data", "forward", "backward", "optimizer"] {
        let ms = phases[k].as_f64().unwrap();
        assert!(ms > 0.0, "{k}: {v}");
        sum += ms;
    }
    // the phases are laps inside the timed steps: together at most the whole step
    assert!(sum <= v["ms_per_step"].as_f64().unwrap(), "{v}");
    assert!(run(&bench, false)[0]["phases_ms"].is_null());

    let out = dir.path().join("run");
    let train = ["train", "--config", &s(&cfg), "--out", &s(&out), "--json"];
    let lines = run(&train, true);
    let note = lines
        .iter()
        .filter(|l| l["event"] == "note")
        .filter_map(|l| l["message"].as_str())
        .find(|m| m.starts_with("epoch 0 phases"))
        .unwrap_or_else(|| panic!("no phase note: {lines:?}"));
    for k in ["data", "forward", "backward", "optimizer"] {
        assert!(note.contains(&format!("{k} ")), "{note}");
    }
}

/// `dapt train --recompute-blocks` trains and records the choice in the run's config (a
/// resumed run keeps it); part segmentation refuses it with the reason.
#[test]
fn recompute_blocks_is_recorded_for_classification_and_refused_for_partseg() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let out = dapt(&[
        "train",
        "--config",
        &s(&cfg),
        "--out",
        &s(&run),
        "--recompute-blocks",
        "--json",
    ]);
    let end = ok(&out);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["recompute_blocks"], true, "{saved}");
    let finished = end
        .iter()
        .find(|l| l["event"] == "finished")
        .expect("finished");
    assert!(finished.to_string().contains("accuracy"), "{finished}");

    let out = dapt(&["train", "--task", "partseg", "--recompute-blocks"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--recompute-blocks is for classification only"),
        "{err}"
    );
}

#[test]
fn an_unknown_data_set_path_is_named_in_the_error() {
    let out = dapt(&[
        "train",
        "--data",
        "/nonexistent/dataset/dir",
        "--epochs",
        "1",
        "--backend",
        "cpu",
        "--out",
        "/tmp/dapt-test-unused",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("/nonexistent/dataset/dir"), "{e}");
}

#[test]
fn resuming_another_tasks_run_says_which_command_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("checkpoints")).unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"kind": "pretrain"}"#).unwrap();
    std::fs::write(dir.path().join("checkpoints/state.json"), "{}").unwrap();
    let out = dapt(&["train", "--resume", &s(dir.path())]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("dapt pretrain --resume"), "{e}");
}

#[test]
fn pretrain_then_reconstruct_writes_labelled_views_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("pt");
    let out = dapt(&[
        "pretrain",
        "--data",
        "synthetic:seed=1,train=2,test=1,points=600",
        "--epochs",
        "1",
        "--backend",
        "cpu",
        "--out",
        &s(&run),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cloud = dir.path().join("ring.ply");
    let pts: Vec<[f32; 3]> = (0..700)
        .map(|i| {
            let t = i as f32 * 0.37;
            [t.cos(), t.sin(), 0.3 * (t * 0.1).sin()]
        })
        .collect();
    write_ply(&cloud, &PointCloud::from_positions(pts), true).unwrap();
    let rec = dir.path().join("rec");
    let missing = dir.path().join("missing.ply");
    let out = dapt(&[
        "pretrain",
        "--reconstruct",
        &s(&run),
        "--out",
        &s(&rec),
        "--backend",
        "cpu",
        &s(&cloud),
        &s(&missing),
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("missing.ply"), "{e}");
    assert_eq!(
        e.matches("No such file").count(),
        1,
        "the cause is printed once: {e}"
    );
    let view =
        dapt::data::read_cloud(&rec.join("ring.reconstruction.ply"), &Default::default()).unwrap();
    let labels = view.labels.unwrap();
    let count = |l: i64| labels.iter().filter(|&&x| x == l).count();
    // the small model masks int(0.6 * 32) = 19 of 32 patches of 16 points
    assert_eq!(count(0), 13 * 16);
    assert_eq!(count(1), 19 * 16);
    assert_eq!(count(2), 19 * 16);
}

/// `dapt train` on the synthetic shapes without `--config` or `--init` (the demo recipe)
/// starts from the backbone pre-trained here: written beside the runs, named in config.json,
/// every backbone tensor loaded. `--init none` keeps the random backbone.
#[test]
fn demo_recipe_starts_from_the_shipped_backbone_and_init_none_from_random() {
    let dir = tempfile::tempdir().unwrap();
    let train = |extra: &[&str], out: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_dapt"))
            .current_dir(dir.path())
            .args([
                "train",
                "--data",
                "synthetic:seed=1,train=1,test=1,points=200",
                "--epochs",
                "1",
                "--batch",
                "4",
                "--out",
                out,
                "--json",
            ])
            .args(extra)
            .env("DAPT_NO_GPU_PROBE", "1")
            .output()
            .unwrap();
        ok(&out)
    };
    let saved = |run: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.path().join(run).join("config.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let lines = train(&[], "pre");
    let cfg = saved("pre");
    let backbone = dir.path().join(dapt::train::demo_backbone::FILE);
    assert_eq!(
        std::fs::read(&backbone).unwrap(),
        dapt::train::demo_backbone::BYTES,
        "the shipped backbone is written out as it is"
    );
    assert_eq!(
        Path::new(cfg["init"].as_str().unwrap()),
        std::path::absolute(&backbone).unwrap()
    );
    let note = lines
        .iter()
        .filter(|l| l["event"] == "note")
        .filter_map(|l| l["message"].as_str())
        .find(|m| m.starts_with("backbone "))
        .unwrap_or_else(|| panic!("no backbone note: {lines:?}"));
    assert!(note.contains("ignored: none"), "{note}");
    let loaded: usize = note
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // every tensor of the file reaches the model (the file holds the encoder alone)
    let file = safetensors::SafeTensors::deserialize(dapt::train::demo_backbone::BYTES).unwrap();
    assert_eq!(loaded, file.len(), "{note}");
    // a damaged copy is replaced on the next run, not trusted
    std::fs::write(&backbone, b"not a backbone").unwrap();
    train(&["--init", "none"], "random");
    let cfg = saved("random");
    assert!(cfg["init"].is_null(), "{cfg}");
    train(&[], "again");
    assert_eq!(
        std::fs::read(&backbone).unwrap(),
        dapt::train::demo_backbone::BYTES
    );
}

/// `dapt` keeps freed heap memory for reuse (`dapt::heap`): a step whose tensors are larger
/// than glibc's largest mmap threshold (32 MiB; the patch encoder's `[B·G·M, 512]` here is 64
/// MiB) then reuses memory instead of having the kernel map and zero it again. The bench
/// reports the policy and the page faults per step; `DAPT_HEAP=system`, or a glibc variable
/// the user set, keeps glibc's behaviour.
#[test]
fn freed_memory_is_kept_for_reuse_unless_the_user_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let cfg_path = s(&cfg);
    let bench = |env: &[(&str, &str)]| -> serde_json::Value {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dapt"));
        c.args([
            "bench",
            "--config",
            &cfg_path,
            "--mode",
            "infer",
            "--batch",
            "128",
            "--steps",
            "2",
            "--warmup",
            "2",
            "--backend",
            "cpu",
            "--json",
        ])
        .env("DAPT_NO_GPU_PROBE", "1");
        for v in [
            "DAPT_HEAP",
            "MALLOC_MMAP_MAX_",
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
        ] {
            c.env_remove(v);
        }
        c.envs(env.iter().copied());
        let out = c.output().expect("run dapt");
        ok(&out).swap_remove(0)
    };
    let kept = bench(&[]);
    let system = bench(&[("DAPT_HEAP", "system")]);
    let users = bench(&[("MALLOC_MMAP_MAX_", "65536")]);
    assert_eq!(system["heap"], "system", "{system}");
    assert_eq!(users["heap"], "system", "{users}");
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert_eq!(kept["heap"], "kept", "{kept}");
        let faults = |v: &serde_json::Value| v["minor_faults_per_step"].as_f64().unwrap();
        // glibc maps each 64 MiB tensor afresh: 16k faults per tensor at 4 KiB pages, ~59k
        // per step here; kept memory is reused once the heap has grown in the two warm-up
        // steps (~800 per step)
        assert!(
            faults(&kept) * 10.0 < faults(&system),
            "kept {kept}\nsystem {system}"
        );
    } else {
        assert_eq!(kept["heap"], "system", "{kept}");
    }
}
