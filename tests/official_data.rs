//! The official data files as the official code writes them: ModelNet40's
//! `modelnet40_{train,test}_8192pts_fps.dat` caches, produced here
//! by a small writer that emits the bytes CPython's `pickle.dump(..., protocol=4)` writes
//! for NumPy arrays, and read back through the public loaders and the `dapt` binary.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dapt::data::transform::pc_normalize;
use dapt::data::{DataSpec, ReadOptions};

use common::{dapt, ok, s, tiny_config};

// ---------------------------------------------------------------------------------------
// A pickle writer following CPython's `_Pickler` (protocol 4): 64 KiB frames committed at
// the start of a `save`, bytes of 64 KiB or more written outside any frame, every
// container/str/bytes memoized (MEMOIZE), repeated objects fetched with BINGET.
// ---------------------------------------------------------------------------------------

const FRAME_TARGET: usize = 64 * 1024;

/// What a value of the test data is.
enum Py {
    List(Vec<Py>),
    /// A C-order little-endian NumPy array: dtype code (`f4`, `i4`, `i8`), shape, raw bytes.
    Array(&'static str, Vec<usize>, Vec<u8>),
}

fn f32_array(rows: &[Vec<f32>]) -> Py {
    let cols = rows.first().map_or(0, Vec::len);
    let raw = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    Py::Array("f4", vec![rows.len(), cols], raw)
}

fn i32_label(label: i32) -> Py {
    Py::Array("i4", vec![1], label.to_le_bytes().to_vec())
}

struct Pickler {
    out: Vec<u8>,
    frame: Vec<u8>,
    memo_len: u32,
    /// Objects CPython would see again by identity: globals, the dtype singletons, the
    /// interned `'numpy'`, the cached one-character `'<'` and `b'b'`.
    shared: HashMap<String, u32>,
}

impl Pickler {
    fn new() -> Self {
        Self {
            out: vec![0x80, 4],
            frame: Vec::new(),
            memo_len: 0,
            shared: HashMap::new(),
        }
    }

    fn commit(&mut self, force: bool) {
        if self.frame.is_empty() || (!force && self.frame.len() < FRAME_TARGET) {
            return;
        }
        if self.frame.len() >= 4 {
            self.out.push(0x95);
            self.out
                .extend_from_slice(&(self.frame.len() as u64).to_le_bytes());
        }
        self.out.append(&mut self.frame);
    }

    /// The start of every CPython `save()`.
    fn save(&mut self) {
        self.commit(false);
    }

    fn memoize(&mut self) -> u32 {
        self.frame.push(0x94);
        self.memo_len += 1;
        self.memo_len - 1
    }

    /// BINGET of a shared object, when it was saved before.
    fn get(&mut self, key: &str) -> bool {
        let Some(&i) = self.shared.get(key) else {
            return false;
        };
        self.save();
        if i < 256 {
            self.frame.extend_from_slice(&[b'h', i as u8]);
        } else {
            self.frame.push(b'j');
            self.frame.extend_from_slice(&i.to_le_bytes());
        }
        true
    }

