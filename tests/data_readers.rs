//! Every reader on files written here, hostile inputs, and a fuzz-like smoke test.

use std::io::Write;
use std::path::{Path, PathBuf};

use dapt::data::mesh::{parse_obj, parse_off, sample_surface};
use dapt::data::npy::{parse_npy, write_npy};
use dapt::data::ply::parse_ply;
use dapt::data::text::parse_text;
use dapt::data::{PointCloud, ReadOptions, Rng, read_cloud, write_ply};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn opts() -> ReadOptions {
    ReadOptions::default()
}

/// Asserts an error whose message names the file.
fn assert_err_names(path: &Path, opts: &ReadOptions) -> String {
    let err = read_cloud(path, opts).expect_err("hostile input must be rejected");
    let msg = err.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "message `{msg}` does not name {name}");
    msg
}

fn ply_header(format: &str, n: usize, props: &str, extra: &str) -> String {
    format!(
        "ply\nformat {format} 1.0\ncomment test\nelement vertex {n}\n{props}{extra}end_header\n"
    )
}

#[test]
fn ply_ascii_with_normals_colours_labels_and_extras() {
    let dir = tempfile::tempdir().unwrap();
    let props = "property float x\nproperty float y\nproperty float z\nproperty float nx\nproperty float ny\nproperty float nz\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\nproperty float intensity\nproperty list uchar int extra_list\nproperty int label\n";
    let faces = "element face 1\nproperty list uchar int vertex_indices\n";
    let mut s = ply_header("ascii", 3, props, faces);
    s += "0 0 0 0 0 1 255 0 0 255 0.5 2 7 8 3\n";
    s += "1 0 0 0 0 1 0 255 0 255 0.5 0 4\n";
    s += "0 1 0 0 0 1 0 0 51 255 0.5 1 9 5\n";
    s += "3 0 1 2\n";
    let p = write(dir.path(), "a.ply", s.as_bytes());
    let c = read_cloud(&p, &opts()).unwrap();
    assert_eq!(
        c.positions,
        vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    );
    assert_eq!(c.normals.as_ref().unwrap()[1], [0.0, 0.0, 1.0]);
    let col = c.colors.as_ref().unwrap();
    assert_eq!(col[0], [1.0, 0.0, 0.0]);
    assert!((col[2][2] - 0.2).abs() < 1e-6);
    assert_eq!(c.labels, Some(vec![3, 4, 5]));
    assert_eq!(c.source.as_deref(), Some(p.as_path()));

    // the same file with face sampling on gives surface points inside the triangle
    let o = ReadOptions {
        sample_ply_faces: true,
        mesh_samples: 500,
        seed: 3,
    };
    let s = read_cloud(&p, &o).unwrap();
    assert_eq!(s.len(), 500);
    assert!(s.normals.is_some());
    for q in &s.positions {
        assert!(q[0] >= -1e-6 && q[1] >= -1e-6 && q[0] + q[1] <= 1.0 + 1e-5 && q[2].abs() < 1e-6);
    }
}

fn binary_ply(big: bool, double: bool, with_label: bool) -> (Vec<u8>, Vec<[f32; 3]>) {
    let pts = vec![[0.5f32, -1.25, 3.0], [2.0, 4.5, -0.75], [1e-3, 7.0, 8.0]];
    let ty = if double { "double" } else { "float" };
    let mut props =
        format!("property {ty} x\nproperty {ty} y\nproperty {ty} z\nproperty short extra\n");
    if with_label {
        props += "property float scalar_Label\n";
    }
    let fmt = if big {
        "binary_big_endian"
    } else {
        "binary_little_endian"
    };
    let mut b = ply_header(fmt, pts.len(), &props, "").into_bytes();
    for (i, p) in pts.iter().enumerate() {
        for v in p {
            if double {
                let v = *v as f64;
                b.extend(if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                });
            } else {
                b.extend(if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                });
            }
        }
        b.extend(if big {
            7i16.to_be_bytes()
        } else {
            7i16.to_le_bytes()
        });
        if with_label {
            let l = i as f32 + 10.0;
            b.extend(if big {
                l.to_be_bytes()
            } else {
                l.to_le_bytes()
            });
        }
    }
    (b, pts)
}

