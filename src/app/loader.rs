//! Opening point-cloud files from the app: the library readers (`crate::data`), with every
//! format the CLI accepts.

use std::path::Path;

use crate::data::{PointCloud, ReadOptions, read_cloud};

/// Extensions the file browser and drag-and-drop accept.
pub const SUPPORTED_EXTENSIONS: [&str; 9] =
    ["ply", "txt", "xyz", "csv", "pts", "npy", "off", "obj", "gz"];

pub fn is_supported(path: &Path) -> bool {
    crate::data::io::is_supported(path)
}

/// Reads a cloud; the error is a one-line message without the path (the caller names the file).
pub fn load_cloud(path: &Path) -> Result<PointCloud, String> {
    read_cloud(path, &ReadOptions::default()).map_err(|e| {
        // DataError's Display is "path: problem"; the app prints the file name itself
        let msg = e.to_string();
        let prefix = format!("{}: ", path.display());
        msg.strip_prefix(&prefix).map(str::to_string).unwrap_or(msg)
    })
}
