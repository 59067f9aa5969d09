//! `dapt view`: the desktop app.

use std::path::PathBuf;

use crate::app::{self, AppOptions};

#[derive(clap::Args, Debug, Default)]
pub struct ViewArgs {
    /// Point-cloud files to open (PLY, TXT, NPY, OFF, OBJ).
    pub files: Vec<PathBuf>,
    /// Model checkpoint for predictions and dynamic scales.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Model / run config that goes with the checkpoint.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Close after N frames (smoke tests).
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
    /// Save a PNG of the window to PATH after the first frames, then exit.
    #[arg(long, value_name = "PATH")]
    pub screenshot: Option<PathBuf>,
    /// Initial colouring (rgb, height, truth, prediction, error, scale, patch).
    #[arg(long, value_enum)]
    pub colour_by: Option<crate::app::colouring::ColourBy>,
    /// Show the patch centres from the start.
    #[arg(long)]
    pub show_centres: bool,
    /// Screenshots (`P` and --screenshot) of the 3D view only, without the panels.
    #[arg(long)]
    pub view_only: bool,
    /// Screenshots of the 3D view with a transparent background (implies --view-only).
    #[arg(long)]
    pub transparent: bool,
    /// Layers to show, comma separated: points, truth, prediction, errors, centres, groups
    /// (copies of the cloud coloured by truth, prediction and errors sit side by side).
    #[arg(long, value_name = "LIST")]
    pub layers: Option<String>,
}

/// `--layers points,truth,...` as layer settings and whether the centres are shown.
pub fn parse_layers(list: &str) -> anyhow::Result<(app::LayerSettings, bool)> {
    let mut layers = app::LayerSettings {
        points: false,
        ..Default::default()
    };
    let mut centres = false;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name.to_ascii_lowercase().as_str() {
            "points" => layers.points = true,
            "truth" | "gt" | "ground-truth" => layers.truth = true,
            "prediction" | "pred" => layers.prediction = true,
            "errors" | "error" => layers.errors = true,
            "centres" | "centers" => centres = true,
            "groups" | "knn" => layers.groups = true,
            other => anyhow::bail!(
                "--layers: unknown layer `{other}` (points, truth, prediction, errors, centres, groups)"
            ),
        }
    }
    Ok((layers, centres))
}

pub fn run(args: ViewArgs) -> anyhow::Result<()> {
    let layers = args.layers.as_deref().map(parse_layers).transpose()?;
    // before anything touches the GPU: burn's runtime can be registered only once
    let wgpu_setup = app::native::shared_device_setup().map(|(setup, name)| {
        eprintln!("renderer and engine share one wgpu device: {name}");
        setup
    });
    let mut startup_message = None;
    let analyzer = match &args.checkpoint {
        None => None,
        Some(ckpt) => match app::model_hook::analyzer_from_checkpoint(ckpt, args.config.as_deref())
        {
            Ok(a) => Some(a),
            // the app still opens (the cloud is worth seeing); it says why there is no model
            Err(e) => {
                startup_message = Some(format!(
                    "could not load the model: {}",
                    super::output::error_chain(&e)
                ));
                None
            }
        },
    };
    // scripted runs (smoke tests, screenshots) neither read nor write the user's UI settings
    let scripted = args.frames.is_some() || args.screenshot.is_some();
    app::run_app(AppOptions {
        files: args.files,
        analyzer,
        launcher: Some(std::sync::Arc::new(app::model_hook::EngineLauncher)),
        max_frames: args.frames,
        screenshot: args.screenshot,
        settings_path: if scripted {
            None
        } else {
            app::default_settings_path()
        },
        screenshot_dir: None,
        wgpu_setup,
        startup_message,
        colour_by: args.colour_by,
        show_centers: args.show_centres || layers.as_ref().is_some_and(|l| l.1),
        screenshot_view_only: args.view_only,
        screenshot_transparent: args.transparent,
        layers: layers.map(|l| l.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_lists() {
        let (l, c) = parse_layers("truth, prediction,centres").unwrap();
        assert!(!l.points && l.truth && l.prediction && !l.errors && !l.groups && c);
        let (l, c) = parse_layers("points,groups").unwrap();
        assert!(l.points && l.groups && !c);
        let e = parse_layers("points,normals").unwrap_err().to_string();
        assert!(e.contains("`normals`"), "{e}");
    }
}