#[test]
fn ply_binary_both_endians_float_and_double() {
    let dir = tempfile::tempdir().unwrap();
    for big in [false, true] {
        for double in [false, true] {
            for label in [false, true] {
                let (b, pts) = binary_ply(big, double, label);
                let p = write(dir.path(), "b.PLY", &b);
                let c = read_cloud(&p, &opts()).unwrap();
                assert_eq!(c.positions, pts, "big={big} double={double}");
                assert!(c.normals.is_none() && c.colors.is_none());
                assert_eq!(c.labels, label.then(|| vec![10, 11, 12]));
            }
        }
    }
}

#[test]
fn write_ply_round_trips_ascii_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = PointCloud {
        positions: vec![[0.1, 0.2, 0.3], [-1.5, 2.25, 1e-4]],
        normals: Some(vec![[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
        colors: Some(vec![[1.0, 0.0, 0.2], [0.0, 1.0, 0.4]]),
        labels: Some(vec![6, 7]),
        ..PointCloud::default()
    };
    for binary in [false, true] {
        let p = dir.path().join(format!("out_{binary}.ply"));
        write_ply(&p, &cloud, binary).unwrap();
        assert!(!dir.path().join(format!("out_{binary}.ply.tmp")).exists());
        let back = read_cloud(&p, &opts()).unwrap();
        assert_eq!(back.positions, cloud.positions);
        assert_eq!(back.normals, cloud.normals);
        assert_eq!(back.labels, cloud.labels);
        for (a, b) in back
            .colors
            .unwrap()
            .iter()
            .zip(cloud.colors.as_ref().unwrap())
        {
            for k in 0..3 {
                assert!((a[k] - b[k]).abs() <= 0.5 / 255.0 + 1e-6);
            }
        }
    }
    // an invalid cloud is refused and nothing is left behind
    let bad = PointCloud::from_positions(vec![[f32::NAN, 0.0, 0.0]]);
    let p = dir.path().join("bad.ply");
    assert!(write_ply(&p, &bad, true).is_err());
    assert!(!p.exists());
}

#[test]
fn text_separators_and_column_layouts() {
    let dir = tempfile::tempdir().unwrap();
    // ModelNet40 layout: comma separated x,y,z,nx,ny,nz
    let p = write(
        dir.path(),
        "m.txt",
        b"0.1,0.2,0.3,0,0,1\n-0.1,0.5,0.2,0.6,0.8,0\n",
    );
    let c = read_cloud(&p, &opts()).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c.normals.as_ref().unwrap()[1], [0.6, 0.8, 0.0]);
    assert!(c.labels.is_none());
    // ShapeNetPart layout: whitespace, part label last
    let p = write(
        dir.path(),
        "s.txt",
        b"0.1 0.2 0.3 0 0 1 6\n0.4  0.5\t0.6 0 1 0 7\n",
    );
    let c = read_cloud(&p, &opts()).unwrap();
    assert_eq!(c.labels, Some(vec![6, 7]));
    assert_eq!(c.positions[1], [0.4, 0.5, 0.6]);
    // semicolons, a header line, xyz only
    let p = write(dir.path(), "h.csv", b"x;y;z\n1;2;3\n4;5;6\n");
    let c = read_cloud(&p, &opts()).unwrap();
    assert_eq!(c.positions, vec![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    // xyz + label
    let p = write(dir.path(), "l.xyz", b"1 2 3 4\n5 6 7 8\n");
    assert_eq!(read_cloud(&p, &opts()).unwrap().labels, Some(vec![4, 8]));
    // xyz + rgb in 0..255
    let p = write(dir.path(), "c.pts", b"2\n1 2 3 255 0 0\n4 5 6 0 255 0\n");
    let c = read_cloud(&p, &opts()).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c.colors.as_ref().unwrap()[0], [1.0, 0.0, 0.0]);
    assert!(c.normals.is_none());
    // 9 columns: xyz, normals, rgb
    let p = write(
        dir.path(),
        "n.txt",
        b"1 2 3 0 0 1 0.5 0.5 0.5\n4 5 6 1 0 0 0 0 1\n",
    );
    let c = read_cloud(&p, &opts()).unwrap();
    assert_eq!(c.normals.as_ref().unwrap()[1], [1.0, 0.0, 0.0]);
    assert_eq!(c.colors.as_ref().unwrap()[0], [0.5, 0.5, 0.5]);
    // inconsistent rows name the line
    let p = write(dir.path(), "bad.txt", b"1 2 3\n4 5 6\n7 8\n");
    let msg = assert_err_names(&p, &opts());
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn gzip_text_is_read_through_the_gz_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&p).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(b"1,2,3,0,0,1\n4,5,6,0,1,0\n").unwrap();
    enc.finish().unwrap();
    let c = read_cloud(&p, &opts()).unwrap();
    assert_eq!(c.positions[1], [4.0, 5.0, 6.0]);
    assert!(c.normals.is_some());
    // a .gz that is not gzip is an error naming it
    let bad = write(dir.path(), "bad.txt.gz", b"1 2 3\n");
    assert_err_names(&bad, &opts());
}

fn npy_bytes(descr: &str, shape: (usize, usize), fortran: bool, vals: &[f64]) -> Vec<u8> {
    let big = descr.starts_with('>');
    let f8 = descr.ends_with('8');
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({}, {}), }}",
        if fortran { "True" } else { "False" },
        shape.0,
        shape.1
    );
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((dict.len() as u16).to_le_bytes());
    b.extend(dict.as_bytes());
    for &v in vals {
        match (f8, big) {
            (true, true) => b.extend(v.to_be_bytes()),
            (true, false) => b.extend(v.to_le_bytes()),
            (false, true) => b.extend((v as f32).to_be_bytes()),
            (false, false) => b.extend((v as f32).to_le_bytes()),
        }
    }
    b
}

