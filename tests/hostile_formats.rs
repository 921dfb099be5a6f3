//! Hostile ONNX files and hostile gRPC messages, fuzzed with proptest.
//!
//! * The ONNX importer (`tandem_onnx`, which the model server runs on every
//!   file in `--models`): random bytes; bit flips, overwrites, truncations,
//!   splices and corrupted length fields of the bundled `models/*.onnx`; and
//!   edits of their graphs (dimensions, attributes, op types, wiring,
//!   zero-size and broadcast constants, new nodes) re-encoded, which reach far
//!   deeper than byte noise. An imported model is also quantized, as the
//!   model server does next.
//! * The conversions that turn untrusted protobuf messages into protocol
//!   structs (`tandem_grpc::convert`): random and mutated fields, wrong byte
//!   lengths, oversized repeated fields, and random bytes decoded as each
//!   message; the client's check of a server's `ModelInfo`; and S2's
//!   session driven with whatever decodes.
//!
//! Every case must return Ok or Err: no panic, no hang (each case is timed),
//! and no allocation out of proportion with its input (a counting allocator
//! measures each case's peak heap use and refuses any single request over 2
//! GiB). Case counts are bounded here (TANDEM_FUZZ_CASES, default 256);
//! `scripts/fuzz.sh` runs the same properties with many more. A failure
//! prints proptest's minimal input: add it below as a regression test.

use proptest::prelude::*;
use proptest::sample::Index;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tandem::test_key_1024;
use tandem_grpc::v1 as pb;
use tandem_model::{OutputMode, QuantConfig, QuantizedModel};
use tandem_onnx::proto as onnx;
use tandem_onnx::ImportOptions;
use tandem_paillier::{PublicKey, U256};

mod meter {
    //! Per-thread heap accounting for the code under test.
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Meter;

    /// A single request above this fails at once (the process aborts with
    /// "memory allocation of N bytes failed") instead of swapping.
    pub const HARD_LIMIT: usize = 2 << 30;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static NOW: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn grow(size: usize) -> bool {
        ON.try_with(|on| {
            if !on.get() {
                return true;
            }
            if size > HARD_LIMIT {
                return false;
            }
            let n = NOW.get().saturating_add(size);
            NOW.set(n);
            PEAK.set(PEAK.get().max(n));
            true
        })
        .unwrap_or(true)
    }

    fn shrink(size: usize) {
        let _ = ON.try_with(|on| {
            if on.get() {
                NOW.set(NOW.get().saturating_sub(size));
            }
        });
    }

    // SAFETY: forwards to the system allocator; the bookkeeping touches
    // only const-initialized thread-locals, which never allocate.
    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            if !grow(l.size()) {
                return std::ptr::null_mut();
            }
            System.alloc(l)
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            if !grow(l.size()) {
                return std::ptr::null_mut();
            }
            System.alloc_zeroed(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            shrink(l.size());
            System.dealloc(p, l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            if new > l.size() {
                if !grow(new - l.size()) {
                    return std::ptr::null_mut();
                }
            } else {
                shrink(l.size() - new);
            }
            System.realloc(p, l, new)
        }
    }

    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            ON.with(|on| on.set(false));
        }
    }

    /// Runs `f`, returning its result and the peak of the heap it held.
    pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
        NOW.with(|n| n.set(0));
        PEAK.with(|p| p.set(0));
        ON.with(|on| on.set(true));
        let off = Off;
        let r = f();
        drop(off);
        (r, PEAK.with(|p| p.get()))
    }
}

#[global_allocator]
static METER: meter::Meter = meter::Meter;

fn cases() -> u32 {
    std::env::var("TANDEM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn config() -> ProptestConfig {
    // No regression files: crashes found become named tests at the end of this file.
    ProptestConfig { cases: cases(), max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() }
}

/// Runs one case: it must finish within a few seconds and hold at most
/// `max_heap` bytes at once.
fn bounded<T>(what: &str, max_heap: usize, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let (r, peak) = meter::measure(f);
    let took = t.elapsed();
    assert!(peak <= max_heap, "{what}: the case held {peak} bytes of heap at once; the bound is {max_heap}");
    assert!(took < Duration::from_secs(5), "{what}: the case took {took:?}");
    r
}

// ------------------------------------------------------------------ ONNX

/// Peak heap an import (and the quantization after it) may hold for a file
/// of `len` bytes: the importer's working budget (tandem_onnx docs) with
/// room for the decoded protobuf and the finished model.
fn onnx_heap_bound(len: usize) -> usize {
    (640 << 20) + 96 * len
}

/// A bundled model: its name, bytes and length fields.
type Bundled = (String, Vec<u8>, Vec<LenField>);

fn bundled() -> &'static [Bundled] {
    static B: OnceLock<Vec<Bundled>> = OnceLock::new();
    B.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                let mut fields = Vec::new();
                assert!(len_fields(&b, 0, 0, &mut fields), "{} is protobuf", p.display());
                (p.file_stem().unwrap().to_string_lossy().into_owned(), b, fields)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(v.len() >= 5, "the bundled ONNX models are in models/");
        v
    })
}

fn decoded(i: usize) -> onnx::ModelProto {
    static D: OnceLock<Vec<onnx::ModelProto>> = OnceLock::new();
    D.get_or_init(|| bundled().iter().map(|(_, b, _)| prost::Message::decode(&b[..]).unwrap()).collect())[i].clone()
}

/// Imports `bytes` (with the range given or, `from_file`, from the file's
/// metadata), then quantizes what was imported, as the model server does.
fn import(bytes: &[u8], from_file: bool) -> Result<(), String> {
    let opts = ImportOptions { input_range: (!from_file).then_some((0.0, 1.0)), ..Default::default() };
    let r = bounded("ONNX import", onnx_heap_bound(bytes.len()), || {
        let m = tandem_onnx::import_bytes(bytes, &opts).map_err(|e| e.to_string())?;
        m.shapes().expect("the importer returns only well-formed models");
        QuantizedModel::new(&m, QuantConfig::default()).map(|_| ()).map_err(|e| e.to_string())
    });
    if std::env::var_os("TANDEM_FUZZ_STATS").is_some() {
        // One line per case, to see which checks the cases reach:
        // grep ^outcome | sort | uniq -c
        let s: String = format!("{r:?}").chars().take(100).collect();
        eprintln!("outcome {s}");
    }
    r
}

