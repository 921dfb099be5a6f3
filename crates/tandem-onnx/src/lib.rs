//! ONNX import into tandem's float IR ([`tandem_model::Model`]).
//!
//! The ONNX protobuf is parsed in pure Rust (prost types generated at build
//! time by protox from the vendored `proto/onnx-ml.proto`; no system
//! `protoc`). The importer then picks the graph output to follow, evaluates
//! the graph symbolically backwards from it to the data input, and turns the
//! ops on that path into IR layers; branches that do not feed the output
//! (e.g. skl2onnx's label branch) are never looked at.
//!
//! # Supported
//!
//! * Linear: `Gemm` (transB, alpha, beta; transA = 0), `MatMul` + `Add`,
//!   `Conv` (strides, explicit pads — symmetric or not — or auto_pad
//!   VALID/SAME_UPPER/SAME_LOWER, each pad below the kernel size; dilation
//!   1, group 1), `AveragePool` (no padding), `GlobalAveragePool`.
//! * Layout: `Transpose` of the activations that keeps the batch dimension
//!   first (tf2onnx's NHWC ↔ NCHW around convolutions): a fixed permutation
//!   of each sample's values, kept as an IR `permute` layer that
//!   quantization folds exactly into the adjacent linear layer (its rows, or
//!   the next layer's columns); a transpose that only moves size-1 axes is
//!   a relabelling. Elementwise constants between transposes (tf2onnx's
//!   BatchNormalization as Mul/Add in NHWC) are carried through them.
//! * `MaxPool`/`GlobalMaxPool` → an IR `maxpool2d` (padding is −∞), exact
//!   in the protocol as ReLU rounds (docs/PROTOCOL.md §4.9).
//! * Folded into the adjacent linear layer: `BatchNormalization` (inference
//!   mode), `Add`/`Sub`/`Mul`/`Div`/`Neg` with a constant, `ai.onnx.ml.Scaler`
//!   — after a linear layer they fold into it; before one (e.g. input
//!   normalization, or after an activation) into the next one.
//! * Activations: `Relu`, `Sigmoid`, `Tanh` (each after a linear layer).
//! * Output head (not a layer: [`Model::default_mode`]): `Softmax` →
//!   probabilities, `LogSoftmax` → probabilities (tandem outputs
//!   `exp` of ONNX's values), `ArgMax` → label, a final `Sigmoid` on one output →
//!   sigmoid, none → logits. skl2onnx's binary pattern
//!   `Concat(1 - sigmoid(z), sigmoid(z))` imports as the one-output model
//!   with the sigmoid head: ONNX's probabilities are `[1 - p, p]` where `p`
//!   is tandem's sigmoid output (see [`Head::SigmoidPair`], [`ImportReport::onnx_view`]).
//! * Plumbing: `Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`, `Identity`,
//!   `Dropout`, `Cast`, `Constant`, shape arithmetic on constants (`Shape`,
//!   `Gather`, `Concat`, `Unsqueeze`, …, as torch.onnx writes for
//!   `x.view(x.size(0), -1)`), `ai.onnx.ml.ZipMap` (read as its input) and
//!   `ArrayFeatureExtractor` for class labels 0..n-1.
//!
//! Anything else is refused with an [`ImportError`] naming the op, the node
//! and what is supported.
//!
//! # Limits (the file is untrusted)
//!
//! The importer checks every size before it allocates for it, so a small
//! hostile file cannot make it allocate much, overflow, or recurse deeply
//! (`tests/hostile_formats.rs` fuzzes this): a graph input has at most
//! `tandem_model::ir::MAX_VALUES` features and every layer at most as many
//! outputs; a constant has rank at most 16 and at most `MAX_MACS` values
//! (counting zero-size axes as 1); folding constants never produces more
//! values than its inputs hold (or 2^20); and everything the import
//! materializes counts against a budget of `2^25 + 4 × file size` values.
//! Nodes are evaluated with an explicit stack, so depth is not limited by
//! the thread's stack.
//!
//! # Input range
//!
//! Private inference needs the range every input feature lies in (the bit
//! budget is computed for it). It comes from [`ImportOptions::input_range`],
//! else from the model's `metadata_props` key `tandem.input_range` =
//! `"lo,hi"`; without either the import fails and says so.
//!
//! # Input precision
//!
//! Inputs are quantized as `round(x·2^{f_in})` with `f_in` =
//! `tandem_model::F_IN` (16) unless the owner declares fewer fraction bits:
//! [`ImportOptions::input_frac_bits`], else the metadata key
//! `tandem.input_frac_bits`. Data with less precision than 16 bits (8-bit
//! pixels) loses nothing at a lower `f_in`, and every feature the client
//! sends is that many bits narrower (docs/PROTOCOL.md §4.1). The sidecar
//! file ([`read_input_sidecar`]) can declare both.

