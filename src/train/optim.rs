//! AdamW with the official decay / no-decay split (dapt-spec.md §4.6) and global L2 gradient
//! clipping, keyed by official parameter names so its state can be saved and resumed.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor};

use crate::model::names::{RawTensor, no_weight_decay, official_name};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global L2 norm clip; `None` disables clipping (pre-training).
    pub grad_clip: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 5e-4,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip: Some(10.0),
        }
    }
}

/// First and second moments, flattened, per official name.
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub moments: HashMap<String, (Tensor<1>, Tensor<1>)>,
}

struct NormVisitor<'a> {
    grads: &'a Gradients,
    sum_sq: Option<Tensor<1>>,
}

impl ModuleVisitor for NormVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let s = g.square().sum();
            self.sum_sq = Some(match self.sum_sq.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

/// The device of a module's first parameter (the default device for a module without any).
fn first_device<M: Module>(module: &M) -> Device {
    module.devices().into_iter().next().unwrap_or_default()
}

/// L2 norm of all gradients together, on the device (`[1]`; 0 when there are none).
pub fn grad_norm<M: Module>(module: &M, grads: &Gradients, device: &Device) -> Tensor<1> {
    let mut v = NormVisitor {
        grads,
        sum_sq: None,
    };
    module.visit(&mut v);
    v.sum_sq
        .unwrap_or_else(|| Tensor::zeros([1], &device.clone().without_autodiff()))
        .sqrt()
}

/// The clipping factor `max / (norm + 1e-6)` where `norm > max`, else 1 (torch's
/// `clip_grad_norm_`), computed on the device so the step does not wait for the norm.
fn clip_factor(norm: &Tensor<1>, max: Option<f64>) -> Option<Tensor<1>> {
    let max = max?;
    let over = norm.clone().greater_elem(max);
    let scaled = norm.clone().add_scalar(1e-6).recip().mul_scalar(max);
    Some(norm.ones_like().mask_where(over, scaled))
}

struct Stepper<'a> {
    opt: &'a mut AdamW,
    grads: &'a Gradients,
    lr: f64,
    clip_scale: Option<Tensor<1>>,
    path: Vec<String>,
}

impl ModuleMapper for Stepper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(g) = param.val().grad(self.grads) else {
            return param;
        };
        let name = official_name(&self.path.join("."));
        let c = self.opt.config.clone();
        let t = self.opt.step as i32;
        let lr = self.lr;
        let dims = g.dims();
        let n: usize = dims.iter().product();
        // rank is the same in burn and torch layouts, which is all the rule looks at
        let wd = if no_weight_decay(&name, &dims) {
            0.0
        } else {
            c.weight_decay
        };
        let g = match &self.clip_scale {
            Some(c) => g.reshape([n]) * c.clone(),
            None => g.reshape([n]),
        };
        let (m, v) = match self.opt.moments.remove(&name) {
            Some(mv) => mv,
            None => (g.zeros_like(), g.zeros_like()),
        };
        let m = m * c.beta1 + g.clone() * (1.0 - c.beta1);
        let v = v * c.beta2 + g.square() * (1.0 - c.beta2);
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let update = (m.clone() / bc1) / ((v.clone() / bc2).sqrt() + c.eps) * lr;
        self.opt.moments.insert(name, (m, v));
        param.map(move |p| {
            let inner = p.inner();
            let flat = inner.reshape([n]);
            let flat = flat.clone() * (1.0 - lr * wd) - update;
            Tensor::from_inner(flat.reshape(dims)).require_grad()
        })
    }
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// One optimizer step with learning rate `lr`; returns the gradient norm before clipping,
    /// still on the device (reading it is the caller's choice: it blocks on a GPU).
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients, lr: f64) -> (M, Tensor<1>) {
        let device = first_device(&module);
        let norm = grad_norm(&module, grads, &device);
        let clip_scale = clip_factor(&norm, self.config.grad_clip);
        self.step += 1;
        let mut s = Stepper {
            opt: self,
            grads,
            lr,
            clip_scale,
            path: Vec::new(),
        };
        (module.map(&mut s), norm)
    }

    /// The state as flat tensors (`m.<name>`, `v.<name>`) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, RawTensor)> {
        let mut out = Vec::new();
        let mut names: Vec<&String> = self.moments.keys().collect();
        names.sort();
        for name in names {
            let (m, v) = &self.moments[name];
            for (prefix, t) in [("m.", m), ("v.", v)] {
                let data: Vec<f32> = crate::model::layers::host_vec(t.clone());
                out.push((
                    format!("{prefix}{name}"),
                    RawTensor {
                        shape: vec![data.len()],
                        data,
                    },
                ));
            }
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        step: u64,
        tensors: &HashMap<String, RawTensor>,
        device: &burn::tensor::Device,
    ) {
        self.step = step;
        self.moments.clear();
        for (k, m) in tensors {
            let Some(name) = k.strip_prefix("m.") else {
                continue;
            };
            let Some(v) = tensors.get(&format!("v.{name}")) else {
                continue;
            };
            let mk = |r: &RawTensor| {
                Tensor::<1>::from_data(
                    burn::tensor::TensorData::new(r.data.clone(), [r.data.len()]),
                    device,
                )
            };
            self.moments.insert(name.to_string(), (mk(m), mk(v)));
        }
    }
}
