//! Adapters as first-class files: a backbone made by a tiny `dapt pretrain`, a `dapt train
//! --init` on it, and `dapt predict` / `dapt eval --backbone B --adapter A` giving what the
//! run's `checkpoints/best.safetensors` gives, with the backbone in either format; the adapter
//! is the best epoch's; wrong pairings are errors naming both files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use burn::tensor::Device;
use common::tiny_mae_config;
use dapt::data::{PointCloud, write_ply};
use dapt::model::checkpoint::read_state_dict;
use dapt::model::pretrain::{MaeConfig, PointMae};

const DATA: &str = "synthetic:seed=1,train=4,test=2,points=200";

fn dapt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dapt"))
        .args(args)
        .env("DAPT_NO_GPU_PROBE", "1")
        .output()
        .expect("run dapt")
}

fn s(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The last JSON line of stdout.
fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

struct Fixture {
    root: PathBuf,
    /// The pre-training run (backbone.safetensors, pretrain.pth).
    pre: PathBuf,
    /// `dapt train --init pre/backbone.safetensors`.
    run: PathBuf,
    /// `dapt train` without `--init`.
    random_run: PathBuf,
    clouds: Vec<PathBuf>,
}

impl Fixture {
    fn backbone(&self) -> PathBuf {
        self.pre.join("backbone.safetensors")
    }
    fn pth(&self) -> PathBuf {
        self.pre.join("pretrain.pth")
    }
    fn adapter(&self) -> PathBuf {
        self.run.join("adapter.safetensors")
    }
    fn best(&self) -> PathBuf {
        self.run.join("checkpoints/best.safetensors")
    }
}

fn train_config(root: &Path, epochs: usize) -> PathBuf {
    let mut model = serde_json::to_value(tiny_mae_config().backbone_config(10)).unwrap();
    model["rank"] = serde_json::json!(4);
    model["drop_path_rate"] = serde_json::json!(0.0);
    let cfg = serde_json::json!({
        "model": model, "mode": "dapt", "data": DATA, "epochs": epochs, "warmup_epochs": 0,
        "batch": 8, "backend": "cpu", "seed": 5
    });
    let p = root.join(format!("train{epochs}.json"));
    std::fs::write(&p, cfg.to_string()).unwrap();
    p
}

fn clouds(root: &Path) -> Vec<PathBuf> {
    let shapes: [fn(f32, f32) -> [f32; 3]; 3] = [
        |u, v| [u.cos() * v.sin(), u.sin() * v.sin(), v.cos()],
        |u, v| {
            [
                u / 3.0 - 1.0,
                (v * 2.0).sin(),
                if u > 3.0 { 1.0 } else { -1.0 },
            ]
        },
        |u, v| {
            let r = 1.0 + 0.3 * v.cos();
            [r * u.cos(), r * u.sin(), 0.3 * v.sin()]
        },
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let pts: Vec<[f32; 3]> = (0..300)
                .map(|i| f(i as f32 * 0.021 * 3.0, i as f32 * 0.37))
                .collect();
            let p = root.join(format!("cloud{k}.ply"));
            write_ply(&p, &PointCloud::from_positions(pts), true).unwrap();
            p
        })
        .collect()
}

/// Built once for every test of this file (they run in parallel threads and wait here).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("adapters");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let pcfg = dapt::train::pretrain::PretrainConfig {
            model: tiny_mae_config(),
            data: DATA.into(),
            epochs: 1,
            warmup_epochs: 0,
            batch: 8,
            seed: 3,
            backend: dapt::backend::BackendChoice::Cpu,
            ..Default::default()
        };
        let pjson = root.join("pretrain.json");
        std::fs::write(&pjson, serde_json::to_string(&pcfg).unwrap()).unwrap();
        let pre = root.join("pre");
        ok(
            dapt(&[
                "pretrain",
                "--config",
                &s(&pjson),
                "--out",
                &s(&pre),
                "--json",
            ]),
            "dapt pretrain",
        );
        assert!(pre.join("backbone.safetensors").is_file());
        assert!(pre.join("pretrain.pth").is_file());
        let run = root.join("run");
        ok(
            dapt(&[
                "train",
                "--config",
                &s(&train_config(&root, 3)),
                "--init",
                &s(&pre.join("backbone.safetensors")),
                "--out",
                &s(&run),
                "--lr",
                "2e-3",
                "--json",
            ]),
            "dapt train --init",
        );
        let random_run = root.join("random");
        ok(
            dapt(&[
                "train",
                "--config",
                &s(&train_config(&root, 1)),
                "--out",
                &s(&random_run),
                "--json",
            ]),
            "dapt train",
        );
        Fixture {
            clouds: clouds(&root),
            root,
            pre,
            run,
            random_run,
        }
    })
}

