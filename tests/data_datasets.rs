//! The synthetic set, DataSpec parsing, every loader on the shared samples and on layouts
//! written here, and the transforms.

use std::path::{Path, PathBuf};

use dapt::data::synthetic::{self, SyntheticConfig, generate};
use dapt::data::transform::{
    pc_normalize, resample_fps, resample_random, scale_and_translate, seg_scale_shift,
};
use dapt::data::{DataSpec, Dataset, PointCloud, ReadOptions, Rng, SampleSource, Task};

/// The shared research samples; CI has them beside the clone, so absence is a failure.
fn shared() -> PathBuf {
    let dir = std::env::var_os("DAPT_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        dir.join("data").is_dir(),
        "shared data not found at {}: set DAPT_SHARED_DIR or place shared/ beside the clone",
        dir.display()
    );
    dir.join("data")
}

fn centroid_and_max_norm(p: &[[f32; 3]]) -> ([f32; 3], f32) {
    let n = p.len() as f32;
    let c: [f32; 3] = std::array::from_fn(|k| p.iter().map(|q| q[k]).sum::<f32>() / n);
    let m = p
        .iter()
        .map(|q| (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt())
        .fold(0.0, f32::max);
    (c, m)
}

#[test]
fn synthetic_set_is_deterministic_valid_and_normalised() {
    let cfg = SyntheticConfig::default();
    let start = std::time::Instant::now();
    let a = generate(&cfg);
    let took = start.elapsed();
    eprintln!("default synthetic set generated in {took:?}");
    assert!(took.as_secs_f32() < 1.0, "default set took {took:?}");
    let b = generate(&cfg);
    let other = generate(&SyntheticConfig {
        seed: 1,
        ..cfg.clone()
    });
    assert!(a.class_names.len() >= 8);
    assert_eq!(a.train.len(), a.class_names.len() * cfg.train_per_class);
    assert_eq!(a.test.len(), a.class_names.len() * cfg.test_per_class);
    assert_eq!(a.train, b.train);
    assert_eq!(a.test, b.test);
    assert_ne!(a.train[0].positions, other.train[0].positions);
    assert_ne!(a.train[0].positions, a.test[0].positions);
    // part ids are global, disjoint across classes, and every point's id belongs to its class
    let parts = &a.category_parts;
    let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, (0..synthetic::num_parts()).collect::<Vec<_>>());
    let mut seen = vec![false; synthetic::num_parts()];
    for c in a.train.iter().chain(&a.test) {
        assert_eq!(c.len(), cfg.points);
        c.validate().unwrap();
        let class = c.class_label.unwrap();
        for &l in c.labels.as_ref().unwrap() {
            assert!(
                parts[class].contains(&(l as usize)),
                "class {class} got part {l}"
            );
            seen[l as usize] = true;
        }
        let (cen, m) = centroid_and_max_norm(&c.positions);
        assert!(cen.iter().all(|v| v.abs() < 1e-4), "{cen:?}");
        assert!((m - 1.0).abs() < 1e-4, "{m}");
    }
    assert!(seen.iter().all(|&s| s), "every part occurs");
    // distinct points (cut-outs are refilled without duplicates)
    let c = &a.train[3];
    let mut keys: Vec<[u32; 3]> = c.positions.iter().map(|p| p.map(f32::to_bits)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), c.len());
}

