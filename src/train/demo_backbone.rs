//! The backbone the demo fine-tunes: a small Point-MAE encoder this project pre-trained on its
//! own synthetic shapes (`assets/demo/README.md` has the command that reproduces it). It is
//! compiled into the binary, so `dapt train` works from any directory and on an installed
//! binary, and written out as a file on first use: the run's `config.json` and its adapter
//! then name a real backbone file, as for any other `--init`.

use std::path::{Path, PathBuf};

use super::TrainError;

/// `MAE_encoder.*` tensors of `ModelConfig::small` (native safetensors).
pub const BYTES: &[u8] = include_bytes!("../../assets/demo/backbone.safetensors");

/// Where the demo keeps its copy, beside its run directory.
pub const FILE: &str = "runs/demo-backbone.safetensors";

/// Writes the built-in backbone to `path` unless an identical file is already there, and
/// returns the absolute path (so a run started here can be evaluated from elsewhere).
pub fn materialise(path: &Path) -> Result<PathBuf, TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let same = std::fs::read(path).is_ok_and(|b| b == BYTES);
    if !same {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        crate::atomic_file::write(path, BYTES).map_err(io)?;
    }
    std::path::absolute(path).map_err(io)
}