// `is_multiple_of` needs Rust 1.87; the workspace declares an older MSRV.
#![allow(clippy::manual_is_multiple_of)]

mod graph;
mod tensor;

/// Types generated from the vendored `onnx-ml.proto`.
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use graph::{Act, Ctx, Val};
use prost::Message;
use std::path::Path;
use tandem_model::{ActivationKind, Layer, Model, ModelError, OutputMode, Shape};

pub use graph::{ONNX_ML_OPS, ONNX_OPS, SUPPORTED_OPS};

/// The metadata key holding the input range, `"lo,hi"`.
pub const INPUT_RANGE_KEY: &str = "tandem.input_range";
/// The metadata key holding the input precision `f_in`, e.g. `"8"`.
pub const INPUT_FRAC_BITS_KEY: &str = "tandem.input_frac_bits";
/// The sidecar line declaring the input precision: `input_frac_bits = 8`.
pub const SIDECAR_FRAC_BITS: &str = "input_frac_bits";

/// Options of an import.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportOptions {
    /// Every input feature lies in `[lo, hi]`. Overrides the model's
    /// `tandem.input_range` metadata.
    pub input_range: Option<(f64, f64)>,
    /// `f_in`: inputs are quantized as `round(x·2^{f_in})`. Overrides the
    /// model's `tandem.input_frac_bits` metadata; default
    /// `tandem_model::F_IN`.
    pub input_frac_bits: Option<u32>,
    /// The model's name; default: the file stem, else the graph name.
    pub name: Option<String>,
    /// The graph output (or any tensor) to follow; default: the only output,
    /// else a float output named like "prob…", else a ZipMap output, else the
    /// first float tensor output.
    pub output: Option<String>,
    /// Overrides the default mode derived from the output head.
    pub default_mode: Option<OutputMode>,
}

/// How the followed ONNX output relates to the imported model's logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// The output is the logits.
    None,
    Softmax,
    /// ONNX outputs log-probabilities; tandem's probabilities are their `exp`.
    LogSoftmax,
    /// A Sigmoid on the single output.
    Sigmoid,
    /// skl2onnx's binary classifier: ONNX outputs `[1 - p, p]`, `p` = sigmoid of the single logit.
    SigmoidPair,
    ArgMax,
}

impl Head {
    pub fn name(self) -> &'static str {
        match self {
            Head::None => "none (logits)",
            Head::Softmax => "softmax",
            Head::LogSoftmax => "log-softmax",
            Head::Sigmoid => "sigmoid",
            Head::SigmoidPair => "sigmoid pair [1-p, p]",
            Head::ArgMax => "argmax",
        }
    }

    /// The default output mode for this head.
    pub fn default_mode(self) -> OutputMode {
        match self {
            Head::None => OutputMode::Logits,
            Head::Softmax | Head::LogSoftmax => OutputMode::Probabilities,
            Head::Sigmoid | Head::SigmoidPair => OutputMode::Sigmoid,
            Head::ArgMax => OutputMode::Label,
        }
    }
}

