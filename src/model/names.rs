//! Official parameter names (dapt-spec.md §3.5, §4.9): our module paths translated to the
//! PyTorch state-dict keys, so checkpoint import/export is a table lookup, plus the official
//! trainable rule (§4.6) and parameter counting.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::layers::host_vec;

/// Translates a burn module path (`blocks.3.attn.tfts_1.gamma`) to the official key
/// (`blocks.blocks.3.attn.tfts_gamma_1`).
pub fn official_name(path: &str) -> String {
    let mut parts: Vec<String> = path.split('.').map(str::to_string).collect();
    // tfts_N.{gamma,beta} -> tfts_{gamma,beta}_N
    let mut i = 0;
    while i + 1 < parts.len() {
        if let Some(n) = parts[i].strip_prefix("tfts_") {
            let n = n.to_string();
            let leaf = parts[i + 1].clone();
            parts[i] = format!("tfts_{leaf}_{n}");
            parts.remove(i + 1);
        }
        i += 1;
    }
    let mut out = Vec::with_capacity(parts.len() + 1);
    let mut iter = parts.into_iter().peekable();
    while let Some(p) = iter.next() {
        match p.as_str() {
            "blocks" => {
                // classification models nest blocks as `blocks.blocks.N`
                out.push("blocks".to_string());
                out.push("blocks".to_string());
            }
            "adapter" => out.push("Adapter_MLP".into()),
            "norm" if out.last().is_some_and(|l| l == "Adapter_MLP") => {
                out.push("adapter_layer_norm_before".into())
            }
            "head" => out.push("cls_head_finetune".into()),
            "first_conv0" => out.extend(["first_conv".into(), "0".into()]),
            "first_conv1" => out.extend(["first_conv".into(), "1".into()]),
            "first_conv3" => out.extend(["first_conv".into(), "3".into()]),
            "second_conv0" => out.extend(["second_conv".into(), "0".into()]),
            "second_conv1" => out.extend(["second_conv".into(), "1".into()]),
            "second_conv3" => out.extend(["second_conv".into(), "3".into()]),
            "fc0" if out.last().is_some_and(|l| l == "pos_embed") => out.push("0".into()),
            "fc2" if out.last().is_some_and(|l| l == "pos_embed") => out.push("2".into()),
            "fc0" | "bn1" | "fc4" | "bn5" | "fc8"
                if out.last().is_some_and(|l| l == "cls_head_finetune") =>
            {
                out.push(p[p.len() - 1..].to_string())
            }
            _ => out.push(p),
        }
        let _ = iter.peek();
    }
    out.join(".")
}

/// How a parameter is stored in PyTorch relative to burn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Same shape and order.
    Same,
    /// burn Linear weight `[in, out]` vs torch `[out, in]` (or Conv1d `[out, in, 1]`).
    Transposed,
}

/// A parameter of the model under its official name.
#[derive(Clone, Debug)]
pub struct NamedParam {
    pub name: String,
    /// Shape in the official (PyTorch) layout.
    pub torch_shape: Vec<usize>,
    pub layout: Layout,
    /// BatchNorm running statistics: state, not parameters.
    pub is_buffer: bool,
}

fn layout_for(name: &str, dims: &[usize]) -> Layout {
    if dims.len() == 2 && name.ends_with(".weight") {
        Layout::Transposed
    } else {
        Layout::Same
    }
}

fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// Torch shape of a burn tensor under `name` (conv weights get their trailing 1).
fn torch_shape(name: &str, dims: &[usize], layout: Layout) -> Vec<usize> {
    match layout {
        Layout::Transposed => {
            let mut s = vec![dims[1], dims[0]];
            if name.contains("first_conv.") || name.contains("second_conv.") {
                s.push(1);
            }
            s
        }
        Layout::Same => dims.to_vec(),
    }
}

struct Collector {
    path: Vec<String>,
    out: Vec<NamedParam>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = official_name(&self.path.join("."));
        let dims = param.lazy_shape().to_vec();
        let layout = layout_for(&name, &dims);
        self.out.push(NamedParam {
            torch_shape: torch_shape(&name, &dims, layout),
            layout,
            is_buffer: is_buffer(&name),
            name,
        });
    }
}