#[test]
fn npy_types_endians_orders_and_writer() {
    let dir = tempfile::tempdir().unwrap();
    let vals = [
        1.0, 2.0, 3.0, 0.0, 0.0, 1.0, 4.0, 4.5, 5.0, 5.5, 0.0, 1.0, 0.0, 9.0,
    ];
    for descr in ["<f4", ">f4", "<f8", ">f8"] {
        let p = write(dir.path(), "a.npy", &npy_bytes(descr, (2, 7), false, &vals));
        let c = read_cloud(&p, &opts()).unwrap();
        assert_eq!(
            c.positions,
            vec![[1.0, 2.0, 3.0], [4.5, 5.0, 5.5]],
            "{descr}"
        );
        assert_eq!(c.normals.as_ref().unwrap()[1], [0.0, 1.0, 0.0]);
        assert_eq!(c.labels, Some(vec![4, 9]));
    }
    // format version 2 has a 4-byte header length
    let v1 = npy_bytes("<f4", (1, 3), false, &[7.0, 8.0, 9.0]);
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend(u32::from(u16::from_le_bytes([v1[8], v1[9]])).to_le_bytes());
    v2.extend(&v1[10..]);
    let p = write(dir.path(), "v2.npy", &v2);
    assert_eq!(
        read_cloud(&p, &opts()).unwrap().positions,
        vec![[7.0, 8.0, 9.0]]
    );
    // Fortran order: column-major storage of the same (2, 3) matrix
    let p = write(
        dir.path(),
        "f.npy",
        &npy_bytes("<f4", (2, 3), true, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]),
    );
    assert_eq!(
        read_cloud(&p, &opts()).unwrap().positions,
        vec![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    );
    let p = dir.path().join("w.npy");
    let pos = vec![[0.25f32, -1.0, 2.0], [3.0, 4.0, 5.0]];
    let nrm = vec![[0.0f32, 0.0, 1.0], [1.0, 0.0, 0.0]];
    write_npy(&p, &pos, Some(&nrm)).unwrap();
    let c = read_cloud(&p, &opts()).unwrap();
    assert_eq!(c.positions, pos);
    assert_eq!(c.normals, Some(nrm));
    // wrong column count and unsupported dtypes are errors
    let p = write(
        dir.path(),
        "c5.npy",
        &npy_bytes("<f4", (1, 5), false, &[0.0; 5]),
    );
    assert_err_names(&p, &opts());
    let mut b = npy_bytes("<f4", (1, 3), false, &[0.0; 3]);
    let at = b.windows(3).position(|w| w == b"<f4").unwrap();
    b[at..at + 3].copy_from_slice(b"<i4");
    let p = write(dir.path(), "i4.npy", &b);
    assert_err_names(&p, &opts());
}

const TWO_TRIANGLES_OFF: &str = "OFF\n# big and small\n6 2 0\n0 0 0\n9.9 0 0\n0 10 0\n20 0 0\n21 0 0\n20 0.1 0\n3 0 1 2\n3 3 4 5\n";