fn predict(f: &Fixture, model: &[&str]) -> Output {
    let mut args = vec!["predict", "--backend", "cpu", "--json"];
    args.extend_from_slice(model);
    let files: Vec<String> = f.clouds.iter().map(|p| s(p)).collect();
    args.extend(files.iter().map(String::as_str));
    dapt(&args)
}

fn logits(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            r["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn assert_same_logits(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    let (la, lb) = (logits(a), logits(b));
    assert_eq!(la.len(), 3, "{what}: one result per file");
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x.len(), y.len());
        let d = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        assert!(d <= 1e-6, "{what}: logits differ by {d}");
    }
    for (ra, rb) in a["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["results"].as_array().unwrap())
    {
        assert_eq!(ra["predicted"], rb["predicted"], "{what}");
    }
}

#[test]
fn predict_and_eval_with_backbone_and_adapter_equal_the_best_checkpoint() {
    let f = fixture();
    let best = json(&ok(
        predict(f, &["--checkpoint", &s(&f.best())]),
        "predict --checkpoint",
    ));
    for backbone in [f.backbone(), f.pth()] {
        let got = json(&ok(
            predict(
                f,
                &["--backbone", &s(&backbone), "--adapter", &s(&f.adapter())],
            ),
            "predict --backbone --adapter",
        ));
        assert_same_logits(&got, &best, &s(&backbone));
    }

    let eval = |model: &[&str]| {
        let mut args = vec!["eval", "--backend", "cpu", "--json", "--data", DATA];
        args.extend_from_slice(model);
        json(&ok(dapt(&args), "dapt eval"))
    };
    let want = eval(&["--checkpoint", &s(&f.best())]);
    let got = eval(&["--backbone", &s(&f.pth()), "--adapter", &s(&f.adapter())]);
    assert_eq!(got["confusion"], want["confusion"]);
    assert_eq!(got["overall_accuracy"], want["overall_accuracy"]);
    let (a, b) = (
        got["loss"].as_f64().unwrap(),
        want["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-6, "eval loss {a} vs {b}");

    // --checkpoint and --backbone/--adapter are alternatives
    let both = predict(
        f,
        &[
            "--checkpoint",
            &s(&f.best()),
            "--backbone",
            &s(&f.backbone()),
            "--adapter",
            &s(&f.adapter()),
        ],
    );
    assert!(!both.status.success());
    let alone = predict(f, &["--adapter", &s(&f.adapter())]);
    assert!(!alone.status.success());
    assert!(stderr(&alone).contains("--backbone"), "{}", stderr(&alone));
}

#[test]
fn the_adapter_holds_the_best_epoch() {
    let f = fixture();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.run.join("checkpoints/state.json")).unwrap(),
    )
    .unwrap();
    let best_epoch = state["best_epoch"].as_u64().unwrap();
    assert_eq!(state["epochs_done"], 3);
    let adapter = read_state_dict(&f.adapter()).unwrap();
    let meta = adapter.meta.clone().unwrap();
    assert_eq!(meta["kind"], "adapter");
    assert_eq!(meta["epoch"].as_u64(), Some(best_epoch));
    assert_eq!(meta["mode"], "dapt");
    assert_eq!(meta["class_names"].as_array().unwrap().len(), 10);
    assert_eq!(meta["normalize"], true);
    assert_eq!(meta["model"]["trans_dim"], 32);
    assert_eq!(meta["init"].as_str().unwrap(), s(&f.backbone()));
    assert!(
        meta["backbone_hash"]
            .as_str()
            .unwrap()
            .starts_with("fnv1a128:")
    );
    // tensor for tensor the best checkpoint's
    let best = read_state_dict(&f.best()).unwrap();
    let last = read_state_dict(&f.run.join("checkpoints/last.safetensors")).unwrap();
    assert!(adapter.tensors.len() < best.tensors.len());
    let mut differs_from_last = false;
    for (k, t) in &adapter.tensors {
        assert_eq!(t.data, best.tensors[k].data, "{k}");
        differs_from_last |= t.data != last.tensors[k].data;
    }
    // the trained set and the drifting BatchNorm buffers, nothing frozen
    assert!(adapter.tensors.contains_key("cls_head_finetune.8.weight"));
    assert!(
        adapter
            .tensors
            .contains_key("blocks.blocks.0.Adapter_MLP.down_proj.weight")
    );
    assert!(
        adapter
            .tensors
            .contains_key("encoder.first_conv.1.running_var")
    );
    assert!(
        !adapter
            .tensors
            .contains_key("blocks.blocks.0.attn.qkv.weight")
    );
    assert!(!adapter.tensors.contains_key("encoder.first_conv.1.weight"));
    if best_epoch != 2 {
        assert!(
            differs_from_last,
            "best epoch {best_epoch} is not the last, yet the adapter equals last"
        );
    }
}

