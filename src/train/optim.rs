//! AdamW with the official decay / no-decay split (dapt-spec.md §4.6) and global L2 gradient
//! clipping, keyed by official parameter names so its state can be saved and resumed.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor, TensorData};

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

/// Parameter segments in a group's flat buffers start at multiples of this many elements
/// (256 bytes), so slicing a parameter back out is a view on every backend: CubeCL copies a
/// slice whose byte offset is not a multiple of the device's storage alignment.
const ALIGN: usize = 64;

/// Inputs per `cat`: fusion merges a cat into one kernel only while its inputs fit the
/// device's bindings, so long lists are joined in a tree of small cats.
const CAT_CHUNK: usize = 6;

/// One trainable tensor's place in its group's flat buffers.
#[derive(Clone, Debug, PartialEq)]
struct Segment {
    name: String,
    dims: Vec<usize>,
    offset: usize,
    len: usize,
}

/// The tensors sharing one weight decay, updated as one flat vector: a handful of kernels
/// per group instead of a dozen per tensor.
struct Group {
    weight_decay: f64,
    segments: Vec<Segment>,
    m: Tensor<1>,
    v: Tensor<1>,
    /// The moments as host vectors, newer than `m` and `v`, while the host update
    /// ([`AdamW::step_on_host`]) runs: they stay on the host between steps and become tensors
    /// only when asked for ([`Group::moments_now`], [`Group::settle`]).
    host: Option<(Vec<f32>, Vec<f32>)>,
    /// Zero fillers between segments, by length, made once per layout.
    pads: HashMap<usize, Tensor<1>>,
}

/// AdamW over the official parameter groups, each updated as one flat vector (a
/// multi-tensor update). Moments are saved and restored per official name.
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    groups: Vec<Group>,
    /// Per-name moments not yet placed in a group (restored from a checkpoint, or left by a
    /// layout change), merged at the next step.
    loose: HashMap<String, (Tensor<1>, Tensor<1>)>,
    /// On burn-flex, update on the host ([`AdamW::step_on_host`]).
    host_update: bool,
}

/// A trainable tensor and its gradient, as the visitor found them.
struct Found {
    name: String,
    dims: Vec<usize>,
    weight_decay: f64,
    param: Tensor<1>,
    grad: Tensor<1>,
}

struct Collect<'a> {
    grads: &'a Gradients,
    weight_decay: f64,
    path: Vec<String>,
    found: Vec<Found>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(g) = param.val().grad(self.grads) else {
            return;
        };
        let name = official_name(&self.path.join("."));
        let dims = g.dims().to_vec();
        let n: usize = dims.iter().product();
        // rank is the same in burn and torch layouts, which is all the rule looks at
        let weight_decay = if no_weight_decay(&name, &dims) {
            0.0
        } else {
            self.weight_decay
        };
        self.found.push(Found {
            name,
            dims,
            weight_decay,
            param: param.val().inner().reshape([n]),
            grad: g.reshape([n]),
        });
    }
}

/// The device of a module's first parameter (the default device for a module without any).
fn first_device<M: Module>(module: &M) -> Device {
    module.devices().into_iter().next().unwrap_or_default()
}

/// Joins 1-D tensors in a tree of cats of at most [`CAT_CHUNK`] inputs.
fn cat_tree(mut parts: Vec<Tensor<1>>) -> Tensor<1> {
    while parts.len() > CAT_CHUNK {
        let mut next = Vec::with_capacity(parts.len().div_ceil(CAT_CHUNK));
        let mut it = parts.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Tensor<1>> = it.by_ref().take(CAT_CHUNK).collect();
            next.push(Tensor::cat(chunk, 0));
        }
        parts = next;
    }
    Tensor::cat(parts, 0)
}

