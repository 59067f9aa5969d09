//! ModelNet40 few-shot in the official layout, `ModelNetFewshot/{W}way_{K}shot/{fold}.pkl`:
//! fold files written here byte for byte as CPython's `pickle.dump(..., protocol=4)` writes
//! the dicts the official `generate_few_shot_data.py` makes (NumPy float32 clouds, Python
//! int labels, NumPy int32 class indices), read back through the public API and through
//! `dapt train --fewshot`; hostile fold files give errors, never panics.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use dapt::data::fewshot::{FewShotSetting, fold_files};
use dapt::data::transform::pc_normalize;
use dapt::data::{DataSpec, ReadOptions};

use common::{dapt, ok, s, tiny_config};

// ---------------------------------------------------------------------------------------
// A protocol-4 pickle writer following CPython's `_Pickler`: every str, bytes, container,
// global and REDUCE result is memoized (MEMOIZE); an object written before (the same
// interned string, global or dtype) is fetched with BINGET; lists and dicts are batched
// with MARK ... APPENDS / SETITEMS (APPEND / SETITEM for one item); one frame for the body.
// ---------------------------------------------------------------------------------------

enum Py {
    Dict(Vec<(&'static str, Py)>),
    List(Vec<Py>),
    Tuple(Vec<Py>),
    Int(i64),
    /// A C-order float32 NumPy array.
    F4(Vec<usize>, Vec<f32>),
    /// A NumPy int32 scalar (what `label[0]` of an int32 array is).
    I4(i32),
}

#[derive(Default)]
struct Pickler {
    out: Vec<u8>,
    memo: HashMap<String, u32>,
    next: u32,
}

impl Pickler {
    fn memoize(&mut self, key: Option<String>) {
        self.out.push(0x94);
        if let Some(k) = key {
            self.memo.insert(k, self.next);
        }
        self.next += 1;
    }

    fn get(&mut self, key: &str) -> bool {
        match self.memo.get(key) {
            Some(&i) if i < 256 => self.out.extend([b'h', i as u8]),
            Some(&i) => {
                self.out.push(b'j');
                self.out.extend(i.to_le_bytes());
            }
            None => return false,
        }
        true
    }

    fn str(&mut self, s: &str) {
        let key = format!("s:{s}");
        if self.get(&key) {
            return;
        }
        if s.len() < 256 {
            self.out.extend([0x8c, s.len() as u8]);
        } else {
            self.out.push(b'X');
            self.out.extend((s.len() as u32).to_le_bytes());
        }
        self.out.extend(s.as_bytes());
        self.memoize(Some(key));
    }

    fn bytes(&mut self, b: &[u8], key: Option<String>) {
        if b.len() < 256 {
            self.out.extend([b'C', b.len() as u8]);
        } else {
            self.out.push(b'B');
            self.out.extend((b.len() as u32).to_le_bytes());
        }
        self.out.extend(b);
        self.memoize(key);
    }

    fn int(&mut self, v: i64) {
        match v {
            0..=0xff => self.out.extend([b'K', v as u8]),
            0x100..=0xffff => {
                self.out.push(b'M');
                self.out.extend((v as u16).to_le_bytes());
            }
            _ => {
                self.out.push(b'J');
                self.out.extend((v as i32).to_le_bytes());
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        let key = format!("g:{module}.{name}");
        if self.get(&key) {
            return;
        }
        self.str(module);
        self.str(name);
        self.out.push(0x93);
        self.memoize(Some(key));
    }

    fn dtype(&mut self, code: &str) {
        let key = format!("d:{code}");
        if self.get(&key) {
            return;
        }
        self.global("numpy", "dtype");
        self.str(code);
        self.out.extend([0x89, 0x88, 0x87]);
        self.memoize(None);
        self.out.push(b'R');
        self.memoize(Some(key));
        self.out.extend([b'(', b'K', 3]);
        self.str("<");
        self.out
            .extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t");
        self.memoize(None);
        self.out.push(b'b');
    }

    fn value(&mut self, v: &Py) {
        match v {
            Py::Int(i) => self.int(*i),
            Py::Tuple(items) => {
                let n = items.len();
                if n > 3 {
                    self.out.push(b'(');
                }
                for it in items {
                    self.value(it);
                }
                self.out.push(match n {
                    1 => 0x85,
                    2 => 0x86,
                    3 => 0x87,
                    _ => b't',
                });
                self.memoize(None);
            }
            Py::List(items) => {
                self.out.push(b']');
                self.memoize(None);
                for chunk in items.chunks(1000) {
                    if chunk.len() > 1 {
                        self.out.push(b'(');
                    }
                    for it in chunk {
                        self.value(it);
                    }
                    self.out.push(if chunk.len() > 1 { b'e' } else { b'a' });
                }
            }
            Py::Dict(entries) => {
                self.out.push(b'}');
                self.memoize(None);
                if entries.len() > 1 {
                    self.out.push(b'(');
                }
                for (k, v) in entries {
                    self.str(k);
                    self.value(v);
                }
                self.out.push(if entries.len() > 1 { b'u' } else { b's' });
            }
            Py::F4(shape, data) => {
                self.global("numpy._core.multiarray", "_reconstruct");
                self.global("numpy", "ndarray");
                self.out.extend([b'K', 0, 0x85]);
                self.memoize(None);
                if !self.get("b:b") {
                    self.bytes(b"b", Some("b:b".into()));
                }
                self.out.push(0x87);
                self.memoize(None);
                self.out.push(b'R');
                self.memoize(None);
                self.out.extend([b'(', b'K', 1]);
                self.value(&Py::Tuple(
                    shape.iter().map(|&d| Py::Int(d as i64)).collect(),
                ));
                self.dtype("f4");
                self.out.push(0x89);
                let raw: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
                self.bytes(&raw, None);
                self.out.push(b't');
                self.memoize(None);
                self.out.push(b'b');
            }
            Py::I4(v) => {
                self.global("numpy._core.multiarray", "scalar");
                self.dtype("i4");
                self.bytes(&v.to_le_bytes(), None);
                self.out.push(0x86);
                self.memoize(None);
                self.out.push(b'R');
                self.memoize(None);
            }
        }
    }
}

fn pickle(v: &Py) -> Vec<u8> {
    let mut p = Pickler::default();
    p.value(v);
    p.out.push(b'.');
    // CPython frames at 64 KiB; the files written here are smaller, so one frame
    assert!(p.out.len() < 64 * 1024);
    let mut file = vec![0x80, 4, 0x95];
    file.extend((p.out.len() as u64).to_le_bytes());
    file.extend(p.out);
    file
}

fn f4(rows: &[[f32; 6]]) -> Py {
    Py::F4(
        vec![rows.len(), 6],
        rows.iter().flatten().copied().collect(),
    )
}

#[test]
fn the_writer_matches_cpython_and_numpy() {
    // python3 -c "import pickle, numpy as np
    //   a = np.arange(6, dtype=np.float32).reshape(2, 3); b = a + 6; lab = np.array([7], np.int32)
    //   print(pickle.dumps({'train': [(a, 0, lab[0])],
    //       'test': [(b, 1, lab[0]), (a * 0, 0, np.int32(3))]}, protocol=4))"   (NumPy 2.4)
    let want: &[u8] = b"\x80\x04\x95\x93\x01\x00\x00\x00\x00\x00\x00}\x94(\x8c\x05train\x94]\x94\
\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94\x8c\x05numpy\x94\x8c\x07ndarray\
\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01K\x02K\x03\x86\x94h\x06\x8c\x05dtype\x94\x93\
\x94\x8c\x02f4\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\
\x94b\x89C\x18\x00\x00\x00\x00\x00\x00\x80?\x00\x00\x00@\x00\x00@@\x00\x00\x80@\x00\x00\xa0@\x94t\x94\
bK\x00h\x03\x8c\x06scalar\x94\x93\x94h\x0f\x8c\x02i4\x94\x89\x88\x87\x94R\x94(K\x03h\x13NNNJ\xff\xff\
\xff\xffJ\xff\xff\xff\xffK\x00t\x94bC\x04\x07\x00\x00\x00\x94\x86\x94R\x94\x87\x94a\x8c\x04test\x94]\
\x94(h\x05h\x08K\x00\x85\x94h\n\x87\x94R\x94(K\x01K\x02K\x03\x86\x94h\x12\x89C\x18\x00\x00\xc0@\x00\
\x00\xe0@\x00\x00\x00A\x00\x00\x10A\x00\x00 A\x00\x000A\x94t\x94bK\x01h\x18h\x1bC\x04\x07\x00\x00\x00\
\x94\x86\x94R\x94\x87\x94h\x05h\x08K\x00\x85\x94h\n\x87\x94R\x94(K\x01K\x02K\x03\x86\x94h\x12\x89C\
\x18\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x94t\x94bK\x00h\x18h\x1bC\x04\x03\x00\x00\x00\x94\x86\x94R\x94\x87\x94eu.";
    let a: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let b: Vec<f32> = (6..12).map(|i| i as f32).collect();
    let arr = |v: &[f32]| Py::F4(vec![2, 3], v.to_vec());
    let got = pickle(&Py::Dict(vec![
        (
            "train",
            Py::List(vec![Py::Tuple(vec![arr(&a), Py::Int(0), Py::I4(7)])]),
        ),
        (
            "test",
            Py::List(vec![
                Py::Tuple(vec![arr(&b), Py::Int(1), Py::I4(7)]),
                Py::Tuple(vec![arr(&[0.0; 6]), Py::Int(0), Py::I4(3)]),
            ]),
        ),
    ]));
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------
// A tiny official layout: data/ModelNetFewshot/3way_2shot/{0,1}.pkl beside
// data/ModelNet/modelnet40_normal_resampled/modelnet40_shape_names.txt.
// ---------------------------------------------------------------------------------------

const WAY: usize = 3;
const SHOT: usize = 2;
const TEST_PER_CLASS: usize = 2;
const POINTS: usize = 48;
/// The ModelNet40 class of each fold label, per fold (as `random.shuffle(keys)` picks them).
const FOLD_CLASSES: [[usize; WAY]; 2] = [[7, 2, 30], [2, 39, 0]];

fn shape_names() -> Vec<String> {
    (0..40).map(|i| format!("shape{i:02}")).collect()
}

/// A shape of ModelNet40 class `c`: a class-specific ring far from the origin.
fn cloud(c: usize, i: usize) -> Vec<[f32; 6]> {
    (0..POINTS)
        .map(|j| {
            let t = j as f32 * 0.41 + i as f32 * 0.13;
            let r = 1.0 + (c % 5) as f32;
            [
                3.0 + r * t.cos(),
                -2.0 + r * t.sin(),
                0.05 * j as f32 * (c as f32 / 20.0 - 1.0),
                t.cos(),
                t.sin(),
                0.0,
            ]
        })
        .collect()
}

type Entry = (Vec<[f32; 6]>, usize, usize);

fn fold_entries(fold: usize) -> (Vec<Entry>, Vec<Entry>) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (label, &c) in FOLD_CLASSES[fold].iter().enumerate() {
        for i in 0..SHOT {
            train.push((cloud(c, i), label, c));
        }
        for i in 0..TEST_PER_CLASS {
            test.push((cloud(c, 100 + i), label, c));
        }
    }
    // the official script shuffles both lists; a fixed interleave stands in for it
    train.reverse();
    (train, test)
}

fn fold_pickle(fold: usize) -> Vec<u8> {
    let (train, test) = fold_entries(fold);
    let list = |v: &[Entry]| {
        Py::List(
            v.iter()
                .map(|(p, l, c)| Py::Tuple(vec![f4(p), Py::Int(*l as i64), Py::I4(*c as i32)]))
                .collect(),
        )
    };
    pickle(&Py::Dict(vec![
        ("train", list(&train)),
        ("test", list(&test)),
    ]))
}

/// Writes the layout under `data/` and returns the few-shot root.
fn write_layout(data: &Path) -> PathBuf {
    let names = data.join("ModelNet/modelnet40_normal_resampled");
    std::fs::create_dir_all(&names).unwrap();
    std::fs::write(
        names.join("modelnet40_shape_names.txt"),
        shape_names().join("\n") + "\n",
    )
    .unwrap();
    let root = data.join("ModelNetFewshot");
    let setting = root.join(format!("{WAY}way_{SHOT}shot"));
    std::fs::create_dir_all(&setting).unwrap();
    for fold in 0..2 {
        std::fs::write(setting.join(format!("{fold}.pkl")), fold_pickle(fold)).unwrap();
    }
    root
}

fn xyz(p: &[[f32; 6]]) -> Vec<[f32; 3]> {
    let mut v: Vec<[f32; 3]> = p.iter().map(|r| [r[0], r[1], r[2]]).collect();
    pc_normalize(&mut v);
    v
}

#[test]
fn a_fold_reads_as_the_official_loader_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_layout(dir.path());
    let setting = root.join("3way_2shot");
    let fold0 = setting.join("0.pkl");
    // bare paths: the root, a setting folder and a fold file are all detected
    for p in [&root, &setting, &fold0] {
        assert_eq!(
            DataSpec::parse(&p.display().to_string()).unwrap(),
            DataSpec::ModelNet40FewShot(p.to_path_buf())
        );
    }
    let spec = DataSpec::parse(&format!("modelnet40fewshot:{}", root.display())).unwrap();
    assert_eq!(
        spec.to_string(),
        format!("modelnet40fewshot:{}", root.display())
    );
    let e = spec.open().unwrap_err().to_string();
    assert!(e.contains("--fewshot"), "{e}");

    let (found, folds) = fold_files(&root, FewShotSetting { way: 3, shot: 2 }).unwrap();
    assert_eq!(found, setting);
    assert_eq!(folds, vec![(0, fold0.clone()), (1, setting.join("1.pkl"))]);
    let e = fold_files(&root, FewShotSetting { way: 5, shot: 10 })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("5way_10shot") && e.contains(&*root.to_string_lossy()),
        "{e}"
    );

    for (fold, classes) in FOLD_CLASSES.iter().enumerate() {
        let ds = DataSpec::ModelNet40FewShot(setting.join(format!("{fold}.pkl")))
            .open()
            .unwrap();
        // the official head is 40-way for every W; the fold's classes come first
        assert_eq!(ds.class_names.len(), 40);
        let names = shape_names();
        for (label, &c) in classes.iter().enumerate() {
            assert_eq!(ds.class_names[label], names[c]);
        }
        assert_eq!(ds.class_names[WAY], "unused 3");
        let (train, test) = fold_entries(fold);
        assert_eq!(
            (ds.train.len(), ds.test.len()),
            (WAY * SHOT, WAY * TEST_PER_CLASS)
        );
        for (samples, want) in [(&ds.train, &train), (&ds.test, &test)] {
            for (s, (pts, label, _)) in samples.iter().zip(want) {
                assert_eq!(s.label, *label);
                let c = ds.load(s, &ReadOptions::default()).unwrap();
                assert_eq!(c.class_label, Some(*label));
                // xyz only (USE_NORMALS: False), pc_normalize as the official __getitem__
                assert!(c.normals.is_none());
                assert_eq!(c.positions, xyz(pts));
            }
        }
    }

    // DATASET.md's folder spelling, and no shape-names file: classes go by their index
    let other = tempfile::tempdir().unwrap();
    let s2 = other.path().join("fs/3way2shot");
    std::fs::create_dir_all(&s2).unwrap();
    std::fs::write(s2.join("0.pkl"), fold_pickle(0)).unwrap();
    let (found, folds) =
        fold_files(&other.path().join("fs"), FewShotSetting { way: 3, shot: 2 }).unwrap();
    assert_eq!((found, folds.len()), (s2.clone(), 1));
    let ds = DataSpec::ModelNet40FewShot(s2.join("0.pkl"))
        .open()
        .unwrap();
    assert_eq!(ds.class_names[0], "modelnet40 class 7");
}

// ---------------------------------------------------------------------------------------
// The binary.
// ---------------------------------------------------------------------------------------

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn fewshot_trains_every_fold_and_reports_mean_and_std() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_layout(dir.path());
    let cfg = tiny_config(dir.path(), 40);
    let data = format!("modelnet40fewshot:{}", root.display());
    let out = dir.path().join("fs");
    let cfg_s = s(&cfg);
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            &cfg_s,
            "--data",
            &data,
            "--fewshot",
            "3way2shot",
            "--epochs",
            "2",
        ];
        args.extend_from_slice(extra);
        dapt(&args)
    };
    let lines = ok(&train(&["--out", &s(&out), "--json"]));
    let folds: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "fold").collect();
    assert_eq!(folds.len(), 2);
    let accs: Vec<f64> = folds
        .iter()
        .map(|f| f["summary"]["best_overall_accuracy"].as_f64().unwrap())
        .collect();
    for (i, f) in folds.iter().enumerate() {
        assert_eq!(f["fold"], i);
        assert_eq!(f["summary"]["epochs_done"], 2);
        let run = out.join(format!("fold-{i}"));
        assert!(run.join("checkpoints/best.safetensors").is_file());
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        let fold_file = root.join(format!("3way_2shot/{i}.pkl"));
        assert_eq!(
            saved["data"],
            format!("modelnet40fewshot:{}", fold_file.display())
        );
        assert_eq!(saved["model"]["cls_dim"], 40);
    }
    let report = lines.last().unwrap();
    assert_eq!(report["event"], "fewshot");
    assert_eq!(
        (report["way"].as_u64(), report["shot"].as_u64()),
        (Some(3), Some(2))
    );
    let mean = (accs[0] + accs[1]) / 2.0;
    let std = ((accs[0] - mean).powi(2) + (accs[1] - mean).powi(2)).sqrt() / 2f64.sqrt();
    assert!((report["mean_accuracy"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((report["std_accuracy"].as_f64().unwrap() - std).abs() < 1e-12);
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fewshot.json")).unwrap()).unwrap();
    assert_eq!(&file, report);

    // a fold is an ordinary data set for eval
    let best = out.join("fold-1/checkpoints/best.safetensors");
    let fold1 = root.join("3way_2shot/1.pkl");
    let v = &ok(&dapt(&[
        "eval",
        "--backend",
        "cpu",
        "--json",
        "--checkpoint",
        &s(&best),
        "--data",
        &s(&fold1),
    ]))[0];
    assert_eq!(v["samples"], WAY * TEST_PER_CLASS);
    assert_eq!(v["class_names"][1], shape_names()[39]);
    // the text report lists the fold's classes, not the 37 empty ones of the 40-way head
    let text = dapt(&[
        "eval",
        "--backend",
        "cpu",
        "--checkpoint",
        &s(&best),
        "--data",
        &s(&fold1),
    ]);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(
        text.lines().filter(|l| l.ends_with('%')).count(),
        WAY,
        "{text}"
    );
    assert!(
        text.contains(&format!("({} classes have no test clouds", 40 - WAY)),
        "{text}"
    );

    // the same command again refuses to overwrite; --resume continues (here: nothing to do)
    let e = failed(&train(&["--out", &s(&out), "--json"]));
    assert!(e.contains("--resume") && e.contains(&s(&out)), "{e}");
    let lines = ok(&train(&["--resume", &s(&out), "--json"]));
    let again = lines.last().unwrap();
    assert_eq!(again["mean_accuracy"], report["mean_accuracy"]);

    // text output, one fold, the root as a bare path
    let out2 = dir.path().join("fs2");
    let r = dapt(&[
        "train",
        "--config",
        &s(&cfg),
        "--data",
        &s(&root),
        "--fewshot",
        "3way_2shot",
        "--folds",
        "1",
        "--epochs",
        "1",
        "--out",
        &s(&out2),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("fold 1: best held-out accuracy"), "{text}");
    assert!(!text.contains("fold 0:"), "{text}");
    assert!(text.contains("3way2shot, 1 fold(s):"), "{text}");
    assert!(out2.join("fewshot.json").is_file() && !out2.join("fold-0").exists());

    // mistakes are named
    let e = failed(&dapt(&[
        "train",
        "--config",
        &cfg_s,
        "--data",
        &data,
        "--fewshot",
        "4way2shot",
    ]));
    assert!(e.contains("4way_2shot"), "{e}");
    let e = failed(&train(&["--folds", "5"]));
    assert!(e.contains("fold 5"), "{e}");
    let e = failed(&train(&["--shots", "2"]));
    assert!(e.contains("--shots"), "{e}");
    let e = failed(&dapt(&[
        "train",
        "--data",
        "synthetic",
        "--fewshot",
        "5way10shot",
    ]));
    assert!(e.contains("few-shot layout"), "{e}");
}

/// Pickled values nested `depth` lists deep.
fn nested(depth: usize) -> Py {
    (0..depth).fold(Py::Int(1), |inner, _| Py::List(vec![inner]))
}

#[test]
fn hostile_fold_files_are_errors_naming_the_file() {
    let good = fold_pickle(0);
    let replace = |from: &[u8], to: &[u8]| -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = good.windows(from.len()).position(|w| w == from).unwrap();
        let mut b = good.clone();
        b[at..at + from.len()].copy_from_slice(to);
        b
    };
    let tiny = f4(&[[0.0; 6]; 2]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("truncated", good[..good.len() - 1].to_vec()),
        (
            "`subprocess.aaaaaaaaaaa._reconstruct` is not allowed",
            replace(b"numpy._core.multiarray", b"subprocess.aaaaaaaaaaa"),
        ),
        (
            "needs 25165824 bytes, but its data has 48",
            pickle(&Py::Dict(vec![(
                "train",
                Py::List(vec![Py::Tuple(vec![
                    Py::F4(vec![1 << 20, 6], vec![0.0; 12]),
                    Py::Int(0),
                    Py::I4(0),
                ])]),
            )])),
        ),
        (
            "nested deeper than",
            pickle(&Py::Dict(vec![
                ("train", nested(500)),
                ("test", Py::List(vec![])),
            ])),
        ),
        (
            "expected an integer label",
            pickle(&Py::Dict(vec![
                (
                    "train",
                    Py::List(vec![Py::Tuple(vec![tiny, tiny_f4(), Py::I4(0)])]),
                ),
                ("test", Py::List(vec![])),
            ])),
        ),
        (
            "no 'test' entry",
            pickle(&Py::Dict(vec![(
                "train",
                Py::List(vec![Py::Tuple(vec![tiny_f4(), Py::Int(0), Py::I4(0)])]),
            )])),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (want, bytes)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("{i}.pkl"));
        std::fs::write(&file, bytes).unwrap();
        let e = DataSpec::parse(&s(&file))
            .unwrap()
            .open()
            .unwrap_err()
            .to_string();
        assert!(e.contains(&s(&file)) && e.contains(want), "{want}: {e}");
    }
    // and through the binary: an exit code and the file's name, no panic
    let root = dir.path().join("fs/3way_2shot");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("0.pkl"), &good[..good.len() / 3]).unwrap();
    let cfg = tiny_config(dir.path(), 40);
    let e = failed(&dapt(&[
        "train",
        "--config",
        &s(&cfg),
        "--data",
        &format!("modelnet40fewshot:{}", dir.path().join("fs").display()),
        "--fewshot",
        "3way2shot",
        "--out",
        &s(&dir.path().join("out")),
    ]));
    assert!(
        e.contains("0.pkl") && e.contains("truncated") && !e.contains("panicked"),
        "{e}"
    );
}

fn tiny_f4() -> Py {
    f4(&[[0.5; 6]; 2])
}
