//! The training-recipe keys of the official YAML configs (`optimizer.kwargs`,
//! `scheduler.kwargs`, `total_bs`, `grad_norm_clip`), read once for every command that
//! accepts them.

/// Each key is `None` when the file does not set it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OfficialRecipe {
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub epochs: Option<usize>,
    pub warmup_epochs: Option<usize>,
    pub batch: Option<usize>,
    pub grad_clip: Option<f64>,
}

fn yaml_f64(v: &serde_yaml::Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_f64()
}

impl OfficialRecipe {
    pub fn from_yaml(root: &serde_yaml::Value) -> Self {
        let count = |path: &[&str]| yaml_f64(root, path).map(|v| v as usize);
        Self {
            lr: yaml_f64(root, &["optimizer", "kwargs", "lr"]),
            weight_decay: yaml_f64(root, &["optimizer", "kwargs", "weight_decay"]),
            epochs: count(&["scheduler", "kwargs", "epochs"]),
            warmup_epochs: count(&["scheduler", "kwargs", "initial_epochs"]),
            batch: count(&["total_bs"]),
            grad_clip: yaml_f64(root, &["grad_norm_clip"]),
        }
    }
}
