//! A minimal, safe reader for the Python pickles the official data sets ship: lists, tuples
//! and dicts of NumPy arrays, NumPy scalars, Python ints, floats, strings and bytes, written
//! by `pickle.dump` with protocols 2 to 5 (Python 2 files included). The ModelNet40 caches
//! `modelnet40_{train,test}_8192pts_fps.dat` and the few-shot folds `{W}way_{K}shot/{fold}.pkl`
//! are such pickles (dapt-spec.md §2.1, §7).
//!
//! Nothing in a pickle is ever executed. A pickle names Python callables (`GLOBAL`) and asks
//! for them to be called (`REDUCE`, `BUILD`); this reader knows seven of them by name
//! (NumPy's array and scalar reconstructors, `numpy.dtype`, `numpy.ndarray`, protocol 5's
//! `_frombuffer`, and protocol 2's `_codecs.encode` and `bytes` for byte strings) and
//! interprets those calls itself; any other name is an error that names it. Hostile input
//! never panics: every read is bounds-checked, no declared length is trusted before it is
//! checked against the bytes that remain, array shapes must match their data exactly, and
//! nesting is capped. Arrays share the file's buffer instead of copying it, so memory stays a
//! small multiple of the file size.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use super::error::{DataError, Result};

/// Deepest nesting of containers (and of `MARK`s) accepted; the official files nest 4 deep.
/// The cap keeps a hostile file from exhausting the call stack when the result is built.
pub const MAX_DEPTH: usize = 100;

/// NumPy's own limit on array dimensions.
const MAX_DIMS: usize = 64;

/// Longest `GLOBAL` line (module or name) accepted.
const MAX_GLOBAL_LINE: usize = 256;

/// A byte string, usually a window into the file's buffer (no copy).
#[derive(Clone)]
pub struct Bytes {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Bytes {
    fn owned(v: Vec<u8>) -> Self {
        let end = v.len();
        Self {
            buf: Arc::new(v),
            start: 0,
            end,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // start <= end <= buf.len() holds by construction
        self.buf.get(self.start..self.end).unwrap_or_default()
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for Bytes {
    // a point-cloud array is 196 kB; printing it would drown any message
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len() <= 16 {
            write!(f, "b{:?}", self.as_slice())
        } else {
            write!(f, "<{} bytes>", self.len())
        }
    }
}

/// The element kinds read from NumPy arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtypeKind {
    Bool,
    Int,
    UInt,
    Float,
}

/// A NumPy element type: kind, size in bytes and byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtype {
    pub kind: DtypeKind,
    pub size: usize,
    pub big_endian: bool,
}

impl Dtype {
    /// NumPy's type string (`f4`, `<i8`, `|u1`, `b1`, `?`), as `numpy.dtype` receives it.
    pub fn parse(code: &str) -> Option<Self> {
        let (big_endian, rest) = match code.as_bytes().first()? {
            b'<' | b'=' | b'|' => (false, &code[1..]),
            b'>' => (true, &code[1..]),
            _ => (false, code),
        };
        if rest == "?" {
            return Some(Self {
                kind: DtypeKind::Bool,
                size: 1,
                big_endian,
            });
        }
        let kind = match rest.as_bytes().first()? {
            b'b' => DtypeKind::Bool,
            b'i' => DtypeKind::Int,
            b'u' => DtypeKind::UInt,
            b'f' => DtypeKind::Float,
            _ => return None,
        };
        let size: usize = rest[1..].parse().ok()?;
        let ok = match kind {
            DtypeKind::Bool => size == 1,
            DtypeKind::Int | DtypeKind::UInt => matches!(size, 1 | 2 | 4 | 8),
            DtypeKind::Float => matches!(size, 4 | 8),
        };
        ok.then_some(Self {
            kind,
            size,
            big_endian,
        })
    }

    /// The type string NumPy prints (`<f4`, `|u1`).
    pub fn name(&self) -> String {
        let order = if self.size == 1 {
            '|'
        } else if self.big_endian {
            '>'
        } else {
            '<'
        };
        let k = match self.kind {
            DtypeKind::Bool => 'b',
            DtypeKind::Int => 'i',
            DtypeKind::UInt => 'u',
            DtypeKind::Float => 'f',
        };
        format!("{order}{k}{}", self.size)
    }
}

/// A NumPy array (a NumPy scalar is one with an empty shape), holding its raw bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Column-major element order (`is_fortran` / order `'F'`).
    pub fortran: bool,
    data: Bytes,
}