/// A length-delimited protobuf field: where its length varint starts, how
/// many bytes the varint takes, and the length it holds.
#[derive(Clone, Copy, Debug)]
struct LenField {
    at: usize,
    width: usize,
    len: u64,
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Collects every length-delimited field of the message in `b`, recursing
/// into payloads that parse as messages. Whether `b` parsed fully.
fn len_fields(b: &[u8], base: usize, depth: u32, out: &mut Vec<LenField>) -> bool {
    let mut i = 0;
    while i < b.len() {
        let Some((tag, n)) = varint(&b[i..]) else { return false };
        i += n;
        match tag & 7 {
            0 => match varint(&b[i..]) {
                Some((_, n)) => i += n,
                None => return false,
            },
            1 => i += 8,
            5 => i += 4,
            2 => {
                let Some((len, n)) = varint(&b[i..]) else { return false };
                let start = i;
                i += n;
                let Some(end) = usize::try_from(len).ok().and_then(|l| i.checked_add(l)).filter(|&e| e <= b.len())
                else {
                    return false;
                };
                out.push(LenField { at: base + start, width: n, len });
                if depth < 12 {
                    let mut inner = Vec::new();
                    if len_fields(&b[i..end], base + i, depth + 1, &mut inner) {
                        out.extend(inner);
                    }
                }
                i = end;
            }
            _ => return false,
        }
    }
    i == b.len()
}

/// Resizes the payload of `fields[i]` by `delta` bytes (cut from its end,
/// or `fill` appended) and rewrites its length and every enclosing length
/// to match, so the file stays well-formed protobuf with one field shorter
/// or longer: a shorter `raw_data`, fewer dimensions, a longer name.
fn resize_field(b: &[u8], fields: &[LenField], i: usize, delta: i64, fill: u8) -> Vec<u8> {
    let f = fields[i];
    let start = f.at + f.width;
    let new_len = (f.len as i64 + delta).clamp(0, f.len as i64 + 4096) as u64;
    let mut out = b.to_vec();
    let end = start + f.len as usize;
    if new_len < f.len {
        out.drain(start + new_len as usize..end);
    } else {
        out.splice(end..end, std::iter::repeat_n(fill, (new_len - f.len) as usize));
    }
    // Innermost first: each rewrite shifts only bytes after it.
    let mut enclosing: Vec<LenField> =
        fields.iter().copied().filter(|e| e.at < f.at && f.at < e.at + e.width + e.len as usize).collect();
    enclosing.sort_by_key(|e| std::cmp::Reverse(e.at));
    let mut grow = new_len as i64 - f.len as i64;
    for (field, len) in std::iter::once((f, new_len)).chain(enclosing.into_iter().map(|e| (e, 0))) {
        let len = if field.at == f.at { len } else { (field.len as i64 + grow) as u64 };
        let mut enc = Vec::new();
        put_varint(len, &mut enc);
        grow += enc.len() as i64 - field.width as i64;
        out.splice(field.at..field.at + field.width, enc);
    }
    out
}

/// Values that find overflows and zero-size cases.
fn interesting() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -2i64..12,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(1 << 31),
        1 => Just(1 << 40),
        1 => Just(1 << 62),
        1 => 0i64..100_000,
        1 => any::<i64>(),
    ]
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..16,
        1 => Just(u64::MAX),
        1 => Just(u32::MAX as u64),
        1 => Just(1 << 31),
        1 => any::<u64>(),
    ]
}

/// Every op type the importer accepts (both domains), so mutations reach
/// the code behind each.
static OPS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| tandem_onnx::ONNX_OPS.iter().chain(tandem_onnx::ONNX_ML_OPS).copied().collect());

const ATTRS: &[&str] = &[
    "axis",
    "perm",
    "pads",
    "strides",
    "kernel_shape",
    "keepdims",
    "to",
    "allowzero",
    "transB",
    "transA",
    "group",
    "dilations",
    "ceil_mode",
    "start",
    "end",
    "axes",
    "alpha",
    "epsilon",
    "value",
];

/// One edit of a decoded model: a kind and its parameters.
type Edit = (u8, Index, Index, i64, i64);

fn edit() -> impl Strategy<Value = Edit> {
    (0u8..15, any::<Index>(), any::<Index>(), interesting(), interesting())
}

fn names(g: &onnx::GraphProto) -> Vec<String> {
    let mut v: Vec<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    v.extend(g.initializer.iter().map(|t| t.name().to_string()));
    v.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    v
}

/// A constant of shape `[d0, d1]`, `[d0, 0]`, `[0, d0]`, `[d0]`, `[1, d0]`
/// or `[d0, 1]` (by `d1 mod 7`; other values: `[d0, d1]`).
fn small_tensor(name: &str, d0: i64, d1: i64, data_type: i32) -> onnx::TensorProto {
    let dims = match d1.rem_euclid(7) {
        1 => vec![d0, 0],
        2 => vec![0, d0],
        3 => vec![d0],
        4 => vec![1, d0],
        5 => vec![d0, 1],
        6 => vec![],
        _ => vec![d0, d1],
    };
    let n = dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d)).filter(|n| (0..=4096).contains(n)).unwrap_or(0);
    let mut t = onnx::TensorProto { name: Some(name.into()), dims, data_type: Some(data_type), ..Default::default() };
    // Consistent data when the shape is small; none (zero-size, or a
    // mismatch) otherwise.
    if n > 0 {
        match data_type {
            7 => t.int64_data = (0..n).map(|i| (i % 5) - 1).collect(),
            _ => t.float_data = (0..n).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect(),
        }
    }
    t
}

fn at<T>(v: &mut [T], i: Index) -> &mut T {
    let n = v.len();
    &mut v[i.index(n)]
}

fn apply(m: &mut onnx::ModelProto, edits: &[Edit]) {
    let Some(g) = m.graph.as_mut() else { return };
    for (k, &(kind, a, b, v, w)) in edits.iter().enumerate() {
        let all = names(g);
        let pick = |i: Index| all[i.index(all.len())].clone();
        match kind {
            // A dimension of an initializer (its data no longer matches).
            0 if !g.initializer.is_empty() => {
                let t = at(&mut g.initializer, a);
                if !t.dims.is_empty() {
                    let d = b.index(t.dims.len());
                    t.dims[d] = v;
                }
            }
            // An initializer made zero-size or broadcast-shaped, data dropped.
            1 if !g.initializer.is_empty() => {
                let i = a.index(g.initializer.len());
                let dt = g.initializer[i].data_type.unwrap_or(1);
                let name = g.initializer[i].name().to_string();
                g.initializer[i] = small_tensor(&name, v, w, if dt == 7 { 7 } else { 1 });
            }
            // A dimension of a graph input.
            2 if !g.input.is_empty() => {
                use onnx::tensor_shape_proto::dimension::Value as D;
                let i = a.index(g.input.len());
                if let Some(onnx::type_proto::Value::TensorType(tt)) =
                    g.input[i].r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    if let Some(s) = tt.shape.as_mut() {
                        if !s.dim.is_empty() {
                            let d = b.index(s.dim.len());
                            s.dim[d].value = Some(D::DimValue(v));
                        }
                    }
                }
            }
            // An integer attribute, or one element of an ints attribute.
            3 if !g.node.is_empty() => {
                let n = at(&mut g.node, a);
                if !n.attribute.is_empty() {
                    let at = at(&mut n.attribute, b);
                    if at.ints.is_empty() {
                        at.i = Some(v);
                    } else {
                        let j = (w.unsigned_abs() as usize) % at.ints.len();
                        at.ints[j] = v;
                    }
                }
            }
            // A new attribute (or a replaced one) on a node.
            4 if !g.node.is_empty() => {
                let n = at(&mut g.node, a);
                let name = ATTRS[b.index(ATTRS.len())];
                n.attribute.retain(|x| x.name() != name);
                let len = (w.unsigned_abs() % 6) as usize;
                n.attribute.push(onnx::AttributeProto {
                    name: Some(name.into()),
                    i: Some(v),
                    f: Some(v as f32),
                    ints: vec![v; len],
                    ..Default::default()
                });
            }
            // Another op type.
            5 if !g.node.is_empty() => {
                let n = at(&mut g.node, a);
                n.op_type = Some(OPS[b.index(OPS.len())].into());
            }
            // Rewire one input of a node.
            6 if !g.node.is_empty() => {
                let to = pick(b);
                let n = at(&mut g.node, a);
                if !n.input.is_empty() {
                    let j = (v.unsigned_abs() as usize) % n.input.len();
                    n.input[j] = to;
                }
            }
            // A new node consuming existing tensors, made the graph's output.
            7 => {
                let out = format!("fz_out_{k}");
                let mut input = vec![pick(a)];
                if w % 2 == 0 {
                    input.push(pick(b));
                }
                let attribute = vec![onnx::AttributeProto {
                    name: Some(ATTRS[(v.unsigned_abs() as usize) % ATTRS.len()].into()),
                    i: Some(w),
                    ints: vec![w; (v.unsigned_abs() % 5) as usize],
                    ..Default::default()
                }];
                g.node.push(onnx::NodeProto {
                    input,
                    output: vec![out.clone()],
                    op_type: Some(OPS[b.index(OPS.len())].into()),
                    name: Some(out.clone()),
                    attribute,
                    ..Default::default()
                });
                match g.output.first_mut() {
                    Some(o) => o.name = Some(out),
                    None => g.output.push(onnx::ValueInfoProto { name: Some(out), ..Default::default() }),
                }
            }
            // A node that takes one tensor many times over.
            8 if !g.node.is_empty() => {
                let n = at(&mut g.node, a);
                if let Some(first) = n.input.first().cloned() {
                    let times = (w.unsigned_abs() % 300) as usize;
                    n.input.extend(std::iter::repeat_n(first, times));
                }
            }
            // A new constant (small, zero-size or broadcastable) as a node input.
            9 => {
                let name = format!("fz_const_{k}");
                g.initializer.push(small_tensor(&name, v, w, if v % 3 == 0 { 7 } else { 1 }));
                if !g.node.is_empty() {
                    let n = at(&mut g.node, a);
                    let j = b.index(n.input.len() + 1);
                    if j < n.input.len() {
                        n.input[j] = name;
                    } else {
                        n.input.push(name);
                    }
                }
            }
            10 if !g.node.is_empty() => {
                g.node.remove(a.index(g.node.len()));
            }
            11 if !g.initializer.is_empty() => {
                let t = at(&mut g.initializer, a);
                t.data_type = Some((v.rem_euclid(18)) as i32);
            }
            12 => {
                if let Some(o) = m.opset_import.first_mut() {
                    o.version = Some(v);
                }
                return;
            }
            // Follow another tensor as the output.
            13 => {
                let to = pick(a);
                if let Some(o) = g.output.first_mut() {
                    o.name = Some(to);
                }
            }
            // Duplicate a node (same outputs: two producers).
            14 if !g.node.is_empty() && v % 4 == 0 => {
                let n = g.node[a.index(g.node.len())].clone();
                g.node.push(n);
            }
            _ => {}
        }
    }
}

