//! The run directory, shared by every task, and how an epoch is committed to it.
//!
//! ```text
//! RUN/config.json            the run's configuration, written before training starts
//! RUN/metrics.jsonl          one line per epoch and split, appended as they finish
//! RUN/adapter.safetensors    published copy of the best epoch's adapter (fine-tuning)
//! RUN/backbone.safetensors   published copy of the best epoch's backbone (pre-training)
//! RUN/checkpoints/           the last committed epoch, as one unit:
//!     last.safetensors  best.safetensors  optimizer.safetensors
//!     adapter.safetensors | backbone.safetensors   (the best epoch's, as published)
//!     state.json        epochs done, optimizer step, RNG, best epoch, metrics length
//! RUN/checkpoints.next/      the epoch being committed (incomplete until renamed)
//! RUN/checkpoints.prev/      the epoch being replaced, during the swap
//! ```
//!
//! An epoch commits by writing every file into `checkpoints.next/` (state.json last), then
//! two renames: `checkpoints` to `checkpoints.prev`, `checkpoints.next` to `checkpoints`.
//! A kill at any instant leaves one consistent epoch, which [`RunDir::open`] restores:
//! a complete `next` with no `checkpoints` finishes the swap, a lone `prev` is put back,
//! anything else in `next` is discarded. `state.json` records the length of metrics.jsonl
//! at the commit, and resuming cuts the file back to it, so an epoch that was trained but
//! not committed is trained again without its metrics lines appearing twice.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::optim::AdamW;
use crate::atomic_file;
use crate::data::Rng;
use crate::model::checkpoint::write_native;
use crate::model::names::RawTensor;

pub const CHECKPOINTS: &str = "checkpoints";
const NEXT: &str = "checkpoints.next";
const PREV: &str = "checkpoints.prev";
const STATE: &str = "state.json";

pub struct RunDir {
    pub path: PathBuf,
}

/// What `--resume` needs besides the `last` checkpoint and the optimizer moments.
///
/// The best epoch's score is stored under the task's own names (`best_overall_accuracy` and
/// `best_mean_class_accuracy` for classification, `best_instance_miou` / `best_class_miou`
/// for segmentation, `best_loss` for pre-training), as before the driver was shared.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub optimizer_step: u64,
    pub rng: Rng,
    pub best_epoch: usize,
    #[serde(
        alias = "best_overall_accuracy",
        alias = "best_instance_miou",
        alias = "best_loss"
    )]
    pub best_score: f64,
    #[serde(default, alias = "best_mean_class_accuracy", alias = "best_class_miou")]
    pub best_secondary: f64,
    /// Length of metrics.jsonl when this epoch committed (absent in runs of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_bytes: Option<u64>,
}

/// One file of an epoch's checkpoint: official tensor names and the metadata stored with them.
pub struct CheckpointFile {
    pub tensors: Vec<(String, RawTensor)>,
    pub meta: serde_json::Value,
}

/// Everything one epoch commits.
pub struct EpochCommit<'a> {
    pub last: &'a CheckpointFile,
    pub optimizer: &'a AdamW,
    /// This epoch is the best so far: `last` is also `best`, with the task's file published
    /// beside the run (`adapter.safetensors` or `backbone.safetensors`) if it has one.
    pub best: Option<Option<(&'static str, CheckpointFile)>>,
    pub state: RunState,
    /// The task's names for `best_score` and `best_secondary` in state.json.
    pub state_keys: (&'static str, Option<&'static str>),
}

pub fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes `v` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| TrainError::Config(e.to_string()))?;
    atomic_file::write(path, text.as_bytes()).map_err(io_err(path))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
}

/// `dst` as a hard link of `src` (a copy where links are not supported).
fn link_or_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::hard_link(src, dst).or_else(|_| std::fs::copy(src, dst).map(|_| ()))
}

