//! Where a training step's time goes: data, forward, backward, optimizer.
//!
//! Off unless `DAPT_PHASE_TIMES=1`, because attributing time to a phase on a GPU means waiting
//! for the device at each phase boundary, which stops the queue from running ahead (the very
//! overlap `dapt bench` and `dapt train` otherwise keep). On burn-flex the waits cost nothing.
//! With it on, `dapt bench --json` reports `phases_ms` (mean per timed step) and `dapt train`
//! notes the epoch's breakdown.
//!
//! Totals are per thread, as [`crate::readback`]'s count: a step runs on the thread that calls
//! it.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Instant;

use burn::tensor::Device;

/// The parts of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Sampling and augmenting the batch, uploading it.
    Data,
    /// Grouping, the network and the loss.
    Forward,
    /// Gradients.
    Backward,
    /// Clipping and AdamW.
    Optimizer,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Data,
        Phase::Forward,
        Phase::Backward,
        Phase::Optimizer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Data => "data",
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Seconds spent in each phase (indexed as [`Phase::ALL`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTotals(pub [f64; 4]);

impl PhaseTotals {
    pub fn get(&self, p: Phase) -> f64 {
        self.0[p.index()]
    }

    /// `self - earlier`, phase by phase.
    pub fn since(&self, earlier: &PhaseTotals) -> PhaseTotals {
        PhaseTotals(std::array::from_fn(|i| self.0[i] - earlier.0[i]))
    }

    /// Milliseconds per step for each phase, as a JSON object.
    pub fn per_step_ms(&self, steps: usize) -> serde_json::Value {
        let steps = steps.max(1) as f64;
        Phase::ALL
            .iter()
            .map(|&p| {
                (
                    p.name().to_string(),
                    serde_json::json!(self.get(p) * 1e3 / steps),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// `data 12 ms, forward 340 ms, ...` per step.
    pub fn describe(&self, steps: usize) -> String {
        let steps = steps.max(1) as f64;
        Phase::ALL
            .iter()
            .map(|&p| format!("{} {:.0} ms", p.name(), self.get(p) * 1e3 / steps))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

thread_local! {
    static TOTALS: RefCell<PhaseTotals> = RefCell::new(PhaseTotals::default());
}

/// Whether phase timing is on (`DAPT_PHASE_TIMES` set to anything but `0` or empty).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("DAPT_PHASE_TIMES").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// The totals so far on this thread.
pub fn totals() -> PhaseTotals {
    TOTALS.with(|t| *t.borrow())
}

/// A stopwatch over consecutive phases of one step; does nothing unless [`enabled`].
pub struct Clock {
    device: Device,
    last: Option<Instant>,
}

impl Clock {
    /// Waits for `device` (so earlier work is not charged to the first phase) and starts.
    pub fn start(device: &Device) -> Self {
        let last = enabled().then(|| {
            wait(device);
            Instant::now()
        });
        Self {
            device: device.clone(),
            last,
        }
    }

    /// Charges the time since the last lap, device work included, to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        if let Some(t) = self.last {
            wait(&self.device);
            let secs = t.elapsed().as_secs_f64();
            TOTALS.with(|tot| tot.borrow_mut().0[phase.index()] += secs);
            self.last = Some(Instant::now());
        }
    }
}

/// A failed sync only makes the attribution rougher; the step itself reports device errors.
fn wait(device: &Device) {
    let _ = device.sync();
}
