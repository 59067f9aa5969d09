//! Where a checkpoint becomes an [`Analyzer`]. The model engineer fills this in; until then
//! the app opens without a model and says "no model loaded".

use std::path::Path;
use std::sync::Arc;

use super::analysis::Analyzer;

pub fn analyzer_from_checkpoint(
    checkpoint: &Path,
    config: Option<&Path>,
) -> anyhow::Result<Arc<dyn Analyzer>> {
    let _ = config;
    anyhow::bail!("model loading not wired yet: {}", checkpoint.display())
}
