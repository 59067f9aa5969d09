//! `PointRenderer`: draws a point cloud as instanced, round, depth-tested screen-space sprites.
//!
//! The points are rendered into an offscreen colour + depth target owned by the renderer (so
//! depth testing works whatever depth buffer the host render pass has), then copied into the
//! host pass with a fullscreen triangle. Positions and colours live in separate GPU buffers,
//! each re-uploaded only when its generation counter changes: recolouring a million points
//! does not re-send the positions, and an unchanged frame uploads nothing but 80 bytes of
//! uniforms.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::camera::Mat4;

const DEPTH_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Depth32Float;
const OFFSCREEN_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

/// Per-frame parameters of a draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameParams {
    pub clip_from_world: Mat4,
    /// Size of the target area in physical pixels.
    pub viewport_px: [u32; 2],
    /// Point radius in physical pixels.
    pub radius_px: f32,
    /// When > 0, points have a world-space radius instead: that radius times the projection's
    /// y scale (`clip_from_view[1][1]`); `radius_px` is then ignored.
    pub world_radius_clip: f32,
    /// sRGB background, 0..=1.
    pub background: [f32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FrameUniform {
    clip_from_world: [[f32; 4]; 4],
    viewport_radius: [f32; 4],
}

/// Data for one draw: shared, versioned position and colour arrays.
#[derive(Clone, Debug, Default)]
pub struct PointData {
    pub positions: Arc<Vec<[f32; 3]>>,
    pub positions_generation: u64,
    /// RGBA8 sRGB, one per position.
    pub colors: Arc<Vec<[u8; 4]>>,
    pub colors_generation: u64,
}

struct Target {
    size: [u32; 2],
    color_view: wgpu::TextureView,
    depth_view: wgpu::TextureView,
    blit_bind_group: wgpu::BindGroup,
}

pub struct PointRenderer {
    points_pipeline: wgpu::RenderPipeline,
    blit_pipeline: wgpu::RenderPipeline,
    blit_layout: wgpu::BindGroupLayout,
    uniform_buffer: wgpu::Buffer,
    uniform_bind_group: wgpu::BindGroup,
    positions: Option<(u64, wgpu::Buffer)>,
    colors: Option<(u64, wgpu::Buffer)>,
    count: u32,
    target: Option<Target>,
    /// How many times a buffer was (re)uploaded; lets tests check the upload-once rule.
    pub uploads: u64,
    /// Whether the last `prepare` produced an image to blit.
    ready: bool,
}

impl PointRenderer {
    /// `host_format` / `host_samples`: colour format and MSAA count of the pass that the
    /// result is composited into (egui's: `RenderState::target_format`, usually 1 sample).
    pub fn new(device: &wgpu::Device, host_format: wgpu::TextureFormat, host_samples: u32) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("dapt points"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/points.wgsl").into()),
        });
        let uniform_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("dapt points uniforms"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let uniform_buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dapt points uniforms"),
            size: std::mem::size_of::<FrameUniform>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let uniform_bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("dapt points uniforms"),
            layout: &uniform_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: uniform_buffer.as_entire_binding(),
            }],
        });
        let points_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("dapt points"),
            bind_group_layouts: &[Some(&uniform_layout)],
            immediate_size: 0,
        });
        let buffers = [
            Some(wgpu::VertexBufferLayout {
                array_stride: 12,
                step_mode: wgpu::VertexStepMode::Instance,
                attributes: &wgpu::vertex_attr_array![0 => Float32x3],
            }),
            Some(wgpu::VertexBufferLayout {
                array_stride: 4,
                step_mode: wgpu::VertexStepMode::Instance,
                attributes: &wgpu::vertex_attr_array![1 => Unorm8x4],
            }),
        ];
        let points_pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("dapt points"),
            layout: Some(&points_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &buffers,
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: Some(wgpu::DepthStencilState {
                format: DEPTH_FORMAT,
                depth_write_enabled: Some(true),
                depth_compare: Some(wgpu::CompareFunction::Less),
                stencil: Default::default(),
                bias: Default::default(),
            }),
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(OFFSCREEN_FORMAT.into())],
            }),
            multiview_mask: None,
            cache: None,
        });
        let blit_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("dapt points blit"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Float { filterable: false },
                    view_dimension: wgpu::TextureViewDimension::D2,
                    multisampled: false,
                },
                count: None,
            }],
        });
        let blit_pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("dapt points blit"),
            bind_group_layouts: &[Some(&blit_layout)],
            immediate_size: 0,
        });
        let blit_pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("dapt points blit"),
            layout: Some(&blit_pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_blit"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState {
                count: host_samples.max(1),
                ..Default::default()
            },
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some(if host_format.is_srgb() {
                    "fs_blit_to_srgb"
                } else {
                    "fs_blit"
                }),
                compilation_options: Default::default(),
                targets: &[Some(host_format.into())],
            }),
            multiview_mask: None,
            cache: None,
        });
        Self {
            points_pipeline,
            blit_pipeline,
            blit_layout,
            uniform_buffer,
            uniform_bind_group,
            positions: None,
            colors: None,
            count: 0,
            target: None,
            uploads: 0,
            ready: false,
        }
    }

    /// Uploads changed data, then renders the points into the offscreen target.
    pub fn prepare(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        encoder: &mut wgpu::CommandEncoder,
        data: &PointData,
        params: &FrameParams,
    ) {
        self.ready = false;
        let [w, h] = params.viewport_px;
        if w == 0 || h == 0 {
            return;
        }
        let n = data.positions.len().min(data.colors.len());
        if self.positions.as_ref().map(|p| p.0) != Some(data.positions_generation) {
            self.positions = (!data.positions.is_empty()).then(|| {
                (
                    data.positions_generation,
                    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("dapt point positions"),
                        contents: bytemuck::cast_slice(data.positions.as_slice()),
                        usage: wgpu::BufferUsages::VERTEX,
                    }),
                )
            });
            self.uploads += 1;
        }
        if self.colors.as_ref().map(|c| c.0) != Some(data.colors_generation) {
            self.colors = (!data.colors.is_empty()).then(|| {
                (
                    data.colors_generation,
                    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("dapt point colours"),
                        contents: bytemuck::cast_slice(data.colors.as_slice()),
                        usage: wgpu::BufferUsages::VERTEX,
                    }),
                )
            });
            self.uploads += 1;
        }
        self.count = n as u32;
        if self.target.as_ref().map(|t| t.size) != Some([w, h]) {
            self.target = Some(self.create_target(device, [w, h]));
        }
        let uniform = FrameUniform {
            clip_from_world: params.clip_from_world,
            viewport_radius: [
                w as f32,
                h as f32,
                params.radius_px.max(0.5),
                params.world_radius_clip.max(0.0),
            ],
        };
        queue.write_buffer(&self.uniform_buffer, 0, bytemuck::bytes_of(&uniform));
        let Some(target) = &self.target else { return };
        let bg = params.background;
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("dapt points"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &target.color_view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color {
                        r: bg[0] as f64,
                        g: bg[1] as f64,
                        b: bg[2] as f64,
                        a: 1.0,
                    }),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: Some(wgpu::RenderPassDepthStencilAttachment {
                view: &target.depth_view,
                depth_ops: Some(wgpu::Operations {
                    load: wgpu::LoadOp::Clear(1.0),
                    store: wgpu::StoreOp::Discard,
                }),
                stencil_ops: None,
            }),
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        if let (Some((_, pos)), Some((_, col))) = (&self.positions, &self.colors)
            && self.count > 0
        {
            pass.set_pipeline(&self.points_pipeline);
            pass.set_bind_group(0, &self.uniform_bind_group, &[]);
            pass.set_vertex_buffer(0, pos.slice(..));
            pass.set_vertex_buffer(1, col.slice(..));
            pass.draw(0..6, 0..self.count);
        }
        drop(pass);
        self.ready = true;
    }

    /// Composites the last prepared image into `pass` (whose viewport is the view's rect).
    pub fn paint(&self, pass: &mut wgpu::RenderPass<'static>) {
        let Some(target) = &self.target else { return };
        if !self.ready {
            return;
        }
        pass.set_pipeline(&self.blit_pipeline);
        pass.set_bind_group(0, &target.blit_bind_group, &[]);
        pass.draw(0..3, 0..1);
    }

    pub fn point_count(&self) -> u32 {
        self.count
    }

    fn create_target(&self, device: &wgpu::Device, size: [u32; 2]) -> Target {
        let extent = wgpu::Extent3d {
            width: size[0],
            height: size[1],
            depth_or_array_layers: 1,
        };
        let make = |format, usage, label| {
            device
                .create_texture(&wgpu::TextureDescriptor {
                    label: Some(label),
                    size: extent,
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format,
                    usage,
                    view_formats: &[],
                })
                .create_view(&Default::default())
        };
        let color_view = make(
            OFFSCREEN_FORMAT,
            wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::TEXTURE_BINDING,
            "dapt points colour",
        );
        let depth_view = make(
            DEPTH_FORMAT,
            wgpu::TextureUsages::RENDER_ATTACHMENT,
            "dapt points depth",
        );
        let blit_bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("dapt points blit"),
            layout: &self.blit_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(&color_view),
            }],
        });
        Target {
            size,
            color_view,
            depth_view,
            blit_bind_group,
        }
    }
}