#[test]
fn synthetic_classes_are_separable_but_not_trivially() {
    // a nearest-centroid classifier on simple shape statistics should do well above chance
    // (the classes are learnable) but a single statistic should not separate them perfectly
    let set = generate(&SyntheticConfig::default());
    let feats = |c: &PointCloud| -> Vec<f32> {
        let mut r: Vec<f32> = c
            .positions
            .iter()
            .map(|p| (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt())
            .collect();
        r.sort_by(f32::total_cmp);
        (1..10).map(|k| r[k * r.len() / 10]).collect()
    };
    let k = set.class_names.len();
    let dim = 9;
    let mut cen = vec![vec![0f32; dim]; k];
    let mut cnt = vec![0f32; k];
    for c in &set.train {
        let f = feats(c);
        let l = c.class_label.unwrap();
        for d in 0..dim {
            cen[l][d] += f[d];
        }
        cnt[l] += 1.0;
    }
    for (c, n) in cen.iter_mut().zip(&cnt) {
        c.iter_mut().for_each(|v| *v /= n);
    }
    let correct = set
        .test
        .iter()
        .filter(|c| {
            let f = feats(c);
            let best = (0..k)
                .min_by(|&a, &b| {
                    let da: f32 = (0..dim).map(|d| (f[d] - cen[a][d]).powi(2)).sum();
                    let db: f32 = (0..dim).map(|d| (f[d] - cen[b][d]).powi(2)).sum();
                    da.total_cmp(&db)
                })
                .unwrap();
            best == c.class_label.unwrap()
        })
        .count();
    let acc = correct as f32 / set.test.len() as f32;
    eprintln!("nearest-centroid accuracy on radial statistics: {acc}");
    assert!(acc > 0.3, "radial statistics reach only {acc}");
    assert!(
        acc < 1.0,
        "radial statistics alone separate every class ({acc})"
    );
}

#[test]
fn synthetic_dataset_through_dataspec() {
    let spec = DataSpec::parse("synthetic").unwrap();
    assert_eq!(spec, DataSpec::Synthetic(SyntheticConfig::default()));
    let ds = spec.open().unwrap();
    assert!(ds.supports(Task::Classification) && ds.supports(Task::PartSegmentation));
    assert_eq!(ds.num_parts, Some(synthetic::num_parts()));
    let s = &ds.test[5];
    assert!(matches!(s.source, SampleSource::Memory(_)));
    let c = ds.load(s, &ReadOptions::default()).unwrap();
    assert_eq!(c.class_label, Some(s.label));
    let custom = DataSpec::parse("synthetic:seed=4,train=2,test=1,points=256").unwrap();
    assert_eq!(
        custom.to_string(),
        "synthetic:seed=4,train=2,test=1,points=256"
    );
    let ds = custom.open().unwrap();
    assert_eq!(ds.train.len(), 2 * ds.num_classes());
    assert_eq!(
        ds.load(&ds.train[0], &ReadOptions::default())
            .unwrap()
            .len(),
        256
    );
    assert!(DataSpec::parse("synthetic:colour=3").is_err());
    assert!(DataSpec::parse("synthetic:points=0").is_err());
    let any = DataSpec::parse("synthetic:seed=4,rotate=any").unwrap();
    assert_eq!(
        any.to_string(),
        "synthetic:seed=4,train=40,test=10,points=1024,rotate=any"
    );
    assert_eq!(DataSpec::parse(&any.to_string()).unwrap(), any);
    let e = DataSpec::parse("synthetic:rotate=sideways")
        .unwrap_err()
        .to_string();
    assert!(e.contains("rotate must be `upright` or `any`"), "{e}");
}

/// Upright shapes stand with their canonical axis along +Y: every pyramid's square base is a
/// horizontal plane (one y up to the noise). Rotations over all of 3D tilt it.
#[test]
fn synthetic_shapes_stand_upright_unless_rotate_any() {
    use dapt::data::synthetic::Rotation;
    let base = synthetic::category_parts()[6][0];
    let spreads = |rotation: Rotation| -> Vec<f32> {
        let set = generate(&SyntheticConfig {
            train_per_class: 8,
            test_per_class: 0,
            points: 512,
            rotation,
            ..SyntheticConfig::default()
        });
        set.train
            .iter()
            .filter(|c| c.class_label == Some(6))
            .map(|c| {
                let ys: Vec<f32> = c
                    .positions
                    .iter()
                    .zip(c.labels.as_ref().unwrap())
                    .filter(|(_, l)| **l as usize == base)
                    .map(|(p, _)| p[1])
                    .collect();
                let mean = ys.iter().sum::<f32>() / ys.len() as f32;
                (ys.iter().map(|y| (y - mean).powi(2)).sum::<f32>() / ys.len() as f32).sqrt()
            })
            .collect()
    };
    let upright = spreads(Rotation::Upright);
    assert_eq!(upright.len(), 8);
    // noise sigma 0.01 before pc_normalize, which scales by at most ~1/0.9
    assert!(upright.iter().all(|&s| s < 0.03), "{upright:?}");
    let any = spreads(Rotation::Any);
    assert!(any.iter().any(|&s| s > 0.1), "{any:?}");
}

#[test]
fn dataspec_prefixes_and_detection_errors() {
    assert_eq!(
        DataSpec::parse("modelnet40:/x/y").unwrap(),
        DataSpec::ModelNet40("/x/y".into())
    );
    assert_eq!(
        DataSpec::parse("ScanObjectNN:a.h5").unwrap(),
        DataSpec::ScanObjectNN("a.h5".into())
    );
    assert_eq!(
        DataSpec::parse("shapenetpart:p").unwrap(),
        DataSpec::ShapeNetPart("p".into())
    );
    assert_eq!(
        DataSpec::parse("shapenet55:p").unwrap(),
        DataSpec::ShapeNet55("p".into())
    );
    assert_eq!(
        DataSpec::parse("folder:p").unwrap(),
        DataSpec::Folder("p".into())
    );
    for s in ["modelnet40:/x/y", "folder:p", "shapenet55:q"] {
        assert_eq!(DataSpec::parse(s).unwrap().to_string(), s);
    }
    let dir = tempfile::tempdir().unwrap();
    let err = DataSpec::parse(dir.path().to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&*dir.path().to_string_lossy()) && err.contains("looked for"),
        "{err}"
    );
    let missing = dir.path().join("nope");
    let err = DataSpec::parse(missing.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn shapenetpart_official_layout() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::write(
        r.join("synsetoffset2category.txt"),
        "Airplane\t02691156\nCap\t02954340\n",
    )
    .unwrap();
    std::fs::create_dir_all(r.join("train_test_split")).unwrap();
    std::fs::create_dir_all(r.join("02954340")).unwrap();
    std::fs::create_dir_all(r.join("02691156")).unwrap();
    let split = |name: &str, v: &str| {
        std::fs::write(
            r.join("train_test_split")
                .join(format!("shuffled_{name}_file_list.json")),
            v,
        )
        .unwrap()
    };
    split("train", r#"["shape_data/02954340/aaa"]"#);
    split("val", r#"["shape_data/02691156/bbb"]"#);
    split("test", r#"["shape_data/02954340/ccc"]"#);
    for (syn, id) in [
        ("02954340", "aaa"),
        ("02691156", "bbb"),
        ("02954340", "ccc"),
    ] {
        std::fs::write(
            r.join(syn).join(format!("{id}.txt")),
            "0 0 0 0 0 1 6\n1 1 1 0 0 1 7\n",
        )
        .unwrap();
    }
    let ds = DataSpec::parse(r.to_str().unwrap())
        .unwrap()
        .open()
        .unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (2, 1));
    assert_eq!(ds.train[1].label, 0, "Airplane is category 0");
    assert_eq!(ds.test[0].label, 2, "Cap is category 2 of the 16");
    let c = ds.load(&ds.test[0], &ReadOptions::default()).unwrap();
    assert_eq!(c.labels, Some(vec![6, 7]));
    split("test", "not json");
    let err = DataSpec::ShapeNetPart(r.to_path_buf())
        .open()
        .unwrap_err()
        .to_string();
    assert!(err.contains("shuffled_test_file_list.json"), "{err}");
}

#[test]
fn scanobjectnn_fixture_variants() {
    let fx =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scanobjectnn_tiny/main_split");
    let ds = DataSpec::parse(fx.to_str().unwrap())
        .unwrap()
        .open()
        .unwrap();
    assert_eq!(ds.name, "ScanObjectNN OBJ_BG");
    assert!(!ds.normalize);
    assert_eq!((ds.train.len(), ds.test.len()), (4, 2));
    assert_eq!(ds.class_names.len(), 15);
    assert_eq!(ds.train[3].label, 12);
    let c = ds.load(&ds.test[1], &ReadOptions::default()).unwrap();
    assert_eq!(c.len(), 64);
    assert_eq!(c.class_label, Some(4));
    // raw coordinates, not normalised
    let raw = dapt::data::h5::read_h5(&fx.join("test_objectdataset.h5")).unwrap();
    assert_eq!(c.positions, raw[1].positions);
    // variants by name: a nobg folder, and the PB_T50_RS file pair
    let dir = tempfile::tempdir().unwrap();
    let nobg = dir.path().join("main_split_nobg");
    std::fs::create_dir_all(&nobg).unwrap();
    for (from, to) in [
        ("training_objectdataset.h5", "training_objectdataset.h5"),
        ("test_objectdataset.h5", "test_objectdataset.h5"),
    ] {
        std::fs::copy(fx.join(from), nobg.join(to)).unwrap();
    }
    assert_eq!(
        DataSpec::ScanObjectNN(nobg.clone()).open().unwrap().name,
        "ScanObjectNN OBJ_ONLY"
    );
    for (from, to) in [
        (
            "training_objectdataset.h5",
            "training_objectdataset_augmentedrot_scale75.h5",
        ),
        (
            "test_objectdataset.h5",
            "test_objectdataset_augmentedrot_scale75.h5",
        ),
    ] {
        std::fs::copy(fx.join(from), dir.path().join(to)).unwrap();
    }
    let pb = dir
        .path()
        .join("test_objectdataset_augmentedrot_scale75.h5");
    let ds = DataSpec::parse(pb.to_str().unwrap())
        .unwrap()
        .open()
        .unwrap();
    assert_eq!(ds.name, "ScanObjectNN PB_T50_RS");
    assert_eq!(ds.train.len(), 4);
    // a training file without its test partner names the missing file
    std::fs::remove_file(&pb).unwrap();
    let err = DataSpec::ScanObjectNN(
        dir.path()
            .join("training_objectdataset_augmentedrot_scale75.h5"),
    )
    .open()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("test_objectdataset_augmentedrot_scale75.h5"),
        "{err}"
    );
}

#[test]
fn shapenet55_layout() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("ShapeNet-55")).unwrap();
    std::fs::create_dir_all(r.join("shapenet_pc")).unwrap();
    std::fs::write(
        r.join("ShapeNet-55/train.txt"),
        "02691156-aaa.npy\n03001627-bbb.npy\n",
    )
    .unwrap();
    std::fs::write(r.join("ShapeNet-55/test.txt"), "03001627-ccc.npy\n").unwrap();
    for (i, n) in ["02691156-aaa.npy", "03001627-bbb.npy", "03001627-ccc.npy"]
        .iter()
        .enumerate()
    {
        let pts: Vec<[f32; 3]> = (0..10).map(|k| [k as f32, i as f32, 1.0]).collect();
        dapt::data::npy::write_npy(&r.join("shapenet_pc").join(n), &pts, None).unwrap();
    }
    let spec = DataSpec::parse(r.to_str().unwrap()).unwrap();
    assert_eq!(spec, DataSpec::ShapeNet55(r.to_path_buf()));
    let ds = spec.open().unwrap();
    assert_eq!(ds.class_names, vec!["02691156", "03001627"]);
    assert_eq!((ds.train.len(), ds.test.len()), (2, 1));
    assert_eq!(ds.test[0].label, 1);
    let c = ds.load(&ds.test[0], &ReadOptions::default()).unwrap();
    assert_eq!(c.len(), 10);
    let (_, m) = centroid_and_max_norm(&c.positions);
    assert!((m - 1.0).abs() < 1e-5);
}

