//! PLY reader (ascii, binary little and big endian) and writer.
//!
//! The header is parsed here rather than by a PLY crate so that every element count is
//! checked against the bytes that follow `end_header` before anything is allocated: a
//! 200-byte file that claims 10^12 vertices is a format error, not an out-of-memory abort.
//!
//! Vertex properties: `x y z`, `nx ny nz`, `red green blue` (or `diffuse_*`, with `alpha`
//! dropped) and one label property (`label`, `class` or `scalar_label`, in that order, any
//! case) map to the cloud's fields. Every other scalar vertex property, float or integer,
//! becomes a named [`ScalarField`] (CloudCompare's `scalar_Intensity`, curvature, ...); its
//! display name drops a leading `scalar_`, so `scalar_Intensity` is "Intensity", and the
//! writer adds the prefix back (`property float scalar_Intensity`). A label property whose
//! values are not all integers is kept as a scalar field instead of failing the file.
//! List properties and unknown elements are read past and ignored.

use std::io::Write;
use std::path::Path;

use super::cloud::ScalarField;
use super::error::{DataError, Result};
use super::io::{ReadOptions, finish};
use super::mesh::sample_surface;
use super::{PointCloud, Rng};

/// Longest header accepted; real headers are a few hundred bytes.
const MAX_HEADER_BYTES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scalar {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl Scalar {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "char" | "int8" => Self::I8,
            "uchar" | "uint8" => Self::U8,
            "short" | "int16" => Self::I16,
            "ushort" | "uint16" => Self::U16,
            "int" | "int32" => Self::I32,
            "uint" | "uint32" => Self::U32,
            "float" | "float32" => Self::F32,
            "double" | "float64" => Self::F64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Scalar(Scalar),
    List { count: Scalar, item: Scalar },
}

#[derive(Clone, Debug)]
struct Property {
    name: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
struct Element {
    name: String,
    count: usize,
    props: Vec<Property>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Ascii,
    LittleEndian,
    BigEndian,
}

struct Header {
    encoding: Encoding,
    elements: Vec<Element>,
    body_offset: usize,
}

fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let err = |m: String| DataError::format(path, m);
    let mut pos = 0usize;
    let mut line_no = 0usize;
    let mut encoding = None;
    let mut elements: Vec<Element> = Vec::new();
    loop {
        if pos >= bytes.len() || pos > MAX_HEADER_BYTES {
            return Err(err("header has no end_header line".into()));
        }
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i);
        let raw = &bytes[pos..end];
        pos = end + 1;
        line_no += 1;
        let line = std::str::from_utf8(raw)
            .map_err(|_| err(format!("header line {line_no} is not text")))?
            .trim_end_matches('\r')
            .trim();
        if line_no == 1 {
            if line != "ply" {
                return Err(err("not a PLY file (first line is not `ply`)".into()));
            }
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            None | Some("comment") | Some("obj_info") => {}
            Some("format") => {
                encoding = Some(match words.next() {
                    Some("ascii") => Encoding::Ascii,
                    Some("binary_little_endian") => Encoding::LittleEndian,
                    Some("binary_big_endian") => Encoding::BigEndian,
                    other => {
                        return Err(err(format!(
                            "header line {line_no}: unknown format {}",
                            other.unwrap_or("(none)")
                        )));
                    }
                });
            }
            Some("element") => {
                let name = words.next().unwrap_or_default().to_string();
                let count = words
                    .next()
                    .and_then(|c| c.parse::<u64>().ok())
                    .and_then(|c| usize::try_from(c).ok())
                    .ok_or_else(|| {
                        err(format!(
                            "header line {line_no}: element {name} has no valid count"
                        ))
                    })?;
                elements.push(Element {
                    name,
                    count,
                    props: Vec::new(),
                });
            }
            Some("property") => {
                let Some(el) = elements.last_mut() else {
                    return Err(err(format!(
                        "header line {line_no}: property before any element"
                    )));
                };
                let first = words.next().unwrap_or_default();
                let bad_type = |t: &str| err(format!("header line {line_no}: unknown type {t}"));
                let kind = if first == "list" {
                    let c = words.next().unwrap_or_default();
                    let i = words.next().unwrap_or_default();
                    let count = Scalar::parse(c).ok_or_else(|| bad_type(c))?;
                    let item = Scalar::parse(i).ok_or_else(|| bad_type(i))?;
                    if matches!(count, Scalar::F32 | Scalar::F64) {
                        return Err(err(format!(
                            "header line {line_no}: list count type must be an integer"
                        )));
                    }
                    Kind::List { count, item }
                } else {
                    Kind::Scalar(Scalar::parse(first).ok_or_else(|| bad_type(first))?)
                };
                let name = words.next().ok_or_else(|| {
                    err(format!("header line {line_no}: property without a name"))
                })?;
                el.props.push(Property {
                    name: name.to_string(),
                    kind,
                });
            }
            Some("end_header") => break,
            Some(other) => {
                return Err(err(format!(
                    "header line {line_no}: unexpected keyword {other}"
                )));
            }
        }
    }
    let encoding = encoding.ok_or_else(|| err("header has no format line".into()))?;
    Ok(Header {
        encoding,
        elements,
        body_offset: pos.min(bytes.len()),
    })
}