impl NdArray {
    /// Checks that `shape` describes exactly `data.len()` bytes.
    fn new(
        dtype: Dtype,
        shape: Vec<usize>,
        fortran: bool,
        data: Bytes,
    ) -> std::result::Result<Self, String> {
        if shape.len() > MAX_DIMS {
            return Err(format!(
                "an array with {} dimensions (NumPy allows {MAX_DIMS})",
                shape.len()
            ));
        }
        let need = shape
            .iter()
            .try_fold(dtype.size, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("array shape {shape:?} is too large"))?;
        if need != data.len() {
            return Err(format!(
                "array shape {shape:?} of {} needs {need} bytes, but its data has {}",
                dtype.name(),
                data.len()
            ));
        }
        Ok(Self {
            dtype,
            shape,
            fortran,
            data,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw element bytes in storage order.
    pub fn raw(&self) -> &[u8] {
        self.data.as_slice()
    }

    fn element_bytes(&self, i: usize) -> [u8; 8] {
        let s = self.dtype.size;
        let mut b = [0u8; 8];
        if let Some(src) = self.raw().get(i * s..(i + 1) * s) {
            b[..s].copy_from_slice(src);
            if self.dtype.big_endian {
                b[..s].reverse();
            }
        }
        b
    }

    /// Element `i` in storage order, as f64 (integers convert exactly up to 2^53).
    fn element_f64(&self, i: usize) -> f64 {
        let b = self.element_bytes(i);
        match (self.dtype.kind, self.dtype.size) {
            (DtypeKind::Float, 4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            (DtypeKind::Float, _) => f64::from_le_bytes(b),
            (DtypeKind::Int, _) => self.signed(b) as f64,
            (DtypeKind::UInt | DtypeKind::Bool, _) => u64::from_le_bytes(b) as f64,
        }
    }

    fn signed(&self, b: [u8; 8]) -> i64 {
        let shift = 64 - 8 * self.dtype.size as u32;
        (i64::from_le_bytes(b) << shift) >> shift
    }

    /// Element `i` in storage order as an integer; `None` for floats and for a u64 above i64.
    fn element_i64(&self, i: usize) -> Option<i64> {
        let b = self.element_bytes(i);
        match self.dtype.kind {
            DtypeKind::Float => None,
            DtypeKind::Int => Some(self.signed(b)),
            DtypeKind::UInt | DtypeKind::Bool => i64::try_from(u64::from_le_bytes(b)).ok(),
        }
    }

    /// Storage positions of the elements in C (row-major) order.
    fn c_order(&self) -> Vec<usize> {
        let n = self.len();
        if n == 0 || !self.fortran || self.shape.len() < 2 {
            return (0..n).collect();
        }
        // column-major strides, walked with a row-major odometer
        let mut strides = vec![1usize; self.shape.len()];
        for d in 1..self.shape.len() {
            strides[d] = strides[d - 1] * self.shape[d - 1];
        }
        let mut idx = vec![0usize; self.shape.len()];
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }

    /// All elements in C order, converted to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.c_order()
            .into_iter()
            .map(|i| self.element_f64(i))
            .collect()
    }

    /// All elements in C order, converted to f32 (float64 data is rounded).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        if self.dtype.kind == DtypeKind::Float && self.dtype.size == 4 && !self.fortran {
            // the common case (the ModelNet40 caches): a straight decode
            return self
                .raw()
                .chunks_exact(4)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3]];
                    if self.dtype.big_endian {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    }
                })
                .collect();
        }
        self.c_order()
            .into_iter()
            .map(|i| self.element_f64(i) as f32)
            .collect()
    }

    /// All elements in C order as integers; `None` for a float array or a u64 beyond i64.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        self.c_order()
            .into_iter()
            .map(|i| self.element_i64(i))
            .collect()
    }
}

/// A value read from a pickle. Containers are shared (`Arc`), so an object the pickle
/// refers to twice is held once.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    /// Python 3 `bytes`/`bytearray`, and Python 2 `str`.
    Bytes(Bytes),
    List(Arc<Vec<Value>>),
    Tuple(Arc<Vec<Value>>),
    /// Entries in pickle order; a repeated key keeps every entry, [`Value::get`] finds the last.
    Dict(Arc<Vec<(Value, Value)>>),
    /// A NumPy array, or a NumPy scalar (empty shape).
    Array(Arc<NdArray>),
}

impl Value {
    /// The Python-ish name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Array(a) if a.shape.is_empty() => "NumPy scalar",
            Value::Array(_) => "NumPy array",
        }
    }

    /// The elements of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&NdArray> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An integer: a Python int or bool, or a NumPy integer scalar or one-element array
    /// (the ModelNet40 caches store each label as an int32 array of shape (1,)).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            Value::Array(a) if a.len() == 1 => a.element_i64(0),
            _ => None,
        }
    }

    /// Text: a `str`, or ASCII `bytes` (how Python 2 files store strings).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) if b.is_ascii() => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value under a text key of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Reads and decodes a pickle file.
pub fn read_pickle(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_pickle(bytes, path)
}