/// What the importer did, besides the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    pub producer: String,
    /// Opset of the default ONNX domain.
    pub opset: i64,
    pub input_name: String,
    /// The graph output followed.
    pub output_name: String,
    /// The tensor whose value the model computes (differs from
    /// `output_name` when the output is a ZipMap of it).
    pub tensor: String,
    pub head: Head,
    /// Other graph outputs, not imported.
    pub ignored_outputs: Vec<String>,
    /// Nodes not on the path from the input to the followed output.
    pub ignored_nodes: usize,
    /// Where the input range came from.
    pub input_range_source: String,
    /// `f_in` and where it came from (`"default"` when nothing declared it).
    pub input_frac_bits: (u32, String),
    /// Foldings and reinterpretations, one line each.
    pub notes: Vec<String>,
}

impl ImportReport {
    /// Puts tandem outputs in `mode` into the form of the followed ONNX
    /// output, when the two are comparable: probabilities for softmax,
    /// `ln` of them for log-softmax, `[1 - p, p]` for the sigmoid pair, …
    pub fn onnx_view(&self, mode: OutputMode, values: &[f64]) -> Option<Vec<f64>> {
        match (self.head, mode) {
            (Head::None, OutputMode::Logits)
            | (Head::Softmax, OutputMode::Probabilities)
            | (Head::Sigmoid, OutputMode::Sigmoid)
            | (Head::ArgMax, OutputMode::Label) => Some(values.to_vec()),
            (Head::LogSoftmax, OutputMode::Probabilities) => Some(values.iter().map(|v| v.ln()).collect()),
            (Head::SigmoidPair, OutputMode::Sigmoid) => values.first().map(|&p| vec![1.0 - p, p]),
            _ => None,
        }
    }
}

/// A model and its import report.
#[derive(Clone, Debug)]
pub struct Imported {
    pub model: Model,
    pub report: ImportReport,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("not a valid ONNX model: {0}")]
    Malformed(String),
    #[error("unsupported ONNX op {op} at node {node}. tandem imports: {supported}", supported = SUPPORTED_OPS)]
    UnsupportedOp { op: String, node: String },
    #[error("ONNX node {node} ({op}): {reason}")]
    Unsupported { op: String, node: String, reason: String },
    /// A graph input or output (not a node) tandem cannot take.
    #[error("ONNX {what} {name:?}: {reason}")]
    UnsupportedTensor { what: &'static str, name: String, reason: String },
    #[error(
        "the ONNX model does not declare its input range: write \"lo,hi\" into a sidecar file \
         NAME.onnx.input-range next to it, or add metadata_props key \"{key}\" = \"lo,hi\" to the model \
         (tandem-eval also takes --input-range LO,HI; the library ImportOptions::input_range). \
         Every input feature must lie in that range: private inference sizes its arithmetic for it",
        key = INPUT_RANGE_KEY
    )]
    MissingInputRange,
    #[error("input range: {0}")]
    BadInputRange(String),
    #[error("input precision: {0}")]
    BadInputPrecision(String),
    #[error("the imported model is not valid for tandem: {0}")]
    Model(#[from] ModelError),
}

/// Imports an ONNX file. The model's default name is the file stem.
pub fn import_file(path: impl AsRef<Path>, opts: &ImportOptions) -> Result<Model, ImportError> {
    import_file_with_report(path, opts).map(|i| i.model)
}

/// Imports ONNX bytes.
pub fn import_bytes(bytes: &[u8], opts: &ImportOptions) -> Result<Model, ImportError> {
    import_bytes_with_report(bytes, opts).map(|i| i.model)
}

