//! The run configuration shared by `dapt train`, the app's run panel and `config.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::optim::AdamWConfig;
use crate::backend::BackendChoice;
use crate::model::{ModelConfig, ModelKind};

/// Which parameters train.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The official DAPT trainable set (cls, TFTS, adapters, head).
    #[default]
    Dapt,
    /// Point-MAE full fine-tuning: every parameter.
    Full,
    /// Linear probing: frozen Point-MAE backbone, head only.
    Linear,
}

impl Mode {
    pub fn model_kind(self) -> ModelKind {
        match self {
            Mode::Dapt => ModelKind::Dapt,
            Mode::Full | Mode::Linear => ModelKind::PointMae,
        }
    }

    /// Whether the parameter with this official name trains in this mode.
    pub fn trainable(self, name: &str) -> bool {
        match self {
            Mode::Dapt => crate::model::names::dapt_trainable(name),
            Mode::Full => true,
            Mode::Linear => name.starts_with("cls_head_finetune"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dapt => "dapt",
            Mode::Full => "full",
            Mode::Linear => "linear",
        }
    }
}

/// Everything needed to reproduce a run; saved as `config.json` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub mode: Mode,
    /// `synthetic`, `modelnet40:PATH`, `scanobjectnn:PATH`, `folder:PATH`, or a path.
    pub data: String,
    /// Backbone to start from: an official `pretrain.pth` or a native checkpoint.
    pub init: Option<PathBuf>,
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub batch: usize,
    pub val_batch: usize,
    pub optim: AdamWConfig,
    pub min_lr: f64,
    pub warmup_lr_init: f64,
    pub seed: u64,
    pub backend: BackendChoice,
    /// burn's gradient checkpointing: element-wise and shape ops are recomputed in backward
    /// instead of kept alive (BENCHMARKS.md: DAPT at the OBJ_BG config, batch 32, 3.3 GB to
    /// 2.3 GB peak; ~9% more time per step). `--no-checkpointing` turns it off.
    pub checkpointing: bool,
    /// Keep only each block's input and recompute the block in backward
    /// (`--recompute-blocks`, `train::recompute`): less memory, one more forward of the
    /// blocks per step. Runs saved before it existed read as `false`.
    pub recompute_blocks: bool,
    /// Points drawn by FPS before the random `npoints` subset (`None`: the official rule).
    pub point_all: Option<usize>,
    /// Emit a token-scale snapshot of a fixed test sample every N steps (0 = each epoch only).
    pub snapshot_every: usize,
    /// Apply `pc_normalize` to inputs (`None`: the data set's official choice).
    pub normalize: Option<bool>,
    /// Few-shot: train on at most this many labelled shapes per class, drawn with `seed`
    /// (`None`: the whole training split). The test split is always whole.
    pub shots: Option<usize>,
    pub out: PathBuf,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelConfig::small(8),
            mode: Mode::Dapt,
            data: "synthetic".into(),
            init: None,
            epochs: 300,
            warmup_epochs: 10,
            batch: 32,
            val_batch: 64,
            optim: AdamWConfig::default(),
            min_lr: 1e-6,
            warmup_lr_init: 1e-6,
            seed: 0,
            backend: BackendChoice::Auto,
            checkpointing: true,
            recompute_blocks: false,
            point_all: None,
            snapshot_every: 0,
            normalize: None,
            shots: None,
            out: PathBuf::from("runs/latest"),
        }
    }
}

impl TrainConfig {
    /// The demonstration `dapt train` runs with no arguments (and the app's run panel
    /// starts from): a small model on the synthetic shapes, minutes on two CPU cores.
    pub fn demo() -> Self {
        Self {
            model: ModelConfig::small(8),
            epochs: 15,
            // no warm-up: with the official one-epoch scheduler lag a short demo would spend
            // its first epochs at 1e-6
            warmup_epochs: 0,
            batch: 32,
            optim: AdamWConfig {
                lr: 2e-3,
                ..Default::default()
            },
            out: PathBuf::from("runs/demo"),
            ..TrainConfig::default()
        }
    }

    /// The official pre-sampling size (dapt-spec.md §2.2): 1200 for 1024 points, 2400 for
    /// 2048, 4800 / 8192 for 4096 / 8192; otherwise the same 1.17 ratio.
    pub fn point_all_for(&self, npoints: usize) -> usize {
        self.point_all.unwrap_or(match npoints {
            1024 => 1200,
            2048 => 2400,
            4096 => 4800,
            8192 => 8192,
            n => (n as f64 * 1200.0 / 1024.0).round() as usize,
        })
    }
}
