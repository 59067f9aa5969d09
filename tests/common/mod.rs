//! Helpers shared by the integration tests: locating `shared/`, reading fixture tensors,
//! comparing with relative tolerances.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

/// `shared/` beside the checkout (CI lays it there) or `$DAPT_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    if let Ok(p) = std::env::var("DAPT_SHARED_DIR") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        p.join("fixtures/reference").is_dir(),
        "the shared fixtures are missing: expected {} (or set DAPT_SHARED_DIR)",
        p.display()
    );
    p
}

pub fn fixture_dir(case: &str) -> PathBuf {
    shared_dir().join("fixtures/reference").join(case)
}

#[derive(Clone, Debug)]
pub struct Fx {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Fx {
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
    pub fn usize(&self) -> Vec<usize> {
        self.data.iter().map(|&v| v as usize).collect()
    }
}

/// Every tensor of a fixture's `io.safetensors`, as f64.
pub fn load_io(case: &str) -> HashMap<String, Fx> {
    let path = fixture_dir(case).join("io.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut out = HashMap::new();
    for (name, v) in st.iter() {
        let data: Vec<f64> = match v.dtype() {
            safetensors::Dtype::F32 => v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            safetensors::Dtype::I64 => v
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        };
        out.insert(
            name.to_string(),
            Fx {
                shape: v.shape().to_vec(),
                data,
            },
        );
    }
    out
}

/// ‖a − b‖ / ‖b‖ (absolute norm when b is zero).
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut num = 0.0;
    let mut den = 0.0;
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - y).powi(2);
        den += y * y;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

pub fn assert_close(name: &str, got: &[f32], want: &Fx, tol: f64) {
    let e = rel_err(got, &want.data);
    assert!(e <= tol, "{name}: relative error {e:.3e} > {tol:.0e}");
}

pub fn to_points(fx: &Fx) -> Vec<[f32; 3]> {
    fx.f32()
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect()
}
