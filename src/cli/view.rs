//! `dapt view`: the desktop app.

use std::path::PathBuf;

#[derive(clap::Args, Debug, Default)]
pub struct ViewArgs {
    /// Point-cloud files to open (PLY, TXT, NPY, OFF, OBJ).
    pub files: Vec<PathBuf>,
}

pub fn run(_args: ViewArgs) -> anyhow::Result<()> {
    anyhow::bail!("the viewer is not built yet")
}