pub fn import_file_with_report(path: impl AsRef<Path>, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)
        .map_err(|e| ImportError::Io { path: path.display().to_string(), message: e.to_string() })?;
    let mut opts = opts.clone();
    if opts.name.is_none() {
        opts.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    import_bytes_with_report(&bytes, &opts).map_err(|e| match e {
        ImportError::Malformed(m) => ImportError::Malformed(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// The sidecar file holding a model's input range: `NAME.onnx` →
/// `NAME.onnx.input-range`.
pub fn input_range_sidecar(model: &Path) -> std::path::PathBuf {
    let mut p = model.as_os_str().to_owned();
    p.push(".input-range");
    p.into()
}

/// What a model's sidecar file ([`input_range_sidecar`]) declares about
/// its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputSidecar {
    /// Every input feature lies in `[lo, hi]`.
    pub range: (f64, f64),
    /// `f_in`, if the owner declared it (`input_frac_bits = N`).
    pub input_frac_bits: Option<u32>,
}

impl InputSidecar {
    /// `opts` with this sidecar's declarations, where `opts` has none of
    /// its own (a command-line `--input-range` wins over the file).
    pub fn fill(sidecar: Option<Self>, mut opts: ImportOptions) -> ImportOptions {
        if let Some(s) = sidecar {
            opts.input_range = opts.input_range.or(Some(s.range));
            opts.input_frac_bits = opts.input_frac_bits.or(s.input_frac_bits);
        }
        opts
    }
}

/// The sidecar of `model` ([`input_range_sidecar`]), if there is one:
/// a first line `lo,hi`, then optionally `input_frac_bits = N` (the input
/// precision `f_in`, 0 to `tandem_model::MAX_F_IN`). Blank lines and lines
/// starting with `#` are ignored. The model server, `tandem-eval` and
/// `tandem-loadgen` all read it, so a model evaluated with `tandem-eval` is
/// served with the same range and precision. A sidecar that exists but
/// cannot be read or parsed is an error naming the file.
pub fn read_input_sidecar(model: &Path) -> Result<Option<InputSidecar>, String> {
    let sidecar = input_range_sidecar(model);
    match std::fs::read_to_string(&sidecar) {
        Ok(text) => parse_input_sidecar(&text).map(Some).map_err(|e| format!("{}: {e}", sidecar.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", sidecar.display())),
    }
}

/// Parses a sidecar's text ([`read_input_sidecar`]).
pub fn parse_input_sidecar(text: &str) -> Result<InputSidecar, String> {
    const FORMAT: &str = "expected a line \"lo,hi\", e.g. 0,1, optionally followed by \"input_frac_bits = N\"";
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let range = parse_range(lines.next().unwrap_or("")).map_err(|e| format!("{e} ({FORMAT})"))?;
    let mut input_frac_bits = None;
    for line in lines {
        let (key, value) = line.split_once('=').map(|(k, v)| (k.trim(), v.trim())).unwrap_or((line, ""));
        if key != SIDECAR_FRAC_BITS {
            return Err(format!("unknown line {line:?} ({FORMAT})"));
        }
        if input_frac_bits.is_some() {
            return Err(format!("{SIDECAR_FRAC_BITS} is declared twice"));
        }
        input_frac_bits = Some(parse_frac_bits(value)?);
    }
    Ok(InputSidecar { range, input_frac_bits })
}

/// Parses an input precision: an integer from 0 to `tandem_model::MAX_F_IN`.
pub fn parse_frac_bits(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(f) if f <= tandem_model::MAX_F_IN => Ok(f),
        _ => Err(format!(
            "{SIDECAR_FRAC_BITS} {s:?} is not an integer from 0 to {} (fraction bits of the quantized input)",
            tandem_model::MAX_F_IN
        )),
    }
}

/// Parses `"lo,hi"` (brackets and spaces allowed).
pub fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    let parts: Vec<&str> = t.split(',').map(str::trim).collect();
    let bad = || format!("{s:?} is not \"lo,hi\"");
    if parts.len() != 2 {
        return Err(bad());
    }
    let lo: f64 = parts[0].parse().map_err(|_| bad())?;
    let hi: f64 = parts[1].parse().map_err(|_| bad())?;
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(format!("[{lo}, {hi}] is not a finite interval with lo <= hi"));
    }
    Ok((lo, hi))
}

pub fn import_bytes_with_report(bytes: &[u8], opts: &ImportOptions) -> Result<Imported, ImportError> {
    let m = proto::ModelProto::decode(bytes)
        .map_err(|e| ImportError::Malformed(format!("the file is not an ONNX ModelProto ({e})")))?;
    let graph = m.graph.as_ref().ok_or_else(|| ImportError::Malformed("the ONNX model has no graph".into()))?;
    if graph.node.is_empty() && graph.output.is_empty() {
        return Err(ImportError::Malformed("the ONNX graph is empty".into()));
    }
    let opset = m
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .unwrap_or(if m.opset_import.is_empty() { 1 } else { 0 });

    let (input_range, input_range_source) = match opts.input_range {
        Some(r) => {
            let (lo, hi) = r;
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return Err(ImportError::BadInputRange(format!("[{lo}, {hi}] is not a finite interval with lo <= hi")));
            }
            (r, "options".to_string())
        }
        None => match m.metadata_props.iter().find(|p| p.key() == INPUT_RANGE_KEY) {
            Some(p) => (
                parse_range(p.value())
                    .map_err(|e| ImportError::BadInputRange(format!("metadata {INPUT_RANGE_KEY}: {e}")))?,
                format!("metadata {INPUT_RANGE_KEY}"),
            ),
            None => return Err(ImportError::MissingInputRange),
        },
    };

    let input_frac_bits = match opts.input_frac_bits {
        Some(f) => (parse_frac_bits(&f.to_string()).map_err(ImportError::BadInputPrecision)?, "options".to_string()),
        None => match m.metadata_props.iter().find(|p| p.key() == INPUT_FRAC_BITS_KEY) {
            Some(p) => (
                parse_frac_bits(p.value())
                    .map_err(|e| ImportError::BadInputPrecision(format!("metadata {INPUT_FRAC_BITS_KEY}: {e}")))?,
                format!("metadata {INPUT_FRAC_BITS_KEY}"),
            ),
            None => (tandem_model::F_IN, "default".to_string()),
        },
    };

    let mut ctx = Ctx::new(graph, opset, graph::work_budget(bytes.len()))?;
    let (output_name, tensor) = choose_output(&ctx, graph, opts)?;
    let val = ctx.eval(&tensor, "the followed graph output")?;
    let Val::Act(act) = val else {
        return Err(ImportError::Malformed(format!("output {output_name:?} does not depend on any graph input")));
    };
    let (layers, input_shape, head) = finish(*act, &tensor)?;
    let default_mode = opts.default_mode.unwrap_or(head.default_mode());
    let name = opts
        .name
        .clone()
        .or_else(|| Some(graph.name().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "onnx-model".into());
    let model = Model { name, input_shape, input_range, input_frac_bits: input_frac_bits.0, default_mode, layers };
    model.shapes()?;
    let ignored_outputs = graph.output.iter().map(|o| o.name().to_string()).filter(|o| *o != output_name).collect();
    let report = ImportReport {
        producer: format!("{} {}", m.producer_name(), m.producer_version()).trim().to_string(),
        opset,
        input_name: ctx.data_input.clone().unwrap_or_default(),
        output_name,
        tensor,
        head,
        ignored_outputs,
        ignored_nodes: graph.node.len() - ctx.used_nodes.len(),
        input_range_source,
        input_frac_bits,
        notes: std::mem::take(&mut ctx.notes),
    };
    Ok(Imported { model, report })
}

fn elem_kind(v: &proto::ValueInfoProto) -> (&'static str, i32) {
    use proto::type_proto::Value;
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(t)) => ("tensor", t.elem_type.unwrap_or(0)),
        Some(Value::SequenceType(_)) => ("sequence", 0),
        Some(Value::MapType(_)) => ("map", 0),
        _ => ("other", 0),
    }
}