fn export(cfg: &MaeConfig, seed: u64, path: &Path) {
    let m = PointMae::new(cfg, seed, &Device::flex()).unwrap();
    dapt::train::pretrain::export_backbone(&m, path, 0).unwrap();
}

fn assert_fails_naming(out: Output, files: &[&Path], words: &[&str]) {
    let err = stderr(&out);
    assert!(!out.status.success(), "should fail: {err}");
    for f in files {
        assert!(err.contains(&s(f)), "{} not named in: {err}", f.display());
    }
    for w in words {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

#[test]
fn mismatched_backbones_and_other_files_are_errors_naming_both() {
    let f = fixture();
    let dir = f.root.join("mismatch");
    std::fs::create_dir_all(&dir).unwrap();
    let adapter = f.adapter();
    let pair = |b: &Path, a: &Path| predict(f, &["--backbone", &s(b), "--adapter", &s(a)]);

    let wide = dir.join("wide.safetensors");
    export(
        &MaeConfig {
            trans_dim: 48,
            ..tiny_mae_config()
        },
        1,
        &wide,
    );
    assert_fails_naming(
        pair(&wide, &adapter),
        &[&wide, &adapter],
        &["32 wide with 2 blocks", "48 wide with 2 blocks"],
    );
    let deep = dir.join("deep.safetensors");
    export(
        &MaeConfig {
            depth: 3,
            ..tiny_mae_config()
        },
        1,
        &deep,
    );
    assert_fails_naming(
        pair(&deep, &adapter),
        &[&deep, &adapter],
        &["32 wide with 3 blocks"],
    );
    // same shapes, other weights: only the content hash tells
    let other = dir.join("other.safetensors");
    export(&tiny_mae_config(), 77, &other);
    assert_fails_naming(
        pair(&other, &adapter),
        &[&other, &adapter, &f.backbone()],
        &["another backbone"],
    );
    let groups = dir.join("groups.safetensors");
    export(
        &MaeConfig {
            num_group: 16,
            ..tiny_mae_config()
        },
        1,
        &groups,
    );
    assert_fails_naming(
        pair(&groups, &adapter),
        &[&groups, &adapter],
        &["16 groups of 8 points", "uses 8 of 8"],
    );
    // files that are not adapters, and an adapter given as the backbone
    assert_fails_naming(
        pair(&f.backbone(), &f.best()),
        &[&f.best(), &f.backbone()],
        &["not an adapter file"],
    );
    assert_fails_naming(
        pair(&f.backbone(), &f.pth()),
        &[&f.pth(), &f.backbone()],
        &["not an adapter file"],
    );
    assert_fails_naming(
        pair(&adapter, &adapter),
        &[&adapter],
        &["an adapter file, not a backbone"],
    );
    // a classification adapter for part segmentation
    let seg = dapt(&[
        "predict",
        "--task",
        "partseg",
        "--backend",
        "cpu",
        "--backbone",
        &s(&f.backbone()),
        "--adapter",
        &s(&adapter),
        "--out",
        &s(&dir),
        &s(&f.clouds[0]),
    ]);
    assert_fails_naming(
        seg,
        &[&adapter, &f.backbone()],
        &["classification adapter", "part segmentation"],
    );
    // and eval says the same
    let out = dapt(&[
        "eval",
        "--backend",
        "cpu",
        "--data",
        DATA,
        "--backbone",
        &s(&other),
        "--adapter",
        &s(&adapter),
    ]);
    assert_fails_naming(out, &[&other, &adapter], &["another backbone"]);
}

#[test]
fn a_run_without_init_is_rebuilt_from_its_own_checkpoint_only() {
    let f = fixture();
    let adapter = f.random_run.join("adapter.safetensors");
    let best = f.random_run.join("checkpoints/best.safetensors");
    assert_fails_naming(
        predict(
            f,
            &["--backbone", &s(&f.backbone()), "--adapter", &s(&adapter)],
        ),
        &[&f.backbone(), &adapter],
        &["randomly initialised", "best.safetensors"],
    );
    // the run's own checkpoint holds its (random) backbone tensors
    let want = json(&ok(predict(f, &["--checkpoint", &s(&best)]), "predict"));
    let got = json(&ok(
        predict(f, &["--backbone", &s(&best), "--adapter", &s(&adapter)]),
        "predict --backbone best --adapter",
    ));
    assert_same_logits(&got, &want, "random-init run");
}

#[test]
fn part_segmentation_adapters_apply_on_the_backbone_too() {
    let f = fixture();
    let mut cfg = dapt::train::partseg::PartSegTrainConfig::synthetic_demo();
    let m = tiny_mae_config();
    cfg.model.trans_dim = m.trans_dim;
    cfg.model.depth = m.depth;
    cfg.model.num_heads = m.num_heads;
    cfg.model.group_size = m.group_size;
    cfg.model.num_group = m.num_group;
    cfg.model.taps = dapt::model::partseg::PartSegConfig::default_taps(m.depth);
    cfg.model.npoints = m.npoints;
    cfg.model.prop_dim = 32;
    cfg.model.head_dims = [32, 16];
    cfg.model.rank = 4;
    cfg.data = "synthetic:seed=1,train=1,test=1,points=200".into();
    cfg.epochs = 1;
    cfg.batch = 5;
    cfg.backend = dapt::backend::BackendChoice::Cpu;
    let cjson = f.root.join("partseg.json");
    std::fs::write(&cjson, serde_json::to_string(&cfg).unwrap()).unwrap();
    let run = f.root.join("partseg");
    ok(
        dapt(&[
            "train",
            "--task",
            "partseg",
            "--config",
            &s(&cjson),
            "--init",
            &s(&f.pth()),
            "--out",
            &s(&run),
            "--json",
        ]),
        "dapt train --task partseg",
    );
    let adapter = run.join("adapter.safetensors");
    let out_dir = f.root.join("partseg-pred");
    let seg = |model: &[&str]| {
        let mut args = vec![
            "predict",
            "--task",
            "partseg",
            "--backend",
            "cpu",
            "--json",
            "--category",
            "0",
            "--out",
        ];
        let o = s(&out_dir);
        args.push(&o);
        args.extend_from_slice(model);
        let files: Vec<String> = f.clouds.iter().map(|p| s(p)).collect();
        args.extend(files.iter().map(String::as_str));
        json(&ok(dapt(&args), "predict --task partseg"))
    };
    let want = seg(&[
        "--checkpoint",
        &s(&run.join("checkpoints/best.safetensors")),
    ]);
    let got = seg(&["--backbone", &s(&f.backbone()), "--adapter", &s(&adapter)]);
    assert_eq!(got["results"].as_array().unwrap().len(), 3);
    for (a, b) in got["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["results"].as_array().unwrap())
    {
        assert_eq!(a["labels"], b["labels"]);
    }
    // the library's log-probabilities agree exactly, not only the labels
    let device = Device::flex();
    let (b, a) = dapt::model::load::read_backbone_and_adapter(&f.pth(), &adapter).unwrap();
    let mut asm = dapt::model::load::assemble_partseg(&b, &a, &device).unwrap();
    let mut ck = dapt::train::partseg::load_partseg_checkpoint(
        &run.join("checkpoints/best.safetensors"),
        &device,
    )
    .unwrap();
    let pts: Vec<[f32; 3]> = dapt::data::read_cloud(&f.clouds[2], &Default::default())
        .unwrap()
        .positions;
    let lp = |m: &mut dapt::model::partseg::PartSegModel| {
        let o = m
            .forward_points(
                &pts,
                &[0],
                1,
                pts.len(),
                &device,
                &mut dapt::model::layers::ForwardCtx::eval(),
            )
            .unwrap();
        dapt::model::layers::host_vec(o.log_probs)
    };
    let (x, y) = (lp(&mut asm.model), lp(&mut ck.model));
    let d = x
        .iter()
        .zip(&y)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(d <= 1e-6, "partseg log-probabilities differ by {d}");
    // a part-segmentation adapter is not a classifier
    assert_fails_naming(
        predict(
            f,
            &["--backbone", &s(&f.backbone()), "--adapter", &s(&adapter)],
        ),
        &[&adapter, &f.backbone()],
        &["part-segmentation adapter", "--task partseg"],
    );
}
