//! Checkpoint import and export (dapt-spec.md §3.5-§3.6, §4.9).
//!
//! Official PyTorch `.pth` files are read without Python (burn-store's pickle reader); their
//! keys are the official names, which our modules map to one to one (`model::names`).
//! Native checkpoints are safetensors files with the same official names plus a JSON
//! metadata entry, so either kind can be converted into the other by a key lookup.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::pytorch::PytorchReader;

use super::ModelError;
use super::names::{Loader, RawTensor, named_params};

/// Metadata key of native checkpoints holding the JSON document written by the saver.
pub const META_KEY: &str = "dapt_studio";

/// A state dict by official name, with where it came from.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    pub path: PathBuf,
    pub tensors: HashMap<String, RawTensor>,
    /// The JSON metadata of a native checkpoint (config, kind, ...).
    pub meta: Option<serde_json::Value>,
    pub format: CheckpointFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckpointFormat {
    #[default]
    Pytorch,
    Native,
}

fn ck_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a `.pth` (zip or legacy pickle) or native safetensors checkpoint.
pub fn read_state_dict(path: &Path) -> Result<StateDict, ModelError> {
    let mut head = [0u8; 16];
    let n = {
        let mut f = std::fs::File::open(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        use std::io::Read;
        f.read(&mut head).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?
    };
    // safetensors first: its 8-byte header length is arbitrary, and one in 32 of them
    // begins with 0x80, the pickle PROTO opcode (a pickle then names its protocol, 2 to 5)
    if n >= 9 && head[8] == b'{' {
        read_native(path)
    } else if n >= 4 && &head[..4] == b"PK\x03\x04"
        || n >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1])
    {
        read_pytorch(path)
    } else {
        Err(ck_err(
            path,
            "not a checkpoint: expected a PyTorch .pth (zip or pickle) or a safetensors file",
        ))
    }
}