#[test]
fn off_sampling_is_area_weighted_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "t.off", TWO_TRIANGLES_OFF.as_bytes());
    let o = ReadOptions {
        mesh_samples: 20_000,
        ..ReadOptions::default()
    };
    let a = read_cloud(&p, &o).unwrap();
    let b = read_cloud(&p, &o).unwrap();
    assert_eq!(a, b, "same seed, same cloud");
    let c = read_cloud(
        &p,
        &ReadOptions {
            seed: 1,
            ..o.clone()
        },
    )
    .unwrap();
    assert_ne!(a.positions, c.positions, "another seed, another cloud");
    // areas 49.5 and 0.05: expect about 0.1% of the points on the small triangle
    let small = a.positions.iter().filter(|q| q[0] >= 19.9).count();
    let expected = 20_000.0 * 0.05 / 49.55;
    assert!(
        (small as f64) > expected * 0.4 && (small as f64) < expected * 2.0,
        "{small} vs {expected}"
    );
    for q in &a.positions {
        assert_eq!(q[2], 0.0);
    }
    assert!(
        a.normals
            .as_ref()
            .unwrap()
            .iter()
            .all(|n| (n[2].abs() - 1.0).abs() < 1e-6)
    );
    // the counts may follow OFF on the first line (some ModelNet files)
    let p = write(
        dir.path(),
        "u.off",
        b"OFF3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
    );
    assert_eq!(read_cloud(&p, &o).unwrap().len(), 20_000);
}