/// Smallest number of body bytes an element can occupy; used to refuse counts the file
/// cannot possibly hold.
fn min_item_bytes(el: &Element, enc: Encoding) -> u64 {
    match enc {
        // every value needs a digit and a separator
        Encoding::Ascii => 2 * el.props.len().max(1) as u64,
        _ => el
            .props
            .iter()
            .map(|p| match p.kind {
                Kind::Scalar(s) => s.size() as u64,
                Kind::List { count, .. } => count.size() as u64,
            })
            .sum::<u64>()
            .max(1),
    }
}

/// Sequential reader of body values, binary or ascii.
struct Body<'a> {
    bytes: &'a [u8],
    pos: usize,
    enc: Encoding,
}

impl Body<'_> {
    fn read(&mut self, ty: Scalar) -> std::result::Result<f64, String> {
        match self.enc {
            Encoding::Ascii => self.read_ascii(),
            enc => {
                let n = ty.size();
                let end = self
                    .pos
                    .checked_add(n)
                    .filter(|&e| e <= self.bytes.len())
                    .ok_or_else(|| "truncated binary data".to_string())?;
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(&self.bytes[self.pos..end]);
                self.pos = end;
                if enc == Encoding::BigEndian {
                    b[..n].reverse();
                }
                Ok(match ty {
                    Scalar::I8 => b[0] as i8 as f64,
                    Scalar::U8 => b[0] as f64,
                    Scalar::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
                    Scalar::U16 => u16::from_le_bytes([b[0], b[1]]) as f64,
                    Scalar::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                    Scalar::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                    Scalar::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                    Scalar::F64 => f64::from_le_bytes(b),
                })
            }
        }
    }

    fn read_ascii(&mut self) -> std::result::Result<f64, String> {
        while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        while self.pos < self.bytes.len() && !self.bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        if start == self.pos {
            return Err("unexpected end of data".into());
        }
        let tok = std::str::from_utf8(&self.bytes[start..self.pos])
            .map_err(|_| "value is not text".to_string())?;
        tok.parse::<f64>().map_err(|_| {
            format!(
                "`{}` is not a number",
                tok.chars().take(32).collect::<String>()
            )
        })
    }

    /// A list length; checked against the bytes left so a huge count cannot make us spin.
    fn read_len(&mut self, count: Scalar, item: Scalar) -> std::result::Result<usize, String> {
        let v = self.read(count)?;
        if !(v >= 0.0 && v.fract() == 0.0) {
            return Err(format!("invalid list length {v}"));
        }
        let n = v as u64;
        let left = (self.bytes.len() - self.pos) as u64;
        let per = match self.enc {
            Encoding::Ascii => 2,
            _ => item.size() as u64,
        };
        if n.saturating_mul(per) > left + 1 {
            return Err(format!("list of {n} items runs past the end of the file"));
        }
        Ok(n as usize)
    }
}

