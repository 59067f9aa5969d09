//! Reading any supported point-cloud or mesh file by its extension (architecture.md,
//! "Data and formats"). A trailing `.gz` means gzip-compressed, as in the shared ModelNet40
//! subset (`airplane_0126.txt.gz`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::error::{DataError, Result};
use super::{PointCloud, mesh, npy, ply, text};

/// Extensions the file dialog should offer (lower case, without the dot). `gz` stands for
/// any of the others compressed with gzip.
pub const SUPPORTED_EXTENSIONS: &[&str] =
    &["ply", "txt", "xyz", "csv", "pts", "npy", "off", "obj", "gz"];

/// Extensions that hold one cloud each (what a class-per-folder data set may contain).
pub(crate) const CLOUD_EXTENSIONS: &[&str] =
    &["ply", "txt", "xyz", "csv", "pts", "npy", "off", "obj"];

/// A decompressed file larger than this is refused: a gzip bomb must not exhaust memory,
/// and no real point file of this project comes near it.
pub const MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;

/// How files are turned into clouds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ReadOptions {
    /// Points sampled from a mesh surface (OFF, OBJ, PLY with faces when enabled).
    pub mesh_samples: usize,
    /// Sample a PLY file's faces instead of returning its vertices.
    pub sample_ply_faces: bool,
    /// Seed of the surface sampling, so that one file always gives the same cloud.
    pub seed: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            mesh_samples: 8192,
            sample_ply_faces: false,
            seed: 0,
        }
    }
}

/// Reads one cloud, choosing the reader from the extension (case-insensitive).
pub fn read_cloud(path: &Path, opts: &ReadOptions) -> Result<PointCloud> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let (inner, gz) = match name.strip_suffix(".gz") {
        Some(inner) => (inner.to_string(), true),
        None => (name.clone(), false),
    };
    let ext = match inner.rsplit_once('.') {
        Some((_, e)) if !e.is_empty() => e.to_string(),
        _ => {
            return Err(DataError::unsupported(
                path,
                format!(
                    "no file extension; expected one of {}",
                    SUPPORTED_EXTENSIONS.join(", ")
                ),
            ));
        }
    };
    if !CLOUD_EXTENSIONS.contains(&ext.as_str()) {
        let hint = if ext == "h5" || ext == "hdf5" {
            " (an h5 file holds many clouds: open it as a ScanObjectNN data set)"
        } else {
            ""
        };
        return Err(DataError::unsupported(
            path,
            format!(
                "unknown extension .{ext}{hint}; expected one of {}",
                SUPPORTED_EXTENSIONS.join(", ")
            ),
        ));
    }
    let bytes = read_bytes(path, gz)?;
    let mut cloud = match ext.as_str() {
        "ply" => ply::parse_ply(&bytes, path, opts)?,
        "npy" => npy::parse_npy(&bytes, path)?,
        "off" => mesh::parse_off(&bytes, path)?.to_cloud(path, opts)?,
        "obj" => mesh::parse_obj(&bytes, path)?.to_cloud(path, opts)?,
        _ => text::parse_text(&bytes, path)?,
    };
    cloud.source = Some(path.to_path_buf());
    Ok(cloud)
}

/// The whole file, gunzipped when `gz` is set, refusing more than
/// [`MAX_DECOMPRESSED_BYTES`] of decompressed data.
pub fn read_bytes(path: &Path, gz: bool) -> Result<Vec<u8>> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    if gz {
        let mut dec = flate2::read::GzDecoder::new(file).take(MAX_DECOMPRESSED_BYTES + 1);
        dec.read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("gzip: {e}")))?;
        if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
            return Err(DataError::format(
                path,
                format!("decompresses to more than the {MAX_DECOMPRESSED_BYTES}-byte limit"),
            ));
        }
    } else {
        // a plain file's size is what the user chose to open, and every reader bounds its
        // allocations by that size
        file.read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
    }
    Ok(out)
}

/// Final check shared by every reader: non-empty, finite, attribute lengths consistent.
pub(crate) fn finish(cloud: PointCloud, path: &Path) -> Result<PointCloud> {
    cloud.validate().map_err(|m| DataError::format(path, m))?;
    Ok(cloud)
}

/// Whether `path`'s extension (after an optional `.gz`) is one [`read_cloud`] handles.
pub fn is_supported(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let inner = name.strip_suffix(".gz").unwrap_or(&name);
    match inner.rsplit_once('.') {
        Some((_, e)) => CLOUD_EXTENSIONS.contains(&e),
        None => false,
    }
}
