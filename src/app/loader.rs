//! Opening point-cloud files from the app.
//!
//! TEMPORARY: a small private PLY (ascii) / TXT reader until `crate::data::read_cloud` lands.
//! When it does, replace the body of [`load_cloud`] with
//! `crate::data::read_cloud(path, &ReadOptions::default()).map_err(|e| e.to_string())`
//! and delete everything below it.

use std::path::Path;

use crate::data::PointCloud;

/// Extensions the file browser and drag-and-drop accept.
pub const SUPPORTED_EXTENSIONS: [&str; 5] = ["ply", "txt", "npy", "off", "obj"];

pub fn is_supported(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SUPPORTED_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads a cloud; the error is a one-line message without the path (the caller names the file).
pub fn load_cloud(path: &Path) -> Result<PointCloud, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let text = || std::fs::read_to_string(path).map_err(|e| e.to_string());
    let mut cloud = match ext.as_str() {
        "ply" => parse_ply_ascii(&text()?)?,
        "txt" | "xyz" | "pts" | "csv" => parse_txt(&text()?)?,
        "npy" | "off" | "obj" => {
            return Err(format!(
                ".{ext} files open once the data readers land (only PLY ascii and TXT for now)"
            ));
        }
        _ => return Err(format!("unsupported file type '.{ext}'")),
    };
    cloud.validate()?;
    cloud.source = Some(path.to_path_buf());
    Ok(cloud)
}

fn parse_ply_ascii(text: &str) -> Result<PointCloud, String> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("ply") {
        return Err("not a PLY file (missing 'ply' magic)".into());
    }
    let mut vertex_count = None;
    let mut props: Vec<String> = Vec::new();
    let mut in_vertex = false;
    let mut skip_before = 0usize; // rows of elements declared before `vertex`
    let mut seen_vertex = false;
    loop {
        let line = lines.next().ok_or("PLY header has no end_header")?.trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["format", fmt, ..] if *fmt != "ascii" => {
                return Err(format!("PLY format '{fmt}' not supported yet (ascii only)"));
            }
            ["element", name, count] => {
                let count: usize = count
                    .parse()
                    .map_err(|_| format!("bad count in '{line}'"))?;
                in_vertex = *name == "vertex";
                if in_vertex {
                    vertex_count = Some(count);
                    seen_vertex = true;
                } else if !seen_vertex {
                    skip_before += count;
                }
            }
            ["property", "list", ..] if in_vertex => {
                return Err("list properties on vertices are not supported".into());
            }
            ["property", _ty, name] if in_vertex => props.push(name.to_string()),
            ["end_header"] => break,
            _ => {}
        }
    }
    let n = vertex_count.ok_or("PLY has no vertex element")?;
    let col = |names: &[&str]| props.iter().position(|p| names.contains(&p.as_str()));
    let (x, y, z) = match (col(&["x"]), col(&["y"]), col(&["z"])) {
        (Some(x), Some(y), Some(z)) => (x, y, z),
        _ => return Err("PLY vertices need x, y and z".into()),
    };
    let rgb = match (
        col(&["red", "r"]),
        col(&["green", "g"]),
        col(&["blue", "b"]),
    ) {
        (Some(r), Some(g), Some(b)) => Some([r, g, b]),
        _ => None,
    };
    let label = col(&["label", "class", "scalar_label", "part", "segment"]);
    // more than 2^28 vertices would not fit a text file we read into memory anyway
    let mut cloud = PointCloud::from_positions(Vec::with_capacity(n.min(1 << 28)));
    let mut colors = Vec::new();
    let mut labels = Vec::new();
    let mut max_color = 0.0f32;
    for (row, line) in lines.skip(skip_before).take(n).enumerate() {
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|w| w.parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("vertex {row}: not a number in '{line}'"))?;
        if v.len() < props.len() {
            return Err(format!(
                "vertex {row}: {} values for {} properties",
                v.len(),
                props.len()
            ));
        }
        cloud
            .positions
            .push([v[x] as f32, v[y] as f32, v[z] as f32]);
        if let Some([r, g, b]) = rgb {
            let c = [v[r] as f32, v[g] as f32, v[b] as f32];
            max_color = c.iter().fold(max_color, |m, &a| m.max(a));
            colors.push(c);
        }
        if let Some(l) = label {
            labels.push(v[l] as i64);
        }
    }
    if cloud.positions.len() != n {
        return Err(format!(
            "header declares {n} vertices, file has {}",
            cloud.positions.len()
        ));
    }
    if rgb.is_some() {
        // uchar colours are 0..255, float colours 0..1
        let s = if max_color > 1.0 { 1.0 / 255.0 } else { 1.0 };
        cloud.colors = Some(colors.into_iter().map(|c| c.map(|a| a * s)).collect());
    }
    if label.is_some() {
        cloud.labels = Some(labels);
    }
    Ok(cloud)
}

/// Whitespace, comma or semicolon separated; columns `x y z [nx ny nz] [label]`.
fn parse_txt(text: &str) -> Result<PointCloud, String> {
    let mut cloud = PointCloud::default();
    let mut normals = Vec::new();
    let mut labels = Vec::new();
    let mut width = None;
    for (row, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: Vec<f64> = line
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| format!("line {}: not a number in '{line}'", row + 1))?;
        let w = *width.get_or_insert(v.len());
        if v.len() != w || w < 3 {
            return Err(format!(
                "line {}: {} columns, expected {w} (at least 3)",
                row + 1,
                v.len()
            ));
        }
        cloud
            .positions
            .push([v[0] as f32, v[1] as f32, v[2] as f32]);
        if w >= 6 {
            normals.push([v[3] as f32, v[4] as f32, v[5] as f32]);
        }
        if w == 4 || w == 7 {
            labels.push(v[w - 1] as i64);
        }
    }
    if !normals.is_empty() {
        cloud.normals = Some(normals);
    }
    if !labels.is_empty() {
        cloud.labels = Some(labels);
    }
    Ok(cloud)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ascii_ply_with_colours_and_labels() {
        let text = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n\
                    property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n\
                    property int label\nend_header\n0 0 0 255 0 0 3\n1 2 3 0 255 0 1\n";
        let c = parse_ply_ascii(text).unwrap();
        assert_eq!(c.positions, vec![[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]);
        assert_eq!(c.colors.unwrap()[1], [0.0, 1.0, 0.0]);
        assert_eq!(c.labels.unwrap(), vec![3, 1]);
    }

    #[test]
    fn rejects_bad_files_with_messages() {
        assert!(parse_ply_ascii("nope").is_err());
        let short = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n\
                     property float z\nend_header\n0 0 0\n";
        assert!(parse_ply_ascii(short).unwrap_err().contains("3 vertices"));
        let bin = "ply\nformat binary_little_endian 1.0\nend_header\n";
        assert!(parse_ply_ascii(bin).unwrap_err().contains("ascii only"));
        assert!(parse_txt("1 2\n").is_err());
        assert!(parse_txt("1 2 x\n").is_err());
    }

    #[test]
    fn reads_txt_variants() {
        let c = parse_txt("0,0,0,0,0,1,4\n1,1,1,0,1,0,2\n").unwrap();
        assert_eq!(c.labels.unwrap(), vec![4, 2]);
        assert!(c.normals.is_some());
        let c = parse_txt("0 0 0\n1 1 1\n").unwrap();
        assert_eq!(c.len(), 2);
    }
}