/// Which vertex property feeds which field of the cloud.
struct VertexMap {
    xyz: [usize; 3],
    normal: Option<[usize; 3]>,
    color: Option<([usize; 3], Scalar)>,
    label: Option<usize>,
    /// (property index, display name) of every other scalar property, in file order.
    scalars: Vec<(usize, String)>,
}

/// Property names that hold per-point integer labels, in order of preference.
const LABEL_NAMES: [&str; 3] = ["label", "class", "scalar_label"];

fn vertex_map(el: &Element, path: &Path) -> Result<VertexMap> {
    let find = |name: &str| {
        el.props
            .iter()
            .position(|p| p.name == name && matches!(p.kind, Kind::Scalar(_)))
    };
    let triple = |a: &str, b: &str, c: &str| Some([find(a)?, find(b)?, find(c)?]);
    let xyz = triple("x", "y", "z").ok_or_else(|| {
        DataError::format(path, "vertex element lacks one of the x, y, z properties")
    })?;
    let normal = triple("nx", "ny", "nz");
    let color = triple("red", "green", "blue")
        .or_else(|| triple("diffuse_red", "diffuse_green", "diffuse_blue"))
        .and_then(|c| match el.props[c[0]].kind {
            Kind::Scalar(s) => Some((c, s)),
            Kind::List { .. } => None,
        });
    // CloudCompare writes `scalar_Label`; case must not decide whether labels are found
    let label = LABEL_NAMES.iter().find_map(|n| {
        el.props
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(n) && matches!(p.kind, Kind::Scalar(_)))
    });
    let mut taken: Vec<usize> = xyz.to_vec();
    taken.extend(normal.into_iter().flatten());
    if let Some((c, _)) = color {
        taken.extend(c);
        // alpha belongs to the colour, which the cloud keeps as RGB only
        taken.extend(find("alpha").or_else(|| find("diffuse_alpha")));
    }
    taken.extend(label);
    let mut scalars: Vec<(usize, String)> = Vec::new();
    for (i, p) in el.props.iter().enumerate() {
        if taken.contains(&i) || !matches!(p.kind, Kind::Scalar(_)) {
            continue;
        }
        let name = display_name(&p.name, &scalars);
        scalars.push((i, name));
    }
    Ok(VertexMap {
        xyz,
        normal,
        color,
        label,
        scalars,
    })
}

/// `scalar_Intensity` shows as "Intensity"; the full property name is kept when the short
/// one is empty or already used (a file with both `intensity` and `scalar_intensity`), and
/// a repeated property name gets a `#k` suffix so every field stays addressable by name.
fn display_name(prop: &str, so_far: &[(usize, String)]) -> String {
    let free = |n: &str| !so_far.iter().any(|(_, m)| m == n);
    let short = prop.strip_prefix("scalar_").filter(|s| !s.is_empty());
    if let Some(short) = short.filter(|s| free(s)) {
        return short.to_string();
    }
    if free(prop) {
        return prop.to_string();
    }
    (2..)
        .map(|k| format!("{prop}#{k}"))
        .find(|n| free(n))
        .unwrap_or_else(|| prop.to_string())
}

fn color_value(v: f64, ty: Scalar) -> f32 {
    let scaled = match ty {
        Scalar::F32 | Scalar::F64 => v,
        Scalar::U16 => v / 65535.0,
        _ => v / 255.0,
    };
    scaled.clamp(0.0, 1.0) as f32
}