/// `tandem.input_range` metadata, valid or not.
fn set_range_metadata(m: &mut onnx::ModelProto, pick: i64) {
    const RANGES: &[&str] = &["0,1", "[-1, 1]", "-3.5,2", "1,0", "nan,1", "0,inf", "1e308,1e309", "", "0", "a,b,c"];
    m.metadata_props.retain(|p| p.key() != tandem_onnx::INPUT_RANGE_KEY);
    m.metadata_props.push(onnx::StringStringEntryProto {
        key: Some(tandem_onnx::INPUT_RANGE_KEY.into()),
        value: Some(RANGES[pick.unsigned_abs() as usize % RANGES.len()].into()),
    });
}

/// A node of [`synthetic`]: its op, extra inputs, attributes.
type SyntheticNode = (Index, Vec<(Index, i64, i64)>, Vec<(Index, i64, i64)>);

/// A small graph from scratch: one input of hostile shape, then a chain
/// of supported ops, each on the previous tensor plus constants or earlier
/// tensors, with hostile attributes.
fn synthetic(input_dims: &[i64], nodes: &[SyntheticNode]) -> onnx::ModelProto {
    use onnx::tensor_shape_proto::{dimension::Value as D, Dimension};
    let dim = |v: i64| Dimension { value: Some(D::DimValue(v)), ..Default::default() };
    let input = onnx::ValueInfoProto {
        name: Some("x".into()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(onnx::type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(onnx::TensorShapeProto { dim: input_dims.iter().map(|&d| dim(d)).collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut g = onnx::GraphProto { name: Some("fz".into()), input: vec![input], ..Default::default() };
    let mut tensors = vec!["x".to_string()];
    for (k, (op, extra, attrs)) in nodes.iter().enumerate() {
        let mut inputs = vec![tensors.last().unwrap().clone()];
        for (j, &(which, v, w)) in extra.iter().enumerate() {
            if v % 3 == 0 {
                inputs.push(tensors[which.index(tensors.len())].clone());
            } else {
                let name = format!("c{k}_{j}");
                g.initializer.push(small_tensor(&name, v, w, if w % 2 == 0 { 7 } else { 1 }));
                inputs.push(name);
            }
        }
        let attribute = attrs
            .iter()
            .map(|&(name, v, w)| onnx::AttributeProto {
                name: Some(ATTRS[name.index(ATTRS.len())].into()),
                i: Some(v),
                f: Some(v as f32),
                ints: vec![v; (w.unsigned_abs() % 6) as usize],
                ..Default::default()
            })
            .collect();
        let out = format!("t{k}");
        let op = OPS[op.index(OPS.len())];
        g.node.push(onnx::NodeProto {
            input: inputs,
            output: vec![out.clone()],
            op_type: Some(op.into()),
            domain: Some(
                if ["Scaler", "ZipMap", "ArrayFeatureExtractor"].contains(&op) { "ai.onnx.ml" } else { "" }.into(),
            ),
            name: Some(out.clone()),
            attribute,
            ..Default::default()
        });
        tensors.push(out);
    }
    g.output.push(onnx::ValueInfoProto { name: tensors.last().cloned(), ..Default::default() });
    onnx::ModelProto {
        ir_version: Some(8),
        opset_import: vec![onnx::OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(g),
        ..Default::default()
    }
}

fn synthetic_node() -> impl Strategy<Value = SyntheticNode> {
    (
        any::<Index>(),
        prop::collection::vec((any::<Index>(), interesting(), interesting()), 0..3),
        prop::collection::vec((any::<Index>(), interesting(), interesting()), 0..3),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn onnx_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), from_file in any::<bool>()) {
        let _ = import(&bytes, from_file);
    }

    /// Byte noise on a real model: bit flips, overwritten bytes, a spliced
    /// copy of another part of the file, a truncation.
    #[test]
    fn onnx_byte_mutations(
        model in any::<Index>(),
        flips in prop::collection::vec((any::<Index>(), 0u8..8), 0..12),
        writes in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        splice in prop::option::of((any::<Index>(), any::<Index>(), 1usize..64)),
        cut in prop::option::of(any::<Index>()),
    ) {
        let (_, orig, _) = &bundled()[model.index(bundled().len())];
        let mut b = orig.clone();
        for (i, bit) in flips {
            let i = i.index(b.len());
            b[i] ^= 1 << bit;
        }
        for (i, v) in writes {
            let i = i.index(b.len());
            b[i] = v;
        }
        if let Some((from, to, len)) = splice {
            let (from, to) = (from.index(b.len()), to.index(b.len()));
            let chunk: Vec<u8> = b[from..(from + len).min(b.len())].to_vec();
            b.splice(to..to, chunk);
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len()));
        }
        let _ = import(&b, false);
    }

    /// Corrupted length fields: one length varint of a real model replaced
    /// by another value (off by one, zero, huge), so the parser sees
    /// messages that overrun, underrun or nest wrongly.
    #[test]
    fn onnx_length_field_corruptions(
        model in any::<Index>(),
        corruptions in prop::collection::vec((any::<Index>(), interesting_u64(), 0u8..4), 1..4),
    ) {
        let (_, orig, fields) = &bundled()[model.index(bundled().len())];
        let mut b = orig.clone();
        // Back to front, so earlier offsets stay valid.
        let mut picks: Vec<(LenField, u64, u8)> =
            corruptions.iter().map(|&(i, v, how)| (fields[i.index(fields.len())], v, how)).collect();
        picks.sort_by_key(|p| std::cmp::Reverse(p.0.at));
        picks.dedup_by_key(|p| p.0.at);
        for (f, v, how) in picks {
            let new = match how {
                0 => f.len.wrapping_add(1),
                1 => f.len.saturating_sub(1),
                2 => f.len.wrapping_mul(2).wrapping_add(v),
                _ => v,
            };
            let mut enc = Vec::new();
            put_varint(new, &mut enc);
            b.splice(f.at..f.at + f.width, enc);
        }
        let _ = import(&b, false);
    }

    /// One field of a real model shortened or lengthened with every
    /// enclosing length fixed up: well-formed protobuf whose contents no
    /// longer agree (raw data shorter than its dimensions, fewer dims,
    /// truncated names and attribute lists).
    #[test]
    fn onnx_consistent_length_changes(
        model in any::<Index>(),
        field in any::<Index>(),
        delta in prop_oneof![-16i64..16, -100_000i64..100_000, Just(i64::MIN / 2)],
        fill in any::<u8>(),
    ) {
        let (_, orig, fields) = &bundled()[model.index(bundled().len())];
        let b = resize_field(orig, fields, field.index(fields.len()), delta, fill);
        let _ = import(&b, false);
    }

    #[test]
    fn onnx_synthetic_graphs(
        input_dims in prop::collection::vec(prop_oneof![4 => 1i64..8, 1 => interesting()], 1..5),
        nodes in prop::collection::vec(synthetic_node(), 1..7),
    ) {
        let bytes = prost::Message::encode_to_vec(&synthetic(&input_dims, &nodes));
        let _ = import(&bytes, false);
    }

    /// Edits of the decoded graph, re-encoded: hostile dimensions and
    /// attributes, zero-size and broadcast constants, other ops, rewired
    /// and duplicated inputs, new nodes after any tensor.
    #[test]
    fn onnx_graph_edits(model in any::<Index>(), edits in prop::collection::vec(edit(), 1..6), from_file in any::<bool>()) {
        let mut m = decoded(model.index(bundled().len()));
        apply(&mut m, &edits);
        if from_file {
            set_range_metadata(&mut m, edits[0].3);
        }
        let bytes = prost::Message::encode_to_vec(&m);
        let _ = import(&bytes, from_file);
    }
}

// ------------------------------------------------------------------ gRPC messages

/// Heap a conversion may hold: proportional to the message it reads.
fn message_heap_bound(len: usize) -> usize {
    (1 << 20) + 8 * len
}

fn pk() -> &'static PublicKey {
    test_key_1024().public()
}

/// Byte strings whose lengths sit around multiples of `w` (the width of a
/// ring value or ciphertext), or anything short.
fn near_multiple(w: usize, max_n: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (0..=max_n, -1i64..=1).prop_flat_map(move |(n, d)| {
            let len = (n * w) as i64 + d;
            prop::collection::vec(any::<u8>(), len.max(0) as usize)
        }),
    ]
}

/// Ciphertext-width byte strings: random (mostly valid units mod N²) or
/// out of range, in a row of `0..=max_n`.
fn ciphertexts(max_n: usize) -> impl Strategy<Value = Vec<u8>> {
    let w = pk().ciphertext_bytes();
    prop_oneof![
        3 => near_multiple(w, max_n),
        1 => (0..=max_n).prop_map(move |n| vec![0xff; n * w]),
        1 => (0..=max_n).prop_map(move |n| vec![0; n * w]),
    ]
}

fn mode() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0i32..6, 1 => any::<i32>()]
}