/// Returns (graph output, tensor to evaluate).
fn choose_output(ctx: &Ctx, graph: &proto::GraphProto, opts: &ImportOptions) -> Result<(String, String), ImportError> {
    let through_zipmap = |name: &str| -> String {
        match ctx.producer_of(name) {
            Some(n) if n.op_type() == "ZipMap" && !n.input.is_empty() => n.input[0].clone(),
            _ => name.to_string(),
        }
    };
    if let Some(o) = &opts.output {
        let known = graph.output.iter().any(|v| v.name() == o) || ctx.producer_of(o).is_some();
        if !known {
            let outs: Vec<&str> = graph.output.iter().map(|v| v.name()).collect();
            return Err(ImportError::Malformed(format!("no tensor named {o:?}; the graph outputs are {outs:?}")));
        }
        return Ok((o.clone(), through_zipmap(o)));
    }
    let outs = &graph.output;
    let pick = match outs.len() {
        0 => return Err(ImportError::Malformed("the graph has no outputs".into())),
        1 => &outs[0],
        _ => {
            let is_float = |v: &&proto::ValueInfoProto| {
                let (k, t) = elem_kind(v);
                k == "tensor" && (t == tensor::DT_FLOAT || t == tensor::DT_DOUBLE)
            };
            let is_zipmap =
                |v: &&proto::ValueInfoProto| ctx.producer_of(v.name()).is_some_and(|n| n.op_type() == "ZipMap");
            outs.iter()
                .find(|v| is_float(v) && v.name().to_lowercase().contains("prob"))
                .or_else(|| outs.iter().find(is_zipmap))
                .or_else(|| outs.iter().find(is_float))
                .unwrap_or(&outs[0])
        }
    };
    Ok((pick.name().to_string(), through_zipmap(pick.name())))
}