#[test]
fn folder_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for class in ["cone", "cube"] {
        std::fs::create_dir_all(r.join(class)).unwrap();
        for i in 0..5 {
            std::fs::write(
                r.join(class).join(format!("{i}.xyz")),
                format!("0 0 {i}\n1 0 0\n0 1 0\n"),
            )
            .unwrap();
        }
    }
    std::fs::write(r.join("cube/notes.md"), "not a cloud").unwrap();
    let spec = DataSpec::parse(r.to_str().unwrap()).unwrap();
    assert_eq!(spec, DataSpec::Folder(r.to_path_buf()));
    let ds = spec.open().unwrap();
    assert_eq!(ds.class_names, vec!["cone", "cube"]);
    assert_eq!((ds.train.len(), ds.test.len()), (8, 2));
    let again = spec.open().unwrap();
    let paths = |d: &Dataset| {
        d.test
            .iter()
            .map(|s| match &s.source {
                SampleSource::File(p) => p.clone(),
                SampleSource::Memory(_) => PathBuf::new(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        paths(&ds),
        paths(&again),
        "the 80/20 split is deterministic"
    );
    // explicit train/ test/ folders
    let d2 = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 3), ("test", 1)] {
        for class in ["a", "b"] {
            let p = d2.path().join(split).join(class);
            std::fs::create_dir_all(&p).unwrap();
            for i in 0..n {
                std::fs::write(p.join(format!("{i}.txt")), "1 2 3\n4 5 6\n").unwrap();
            }
        }
    }
    let ds = DataSpec::Folder(d2.path().to_path_buf()).open().unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (6, 2));
    // an empty folder is an error naming it
    let d3 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d3.path().join("empty_class")).unwrap();
    let err = DataSpec::Folder(d3.path().to_path_buf())
        .open()
        .unwrap_err()
        .to_string();
    assert!(err.contains(&*d3.path().to_string_lossy()), "{err}");
}

