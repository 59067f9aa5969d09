//! How the process's heap treats large freed blocks.
//!
//! A batch-32 step allocates and frees tensors of tens to hundreds of MiB (the patch
//! encoder's activations alone are `[B·G·M, 512]`, 128 MiB at the ModelNet40 config). glibc
//! serves every block above its mmap threshold (at most 32 MiB) with a fresh `mmap` and
//! returns it with `munmap` when freed, so every such tensor is faulted in and zeroed by the
//! kernel page by page, on every step. Measured on 2 cores (BENCHMARKS.md, "Freed memory
//! kept"), that was a fifth to a half of a step's time, most of it system time.
//!
//! [`keep_freed_memory`] tells glibc to serve large blocks from its heap and to keep freed
//! memory for reuse, from one arena. The cost is a higher resident peak where freed blocks
//! cannot be merged for a later, larger request. With glibc's per-thread arenas that cost grew
//! step after step: a tensor freed on a rayon worker went back to that worker's arena, out of
//! reach of the main thread's next request, and a DAPT step's resident peak crept from 1,430 to
//! 1,640 MiB over nine steps (OBJ_BG, batch 32) with 1,140 MiB in use at the most. One arena
//! holds it at 1,390 MiB from the first step, at the same speed (BENCHMARKS.md, "One heap
//! arena"). `DAPT_HEAP=system` (or any `MALLOC_MMAP_MAX_`, `MALLOC_MMAP_THRESHOLD_` or
//! `MALLOC_TRIM_THRESHOLD_` the user sets) keeps glibc's own behaviour; a `MALLOC_ARENA_MAX`
//! the user sets is left in force. Other platforms' allocators are left alone.

/// What [`keep_freed_memory`] did, as `dapt bench --json` reports it (`heap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapPolicy {
    /// Large blocks come from the heap and freed memory is kept for reuse.
    Kept,
    /// The allocator's defaults: asked for (`DAPT_HEAP=system`, glibc's own variables) or
    /// not glibc.
    System,
}

impl HeapPolicy {
    pub fn name(self) -> &'static str {
        match self {
            HeapPolicy::Kept => "kept",
            HeapPolicy::System => "system",
        }
    }
}

static POLICY: std::sync::OnceLock<HeapPolicy> = std::sync::OnceLock::new();

/// Applies the policy once per process (first call wins) and returns it. Call it first
/// thing in `main`, before large allocations.
pub fn keep_freed_memory() -> HeapPolicy {
    *POLICY.get_or_init(apply)
}

/// The policy in force: [`HeapPolicy::System`] until [`keep_freed_memory`] ran.
pub fn policy() -> HeapPolicy {
    POLICY.get().copied().unwrap_or(HeapPolicy::System)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn user_chose_system() -> bool {
    let own = std::env::var("DAPT_HEAP").is_ok_and(|v| v.trim().eq_ignore_ascii_case("system"));
    let glibc = [
        "MALLOC_MMAP_MAX_",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    own || glibc
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> HeapPolicy {
    if user_chose_system() {
        return HeapPolicy::System;
    }
    // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc and
    // takes plain integers. A 0 return means the parameter was refused; then the defaults
    // stay in force and we say so.
    let ok = unsafe {
        // no mmap'd blocks: large requests come from the heap, where freed ones are reused
        let mmap = libc::mallopt(libc::M_MMAP_MAX, 0);
        // keep freed memory at the top of the heap instead of returning it after each step
        let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // one arena: a block freed by one thread is reused by the next request on any thread,
        // where per-thread arenas each kept their own freed blocks and the heap crept up step
        // after step
        let arenas = if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            1
        } else {
            libc::mallopt(libc::M_ARENA_MAX, 1)
        };
        mmap == 1 && trim == 1 && arenas == 1
    };
    if ok {
        HeapPolicy::Kept
    } else {
        HeapPolicy::System
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> HeapPolicy {
    HeapPolicy::System
}

/// Minor page faults of this process so far (memory the kernel had to map, and zero, on
/// first touch): what [`keep_freed_memory`] saves. `None` off Linux.
pub fn minor_faults() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes one rusage into the zeroed buffer we own.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: rc == 0, so getrusage filled it (and a zeroed rusage is valid anyway).
        let usage = unsafe { usage.assume_init() };
        u64::try_from(usage.ru_minflt).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
