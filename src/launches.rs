//! Counts the compute kernels the process launches, through CubeCL's launch observer, so
//! `dapt bench` and the tests can say how many launches a training step costs.
//!
//! Only CubeCL backends (wgpu) launch kernels; burn-flex runs on the host and counts none.
//! With burn's fusion on, kernels are issued when a fused stream is flushed (at a sync or a
//! read), so a count is only complete after [`Device::sync`](burn::tensor::Device::sync).
//! The observer is process-wide: launches from every thread are counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cubecl_runtime::logging::{LaunchObservation, LaunchObserver};

#[derive(Default)]
struct Counter {
    total: AtomicU64,
    by_kernel: Mutex<HashMap<&'static str, u64>>,
}

impl LaunchObserver for Counter {
    fn launched(&self, kernel: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        // a poisoned map only loses the breakdown, never the total
        if let Ok(mut map) = self.by_kernel.lock() {
            *map.entry(kernel).or_default() += 1;
        }
    }
}

/// Counts launches from [`LaunchCount::start`] until it is dropped. One count at a time:
/// a second replaces the first while it lives (CubeCL has a single observer slot).
pub struct LaunchCount {
    counter: Arc<Counter>,
    _observation: LaunchObservation,
}

impl LaunchCount {
    pub fn start() -> Self {
        let counter = Arc::new(Counter::default());
        let observation = LaunchObservation::new(counter.clone());
        Self {
            counter,
            _observation: observation,
        }
    }

    /// Kernels launched so far.
    pub fn total(&self) -> u64 {
        self.counter.total.load(Ordering::Relaxed)
    }

    /// Launches per kernel, most launched first, names shortened to their last path segment
    /// with generic arguments dropped (`cubecl::...::ElemwiseKernel<f32>` → `ElemwiseKernel`).
    pub fn by_kernel(&self) -> Vec<(String, u64)> {
        let map = match self.counter.by_kernel.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut merged: HashMap<String, u64> = HashMap::new();
        for (name, n) in map {
            *merged.entry(short_name(name)).or_default() += n;
        }
        let mut out: Vec<(String, u64)> = merged.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

fn short_name(name: &str) -> String {
    let base = name.split('<').next().unwrap_or(name);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn short_names_drop_paths_and_generics() {
        assert_eq!(
            short_name("cubecl_std::tensor::ElemwiseKernel<f32, cubecl::Foo>"),
            "ElemwiseKernel"
        );
        assert_eq!(short_name("plain"), "plain");
    }
}