#[test]
fn transforms() {
    let mut rng = Rng::new(5);
    let mut pts: Vec<[f32; 3]> = (0..500)
        .map(|_| {
            [
                rng.range(3.0, 9.0),
                rng.range(-4.0, 0.0),
                rng.normal() * 5.0,
            ]
        })
        .collect();
    pc_normalize(&mut pts);
    let (c, m) = centroid_and_max_norm(&pts);
    assert!(c.iter().all(|v| v.abs() < 1e-5), "{c:?}");
    assert!((m - 1.0).abs() < 1e-6);
    let mut same = vec![[2.0f32, 2.0, 2.0]; 4];
    pc_normalize(&mut same);
    assert!(
        same.iter().flatten().all(|v| *v == 0.0),
        "coincident points: centred, no NaN"
    );
    pc_normalize(&mut []);

    // augmentation ranges: with one point at (1,1,1) the result is s + t per axis
    for _ in 0..2000 {
        let mut p = [[1.0f32, 1.0, 1.0], [0.0, 0.0, 0.0]];
        scale_and_translate(&mut p, &mut rng);
        for (moved, t) in p[0].iter().zip(p[1]) {
            let s = moved - t;
            assert!(
                (-0.2..0.2).contains(&t) && (2.0 / 3.0 - 1e-6..1.5).contains(&s),
                "s={s} t={t}"
            );
        }
        let mut q = [[1.0f32, 1.0, 1.0], [0.0, 0.0, 0.0]];
        seg_scale_shift(&mut q, &mut rng);
        let s0 = q[0][0] - q[1][0];
        for (moved, t) in q[0].iter().zip(q[1]) {
            let s = moved - t;
            assert!((-0.1..0.1).contains(&t) && (0.8 - 1e-6..1.25).contains(&s));
            assert!((s - s0).abs() < 1e-6, "isotropic scale");
        }
    }

    let cloud = PointCloud {
        positions: (0..100).map(|i| [i as f32, 0.5, 1.0]).collect(),
        normals: Some((0..100).map(|i| [0.0, 0.0, i as f32]).collect()),
        labels: Some((0..100).collect()),
        class_label: Some(3),
        ..PointCloud::default()
    };
    let check_aligned = |c: &PointCloud| {
        for i in 0..c.len() {
            let x = c.positions[i][0];
            assert_eq!(c.normals.as_ref().unwrap()[i][2], x);
            assert_eq!(c.labels.as_ref().unwrap()[i], x as i64);
        }
        assert_eq!(c.class_label, Some(3));
    };
    let r = resample_random(&cloud, 40, &mut rng);
    assert_eq!(r.len(), 40);
    check_aligned(&r);
    let mut xs: Vec<i64> = r.labels.clone().unwrap();
    xs.sort();
    xs.dedup();
    assert_eq!(xs.len(), 40, "without replacement when enough points");
    let r = resample_random(&cloud, 250, &mut rng);
    assert_eq!(r.len(), 250);
    check_aligned(&r);
    let mut xs: Vec<i64> = r.labels.clone().unwrap();
    xs.sort();
    xs.dedup();
    assert_eq!(xs.len(), 100, "every point kept before repeats");
    let f = resample_fps(&cloud, 3);
    assert_eq!(f.labels, Some(vec![0, 99, 49]));
    check_aligned(&f);
    let f = resample_fps(&cloud, 130);
    assert_eq!(f.len(), 130);
    check_aligned(&f);
    assert_eq!(f, resample_fps(&cloud, 130), "padding is deterministic");
    assert!(resample_fps(&PointCloud::default(), 10).is_empty());
}