    fn int(&mut self, v: i64) {
        self.save();
        if (0..256).contains(&v) {
            self.frame.extend_from_slice(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.frame.push(b'M');
            self.frame.extend_from_slice(&(v as u16).to_le_bytes());
        } else {
            self.frame.push(b'J');
            self.frame.extend_from_slice(&(v as i32).to_le_bytes());
        }
    }

    fn op(&mut self, b: u8) {
        self.frame.push(b);
    }

    /// A str, memoized; `shared` ones are fetched again by BINGET.
    fn str(&mut self, s: &str, shared: bool) {
        let key = format!("str:{s}");
        if shared && self.get(&key) {
            return;
        }
        self.save();
        if s.len() < 256 {
            self.frame.extend_from_slice(&[0x8c, s.len() as u8]);
        } else {
            self.frame.push(b'X');
            self.frame
                .extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        self.frame.extend_from_slice(s.as_bytes());
        let i = self.memoize();
        if shared {
            self.shared.insert(key, i);
        }
    }

    fn bytes(&mut self, b: &[u8], shared: bool) {
        let key = format!("bytes:{b:?}");
        if shared && self.get(&key) {
            return;
        }
        self.save();
        if b.len() < 256 {
            self.frame.extend_from_slice(&[b'C', b.len() as u8]);
            self.frame.extend_from_slice(b);
        } else if b.len() < FRAME_TARGET {
            self.frame.push(b'B');
            self.frame
                .extend_from_slice(&(b.len() as u32).to_le_bytes());
            self.frame.extend_from_slice(b);
        } else {
            // `_write_large_bytes`: the frame is committed, the payload goes outside it
            self.commit(true);
            self.out.push(b'B');
            self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            self.out.extend_from_slice(b);
        }
        let i = self.memoize();
        if shared {
            self.shared.insert(key, i);
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        let key = format!("global:{module}.{name}");
        if self.get(&key) {
            return;
        }
        self.save();
        // module names are interned, so `numpy` is one object
        self.str(module, true);
        self.str(name, false);
        self.op(0x93);
        let i = self.memoize();
        self.shared.insert(key, i);
    }

    /// `save_tuple` of up to 3 items (TUPLE1..3) or more (MARK ... TUPLE).
    fn tuple(&mut self, items: impl FnOnce(&mut Self), n: usize) {
        self.save();
        if n == 0 {
            self.op(b')');
            return;
        }
        if n > 3 {
            self.op(b'(');
        }
        items(self);
        self.op(match n {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        });
        self.memoize();
    }

    fn dtype(&mut self, code: &str) {
        let key = format!("dtype:{code}");
        if self.get(&key) {
            return;
        }
        self.save();
        self.global("numpy", "dtype");
        self.tuple(
            |p| {
                p.str(code, false);
                p.save();
                p.op(0x89);
                p.save();
                p.op(0x88);
            },
            3,
        );
        self.op(b'R');
        let i = self.memoize();
        self.shared.insert(key, i);
        self.tuple(
            |p| {
                p.int(3);
                p.str("<", true);
                for _ in 0..3 {
                    p.save();
                    p.op(b'N');
                }
                p.int(-1);
                p.int(-1);
                p.int(0);
            },
            8,
        );
        self.op(b'b');
    }

    fn array(&mut self, code: &str, shape: &[usize], raw: &[u8]) {
        self.save();
        self.global("numpy.core.multiarray", "_reconstruct");
        self.tuple(
            |p| {
                p.global("numpy", "ndarray");
                p.tuple(|p| p.int(0), 1);
                // one-byte bytes objects are CPython singletons
                p.bytes(b"b", true);
            },
            3,
        );
        self.op(b'R');
        self.memoize();
        self.tuple(
            |p| {
                p.int(1);
                p.tuple(
                    |p| {
                        for &d in shape {
                            p.int(d as i64);
                        }
                    },
                    shape.len(),
                );
                p.dtype(code);
                p.save();
                p.op(0x89);
                p.bytes(raw, false);
            },
            5,
        );
        self.op(b'b');
    }

    fn value(&mut self, v: &Py) {
        match v {
            Py::List(items) => {
                self.save();
                self.op(b']');
                self.memoize();
                // `_batch_appends` (batches of 1000)
                for batch in items.chunks(1000) {
                    if batch.len() == 1 {
                        self.value(&batch[0]);
                        self.op(b'a');
                    } else {
                        self.op(b'(');
                        for x in batch {
                            self.value(x);
                        }
                        self.op(b'e');
                    }
                }
            }
            Py::Array(code, shape, raw) => self.array(code, shape, raw),
        }
    }

    fn dump(mut self, v: &Py) -> Vec<u8> {
        self.value(v);
        self.op(b'.');
        self.commit(true);
        self.out
    }
}

fn pickle(v: &Py) -> Vec<u8> {
    Pickler::new().dump(v)
}

#[test]
fn the_writer_matches_cpython_for_one_small_array() {
    // python3 -c "import pickle, numpy as np;
    //   print(pickle.dumps(np.array([1.0, 2.0], dtype=np.float32), protocol=4))"
    // (NumPy 1.x), with the frame header checked separately
    let bytes = pickle(&Py::Array(
        "f4",
        vec![2],
        [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    let body: &[u8] = b"\x8c\x15numpy.core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94\
        \x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94\
        (K\x01K\x02\x85\x94h\x03\x8c\x05dtype\x94\x93\x94\x8c\x02f4\x94\x89\x88\x87\x94R\x94\
        (K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x89C\x08\
        \x00\x00\x80?\x00\x00\x00@\x94t\x94b.";
    assert_eq!(&bytes[..3], b"\x80\x04\x95");
    assert_eq!(
        u64::from_le_bytes(bytes[3..11].try_into().unwrap()),
        body.len() as u64
    );
    assert_eq!(&bytes[11..], body);
}

// ---------------------------------------------------------------------------------------
// A tiny official ModelNet40 layout.
// ---------------------------------------------------------------------------------------

const CLASSES: [&str; 3] = ["airplane", "bathtub", "bed"];
const POINTS: usize = 64;

/// Shape `i` of class `c`: a class-specific blob (xyz far from the origin, so normalising
/// shows) with unit normals.
fn shape(c: usize, i: usize) -> Vec<Vec<f32>> {
    (0..POINTS)
        .map(|j| {
            let t = j as f32 * 0.37 + i as f32;
            let r = 1.0 + c as f32;
            vec![
                5.0 + r * t.cos(),
                -3.0 + r * t.sin() * (1.0 + c as f32 * 0.5),
                0.02 * j as f32 * (c as f32 - 1.0),
                t.cos(),
                t.sin(),
                0.0,
            ]
        })
        .collect()
}

struct Split {
    shapes: Vec<(usize, Vec<Vec<f32>>)>,
}

fn split(per_class: usize, offset: usize) -> Split {
    let mut shapes = Vec::new();
    for c in 0..CLASSES.len() {
        for i in 0..per_class {
            shapes.push((c, shape(c, offset + i)));
        }
    }
    Split { shapes }
}

fn dat(s: &Split) -> Vec<u8> {
    pickle(&Py::List(vec![
        Py::List(s.shapes.iter().map(|(_, p)| f32_array(p)).collect()),
        Py::List(s.shapes.iter().map(|(c, _)| i32_label(*c as i32)).collect()),
    ]))
}

/// `root/modelnet40_normal_resampled/` with the names, the split lists and both caches
/// (no per-shape txt files, so only the caches can be what is read).
fn write_layout(root: &Path) -> (PathBuf, Split, Split) {
    let base = root.join("modelnet40_normal_resampled");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("modelnet40_shape_names.txt"),
        CLASSES.join("\n") + "\n",
    )
    .unwrap();
    let (train, test) = (split(4, 0), split(2, 100));
    for (name, s, offset) in [("train", &train, 1), ("test", &test, 101)] {
        let mut list = String::new();
        let mut k = vec![0; CLASSES.len()];
        for (c, _) in &s.shapes {
            list += &format!("{}_{:04}\n", CLASSES[*c], offset + k[*c]);
            k[*c] += 1;
        }
        std::fs::write(base.join(format!("modelnet40_{name}.txt")), list).unwrap();
        std::fs::write(
            base.join(format!("modelnet40_{name}_8192pts_fps.dat")),
            dat(s),
        )
        .unwrap();
    }
    (base, train, test)
}

#[test]
fn the_modelnet40_caches_are_read_as_the_official_loader_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_, train, test) = write_layout(dir.path());
    let spec = DataSpec::parse(&format!("modelnet40:{}", dir.path().display())).unwrap();
    let ds = spec.open().unwrap();
    assert_eq!(ds.class_names, CLASSES);
    assert_eq!((ds.train.len(), ds.test.len()), (12, 6));
    for (samples, want) in [(&ds.train, &train), (&ds.test, &test)] {
        for (s, (c, pts)) in samples.iter().zip(&want.shapes) {
            assert_eq!(s.label, *c);
            let cloud = ds.load(s, &ReadOptions::default()).unwrap();
            assert_eq!(cloud.class_label, Some(*c));
            // xyz only (USE_NORMALS: False), pc_normalize applied as on the txt path
            assert!(cloud.normals.is_none());
            let mut xyz: Vec<[f32; 3]> = pts.iter().map(|r| [r[0], r[1], r[2]]).collect();
            pc_normalize(&mut xyz);
            assert_eq!(cloud.positions, xyz);
        }
    }
    // a bare path is detected as ModelNet40 too
    let detected = DataSpec::parse(&dir.path().display().to_string()).unwrap();
    assert_eq!(detected.open().unwrap().train.len(), 12);

    // evaluation opens the test split alone: the training cache is not even read
    let train_dat = dir
        .path()
        .join("modelnet40_normal_resampled/modelnet40_train_8192pts_fps.dat");
    std::fs::write(&train_dat, b"not a pickle").unwrap();
    let t = spec.open_test().unwrap();
    assert_eq!((t.train.len(), t.test.len()), (0, 6));
    assert_eq!(t.class_names, CLASSES);
    assert!(spec.open().is_err());
}

/// A named way of damaging a cache file.
type Damage = (&'static str, Box<dyn Fn(&Path)>);

#[test]
fn a_broken_cache_is_an_error_naming_it() {
    let open_err = |root: &Path| -> String {
        let spec = DataSpec::parse(&format!("modelnet40:{}", root.display())).unwrap();
        spec.open().unwrap_err().to_string()
    };
    let cases: Vec<Damage> = vec![
        (
            "truncated",
            Box::new(|f: &Path| {
                let b = std::fs::read(f).unwrap();
                std::fs::write(f, &b[..b.len() / 2]).unwrap();
            }),
        ),
        (
            "labels",
            Box::new(|f: &Path| {
                let s = split(4, 0);
                let mut v = vec![
                    Py::List(s.shapes.iter().map(|(_, p)| f32_array(p)).collect()),
                    Py::List(s.shapes.iter().map(|(c, _)| i32_label(*c as i32)).collect()),
                ];
                if let Py::List(l) = &mut v[1] {
                    l.pop();
                }
                std::fs::write(f, pickle(&Py::List(v))).unwrap();
            }),
        ),
        (
            "shape list",
            Box::new(|f: &Path| {
                let mut s = split(4, 0);
                s.shapes.pop();
                std::fs::write(f, dat(&s)).unwrap();
            }),
        ),
        (
            "out of range",
            Box::new(|f: &Path| {
                let mut s = split(4, 0);
                s.shapes[3].0 = 3;
                std::fs::write(f, dat(&s)).unwrap();
            }),
        ),
        (
            "expected (N, 6)",
            Box::new(|f: &Path| {
                let mut s = split(4, 0);
                s.shapes[2].1 = s.shapes[2].1.iter().map(|r| r[..2].to_vec()).collect();
                std::fs::write(f, dat(&s)).unwrap();
            }),
        ),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (base, _, _) = write_layout(dir.path());
        let file = base.join("modelnet40_train_8192pts_fps.dat");
        damage(&file);
        let e = open_err(dir.path());
        assert!(e.contains(&file.display().to_string()), "{what}: {e}");
        assert!(e.contains(what) || what == "truncated", "{what}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// The binary on the tiny layout.
// ---------------------------------------------------------------------------------------

#[test]
fn train_and_vote_run_on_the_caches() {
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path());
    let cfg = tiny_config(dir.path(), CLASSES.len());
    let data = format!("modelnet40:{}", dir.path().display());
    let run = dir.path().join("run");
    let lines = ok(&dapt(&[
        "train",
        "--config",
        &s(&cfg),
        "--data",
        &data,
        "--epochs",
        "1",
        "--points",
        "32",
        "--out",
        &s(&run),
        "--json",
    ]));
    assert_eq!(lines.last().unwrap()["summary"]["epochs_done"], 1);
    let best = run.join("checkpoints/best.safetensors");
    let lines = ok(&dapt(&[
        "eval",
        "--backend",
        "cpu",
        "--json",
        "--checkpoint",
        &s(&best),
        "--data",
        &data,
        "--vote",
        "2",
        "--vote-repeats",
        "2",
    ]));
    let v = &lines[0];
    assert_eq!(v["samples"], 6);
    assert_eq!(v["class_names"], serde_json::json!(CLASSES));
    assert_eq!(v["vote"]["views"], 2);
    let accs = v["vote"]["accuracies"].as_array().unwrap();
    assert_eq!(accs.len(), 2);
    assert!(
        accs.iter()
            .all(|a| (0.0..=1.0).contains(&a.as_f64().unwrap()))
    );

    // `--vote` alone is the official 10 views; a one-cloud batch still votes every cloud
    let lines = ok(&dapt(&[
        "eval",
        "--backend",
        "cpu",
        "--json",
        "--checkpoint",
        &s(&best),
        "--data",
        &data,
        "--vote",
        "--vote-repeats",
        "1",
        "--vote-batch",
        "1",
    ]));
    assert_eq!(lines[0]["vote"]["views"], 10);
    assert_eq!(lines[0]["vote"]["accuracies"].as_array().unwrap().len(), 1);
}