/// Every float tensor of `module` under its official name, in module order.
pub fn named_params<M: Module>(module: &M) -> Vec<NamedParam> {
    let mut c = Collector {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// The official DAPT rule (`part: dapt`): trainable iff the name contains `cls`, `tfts` or
/// `Adapter` (case-sensitive).
pub fn dapt_trainable(name: &str) -> bool {
    name.contains("cls") || name.contains("tfts") || name.contains("Adapter")
}

/// AdamW decay split: no decay for 1-D tensors, `.bias`, or names containing `token`.
pub fn no_weight_decay(name: &str, torch_shape: &[usize]) -> bool {
    torch_shape.len() == 1 || name.ends_with(".bias") || name.contains("token")
}

/// `(trainable, total)` parameter counts (buffers excluded), with `trainable` decided by `rule`.
pub fn count_params(params: &[NamedParam], rule: impl Fn(&str) -> bool) -> (usize, usize) {
    let mut trainable = 0;
    let mut total = 0;
    for p in params.iter().filter(|p| !p.is_buffer) {
        let n: usize = p.torch_shape.iter().product();
        total += n;
        if rule(&p.name) {
            trainable += n;
        }
    }
    (trainable, total)
}

/// A tensor in the official layout, as read from or written to a checkpoint.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Replaces parameters by official name. Returns the names it set; shape mismatches are
/// reported in `errors` and leave the parameter unchanged.
pub struct Loader<'a> {
    path: Vec<String>,
    pub tensors: &'a HashMap<String, RawTensor>,
    pub applied: Vec<String>,
    pub errors: Vec<String>,
}

impl<'a> Loader<'a> {
    pub fn new(tensors: &'a HashMap<String, RawTensor>) -> Self {
        Self {
            path: Vec::new(),
            tensors,
            applied: Vec::new(),
            errors: Vec::new(),
        }
    }
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = official_name(&self.path.join("."));
        let Some(raw) = self.tensors.get(&name) else {
            return param;
        };
        let dims = param.lazy_shape().to_vec();
        let layout = layout_for(&name, &dims);
        let want = torch_shape(&name, &dims, layout);
        let raw_numel: usize = raw.shape.iter().product();
        // accept a squeezed/unsqueezed trailing 1 (Conv1d vs Linear) but nothing else
        let strip = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if raw.shape != want && strip(&raw.shape) != strip(&want) {
            self.errors.push(format!(
                "{name}: checkpoint shape {:?}, model expects {:?}",
                raw.shape, want
            ));
            return param;
        }
        if raw_numel != raw.data.len() {
            self.errors
                .push(format!("{name}: data length does not match its shape"));
            return param;
        }
        let device = param.lazy_device();
        let data = match layout {
            Layout::Same => raw.data.clone(),
            Layout::Transposed => {
                // torch [out, in] -> burn [in, out]
                let (d_in, d_out) = (dims[0], dims[1]);
                let mut t = vec![0f32; raw.data.len()];
                for o in 0..d_out {
                    for i in 0..d_in {
                        t[i * d_out + o] = raw.data[o * d_in + i];
                    }
                }
                t
            }
        };
        let shape: [usize; D] = match dims.clone().try_into() {
            Ok(s) => s,
            Err(_) => return param,
        };
        let tensor = Tensor::<D>::from_data(burn::tensor::TensorData::new(data, shape), &device);
        self.applied.push(name);
        // gradient flags are set afterwards by `set_trainable`, from the names
        Param::initialized(param.id, tensor)
    }
}

/// Marks exactly the parameters for which `rule(official_name)` holds as trainable;
/// buffers never are.
pub struct Trainable<F: Fn(&str) -> bool> {
    path: Vec<String>,
    rule: F,
}

impl<F: Fn(&str) -> bool> Trainable<F> {
    pub fn new(rule: F) -> Self {
        Self {
            path: Vec::new(),
            rule,
        }
    }
}

impl<F: Fn(&str) -> bool> ModuleMapper for Trainable<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = official_name(&self.path.join("."));
        let on = !is_buffer(&name) && (self.rule)(&name);
        param.set_require_grad(on)
    }
}

/// Reads every parameter by official name, in the official layout.
pub struct Reader {
    path: Vec<String>,
    pub out: Vec<(String, RawTensor)>,
}

impl Reader {
    pub fn new() -> Self {
        Self {
            path: Vec::new(),
            out: Vec::new(),
        }
    }
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl ModuleVisitor for Reader {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = official_name(&self.path.join("."));
        let t = param.val();
        let dims = t.dims().to_vec();
        let layout = layout_for(&name, &dims);
        let shape = torch_shape(&name, &dims, layout);
        let data: Vec<f32> = host_vec(t);
        let data = to_torch_layout(data, &dims, layout);
        self.out.push((name, RawTensor { shape, data }));
    }
}

fn to_torch_layout(data: Vec<f32>, dims: &[usize], layout: Layout) -> Vec<f32> {
    match layout {
        Layout::Same => data,
        Layout::Transposed => {
            let (d_in, d_out) = (dims[0], dims[1]);
            let mut out = vec![0f32; data.len()];
            for i in 0..d_in {
                for o in 0..d_out {
                    out[o * d_in + i] = data[i * d_out + o];
                }
            }
            out
        }
    }
}

/// Gradients of every parameter that has one, by official name, in the official layout.
pub struct GradReader<'a> {
    path: Vec<String>,
    grads: &'a burn::tensor::Gradients,
    pub out: Vec<(String, RawTensor)>,
}

impl<'a> GradReader<'a> {
    pub fn new(grads: &'a burn::tensor::Gradients) -> Self {
        Self {
            path: Vec::new(),
            grads,
            out: Vec::new(),
        }
    }
}

impl ModuleVisitor for GradReader<'_> {
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
        let layout = layout_for(&name, &dims);
        let shape = torch_shape(&name, &dims, layout);
        let data: Vec<f32> = host_vec(g);
        self.out.push((
            name,
            RawTensor {
                shape,
                data: to_torch_layout(data, &dims, layout),
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_translate_to_official_keys() {
        assert_eq!(
            official_name("blocks.3.attn.tfts_1.gamma"),
            "blocks.blocks.3.attn.tfts_gamma_1"
        );
        assert_eq!(official_name("tfts_2.beta"), "tfts_beta_2");
        assert_eq!(
            official_name("blocks.0.adapter.norm.weight"),
            "blocks.blocks.0.Adapter_MLP.adapter_layer_norm_before.weight"
        );
        assert_eq!(
            official_name("blocks.11.adapter.down_proj.bias"),
            "blocks.blocks.11.Adapter_MLP.down_proj.bias"
        );
        assert_eq!(
            official_name("encoder.second_conv1.running_var"),
            "encoder.second_conv.1.running_var"
        );
        assert_eq!(official_name("pos_embed.fc2.weight"), "pos_embed.2.weight");
        assert_eq!(official_name("head.bn5.bias"), "cls_head_finetune.5.bias");
        assert_eq!(
            official_name("head.fc8.weight"),
            "cls_head_finetune.8.weight"
        );
        assert_eq!(official_name("norm.weight"), "norm.weight");
        assert_eq!(
            official_name("blocks.2.norm1.bias"),
            "blocks.blocks.2.norm1.bias"
        );
    }
}
