//! Every device-to-host read of the training and inference paths goes through here, so the
//! number of reads a step performs is a real count (`dapt bench` reports it as
//! `host_reads_per_step`). On a GPU each read blocks the host until the queue has drained;
//! on burn-flex it is a copy.
//!
//! The count is per thread: a step runs on the thread that calls it, and tests running in
//! parallel threads do not see each other's reads.

use std::cell::Cell;

use burn::tensor::{Int, Tensor};

thread_local! {
    static READS: Cell<u64> = const { Cell::new(0) };
}

fn counted() {
    READS.with(|r| r.set(r.get() + 1));
}

/// Reads made on this thread so far.
pub fn reads_on_this_thread() -> u64 {
    READS.with(|r| r.get())
}

/// Reads a tensor back to the host as f32 (empty on a backend failure).
pub fn host_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    counted();
    flex_values(t)
}

/// Reads an integer tensor back to the host (empty on a backend failure).
pub fn host_ints<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    counted();
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap_or_default()
}

/// Reads a one-element tensor (NaN on a backend failure, so a broken read is never taken
/// for a finite loss).
pub fn host_scalar<const D: usize>(t: Tensor<D>) -> f64 {
    host_vec(t).first().map_or(f64::NAN, |&v| v as f64)
}

/// The values of a tensor on burn-flex, whose tensors live in host memory: a copy, not a
/// device read, so it is not counted. Host-only fast paths (the optimizer's update on the CPU
/// backend) use it; on any other backend reads go through [`host_vec`].
pub fn flex_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// Copies a burn-flex tensor's values into `dst` (a copy from host memory, not a device read,
/// so not counted). False, leaving `dst` as it was, when the sizes differ or the data is not
/// f32.
pub fn flex_copy_into<const D: usize>(t: Tensor<D>, dst: &mut [f32]) -> bool {
    let data = t.into_data();
    match data.as_slice::<f32>() {
        Ok(src) if src.len() == dst.len() => {
            dst.copy_from_slice(src);
            true
        }
        _ => false,
    }
}