/// Decodes a pickle held in memory; `path` names it in errors.
pub fn parse_pickle(bytes: Vec<u8>, path: &Path) -> Result<Value> {
    Parser {
        buf: Arc::new(bytes),
        pos: 0,
        op_pos: 0,
        path,
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

/// The callables a pickle may name; everything else is refused by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    /// `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`, then `BUILD` with the data.
    Reconstruct,
    /// Only ever an argument of `_reconstruct`.
    Ndarray,
    /// `numpy.dtype('f4', False, True)`, then `BUILD` with the byte order.
    Dtype,
    /// `numpy.core.multiarray.scalar(dtype, raw_bytes)`.
    Scalar,
    /// Protocol 5: `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)`.
    FromBuffer,
    /// Protocol 2 from Python 3 writes `bytes` as `_codecs.encode(text, 'latin1')`...
    CodecsEncode,
    /// ... and an empty `bytes` as `__builtin__.bytes()`.
    EmptyBytes,
}

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Self> {
        let multiarray = matches!(module, "numpy.core.multiarray" | "numpy._core.multiarray");
        let numeric = matches!(module, "numpy.core.numeric" | "numpy._core.numeric");
        Some(match (name, module) {
            ("_reconstruct", _) if multiarray => Global::Reconstruct,
            ("scalar", _) if multiarray => Global::Scalar,
            ("ndarray", "numpy") => Global::Ndarray,
            ("ndarray", _) if multiarray => Global::Ndarray,
            ("dtype", "numpy") => Global::Dtype,
            ("_frombuffer", _) if numeric => Global::FromBuffer,
            ("encode", "_codecs") => Global::CodecsEncode,
            ("bytes", "__builtin__" | "builtins") => Global::EmptyBytes,
            _ => return None,
        })
    }

    fn python_name(self) -> &'static str {
        match self {
            Global::Reconstruct => "numpy.core.multiarray._reconstruct",
            Global::Ndarray => "numpy.ndarray",
            Global::Dtype => "numpy.dtype",
            Global::Scalar => "numpy.core.multiarray.scalar",
            Global::FromBuffer => "numpy.core.numeric._frombuffer",
            Global::CodecsEncode => "_codecs.encode",
            Global::EmptyBytes => "builtins.bytes",
        }
    }
}

/// An object under construction. Containers refer to others by index, so that the
/// mutations a pickle applies after memoizing an object (`APPENDS` into a memoized list,
/// `BUILD` on a memoized array) are seen by every reference to it.
enum Obj {
    Leaf(Value),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(Global),
    Dtype(Dtype),
    /// `_reconstruct`'s result, waiting for `BUILD` to bring shape, dtype and data.
    PendingArray,
    Array(Arc<NdArray>),
}

impl Obj {
    fn kind(&self) -> String {
        match self {
            Obj::Leaf(v) => v.type_name().to_string(),
            Obj::List(_) => "list".into(),
            Obj::Tuple(_) => "tuple".into(),
            Obj::Dict(_) => "dict".into(),
            Obj::Global(g) => g.python_name().into(),
            Obj::Dtype(_) => "NumPy dtype".into(),
            Obj::PendingArray => "NumPy array without data".into(),
            Obj::Array(_) => "NumPy array".into(),
        }
    }
}

struct Parser<'a> {
    buf: Arc<Vec<u8>>,
    pos: usize,
    /// Where the opcode being run starts, for messages.
    op_pos: usize,
    path: &'a Path,
    objs: Vec<Obj>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u32, usize>,
}

type Res<T> = std::result::Result<T, DataError>;

