//! Delimited text point files: `.txt`, `.xyz`, `.csv`, `.pts`.
//!
//! The separator (comma, semicolon or whitespace) is detected once per file from the first
//! data line. A first line that does not parse as numbers is a header and is skipped; so is
//! a lone point count on the first line (the `.pts` convention). Lines starting with `#` or
//! `//` are comments. Columns, by count:
//!
//! | columns | meaning |
//! |---|---|
//! | 3 | x y z |
//! | 4 | x y z label (if every 4th value is an integer; otherwise it is ignored, e.g. intensity) |
//! | 6 | x y z nx ny nz (ModelNet40 `normal_resampled`) — or x y z r g b when the last three do not look like normals (within ±1 with a negative component, or mostly unit length) but fit 0..1 or 0..255 |
//! | 7 | the 6-column layout plus a label (ShapeNetPart `x y z nx ny nz part`) |
//! | 9 | x y z, then normals and rgb in either order (the normal-looking triple is the normal) |
//! | 10 | the 9-column layout plus a label |
//! | other ≥ 3 | x y z; the remaining columns are ignored |
//!
//! Every row must have the same number of columns; a row that does not is an error naming
//! its line.

use std::path::Path;

use super::PointCloud;
use super::error::{DataError, Result};
use super::io::finish;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sep {
    Comma,
    Semicolon,
    Whitespace,
}

fn split(line: &str, sep: Sep) -> Vec<&str> {
    match sep {
        Sep::Whitespace => line.split_whitespace().collect(),
        Sep::Comma => trimmed(line.split(',')),
        Sep::Semicolon => trimmed(line.split(';')),
    }
}

fn trimmed<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = it.map(str::trim).collect();
    // tolerate a trailing separator
    while v.last().is_some_and(|s| s.is_empty()) {
        v.pop();
    }
    v
}

fn is_comment(line: &str) -> bool {
    line.starts_with('#') || line.starts_with("//")
}

/// Parses a delimited text file held in memory. `path` is only used in messages.
pub fn parse_text(bytes: &[u8], path: &Path) -> Result<PointCloud> {
    let err = |m: String| DataError::format(path, m);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        err(format!(
            "not a text point file (invalid UTF-8 at byte {})",
            e.valid_up_to()
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !is_comment(l))
        .peekable();
    let Some(&(_, first)) = lines.peek() else {
        return Err(err("the file has no points".into()));
    };
    let sep_of = |l: &str| {
        if l.contains(',') {
            Sep::Comma
        } else if l.contains(';') {
            Sep::Semicolon
        } else {
            Sep::Whitespace
        }
    };
    let numeric = |toks: &[&str]| toks.iter().all(|t| t.parse::<f64>().is_ok());
    let first_toks = split(first, sep_of(first));
    if !numeric(&first_toks) || first_toks.len() == 1 {
        // a header row, or a `.pts` point count
        lines.next();
    }
    let Some(&(_, data_line)) = lines.peek() else {
        return Err(err("the file has no points".into()));
    };
    let sep = sep_of(data_line);
    let cols = split(data_line, sep).len();
    if cols < 3 {
        return Err(err(format!(
            "{cols} column(s) per row; at least x, y, z are needed"
        )));
    }
    let mut values: Vec<f64> = Vec::new();
    for (no, line) in lines {
        let toks = split(line, sep);
        if toks.len() != cols {
            return Err(err(format!(
                "line {no}: {} columns, expected {cols} like the first data row",
                toks.len()
            )));
        }
        for t in toks {
            let v: f64 = t
                .parse()
                .map_err(|_| err(format!("line {no}: `{}` is not a number", short(t))))?;
            if !v.is_finite() {
                return Err(err(format!("line {no}: NaN or infinite value")));
            }
            values.push(v);
        }
    }
    let rows = values.len() / cols;
    let row = |r: usize| &values[r * cols..(r + 1) * cols];
    let triple = |c: usize| -> Vec<[f32; 3]> {
        (0..rows)
            .map(|r| {
                let v = row(r);
                [v[c] as f32, v[c + 1] as f32, v[c + 2] as f32]
            })
            .collect()
    };
    // Averaged normals (the grid-sampled ShapeNetPart sample) are shorter than 1, so a
    // triple counts as normals when it stays within [-1, 1] and either has a negative
    // component (colours never do) or is mostly of unit length.
    let is_normal = |c: usize| {
        let mut negative = false;
        let mut unit = 0usize;
        for r in 0..rows {
            let v = &row(r)[c..c + 3];
            if v.iter().any(|x| x.abs() > 1.01) {
                return false;
            }
            negative |= v.iter().any(|x| *x < 0.0);
            let n2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
            unit += usize::from((0.81..=1.21).contains(&n2));
        }
        negative || unit * 10 >= rows * 9
    };
    let colors_at = |c: usize| -> Option<Vec<[f32; 3]>> {
        let vals = (0..rows).flat_map(|r| row(r)[c..c + 3].to_vec());
        let mut max = 0.0f64;
        for v in vals {
            if !(0.0..=255.0).contains(&v) {
                return None;
            }
            max = max.max(v);
        }
        let scale = if max > 1.0 { 1.0 / 255.0 } else { 1.0 };
        Some(
            triple(c)
                .into_iter()
                .map(|t| t.map(|v| v * scale as f32))
                .collect(),
        )
    };
    let labels_at = |c: usize| -> Option<Vec<i64>> {
        (0..rows)
            .map(|r| {
                let v = row(r)[c];
                (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64)
            })
            .collect()
    };
    let mut cloud = PointCloud::from_positions(triple(0));
    let normals_or_colors = |c: usize, cloud: &mut PointCloud| -> Result<()> {
        if is_normal(c) {
            cloud.normals = Some(triple(c));
        } else if let Some(col) = colors_at(c) {
            cloud.colors = Some(col);
        } else {
            return Err(err(format!(
                "columns {}-{} are neither unit normals nor colours",
                c + 1,
                c + 3
            )));
        }
        Ok(())
    };
    match cols {
        4 => cloud.labels = labels_at(3),
        6 | 7 => {
            normals_or_colors(3, &mut cloud)?;
            if cols == 7 {
                cloud.labels = Some(
                    labels_at(6).ok_or_else(|| err("column 7 (label) has a non-integer".into()))?,
                );
            }
        }
        9 | 10 => {
            let (n, c) = if is_normal(3) && colors_at(6).is_some() {
                (3, 6)
            } else if is_normal(6) && colors_at(3).is_some() {
                (6, 3)
            } else {
                return Err(err(
                    "columns 4-9 are not normals and colours (in either order)".into(),
                ));
            };
            cloud.normals = Some(triple(n));
            cloud.colors = Some(colors_at(c).ok_or_else(|| {
                err(format!(
                    "columns {}-{} are not colours in 0..1 or 0..255",
                    c + 1,
                    c + 3
                ))
            })?);
            if cols == 10 {
                cloud.labels = Some(
                    labels_at(9)
                        .ok_or_else(|| err("column 10 (label) has a non-integer".into()))?,
                );
            }
        }
        _ => {}
    }
    finish(cloud, path)
}

fn short(t: &str) -> String {
    t.chars().take(32).collect()
}