/// Expected counts: realistic, zero, or absurd (the caller's own number,
/// but a conversion must not overflow on it).
fn count() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..12, 1 => Just(usize::MAX), 1 => Just(usize::MAX / 16 + 1), 1 => any::<usize>()]
}

fn infer_request() -> impl Strategy<Value = pb::InferRequest> {
    (
        ".{0,12}",
        mode(),
        prop_oneof![near_multiple(16, 12), near_multiple(32, 12), near_multiple(9, 12)],
        ciphertexts(2),
        prop::collection::vec(any::<u8>(), 0..20),
        (prop::collection::vec(any::<u8>(), 0..20), any::<u64>()),
    )
        .prop_map(|(model_id, mode, masked_input, enc_seed, ticket_id, (seed_session_id, seed_counter))| {
            pb::InferRequest {
                model_id,
                mode,
                masked_input,
                enc_seed,
                // Hostile epochs too: 0 to 19 bytes, 16 among them.
                seed_epoch: ticket_id.clone(),
                ticket_id,
                seed_session_id,
                seed_counter,
            }
        })
}

fn check_client_request(req: &pb::InferRequest, d: usize) {
    let len = prost::Message::encoded_len(req);
    bounded("client request", message_heap_bound(len), || {
        let _ = tandem_grpc::mode_from_proto(req.mode);
        // A compact mask (59 bits a value, packed) and the full-ring one, in each ring.
        let compact = |k| tandem_core::InputMasking::new((0.0, 1.0), 16, k);
        let full = |k| tandem_core::InputMasking { offset: 0, mask_bits: k, ring_bits: k };
        for mode in [OutputMode::Label, OutputMode::Logits] {
            for masking in [compact(128), full(128)] {
                if let Ok(q) =
                    tandem_grpc::query_request_from_proto::<u128>(pk().ciphertext_bytes(), req, mode, &masking, d)
                {
                    assert_eq!(q.masked_input.len(), d);
                }
            }
            for masking in [compact(256), full(256)] {
                if let Ok(q) =
                    tandem_grpc::query_request_from_proto::<U256>(pk().ciphertext_bytes(), req, mode, &masking, d)
                {
                    assert_eq!(q.masked_input.len(), d);
                }
            }
        }
        let _ = tandem_grpc::decode_ring::<u128>(&req.masked_input, None, "masked_input");
        let _ = tandem_grpc::decode_one_ciphertext(pk(), &req.enc_seed, "enc_seed");
        let _ = tandem_grpc::session_id_from_bytes(&req.ticket_id, "ticket_id");
    });
}

fn aux() -> impl Strategy<Value = Option<pb::infer_response::Aux>> {
    use pb::infer_response::Aux;
    prop_oneof![
        Just(None),
        near_multiple(16, 8).prop_map(|b| Some(Aux::LogitsUPlusMu(b))),
        prop::collection::vec(prop_oneof![0u32..12, any::<u32>()], 0..64)
            .prop_map(|index| Some(Aux::Permutation(pb::Permutation { index }))),
        (0usize..200_000).prop_map(|n| Some(Aux::Permutation(pb::Permutation { index: vec![u32::MAX; n] }))),
        any::<bool>().prop_map(|b| Some(Aux::Negated(b))),
    ]
}

