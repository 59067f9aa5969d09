//! The native window: eframe on wgpu around [`StudioApp`].

use super::{AppOptions, StudioApp};

struct EframeApp(StudioApp);

impl eframe::App for EframeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.0.ui_root(ui);
    }

    fn on_exit(&mut self) {
        self.0.save_settings();
    }
}

/// Opens the app window and runs until it is closed.
pub fn run_app(mut options: AppOptions) -> anyhow::Result<()> {
    let mut wgpu_options = egui_wgpu::WgpuConfiguration::default();
    if let Some(setup) = options.wgpu_setup.take() {
        wgpu_options.wgpu_setup = setup;
    }
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("DAPT Studio")
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        ..Default::default()
    };
    eframe::run_native(
        "DAPT Studio",
        native,
        Box::new(move |cc| {
            let rs = cc
                .wgpu_render_state
                .as_ref()
                .ok_or("the wgpu renderer is not available")?;
            crate::render::install(rs);
            Ok(Box::new(EframeApp(StudioApp::new(options))))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the app window failed: {e}"))
}
