//! The model's linear shapes on burn-flex at batch 32 (ModelNet40 DAPT: 2080 token rows):
//! `model::linear::Linear` forward, burn's `g·Wᵀ` product, and the input gradient of a frozen
//! layer under autodiff, in GFLOP/s. `cargo bench --bench linear_shapes`; BENCHMARKS.md
//! compares them with the matmul roofline of `dapt bench --roofline`.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use dapt::model::linear::Linear;
fn main() {
    let d = Device::flex();
    let ad = d.clone().autodiff();
    for (rows, din, dout) in [
        (2080, 384, 1152),
        (2080, 384, 1536),
        (2080, 1536, 384),
        (2080, 384, 384),
    ] {
        let layer = Linear::new(din, dout, true, &ad).no_grad();
        let plain = Linear::new(din, dout, true, &d);
        let xb = Tensor::<2>::random([rows, din], Distribution::Default, &d);
        let gb = Tensor::<2>::random([rows, dout], Distribution::Default, &d);
        let fl = 2.0 * (rows * din * dout) as f64;
        let reps = 10;
        for _ in 0..2 {
            let t = std::time::Instant::now();
            let ys: Vec<_> = (0..reps).map(|_| plain.forward(xb.clone())).collect();
            let f = t.elapsed().as_secs_f64() / reps as f64;
            drop(ys);
            let t = std::time::Instant::now();
            let ys: Vec<_> = (0..reps)
                .map(|_| gb.clone().matmul(plain.weight.val().transpose()))
                .collect();
            let tb = t.elapsed().as_secs_f64() / reps as f64;
            drop(ys);
            let mut bt = 0.0;
            for _ in 0..reps {
                let x = Tensor::<2>::from_data(xb.clone().into_data(), &ad).require_grad();
                let g = Tensor::<2>::from_data(gb.clone().into_data(), &ad);
                let y = (layer.forward(x.clone()) * g).sum();
                let t = std::time::Instant::now();
                let gr = y.backward();
                bt += t.elapsed().as_secs_f64();
                drop(gr);
            }
            bt /= reps as f64;
            eprintln!(
                "{rows}x{din}x{dout}: fwd {:.0} GFLOP/s, burn g.Wt {:.0}, autodiff bwd {:.0} GFLOP/s",
                fl / f / 1e9,
                fl / tb / 1e9,
                fl / bt / 1e9
            );
        }
    }
}
