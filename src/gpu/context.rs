//! The wgpu device the sampling kernels run on, their compiled pipelines, and the plumbing
//! shared by every kernel launch (buffer limits, error scopes, read-back).
//!
//! A [`GpuContext`] either creates its own device ([`GpuContext::new`]) or wraps one created
//! elsewhere ([`GpuContext::from_existing`]) so that the app, burn and these kernels can share a
//! single device. Pipelines are compiled on first use and cached in the context; clones of a
//! context share that cache.

use std::sync::{Arc, Mutex, OnceLock, mpsc};

use wgpu::util::DeviceExt;

/// Errors of the GPU sampling kernels.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No wgpu adapter at all: no GPU driver and no software Vulkan/GL implementation.
    #[error(
        "no wgpu adapter found ({0}); on a machine without a GPU install Mesa's software Vulkan \
         driver (lavapipe): `apt-get install mesa-vulkan-drivers`"
    )]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("could not create a wgpu device: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),
    /// The arguments do not describe a valid problem (slice lengths, k, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A single cloud needs a larger buffer than the device allows (batches are split into
    /// chunks automatically; one cloud cannot be).
    #[error(
        "{what} needs a {bytes}-byte buffer but the device allows at most {limit} bytes per \
         storage buffer"
    )]
    BufferTooLarge {
        /// Which buffer did not fit.
        what: &'static str,
        /// Bytes it would need.
        bytes: u64,
        /// The device's limit.
        limit: u64,
    },
    /// The device was lost (driver reset, `destroy`, ...); create a new context.
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// wgpu reported a validation or out-of-memory error for a kernel launch.
    #[error("wgpu error during {during}: {source}")]
    Wgpu {
        /// The operation that failed.
        during: &'static str,
        /// wgpu's error.
        source: wgpu::Error,
    },
    /// Waiting for the queue failed.
    #[error("waiting for the GPU failed: {0}")]
    Poll(#[from] wgpu::PollError),
    /// Mapping the read-back buffer failed (usually a lost device).
    #[error("reading results back from the GPU failed: {0}")]
    ReadBack(String),
}

/// Which cached pipeline.
#[derive(Clone, Copy)]
pub(crate) enum Kernel {
    Fps,
    Knn,
}

/// Compiled pipelines, created lazily: lavapipe takes a noticeable time per shader, and a
/// context used only for FPS should not pay for KNN.
#[derive(Default)]
struct Pipelines {
    fps: OnceLock<wgpu::ComputePipeline>,
    knn: OnceLock<wgpu::ComputePipeline>,
}

/// A wgpu device and queue plus the sampling pipelines compiled for it.
#[derive(Clone)]
pub struct GpuContext {
    /// The device the kernels run on.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Which adapter the device belongs to (name, backend, device type).
    pub adapter_info: wgpu::AdapterInfo,
    pipelines: Arc<Pipelines>,
    /// Set by the device-lost callback when this context created the device itself.
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter_info.name)
            .field("backend", &self.adapter_info.backend)
            .field("device_type", &self.adapter_info.device_type)
            .finish_non_exhaustive()
    }
}