impl Parser<'_> {
    fn err(&self, msg: impl fmt::Display) -> DataError {
        DataError::format(self.path, format!("pickle, byte {}: {msg}", self.op_pos))
    }

    fn unsupported(&self, msg: impl fmt::Display) -> DataError {
        DataError::unsupported(self.path, format!("pickle, byte {}: {msg}", self.op_pos))
    }

    fn take(&mut self, n: usize) -> Res<std::ops::Range<usize>> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.err(format!(
                    "truncated: {n} bytes needed, {} left",
                    self.buf.len() - self.pos
                ))
            })?;
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }

    fn bytes<const N: usize>(&mut self) -> Res<[u8; N]> {
        let r = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[r]);
        Ok(out)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.bytes::<1>()?[0])
    }

    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    /// A length field; its bytes must still be in the file, so nothing is allocated for it.
    fn len_field(&mut self, width: usize) -> Res<usize> {
        let n: u64 = match width {
            1 => self.u8()? as u64,
            4 => self.u32()? as u64,
            _ => u64::from_le_bytes(self.bytes()?),
        };
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!("truncated: a length of {n} with {left} bytes left")));
        }
        Ok(n as usize)
    }

    fn slice(&mut self, n: usize) -> Res<Bytes> {
        let r = self.take(n)?;
        Ok(Bytes {
            buf: Arc::clone(&self.buf),
            start: r.start,
            end: r.end,
        })
    }

    fn text(&mut self, n: usize) -> Res<Arc<str>> {
        let r = self.take(n)?;
        match std::str::from_utf8(&self.buf[r]) {
            Ok(s) => Ok(Arc::from(s)),
            Err(_) => Err(self.err("a string is not valid UTF-8")),
        }
    }

    fn line(&mut self) -> Res<String> {
        let rest = &self.buf[self.pos..];
        let n = rest
            .iter()
            .take(MAX_GLOBAL_LINE + 1)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("a GLOBAL name without its end of line (or too long)"))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| self.err("a GLOBAL name is not text"))?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn push_obj(&mut self, o: Obj) {
        self.objs.push(o);
        self.stack.push(self.objs.len() - 1);
    }

    fn push(&mut self, v: Value) {
        self.push_obj(Obj::Leaf(v));
    }

    fn pop(&mut self) -> Res<usize> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&self) -> Res<usize> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(&t) if self.stack.len() > floor => Ok(t),
            _ => Err(self.err("stack underflow")),
        }
    }

    fn pop_mark(&mut self) -> Res<Vec<usize>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK to pop to"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn text_of(&self, id: usize) -> Option<String> {
        match &self.objs[id] {
            Obj::Leaf(v) => v.as_text().map(String::from),
            _ => None,
        }
    }

    fn int_of(&self, id: usize) -> Option<i64> {
        match &self.objs[id] {
            Obj::Leaf(v) => v.as_int(),
            Obj::Array(a) if a.shape.is_empty() => a.element_i64(0),
            _ => None,
        }
    }

    fn tuple_items(&self, id: usize, what: &str) -> Res<Vec<usize>> {
        match &self.objs[id] {
            Obj::Tuple(t) => Ok(t.clone()),
            o => Err(self.err(format!("{what} must be a tuple, not a {}", o.kind()))),
        }
    }

    fn shape_of(&self, id: usize) -> Res<Vec<usize>> {
        let items = self.tuple_items(id, "an array shape")?;
        items
            .iter()
            .map(|&d| {
                self.int_of(d)
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| self.err("an array shape holds something other than a size"))
            })
            .collect()
    }

    fn dtype_of(&self, id: usize) -> Res<Dtype> {
        match &self.objs[id] {
            Obj::Dtype(d) => Ok(*d),
            o => Err(self.err(format!("expected a NumPy dtype, found a {}", o.kind()))),
        }
    }

    fn bytes_of(&self, id: usize, what: &str) -> Res<Bytes> {
        match &self.objs[id] {
            Obj::Leaf(Value::Bytes(b)) => Ok(b.clone()),
            Obj::Leaf(Value::List(_)) | Obj::List(_) => Err(self.unsupported(format!(
                "{what} is a list (an object array); only numeric arrays are read"
            ))),
            o => Err(self.err(format!("{what} must be bytes, not a {}", o.kind()))),
        }
    }

    fn bool_of(&self, id: usize, what: &str) -> Res<bool> {
        self.int_of(id)
            .map(|v| v != 0)
            .ok_or_else(|| self.err(format!("{what} must be a bool")))
    }

    fn array(&self, dtype: Dtype, shape: Vec<usize>, fortran: bool, data: Bytes) -> Res<Obj> {
        NdArray::new(dtype, shape, fortran, data)
            .map(|a| Obj::Array(Arc::new(a)))
            .map_err(|m| self.err(m))
    }

    fn reduce(&mut self) -> Res<()> {
        let args = self.pop()?;
        let func = self.pop()?;
        let g = match &self.objs[func] {
            Obj::Global(g) => *g,
            o => return Err(self.err(format!("REDUCE calls a {}, not a callable", o.kind()))),
        };
        let a = self.tuple_items(args, &format!("the arguments of {}", g.python_name()))?;
        let arity = |n: usize| -> Res<()> {
            if a.len() < n {
                Err(self.err(format!(
                    "{} takes {n} arguments, got {}",
                    g.python_name(),
                    a.len()
                )))
            } else {
                Ok(())
            }
        };
        let obj = match g {
            Global::Reconstruct => {
                arity(1)?;
                if !matches!(self.objs[a[0]], Obj::Global(Global::Ndarray)) {
                    return Err(self.unsupported(format!(
                        "_reconstruct of a {} (only numpy.ndarray is read)",
                        self.objs[a[0]].kind()
                    )));
                }
                Obj::PendingArray
            }
            Global::Dtype => {
                arity(1)?;
                let code = self
                    .text_of(a[0])
                    .ok_or_else(|| self.err("numpy.dtype needs a type string"))?;
                let d = Dtype::parse(&code).ok_or_else(|| {
                    self.unsupported(format!(
                        "NumPy dtype `{code}` is not read (bool, int8-64, uint8-64, float32 and float64 are)"
                    ))
                })?;
                Obj::Dtype(d)
            }
            Global::Scalar => {
                arity(2)?;
                let d = self.dtype_of(a[0])?;
                let data = self.bytes_of(a[1], "a NumPy scalar's value")?;
                self.array(d, Vec::new(), false, data)?
            }
            Global::FromBuffer => {
                arity(4)?;
                let data = self.bytes_of(a[0], "an array buffer")?;
                let d = self.dtype_of(a[1])?;
                let shape = self.shape_of(a[2])?;
                let fortran = match self.text_of(a[3]).as_deref() {
                    Some("C") => false,
                    Some("F") => true,
                    _ => return Err(self.err("_frombuffer's order must be 'C' or 'F'")),
                };
                self.array(d, shape, fortran, data)?
            }
            Global::CodecsEncode => {
                arity(2)?;
                let enc = self.text_of(a[1]).unwrap_or_default().to_ascii_lowercase();
                if !matches!(enc.as_str(), "latin1" | "latin-1" | "iso-8859-1") {
                    return Err(self.unsupported(format!(
                        "_codecs.encode with encoding `{enc}` (only latin1 is read)"
                    )));
                }
                let s = match &self.objs[a[0]] {
                    Obj::Leaf(Value::Str(s)) => Arc::clone(s),
                    _ => return Err(self.err("_codecs.encode needs a str")),
                };
                let bytes: Option<Vec<u8>> =
                    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                let bytes = bytes
                    .ok_or_else(|| self.err("a latin1 string has a character above U+00FF"))?;
                Obj::Leaf(Value::Bytes(Bytes::owned(bytes)))
            }
            Global::EmptyBytes => {
                if !a.is_empty() {
                    return Err(self.unsupported("bytes() with arguments"));
                }
                Obj::Leaf(Value::Bytes(Bytes::owned(Vec::new())))
            }
            Global::Ndarray => {
                return Err(self.unsupported("numpy.ndarray is only read through _reconstruct"));
            }
        };
        self.push_obj(obj);
        Ok(())
    }

    fn build(&mut self) -> Res<()> {
        let state = self.pop()?;
        let target = self.top()?;
        match &self.objs[target] {
            Obj::Dtype(d) => {
                let mut d = *d;
                let s = self.tuple_items(state, "a dtype's state")?;
                if let Some(order) = s.get(1).and_then(|&o| self.text_of(o)) {
                    d.big_endian = match order.as_str() {
                        ">" => true,
                        "<" | "=" | "|" => false,
                        o => return Err(self.err(format!("unknown byte order `{o}`"))),
                    };
                }
                // subarray, names, fields: set only for structured dtypes
                for &i in s.iter().skip(2).take(3) {
                    if !matches!(self.objs[i], Obj::Leaf(Value::None)) {
                        return Err(self.unsupported("a structured NumPy dtype"));
                    }
                }
                self.objs[target] = Obj::Dtype(d);
            }
            Obj::PendingArray => {
                let s = self.tuple_items(state, "an array's state")?;
                // (version, shape, dtype, is_fortran, data); very old NumPy omits the version
                let s = match s.len() {
                    5 => &s[1..],
                    4 => &s[..],
                    n => return Err(self.err(format!("an array state of {n} items"))),
                };
                let shape = self.shape_of(s[0])?;
                let d = self.dtype_of(s[1])?;
                let fortran = self.bool_of(s[2], "is_fortran")?;
                let data = self.bytes_of(s[3], "an array's data")?;
                self.objs[target] = self.array(d, shape, fortran, data)?;
            }
            o => return Err(self.unsupported(format!("BUILD on a {}", o.kind()))),
        }
        Ok(())
    }

    fn run(mut self) -> Result<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                // PROTO
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(self.unsupported(format!("pickle protocol {v}")));
                    }
                }
                // FRAME: a buffering hint; its length must still fit the file
                0x95 => {
                    self.len_field(8)?;
                }
                b'.' => break,
                b'(' => {
                    if self.marks.len() >= MAX_DEPTH {
                        return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
                    }
                    self.marks.push(self.stack.len());
                }
                // POP, POP_MARK
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b']' => self.push_obj(Obj::List(Vec::new())),
                b')' => self.push_obj(Obj::Tuple(Vec::new())),
                b'}' => self.push_obj(Obj::Dict(Vec::new())),
                // LIST, TUPLE, DICT from the items above the mark
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_obj(Obj::Dict(pairs));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_obj(Obj::Tuple(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.top()?;
                    self.append(list, [v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.append(list, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let d = self.top()?;
                    self.set_items(d, pairs)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(m), Some(n)) = (self.text_of(module), self.text_of(name)) else {
                        return Err(self.err("STACK_GLOBAL needs a module and a name"));
                    };
                    self.global(&m, &n)?;
                }
                b'R' => self.reduce()?,
                b'b' => self.build()?,
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.bytes()?);
                    self.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.bytes()?);
                    self.push(Value::Int(v as i64));
                }
                // LONG1: little-endian two's complement of n bytes
                0x8a => {
                    let n = self.len_field(1)?;
                    let r = self.take(n)?;
                    let v = long_le(&self.buf[r])
                        .ok_or_else(|| self.unsupported("an integer beyond 64 bits"))?;
                    self.push(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.bytes()?);
                    self.push(Value::Float(v));
                }
                0x8c | b'X' | 0x8d => {
                    let width = match op {
                        0x8c => 1,
                        b'X' => 4,
                        _ => 8,
                    };
                    let n = self.len_field(width)?;
                    let s = self.text(n)?;
                    self.push(Value::Str(s));
                }
                // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8, SHORT_BINSTRING
                b'C' | b'B' | 0x8e | 0x96 | b'U' => {
                    let width = match op {
                        b'C' | b'U' => 1,
                        b'B' => 4,
                        _ => 8,
                    };
                    let n = self.len_field(width)?;
                    let b = self.slice(n)?;
                    self.push(Value::Bytes(b));
                }
                // BINSTRING: a signed 4-byte length
                b'T' => {
                    let n = i32::from_le_bytes(self.bytes()?);
                    let n = usize::try_from(n)
                        .map_err(|_| self.err("BINSTRING with a negative length"))?;
                    let b = self.slice(n)?;
                    self.push(Value::Bytes(b));
                }
                0x94 => {
                    let id = self.top()?;
                    let key = u32::try_from(self.memo.len())
                        .map_err(|_| self.err("too many memoized objects"))?;
                    self.memo.insert(key, id);
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    let id = self.top()?;
                    self.memo.insert(k, id);
                }
                b'r' => {
                    let k = self.u32()?;
                    let id = self.top()?;
                    self.memo.insert(k, id);
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        self.u8()? as u32
                    } else {
                        self.u32()?
                    };
                    let id = *self
                        .memo
                        .get(&k)
                        .ok_or_else(|| self.err(format!("memo entry {k} was never stored")))?;
                    self.stack.push(id);
                }
                other => {
                    return Err(self.unsupported(format!(
                        "opcode 0x{other:02x} ({}) is not read",
                        opcode_name(other)
                    )));
                }
            }
        }
        let root = self.pop()?;
        let mut done = vec![None; self.objs.len()];
        self.value(root, 0, &mut done)
    }

    fn global(&mut self, module: &str, name: &str) -> Res<()> {
        let g = Global::resolve(module, name).ok_or_else(|| {
            self.unsupported(format!(
                "global `{module}.{name}` is not allowed (only NumPy arrays, dtypes and scalars \
                 are read, and nothing in a pickle is executed)"
            ))
        })?;
        self.push_obj(Obj::Global(g));
        Ok(())
    }

    fn pairs(&self, items: Vec<usize>) -> Res<Vec<(usize, usize)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("a dict with a key but no value"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    fn append(&mut self, id: usize, items: impl IntoIterator<Item = usize>) -> Res<()> {
        if let Obj::List(v) = &mut self.objs[id] {
            v.extend(items);
            return Ok(());
        }
        Err(self.err(format!("APPEND to a {}", self.objs[id].kind())))
    }

    fn set_items(&mut self, id: usize, pairs: Vec<(usize, usize)>) -> Res<()> {
        if let Obj::Dict(v) = &mut self.objs[id] {
            v.extend(pairs);
            return Ok(());
        }
        Err(self.err(format!("SETITEM on a {}", self.objs[id].kind())))
    }

    /// The finished value of object `id`; an object referred to twice is built once.
    fn value(&self, id: usize, depth: usize, done: &mut Vec<Option<Value>>) -> Res<Value> {
        if let Some(v) = &done[id] {
            return Ok(v.clone());
        }
        if depth > MAX_DEPTH {
            // also where a container that holds itself ends up
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let seq = |ids: &[usize], done: &mut Vec<Option<Value>>| -> Res<Vec<Value>> {
            ids.iter()
                .map(|&i| self.value(i, depth + 1, done))
                .collect()
        };
        let v = match &self.objs[id] {
            Obj::Leaf(v) => v.clone(),
            Obj::List(ids) => Value::List(Arc::new(seq(ids, done)?)),
            Obj::Tuple(ids) => Value::Tuple(Arc::new(seq(ids, done)?)),
            Obj::Dict(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                for &(k, v) in pairs {
                    out.push((
                        self.value(k, depth + 1, done)?,
                        self.value(v, depth + 1, done)?,
                    ));
                }
                Value::Dict(Arc::new(out))
            }
            Obj::Array(a) => Value::Array(Arc::clone(a)),
            o => {
                return Err(self.unsupported(format!(
                    "the data holds a {}, which is not a value this reader returns",
                    o.kind()
                )));
            }
        };
        done[id] = Some(v.clone());
        Ok(v)
    }
}

/// A little-endian two's-complement integer of at most 8 significant bytes.
fn long_le(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return Some(0);
    }
    let negative = b[b.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    // bytes beyond the eighth may only repeat the sign
    if b.len() > 8 && b[8..].iter().any(|&x| x != fill) {
        return None;
    }
    let mut out = [fill; 8];
    let n = b.len().min(8);
    out[..n].copy_from_slice(&b[..n]);
    let v = i64::from_le_bytes(out);
    // a 9-byte positive number whose eighth byte has the top bit set is beyond i64
    if b.len() > 8 && (v < 0) != negative {
        return None;
    }
    Some(v)
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'p' => "PUT",
        b'g' => "GET",
        b'i' => "INST",
        b'o' => "OBJ",
        b'2' => "DUP",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        0x82..=0x84 => "EXT",
        0x8b => "LONG4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Value> {
        parse_pickle(b.to_vec(), Path::new("t.pkl"))
    }

    /// Pickle bytes from a compact description: protocol header plus raw opcodes.
    fn p4(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80, 4];
        v.extend_from_slice(body);
        v.push(b'.');
        v
    }

    fn short_str(s: &str) -> Vec<u8> {
        let mut v = vec![0x8c, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn stack_global(m: &str, n: &str) -> Vec<u8> {
        let mut v = short_str(m);
        v.extend(short_str(n));
        v.push(0x93);
        v
    }

    /// `numpy.dtype(code, False, True)` with byte order `order`, protocol 4 style.
    fn dtype(code: &str, order: &str) -> Vec<u8> {
        let mut v = stack_global("numpy", "dtype");
        v.extend(short_str(code));
        v.extend([0x89, 0x88, 0x87, b'R', b'(', b'K', 3]);
        v.extend(short_str(order));
        v.extend([b'N', b'N', b'N', b'J', 0xff, 0xff, 0xff, 0xff]);
        v.extend([b'J', 0xff, 0xff, 0xff, 0xff, b'K', 0, b't', b'b']);
        v
    }

    fn array(code: &str, order: &str, shape: &[u8], fortran: bool, data: &[u8]) -> Vec<u8> {
        let mut v = stack_global("numpy.core.multiarray", "_reconstruct");
        v.extend(stack_global("numpy", "ndarray"));
        v.extend([b'K', 0, 0x85, b'C', 1, b'b', 0x87, b'R']);
        v.extend([b'(', b'K', 1, b'(']);
        for &d in shape {
            v.extend([b'K', d]);
        }
        v.push(b't');
        v.extend(dtype(code, order));
        v.push(if fortran { 0x88 } else { 0x89 });
        v.push(b'B');
        v.extend((data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v.extend([b't', b'b']);
        v
    }

    #[test]
    fn scalars_strings_and_containers() {
        let mut body = vec![b']', 0x94, b'('];
        body.extend([b'K', 7, b'M', 0x2c, 0x01, b'J', 0xff, 0xff, 0xff, 0xff]);
        body.extend([0x8a, 6, 0, 0, 0, 0, 0, 1]); // 2**40
        body.push(b'G');
        body.extend(1.5f64.to_be_bytes());
        body.extend([b'N', 0x88, 0x89]);
        body.extend(short_str("hé"));
        body.extend([b'C', 2, b'x', b'y']);
        body.extend([b'U', 1, b'z']);
        body.extend([b'}', b'(']);
        body.extend(short_str("k"));
        body.extend([b'K', 1, b'u']);
        body.extend([b'K', 1, b'K', 2, 0x86, b'e']);
        let v = parse(&p4(&body)).unwrap();
        let s = v.as_seq().unwrap();
        assert_eq!(s[0], Value::Int(7));
        assert_eq!(s[1], Value::Int(300));
        assert_eq!(s[2], Value::Int(-1));
        assert_eq!(s[3], Value::Int(1 << 40));
        assert_eq!(s[4], Value::Float(1.5));
        assert_eq!(
            s[5..8],
            [Value::None, Value::Bool(true), Value::Bool(false)]
        );
        assert_eq!(s[8].as_text(), Some("hé"));
        assert_eq!(s[9].as_text(), Some("xy"));
        assert_eq!(s[10].as_text(), Some("z"));
        assert_eq!(s[11].get("k"), Some(&Value::Int(1)));
        assert_eq!(s[12].as_seq().unwrap(), [Value::Int(1), Value::Int(2)]);
    }

    #[test]
    fn an_array_memoized_before_build_is_seen_built_through_the_memo() {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let mut body = vec![b']', b'('];
        let a = array("f4", "<", &[2, 3], false, &data);
        // memoize right after REDUCE, as the pickler does
        let at = a.iter().position(|&b| b == b'R').unwrap() + 1;
        body.extend(&a[..at]);
        body.extend([b'q', 9]);
        body.extend(&a[at..]);
        body.extend([b'h', 9, b'e']);
        let v = parse(&p4(&body)).unwrap();
        let s = v.as_seq().unwrap();
        assert_eq!(s.len(), 2);
        for a in s {
            let a = a.as_array().unwrap();
            assert_eq!(a.shape, vec![2, 3]);
            assert_eq!(a.to_f32_vec(), vec![1., 2., 3., 4., 5., 6.]);
        }
    }

    #[test]
    fn fortran_big_endian_and_integer_arrays() {
        // the 2x3 matrix [[1,2,3],[4,5,6]] stored column by column, big-endian f8
        let data: Vec<u8> = [1f64, 4., 2., 5., 3., 6.]
            .iter()
            .flat_map(|f| f.to_be_bytes())
            .collect();
        let v = parse(&p4(&array("f8", ">", &[2, 3], true, &data))).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.to_f64_vec(), vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(a.to_f32_vec(), vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(a.to_i64_vec(), None);
        let v = parse(&p4(&array("i4", "<", &[1], false, &(-3i32).to_le_bytes()))).unwrap();
        assert_eq!(v.as_int(), Some(-3));
        let v = parse(&p4(&array("u1", "|", &[2], false, &[200, 7]))).unwrap();
        assert_eq!(v.as_array().unwrap().to_i64_vec(), Some(vec![200, 7]));
    }

    #[test]
    fn numpy_scalars_protocol_5_buffers_and_protocol_2_bytes() {
        // numpy.core.multiarray.scalar(dtype('i8'), raw)
        let mut body = stack_global("numpy._core.multiarray", "scalar");
        body.extend(dtype("i8", "<"));
        body.push(b'C');
        body.push(8);
        body.extend(42i64.to_le_bytes());
        body.extend([0x86, b'R']);
        let v = parse(&p4(&body)).unwrap();
        assert_eq!(v.type_name(), "NumPy scalar");
        assert_eq!(v.as_int(), Some(42));

        // protocol 5: _frombuffer(bytearray, dtype, shape, order)
        let mut body = stack_global("numpy._core.numeric", "_frombuffer");
        body.extend([b'(', 0x96]);
        body.extend(8u64.to_le_bytes());
        body.extend(1f32.to_le_bytes());
        body.extend(2f32.to_le_bytes());
        body.extend(dtype("f4", "<"));
        body.extend([b'K', 2, 0x85]);
        body.extend(short_str("C"));
        body.extend([b't', b'R']);
        let v = parse(&p4(&body)).unwrap();
        assert_eq!(v.as_array().unwrap().to_f32_vec(), vec![1., 2.]);

        // protocol 2 from Python 3: bytes as _codecs.encode('\xff\x01', 'latin1'), GLOBAL
        let mut body = b"c_codecs\nencode\n".to_vec();
        body.extend([b'X', 4, 0, 0, 0, 0xc3, 0xbf, 0x01, b'!']);
        body.extend([b'X', 6, 0, 0, 0]);
        body.extend(b"latin1");
        body.extend([0x86, b'R']);
        let v = parse(&p4(&body)).unwrap();
        match v {
            Value::Bytes(b) => assert_eq!(b.as_slice(), &[0xff, 0x01, b'!']),
            other => panic!("{other:?}"),
        }
        // ... and b'' as __builtin__.bytes()
        let v = parse(&p4(b"c__builtin__\nbytes\n)R")).unwrap();
        assert_eq!(v, Value::Bytes(Bytes::owned(Vec::new())));
    }

    #[test]
    fn dtype_strings() {
        let f4 = Dtype::parse("f4").unwrap();
        assert_eq!(
            (f4.kind, f4.size, f4.big_endian),
            (DtypeKind::Float, 4, false)
        );
        assert!(Dtype::parse(">i8").unwrap().big_endian);
        assert_eq!(Dtype::parse("b1").unwrap().kind, DtypeKind::Bool);
        assert_eq!(Dtype::parse("?").unwrap().kind, DtypeKind::Bool);
        for bad in ["", "O8", "U5", "f2", "i3", "c8", "f", "<"] {
            assert!(Dtype::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Dtype::parse("u1").unwrap().name(), "|u1");
        assert_eq!(Dtype::parse(">f8").unwrap().name(), ">f8");
    }

    #[test]
    fn long1_edges() {
        assert_eq!(long_le(&[]), Some(0));
        assert_eq!(long_le(&[0xff]), Some(-1));
        assert_eq!(long_le(&[0x80, 0]), Some(128));
        assert_eq!(long_le(&[0xff; 8]), Some(-1));
        assert_eq!(long_le(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), None);
        assert_eq!(long_le(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]), Some(i64::MIN));
        assert_eq!(long_le(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Some(1));
        assert_eq!(long_le(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    fn err_of(b: &[u8]) -> String {
        parse(b).unwrap_err().to_string()
    }

    #[test]
    fn hostile_input_is_an_error_naming_the_problem() {
        // disallowed globals are named and never resolved
        let e = err_of(&p4(&stack_global("os", "system")));
        assert!(e.starts_with("t.pkl: ") && e.contains("`os.system`"), "{e}");
        let e = err_of(b"\x80\x02cposix\nsystem\nq\x00.");
        assert!(e.contains("`posix.system`"), "{e}");
        // truncation anywhere
        let data = [0u8; 24];
        let full = p4(&array("f4", "<", &[2, 3], false, &data));
        for cut in 0..full.len() - 1 {
            assert!(parse(&full[..cut]).is_err(), "cut {cut}");
        }
        // a length field beyond the file allocates nothing and fails
        let e = err_of(&p4(&[0x8e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]));
        assert!(e.contains("truncated"), "{e}");
        let e = err_of(&[0x80, 4, 0x95, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert!(e.contains("truncated"), "{e}");
        // a shape that disagrees with the data, or overflows
        let e = err_of(&p4(&array("f4", "<", &[200, 200], false, &data)));
        assert!(e.contains("needs 160000 bytes, but its data has 24"), "{e}");
        let e = err_of(&p4(&array("f8", "<", &[255; 9], false, &data)));
        assert!(e.contains("too large"), "{e}");
        // nesting: marks and containers
        let e = err_of(&p4(&[b'('; 1000]));
        assert!(e.contains("nested deeper"), "{e}");
        let mut deep = vec![b']'; 10_000];
        deep.extend([b'a'; 9_999]);
        let e = err_of(&p4(&deep));
        assert!(e.contains("nested deeper"), "{e}");
        // a list that contains itself
        let e = err_of(&p4(&[b']', b'q', 0, b'h', 0, b'a']));
        assert!(e.contains("nested deeper"), "{e}");
        // stack misuse
        assert!(err_of(&p4(b"a")).contains("underflow"));
        assert!(err_of(&p4(b"K\x01e")).contains("MARK"));
        assert!(err_of(&p4(b"(K\x01K\x02t0")).contains("underflow"));
        assert!(err_of(&p4(b"K\x01K\x02a")).contains("APPEND to a int"));
        assert!(err_of(&p4(b"h\x05")).contains("memo entry 5"));
        assert!(err_of(b"").contains("truncated"));
        assert!(err_of(&[0x80, 9]).contains("protocol 9"));
        assert!(err_of(&p4(b"I1\n")).contains("INT"));
        // a REDUCE of something that is not an allowed callable
        assert!(err_of(&p4(b"K\x01)R")).contains("not a callable"));
        // an unbuilt array is not a value
        let mut body = stack_global("numpy.core.multiarray", "_reconstruct");
        body.extend(stack_global("numpy", "ndarray"));
        body.extend([b'K', 0, 0x85, b'C', 1, b'b', 0x87, b'R']);
        assert!(err_of(&p4(&body)).contains("without data"));
        // an unknown dtype is named
        let e = err_of(&p4(&array("O8", "|", &[1], false, &data[..8])));
        assert!(e.contains("`O8`"), "{e}");
    }

    #[test]
    fn random_bytes_never_panic() {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let good = p4(&array("f4", "<", &[2, 3], false, &data));
        let mut rng = crate::data::Rng::new(7);
        for _ in 0..3000 {
            let mut b = good.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] = rng.below(256) as u8;
            }
            let _ = parse(&b);
        }
    }
}