/// Tests on shared/ (research samples, the real-size checkpoint): `scripts/test.sh` runs them
/// when shared/ is present and says in one line when it is not.
mod shared {
    use super::*;

    #[test]
    fn modelnet40_shared_subset() {
        let root = shared().join("modelnet40-nrs3d-subset");
        let spec = DataSpec::parse(root.to_str().unwrap()).unwrap();
        assert_eq!(spec, DataSpec::ModelNet40(root.clone()));
        let ds = spec.open().unwrap();
        assert_eq!(ds.class_names.len(), 40);
        assert_eq!(ds.train.len(), 127);
        assert_eq!(ds.test.len(), 29);
        assert!(ds.normalize);
        let mut used: Vec<usize> = ds.train.iter().chain(&ds.test).map(|s| s.label).collect();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), 39);
        let door = ds.class_names.iter().position(|n| n == "door").unwrap();
        assert!(!used.contains(&door));
        assert_eq!(ds.class_names[0], "airplane");
        let s = &ds.test[0];
        let c = ds.load(s, &ReadOptions::default()).unwrap();
        assert_eq!(c.len(), 10_000);
        assert!(c.normals.is_some());
        assert_eq!(c.class_label, Some(s.label));
        let (cen, m) = centroid_and_max_norm(&c.positions);
        assert!(cen.iter().all(|v| v.abs() < 1e-4) && (m - 1.0).abs() < 1e-4);
        // the split lists of the official release work too
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("modelnet40_normal_resampled");
        std::fs::create_dir_all(base.join("airplane")).unwrap();
        std::fs::create_dir_all(base.join("bathtub")).unwrap();
        std::fs::write(
            base.join("modelnet40_shape_names.txt"),
            "airplane\nbathtub\n",
        )
        .unwrap();
        std::fs::write(
            base.join("modelnet40_train.txt"),
            "airplane_0001\nbathtub_0001\n",
        )
        .unwrap();
        std::fs::write(base.join("modelnet40_test.txt"), "bathtub_0002\n").unwrap();
        std::fs::write(
            base.join("airplane/airplane_0001.txt"),
            "1,2,3,0,0,1\n2,3,4,0,1,0\n",
        )
        .unwrap();
        std::fs::write(
            base.join("bathtub/bathtub_0001.txt"),
            "0,0,0,0,0,1\n1,1,1,0,0,1\n",
        )
        .unwrap();
        std::fs::write(
            base.join("bathtub/bathtub_0002.txt"),
            "0,0,0,0,0,1\n2,2,2,0,0,1\n",
        )
        .unwrap();
        let ds = DataSpec::parse(dir.path().to_str().unwrap())
            .unwrap()
            .open()
            .unwrap();
        assert_eq!((ds.train.len(), ds.test.len()), (2, 1));
        assert_eq!(ds.test[0].label, 1);
        let c = ds.load(&ds.train[0], &ReadOptions::default()).unwrap();
        assert_eq!(c.class_label, Some(0));
        // a listed shape whose class is unknown is an error naming the list
        std::fs::write(base.join("modelnet40_test.txt"), "sofa_0002\n").unwrap();
        let err = DataSpec::ModelNet40(base.clone())
            .open()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("modelnet40_test.txt") && err.contains("sofa"),
            "{err}"
        );
    }

    #[test]
    fn shapenetpart_shared_cap_sample() {
        let root = shared().join("shapenetpart-cap-tp3d");
        let spec = DataSpec::parse(root.to_str().unwrap()).unwrap();
        assert_eq!(spec, DataSpec::ShapeNetPart(root.clone()));
        let ds = spec.open().unwrap();
        assert_eq!(ds.train.len() + ds.test.len(), 16);
        assert_eq!(ds.test.len(), 11);
        assert_eq!(ds.class_names.len(), 16);
        assert_eq!(ds.num_parts, Some(50));
        let cap = ds.class_names.iter().position(|n| n == "Cap").unwrap();
        assert_eq!(ds.category_parts.as_ref().unwrap()[cap], vec![6, 7]);
        let mut total = 0;
        for s in ds.train.iter().chain(&ds.test) {
            assert_eq!(s.label, cap);
            let c = ds.load(s, &ReadOptions::default()).unwrap();
            assert!((2329..=2792).contains(&c.len()));
            assert!(c.normals.is_some());
            assert!(c.labels.as_ref().unwrap().iter().all(|&l| l == 6 || l == 7));
            total += c.len();
        }
        assert_eq!(total, 41_071);
    }

    #[test]
    fn furniture_obj_meshes_via_labels_csv() {
        let root = shared().join("sweethome3d-furniture/cc0-demo");
        let ds = DataSpec::parse(&format!("folder:{}", root.display()))
            .unwrap()
            .open()
            .unwrap();
        assert_eq!(ds.train.len() + ds.test.len(), 25);
        assert_eq!(ds.class_names.len(), 14);
        assert!(!ds.test.is_empty());
        let opts = ReadOptions {
            mesh_samples: 1024,
            ..ReadOptions::default()
        };
        let c = ds.load(&ds.train[0], &opts).unwrap();
        assert_eq!(c.len(), 1024);
        let (cen, m) = centroid_and_max_norm(&c.positions);
        assert!(cen.iter().all(|v| v.abs() < 1e-3) && (m - 1.0).abs() < 1e-4);
        assert_eq!(
            c,
            ds.load(&ds.train[0], &opts).unwrap(),
            "sampling is seeded"
        );
    }
}
