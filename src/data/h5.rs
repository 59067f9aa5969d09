//! ScanObjectNN h5 files (dapt-spec.md §2.1): dataset `data` of shape (n, points, 3)
//! float and `label` of shape (n,) integer, read with the pure-Rust `hdf5-reader`.
//! Coordinates are returned as stored: the official loader does not normalise them.

use std::path::Path;

use hdf5_reader::{Datatype, Hdf5File};

use super::PointCloud;
use super::error::{DataError, Result};

/// Deflate can expand data about 1032-fold; a claimed size beyond that (or beyond this
/// absolute cap) cannot be real.
const MAX_EXPANSION: u64 = 1100;
const MAX_DECODED_BYTES: u64 = 16 << 30;

fn count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

fn read_f32(ds: &hdf5_reader::Dataset, n: usize) -> std::result::Result<Vec<f32>, String> {
    match ds.dtype() {
        Datatype::FloatingPoint { size: 4, .. } => {
            let mut v = vec![0f32; n];
            ds.read_into(&mut v).map_err(|e| e.to_string())?;
            Ok(v)
        }
        Datatype::FloatingPoint { size: 8, .. } => {
            let mut v = vec![0f64; n];
            ds.read_into(&mut v).map_err(|e| e.to_string())?;
            Ok(v.into_iter().map(|x| x as f32).collect())
        }
        other => Err(format!("`data` has element type {other:?}; expected float")),
    }
}

fn read_i64(ds: &hdf5_reader::Dataset, n: usize) -> std::result::Result<Vec<i64>, String> {
    macro_rules! ints {
        ($t:ty) => {{
            let mut v = vec![<$t>::default(); n];
            ds.read_into(&mut v).map_err(|e| e.to_string())?;
            v.into_iter().map(|x| x as i64).collect()
        }};
    }
    let v: Vec<i64> = match ds.dtype() {
        Datatype::FixedPoint { size, signed, .. } => match (size, signed) {
            (1, true) => ints!(i8),
            (1, false) => ints!(u8),
            (2, true) => ints!(i16),
            (2, false) => ints!(u16),
            (4, true) => ints!(i32),
            (4, false) => ints!(u32),
            (8, true) => ints!(i64),
            (8, false) => ints!(u64),
            _ => return Err(format!("`label` has an unusual integer size {size}")),
        },
        Datatype::FloatingPoint { .. } => read_f32(ds, n)
            .map_err(|_| "`label` could not be read as float".to_string())?
            .into_iter()
            .map(|x| if x.is_finite() { x.round() as i64 } else { -1 })
            .collect(),
        other => {
            return Err(format!(
                "`label` has element type {other:?}; expected integer"
            ));
        }
    };
    Ok(v)
}

/// Reads every shape of a ScanObjectNN h5 file, with `class_label` set from `label`.
pub fn read_h5(path: &Path) -> Result<Vec<PointCloud>> {
    let file_len = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    // hdf5-reader is hardened, but a panic inside a third-party decoder must still become
    // an error naming the file rather than take the application down
    let result = std::panic::catch_unwind(|| read_h5_inner(path, file_len));
    match result {
        Ok(r) => r.map_err(|m| DataError::format(path, m)),
        Err(_) => Err(DataError::format(
            path,
            "the HDF5 decoder failed on this file",
        )),
    }
}

fn read_h5_inner(path: &Path, file_len: u64) -> std::result::Result<Vec<PointCloud>, String> {
    let file = Hdf5File::open(path).map_err(|e| format!("not a readable HDF5 file: {e}"))?;
    let data = file
        .dataset("data")
        .map_err(|e| format!("no `data` dataset: {e}"))?;
    let label = file
        .dataset("label")
        .map_err(|e| format!("no `label` dataset: {e}"))?;
    let shape = data.shape().to_vec();
    let [n, p, c] = shape[..] else {
        return Err(format!(
            "`data` has shape {shape:?}; expected (n, points, 3)"
        ));
    };
    if c < 3 {
        return Err(format!(
            "`data` has shape {shape:?}; expected at least 3 columns"
        ));
    }
    let lshape = label.shape().to_vec();
    let ln = match lshape[..] {
        [ln] | [ln, 1] => ln,
        _ => return Err(format!("`label` has shape {lshape:?}; expected (n,)")),
    };
    if ln != n {
        return Err(format!("`data` has {n} shapes but `label` has {ln}"));
    }
    if n == 0 || p == 0 {
        return Err("the file holds no points".into());
    }
    let total = count(&shape).ok_or("`data` shape overflows")?;
    let elem = match data.dtype() {
        Datatype::FloatingPoint { size, .. } => u64::from(*size),
        _ => 8,
    };
    let bytes = total.saturating_mul(elem);
    // uncompressed (contiguous) data must fit in the file itself
    let expansion = if data.chunks().is_some() {
        MAX_EXPANSION
    } else {
        1
    };
    if bytes > MAX_DECODED_BYTES || bytes > file_len.saturating_mul(expansion) {
        return Err(format!(
            "`data` shape {shape:?} is too large for a {file_len}-byte file"
        ));
    }
    let (n, p, c) = (n as usize, p as usize, c as usize);
    let values = read_f32(&data, total as usize)?;
    let labels = read_i64(&label, n)?;
    let mut clouds = Vec::with_capacity(n);
    for (i, &l) in labels.iter().enumerate() {
        let positions: Vec<[f32; 3]> = (0..p)
            .map(|j| {
                let o = (i * p + j) * c;
                [values[o], values[o + 1], values[o + 2]]
            })
            .collect();
        if let Some(j) = positions
            .iter()
            .position(|q| !q.iter().all(|v| v.is_finite()))
        {
            return Err(format!("shape {i}, point {j}: NaN or infinite coordinate"));
        }
        let class = usize::try_from(l).map_err(|_| format!("shape {i}: negative label {l}"))?;
        clouds.push(PointCloud {
            positions,
            class_label: Some(class),
            source: Some(path.to_path_buf()),
            ..PointCloud::default()
        });
    }
    Ok(clouds)
}