fn padded(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

impl Group {
    /// The flat, padded concatenation of `tensors` (one per segment, in order).
    fn flatten(&self, tensors: Vec<Tensor<1>>) -> Tensor<1> {
        let mut parts = Vec::with_capacity(2 * tensors.len());
        for (seg, t) in self.segments.iter().zip(tensors) {
            parts.push(t);
            if let Some(pad) = self.pads.get(&(padded(seg.len) - seg.len)) {
                parts.push(pad.clone());
            }
        }
        cat_tree(parts)
    }

    /// Segment `seg` of a flat buffer (a view: segments start at aligned offsets).
    fn part(flat: &Tensor<1>, seg: &Segment) -> Tensor<1> {
        flat.clone().narrow(0, seg.offset, seg.len)
    }

    /// A group for `found` (all of one weight decay), taking existing moments from `loose`.
    fn new(
        weight_decay: f64,
        found: &[&Found],
        loose: &mut HashMap<String, (Tensor<1>, Tensor<1>)>,
        device: &Device,
    ) -> Self {
        let mut segments = Vec::with_capacity(found.len());
        let mut offset = 0;
        let mut pads = HashMap::new();
        for f in found {
            let len = f.grad.dims()[0];
            segments.push(Segment {
                name: f.name.clone(),
                dims: f.dims.clone(),
                offset,
                len,
            });
            let pad = padded(len) - len;
            if pad > 0 {
                pads.entry(pad)
                    .or_insert_with(|| Tensor::zeros([pad], device));
            }
            offset += padded(len);
        }
        let mut group = Self {
            weight_decay,
            segments,
            m: Tensor::zeros([offset.max(1)], device),
            v: Tensor::zeros([offset.max(1)], device),
            host: None,
            pads,
        };
        let (mut ms, mut vs) = (Vec::new(), Vec::new());
        for seg in &group.segments {
            let (m, v) = match loose.remove(&seg.name) {
                Some((m, v)) if m.dims()[0] == seg.len && v.dims()[0] == seg.len => (m, v),
                _ => (
                    Tensor::zeros([seg.len], device),
                    Tensor::zeros([seg.len], device),
                ),
            };
            ms.push(m);
            vs.push(v);
        }
        if offset > 0 {
            group.m = group.flatten(ms);
            group.v = group.flatten(vs);
        }
        group
    }

    /// The current moments as tensors.
    fn moments_now(&self) -> (Tensor<1>, Tensor<1>) {
        match &self.host {
            Some((m, v)) => {
                let device = self.m.device();
                let t = |x: &Vec<f32>| {
                    Tensor::from_data(TensorData::new(x.clone(), [x.len()]), &device)
                };
                (t(m), t(v))
            }
            None => (self.m.clone(), self.v.clone()),
        }
    }

    /// Makes `m` and `v` current (the tensor form of the update reads them).
    fn settle(&mut self) {
        if self.host.is_some() {
            (self.m, self.v) = self.moments_now();
            self.host = None;
        }
    }

    /// Hands this group's moments back per name (for a new layout or a checkpoint).
    fn per_name(&self) -> Vec<(String, Tensor<1>, Tensor<1>)> {
        let (m, v) = self.moments_now();
        self.segments
            .iter()
            .map(|s| (s.name.clone(), Self::part(&m, s), Self::part(&v, s)))
            .collect()
    }
}

/// L2 norm of all gradients together, on the device (`[1]`; 0 when there are none).
pub fn grad_norm<M: Module>(module: &M, grads: &Gradients, device: &Device) -> Tensor<1> {
    let mut c = Collect {
        grads,
        weight_decay: 0.0,
        path: Vec::new(),
        found: Vec::new(),
    };
    module.visit(&mut c);
    let device = device.clone().without_autodiff();
    if c.found.is_empty() {
        return Tensor::zeros([1], &device);
    }
    cat_tree(c.found.into_iter().map(|f| f.grad).collect())
        .square()
        .sum()
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

/// The scalars of one group's host update, each already the f32 the tensor form's scalar
/// ops would use.
#[derive(Clone, Copy)]
struct Coefficients {
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// `sqrt(1 - beta2^t)`.
    bc2_sqrt: f32,
    /// `-lr / (1 - beta1^t)`.
    neg_step_size: f32,
    eps: f32,
    clip: Option<f32>,
    /// `1 - lr * weight_decay`.
    decay: f32,
}

/// AdamW on flat host vectors, element by element in the f32 operations of torch's CPU
/// kernels (and of the tensor form): decay, `lerp` of the first moment, `mul_` + `addcmul_`
/// of the second, `addcdiv_` with `-lr / bc1` over `sqrt(v) / sqrt(bc2) + eps`.
fn adamw_slice(g: &[f32], p: &mut [f32], m: &mut [f32], v: &mut [f32], k: &Coefficients) {
    for i in 0..p.len() {
        let g = match k.clip {
            Some(s) => g[i] * s,
            None => g[i],
        };
        // lerp(m, g, w) with w = 1 - beta1 < 0.5: m + w * (g - m)
        let mi = m[i] + k.one_minus_beta1 * (g - m[i]);
        let vi = v[i] * k.beta2 + k.one_minus_beta2 * g * g;
        let denom = vi.sqrt() / k.bc2_sqrt + k.eps;
        p[i] = p[i] * k.decay + k.neg_step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

/// [`adamw_slice`] over the available cores, in contiguous chunks (large groups only).
fn adamw_in_parallel(g: &[f32], p: &mut [f32], m: &mut [f32], v: &mut [f32], k: &Coefficients) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || p.len() < 1 << 16 {
        return adamw_slice(g, p, m, v, k);
    }
    let chunk = p.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts = g
            .chunks(chunk)
            .zip(p.chunks_mut(chunk))
            .zip(m.chunks_mut(chunk).zip(v.chunks_mut(chunk)));
        for ((g, p), (m, v)) in parts {
            s.spawn(move || adamw_slice(g, p, m, v, k));
        }
    });
}

/// Puts the updated parameters (views of the groups' flat buffers) back into the module.
struct Assign {
    updated: HashMap<String, Tensor<1>>,
    path: Vec<String>,
}

impl ModuleMapper for Assign {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = official_name(&self.path.join("."));
        let Some(flat) = self.updated.remove(&name) else {
            return param;
        };
        param.map(move |p| {
            let dims = p.dims();
            let t = Tensor::from_inner(flat.reshape(dims));
            // keep the parameter's gradient-checkpointing strategy (from_inner drops it)
            match p.gradient_checkpointing_strategy() {
                Some(s) => t.with_gradient_checkpointing_strategy(s),
                None => t,
            }
            .require_grad()
        })
    }
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            groups: Vec::new(),
            loose: HashMap::new(),
            host_update: true,
        }
    }

    /// Keeps the tensor form of the update on burn-flex too (to compare the two; the host
    /// form is the default there).
    pub fn with_tensor_update(mut self) -> Self {
        self.host_update = false;
        self
    }

    /// One optimizer step with learning rate `lr`; returns the gradient norm before clipping,
    /// still on the device (reading it is the caller's choice: it blocks on a GPU).
    ///
    /// Each group's gradients and parameters are joined into one flat vector, updated by one
    /// chain of element-wise ops (which fusion compiles into a kernel or two), and sliced
    /// back; the arithmetic per element is torch's AdamW exactly.
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients, lr: f64) -> (M, Tensor<1>) {
        let device = first_device(&module).without_autodiff();
        let mut c = Collect {
            grads,
            weight_decay: self.config.weight_decay,
            path: Vec::new(),
            found: Vec::new(),
        };
        module.visit(&mut c);
        self.step += 1;
        if c.found.is_empty() {
            return (module, Tensor::zeros([1], &device));
        }
        self.arrange(&c.found, &device);
        let mut found: HashMap<String, Found> =
            c.found.into_iter().map(|f| (f.name.clone(), f)).collect();
        if self.host_update && device == Device::flex() {
            return self.step_on_host(module, found, lr, &device);
        }
        // per group, the segments' gradients and parameters in segment order
        let mut flat_g = Vec::with_capacity(self.groups.len());
        let mut flat_p = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let (mut gs, mut ps) = (Vec::new(), Vec::new());
            for seg in &group.segments {
                if let Some(f) = found.remove(&seg.name) {
                    gs.push(f.grad);
                    ps.push(f.param);
                }
            }
            flat_g.push(group.flatten(gs));
            flat_p.push(group.flatten(ps));
        }
        let norm = flat_g
            .iter()
            .map(|g| g.clone().square().sum())
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([1], &device))
            .sqrt();
        let clip = clip_factor(&norm, self.config.grad_clip);
        let c = &self.config;
        let t = self.step as i32;
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let neg_step_size = -lr / (1.0 - c.beta1.powi(t));
        let mut updated = HashMap::new();
        for ((group, g), p) in self.groups.iter_mut().zip(flat_g).zip(flat_p) {
            group.settle();
            let g = match &clip {
                Some(s) => g * s.clone(),
                None => g,
            };
            // torch's kernels: lerp, mul_ + addcmul_, addcdiv_ (see adamw_slice)
            let m = group.m.clone() + (g.clone() - group.m.clone()) * (1.0 - c.beta1);
            let v = group.v.clone() * c.beta2 + g.clone() * (1.0 - c.beta2) * g;
            // padding stays zero: m = v = 0 there, so the update is 0 / eps = 0
            let denom = v.clone().sqrt() / bc2_sqrt + c.eps;
            let p = p * (1.0 - lr * group.weight_decay) + m.clone() * neg_step_size / denom;
            for seg in &group.segments {
                updated.insert(seg.name.clone(), Group::part(&p, seg));
            }
            group.m = m;
            group.v = v;
        }
        let mut assign = Assign {
            updated,
            path: Vec::new(),
        };
        (module.map(&mut assign), norm)
    }

    /// [`Self::step`] on burn-flex, whose tensors are host memory: per group, one pass over
    /// the flat gradient, parameter and moment vectors on every core, instead of a chain of
    /// single-threaded element-wise ops each writing a fresh buffer (the update of full
    /// fine-tuning's 22M parameters took ~650 ms that way). The arithmetic per element is the
    /// same f32 sequence as the tensor form; the norm is taken as torch takes it on the CPU
    /// (per tensor in f64, then over the tensors), which can differ from the tensor form's
    /// f32 sum in the last bits.
    fn step_on_host<M: Module>(
        &mut self,
        module: M,
        mut found: HashMap<String, Found>,
        lr: f64,
        device: &Device,
    ) -> (M, Tensor<1>) {
        use crate::readback::{flex_copy_into, flex_values};
        // per group: flat gradients and parameters in the segments' layout, zero padding
        let mut flat: Vec<(Vec<f32>, Vec<f32>)> = Vec::with_capacity(self.groups.len());
        // torch's clip_grad_norm_ on the CPU: each tensor's norm accumulated in f64 and
        // rounded to f32, then the norm of those norms
        let mut norms_sq = 0f64;
        for group in &self.groups {
            let len = group.m.dims()[0];
            let (mut g, mut p) = (vec![0f32; len], vec![0f32; len]);
            for seg in &group.segments {
                if let Some(f) = found.remove(&seg.name) {
                    let range = seg.offset..seg.offset + seg.len;
                    if flex_copy_into(f.grad, &mut g[range.clone()]) {
                        let sq: f64 = g[range.clone()]
                            .iter()
                            .map(|&x| (x as f64) * (x as f64))
                            .sum();
                        let norm = sq.sqrt() as f32 as f64;
                        norms_sq += norm * norm;
                    }
                    flex_copy_into(f.param, &mut p[range]);
                }
            }
            flat.push((g, p));
        }
        let norm = norms_sq.sqrt() as f32;
        let c = &self.config;
        // torch's clip_grad_norm_, in the f32 steps clip_factor takes on the device
        let clip = c
            .grad_clip
            .and_then(|max| (norm > max as f32).then(|| (1.0 / (norm + 1e-6)) * max as f32));
        let t = self.step as i32;
        let k = Coefficients {
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            bc2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
            neg_step_size: (-lr / (1.0 - c.beta1.powi(t))) as f32,
            eps: c.eps as f32,
            clip,
            decay: 1.0,
        };
        let mut updated = HashMap::new();
        for (group, (g, mut p)) in self.groups.iter_mut().zip(flat) {
            let len = p.len();
            let (mut m, mut v) = match group.host.take() {
                Some((m, v)) if m.len() == len && v.len() == len => (m, v),
                _ => (flex_values(group.m.clone()), flex_values(group.v.clone())),
            };
            if m.len() != len || v.len() != len {
                (m, v) = (vec![0f32; len], vec![0f32; len]);
            }
            let k = Coefficients {
                decay: (1.0 - lr * group.weight_decay) as f32,
                ..k
            };
            adamw_in_parallel(&g, &mut p, &mut m, &mut v, &k);
            for seg in &group.segments {
                let values = p[seg.offset..seg.offset + seg.len].to_vec();
                let t = Tensor::<1>::from_data(TensorData::new(values, [seg.len]), device);
                updated.insert(seg.name.clone(), t);
            }
            group.host = Some((m, v));
        }
        let mut assign = Assign {
            updated,
            path: Vec::new(),
        };
        let norm = Tensor::<1>::from_data(TensorData::new(vec![norm], [1]), device);
        (module.map(&mut assign), norm)
    }

    /// Makes the groups match the tensors `found` (same names, sizes and decay, in visit
    /// order), re-laying them out, moments kept by name, when they do not.
    fn arrange(&mut self, found: &[Found], device: &Device) {
        let mut wanted: Vec<(f64, Vec<&Found>)> = Vec::new();
        for f in found {
            match wanted.iter_mut().find(|(wd, _)| *wd == f.weight_decay) {
                Some((_, list)) => list.push(f),
                None => wanted.push((f.weight_decay, vec![f])),
            }
        }
        let same = self.groups.len() == wanted.len()
            && !found.iter().any(|f| self.loose.contains_key(&f.name))
            && self.groups.iter().zip(&wanted).all(|(g, (wd, list))| {
                g.weight_decay == *wd
                    && g.segments.len() == list.len()
                    && g.segments.iter().zip(list).all(|(s, f)| {
                        s.name == f.name && s.dims == f.dims && s.len == f.grad.dims()[0]
                    })
            });
        if same {
            return;
        }
        for group in std::mem::take(&mut self.groups) {
            for (name, m, v) in group.per_name() {
                self.loose.entry(name).or_insert((m, v));
            }
        }
        self.groups = wanted
            .iter()
            .map(|(wd, list)| Group::new(*wd, list, &mut self.loose, device))
            .collect();
    }

    /// Moments per official name: the groups' segments and any not yet placed.
    fn moments(&self) -> Vec<(String, Tensor<1>, Tensor<1>)> {
        let mut out: Vec<(String, Tensor<1>, Tensor<1>)> =
            self.groups.iter().flat_map(Group::per_name).collect();
        for (name, (m, v)) in &self.loose {
            if !out.iter().any(|(n, _, _)| n == name) {
                out.push((name.clone(), m.clone(), v.clone()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The state as flat tensors (`m.<name>`, `v.<name>`) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, RawTensor)> {
        let mut out = Vec::new();
        for (name, m, v) in self.moments() {
            for (prefix, t) in [("m.", m), ("v.", v)] {
                let data: Vec<f32> = crate::model::layers::host_vec(t);
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

    /// Restores moments saved by [`AdamW::state_tensors`]; they join their groups at the
    /// next step.
    pub fn load_state(
        &mut self,
        step: u64,
        tensors: &HashMap<String, RawTensor>,
        device: &burn::tensor::Device,
    ) {
        self.step = step;
        self.groups.clear();
        self.loose.clear();
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
            self.loose.insert(name.to_string(), (mk(m), mk(v)));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, Distribution, Tensor};

    use super::{AdamW, AdamWConfig};
    use crate::model::names::{RawTensor, Reader};

    #[derive(Module, Debug)]
    struct Net {
        a: Linear,
        b: Linear,
    }

    fn values(net: &Net) -> Vec<(String, RawTensor)> {
        let mut r = Reader::new();
        net.visit(&mut r);
        r.out
    }

    /// The host update on burn-flex and the tensor form give the same parameters and
    /// moments over several steps: with clipping that bites, with clipping that does not,
    /// and without clipping; the large layer takes the threaded path (over 2^16 values).
    #[test]
    fn host_update_equals_the_tensor_update() {
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::random([16, 300], Distribution::Default, &device);
        for clip in [Some(0.05), Some(1e6), None] {
            let net = Net {
                a: LinearConfig::new(300, 400).init(&device),
                b: LinearConfig::new(400, 3).init(&device),
            };
            let config = AdamWConfig {
                grad_clip: clip,
                lr: 1e-2,
                ..AdamWConfig::default()
            };
            let run = |mut opt: AdamW| {
                let mut net = net.clone();
                let mut norms = Vec::new();
                for _ in 0..4 {
                    let loss = net
                        .b
                        .forward(net.a.forward(x.clone()))
                        .powi_scalar(2)
                        .mean();
                    let grads = loss.backward();
                    let (n, norm) = opt.step(net, &grads, 1e-2);
                    net = n;
                    norms.push(crate::readback::host_scalar(norm));
                }
                (values(&net), opt.state_tensors(), norms)
            };
            let host = run(AdamW::new(config.clone()));
            let tensor = run(AdamW::new(config.clone()).with_tensor_update());
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len(), "{what}");
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                        "{what} ({clip:?}): {x} vs {y}"
                    );
                }
            };
            for ((n1, t1), (n2, t2)) in host.0.iter().zip(&tensor.0) {
                assert_eq!(n1, n2);
                close(&t1.data, &t2.data, n1);
            }
            assert_eq!(host.1.len(), tensor.1.len());
            for ((n1, t1), (_, t2)) in host.1.iter().zip(&tensor.1) {
                close(&t1.data, &t2.data, n1);
            }
            for (a, b) in host.2.iter().zip(&tensor.2) {
                assert!((a - b).abs() <= 1e-5 * b.abs(), "norm {a} vs {b}");
            }
            // the parameters moved
            let start = values(&net);
            assert!(start[0].1.data != host.0[0].1.data);
        }
    }
}
