//! Backend selection for every compute command (`--backend auto|wgpu|cpu`).
//!
//! `auto` takes wgpu when a hardware GPU adapter exists and burn's flex CPU backend
//! otherwise: Mesa's software Vulkan (lavapipe) is a correctness target for tests, ten
//! times slower than flex, so it is never picked automatically.

use burn::tensor::{Device, DeviceKind};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    #[default]
    Auto,
    Wgpu,
    Cpu,
}

/// The chosen device and a line describing it.
#[derive(Clone, Debug)]
pub struct Selected {
    pub device: Device,
    pub description: String,
    pub is_gpu: bool,
}

/// Name and type of the first hardware GPU adapter, if any. `DAPT_NO_GPU_PROBE=1` skips the
/// probe and reports none, so `auto` takes the CPU (the tests set it; scripts may too).
pub fn hardware_gpu() -> Option<String> {
    if std::env::var("DAPT_NO_GPU_PROBE").is_ok_and(|v| v == "1") {
        return None;
    }
    let instance = wgpu::Instance::default();
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.into_iter().find_map(|a| {
        let info = a.get_info();
        matches!(
            info.device_type,
            wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
        )
        .then(|| format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend))
    })
}

fn cpu() -> Selected {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Selected {
        device: Device::flex(),
        description: format!("cpu (burn-flex, {threads} threads)"),
        is_gpu: false,
    }
}

pub fn select(choice: BackendChoice) -> Selected {
    match choice {
        BackendChoice::Cpu => cpu(),
        BackendChoice::Wgpu => Selected {
            device: Device::wgpu(DeviceKind::DefaultDevice),
            description: format!(
                "wgpu ({})",
                hardware_gpu().unwrap_or_else(|| "default adapter; software if no GPU".into())
            ),
            is_gpu: true,
        },
        BackendChoice::Auto => match hardware_gpu() {
            Some(name) => Selected {
                device: Device::wgpu(DeviceKind::DefaultDevice),
                description: format!("wgpu ({name})"),
                is_gpu: true,
            },
            None => cpu(),
        },
    }
}