fn model_info() -> impl Strategy<Value = pb::ModelInfo> {
    let good_key = pb::PaillierPublicKey { seed_epoch: vec![0; 16], ..tandem_grpc::public_key_to_proto(pk()) };
    let key = prop_oneof![
        3 => Just(Some(good_key.clone())),
        1 => Just(None),
        1 => (".{0,300}", any::<u32>(), "[0-9a-f]{0,70}")
            .prop_map(|(n_hex, bits, fingerprint)| Some(pb::PaillierPublicKey { n_hex, bits, fingerprint, seed_epoch: vec![1; 16] })),
        1 => ("[0-9a-f]{200,300}", any::<u32>()).prop_map(move |(n_hex, bits)| Some(pb::PaillierPublicKey {
            n_hex,
            bits,
            fingerprint: good_key.fingerprint.clone(),
            seed_epoch: vec![2; 15],
        })),
    ];
    // Mostly well-formed, so that the shape and size checks are reached.
    let dim = prop_oneof![4 => 1u32..10, 1 => Just(0u32), 2 => Just(u32::MAX), 1 => Just(1 << 16), 1 => any::<u32>()];
    let good_mode = prop_oneof![6 => 1i32..=4, 1 => mode()];
    let range = prop_oneof![4 => (-4.0f64..0.0, 0.0f64..4.0), 1 => (any::<f64>(), any::<f64>())];
    (
        prop::collection::vec(dim.clone(), 0..5),
        (range, prop_oneof![4 => Just(128u32), 1 => Just(256), 1 => any::<u32>()]),
        (
            prop_oneof![4 => 0u32..=62, 1 => any::<u32>()],
            prop_oneof![4 => 0u32..=62, 1 => any::<u32>()],
            dim,
            any::<u32>(),
        ),
        (prop::collection::vec(good_mode.clone(), 0..6), good_mode, key),
    )
        .prop_map(
            |(
                input_shape,
                ((input_min, input_max), ring_bits),
                (f_in, f_act, output_len, output_scale),
                (modes, default_mode, activation_key),
            )| {
                pb::ModelInfo {
                    id: "m".into(),
                    name: "fuzzed".into(),
                    input_shape,
                    input_min,
                    input_max,
                    ring_bits,
                    f_in,
                    f_act,
                    output_len,
                    output_scale,
                    modes,
                    default_mode,
                    activation_key,
                    max_request_bytes: 1 << 20,
                    input_offset: 0,
                    input_mask_bits: 0,
                }
            },
        )
        .prop_flat_map(|m| (Just(m), any::<bool>(), any::<u64>(), any::<u32>()))
        .prop_map(|(mut m, honest, offset, bits)| {
            // Mostly the mask the range implies, so the checks after it
            // are reached; otherwise anything.
            if honest {
                let k = tandem_core::InputMasking::new((m.input_min, m.input_max), m.f_in, m.ring_bits);
                (m.input_offset, m.input_mask_bits) = (k.offset, k.mask_bits);
            } else {
                (m.input_offset, m.input_mask_bits) = (offset, bits);
            }
            m
        })
}

/// What the client does with a server's model info: check it, then (if
/// accepted) size a request for it.
fn check_model_info(m: &pb::ModelInfo) {
    bounded("model info", message_heap_bound(prost::Message::encoded_len(m)), || {
        if let Ok(r) = tandem_client::remote_model(m, None) {
            let d = r.info.input_len();
            assert!((1..=tandem_model::ir::MAX_VALUES).contains(&d), "accepted input shape {:?}", r.info.input_shape);
            assert!((1..=tandem_model::ir::MAX_VALUES).contains(&r.info.output_len));
            let _ = r.info.check_mode(r.info.default_mode);
        }
    });
}

/// kind (or mode), scale, count, packing, packed ciphertexts.
type RoundFields = (i32, u32, u32, Option<pb::Packing>, Vec<u8>);

fn round_fields() -> impl Strategy<Value = RoundFields> {
    let packing = prop::option::of(
        (
            prop_oneof![0u32..300, any::<u32>()],
            prop_oneof![0u32..1100, any::<u32>()],
            prop_oneof![0u32..40, any::<u32>()],
        )
            .prop_map(|(offset_bits, slot_bits, slots_per_ciphertext)| pb::Packing {
                offset_bits,
                slot_bits,
                slots_per_ciphertext,
            }),
    );
    (mode(), prop_oneof![0u32..80, any::<u32>()], prop_oneof![0u32..20, any::<u32>()], packing, ciphertexts(3))
}