/// Preference order when the default adapter request fails and we pick one ourselves.
fn adapter_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl GpuContext {
    /// Creates a device on the default high-performance adapter, falling back to any adapter
    /// (software ones such as lavapipe included). Honours `WGPU_BACKEND` and friends.
    pub fn new() -> Result<Self, GpuError> {
        pollster::block_on(Self::new_async())
    }

    async fn new_async() -> Result<Self, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = match instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
        {
            Ok(a) => a,
            Err(first) => {
                // The default request can reject software adapters; take the best of whatever
                // exists instead of failing.
                let mut all = instance.enumerate_adapters(wgpu::Backends::all()).await;
                all.sort_by_key(|a| adapter_rank(a.get_info().device_type));
                match all.into_iter().next() {
                    Some(a) => a,
                    None => return Err(GpuError::NoAdapter(first.to_string())),
                }
            }
        };
        let adapter_info = adapter.get_info();
        // Ask for everything the adapter offers: the default limits cap storage buffers at
        // 128 MiB (and far less on the downlevel defaults), which would force tiny chunks.
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("dapt sampling"),
                required_features: wgpu::Features::empty(),
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await?;
        let lost = Arc::new(Mutex::new(None));
        let lost_cb = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut slot) = lost_cb.lock() {
                *slot = Some(format!("{reason:?}: {msg}"));
            }
        });
        log::info!(
            "GPU sampling on {} ({:?}, {:?})",
            adapter_info.name,
            adapter_info.backend,
            adapter_info.device_type
        );
        Ok(Self {
            device,
            queue,
            adapter_info,
            pipelines: Arc::default(),
            lost,
        })
    }

    /// Wraps a device created elsewhere (burn's, eframe's) so all of them share one device.
    /// The owner keeps its own device-lost handling; this context does not install a callback.
    pub fn from_existing(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_info: wgpu::AdapterInfo,
    ) -> Self {
        Self {
            device,
            queue,
            adapter_info,
            pipelines: Arc::default(),
            lost: Arc::default(),
        }
    }

    /// The largest single storage buffer a kernel may bind, in bytes. Also capped at
    /// `u32::MAX` because the shaders index with `u32`.
    pub fn max_storage_bytes(&self) -> u64 {
        let l = self.device.limits();
        l.max_storage_buffer_binding_size
            .min(l.max_buffer_size)
            .min(u64::from(u32::MAX))
    }

    /// The most workgroups one dispatch may have along x.
    pub(crate) fn max_workgroups(&self) -> u32 {
        self.device.limits().max_compute_workgroups_per_dimension
    }

    /// The error for a lost device, if the callback saw one.
    fn lost_error(&self) -> Option<GpuError> {
        let slot = self.lost.lock().ok()?;
        slot.as_ref().map(|m| GpuError::DeviceLost(m.clone()))
    }

    /// The cached pipeline of `kernel`, compiled on first use.
    pub(crate) fn pipeline(&self, kernel: Kernel) -> Result<wgpu::ComputePipeline, GpuError> {
        let (cell, label, source) = match kernel {
            Kernel::Fps => (
                &self.pipelines.fps,
                "dapt fps",
                include_str!("../../shaders/fps.wgsl"),
            ),
            Kernel::Knn => (
                &self.pipelines.knn,
                "dapt knn",
                include_str!("../../shaders/knn.wgsl"),
            ),
        };
        if let Some(p) = cell.get() {
            return Ok(p.clone());
        }
        let scope = ErrorScope::push(&self.device);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        scope.pop(self, "pipeline creation")?;
        // Two threads may race to compile; the loser's pipeline is simply dropped.
        Ok(cell.get_or_init(|| pipeline).clone())
    }

    /// One kernel launch: uploads `inputs`, allocates `scratch` and an `out_bytes` output,
    /// binds them in that order (0, 1, ...) followed by the `params` uniform, dispatches
    /// `workgroups` workgroups along x, and reads the output back as `u32`s.
    ///
    /// Everything from buffer creation to submission runs inside error scopes, so a device
    /// that runs out of memory gives a [`GpuError`] instead of wgpu's default panic.
    pub(crate) fn launch(
        &self,
        kernel: Kernel,
        inputs: &[&[u8]],
        scratch: &[u64],
        out_bytes: u64,
        params: &[u8],
        workgroups: u32,
    ) -> Result<Vec<u32>, GpuError> {
        if let Some(e) = self.lost_error() {
            return Err(e);
        }
        let pipeline = self.pipeline(kernel)?;
        let scope = ErrorScope::push(&self.device);
        let mut buffers: Vec<wgpu::Buffer> = inputs
            .iter()
            .map(|data| {
                self.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("dapt sampling input"),
                        contents: data,
                        usage: wgpu::BufferUsages::STORAGE,
                    })
            })
            .collect();
        for &size in scratch.iter().chain([&out_bytes]) {
            buffers.push(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("dapt sampling scratch/output"),
                size,
                // only the output is copied out, but COPY_SRC on scratch costs nothing
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }));
        }
        buffers.push(
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("dapt sampling params"),
                    contents: params,
                    usage: wgpu::BufferUsages::UNIFORM,
                }),
        );
        let out = &buffers[buffers.len() - 2];
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("dapt sampling"),
            layout: &layout,
            entries: &entries,
        });
        let size = out.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dapt sampling read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("dapt sampling"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("dapt sampling"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups, 1, 1);
        }
        encoder.copy_buffer_to_buffer(out, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        scope.pop(self, "kernel launch")?;

        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // the receiver only disappears if we already returned; nothing to report then
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely())?;
        let mapped = match rx.recv() {
            Ok(Ok(())) => staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::ReadBack(e.to_string()))?,
            Ok(Err(e)) => {
                return Err(self
                    .lost_error()
                    .unwrap_or(GpuError::ReadBack(e.to_string())));
            }
            Err(_) => {
                return Err(self.lost_error().unwrap_or(GpuError::ReadBack(
                    "the map callback was dropped without being called".into(),
                )));
            }
        };
        // `pod_collect_to_vec` copies, so the mapping's alignment does not matter.
        let result: Vec<u32> = bytemuck::pod_collect_to_vec(&mapped);
        drop(mapped);
        staging.unmap();
        if let Some(e) = self.lost_error() {
            return Err(e);
        }
        Ok(result)
    }
}

/// Validation and out-of-memory error scopes around a group of wgpu calls, so a bad launch
/// comes back as a [`GpuError`] instead of wgpu's default panic-on-uncaptured-error.
struct ErrorScope {
    oom: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
}

impl ErrorScope {
    fn push(device: &wgpu::Device) -> Self {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        Self { oom, validation }
    }

    fn pop(self, ctx: &GpuContext, during: &'static str) -> Result<(), GpuError> {
        // scopes pop in reverse order of their pushes
        let validation = pollster::block_on(self.validation.pop());
        let oom = pollster::block_on(self.oom.pop());
        match validation.or(oom) {
            None => Ok(()),
            Some(source) => Err(ctx
                .lost_error()
                .unwrap_or(GpuError::Wgpu { during, source })),
        }
    }
}
