//! The arguments the training subcommands share (`dapt train` for both tasks and
//! `dapt pretrain`), defined once and applied to each task's configuration through
//! `train::driver::RecipeFields`; and the model flags `dapt eval` and `dapt predict` share.

use std::path::PathBuf;

use crate::backend::BackendChoice;
use crate::train::Mode;
use crate::train::driver::RecipeFields;

/// What `train`, `eval` and `predict` work on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CliTask {
    /// Shape classification (the default).
    #[default]
    Classification,
    /// Part segmentation (Point-MAE segmentation head; ShapeNetPart or synthetic parts).
    Partseg,
}

/// The trained model `dapt eval` and `dapt predict` run, and where.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// `classification` (default) or `partseg`.
    #[arg(long, value_enum, default_value_t = CliTask::Classification)]
    pub task: CliTask,
    /// Native checkpoint (`checkpoints/best.safetensors`) or an official `.pth`.
    #[arg(long, required_unless_present = "adapter", conflicts_with_all = ["backbone", "adapter"])]
    pub checkpoint: Option<PathBuf>,
    /// Model config; required for an official classification `.pth`.
    #[arg(long, conflicts_with = "adapter")]
    pub config: Option<PathBuf>,
    /// Point-MAE backbone (official `pretrain.pth`, `dapt pretrain`'s `backbone.safetensors` or
    /// `pretrain.pth`, or any checkpoint holding its tensors) to apply `--adapter` on.
    #[arg(long, requires = "adapter")]
    pub backbone: Option<PathBuf>,
    /// A run's `adapter.safetensors`, applied on top of `--backbone`.
    #[arg(long, requires = "backbone")]
    pub adapter: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// JSON on stdout only.
    #[arg(long)]
    pub json: bool,
}

impl ModelArgs {
    /// The device of `--backend`, said on stderr unless `--json`.
    pub fn device(&self) -> burn::tensor::Device {
        let selected = crate::backend::select(self.backend);
        if !self.json {
            eprintln!("backend: {}", selected.description);
        }
        selected.device
    }

    /// The classifier of `--checkpoint [--config]` or of `--backbone --adapter` (clap makes
    /// sure exactly one of the two is given).
    pub fn classifier(
        &self,
        device: &burn::tensor::Device,
    ) -> anyhow::Result<crate::model::load::LoadedClassifier> {
        use crate::model::load::{load_classifier, load_classifier_with_adapter};
        match (&self.checkpoint, &self.backbone, &self.adapter) {
            (Some(c), _, _) => Ok(load_classifier(c, self.config.as_deref(), device)?),
            (None, Some(b), Some(a)) => Ok(load_classifier_with_adapter(b, a, device)?),
            _ => anyhow::bail!("pass --checkpoint, or --backbone with --adapter"),
        }
    }

    /// The segmentation model of `--checkpoint` or of `--backbone --adapter` (a partseg
    /// run's adapter file).
    pub fn segmenter(
        &self,
        device: &burn::tensor::Device,
    ) -> anyhow::Result<crate::infer::segment::LoadedPartSeg> {
        use crate::model::load::{assemble_partseg, read_backbone_and_adapter};
        match (&self.checkpoint, &self.backbone, &self.adapter) {
            (Some(c), _, _) => Ok(crate::infer::segment::load_partseg_checkpoint(c, device)?),
            (None, Some(b), Some(a)) => {
                let (backbone, adapter) = read_backbone_and_adapter(b, a)?;
                let m = assemble_partseg(&backbone, &adapter, device)?;
                Ok(crate::infer::segment::LoadedPartSeg {
                    model: m.model,
                    category_names: m.category_names,
                    category_parts: m.category_parts,
                    normalize: m.normalize,
                })
            }
            _ => anyhow::bail!("pass --checkpoint, or --backbone with --adapter"),
        }
    }
}

