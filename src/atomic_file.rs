//! Files that appear whole or not at all: every file the program writes (checkpoints, run
//! state, PLY exports, settings) goes through [`write`] or [`write_with`], which write a
//! temporary file in the same directory, sync it and rename it over the target, so a crash
//! or a full disk leaves the old file or the new one, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `DAPT_TEST_SLOW_WRITES_MS`: a test-only pause before each rename, so that a test killing
/// the process has a window that lands inside a checkpoint write (tests/crash_safety.rs).
fn test_delay() -> Option<std::time::Duration> {
    static DELAY: OnceLock<Option<std::time::Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("DAPT_TEST_SLOW_WRITES_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(std::time::Duration::from_millis)
    })
}

/// Pauses for the test-only delay, if one is set (also used between the steps of an epoch
/// commit in `train::run_dir`).
pub fn test_pause() {
    if let Some(d) = test_delay() {
        std::thread::sleep(d);
    }
}

/// `DAPT_TEST_FAIL_WRITES_AFTER=N`: a test-only full disk: every atomic write after the
/// first N of the process fails, as ENOSPC would (tests/run_dir.rs).
fn simulated_full_disk() -> std::io::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static LIMIT: OnceLock<Option<usize>> = OnceLock::new();
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let limit = *LIMIT.get_or_init(|| {
        std::env::var("DAPT_TEST_FAIL_WRITES_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    match limit {
        Some(n) if WRITES.fetch_add(1, Ordering::SeqCst) >= n => Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "No space left on device (simulated by DAPT_TEST_FAIL_WRITES_AFTER)",
        )),
        _ => Ok(()),
    }
}

fn temp_path(path: &Path) -> (PathBuf, PathBuf) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    (dir, tmp)
}

/// Writes `bytes` to `path` atomically (see the module doc).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// Writes `path` atomically through `fill`, which receives a buffered writer of the
/// temporary file. On any error the temporary file is removed and the target is untouched.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (dir, tmp) = temp_path(path);
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        simulated_full_disk()?;
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        test_pause();
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // best effort: a stale temporary file is harmless, the original error is what counts
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    sync_dir(&dir);
    Ok(())
}

/// Makes a rename in `dir` durable where the platform allows it (a no-op elsewhere).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write(&p, b"old").unwrap();
        let r = write_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