/// Parses a whole PLY file held in memory. `path` is only used in messages.
///
/// With `opts.sample_ply_faces` and a `face` element, the result is `opts.mesh_samples`
/// surface points with face normals; per-vertex colours, labels and scalar fields are then
/// dropped, since a sampled point does not coincide with a vertex.
pub fn parse_ply(bytes: &[u8], path: &Path, opts: &ReadOptions) -> Result<PointCloud> {
    let header = parse_header(bytes, path)?;
    let body = &bytes[header.body_offset..];
    let mut need: u64 = 0;
    for el in &header.elements {
        need = (el.count as u64)
            .checked_mul(min_item_bytes(el, header.encoding))
            .and_then(|b| need.checked_add(b))
            .ok_or_else(|| {
                DataError::format(
                    path,
                    format!("element {} count {} is absurd", el.name, el.count),
                )
            })?;
    }
    // an ascii body may lack its final newline
    if need > body.len() as u64 + 1 {
        return Err(DataError::format(
            path,
            format!(
                "header promises at least {need} bytes of data but only {} follow it (truncated file or bogus counts)",
                body.len()
            ),
        ));
    }
    let vertex_el = header
        .elements
        .iter()
        .find(|e| e.name == "vertex")
        .ok_or_else(|| DataError::format(path, "no vertex element"))?;
    let map = vertex_map(vertex_el, path)?;
    let n = vertex_el.count;
    if n == 0 {
        return Err(DataError::format(path, "the file has no vertices"));
    }

    let mut positions = Vec::with_capacity(n);
    let mut normals = map.normal.map(|_| Vec::with_capacity(n));
    let mut colors = map.color.map(|_| Vec::with_capacity(n));
    // raw label values: whether they are labels or a scalar field is known at the end
    let mut label_values: Option<Vec<f64>> = map.label.map(|_| Vec::with_capacity(n));
    // the header check above bounds n by the body size, so these allocations are too
    let mut scalar_values: Vec<Vec<f32>> =
        map.scalars.iter().map(|_| Vec::with_capacity(n)).collect();
    let mut triangles: Vec<[usize; 3]> = Vec::new();
    let mut reader = Body {
        bytes: body,
        pos: 0,
        enc: header.encoding,
    };
    let mut values: Vec<f64> = Vec::new();
    let mut poly: Vec<usize> = Vec::new();
    for el in &header.elements {
        let is_vertex = el.name == "vertex";
        let face_prop = (el.name == "face")
            .then(|| {
                el.props.iter().position(|p| {
                    (p.name == "vertex_indices" || p.name == "vertex_index")
                        && matches!(p.kind, Kind::List { .. })
                })
            })
            .flatten();
        for i in 0..el.count {
            let ctx = |m: String| DataError::format(path, format!("{} {i}: {m}", el.name));
            values.clear();
            for (pi, p) in el.props.iter().enumerate() {
                match p.kind {
                    Kind::Scalar(s) => values.push(reader.read(s).map_err(ctx)?),
                    Kind::List { count, item } => {
                        let len = reader.read_len(count, item).map_err(ctx)?;
                        let keep = face_prop == Some(pi);
                        poly.clear();
                        for _ in 0..len {
                            let v = reader.read(item).map_err(ctx)?;
                            if keep {
                                if !(v >= 0.0 && v.fract() == 0.0 && v < n as f64) {
                                    return Err(ctx(format!(
                                        "vertex index {v} out of range ({n} vertices)"
                                    )));
                                }
                                poly.push(v as usize);
                            }
                        }
                        if keep && poly.len() >= 3 {
                            for k in 1..poly.len() - 1 {
                                triangles.push([poly[0], poly[k], poly[k + 1]]);
                            }
                        }
                        values.push(f64::NAN);
                    }
                }
            }
            if !is_vertex {
                continue;
            }
            let p = map.xyz.map(|k| values[k] as f32);
            if !p.iter().all(|v| v.is_finite()) {
                return Err(ctx("NaN or infinite coordinate".into()));
            }
            positions.push(p);
            if let (Some(idx), Some(out)) = (map.normal, normals.as_mut()) {
                let v = idx.map(|k| values[k] as f32);
                if !v.iter().all(|c| c.is_finite()) {
                    return Err(ctx("NaN or infinite normal".into()));
                }
                out.push(v);
            }
            if let (Some((idx, ty)), Some(out)) = (map.color, colors.as_mut()) {
                if !idx.iter().all(|&k| values[k].is_finite()) {
                    return Err(ctx("NaN or infinite colour".into()));
                }
                out.push(idx.map(|k| color_value(values[k], ty)));
            }
            if let (Some(k), Some(out)) = (map.label, label_values.as_mut()) {
                let v = values[k];
                if !v.is_finite() {
                    return Err(ctx(format!("{} is NaN or infinite", el.props[k].name)));
                }
                out.push(v);
            }
            for ((k, _), out) in map.scalars.iter().zip(scalar_values.iter_mut()) {
                let v = values[*k];
                let name = &el.props[*k].name;
                if !v.is_finite() {
                    return Err(ctx(format!("{name} is NaN or infinite")));
                }
                let f = v as f32;
                if !f.is_finite() {
                    return Err(ctx(format!("{name} value {v} is out of the f32 range")));
                }
                out.push(f);
            }
        }
    }

    if opts.sample_ply_faces && !triangles.is_empty() {
        if opts.mesh_samples == 0 {
            return Err(DataError::format(path, "mesh_samples is 0"));
        }
        let mut rng = Rng::new(opts.seed);
        let (pts, nrm) = sample_surface(&positions, &triangles, opts.mesh_samples, &mut rng);
        if pts.is_empty() {
            return Err(DataError::format(path, "the faces have no surface area"));
        }
        let cloud = PointCloud {
            positions: pts,
            normals: Some(nrm),
            ..PointCloud::default()
        };
        return finish(cloud, path);
    }
    let mut labels = None;
    let mut named: Vec<(usize, String, Vec<f32>)> = Vec::new();
    if let (Some(k), Some(raw)) = (map.label, label_values) {
        // 2^53: beyond it an f64 no longer tells neighbouring integers apart
        if raw.iter().all(|v| v.fract() == 0.0 && v.abs() <= 9.0e15) {
            labels = Some(raw.iter().map(|&v| v as i64).collect());
        } else {
            let prop = &vertex_el.props[k].name;
            let values: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(DataError::format(
                    path,
                    format!("{prop} has values out of the f32 range"),
                ));
            }
            named.push((k, display_name(prop, &map.scalars), values));
        }
    }
    named.extend(
        map.scalars
            .into_iter()
            .zip(scalar_values)
            .map(|((k, name), values)| (k, name, values)),
    );
    // file order, so the colour menu lists fields as the file declares them
    named.sort_by_key(|f| f.0);
    let scalars = named
        .into_iter()
        .map(|(_, name, values)| ScalarField { name, values })
        .collect();
    finish(
        PointCloud {
            positions,
            normals,
            colors,
            labels,
            scalars,
            ..PointCloud::default()
        },
        path,
    )
}