#[test]
fn obj_faces_with_slashes_negative_indices_and_quads() {
    let dir = tempfile::tempdir().unwrap();
    let src = "# comment\nmtllib x.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\ng quad\nusemtl m\nf 1/1/1 2/1/1 3//1 4\nv 0 0 5\nv 1 0 5\nv 0 1 5\nf -3 -2 -1\n";
    let p = write(dir.path(), "q.OBJ", src.as_bytes());
    let mesh = parse_obj(src.as_bytes(), &p).unwrap();
    assert_eq!(mesh.vertices.len(), 7);
    assert_eq!(mesh.triangles, vec![[0, 1, 2], [0, 2, 3], [4, 5, 6]]);
    let o = ReadOptions {
        mesh_samples: 3000,
        seed: 9,
        ..ReadOptions::default()
    };
    let c = read_cloud(&p, &o).unwrap();
    assert_eq!(c.len(), 3000);
    // quad area 1, upper triangle 0.5: two thirds of the points on z = 0
    let low = c.positions.iter().filter(|q| q[2] == 0.0).count() as f64 / 3000.0;
    assert!((low - 2.0 / 3.0).abs() < 0.05, "{low}");
    // an OBJ of vertices only is a point cloud
    let p = write(dir.path(), "v.obj", b"v 1 2 3\nv 4 5 6\n");
    assert_eq!(
        read_cloud(&p, &o).unwrap().positions,
        vec![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    );
    // out-of-range face index
    let p = write(dir.path(), "oob.obj", b"v 0 0 0\nv 1 0 0\nf 1 2 3\n");
    let msg = assert_err_names(&p, &o);
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn sample_surface_survives_bad_input() {
    let mut rng = Rng::new(1);
    let (p, n) = sample_surface(&[[0.0; 3]; 3], &[[0, 1, 2]], 10, &mut rng);
    assert!(p.is_empty() && n.is_empty(), "zero area gives nothing");
    let (p, _) = sample_surface(
        &[[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        &[[0, 1, 99], [0, 1, 2]],
        10,
        &mut rng,
    );
    assert_eq!(p.len(), 10);
}

#[test]
fn h5_fixture_and_garbage() {
    let fx =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scanobjectnn_tiny/main_split");
    let clouds = dapt::data::h5::read_h5(&fx.join("training_objectdataset.h5")).unwrap();
    assert_eq!(clouds.len(), 4);
    assert!(clouds.iter().all(|c| c.len() == 64));
    assert_eq!(
        clouds
            .iter()
            .map(|c| c.class_label.unwrap())
            .collect::<Vec<_>>(),
        vec![0, 4, 8, 12]
    );
    assert!((clouds[0].positions[0][1] - 0.149_372_77).abs() < 1e-6);
    let test = dapt::data::h5::read_h5(&fx.join("test_objectdataset.h5")).unwrap();
    assert_eq!(test.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "junk.h5",
        b"\x89HDF\r\n\x1a\nthis is not hdf5 at all",
    );
    let msg = dapt::data::h5::read_h5(&p).unwrap_err().to_string();
    assert!(msg.contains("junk.h5"), "{msg}");
    // reading an h5 through read_cloud explains what to do instead
    assert!(assert_err_names(&p, &opts()).contains("ScanObjectNN"));
}

#[test]
fn hostile_inputs_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts();
    let xyz = "property float x\nproperty float y\nproperty float z\n";
    // a header claiming 10^12 vertices
    let p = write(
        dir.path(),
        "huge.ply",
        ply_header("binary_little_endian", 1_000_000_000_000, xyz, "").as_bytes(),
    );
    assert_err_names(&p, &o);
    let p = write(
        dir.path(),
        "huge_ascii.ply",
        (ply_header("ascii", 1_000_000_000_000, xyz, "") + "1 2 3\n").as_bytes(),
    );
    assert_err_names(&p, &o);
    let p = write(
        dir.path(),
        "overflow.ply",
        ply_header("binary_little_endian", usize::MAX, xyz, "").as_bytes(),
    );
    assert_err_names(&p, &o);
    // truncated binary body, caught up front and while reading a list property
    let (mut b, _) = binary_ply(false, false, false);
    b.truncate(b.len() - 3);
    let p = write(dir.path(), "trunc.ply", &b);
    assert!(assert_err_names(&p, &o).contains("truncated"));
    let mut b = ply_header("binary_little_endian", 2, xyz, "")
        .replace("end_header", "property list uchar float extra\nend_header")
        .into_bytes();
    for v in [0f32, 1.0, 2.0] {
        b.extend(v.to_le_bytes());
    }
    b.push(200); // a list of 200 floats that is not there
    b.extend([0u8; 16]);
    let p = write(dir.path(), "trunc_list.ply", &b);
    let msg = assert_err_names(&p, &o);
    assert!(msg.contains("vertex 0"), "{msg}");
    // NaN / Inf coordinates
    let p = write(
        dir.path(),
        "nan.ply",
        (ply_header("ascii", 2, xyz, "") + "1 2 3\nnan 0 0\n").as_bytes(),
    );
    assert!(assert_err_names(&p, &o).contains("vertex 1"));
    let mut b = ply_header("binary_big_endian", 1, xyz, "").into_bytes();
    for v in [0f32, f32::INFINITY, 0.0] {
        b.extend(v.to_be_bytes());
    }
    let p = write(dir.path(), "inf.ply", &b);
    assert_err_names(&p, &o);
    let p = write(dir.path(), "nan.txt", b"1 2 3\n4 inf 6\n");
    assert!(assert_err_names(&p, &o).contains("line 2"));
    let p = write(
        dir.path(),
        "nan.npy",
        &npy_bytes("<f4", (1, 3), false, &[f64::NAN, 0.0, 0.0]),
    );
    assert_err_names(&p, &o);
    let p = write(dir.path(), "nan.off", b"OFF\n1 0 0\nnan 0 0\n");
    assert_err_names(&p, &o);
    let p = write(dir.path(), "nan.obj", b"v 0 inf 0\n");
    assert_err_names(&p, &o);
    // missing x/y/z
    let p = write(
        dir.path(),
        "noz.ply",
        (ply_header("ascii", 1, "property float x\nproperty float y\n", "") + "1 2\n").as_bytes(),
    );
    assert!(assert_err_names(&p, &o).contains("x, y, z"));
    let p = write(dir.path(), "two.txt", b"1 2\n3 4\n");
    assert_err_names(&p, &o);
    // empty clouds
    let p = write(
        dir.path(),
        "empty.ply",
        ply_header("ascii", 0, xyz, "").as_bytes(),
    );
    assert_err_names(&p, &o);
    for name in [
        "empty.txt",
        "empty.npy",
        "empty.off",
        "empty.obj",
        "empty.xyz",
    ] {
        let p = write(dir.path(), name, b"");
        assert_err_names(&p, &o);
    }
    let p = write(
        dir.path(),
        "zero.npy",
        &npy_bytes("<f4", (0, 3), false, &[]),
    );
    assert_err_names(&p, &o);
    let p = write(dir.path(), "comments.txt", b"# nothing\n\n");
    assert_err_names(&p, &o);
    // garbage
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for ext in ["ply", "txt", "npy", "off", "obj", "csv"] {
        let p = write(dir.path(), &format!("garbage.{ext}"), &garbage);
        assert_err_names(&p, &o);
    }
    // npy whose shape exceeds the file
    let mut b = npy_bytes("<f4", (1, 3), false, &[0.0; 3]);
    let at = b.windows(6).position(|w| w == b"(1, 3)").unwrap();
    b.splice(at..at + 6, b"(999999999999, 3)".iter().copied());
    let p = write(dir.path(), "big.npy", &b);
    assert_err_names(&p, &o);
    // OFF counts beyond the file
    let p = write(dir.path(), "big.off", b"OFF\n1000000000000 1 0\n0 0 0\n");
    assert_err_names(&p, &o);
    // unknown and missing extensions, missing file
    let p = write(dir.path(), "cloud.las", b"1 2 3\n");
    assert!(assert_err_names(&p, &o).contains("unknown extension"));
    let p = write(dir.path(), "noext", b"1 2 3\n");
    assert_err_names(&p, &o);
    assert_err_names(&dir.path().join("missing.ply"), &o);
}

/// Feeds random bytes and mutated valid files to every parser: errors are fine, panics
/// are not.
#[test]
fn fuzz_smoke_no_reader_panics() {
    let path = Path::new("fuzz");
    let o = ReadOptions {
        mesh_samples: 64,
        sample_ply_faces: true,
        seed: 0,
    };
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    for big in [false, true] {
        seeds.push(("ply", binary_ply(big, big, true).0));
    }
    seeds.push(("ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0 1 2 3\n1 0 0 4 5 6\n0 1 0 7 8 9\n3 0 1 2\n".to_vec()));
    seeds.push((
        "txt",
        b"0.1,0.2,0.3,0,0,1\n-0.1,0.5,0.2,0.6,0.8,0\n".to_vec(),
    ));
    seeds.push((
        "txt",
        b"x y z nx ny nz l\n0.1 0.2 0.3 0 0 1 6\n0.4 0.5 0.6 0 1 0 7\n".to_vec(),
    ));
    seeds.push((
        "npy",
        npy_bytes(
            "<f4",
            (2, 6),
            false,
            &[1.0, 2.0, 3.0, 0.0, 0.0, 1.0, 4.0, 5.0, 6.0, 1.0, 0.0, 0.0],
        ),
    ));
    seeds.push((
        "npy",
        npy_bytes(">f8", (1, 7), true, &[1.0, 2.0, 3.0, 0.0, 0.0, 1.0, 2.0]),
    ));
    seeds.push(("off", TWO_TRIANGLES_OFF.as_bytes().to_vec()));
    seeds.push((
        "obj",
        b"v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1/1/1 2/1/1 3//1 -1\n".to_vec(),
    ));
    let parse = |kind: &str, b: &[u8]| {
        let _ = match kind {
            "ply" => parse_ply(b, path, &o),
            "txt" => parse_text(b, path),
            "npy" => parse_npy(b, path),
            "off" => parse_off(b, path).and_then(|m| m.to_cloud(path, &o)),
            _ => parse_obj(b, path).and_then(|m| m.to_cloud(path, &o)),
        };
    };
    let mut rng = Rng::new(12345);
    let start = std::time::Instant::now();
    for _ in 0..2000 {
        let len = rng.below(300);
        let junk: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        for kind in ["ply", "txt", "npy", "off", "obj"] {
            parse(kind, &junk);
        }
    }
    for (kind, seed) in &seeds {
        for _ in 0..2000 {
            let mut b = seed.clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 if !b.is_empty() => {
                        let i = rng.below(b.len());
                        b[i] = rng.below(256) as u8;
                    }
                    1 if !b.is_empty() => {
                        let i = rng.below(b.len());
                        b.truncate(i);
                    }
                    2 => {
                        let i = rng.below(b.len() + 1);
                        let digits = b"0123456789-.e ,\n";
                        b.insert(i, digits[rng.below(digits.len())]);
                    }
                    _ if !b.is_empty() => {
                        let i = rng.below(b.len());
                        b.remove(i);
                    }
                    _ => {}
                }
            }
            parse(kind, &b);
        }
    }
    // the h5 reader goes through a file; a few mutations of the fixture
    let fx = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scanobjectnn_tiny/main_split/test_objectdataset.h5");
    let orig = std::fs::read(fx).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for k in 0..200 {
        let mut b = orig.clone();
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(b.len());
            b[i] = rng.below(256) as u8;
        }
        if k % 5 == 0 {
            b.truncate(rng.below(b.len()));
        }
        let p = write(dir.path(), "m.h5", &b);
        let _ = dapt::data::h5::read_h5(&p);
    }
    assert!(
        start.elapsed().as_secs() < 30,
        "fuzz smoke took {:?}",
        start.elapsed()
    );
}