proptest! {
    #![proptest_config(config())]

    /// Client → S1: every field of InferRequest hostile.
    #[test]
    fn client_requests(req in infer_request(), d in 0usize..16) {
        check_client_request(&req, d);
        let t = pb::CreateTicketRequest { model_id: req.model_id.clone(), mode: req.mode, enc_seed: req.enc_seed.clone(), seed_epoch: req.seed_epoch.clone(), seed_session_id: req.seed_session_id.clone(), seed_counter: req.seed_counter };
        // Exactly one seed source, each field well-formed, or a refusal.
        let src = tandem_grpc::seed_source_from_proto(&t.enc_seed, &t.seed_epoch, &t.seed_session_id, t.seed_counter, pk().ciphertext_bytes());
        prop_assert_eq!(src.is_ok(), match (t.enc_seed.is_empty(), t.seed_session_id.is_empty()) {
            (false, true) => t.enc_seed.len() == pk().ciphertext_bytes() && t.seed_epoch.len() == 16,
            (true, false) => t.seed_session_id.len() == 16 && t.seed_epoch.is_empty(),
            _ => false,
        });
        let _ = tandem_grpc::mode_from_proto(t.mode);
        let _ = tandem_grpc::decode_one_ciphertext(pk(), &t.enc_seed, "enc_seed");
        let e = tandem_grpc::epoch_from_proto(&t.seed_epoch, "seed_epoch");
        prop_assert_eq!(e.is_ok(), t.seed_epoch.len() == 16);
    }

    /// Random bytes decoded as each client message, then converted.
    #[test]
    fn client_requests_from_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..700), d in 0usize..16) {
        if let Ok(req) = bounded("decode", message_heap_bound(bytes.len()), || <pb::InferRequest as prost::Message>::decode(&bytes[..])) {
            check_client_request(&req, d);
        }
        let _ = bounded("decode", message_heap_bound(bytes.len()), || <pb::CreateTicketRequest as prost::Message>::decode(&bytes[..]));
        let _ = bounded("decode", message_heap_bound(bytes.len()), || <pb::GetModelInfoRequest as prost::Message>::decode(&bytes[..]));
    }

    /// S1 → client: responses, tickets and model info from a hostile server.
    #[test]
    fn server_answers_at_the_client(
        session_id in prop::collection::vec(any::<u8>(), 0..20),
        sealed in prop::collection::vec(any::<u8>(), 0..64),
        aux in aux(),
        ticket_mode in mode(),
        info in model_info(),
    ) {
        let resp = pb::InferResponse { session_id: session_id.clone(), sealed, aux, stats: None, mode: 0 };
        bounded("response", message_heap_bound(prost::Message::encoded_len(&resp)), || {
            let _ = tandem_grpc::query_response_from_proto::<u128>(&resp);
            let _ = tandem_grpc::query_response_from_proto::<U256>(&resp);
        });
        let t = pb::Ticket { ticket_id: session_id, model_id: "m".into(), mode: ticket_mode, expires_in_seconds: 1, stats: None };
        let _ = tandem_grpc::ticket_from_proto(&t);
        check_model_info(&info);
        if let Some(k) = &info.activation_key {
            let _ = tandem_grpc::public_key_from_proto(k);
        }
    }

    #[test]
    fn server_answers_from_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(r) = <pb::InferResponse as prost::Message>::decode(&bytes[..]) {
            let _ = tandem_grpc::query_response_from_proto::<u128>(&r);
        }
        if let Ok(m) = <pb::ModelInfo as prost::Message>::decode(&bytes[..]) {
            check_model_info(&m);
        }
        if let Ok(t) = <pb::Ticket as prost::Message>::decode(&bytes[..]) {
            let _ = tandem_grpc::ticket_from_proto(&t);
        }
    }

    /// S1 ⇄ S2: every message of both streams with hostile fields, and
    /// absurd expected counts.
    #[test]
    fn peer_messages(
        (kind, scale, count, packing, packed) in round_fields(),
        session_id in prop::collection::vec(any::<u8>(), 0..20),
        ring in prop_oneof![near_multiple(16, 10), near_multiple(32, 10)],
        cts in ciphertexts(4),
        n in count(),
        input_len in any::<u32>(),
    ) {
        let pk = pk();
        let len = packed.len() + ring.len() + cts.len() + session_id.len() + 64;
        bounded("peer messages", message_heap_bound(len), || {
            let round = pb::BlindedRound { kind, scale, count, packing, packed: packed.clone() };
            let _ = tandem_grpc::blinded_round_from_proto(pk, &round);
            let out = pb::BlindedOutput { mode: kind, scale, count, packing, packed };
            let _ = tandem_grpc::blinded_output_from_proto(pk, &out);
            let start = pb::SessionStart { session_id: session_id.clone(), enc_seed: cts.clone(), input_len, ring_bits: count, key_fingerprint: String::new(), seed_epoch: session_id.clone(), input_mask_bits: n as u32, seed_session_id: session_id.clone(), seed_counter: input_len.into(), first_layer_outputs: 0, lattice_key_fingerprint: String::new(), ot_setup_id: Vec::new() };
            let _ = tandem_grpc::session_start_from_proto(pk.ciphertext_bytes(), &start);
            let _ = tandem_grpc::input_masks_from_proto(pk, &pb::InputMasks { enc_r: cts.clone() }, n);
            let _ = tandem_grpc::rho_masks_from_proto(pk, &pb::RhoMasks { enc_rho: cts.clone() }, n);
            let _ = tandem_grpc::decode_ciphertexts(pk, &cts, Some(n), "c");
            let _ = tandem_grpc::decode_ring::<u128>(&ring, Some(n), "e");
            let _ = tandem_grpc::decode_ring::<U256>(&ring, Some(n), "e");
            let _ = tandem_grpc::masked_round_from_proto::<u128>(&pb::MaskedRound { e: ring.clone() });
            let _ = tandem_grpc::masked_output_from_proto::<U256>(&pb::MaskedOutput { e: ring.clone() });
            let _ = tandem_grpc::activation_values_from_proto::<u128>(&pb::ActivationValues { h: ring.clone() }, n);
            let _ = tandem_grpc::activation_values_from_proto::<U256>(&pb::ActivationValues { h: ring }, n);
            let _ = tandem_grpc::session_id_from_bytes(&session_id, "session_id");
            let _ = tandem_grpc::packing_from_proto(packing.as_ref(), "packing");
            let _ = tandem_grpc::kind_from_proto(kind);
            let _ = tandem_grpc::required_mode(kind, "mode");
        });
    }

    /// The full lattice path's messages (§4.2c) and `SetupOt`'s, with
    /// hostile lengths, counts and enums: typed errors, never a panic.
    #[test]
    fn full_lattice_messages(
        ots in prop_oneof![0u32..400, Just(tandem_lattice_engine::tandem_ot::MAX_OTS + 1), any::<u32>()],
        u in near_multiple(2048, 2),
        x in near_multiple(16, 8),
        (n_products, delta, fill) in (0usize..4, -1i64..=1, any::<u8>()),
        (n_inputs, in_delta) in (0usize..4, -1i64..=1),
        corrections in prop::collection::vec(near_multiple(16, 8), 0..5),
        (next, kind, scale, keep, outs) in (0u8..5, -1i32..6, any::<u32>(), prop_oneof![0u32..12, any::<u32>()], prop_oneof![0u32..12, any::<u32>()]),
        (a_point, setup_id, b_points) in (near_multiple(32, 1), near_multiple(16, 1), near_multiple(4096, 1)),
    ) {
        use tandem_lattice_engine::tandem_lattice::{Ciphertext, Layout, SeededCiphertext};
        let ctx = tandem::test_lattice_engine().context().clone();
        let layout = Layout::new(&ctx, 9, 4).unwrap();
        let sized = |len: usize, d: i64| vec![fill; (len as i64 + d).max(0) as usize];
        let products: Vec<Vec<u8>> =
            (0..n_products).map(|g| sized(Ciphertext::byte_len(&ctx, layout.rows_in_group(g.min(layout.n_groups - 1))), delta)).collect();
        let inputs: Vec<Vec<u8>> = (0..n_inputs).map(|_| sized(SeededCiphertext::byte_len(&ctx), in_delta)).collect();
        let mut ole_request = ots.to_le_bytes().to_vec();
        ole_request.extend_from_slice(&u);
        let next = match next {
            0 => None,
            1 => Some(pb::FullNext { next: None }),
            2 => Some(pb::FullNext { next: Some(pb::full_next::Next::Linear(pb::FullNextLinear { outputs: outs })) }),
            3 => Some(pb::FullNext { next: Some(pb::full_next::Next::Round(pb::FullNextRound { kind, scale, keep, next_outputs: outs })) }),
            _ => Some(pb::FullNext { next: Some(pb::full_next::Next::Output(pb::FullNextOutput { mode: kind, scale })) }),
        };
        let len = ole_request.len() + x.len() + products.iter().chain(&inputs).chain(&corrections).map(Vec::len).sum::<usize>() + b_points.len() + 64;
        bounded("full lattice messages", message_heap_bound(len), || {
            let step = pb::FullStep { ole_request, x, products, next };
            let _ = tandem_grpc::full_step_from_proto(&ctx, Some(&layout), &step);
            let _ = tandem_grpc::full_step_from_proto(&ctx, None, &step);
            let _ = tandem_grpc::full_reply_from_proto(&ctx, &pb::FullReply { corrections, inputs });
            let _ = tandem_grpc::setup_ot_request_from_proto(&pb::SetupOtRequest { a_point });
            let _ = tandem_grpc::setup_ot_reply_from_proto(&pb::SetupOtReply { setup_id, b_points });
        });
    }

    #[test]
    fn peer_messages_from_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        let pk = pk();
        bounded("peer decode", message_heap_bound(bytes.len()), || {
            use pb::{evaluate_msg, preprocess_msg};
            if let Ok(m) = <pb::PreprocessMsg as prost::Message>::decode(&bytes[..]) {
                match m.msg {
                    Some(preprocess_msg::Msg::Start(s)) => { let _ = tandem_grpc::session_start_from_proto(pk.ciphertext_bytes(), &s); }
                    Some(preprocess_msg::Msg::Round(r)) => { let _ = tandem_grpc::blinded_round_from_proto(pk, &r); }
                    Some(preprocess_msg::Msg::Output(o)) => { let _ = tandem_grpc::blinded_output_from_proto(pk, &o); }
                    Some(preprocess_msg::Msg::LatticeProducts(p)) => {
                        let ctx = tandem::test_lattice_engine().context().clone();
                        let layout = tandem_lattice_engine::tandem_lattice::Layout::new(&ctx, 9, 4).unwrap();
                        let _ = tandem_grpc::lattice_products_from_proto(&ctx, &layout, &p);
                    }
                    Some(preprocess_msg::Msg::FullStep(f)) => {
                        let ctx = tandem::test_lattice_engine().context().clone();
                        let layout = tandem_lattice_engine::tandem_lattice::Layout::new(&ctx, 9, 4).unwrap();
                        let _ = tandem_grpc::full_step_from_proto(&ctx, Some(&layout), &f);
                        let _ = tandem_grpc::full_step_from_proto(&ctx, None, &f);
                    }
                    None => {}
                }
            }
            if let Ok(m) = <pb::EvaluateMsg as prost::Message>::decode(&bytes[..]) {
                match m.msg {
                    Some(evaluate_msg::Msg::Resume(r)) => { let _ = tandem_grpc::session_id_from_bytes(&r.session_id, "id"); }
                    Some(evaluate_msg::Msg::Round(r)) => { let _ = tandem_grpc::masked_round_from_proto::<u128>(&r); }
                    Some(evaluate_msg::Msg::Output(o)) => { let _ = tandem_grpc::masked_output_from_proto::<U256>(&o); }
                    None => {}
                }
            }
            if let Ok(m) = <pb::PreprocessReply as prost::Message>::decode(&bytes[..]) {
                if let Some(pb::preprocess_reply::Msg::Rho(r)) = &m.msg {
                    let _ = tandem_grpc::rho_masks_from_proto(pk, r, 3);
                }
                if let Some(pb::preprocess_reply::Msg::LatticeInputs(i)) = &m.msg {
                    let ctx = tandem::test_lattice_engine().context().clone();
                    let layout = tandem_lattice_engine::tandem_lattice::Layout::new(&ctx, 9, 4).unwrap();
                    let _ = tandem_grpc::lattice_inputs_from_proto(&ctx, &layout, i);
                }
                if let Some(pb::preprocess_reply::Msg::FirstProducts(f)) = &m.msg {
                    let _ = tandem_grpc::first_products_from_proto(pk, f, 3);
                }
                if let Some(pb::preprocess_reply::Msg::FullReply(r)) = &m.msg {
                    let ctx = tandem::test_lattice_engine().context().clone();
                    let _ = tandem_grpc::full_reply_from_proto(&ctx, r);
                }
            }
            if let Ok(m) = <pb::SetupOtRequest as prost::Message>::decode(&bytes[..]) {
                let _ = tandem_grpc::setup_ot_request_from_proto(&m);
            }
            if let Ok(m) = <pb::SetupOtReply as prost::Message>::decode(&bytes[..]) {
                let _ = tandem_grpc::setup_ot_reply_from_proto(&m);
            }
            let _ = <pb::EvaluateReply as prost::Message>::decode(&bytes[..]);
        });
    }
}