fn bytes_to_f32(
    path: &Path,
    name: &str,
    dtype: pytorch_reader::DType,
    bytes: &[u8],
) -> Result<Vec<f32>, ModelError> {
    use pytorch_reader::DType as T;
    let chunks = |w: usize| bytes.chunks_exact(w);
    Ok(match dtype {
        T::F32 => chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        T::F64 => chunks(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        T::F16 => chunks(2)
            .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        T::BF16 => chunks(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        T::I64 => chunks(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => {
            return Err(ck_err(
                path,
                format!("{name}: unsupported tensor dtype {other:?}"),
            ));
        }
    })
}

fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if frac == 0 {
            sign
        } else {
            // subnormal
            let v = frac as f32 * (1.0 / (1 << 24) as f32);
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (frac << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (frac << 13)
    };
    f32::from_bits(bits)
}

/// Official `.pth`: a dict holding the state dict under `base_model`, `model` or
/// `model_state_dict` (or a bare state dict); `module.` prefixes are stripped.
pub fn read_pytorch(path: &Path) -> Result<StateDict, ModelError> {
    let mut last_err = None;
    let mut reader = None;
    for key in ["base_model", "model", "model_state_dict", "state_dict"] {
        match PytorchReader::with_top_level_key(path, key) {
            Ok(r) if !r.is_empty() => {
                reader = Some(r);
                break;
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    let reader = match reader {
        Some(r) => r,
        None => match PytorchReader::new(path) {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => return Err(ck_err(path, "the file holds no tensors")),
            Err(e) => {
                return Err(ck_err(
                    path,
                    format!(
                        "cannot read as a PyTorch checkpoint: {e}{}",
                        last_err.map(|l| format!(" ({l})")).unwrap_or_default()
                    ),
                ));
            }
        },
    };
    let mut tensors = HashMap::new();
    for (name, t) in reader.into_tensors() {
        let clean = name.replace("module.", "");
        if clean.ends_with("num_batches_tracked") {
            continue;
        }
        let bytes = t.read().map_err(|e| ck_err(path, format!("{name}: {e}")))?;
        let shape = t.shape().to_vec();
        let data = bytes_to_f32(path, &name, t.dtype(), &bytes)?;
        if data.len() != shape.iter().product::<usize>() {
            return Err(ck_err(
                path,
                format!("{name}: data does not match shape {shape:?}"),
            ));
        }
        tensors.insert(clean, RawTensor { shape, data });
    }
    Ok(StateDict {
        path: path.to_path_buf(),
        tensors,
        meta: None,
        format: CheckpointFormat::Pytorch,
    })
}

/// Native safetensors checkpoint (f32 tensors by official name + JSON metadata).
pub fn read_native(path: &Path) -> Result<StateDict, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ck_err(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| ck_err(path, format!("bad safetensors header: {e}")))?;
    let meta = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| ck_err(path, format!("bad metadata: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.iter() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(ck_err(
                path,
                format!("{name}: expected f32, found {:?}", view.dtype()),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(
            name.to_string(),
            RawTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(StateDict {
        path: path.to_path_buf(),
        tensors,
        meta,
        format: CheckpointFormat::Native,
    })
}

/// Writes tensors by official name as safetensors, atomically (temp file, fsync, rename).
pub fn write_native(
    path: &Path,
    tensors: &[(String, RawTensor)],
    meta: &serde_json::Value,
) -> Result<u64, ModelError> {
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bytes_per: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), b) in tensors.iter().zip(bytes_per.iter()) {
        let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)
            .map_err(|e| ck_err(path, format!("{name}: {e}")))?;
        views.push((name.clone(), v));
    }
    let mut info = HashMap::new();
    info.insert(META_KEY.to_string(), meta.to_string());
    let buf = safetensors::serialize(views, Some(info))
        .map_err(|e| ck_err(path, format!("serialise: {e}")))?;
    atomic_write(path, &buf).map_err(io)?;
    Ok(buf.len() as u64)
}

pub use crate::atomic_file::write as atomic_write;

/// How strictly a state dict must match the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Every model tensor must be present and nothing else (fine-tuned checkpoints).
    Strict,
    /// A Point-MAE `pretrain.pth` (or a backbone): encoder prefixes stripped, decoder keys
    /// ignored, new parts (cls, head, TFTS, adapters) left at their initialisation.
    Backbone,
}

/// What a load did.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub applied: Vec<String>,
    /// Model tensors the file did not have (left at init).
    pub missing: Vec<String>,
    /// File tensors the model has no place for (ignored).
    pub unexpected: Vec<String>,
}

/// The official remapping of a pre-training checkpoint (§3.6 step 2).
pub fn backbone_key(key: &str) -> String {
    for prefix in [
        "MAE_encoder.",
        "ACT_encoder.",
        "transformer_k.",
        "base_model.",
    ] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    key.to_string()
}

/// Applies a state dict to `module` under `mode`.
pub fn load_into<M: Module>(
    module: M,
    dict: &StateDict,
    mode: LoadMode,
) -> Result<(M, LoadReport), ModelError> {
    let tensors: HashMap<String, RawTensor> = match mode {
        LoadMode::Strict => dict.tensors.clone(),
        LoadMode::Backbone => dict
            .tensors
            .iter()
            .map(|(k, v)| (backbone_key(k), v.clone()))
            .collect(),
    };
    let expected = named_params(&module);
    let mut loader = Loader::new(&tensors);
    let module = module.map(&mut loader);
    if !loader.errors.is_empty() {
        return Err(ck_err(&dict.path, loader.errors.join("; ")));
    }
    let applied = loader.applied;
    let names: std::collections::HashSet<&str> = expected.iter().map(|p| p.name.as_str()).collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|p| !tensors.contains_key(&p.name))
        .map(|p| p.name.clone())
        .collect();
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !names.contains(k.as_str()))
        .cloned()
        .collect();
    unexpected.sort();
    if mode == LoadMode::Strict && (!missing.is_empty() || !unexpected.is_empty()) {
        let show = |v: &[String]| {
            let mut s = v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 8 {
                s.push_str(&format!(", ... ({} in all)", v.len()));
            }
            s
        };
        let mut msg = String::from("does not match the model");
        if !missing.is_empty() {
            msg.push_str(&format!("; missing keys: {}", show(&missing)));
        }
        if !unexpected.is_empty() {
            msg.push_str(&format!("; unexpected keys: {}", show(&unexpected)));
        }
        return Err(ck_err(&dict.path, msg));
    }
    if mode == LoadMode::Backbone && applied.is_empty() {
        return Err(ck_err(
            &dict.path,
            "no tensor of this file matches the Point-MAE backbone (is it a Point-MAE checkpoint?)",
        ));
    }
    Ok((
        module,
        LoadReport {
            applied,
            missing,
            unexpected,
        },
    ))
}

/// A minimal pickle (protocol 2) writer for the objects a PyTorch checkpoint holds.
struct Pickle {
    out: Vec<u8>,
}

impl Pickle {
    fn new() -> Self {
        // PROTO 2
        Self { out: vec![0x80, 2] }
    }
    fn op(&mut self, b: u8) {
        self.out.push(b);
    }
    fn mark(&mut self) {
        self.op(b'(');
    }
    fn text(&mut self, s: &str) {
        // BINUNICODE: u32 length + UTF-8
        self.op(b'X');
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend(s.as_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.out.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn int(&mut self, v: usize) -> Result<(), String> {
        if v < 256 {
            self.op(b'K');
            self.op(v as u8);
        } else if v < 65_536 {
            self.op(b'M');
            self.out.extend((v as u16).to_le_bytes());
        } else {
            let v = i32::try_from(v).map_err(|_| format!("{v} does not fit a pickle BININT"))?;
            self.op(b'J');
            self.out.extend(v.to_le_bytes());
        }
        Ok(())
    }
    fn int_tuple(&mut self, vs: &[usize]) -> Result<(), String> {
        if vs.is_empty() {
            self.op(b')');
            return Ok(());
        }
        self.mark();
        for &v in vs {
            self.int(v)?;
        }
        self.op(b't');
        Ok(())
    }
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }
    /// `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with
    /// the storage as persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`.
    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<(), String> {
        let numel: usize = shape.iter().product();
        let mut stride = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.mark();
        self.mark();
        self.text("storage");
        self.global("torch", "FloatStorage");
        self.text(key);
        self.text("cpu");
        self.int(numel)?;
        self.op(b't');
        self.op(b'Q'); // BINPERSID
        self.int(0)?;
        self.int_tuple(shape)?;
        self.int_tuple(&stride)?;
        self.op(0x89); // NEWFALSE: requires_grad
        self.empty_ordered_dict(); // backward hooks
        self.op(b't');
        self.op(b'R');
        Ok(())
    }
}

/// Writes `tensors` (official names and shapes, f32) as a PyTorch zip checkpoint in the layout
/// `torch.save({'base_model': state_dict, 'epoch': epoch})` produces — `archive/data.pkl`
/// (pickle protocol 2), one raw little-endian storage per tensor under `archive/data/<i>`,
/// `archive/version` and `archive/byteorder` — atomically. Returns the file size.
pub fn write_pytorch(
    path: &Path,
    tensors: &[(String, RawTensor)],
    epoch: usize,
) -> Result<u64, ModelError> {
    use std::io::Cursor;
    use zip::write::SimpleFileOptions;

    let err = |m: String| ck_err(path, m);
    let mut p = Pickle::new();
    p.op(b'}'); // EMPTY_DICT
    p.mark();
    p.text("base_model");
    p.empty_ordered_dict();
    p.mark();
    for (i, (name, t)) in tensors.iter().enumerate() {
        if t.data.len() != t.shape.iter().product::<usize>() {
            return Err(err(format!(
                "{name}: data does not match shape {:?}",
                t.shape
            )));
        }
        p.text(name);
        p.tensor(&i.to_string(), &t.shape)
            .map_err(|m| err(format!("{name}: {m}")))?;
    }
    p.op(b'u'); // SETITEMS into the OrderedDict
    p.text("epoch");
    p.int(epoch).map_err(err)?;
    p.op(b'u'); // SETITEMS into the top-level dict
    p.op(b'.');

    // stored (uncompressed), data aligned to 64 bytes as torch.save writes it
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let zerr = |e: zip::result::ZipError| ck_err(path, format!("zip: {e}"));
    let ioerr = |e: std::io::Error| ck_err(path, format!("zip: {e}"));
    zw.start_file("archive/data.pkl", opts).map_err(zerr)?;
    zw.write_all(&p.out).map_err(ioerr)?;
    zw.start_file("archive/byteorder", opts).map_err(zerr)?;
    zw.write_all(b"little").map_err(ioerr)?;
    for (i, (_, t)) in tensors.iter().enumerate() {
        zw.start_file(
            format!("archive/data/{i}"),
            opts.large_file(t.data.len() * 4 > u32::MAX as usize),
        )
        .map_err(zerr)?;
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        zw.write_all(&bytes).map_err(ioerr)?;
    }
    zw.start_file("archive/version", opts).map_err(zerr)?;
    zw.write_all(b"3\n").map_err(ioerr)?;
    let buf = zw.finish().map_err(zerr)?.into_inner();
    atomic_write(path, &buf).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(buf.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::names::RawTensor;

    #[test]
    fn a_safetensors_file_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        let tensors = vec![(
            "w".to_string(),
            RawTensor {
                shape: vec![2],
                data: vec![1.0, 2.0],
            },
        )];
        let mut hit = false;
        for pad in 0..512 {
            let meta = serde_json::json!({"kind": "test", "pad": "x".repeat(pad)});
            write_native(&p, &tensors, &meta).unwrap();
            if std::fs::read(&p).unwrap()[0] != 0x80 {
                continue;
            }
            hit = true;
            let d = read_state_dict(&p).unwrap();
            assert_eq!(d.format, CheckpointFormat::Native);
            assert_eq!(d.tensors["w"].data, vec![1.0, 2.0]);
            break;
        }
        assert!(hit, "no padding gave a header length ending in 0x80");
    }
}