/// Vertex properties of the scalar-field files below: a CloudCompare-style float field, a
/// double, an unsigned byte, a float label, an alpha channel (part of the colour) and a list.
const SCALAR_PROPS: &str = "property float x\nproperty float y\nproperty float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\nproperty float scalar_Intensity\nproperty double scalar_curvature\nproperty uchar quality\nproperty float scalar_Label\nproperty list uchar int extra_list\n";

/// (intensity, curvature, quality, label) of each of the three points; every value is
/// exactly representable in f32, so reading must give it back bit for bit.
const SCALAR_ROWS: [(f32, f64, u8, f32); 3] = [
    (0.125, -2.5e-3, 0, 2.0),
    (1234.5, 0.75, 200, 0.0),
    (-7.0, 1.0e-6, 255, 5.0),
];

fn scalar_ply(encoding: &str) -> Vec<u8> {
    let mut b = ply_header(encoding, 3, SCALAR_PROPS, "").into_bytes();
    let big = encoding == "binary_big_endian";
    for (i, &(int, curv, q, lab)) in SCALAR_ROWS.iter().enumerate() {
        let xyz = [i as f32, 0.5, -1.0];
        if encoding == "ascii" {
            let line = format!(
                "{} {} {} 10 20 30 255 {int} {curv:e} {q} {lab} 2 7 8\n",
                xyz[0], xyz[1], xyz[2]
            );
            b.extend(line.as_bytes());
            continue;
        }
        let f32b = |v: f32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        for v in xyz {
            b.extend(f32b(v));
        }
        b.extend([10, 20, 30, 255]);
        b.extend(f32b(int));
        b.extend(if big {
            curv.to_be_bytes()
        } else {
            curv.to_le_bytes()
        });
        b.push(q);
        b.extend(f32b(lab));
        // the list: 2 items of int
        b.push(2);
        for v in [7i32, 8] {
            b.extend(if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            });
        }
    }
    b
}