impl RunDir {
    /// A new run in `path` (created if needed). Refuses a directory that holds a run.
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        let rd = Self {
            path: path.to_path_buf(),
        };
        rd.recover()?;
        if rd.state_path().exists() {
            return Err(TrainError::Config(format!(
                "{}: already holds a run; pass --resume {} to continue it or choose another --out",
                path.display(),
                path.display()
            )));
        }
        std::fs::create_dir_all(path).map_err(io_err(path))?;
        // a fresh run starts a fresh metrics file
        let m = rd.metrics_path();
        if m.exists() {
            std::fs::remove_file(&m).map_err(io_err(&m))?;
        }
        Ok(rd)
    }

    /// An existing run, repaired to its last committed epoch (see [`RunDir::resume_state`]).
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let rd = Self {
            path: path.to_path_buf(),
        };
        if !path.is_dir() {
            return Err(TrainError::Config(format!(
                "{}: no such run directory",
                path.display()
            )));
        }
        if !path.join("config.json").is_file() {
            return Err(TrainError::Config(format!(
                "{}: not a resumable run directory: there is no config.json (a run stopped \
                 before it saved its configuration trained nothing; start it again with the \
                 same command)",
                path.display()
            )));
        }
        rd.recover()?;
        Ok(rd)
    }

    /// The committed epoch's state to continue from, or `None` when the run was interrupted
    /// before its first epoch committed (it then starts again from its saved configuration).
    /// Cuts metrics.jsonl back to that epoch.
    pub fn resume_state(&self) -> Result<Option<RunState>, TrainError> {
        let state = if self.state_path().is_file() {
            Some(read_json::<RunState>(&self.state_path())?)
        } else {
            None
        };
        let m = self.metrics_path();
        match &state {
            Some(RunState {
                metrics_bytes: Some(len),
                ..
            }) => {
                if let Ok(meta) = std::fs::metadata(&m)
                    && meta.len() > *len
                {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&m)
                        .map_err(io_err(&m))?;
                    f.set_len(*len).map_err(io_err(&m))?;
                    f.sync_all().map_err(io_err(&m))?;
                }
            }
            // written by an older version: its lines are kept as they are
            Some(_) => {}
            None => {
                if m.exists() {
                    std::fs::remove_file(&m).map_err(io_err(&m))?;
                }
            }
        }
        self.publish_all()?;
        Ok(state)
    }

    /// Finishes or rolls back a commit a kill interrupted (see the module doc).
    fn recover(&self) -> Result<(), TrainError> {
        let cur = self.path.join(CHECKPOINTS);
        let next = self.path.join(NEXT);
        let prev = self.path.join(PREV);
        if !cur.exists() {
            if next.join(STATE).is_file() {
                std::fs::rename(&next, &cur).map_err(io_err(&next))?;
            } else if prev.exists() {
                std::fs::rename(&prev, &cur).map_err(io_err(&prev))?;
            }
        }
        for p in [next, prev] {
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join(CHECKPOINTS)
    }
    pub fn last_path(&self) -> PathBuf {
        self.checkpoints().join("last.safetensors")
    }
    pub fn best_path(&self) -> PathBuf {
        self.checkpoints().join("best.safetensors")
    }
    pub fn optimizer_path(&self) -> PathBuf {
        self.checkpoints().join("optimizer.safetensors")
    }
    pub fn state_path(&self) -> PathBuf {
        self.checkpoints().join(STATE)
    }
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
    pub fn adapter_path(&self) -> PathBuf {
        self.path.join("adapter.safetensors")
    }

    /// The raw `config.json`, checked to belong to task `kind` (`"classification"`,
    /// `"partseg"` or `"pretrain"`); another task's run says which command resumes it.
    pub fn read_config_value(&self, kind: &str) -> Result<serde_json::Value, TrainError> {
        let p = self.config_path();
        let v: serde_json::Value = read_json(&p)?;
        let found = match (v.get("kind").and_then(|k| k.as_str()), v.get("task")) {
            (Some("pretrain"), _) => "pretrain",
            (_, Some(t)) if t.as_str() == Some("partseg") => "partseg",
            _ => "classification",
        };
        if found != kind {
            let cmd = match found {
                "pretrain" => "dapt pretrain --resume",
                "partseg" => "dapt train --task partseg --resume",
                _ => "dapt train --resume",
            };
            let what = match found {
                "pretrain" => "a pre-training run",
                "partseg" => "a part-segmentation run",
                _ => "a classification run",
            };
            return Err(TrainError::Config(format!(
                "{}: {what}; resume it with `{cmd} {}`",
                self.path.display(),
                self.path.display()
            )));
        }
        Ok(v)
    }

    /// Appends one line to metrics.jsonl and syncs it.
    pub fn append_metrics(&self, line: &serde_json::Value) -> Result<(), TrainError> {
        use std::io::Write;
        let p = self.metrics_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        writeln!(f, "{line}").map_err(io_err(&p))?;
        f.sync_data().map_err(io_err(&p))
    }

    pub fn read_state(&self) -> Result<RunState, TrainError> {
        read_json(&self.state_path())
    }

    /// Commits one epoch as a unit (see the module doc). On an error (a full disk, a
    /// read-only directory) the previously committed epoch is left as it was.
    pub fn commit(&self, c: EpochCommit<'_>) -> Result<(), TrainError> {
        let cur = self.checkpoints();
        let next = self.path.join(NEXT);
        let prev = self.path.join(PREV);
        let result = self.stage(&c, &cur, &next);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&next);
            return result;
        }
        atomic_file::test_pause();
        if cur.exists() {
            std::fs::rename(&cur, &prev).map_err(io_err(&cur))?;
        }
        atomic_file::test_pause();
        std::fs::rename(&next, &cur).map_err(io_err(&next))?;
        atomic_file::sync_dir(&self.path);
        if prev.exists() {
            std::fs::remove_dir_all(&prev).map_err(io_err(&prev))?;
        }
        if let Some(Some((name, _))) = &c.best {
            self.publish(name)?;
        }
        Ok(())
    }

    fn stage(&self, c: &EpochCommit<'_>, cur: &Path, next: &Path) -> Result<(), TrainError> {
        if next.exists() {
            std::fs::remove_dir_all(next).map_err(io_err(next))?;
        }
        std::fs::create_dir_all(next).map_err(io_err(next))?;
        let last = next.join("last.safetensors");
        write_native(&last, &c.last.tensors, &c.last.meta)?;
        let opt = c.optimizer;
        write_native(
            &next.join("optimizer.safetensors"),
            &opt.state_tensors(),
            &serde_json::json!({"kind": "optimizer", "step": opt.step}),
        )?;
        match &c.best {
            Some(published) => {
                // the same bytes as `last`: a link, not a second serialisation of the model
                let best = next.join("best.safetensors");
                link_or_copy(&last, &best).map_err(io_err(&best))?;
                if let Some((name, f)) = published {
                    write_native(&next.join(name), &f.tensors, &f.meta)?;
                }
            }
            None => {
                // the best epoch is an earlier one: its files carry over unchanged
                for entry in std::fs::read_dir(cur).into_iter().flatten().flatten() {
                    let name = entry.file_name();
                    let keep = name == "best.safetensors"
                        || name == "adapter.safetensors"
                        || name == "backbone.safetensors";
                    if keep {
                        let dst = next.join(&name);
                        link_or_copy(&entry.path(), &dst).map_err(io_err(&dst))?;
                    }
                }
            }
        }
        let mut st = c.state.clone();
        st.metrics_bytes = Some(
            std::fs::metadata(self.metrics_path())
                .map(|m| m.len())
                .unwrap_or(0),
        );
        write_json(&next.join(STATE), &state_value(&st, c.state_keys)?)
    }

    /// Copies `checkpoints/NAME` to `RUN/NAME` (atomically), where users and the app find it.
    fn publish(&self, name: &str) -> Result<(), TrainError> {
        let src = self.checkpoints().join(name);
        let dst = self.path.join(name);
        let bytes = std::fs::read(&src).map_err(io_err(&src))?;
        atomic_file::write(&dst, &bytes).map_err(io_err(&dst))
    }

    /// Makes the published files match the committed epoch (a kill may have come between
    /// the swap and the copy).
    fn publish_all(&self) -> Result<(), TrainError> {
        for name in ["adapter.safetensors", "backbone.safetensors"] {
            let src = self.checkpoints().join(name);
            let dst = self.path.join(name);
            let same = match (std::fs::read(&src), std::fs::read(&dst)) {
                (Ok(a), Ok(b)) => a == b,
                (Err(_), _) => true,
                _ => false,
            };
            if !same {
                self.publish(name)?;
            }
        }
        Ok(())
    }
}

/// The state as written: `best_score` / `best_secondary` under the task's names.
fn state_value(
    st: &RunState,
    keys: (&'static str, Option<&'static str>),
) -> Result<serde_json::Value, TrainError> {
    let mut v = serde_json::to_value(st).map_err(|e| TrainError::Config(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        if let Some(s) = o.remove("best_score") {
            o.insert(keys.0.into(), s);
        }
        let second = o.remove("best_secondary");
        if let (Some(k), Some(s)) = (keys.1, second) {
            o.insert(k.into(), s);
        }
    }
    Ok(v)
}
