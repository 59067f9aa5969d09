//! NumPy `.npy` arrays (format versions 1, 2, 3) of shape (N, 3), (N, 6) or (N, 7):
//! xyz, xyz + normals, xyz + normals + label. ShapeNet-55 stores one (8192, 3) array per
//! shape (dapt-spec.md §2.1). Element types `<f4`, `>f4`, `<f8`, `>f8`; C and Fortran order.
//! The header dictionary is parsed here so the shape can be checked against the file size
//! before any allocation.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::PointCloud;
use super::error::{DataError, Result};
use super::io::finish;

const MAGIC: &[u8] = b"\x93NUMPY";

struct Header {
    big_endian: bool,
    f64: bool,
    fortran: bool,
    shape: Vec<u64>,
}

/// Value of `key` in the header dictionary, as its raw source text.
fn dict_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let k1 = format!("'{key}'");
    let k2 = format!("\"{key}\"");
    let at = dict
        .find(&k1)
        .map(|i| i + k1.len())
        .or_else(|| dict.find(&k2).map(|i| i + k2.len()))?;
    let rest = dict[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
        rest[1..].find(q)? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

fn parse_header(bytes: &[u8], path: &Path) -> Result<(Header, usize)> {
    let err = |m: &str| DataError::format(path, m.to_string());
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err(err("not an .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(DataError::unsupported(
                path,
                format!("npy format version {v} is not supported"),
            ));
        }
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| err("truncated header"))?;
    let dict = std::str::from_utf8(&bytes[start..end]).map_err(|_| err("header is not text"))?;
    let descr = dict_value(dict, "descr")
        .ok_or_else(|| err("header has no descr"))?
        .trim_matches(|c| c == '\'' || c == '"');
    let (big_endian, f64) = match descr {
        "<f4" => (false, false),
        ">f4" => (true, false),
        "<f8" => (false, true),
        ">f8" => (true, true),
        other => {
            return Err(DataError::unsupported(
                path,
                format!("element type {other} is not supported (use f4 or f8)"),
            ));
        }
    };
    let fortran = match dict_value(dict, "fortran_order") {
        Some("True") => true,
        Some("False") | None => false,
        Some(v) => return Err(err(&format!("bad fortran_order {v}"))),
    };
    let shape_src = dict_value(dict, "shape").ok_or_else(|| err("header has no shape"))?;
    let inner = shape_src
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| err("shape is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| err("shape has a non-integer dimension"))?;
    Ok((
        Header {
            big_endian,
            f64,
            fortran,
            shape,
        },
        end,
    ))
}

/// Parses an `.npy` file held in memory. `path` is only used in messages.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<PointCloud> {
    let (h, data_at) = parse_header(bytes, path)?;
    let err = |m: String| DataError::format(path, m);
    let [n, c] = h.shape[..] else {
        return Err(err(format!(
            "shape {:?} is not (N, 3), (N, 6) or (N, 7)",
            h.shape
        )));
    };
    if !matches!(c, 3 | 6 | 7) {
        return Err(err(format!(
            "shape ({n}, {c}): expected 3 (xyz), 6 (xyz + normals) or 7 (+ label) columns"
        )));
    }
    if n == 0 {
        return Err(err("the array has no points".into()));
    }
    let elem = if h.f64 { 8u64 } else { 4 };
    let need = n
        .checked_mul(c)
        .and_then(|v| v.checked_mul(elem))
        .ok_or_else(|| err(format!("shape ({n}, {c}) is absurd")))?;
    let have = (bytes.len() - data_at) as u64;
    if need > have {
        return Err(err(format!(
            "shape ({n}, {c}) needs {need} bytes of data but the file has {have} (truncated?)"
        )));
    }
    let (n, c) = (n as usize, c as usize);
    let data = &bytes[data_at..];
    let get = |r: usize, col: usize| -> f64 {
        let idx = if h.fortran { col * n + r } else { r * c + col };
        let e = elem as usize;
        let s = &data[idx * e..idx * e + e];
        let mut b = [0u8; 8];
        b[..e].copy_from_slice(s);
        if h.big_endian {
            b[..e].reverse();
        }
        if h.f64 {
            f64::from_le_bytes(b)
        } else {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
        }
    };
    let triple = |r: usize, c0: usize| {
        [
            get(r, c0) as f32,
            get(r, c0 + 1) as f32,
            get(r, c0 + 2) as f32,
        ]
    };
    let mut cloud = PointCloud::from_positions((0..n).map(|r| triple(r, 0)).collect());
    if c >= 6 {
        let normals: Vec<[f32; 3]> = (0..n).map(|r| triple(r, 3)).collect();
        if let Some(i) = normals
            .iter()
            .position(|v| !v.iter().all(|x| x.is_finite()))
        {
            return Err(err(format!("row {i}: NaN or infinite normal")));
        }
        cloud.normals = Some(normals);
    }
    if c == 7 {
        let mut labels = Vec::with_capacity(n);
        for r in 0..n {
            let v = get(r, 6);
            if !(v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15) {
                return Err(err(format!("row {r}: label {v} is not an integer")));
            }
            labels.push(v as i64);
        }
        cloud.labels = Some(labels);
    }
    finish(cloud, path)
}

/// Writes positions (and normals, giving (N, 6)) as a little-endian f32 `.npy` v1.0 file.
pub fn write_npy(path: &Path, positions: &[[f32; 3]], normals: Option<&[[f32; 3]]>) -> Result<()> {
    if let Some(nr) = normals
        && nr.len() != positions.len()
    {
        return Err(DataError::format(
            path,
            format!("{} normals for {} points", nr.len(), positions.len()),
        ));
    }
    let cols = if normals.is_some() { 6 } else { 3 };
    let mut dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {cols}), }}",
        positions.len()
    );
    // numpy pads the header with spaces so the data starts on a 64-byte boundary
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let io = |e| DataError::io(path, e);
    let mut w = BufWriter::new(File::create(path).map_err(io)?);
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&[1, 0]).map_err(io)?;
    w.write_all(&(dict.len() as u16).to_le_bytes())
        .map_err(io)?;
    w.write_all(dict.as_bytes()).map_err(io)?;
    for (i, p) in positions.iter().enumerate() {
        for v in p {
            w.write_all(&v.to_le_bytes()).map_err(io)?;
        }
        if let Some(nr) = normals {
            for v in &nr[i] {
                w.write_all(&v.to_le_bytes()).map_err(io)?;
            }
        }
    }
    w.flush().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_dictionary_values() {
        let d = "{'descr': '>f8', 'fortran_order': False, 'shape': (8192, 3), }";
        assert_eq!(dict_value(d, "descr"), Some("'>f8'"));
        assert_eq!(dict_value(d, "fortran_order"), Some("False"));
        assert_eq!(dict_value(d, "shape"), Some("(8192, 3)"));
        assert_eq!(dict_value(d, "missing"), None);
        assert_eq!(dict_value("{'shape': (5,", "shape"), None);
    }
}