/// S2's session fed whatever the hostile preprocessing and evaluation
/// messages decode to, in order: start, rounds, output, online rounds.
#[test]
fn activation_session_with_hostile_messages() {
    use tandem_core::messages as m;
    let cfg = ProptestConfig { cases: cases().div_ceil(4), ..config() };
    let mut runner = proptest::test_runner::TestRunner::new(cfg);
    let steps = prop::collection::vec((round_fields(), prop_oneof![near_multiple(16, 6), Just(Vec::new())]), 1..4);
    runner
        .run(&(1u32..6, steps), |(input_len, steps)| {
            let sk = test_key_1024();
            let pk = sk.public();
            let keys = tandem::paillier_keys(sk, &mut rand_core::OsRng);
            let mut s2 = tandem_core::ActivationServer::new(
                std::sync::Arc::new(tandem_paillier::PaillierEngine),
                keys,
                &mut rand_core::OsRng,
            );
            let secret = tandem_paillier::SeedSecret::random(&mut rand_core::OsRng);
            let ct = pk.encrypt(
                &<tandem_paillier::BigInt as tandem_paillier::bigint_traits::Converter>::from_bytes(
                    secret.plaintext_be(),
                ),
                &mut rand_core::OsRng,
            );
            let start = m::SessionStart {
                session_id: [3; 16],
                seed: tandem_core::SeedSource::Encrypted {
                    enc_seed: tandem_core::EncryptedSeed(pk.ciphertext_to_bytes(&ct)),
                    epoch: s2.seed_epoch(),
                },
                input_len,
                ring_bits: 128,
                input_mask_bits: 68,
                first_layer_outputs: 0,
                ot_setup: None,
            };
            let (mut pre, _) = s2.start_session::<u128>(&start, std::time::Duration::ZERO).expect("a valid start");
            let mut session: Option<tandem_core::ActivationSession<u128>> = None;
            let n = steps.len();
            for (i, ((kind, scale, count, packing, packed), e)) in steps.into_iter().enumerate() {
                let len = packed.len() + e.len() + 64;
                bounded("S2 session", message_heap_bound(len) + (4 << 20), || {
                    let last = i + 1 == n;
                    if last {
                        let o = pb::BlindedOutput { mode: kind, scale, count, packing, packed };
                        if let Ok(o) = tandem_grpc::blinded_output_from_proto(pk, &o) {
                            if let Ok((_, s)) = pre.on_blinded_output(&o) {
                                session = Some(s);
                            }
                        }
                    } else {
                        let r = pb::BlindedRound { kind, scale, count, packing, packed };
                        if let Ok(r) = tandem_grpc::blinded_round_from_proto(pk, &r) {
                            let _ = pre.on_blinded_round(&r);
                        }
                    }
                    if let (Some(session), Ok(r)) =
                        (session.as_mut(), tandem_grpc::masked_round_from_proto::<u128>(&pb::MaskedRound { e }))
                    {
                        let _ = session.activate(&r);
                    }
                });
            }
            if let Some(session) = session {
                let _ = session.finish(&m::MaskedOutput { e: vec![0u128; 2] });
            }
            Ok(())
        })
        .unwrap();
}

// ------------------------------------------------------------------ regressions

/// `x [1, d]` → Gemm (4 → 4) → `chain` Identity nodes → output.
fn chain_model(d: i64, chain: usize) -> Vec<u8> {
    let mut m = synthetic(&[1, d], &[]);
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(onnx::TensorProto {
        name: Some("w".into()),
        dims: vec![4, 4],
        data_type: Some(1),
        float_data: (0..16).map(|i| i as f32 / 16.0).collect(),
        ..Default::default()
    });
    let gemm = |input: &str, output: &str, op: &str, extra: &[&str]| onnx::NodeProto {
        input: std::iter::once(input).chain(extra.iter().copied()).map(String::from).collect(),
        output: vec![output.into()],
        op_type: Some(op.into()),
        ..Default::default()
    };
    g.node.push(gemm("x", "h0", "Gemm", &["w"]));
    for k in 0..chain {
        g.node.push(gemm(&format!("h{k}"), &format!("h{}", k + 1), "Identity", &[]));
    }
    g.output = vec![onnx::ValueInfoProto { name: Some(format!("h{chain}")), ..Default::default() }];
    prost::Message::encode_to_vec(&m)
}

fn import_err(bytes: &[u8]) -> String {
    import(bytes, false).expect_err("the import must fail")
}

/// Found by `onnx_synthetic_graphs` and `onnx_graph_edits`: a graph input
/// declaring 2^62 (or 2^63 − 1) features made the importer overflow its
/// element count (a panic) or allocate an elementwise map of that size
/// (capacity overflow, or an abort when the allocation failed).
#[test]
fn regression_huge_input_dimensions() {
    for d in [i64::MAX, 1 << 62, 1 << 40, 1 << 25] {
        let e = import_err(&chain_model(d, 0));
        assert!(e.contains("tandem takes at most 16777216 input features"), "{e}");
    }
    let mut m = synthetic(&[1, i64::MAX], &[]);
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(small_tensor("c", 1, 3, 1));
    g.node.push(onnx::NodeProto {
        input: vec!["x".into(), "c".into()],
        output: vec!["y".into()],
        op_type: Some("Add".into()),
        ..Default::default()
    });
    g.output = vec![onnx::ValueInfoProto { name: Some("y".into()), ..Default::default() }];
    assert!(import_err(&prost::Message::encode_to_vec(&m)).contains("input features"));
}

