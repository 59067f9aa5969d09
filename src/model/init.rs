//! Deterministic initialisation from our host [`Rng`]: the official rules by parameter name,
//! independent of burn's process-wide device RNG (which concurrent runs in one process, such
//! as parallel tests or the app training while analysing, would otherwise share).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

use super::names::{named_params, official_name};
use crate::data::Rng;

struct HostInit {
    rng: Rng,
    path: Vec<String>,
    /// Module prefix → fan-in of its 2-D/3-D weight (for the matching bias).
    fan_in: HashMap<String, usize>,
}

fn prefix(name: &str) -> &str {
    name.rsplit_once('.').map(|(p, _)| p).unwrap_or("")
}

impl HostInit {
    fn values(&mut self, name: &str, numel: usize, torch_shape: &[usize]) -> Vec<f32> {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let uniform = |rng: &mut Rng, bound: f32| -> Vec<f32> {
            (0..numel).map(|_| rng.range(-bound, bound)).collect()
        };
        if name.ends_with(".running_mean") {
            return vec![0.0; numel];
        }
        if name.ends_with(".running_var") {
            return vec![1.0; numel];
        }
        if leaf.starts_with("tfts_gamma") {
            return (0..numel).map(|_| 1.0 + 0.02 * self.rng.normal()).collect();
        }
        if leaf.starts_with("tfts_beta") {
            return (0..numel).map(|_| 0.02 * self.rng.normal()).collect();
        }
        if name == "cls_token" || name == "cls_pos" {
            // trunc_normal_(std=0.02) with absolute bounds ±2
            return (0..numel)
                .map(|_| (0.02 * self.rng.normal()).clamp(-2.0, 2.0))
                .collect();
        }
        // the adapter starts as an exact zero branch (dapt-spec.md §4.2)
        if name.ends_with("Adapter_MLP.down_proj.bias")
            || name.ends_with("Adapter_MLP.scale.bias")
            || name.ends_with("Adapter_MLP.up_proj.weight")
            || name.ends_with("Adapter_MLP.up_proj.bias")
        {
            return vec![0.0; numel];
        }
        if torch_shape.len() >= 2 {
            // PyTorch Linear/Conv1d default: kaiming-uniform(a=√5) = U(±1/√fan_in)
            let fan_in = torch_shape[1..].iter().product::<usize>().max(1);
            return uniform(&mut self.rng, 1.0 / (fan_in as f32).sqrt());
        }
        match (leaf, self.fan_in.get(prefix(name))) {
            // a Linear/Conv bias: U(±1/√fan_in) of its weight
            ("bias", Some(&fan_in)) => uniform(&mut self.rng, 1.0 / (fan_in as f32).sqrt()),
            // LayerNorm / BatchNorm affine
            ("weight", _) => vec![1.0; numel],
            _ => vec![0.0; numel],
        }
    }
}

impl ModuleMapper for HostInit {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = official_name(&self.path.join("."));
        let dims: [usize; D] = match param.lazy_shape().to_vec().try_into() {
            Ok(d) => d,
            Err(_) => return param,
        };
        // torch layout of 2-D weights is [out, in]; burn's Linear is [in, out]
        let torch_shape: Vec<usize> = if D == 2 && name.ends_with(".weight") {
            vec![dims[1], dims[0]]
        } else {
            dims.to_vec()
        };
        let numel = dims.iter().product();
        let values = self.values(&name, numel, &torch_shape);
        let device = param.lazy_device();
        let t = Tensor::<D>::from_data(TensorData::new(values, dims), &device);
        // gradient flags are the caller's (set by name afterwards)
        Param::initialized(param.id, t)
    }
}

/// Re-initialises every tensor of `module` from `seed` with the official rules.
pub fn host_init<M: Module>(module: M, seed: u64) -> M {
    let mut fan_in = HashMap::new();
    for p in named_params(&module) {
        if p.torch_shape.len() >= 2 && p.name.ends_with(".weight") {
            fan_in.insert(
                prefix(&p.name).to_string(),
                p.torch_shape[1..].iter().product::<usize>().max(1),
            );
        }
    }
    module.map(&mut HostInit {
        rng: Rng::new(seed ^ 0x1A17_5EED),
        path: Vec::new(),
        fan_in,
    })
}
