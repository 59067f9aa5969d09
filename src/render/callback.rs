//! egui integration: a paint callback that draws the points inside an egui rect.
//! The [`PointRenderer`] lives in egui-wgpu's `callback_resources`, installed once per
//! `RenderState` with [`install`].

use egui_wgpu::{CallbackResources, CallbackTrait, RenderState, ScreenDescriptor};

use super::points::{FrameParams, PointData, PointRenderer};

/// Creates the renderer on `render_state`'s device and stores it in its callback resources.
/// Call once before the first frame (eframe: in the app creator; tests: before building the
/// harness renderer).
pub fn install(render_state: &RenderState) {
    let renderer = PointRenderer::new(&render_state.device, render_state.target_format, 1);
    render_state
        .renderer
        .write()
        .callback_resources
        .insert(renderer);
}

/// One frame's draw of the point cloud; cheap to create (the arrays are shared `Arc`s).
pub struct PointsCallback {
    pub data: PointData,
    pub params: FrameParams,
}

impl CallbackTrait for PointsCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen_descriptor: &ScreenDescriptor,
        egui_encoder: &mut wgpu::CommandEncoder,
        callback_resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(renderer) = callback_resources.get_mut::<PointRenderer>() {
            renderer.prepare(device, queue, egui_encoder, &self.data, &self.params);
        } else {
            log::warn!("point renderer not installed; call dapt::render::callback::install");
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        callback_resources: &CallbackResources,
    ) {
        if let Some(renderer) = callback_resources.get::<PointRenderer>() {
            renderer.paint(render_pass);
        }
    }
}