/// Flags of every training run.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// Official YAML (`cfgs/*.yaml`, or a bare `model:` block) or a run's config.json.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `synthetic` (default), `modelnet40:PATH`, `scanobjectnn:PATH`, `shapenetpart:PATH`,
    /// `shapenet55:PATH`, `folder:PATH`, `modelnet40fewshot:PATH`, or a path whose layout is
    /// detected.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Run directory (default `runs/<kind>-<data>`, or the demo's).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run (killed, stopped or Ctrl-C'd at any moment) from its last
    /// completed epoch.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Keep every intermediate of the forward pass for backward instead of recomputing the
    /// element-wise ones (burn's gradient checkpointing, on by default: same results, a third
    /// less memory, ~9% more time per step as measured on the CPU).
    #[arg(long)]
    pub no_checkpointing: bool,
    /// JSON lines only on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Flags of the fine-tuning tasks (classification and part segmentation).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct FineTuneArgs {
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Backbone to start from: the official Point-MAE `pretrain.pth` or a native checkpoint;
    /// `none` for a randomly initialised backbone (the demo otherwise starts from the small
    /// backbone pre-trained here, `assets/demo/`).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Points fed to the model (overrides the config's npoints).
    #[arg(long)]
    pub points: Option<usize>,
    /// Force / forbid pc_normalize on inputs (default: the data set's official choice).
    #[arg(long, overrides_with = "no_normalize")]
    pub normalize: bool,
    #[arg(long)]
    pub no_normalize: bool,
}

/// The fine-tuning fields [`FineTuneArgs`] sets.
pub struct FineTuneSettings<'a> {
    pub mode: &'a mut Mode,
    pub init: &'a mut Option<PathBuf>,
    pub npoints: &'a mut usize,
    pub normalize: &'a mut Option<bool>,
}

impl RunArgs {
    /// Applies every flag that was given to `cfg`.
    pub fn apply(&self, cfg: &mut impl RecipeFields) {
        let s = cfg.recipe_mut();
        if let Some(d) = &self.data {
            *s.data = d.clone();
        }
        if let Some(v) = self.epochs {
            *s.epochs = v;
            // a short run keeps at most half of it for warm-up
            *s.warmup_epochs = (*s.warmup_epochs).min(v / 2);
        }
        if let Some(v) = self.warmup_epochs {
            *s.warmup_epochs = v;
        }
        if let Some(v) = self.batch {
            *s.batch = v;
        }
        if let Some(v) = self.lr {
            s.optim.lr = v;
        }
        if let Some(v) = self.weight_decay {
            s.optim.weight_decay = v;
        }
        if let Some(v) = self.seed {
            *s.seed = v;
        }
        if let Some(v) = self.backend {
            *s.backend = v;
        }
        if self.no_checkpointing {
            *s.checkpointing = false;
        }
    }

    /// `--out`, or `runs/<prefix>-<data>` with the data spec made file-name safe.
    pub fn out_or(&self, prefix: &str, data: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let tag: String = data
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            PathBuf::from(format!("runs/{prefix}-{tag}"))
        })
    }

    /// Neither a config nor data nor a run directory: the demo, which may be run again
    /// (a finished demo directory is started afresh rather than refused).
    pub fn is_demo(&self) -> bool {
        self.config.is_none() && self.data.is_none() && self.out.is_none()
    }
}

impl FineTuneArgs {
    /// Whether `--init` was given at all (`--init none` included).
    pub fn init_given(&self) -> bool {
        self.init.is_some()
    }

    pub fn apply(&self, s: FineTuneSettings<'_>) {
        if let Some(m) = self.mode {
            *s.mode = m;
        }
        if let Some(init) = &self.init {
            *s.init = (init.as_os_str() != "none").then(|| init.clone());
        }
        if let Some(v) = self.points {
            *s.npoints = v;
        }
        if self.normalize {
            *s.normalize = Some(true);
        }
        if self.no_normalize {
            *s.normalize = Some(false);
        }
    }
}
