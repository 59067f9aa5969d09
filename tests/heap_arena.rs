//! `dapt::heap`'s one arena: a large block freed on a worker thread is reused by the next
//! request on the main thread, instead of the heap growing (and the kernel mapping and zeroing
//! fresh pages) for it. Its own test binary without the test harness, so that the policy is set
//! before any other thread has allocated, as `dapt`'s `main` does.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    use dapt::heap::{HeapPolicy, keep_freed_memory, minor_faults};

    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var_os("DAPT_HEAP").is_some() {
        println!("heap_arena: skipped, the environment sets the heap policy");
        return;
    }
    assert_eq!(keep_freed_memory(), HeapPolicy::Kept);
    const BLOCK: usize = 16 << 20;
    let pages = BLOCK / 4096;
    // the worker touches every page of its block, then frees it
    std::thread::spawn(|| {
        let v = vec![1u8; BLOCK];
        std::hint::black_box(&v);
    })
    .join()
    .expect("worker thread");
    let before = minor_faults().expect("getrusage");
    let v = vec![2u8; BLOCK];
    std::hint::black_box(&v);
    let faults = minor_faults().expect("getrusage") - before;
    assert!(
        faults < (pages / 4) as u64,
        "the main thread's {BLOCK}-byte block took {faults} page faults ({pages} pages): \
         the block the worker freed was not reused"
    );
    println!("heap_arena: ok, {faults} page faults for {pages} pages");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    println!("heap_arena: skipped, glibc only");
}
