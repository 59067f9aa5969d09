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

/// Creates burn's default wgpu device first and returns its handles for the renderer, so the
/// viewer and the engine (analysis and the run panel's training, which pick wgpu on a
/// hardware GPU) draw and compute on one device and queue. Only where a hardware GPU exists
/// (lavapipe is the CPU, and the engine then runs on burn-flex), unless `DAPT_SHARE_GPU=1`
/// forces it; `DAPT_SHARE_GPU=0` turns it off. Returns the setup and the adapter's name.
pub fn shared_device_setup() -> Option<(egui_wgpu::WgpuSetup, String)> {
    match std::env::var("DAPT_SHARE_GPU").ok().as_deref() {
        Some("0") => return None,
        Some("1") => {}
        _ => {
            crate::backend::hardware_gpu()?;
        }
    }
    match burn::tensor::Device::wgpu_options().init_with_setup() {
        Ok((_, s)) => {
            let name = s.adapter.get_info().name;
            let setup = egui_wgpu::WgpuSetup::Existing(egui_wgpu::WgpuSetupExisting {
                instance: s.instance,
                adapter: s.adapter,
                device: s.device,
                queue: s.queue,
            });
            Some((setup, name))
        }
        Err(e) => {
            eprintln!("note: the renderer gets its own wgpu device ({e})");
            None
        }
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
