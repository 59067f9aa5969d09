//! Triangle meshes (OFF, OBJ) and area-weighted surface sampling, which turns a mesh into
//! a point cloud the way ModelNet40's `normal_resampled` clouds were made from CAD meshes.

use std::path::Path;

use super::error::{DataError, Result};
use super::io::{ReadOptions, finish};
use super::{PointCloud, Rng};

/// Vertices and fan-triangulated faces (indices already checked to be in range).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mesh {
    pub vertices: Vec<[f32; 3]>,
    pub triangles: Vec<[usize; 3]>,
}

impl Mesh {
    /// `opts.mesh_samples` surface points with face normals, or the bare vertices when the
    /// mesh has no faces (an OBJ of `v` lines is a point cloud).
    pub fn to_cloud(&self, path: &Path, opts: &ReadOptions) -> Result<PointCloud> {
        if self.triangles.is_empty() {
            return finish(PointCloud::from_positions(self.vertices.clone()), path);
        }
        if opts.mesh_samples == 0 {
            return Err(DataError::format(path, "mesh_samples is 0"));
        }
        let mut rng = Rng::new(opts.seed);
        let (positions, normals) =
            sample_surface(&self.vertices, &self.triangles, opts.mesh_samples, &mut rng);
        if positions.is_empty() {
            return Err(DataError::format(path, "the mesh has no surface area"));
        }
        finish(
            PointCloud {
                positions,
                normals: Some(normals),
                ..PointCloud::default()
            },
            path,
        )
    }
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f64; 3] {
    [
        a[0] as f64 - b[0] as f64,
        a[1] as f64 - b[1] as f64,
        a[2] as f64 - b[2] as f64,
    ]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// `n` points on the surface, each triangle chosen with probability proportional to its
/// area and the point uniform inside it; returns positions and the unit face normals.
/// Deterministic for a given `rng` state. Triangles with an out-of-range index count as
/// zero area; if the total area is zero (or `n` is 0) both vectors are empty.
pub fn sample_surface(
    vertices: &[[f32; 3]],
    triangles: &[[usize; 3]],
    n: usize,
    rng: &mut Rng,
) -> (Vec<[f32; 3]>, Vec<[f32; 3]>) {
    let mut cumulative = Vec::with_capacity(triangles.len());
    let mut total = 0.0f64;
    for t in triangles {
        let area = match (vertices.get(t[0]), vertices.get(t[1]), vertices.get(t[2])) {
            (Some(&a), Some(&b), Some(&c)) => {
                let x = cross(sub(b, a), sub(c, a));
                0.5 * (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt()
            }
            _ => 0.0,
        };
        if area.is_finite() {
            total += area;
        }
        cumulative.push(total);
    }
    if n == 0 || total <= 0.0 || !total.is_finite() {
        return (Vec::new(), Vec::new());
    }
    let mut positions = Vec::with_capacity(n);
    let mut normals = Vec::with_capacity(n);
    for _ in 0..n {
        let target = rng.uniform_f64() * total;
        // first triangle whose cumulative area exceeds the target: zero-area ones never win
        let k = cumulative
            .partition_point(|&c| c <= target)
            .min(triangles.len() - 1);
        let t = triangles[k];
        let (a, b, c) = (vertices[t[0]], vertices[t[1]], vertices[t[2]]);
        let r1 = rng.uniform_f64().sqrt();
        let r2 = rng.uniform_f64();
        let (wa, wb, wc) = (1.0 - r1, r1 * (1.0 - r2), r1 * r2);
        let p: [f32; 3] = std::array::from_fn(|i| {
            (wa * a[i] as f64 + wb * b[i] as f64 + wc * c[i] as f64) as f32
        });
        let x = cross(sub(b, a), sub(c, a));
        let len = (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt().max(1e-30);
        positions.push(p);
        normals.push(x.map(|v| (v / len) as f32));
    }
    (positions, normals)
}

fn text<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        DataError::format(
            path,
            format!(
                "not a text mesh (invalid UTF-8 at byte {})",
                e.valid_up_to()
            ),
        )
    })
}

fn parse_f32(tok: Option<&str>, what: &str) -> std::result::Result<f32, String> {
    let t = tok.ok_or_else(|| format!("missing {what}"))?;
    let v: f32 = t.parse().map_err(|_| {
        format!(
            "`{}` is not a number",
            t.chars().take(32).collect::<String>()
        )
    })?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err("NaN or infinite coordinate".into())
    }
}