/// Turns the followed value into layers, input shape and head.
fn finish(mut a: Act, tensor: &str) -> Result<(Vec<Layer>, Shape, Head), ImportError> {
    let err =
        |reason: String| ImportError::UnsupportedTensor { what: "graph output", name: tensor.to_string(), reason };
    if let Some(p) = &a.pending {
        return Err(err(format!(
            "ends with the elementwise op(s) {}, which could not be folded into a linear layer",
            p.origin
        )));
    }
    let last = a.layers.iter().rposition(|l| !matches!(l, Layer::Flatten));
    let last_is_sigmoid =
        |a: &Act| matches!(last.map(|i| &a.layers[i]), Some(Layer::Activation(ActivationKind::Sigmoid)));
    let head = match a.head.take().map(|h| h.0) {
        Some(Head::SigmoidPair) => {
            a.layers.truncate(last.expect("sigmoid"));
            Head::SigmoidPair
        }
        Some(Head::ArgMax) if last_is_sigmoid(&a) => {
            // ArgMax over the [1 - p, p] pair: the label of the single logit.
            a.layers.truncate(last.expect("sigmoid"));
            Head::ArgMax
        }
        Some(h) => h,
        None => match last.map(|i| (&a.layers[i], &a.layer_nodes[i])) {
            Some((Layer::Activation(ActivationKind::Sigmoid), _)) if a.ir.len() == 1 => {
                a.layers.truncate(last.expect("sigmoid"));
                Head::Sigmoid
            }
            Some((Layer::Activation(k), at)) => {
                let why = if *k == ActivationKind::Sigmoid {
                    format!("is a Sigmoid over {} outputs (multi-label)", a.ir.len())
                } else {
                    format!("is the output of {at}, a {} activation", k.name())
                };
                return Err(err(format!(
                    "{why}; tandem's last layer must be linear (dense/conv/avgpool), followed at most by an \
                     output head: Softmax, LogSoftmax, ArgMax, or Sigmoid on a single output"
                )));
            }
            None => return Err(err("is computed without any linear layer".into())),
            _ => Head::None,
        },
    };
    // Drop trailing flattens left by popping the head's Sigmoid, then make the output a vector.
    let mut shape = input_shape_of(&a);
    for l in &a.layers {
        shape = l.output_shape(shape).map_err(|e| err(format!("{} {e}", l.describe())))?;
    }
    if matches!(shape, Shape::Image(..)) {
        a.layers.push(Layer::Flatten);
    }
    let input = input_shape_of(&a);
    Ok((a.layers, input, head))
}

fn input_shape_of(a: &Act) -> Shape {
    match a.input_dims[..] {
        [c, h, w] => Shape::Image(c, h, w),
        _ => Shape::Vector(a.input_dims.iter().product()),
    }
}
