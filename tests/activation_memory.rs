//! What a DAPT block keeps for backward under gradient checkpointing (the default), in
//! channel-widths per token: the products its trained parts need (qkv 3, fc1 4, proj 1, fc2 1,
//! the adapter's up-projection 1) and nothing element-wise. Measured as the heap in use
//! (glibc's `mallinfo2`) across one forward, after a warm-up step has made the kernels'
//! per-thread buffers. Its own test binary without the harness, so no other test allocates
//! meanwhile.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    use burn::module::Module;
    use burn::tensor::{Device, Distribution, Tensor};
    use dapt::model::block::Block;
    use dapt::model::layers::ForwardCtx;
    use dapt::model::names::Trainable;

    #[repr(C)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    unsafe extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
    let in_use = || unsafe { mallinfo2() }.uordblks + unsafe { mallinfo2() }.hblkhd;

    let device = Device::flex().autodiff().gradient_checkpointing();
    let (b, t, c) = (16, 65, 384);
    // the official DAPT block: drop-path 0.1, adapter rank 32 with dropout; frozen backbone
    let block =
        Block::new(c, 6, 0.1, Some((32, 0.1)), &device).map(&mut Trainable::new(|n: &str| {
            n.contains("tfts") || n.contains("adapter")
        }));
    let mut rng = dapt::data::rng::Rng::new(7);
    let mut step = |measure: bool| {
        let x =
            Tensor::<3>::random([b, t, c], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let before = in_use();
        let (y, _) = block.forward_dapt(x, &mut ForwardCtx::train(&mut rng));
        let kept = in_use().saturating_sub(before);
        let _grads = y.sum().backward();
        measure.then_some(kept)
    };
    step(false);
    let kept = step(true).unwrap_or_default();
    let widths = kept as f64 / (b * t * c * 4) as f64;
    println!("activation_memory: a DAPT block keeps {widths:.2} channel-widths per token");
    // 10 for the products, 1 for the output, a little for the adapter's rank-32 tensors and
    // the dynamic scale; burn's `x * mask` drop-path kept 2 more
    assert!(
        widths < 11.8,
        "a DAPT block kept {widths:.2} channel-widths per token for backward, expected about 11.3"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    println!("activation_memory: skipped, glibc only");
}