/// Writes `cloud` as PLY (binary little endian or ascii): x y z as float, normals as
/// float, colours as uchar, per-point labels as int, each scalar field as
/// `float scalar_<name>` (the reader strips the prefix again). The file appears atomically
/// (`atomic_file::write_with`).
pub fn write_ply(path: &Path, cloud: &PointCloud, binary: bool) -> Result<()> {
    cloud.validate().map_err(|m| DataError::format(path, m))?;
    // a PLY header is whitespace-separated text: such a name would corrupt it
    if let Some(f) = cloud
        .scalars
        .iter()
        .find(|f| f.name.is_empty() || !f.name.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(DataError::format(
            path,
            format!(
                "scalar field `{}` cannot be a PLY property name (empty, blank or non-ASCII)",
                f.name
            ),
        ));
    }
    crate::atomic_file::write_with(path, |w| write_ply_to(w, cloud, binary))
        .map_err(|e| DataError::io(path, e))
}

fn write_ply_to(w: &mut impl Write, cloud: &PointCloud, binary: bool) -> std::io::Result<()> {
    let mut h = String::from("ply\n");
    h += if binary {
        "format binary_little_endian 1.0\n"
    } else {
        "format ascii 1.0\n"
    };
    h += "comment written by dapt\n";
    h += &format!("element vertex {}\n", cloud.len());
    h += "property float x\nproperty float y\nproperty float z\n";
    if cloud.normals.is_some() {
        h += "property float nx\nproperty float ny\nproperty float nz\n";
    }
    if cloud.colors.is_some() {
        h += "property uchar red\nproperty uchar green\nproperty uchar blue\n";
    }
    if cloud.labels.is_some() {
        h += "property int label\n";
    }
    for f in &cloud.scalars {
        h += &format!("property float scalar_{}\n", f.name);
    }
    h += "end_header\n";
    w.write_all(h.as_bytes())?;
    let to_u8 = |c: f32| (c.clamp(0.0, 1.0) * 255.0).round() as u8;
    for i in 0..cloud.len() {
        let mut floats: Vec<f32> = cloud.positions[i].to_vec();
        if let Some(n) = &cloud.normals {
            floats.extend_from_slice(&n[i]);
        }
        let color = cloud.colors.as_ref().map(|c| c[i].map(to_u8));
        let label = cloud
            .labels
            .as_ref()
            .map(|l| l[i].clamp(i32::MIN as i64, i32::MAX as i64) as i32);
        if binary {
            for f in &floats {
                w.write_all(&f.to_le_bytes())?;
            }
            if let Some(c) = color {
                w.write_all(&c)?;
            }
            if let Some(l) = label {
                w.write_all(&l.to_le_bytes())?;
            }
            for f in &cloud.scalars {
                w.write_all(&f.values[i].to_le_bytes())?;
            }
        } else {
            let mut line: Vec<String> = floats.iter().map(|f| format!("{f}")).collect();
            if let Some(c) = color {
                line.extend(c.iter().map(|v| v.to_string()));
            }
            if let Some(l) = label {
                line.push(l.to_string());
            }
            // `{}` of an f32 is its shortest exact representation: the text round-trips
            line.extend(cloud.scalars.iter().map(|f| format!("{}", f.values[i])));
            writeln!(w, "{}", line.join(" "))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parses_types_lists_and_crlf() {
        let h = b"ply\r\nformat binary_big_endian 1.0\r\ncomment x\r\nelement vertex 7\r\nproperty double x\r\nproperty list uint8 int32 idx\r\nelement face 0\r\nend_header\r\n";
        let p = Path::new("h.ply");
        let header = parse_header(h, p).unwrap();
        assert_eq!(header.encoding, Encoding::BigEndian);
        assert_eq!(header.body_offset, h.len());
        assert_eq!(header.elements[0].count, 7);
        assert_eq!(header.elements[0].props[0].kind, Kind::Scalar(Scalar::F64));
        assert_eq!(
            header.elements[0].props[1].kind,
            Kind::List {
                count: Scalar::U8,
                item: Scalar::I32
            }
        );
        assert_eq!(min_item_bytes(&header.elements[0], header.encoding), 8 + 1);
        for bad in [
            &b"plx\nformat ascii 1.0\nend_header\n"[..],
            b"ply\nformat ascii 1.0\nelement vertex -1\nend_header\n",
            b"ply\nformat ascii 1.0\nproperty float x\nend_header\n",
            b"ply\nformat ascii 1.0\nelement vertex 1\nproperty half x\nend_header\n",
            b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list float int x\nend_header\n",
            b"ply\nelement vertex 1\nend_header\n",
            b"ply\nformat ascii 1.0\nelement vertex 1\n",
        ] {
            let e = parse_header(bad, p).err().map(|e| e.to_string());
            assert!(e.is_some_and(|m| m.starts_with("h.ply: ")), "{bad:?}");
        }
    }

    #[test]
    fn scalar_names_drop_the_prefix_unless_that_collides() {
        let named = |names: &[&str]| {
            let mut out: Vec<(usize, String)> = Vec::new();
            for (i, n) in names.iter().enumerate() {
                let d = display_name(n, &out);
                out.push((i, d));
            }
            out.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
        };
        assert_eq!(
            named(&["scalar_Intensity", "curvature", "scalar_"]),
            ["Intensity", "curvature", "scalar_"]
        );
        assert_eq!(
            named(&["intensity", "scalar_intensity", "intensity"]),
            ["intensity", "scalar_intensity", "intensity#2"]
        );
    }

    #[test]
    fn colours_scale_by_type() {
        assert_eq!(color_value(255.0, Scalar::U8), 1.0);
        assert_eq!(color_value(65535.0, Scalar::U16), 1.0);
        assert_eq!(color_value(0.25, Scalar::F32), 0.25);
        assert_eq!(color_value(7.0, Scalar::F32), 1.0);
    }
}