#[test]
fn ply_float_and_integer_scalar_fields_are_kept_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for enc in ["ascii", "binary_little_endian", "binary_big_endian"] {
        let p = write(dir.path(), &format!("sf_{enc}.ply"), &scalar_ply(enc));
        let c = read_cloud(&p, &opts()).unwrap();
        assert_eq!(c.len(), 3, "{enc}");
        assert_eq!(c.positions[2], [2.0, 0.5, -1.0], "{enc}");
        assert!(c.colors.is_some(), "{enc}");
        // the label property still feeds the labels, not a scalar field
        assert_eq!(c.labels, Some(vec![2, 0, 5]), "{enc}");
        // the colour (with its alpha), the label and the list are not scalar fields;
        // `scalar_` is dropped from the names, file order is kept
        let names: Vec<&str> = c.scalars.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Intensity", "curvature", "quality"], "{enc}");
        let col = |name: &str| c.scalar(name).unwrap().values.clone();
        let want_int: Vec<f32> = SCALAR_ROWS.iter().map(|r| r.0).collect();
        let want_curv: Vec<f32> = SCALAR_ROWS.iter().map(|r| r.1 as f32).collect();
        let want_q: Vec<f32> = SCALAR_ROWS.iter().map(|r| r.2 as f32).collect();
        assert_eq!(col("Intensity"), want_int, "{enc}");
        assert_eq!(col("curvature"), want_curv, "{enc}");
        assert_eq!(col("quality"), want_q, "{enc}");
        assert!(c.validate().is_ok());
    }
}

#[test]
fn ply_label_with_fractions_becomes_a_scalar_field() {
    let dir = tempfile::tempdir().unwrap();
    let props =
        "property float x\nproperty float y\nproperty float z\nproperty float scalar_Label\n";
    let s = ply_header("ascii", 2, props, "") + "0 0 0 0.25\n1 0 0 3\n";
    let p = write(dir.path(), "frac.ply", s.as_bytes());
    let c = read_cloud(&p, &opts()).unwrap();
    assert!(c.labels.is_none(), "0.25 is not a label");
    assert_eq!(c.scalar("Label").unwrap().values, vec![0.25, 3.0]);
}

