//! The run directory: `config.json`, `metrics.jsonl`, `checkpoints/{last,best}.safetensors`,
//! optimizer and RNG state for `--resume`, and the adapter-only file of the best epoch.
//! Every write is atomic.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::TrainConfig;
use super::events::{CheckpointKind, EpochMetrics};
use super::optim::AdamW;
use crate::data::Rng;
use crate::model::Classifier;
use crate::model::checkpoint::{atomic_write, write_native};
use crate::model::load::{ADAPTER_KIND, adapter_metadata, split_for_adapter};
use crate::model::names::Reader;

pub struct RunDir {
    pub path: PathBuf,
}

/// What `--resume` needs besides the `last` checkpoint and the optimizer moments.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub optimizer_step: u64,
    pub rng: Rng,
    pub best_epoch: usize,
    pub best_overall_accuracy: f64,
    pub best_mean_class_accuracy: f64,
}

impl RunState {
    pub fn read(dir: &RunDir) -> Result<Self, TrainError> {
        dir.read_state()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

impl RunDir {
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        if path.join("checkpoints/state.json").exists() {
            return Err(TrainError::Config(format!(
                "{}: already holds a run; pass --resume {} to continue it or choose another --out",
                path.display(),
                path.display()
            )));
        }
        std::fs::create_dir_all(path.join("checkpoints")).map_err(io_err(path))?;
        // a fresh run starts a fresh metrics file
        let m = path.join("metrics.jsonl");
        if m.exists() {
            std::fs::remove_file(&m).map_err(io_err(&m))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn open(path: &Path) -> Result<Self, TrainError> {
        if !path.join("config.json").is_file() || !path.join("checkpoints/state.json").is_file() {
            return Err(TrainError::Config(format!(
                "{}: not a resumable run directory (config.json and checkpoints/state.json are needed; a run that never finished an epoch cannot be resumed)",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn last_path(&self) -> PathBuf {
        self.path.join("checkpoints/last.safetensors")
    }
    pub fn best_path(&self) -> PathBuf {
        self.path.join("checkpoints/best.safetensors")
    }
    pub fn optimizer_path(&self) -> PathBuf {
        self.path.join("checkpoints/optimizer.safetensors")
    }
    pub fn adapter_path(&self) -> PathBuf {
        self.path.join("adapter.safetensors")
    }

    pub fn write_config(
        &self,
        cfg: &TrainConfig,
        class_names: &[String],
    ) -> Result<(), TrainError> {
        let mut v = serde_json::to_value(cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("class_names".into(), serde_json::json!(class_names));
        }
        let p = self.path.join("config.json");
        let text =
            serde_json::to_string_pretty(&v).map_err(|e| TrainError::Config(e.to_string()))?;
        atomic_write(&p, text.as_bytes()).map_err(io_err(&p))
    }

    pub fn read_config(&self) -> Result<TrainConfig, TrainError> {
        let p = self.path.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
        // runs of the other tasks share the layout; say which command resumes them
        match v.get("kind").and_then(|k| k.as_str()) {
            Some("pretrain") => {
                return Err(TrainError::Config(format!(
                    "{}: a pre-training run; resume it with `dapt pretrain --resume {}`",
                    self.path.display(),
                    self.path.display()
                )));
            }
            Some("partseg") => {
                return Err(TrainError::Config(format!(
                    "{}: a part-segmentation run; resume it with `dapt train --task partseg --resume {}`",
                    self.path.display(),
                    self.path.display()
                )));
            }
            _ => {}
        }
        serde_json::from_value(v).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))
    }

    pub fn append_metrics(&self, m: &EpochMetrics) -> Result<(), TrainError> {
        let p = self.path.join("metrics.jsonl");
        let line = serde_json::to_string(m).map_err(|e| TrainError::Config(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        writeln!(f, "{line}").map_err(io_err(&p))?;
        f.sync_data().map_err(io_err(&p))
    }

    pub fn write_state(&self, st: &RunState) -> Result<(), TrainError> {
        let p = self.path.join("checkpoints/state.json");
        let text =
            serde_json::to_string_pretty(st).map_err(|e| TrainError::Config(e.to_string()))?;
        atomic_write(&p, text.as_bytes()).map_err(io_err(&p))
    }

    pub fn read_state(&self) -> Result<RunState, TrainError> {
        let p = self.path.join("checkpoints/state.json");
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))
    }

    /// Metadata stored in every native checkpoint of the run.
    pub fn checkpoint_meta(
        &self,
        cfg: &TrainConfig,
        class_names: &[String],
        epoch: usize,
    ) -> serde_json::Value {
        serde_json::json!({
            "kind": "classifier",
            "model": cfg.model,
            "mode": cfg.mode,
            "class_names": class_names,
            "normalize": cfg.normalize.unwrap_or(false),
            "epoch": epoch,
            "init": cfg.init,
        })
    }

    pub fn save_model(
        &self,
        model: &Classifier,
        kind: CheckpointKind,
        meta: &serde_json::Value,
    ) -> Result<PathBuf, TrainError> {
        let p = match kind {
            CheckpointKind::Last => self.last_path(),
            CheckpointKind::Best => self.best_path(),
        };
        let mut r = Reader::new();
        burn::module::Module::visit(model, &mut r);
        write_native(&p, &r.out, meta)?;
        Ok(p)
    }

    pub fn save_optimizer(&self, opt: &AdamW) -> Result<(), TrainError> {
        let p = self.optimizer_path();
        write_native(
            &p,
            &opt.state_tensors(),
            &serde_json::json!({"kind": "optimizer", "step": opt.step}),
        )?;
        Ok(())
    }

    /// The adapter file of the model `meta` describes (the engine passes the best epoch's):
    /// the trained tensors, the BatchNorm buffers (which drift in train mode) and whatever a
    /// backbone file has no tensor for, with the content hash of the frozen backbone tensors
    /// so `dapt predict --backbone B --adapter A` can check B is the backbone it was trained
    /// on (`model::load`). Returns its size in bytes.
    pub fn save_adapter(
        &self,
        model: &Classifier,
        cfg: &TrainConfig,
        meta: &serde_json::Value,
    ) -> Result<u64, TrainError> {
        let mut r = Reader::new();
        burn::module::Module::visit(model, &mut r);
        let mode = cfg.mode;
        let split = split_for_adapter(r.out, |n| mode.trainable(n));
        let mut meta = adapter_metadata(meta, ADAPTER_KIND, &split, cfg.init.as_deref());
        if let Some(o) = meta.as_object_mut() {
            o.insert("task".into(), serde_json::json!("classification"));
            o.insert("seed".into(), serde_json::json!(cfg.seed));
        }
        Ok(write_native(&self.adapter_path(), &split.tensors, &meta)?)
    }
}
