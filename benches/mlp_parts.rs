//! One DAPT MLP (frozen fc1/fc2, trained TFTS) against a plain one, forward and backward under
//! autodiff with checkpointing, at `[32, 70, 384]` on burn-flex: what the TFTS passes around
//! the hidden layer cost (`model::scaled_gelu`). `cargo bench --bench mlp_parts`.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use dapt::model::block::Mlp;
fn main() {
    let d = Device::flex();
    let ad = d.clone().autodiff().gradient_checkpointing();
    let xb = Tensor::<3>::random([32, 70, 384], Distribution::Default, &d);
    for dapt in [true, false] {
        let mut mlp = Mlp::new(384, dapt, &ad);
        mlp.fc1 = mlp.fc1.no_grad();
        mlp.fc2 = mlp.fc2.no_grad();
        for _ in 0..2 {
            let (mut f, mut b) = (0.0, 0.0);
            let reps = 20;
            for _ in 0..reps {
                let x = Tensor::<3>::from_data(xb.clone().into_data(), &ad).require_grad();
                let t = std::time::Instant::now();
                let y = mlp.forward(x.clone()).sum();
                f += t.elapsed().as_secs_f64();
                let t = std::time::Instant::now();
                let g = y.backward();
                b += t.elapsed().as_secs_f64();
                drop(g);
            }
            eprintln!(
                "dapt {dapt}: fwd {:.1} ms bwd {:.1} ms",
                f * 1e3 / reps as f64,
                b * 1e3 / reps as f64
            );
        }
    }
}