/// Parses an OFF file (`OFF` header, counts, vertices, polygon faces). `COFF`/`NOFF`
/// style extra per-vertex columns are ignored; the counts may follow `OFF` on its line, as
/// in some ModelNet files.
pub fn parse_off(bytes: &[u8], path: &Path) -> Result<Mesh> {
    let src = text(bytes, path)?;
    let mut lines = src
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty());
    let err = |no: usize, m: String| DataError::format(path, format!("line {no}: {m}"));
    let (no, first) = lines
        .next()
        .ok_or_else(|| DataError::format(path, "empty file"))?;
    let rest = first
        .strip_prefix("OFF")
        .or_else(|| first.strip_prefix("COFF"))
        .or_else(|| first.strip_prefix("NOFF"))
        .or_else(|| first.strip_prefix("CNOFF"))
        .ok_or_else(|| err(no, "not an OFF file (no OFF header)".into()))?
        .trim();
    let (no, counts) = if rest.is_empty() {
        lines
            .next()
            .ok_or_else(|| DataError::format(path, "no vertex/face counts"))?
    } else {
        (no, rest)
    };
    let mut c = counts.split_whitespace().map(|t| t.parse::<u64>());
    let (Some(Ok(nv)), Some(Ok(nf))) = (c.next(), c.next()) else {
        return Err(err(no, "bad vertex/face counts".into()));
    };
    // a vertex line needs at least 6 bytes ("0 0 0\n"), a triangle line 8
    if nv.saturating_mul(6).saturating_add(nf.saturating_mul(8)) > bytes.len() as u64 {
        return Err(DataError::format(
            path,
            format!("counts of {nv} vertices and {nf} faces exceed what the file can hold"),
        ));
    }
    if nv == 0 {
        return Err(DataError::format(path, "the mesh has no vertices"));
    }
    let (nv, nf) = (nv as usize, nf as usize);
    let mut vertices = Vec::with_capacity(nv);
    for i in 0..nv {
        let (no, l) = lines.next().ok_or_else(|| {
            DataError::format(path, format!("vertex {i}: unexpected end of file"))
        })?;
        let mut t = l.split_whitespace();
        let mut v = [0f32; 3];
        for (k, name) in ["x", "y", "z"].iter().enumerate() {
            v[k] = parse_f32(t.next(), name).map_err(|m| err(no, format!("vertex {i}: {m}")))?;
        }
        vertices.push(v);
    }
    let mut triangles = Vec::with_capacity(nf);
    let mut poly = Vec::new();
    for i in 0..nf {
        let (no, l) = lines
            .next()
            .ok_or_else(|| DataError::format(path, format!("face {i}: unexpected end of file")))?;
        let mut t = l.split_whitespace().map(|s| s.parse::<u64>());
        let k = match t.next() {
            Some(Ok(k)) => k as usize,
            _ => return Err(err(no, format!("face {i}: bad vertex count"))),
        };
        poly.clear();
        for _ in 0..k {
            match t.next() {
                Some(Ok(v)) if (v as usize) < nv && v <= usize::MAX as u64 => poly.push(v as usize),
                Some(Ok(v)) => {
                    return Err(err(
                        no,
                        format!("face {i}: vertex index {v} out of range ({nv} vertices)"),
                    ));
                }
                _ => return Err(err(no, format!("face {i}: expected {k} vertex indices"))),
            }
        }
        fan(&poly, &mut triangles);
    }
    Ok(Mesh {
        vertices,
        triangles,
    })
}

fn fan(poly: &[usize], out: &mut Vec<[usize; 3]>) {
    if poly.len() >= 3 {
        for k in 1..poly.len() - 1 {
            out.push([poly[0], poly[k], poly[k + 1]]);
        }
    }
}

/// Parses a Wavefront OBJ file: `v` and `f` lines (`i`, `i/t`, `i//n`, `i/t/n`, negative
/// indices relative to the vertices read so far); polygons are fan-triangulated;
/// everything else (normals, texture coordinates, materials, groups) is ignored.
pub fn parse_obj(bytes: &[u8], path: &Path) -> Result<Mesh> {
    let src = text(bytes, path)?;
    let err = |no: usize, m: String| DataError::format(path, format!("line {no}: {m}"));
    let mut vertices: Vec<[f32; 3]> = Vec::new();
    let mut triangles = Vec::new();
    let mut poly = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let no = i + 1;
        let mut t = line.split_whitespace();
        match t.next() {
            Some("v") => {
                let mut v = [0f32; 3];
                for (k, name) in ["x", "y", "z"].iter().enumerate() {
                    v[k] = parse_f32(t.next(), name).map_err(|m| err(no, m))?;
                }
                vertices.push(v);
            }
            Some("f") => {
                poly.clear();
                for tok in t {
                    let first = tok.split('/').next().unwrap_or("");
                    let idx: i64 = first.parse().map_err(|_| {
                        err(
                            no,
                            format!(
                                "bad face index `{}`",
                                first.chars().take(32).collect::<String>()
                            ),
                        )
                    })?;
                    let n = vertices.len() as i64;
                    let resolved = if idx > 0 { idx - 1 } else { n + idx };
                    if idx == 0 || resolved < 0 || resolved >= n {
                        return Err(err(
                            no,
                            format!("face index {idx} out of range ({n} vertices so far)"),
                        ));
                    }
                    poly.push(resolved as usize);
                }
                fan(&poly, &mut triangles);
            }
            _ => {}
        }
    }
    if vertices.is_empty() {
        return Err(DataError::format(path, "the mesh has no vertices"));
    }
    Ok(Mesh {
        vertices,
        triangles,
    })
}