/// An empty weight matrix `[2^40, 0]` claims 2^40 outputs; nothing may be
/// sized by that (the bias was allocated before the input width was
/// checked). Zero-size tensors with a huge extent are refused on decoding.
#[test]
fn regression_empty_tensors_with_huge_extents() {
    let mut m = synthetic(&[1, 4], &[]);
    let g = m.graph.as_mut().unwrap();
    let mut w = small_tensor("w", 1 << 40, 0, 1);
    w.dims = vec![1 << 40, 0];
    g.initializer.push(w);
    g.node.push(onnx::NodeProto {
        input: vec!["x".into(), "w".into()],
        output: vec!["y".into()],
        op_type: Some("Gemm".into()),
        attribute: vec![onnx::AttributeProto { name: Some("transB".into()), i: Some(1), ..Default::default() }],
        ..Default::default()
    });
    g.output = vec![onnx::ValueInfoProto { name: Some("y".into()), ..Default::default() }];
    let e = import_err(&prost::Message::encode_to_vec(&m));
    assert!(e.contains("more than the 33554432 values tandem holds in one constant"), "{e}");
}

/// Found by review of the importer's recursion while fixing the above: a
/// chain of 100 000 nodes (2 MB of protobuf) overflowed the stack (an
/// abort); evaluation now keeps its own stack, and imports it on 256 KiB.
#[test]
fn regression_deep_graphs_do_not_overflow_the_stack() {
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| import(&chain_model(4, 100_000), false).expect("a chain of 100 000 nodes imports"))
        .unwrap()
        .join()
        .unwrap();
}

/// Constants folded from small ones may not grow without bound: a
/// broadcast `[4096, 1] + [1, 4096]`, or one tensor concatenated with
/// itself many times, would hold 2^24 values from 8192.
#[test]
fn regression_folding_does_not_amplify_constants() {
    let mut m = synthetic(&[1, 4], &[]);
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(small_tensor("a", 4096, 5, 1)); // [4096, 1]
    g.initializer.push(small_tensor("b", 4096, 4, 1)); // [1, 4096]
    let node = |input: Vec<&str>, out: &str, op: &str| onnx::NodeProto {
        input: input.into_iter().map(String::from).collect(),
        output: vec![out.into()],
        op_type: Some(op.into()),
        attribute: vec![onnx::AttributeProto { name: Some("axis".into()), i: Some(0), ..Default::default() }],
        ..Default::default()
    };
    g.node.push(node(vec!["a", "b"], "ab", "Add"));
    g.node.push(node(vec!["x", "ab"], "y", "Mul"));
    g.output = vec![onnx::ValueInfoProto { name: Some("y".into()), ..Default::default() }];
    let e = import_err(&prost::Message::encode_to_vec(&m));
    assert!(e.contains("the broadcast result has dimensions [4096, 4096]"), "{e}");
    let g = m.graph.as_mut().unwrap();
    g.node[0] = node(std::iter::repeat_n("b", 5000).collect(), "ab", "Concat");
    let e = import_err(&prost::Message::encode_to_vec(&m));
    assert!(e.contains("working memory"), "{e}");
}

/// Found by `onnx_byte_mutations` and `onnx_graph_edits` (30 000 cases):
/// a weight flipped or set to ±3.4e38 (or ±inf) imported, and quantizing it
/// overflowed a row's L1 norm (a panic); below that, a huge weight
/// saturated to 2^63 − 1 silently. Non-finite weights are now invalid, and
/// weights beyond 2^62 are refused.
#[test]
fn regression_huge_and_non_finite_weights() {
    use rand::SeedableRng;
    use tandem_model::{ActivationKind, Layer};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let base = tandem_model::testing::random_mlp(&mut rng, &[3, 4, 2], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    for (w, want) in [
        (f32::MAX, "too large to quantize"),
        (-3e38, "too large to quantize"),
        (1e19, "too large to quantize"),
        (f32::INFINITY, "NaN or infinite"),
        (f32::NAN, "NaN or infinite"),
    ] {
        let mut m = base.clone();
        let Layer::Dense { weights, .. } = &mut m.layers[0] else { unreachable!() };
        weights[0] = w;
        weights[1] = w;
        let e = bounded("quantize", 64 << 20, || QuantizedModel::new(&m, QuantConfig::default())).unwrap_err();
        assert!(e.to_string().contains(want), "{w}: {e}");
    }
}

/// Found by `server_answers_at_the_client`: the client accepted a model
/// info whose shape overflowed its feature count, or with 2^32 − 1
/// outputs, which then sized its buffers.
#[test]
fn regression_model_info_sizes_are_bounded() {
    let mut m = pb::ModelInfo {
        id: "m".into(),
        input_shape: vec![3],
        input_min: 0.0,
        input_max: 1.0,
        ring_bits: 128,
        f_in: 16,
        f_act: 16,
        output_len: 2,
        modes: vec![1, 2, 3],
        default_mode: 1,
        activation_key: Some(pb::PaillierPublicKey {
            seed_epoch: vec![0; 16],
            ..tandem_grpc::public_key_to_proto(pk())
        }),
        // [0, 1] at f_in = 16: B = 2^16, m = 17 + 1 + 40.
        input_offset: 1 << 16,
        input_mask_bits: 58,
        ..Default::default()
    };
    assert!(tandem_client::remote_model(&m, None).is_ok());
    // A narrower mask than the range implies would hide the input less
    // than SECURITY.md states: refused, as is a wrong offset.
    m.input_mask_bits = 57;
    let e = tandem_client::remote_model(&m, None).unwrap_err().to_string();
    assert!(
        e.contains("publishes input_offset 65536 and input_mask_bits 57") && e.contains("imply 65536 and 58"),
        "{e}"
    );
    (m.input_mask_bits, m.input_offset) = (58, 0);
    assert!(tandem_client::remote_model(&m, None).is_err());
    m.input_offset = 1 << 16;
    m.output_len = u32::MAX;
    let e = tandem_client::remote_model(&m, None).unwrap_err().to_string();
    assert!(e.contains("4294967295 outputs (accepted: at most 16777216)"), "{e}");
    m.output_len = 2;
    for shape in [vec![u32::MAX, u32::MAX, u32::MAX], vec![1 << 16, 1 << 16], vec![2, 0, 2], vec![1, 1, 1, 1]] {
        m.input_shape = shape;
        let e = tandem_client::remote_model(&m, None).unwrap_err().to_string();
        assert!(e.contains("accepted: 1 to 16777216 features"), "{e}");
    }
}

/// The baseline the bounds are set against: every bundled model imports
/// and quantizes well within them, and the meter does see allocations.
#[test]
fn bundled_models_import_within_the_bounds() {
    for (name, b, _) in bundled() {
        let (r, peak) = meter::measure(|| import(b, false));
        r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(peak > b.len() && peak < onnx_heap_bound(b.len()) / 4, "{name}: {peak} bytes at peak");
    }
    let (_, peak) = meter::measure(|| std::hint::black_box(vec![1u8; 10 << 20]));
    assert!(peak >= 10 << 20);
}