#[test]
fn ply_nan_or_inf_scalar_is_rejected_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let props =
        "property float x\nproperty float y\nproperty float z\nproperty float scalar_Intensity\n";
    for (name, bad) in [("nan_sf.ply", "nan"), ("inf_sf.ply", "-inf")] {
        let s = ply_header("ascii", 2, props, "") + &format!("0 0 0 1\n1 0 0 {bad}\n");
        let p = write(dir.path(), name, s.as_bytes());
        let msg = assert_err_names(&p, &opts());
        assert!(msg.contains("scalar_Intensity"), "{msg}");
    }
    // binary: a NaN bit pattern in a float field, and a double too big for f32
    let mut b = ply_header("binary_little_endian", 1, props, "").into_bytes();
    for v in [0.0f32, 0.0, 0.0, f32::NAN] {
        b.extend(v.to_le_bytes());
    }
    let p = write(dir.path(), "nan_bin.ply", &b);
    assert_err_names(&p, &opts());
    let props_d = "property float x\nproperty float y\nproperty float z\nproperty double big\n";
    let mut b = ply_header("binary_little_endian", 1, props_d, "").into_bytes();
    for v in [0.0f32, 0.0, 0.0] {
        b.extend(v.to_le_bytes());
    }
    b.extend(1e300f64.to_le_bytes());
    let p = write(dir.path(), "huge_sf.ply", &b);
    let msg = assert_err_names(&p, &opts());
    assert!(msg.contains("big"), "{msg}");
    // a NaN label is still an error, not a silent scalar field
    let props_l = "property float x\nproperty float y\nproperty float z\nproperty float label\n";
    let s = ply_header("ascii", 1, props_l, "") + "0 0 0 nan\n";
    let p = write(dir.path(), "nan_label.ply", s.as_bytes());
    assert_err_names(&p, &opts());
}

#[test]
fn ply_scalar_field_counts_are_checked_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // many scalar properties and a huge vertex count in a tiny file: refused, no allocation
    let mut props = String::from("property float x\nproperty float y\nproperty float z\n");
    for k in 0..64 {
        props += &format!("property double scalar_f{k}\n");
    }
    let mut b = ply_header("binary_little_endian", 1 << 40, &props, "").into_bytes();
    b.extend([0u8; 64]);
    let p = write(dir.path(), "many_sf.ply", &b);
    let msg = assert_err_names(&p, &opts());
    assert!(msg.contains("bytes"), "{msg}");
}

#[test]
fn write_ply_round_trips_scalar_fields() {
    use dapt::data::cloud::ScalarField;
    let dir = tempfile::tempdir().unwrap();
    let cloud = PointCloud {
        positions: vec![[0.1, 0.2, 0.3], [-1.5, 2.25, 1e-4], [3.0, 0.0, -2.0]],
        labels: Some(vec![1, 0, 4]),
        scalars: vec![
            ScalarField::new("Intensity", vec![0.1, 1234.567, -7.25e-8]),
            ScalarField::new("curvature", vec![f32::MAX, f32::MIN_POSITIVE, 0.0]),
            ScalarField::new("label", vec![0.5, 1.5, 2.5]),
        ],
        ..PointCloud::default()
    };
    for binary in [false, true] {
        let p = dir.path().join(format!("sf_out_{binary}.ply"));
        write_ply(&p, &cloud, binary).unwrap();
        let text = std::fs::read(&p).unwrap();
        let header = String::from_utf8_lossy(&text[..text.len().min(400)]).to_string();
        assert!(
            header.contains("property float scalar_Intensity\n"),
            "{header}"
        );
        let back = read_cloud(&p, &opts()).unwrap();
        assert_eq!(back.positions, cloud.positions);
        assert_eq!(back.labels, cloud.labels, "binary={binary}");
        assert_eq!(back.scalars, cloud.scalars, "binary={binary}");
    }
    // a name that would break the header is refused, nothing is left behind
    let mut bad = cloud.clone();
    bad.scalars[0].name = "two words".into();
    let p = dir.path().join("bad_name.ply");
    let e = write_ply(&p, &bad, false).unwrap_err().to_string();
    assert!(e.contains("two words") && e.contains("bad_name.ply"), "{e}");
    assert!(!p.exists());
    // a scalar field of the wrong length is an invalid cloud
    let mut short = cloud.clone();
    short.scalars[1].values.pop();
    assert!(write_ply(&dir.path().join("short.ply"), &short, true).is_err());
}
