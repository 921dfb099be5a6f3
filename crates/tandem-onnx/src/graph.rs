//! Symbolic evaluation of the ONNX graph backwards from the followed output.
//!
//! Every tensor on the path from the data input to the followed output is
//! either a constant ([`Const`]) or an input-dependent value ([`Act`]): the
//! stack of IR layers computing it, plus an elementwise affine map not yet
//! folded into a layer. Nodes off that path are never looked at.

use crate::proto::{attribute_proto::AttributeType, type_proto, GraphProto, NodeProto, ValueInfoProto};
use crate::tensor::{check_dims, numel, Const, DT_DOUBLE, DT_FLOAT, DT_INT64, MAX_CONST_VALUES, MAX_RANK};
use crate::{Head, ImportError};
use std::collections::{HashMap, HashSet};
use tandem_model::ir::MAX_VALUES;
use tandem_model::{ActivationKind, Layer, Shape};

/// Values (f64 or f32) the importer may materialize for a file of `len`
/// bytes: constants decoded or folded, pending elementwise maps, copies of
/// weights into layers, values cloned for tensors used twice. Enough for
/// any model within `tandem_model`'s limits (a `MAX_VALUES` activation's
/// elementwise map is 2^25 values), and proportional to the file beyond
/// that, so a small file cannot make the importer allocate much.
pub fn work_budget(len: usize) -> usize {
    (2 * MAX_VALUES).saturating_add(len.saturating_mul(4))
}

/// A pending elementwise map `y = scale·x + shift` on the current value.
#[derive(Clone, Debug)]
pub(crate) struct Affine {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
    /// The node(s) it came from, for messages.
    pub origin: String,
}

impl Affine {
    fn is_identity(&self) -> bool {
        self.scale.iter().all(|&s| s == 1.0) && self.shift.iter().all(|&t| t == 0.0)
    }
    /// `other ∘ self`.
    fn then(&self, other: &Affine) -> Affine {
        Affine {
            scale: self.scale.iter().zip(&other.scale).map(|(s, a)| a * s).collect(),
            shift: self.shift.iter().zip(other.shift.iter().zip(&other.scale)).map(|(t, (b, a))| a * t + b).collect(),
            origin: format!("{}, {}", self.origin, other.origin),
        }
    }
    /// Per-channel values if uniform over each of `channels` equal blocks.
    fn per_channel(&self, channels: usize) -> Option<(Vec<f64>, Vec<f64>)> {
        let n = self.scale.len();
        if channels == 0 || n % channels != 0 {
            return None;
        }
        let hw = n / channels;
        let mut s = Vec::with_capacity(channels);
        let mut t = Vec::with_capacity(channels);
        for c in 0..channels {
            let (bs, bt) = (&self.scale[c * hw..(c + 1) * hw], &self.shift[c * hw..(c + 1) * hw]);
            if bs.iter().any(|&x| x != bs[0]) || bt.iter().any(|&x| x != bt[0]) {
                return None;
            }
            s.push(bs[0]);
            t.push(bt[0]);
        }
        Some((s, t))
    }
}

/// An input-dependent tensor.
#[derive(Clone, Debug)]
pub(crate) struct Act {
    /// The data input's per-sample dims (a Reshape right after the input may
    /// reinterpret a flat input as an image).
    pub input_dims: Vec<usize>,
    pub layers: Vec<Layer>,
    /// The node that produced each layer.
    pub layer_nodes: Vec<String>,
    /// IR shape after `layers`.
    pub ir: Shape,
    /// ONNX per-sample dims (the batch dimension excluded).
    pub dims: Vec<usize>,
    pub pending: Option<Affine>,
    pub head: Option<(Head, String)>,
    /// Identifies `(input_dims, layers)`: equal ids mean equal stacks.
    pub id: u64,
}

#[derive(Clone, Debug)]
pub(crate) enum Val {
    Const(Const),
    Act(Box<Act>),
}

pub(crate) struct Ctx<'a> {
    pub graph: &'a GraphProto,
    pub opset: i64,
    producer: HashMap<&'a str, usize>,
    inits: HashMap<&'a str, usize>,
    inputs: HashMap<&'a str, &'a ValueInfoProto>,
    memo: HashMap<String, Val>,
    /// Node inputs naming each tensor not yet evaluated: the last use of a
    /// memoized value takes it instead of cloning it.
    uses: HashMap<&'a str, usize>,
    visiting: HashSet<usize>,
    next_id: u64,
    /// What is left of [`work_budget`], and the whole of it (for messages).
    budget: usize,
    budget_total: usize,
    pub data_input: Option<String>,
    pub used_nodes: HashSet<usize>,
    pub notes: Vec<String>,
}

pub(crate) fn node_label(n: &NodeProto, idx: usize) -> String {
    match n.name() {
        "" => format!("#{idx} (unnamed, output {:?})", n.output.first().map(String::as_str).unwrap_or("")),
        name => format!("{name:?}"),
    }
}

/// The op types of the default (`ai.onnx`) domain the importer accepts at all;
/// each is then checked for the forms [`SUPPORTED_OPS`] describes. Public so
/// the fuzz tests build graphs from the same list.
pub const ONNX_OPS: &[&str] = &[
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Conv",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "GlobalMaxPool",
    "BatchNormalization",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "ArgMax",
    "Identity",
    "Dropout",
    "Cast",
    "Constant",
    "Shape",
    "Gather",
    "Concat",
    "Transpose",
    "Slice",
    "Sqrt",
    "Reciprocal",
];

/// The op types of the `ai.onnx.ml` domain the importer accepts.
pub const ONNX_ML_OPS: &[&str] = &["Scaler", "ZipMap", "ArrayFeatureExtractor"];

/// What the importer supports, for refusal messages.
pub const SUPPORTED_OPS: &str = "Gemm, MatMul, Add/Sub/Mul/Div by a constant, Conv (group 1, dilation 1, \
any strides, explicit pads or auto_pad VALID/SAME_UPPER/SAME_LOWER smaller than the kernel), \
AveragePool/GlobalAveragePool (no padding), MaxPool (2-D, dilation 1, any strides, explicit pads or \
auto_pad smaller than the kernel, no Indices output)/GlobalMaxPool, BatchNormalization (folded into the adjacent linear layer), \
Flatten, Reshape, Squeeze, Unsqueeze, Transpose (keeping the batch dimension first; e.g. Keras/tf2onnx \
NHWC <-> NCHW, folded into the adjacent linear layer), Relu, Sigmoid, Tanh, the output heads \
Softmax/LogSoftmax/ArgMax/Sigmoid (one output)/skl2onnx's [1-p, p] Concat, and the plumbing ops \
Identity, Dropout, Cast, Constant, Shape, Gather, Concat, Slice (on constants: tf2onnx's shape arithmetic); \
ai.onnx.ml Scaler, ZipMap, ArrayFeatureExtractor";

struct N<'a> {
    node: &'a NodeProto,
    label: String,
}

impl N<'_> {
    fn op(&self) -> &str {
        self.node.op_type()
    }
    fn err(&self, reason: impl Into<String>) -> ImportError {
        ImportError::Unsupported { op: self.op().to_string(), node: self.label.clone(), reason: reason.into() }
    }
    fn attr(&self, name: &str) -> Option<&crate::proto::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).and_then(|a| a.f).unwrap_or(default)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }
    fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.attr(name).map(|a| a.floats.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.attr(name).and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

fn fmt_dims(d: &[usize]) -> String {
    format!("[{}]", d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
}

/// Normalizes an axis against `rank`.
fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

impl<'a> Ctx<'a> {
    pub fn new(graph: &'a GraphProto, opset: i64, budget: usize) -> Result<Self, ImportError> {
        let mut producer = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                if o.is_empty() {
                    continue;
                }
                if producer.insert(o.as_str(), i).is_some() {
                    return Err(ImportError::Malformed(format!(
                        "tensor {o:?} is produced by two nodes (the second is {})",
                        node_label(n, i)
                    )));
                }
            }
        }
        let inits: HashMap<&str, usize> = graph.initializer.iter().enumerate().map(|(i, t)| (t.name(), i)).collect();
        let inputs = graph.input.iter().filter(|v| !inits.contains_key(v.name())).map(|v| (v.name(), v)).collect();
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for name in graph.node.iter().flat_map(|n| &n.input) {
            *uses.entry(name.as_str()).or_default() += 1;
        }
        Ok(Ctx {
            graph,
            opset,
            producer,
            inits,
            inputs,
            memo: HashMap::new(),
            uses,
            visiting: HashSet::new(),
            next_id: 0,
            budget,
            budget_total: budget,
            data_input: None,
            used_nodes: HashSet::new(),
            notes: Vec::new(),
        })
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn producer_of(&self, name: &str) -> Option<&'a NodeProto> {
        self.producer.get(name).map(|&i| &self.graph.node[i])
    }

    /// Takes `n` values out of the work budget (`what` names them).
    fn spend(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<(), ImportError> {
        match self.budget.checked_sub(n) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(ImportError::Malformed(format!(
                "importing this file needs more than {} values of working memory ({} for {}); \
                 it is larger, or expands its constants more, than any model tandem can serve",
                self.budget_total,
                n,
                what()
            ))),
        }
    }

    /// The value of tensor `name`; `consumer` names who asked, for messages.
    ///
    /// Nodes are evaluated with an explicit stack rather than by recursion,
    /// in the order a depth-first recursion would take (a node's op is
    /// checked before its inputs are evaluated, inputs in order), so a graph
    /// of any depth cannot exhaust the thread's stack.
    pub fn eval(&mut self, name: &str, consumer: &str) -> Result<Val, ImportError> {
        struct Frame<'g> {
            idx: usize,
            /// The output of this node its parent asked for.
            wanted: &'g str,
            /// Who asked (for messages), and this node as a consumer.
            asked_by: String,
            me: String,
            ins: Vec<Option<Val>>,
        }
        if !self.memo.contains_key(name) && !self.compute_leaf(name, consumer)? {
            let mut stack: Vec<Frame<'a>> = Vec::new();
            let root = *self.producer.get(name).expect("compute_leaf found a producer");
            let root_name = self.graph.node[root].output.iter().find(|o| *o == name).expect("produces it");
            let me = self.start_node(root)?;
            stack.push(Frame { idx: root, wanted: root_name, asked_by: consumer.to_string(), me, ins: Vec::new() });
            while let Some(top) = stack.last_mut() {
                let node: &'a NodeProto = &self.graph.node[top.idx];
                if let Some(input) = node.input.get(top.ins.len()) {
                    if input.is_empty() {
                        top.ins.push(None);
                        continue;
                    }
                    let me = top.me.clone();
                    if self.memo.contains_key(input.as_str()) || self.compute_leaf(input, &me)? {
                        let v = self.take(input)?;
                        stack.last_mut().expect("top").ins.push(Some(v));
                    } else {
                        let idx = self.producer[input.as_str()];
                        let child_me = self.start_node(idx)?;
                        stack.push(Frame { idx, wanted: input, asked_by: me, me: child_me, ins: Vec::new() });
                    }
                    continue;
                }
                let frame = stack.pop().expect("top");
                let n = N { node, label: node_label(node, frame.idx) };
                let outs = self.apply(&n, frame.ins)?;
                self.visiting.remove(&frame.idx);
                for (o, v) in node.output.iter().zip(outs) {
                    if let Some(v) = v {
                        self.memo.insert(o.clone(), v);
                    }
                }
                if !self.memo.contains_key(frame.wanted) {
                    return Err(n.err(format!(
                        "its output {:?} (used by {}) is not supported; only the first output is",
                        frame.wanted, frame.asked_by
                    )));
                }
                if !stack.is_empty() {
                    let v = self.take(frame.wanted)?;
                    stack.last_mut().expect("parent").ins.push(Some(v));
                }
            }
        }
        self.take(name)
    }

    /// The memoized value of `name`: moved out on its last use, else a copy
    /// (charged to the budget).
    fn take(&mut self, name: &str) -> Result<Val, ImportError> {
        let last = match self.uses.get_mut(name) {
            Some(u) if *u > 1 => {
                *u -= 1;
                false
            }
            Some(u) => {
                *u = 0;
                true
            }
            None => false,
        };
        if last {
            return Ok(self.memo.remove(name).expect("computed"));
        }
        let v = self.memo.get(name).expect("computed").clone();
        self.spend(weight(&v), || format!("a copy of tensor {name:?}"))?;
        Ok(v)
    }

    /// Puts an initializer or graph input into the memo; `false` if `name`
    /// is produced by a node (an error if by nothing).
    fn compute_leaf(&mut self, name: &str, consumer: &str) -> Result<bool, ImportError> {
        let v = if let Some(&i) = self.inits.get(name) {
            let t = &self.graph.initializer[i];
            let c = Const::from_proto(t, &format!("initializer {name:?}")).map_err(ImportError::Malformed)?;
            self.spend(c.len(), || format!("initializer {name:?}"))?;
            Val::Const(c)
        } else if let Some(vi) = self.inputs.get(name).copied() {
            self.input_value(vi)?
        } else if self.producer.contains_key(name) {
            return Ok(false);
        } else {
            return Err(ImportError::Malformed(format!(
                "tensor {name:?}, used by {consumer}, is not produced by any node, initializer or graph input"
            )));
        };
        self.memo.insert(name.to_string(), v);
        Ok(true)
    }

    fn input_value(&mut self, vi: &ValueInfoProto) -> Result<Val, ImportError> {
        let name = vi.name().to_string();
        if let Some(other) = &self.data_input {
            return Err(ImportError::UnsupportedTensor {
                what: "graph input",
                name: name.clone(),
                reason: format!("the followed output depends on two graph inputs ({other:?} and {name:?}); tandem models take one input tensor"),
            });
        }
        let bad = |reason: String| ImportError::UnsupportedTensor { what: "graph input", name: name.clone(), reason };
        let Some(type_proto::Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(bad("is not a tensor".into()));
        };
        let et = tt.elem_type.unwrap_or(0);
        if et != DT_FLOAT && et != DT_DOUBLE {
            return Err(bad(format!(
                "has element type {}; tandem takes real-valued (FLOAT/DOUBLE) features",
                crate::tensor::dtype_name(et)
            )));
        }
        let shape = tt.shape.as_ref().ok_or_else(|| bad("has no declared shape".into()))?;
        if shape.dim.len() < 2 {
            return Err(bad(format!(
                "has rank {}; tandem expects a batch dimension followed by the features ([N, features] or [N, C, H, W])",
                shape.dim.len()
            )));
        }
        use crate::proto::tensor_shape_proto::dimension::Value as D;
        let mut dims = Vec::new();
        for (k, d) in shape.dim.iter().enumerate().skip(1) {
            match &d.value {
                Some(D::DimValue(v)) if *v > 0 => dims.push(*v as usize),
                Some(D::DimParam(p)) => {
                    return Err(bad(format!("dimension {k} is symbolic ({p:?}); only the batch dimension may be")))
                }
                _ => return Err(bad(format!("dimension {k} is unknown or not positive"))),
            }
        }
        if dims.len() > MAX_RANK || numel(&dims) > MAX_VALUES {
            return Err(bad(format!(
                "has per-sample shape {dims:?}; tandem takes at most {MAX_VALUES} input features (rank at most {MAX_RANK})"
            )));
        }
        // [C, H, W] is an image; any other per-sample shape is read as its
        // flattened vector (a Flatten/Reshape must come before a dense layer).
        let ir = match dims[..] {
            [c, h, w] => Shape::Image(c, h, w),
            _ => Shape::Vector(numel(&dims)),
        };
        self.data_input = Some(name);
        let id = self.fresh();
        Ok(Val::Act(Box::new(Act {
            input_dims: dims.clone(),
            layers: Vec::new(),
            layer_nodes: Vec::new(),
            ir,
            dims,
            pending: None,
            head: None,
            id,
        })))
    }

    /// Enters node `idx`: refuses a cycle and an unsupported op before any
    /// of its inputs is evaluated. Returns its name as a consumer.
    fn start_node(&mut self, idx: usize) -> Result<String, ImportError> {
        let node: &'a NodeProto = &self.graph.node[idx];
        let n = N { node, label: node_label(node, idx) };
        if !self.visiting.insert(idx) {
            return Err(ImportError::Malformed(format!("the graph has a cycle through {}", n.label)));
        }
        self.used_nodes.insert(idx);
        let domain = node.domain();
        let me = format!("node {} ({})", n.label, n.op());
        let check_op = |ok: bool| -> Result<(), ImportError> {
            if ok {
                Ok(())
            } else {
                Err(ImportError::UnsupportedOp {
                    op: if domain.is_empty() { n.op().to_string() } else { format!("{domain}.{}", n.op()) },
                    node: n.label.clone(),
                })
            }
        };
        match domain {
            "" | "ai.onnx" => check_op(ONNX_OPS.contains(&n.op()))?,
            "ai.onnx.ml" => check_op(ONNX_ML_OPS.contains(&n.op()))?,
            _ => check_op(false)?,
        }
        Ok(me)
    }

    fn act_of(&self, n: &N, v: Val) -> Result<Box<Act>, ImportError> {
        match v {
            Val::Act(a) => Ok(a),
            Val::Const(_) => Err(n.err("expected an input-dependent tensor here, got a constant")),
        }
    }

    fn apply(&mut self, n: &N, mut ins: Vec<Option<Val>>) -> Result<Vec<Option<Val>>, ImportError> {
        let op = n.op().to_string();
        let n_in = ins.len();
        let input = |ins: &mut Vec<Option<Val>>, k: usize| -> Result<Val, ImportError> {
            ins.get_mut(k).and_then(Option::take).ok_or_else(|| n.err(format!("input {k} is missing")))
        };
        let opt_const = |ins: &mut Vec<Option<Val>>, k: usize, what: &str| -> Result<Option<Const>, ImportError> {
            match ins.get_mut(k).and_then(Option::take) {
                None => Ok(None),
                Some(Val::Const(c)) => Ok(Some(c)),
                Some(Val::Act(_)) => Err(
                    n.err(format!("its {what} (input {k}) is computed from the model input; tandem needs it constant"))
                ),
            }
        };
        let one = |v: Val| Ok(vec![Some(v)]);
        let all_const = ins.iter().all(|v| !matches!(v, Some(Val::Act(_))));

        // Plumbing that is the same on constants and activations.
        match op.as_str() {
            "Constant" => return one(Val::Const(constant_value(n)?)),
            "Identity" => return one(input(&mut ins, 0)?),
            "Dropout" => {
                let v = input(&mut ins, 0)?;
                return Ok(vec![Some(v), None]);
            }
            _ => {}
        }
        if all_const {
            let c = self.fold_const(n, &mut ins)?;
            return one(Val::Const(c));
        }

        match op.as_str() {
            "Cast" => {
                let to = n.int("to", 0) as i32;
                let a = self.act_of(n, input(&mut ins, 0)?)?;
                let ok = to == DT_FLOAT || to == DT_DOUBLE || (a.head.is_some() && to == DT_INT64);
                if !ok {
                    return Err(n.err(format!(
                        "casts the activations to {}; only casts to FLOAT/DOUBLE (or of the predicted label to INT64) keep the values",
                        crate::tensor::dtype_name(to)
                    )));
                }
                one(Val::Act(a))
            }
            "Gemm" => {
                if n.int("transA", 0) != 0 {
                    return Err(n.err("transA = 1 (the input transposed) is not supported"));
                }
                let a = self.act_of(n, input(&mut ins, 0)?)?;
                let b = opt_const(&mut ins, 1, "weight B")?.ok_or_else(|| n.err("input B is missing"))?;
                let c = opt_const(&mut ins, 2, "bias C")?;
                if b.dims.len() != 2 {
                    return Err(n.err(format!("weight B has shape {}; expected a matrix", fmt_dims(&b.dims))));
                }
                let trans_b = n.int("transB", 0) != 0;
                let (alpha, beta) = (n.float("alpha", 1.0) as f64, n.float("beta", 1.0) as f64);
                let (outs, ins_) = if trans_b { (b.dims[0], b.dims[1]) } else { (b.dims[1], b.dims[0]) };
                // Before anything is sized by B: an empty B may claim any number of outputs.
                self.check_dense_input(n, &a, ins_)?;
                self.spend(2 * b.len() + 2 * outs, || format!("the weights of {}", n.label))?;
                let bv = b.as_f64();
                let w: Vec<f64> = (0..outs)
                    .flat_map(|j| (0..ins_).map(move |i| (j, i)))
                    .map(|(j, i)| alpha * if trans_b { bv[j * ins_ + i] } else { bv[i * outs + j] })
                    .collect();
                let bias = match c {
                    None => vec![0.0; outs],
                    Some(c) => c
                        .expand_to(&[1, outs])
                        .ok_or_else(|| {
                            n.err(format!("bias C of shape {} does not broadcast to [N, {outs}]", fmt_dims(&c.dims)))
                        })?
                        .into_iter()
                        .map(|v| beta * v)
                        .collect(),
                };
                let mut a = a;
                self.dense(n, &mut a, ins_, outs, w, bias)?;
                one(Val::Act(a))
            }
            "MatMul" => {
                let x = input(&mut ins, 0)?;
                let Val::Act(mut a) = x else {
                    return Err(n.err("multiplies a constant by the activations (constant on the left); tandem supports activations · constant"));
                };
                let b = opt_const(&mut ins, 1, "weight")?.ok_or_else(|| n.err("input B is missing"))?;
                if b.dims.len() != 2 {
                    return Err(n.err(format!("weight has shape {}; expected a matrix [in, out]", fmt_dims(&b.dims))));
                }
                let (ins_, outs) = (b.dims[0], b.dims[1]);
                self.check_dense_input(n, &a, ins_)?;
                self.spend(2 * b.len() + 2 * outs, || format!("the weights of {}", n.label))?;
                let bv = b.as_f64();
                let w: Vec<f64> =
                    (0..outs).flat_map(|j| (0..ins_).map(move |i| (j, i))).map(|(j, i)| bv[i * outs + j]).collect();
                self.dense(n, &mut a, ins_, outs, w, vec![0.0; outs])?;
                one(Val::Act(a))
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let (x, y) = (input(&mut ins, 0)?, input(&mut ins, 1)?);
                let (a, c, act_first) = match (x, y) {
                    (Val::Act(a), Val::Const(c)) => (a, c, true),
                    (Val::Const(c), Val::Act(a)) => (a, c, false),
                    _ => {
                        return Err(n.err(format!(
                            "{}s two tensors that both depend on the model input (e.g. a residual connection); \
                             tandem supports {op} with a constant only",
                            op.to_lowercase()
                        )))
                    }
                };
                let mut full = vec![1];
                full.extend_from_slice(&a.dims);
                self.spend(2 * numel(&full), || format!("the elementwise map of {}", n.label))?;
                let cv = c.expand_to(&full).ok_or_else(|| {
                    n.err(format!(
                        "its constant of shape {} does not broadcast to the activations' shape {}",
                        fmt_dims(&c.dims),
                        fmt_dims(&full)
                    ))
                })?;
                let len = cv.len();
                let (scale, shift) = match (op.as_str(), act_first) {
                    ("Add", _) => (vec![1.0; len], cv),
                    ("Sub", true) => (vec![1.0; len], cv.iter().map(|v| -v).collect()),
                    ("Sub", false) => (vec![-1.0; len], cv),
                    ("Mul", _) => (cv, vec![0.0; len]),
                    ("Div", true) => {
                        if cv.contains(&0.0) {
                            return Err(n.err("divides by a constant containing zero"));
                        }
                        (cv.iter().map(|v| 1.0 / v).collect(), vec![0.0; len])
                    }
                    _ => return Err(n.err("divides a constant by the activations (not an affine map)")),
                };
                let mut a = a;
                self.affine(n, &mut a, Affine { scale, shift, origin: format!("node {} ({op})", n.label) })?;
                one(Val::Act(a))
            }
            "Neg" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let len = numel(&a.dims);
                self.spend(2 * len, || format!("the elementwise map of {}", n.label))?;
                self.affine(
                    n,
                    &mut a,
                    Affine { scale: vec![-1.0; len], shift: vec![0.0; len], origin: format!("node {} (Neg)", n.label) },
                )?;
                one(Val::Act(a))
            }
            "Scaler" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let len = numel(&a.dims);
                self.spend(4 * len, || format!("the elementwise map of {}", n.label))?;
                let offset = n.floats("offset").unwrap_or_default();
                let scale = n.floats("scale").unwrap_or_default();
                let last = *a.dims.last().unwrap_or(&1);
                let pick = |v: &[f32], default: f64, what: &str| -> Result<Vec<f64>, ImportError> {
                    match v.len() {
                        0 => Ok(vec![default; len]),
                        1 => Ok(vec![v[0] as f64; len]),
                        k if k == last => Ok((0..len).map(|i| v[i % last] as f64).collect()),
                        k => Err(n.err(format!("{what} has {k} values for {last} features"))),
                    }
                };
                let (o, s) = (pick(&offset, 0.0, "offset")?, pick(&scale, 1.0, "scale")?);
                let shift = o.iter().zip(&s).map(|(o, s)| -o * s).collect();
                self.affine(n, &mut a, Affine { scale: s, shift, origin: format!("node {} (Scaler)", n.label) })?;
                one(Val::Act(a))
            }
            "BatchNormalization" => {
                if n.int("training_mode", 0) != 0 {
                    return Err(n.err("training_mode = 1; export the model in inference (eval) mode"));
                }
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let mut p = Vec::new();
                for (k, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
                    p.push(
                        opt_const(&mut ins, k, what)?
                            .ok_or_else(|| n.err(format!("input {what} is missing")))?
                            .as_f64(),
                    );
                }
                let eps = n.float("epsilon", 1e-5) as f64;
                let c = *a.dims.first().filter(|&&c| c > 0).ok_or_else(|| n.err("needs a channel dimension"))?;
                if p.iter().any(|v| v.len() != c) {
                    return Err(n.err(format!("parameters do not have {c} channels")));
                }
                let len = numel(&a.dims);
                self.spend(2 * len, || format!("the elementwise map of {}", n.label))?;
                let per = len / c;
                let (mut scale, mut shift) = (Vec::with_capacity(len), Vec::with_capacity(len));
                for (((gamma, beta), mean), var) in p[0].iter().zip(&p[1]).zip(&p[2]).zip(&p[3]) {
                    let s = gamma / (var + eps).sqrt();
                    let t = beta - mean * s;
                    scale.extend(std::iter::repeat_n(s, per));
                    shift.extend(std::iter::repeat_n(t, per));
                }
                self.affine(
                    n,
                    &mut a,
                    Affine { scale, shift, origin: format!("node {} (BatchNormalization)", n.label) },
                )?;
                // Outputs 2.. (running statistics) only exist in training mode.
                one(Val::Act(a))
            }
            "Conv" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let w = opt_const(&mut ins, 1, "weight")?.ok_or_else(|| n.err("input W is missing"))?;
                let b = opt_const(&mut ins, 2, "bias")?;
                self.conv(n, &mut a, w, b)?;
                one(Val::Act(a))
            }
            "AveragePool" | "GlobalAveragePool" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                self.avgpool(n, &mut a)?;
                one(Val::Act(a))
            }
            "MaxPool" | "GlobalMaxPool" => {
                if n.node.output.get(1).is_some_and(|o| !o.is_empty()) {
                    return Err(n.err("its Indices output is used; tandem computes the max values only"));
                }
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                self.maxpool(n, &mut a)?;
                one(Val::Act(a))
            }
            "Relu" | "Sigmoid" | "Tanh" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let kind = match op.as_str() {
                    "Relu" => ActivationKind::Relu,
                    "Sigmoid" => ActivationKind::Sigmoid,
                    _ => ActivationKind::Tanh,
                };
                self.activation(n, &mut a, kind)?;
                one(Val::Act(a))
            }
            "Softmax" | "LogSoftmax" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let rank = a.dims.len() + 1;
                let default_axis = if self.opset >= 13 { -1 } else { 1 };
                let ax = axis(n.int("axis", default_axis), rank).ok_or_else(|| n.err("axis out of range"))?;
                let ok = if self.opset >= 13 { ax == rank - 1 && rank == 2 } else { ax == 1 };
                if !ok {
                    return Err(n.err(format!(
                        "normalizes over axis {ax} of a rank-{rank} tensor; tandem's head normalizes over all outputs of one sample"
                    )));
                }
                self.head_ready(n, &a)?;
                a.head = Some((if op == "Softmax" { Head::Softmax } else { Head::LogSoftmax }, n.label.clone()));
                one(Val::Act(a))
            }
            "ArgMax" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let rank = a.dims.len() + 1;
                let ax = axis(n.int("axis", 0), rank).ok_or_else(|| n.err("axis out of range"))?;
                if !(rank == 2 && ax == 1) {
                    return Err(n.err(format!("takes the arg-max over axis {ax} of a rank-{rank} tensor; tandem's head needs axis 1 of [N, classes]")));
                }
                if n.int("select_last_index", 0) != 0 {
                    return Err(n.err("select_last_index = 1; tandem breaks ties by the first index"));
                }
                match &a.head {
                    None => {
                        self.head_ready(n, &a)?;
                        if a.ir.len() == 1 {
                            return Err(n.err("takes the arg-max of a single output (always 0)"));
                        }
                    }
                    Some((Head::Softmax | Head::LogSoftmax | Head::SigmoidPair, _)) => {}
                    Some((h, at)) => return Err(n.err(format!("follows the {h:?} head at node {at}"))),
                }
                a.head = Some((Head::ArgMax, n.label.clone()));
                a.dims = if n.int("keepdims", 1) != 0 { vec![1] } else { vec![] };
                one(Val::Act(a))
            }
            "Concat" => {
                let vals: Vec<Val> = (0..n_in).map(|k| input(&mut ins, k)).collect::<Result<_, _>>()?;
                let rank = vals
                    .iter()
                    .find_map(|v| if let Val::Act(a) = v { Some(a.dims.len() + 1) } else { None })
                    .unwrap_or(2);
                let ax = axis(n.int("axis", 1), rank);
                let pair = match (&vals[..], ax) {
                    ([Val::Act(q), Val::Act(p)], Some(1)) if rank == 2 => self.sigmoid_pair(q, p),
                    _ => false,
                };
                if !pair {
                    return Err(n.err(
                        "concatenates input-dependent tensors; tandem supports Concat on activations only as \
                         skl2onnx's binary-classifier pattern Concat(1 - sigmoid(z), sigmoid(z)) on axis 1",
                    ));
                }
                let Val::Act(mut p) = vals.into_iter().nth(1).expect("two inputs") else { unreachable!() };
                p.head = Some((Head::SigmoidPair, n.label.clone()));
                p.dims = vec![2];
                one(Val::Act(p))
            }
            "ZipMap" => {
                let a = self.act_of(n, input(&mut ins, 0)?)?;
                if !matches!(a.head, Some((Head::Softmax | Head::SigmoidPair, _))) {
                    return Err(n.err("ZipMap is only followed on class probabilities (after Softmax)"));
                }
                self.notes.push(format!("ZipMap node {} read as its input tensor (class-index order)", n.label));
                one(Val::Act(a))
            }
            "ArrayFeatureExtractor" => {
                let x = input(&mut ins, 0)?;
                let y = input(&mut ins, 1)?;
                match (x, y) {
                    (Val::Const(classes), Val::Act(a)) if matches!(a.head, Some((Head::ArgMax, _))) => {
                        let ok = classes
                            .as_i64()
                            .map(|c| c.iter().enumerate().all(|(i, &v)| v == i as i64))
                            .unwrap_or(false);
                        if !ok {
                            return Err(n.err("maps class indices to labels other than 0, 1, …, n-1; tandem's label is the class index"));
                        }
                        one(Val::Act(a))
                    }
                    _ => {
                        Err(n
                            .err("only skl2onnx's label lookup ArrayFeatureExtractor(classes, ArgMax(…)) is supported"))
                    }
                }
            }
            "Flatten" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let rank = a.dims.len() + 1;
                let ax = axis(n.int("axis", 1), rank + 1).ok_or_else(|| n.err("axis out of range"))?;
                if ax != 1 {
                    return Err(n.err(format!("axis = {ax}; tandem flattens each sample (axis = 1)")));
                }
                let len = numel(&a.dims);
                self.set_dims(n, &mut a, vec![len])?;
                one(Val::Act(a))
            }
            "Reshape" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let shape = opt_const(&mut ins, 1, "shape")?.ok_or_else(|| n.err("input shape is missing"))?;
                let target = shape.as_i64().ok_or_else(|| n.err("shape is not integer"))?;
                let mut full = vec![1usize];
                full.extend_from_slice(&a.dims);
                let out = resolve_reshape(&full, &target, n.int("allowzero", 0) != 0).map_err(|e| n.err(e))?;
                if a.head.is_some() {
                    // After the head only the layout changes (e.g. the label reshaped to [N]).
                    a.dims = out.get(1..).map(<[usize]>::to_vec).unwrap_or_default();
                    return one(Val::Act(a));
                }
                if out.first() != Some(&1) {
                    return Err(n.err(format!(
                        "reshapes to {} (with batch size 1), which mixes the batch dimension into the features; \
                         keep the batch dimension first (e.g. [-1, features] or [N, C, H, W])",
                        fmt_dims(&out)
                    )));
                }
                self.set_dims(n, &mut a, out[1..].to_vec())?;
                one(Val::Act(a))
            }
            "Squeeze" | "Unsqueeze" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                let axes = match opt_const(&mut ins, 1, "axes")? {
                    Some(c) => Some(c.as_i64().ok_or_else(|| n.err("axes are not integers"))?),
                    None => n.ints("axes"),
                };
                let unsq = op == "Unsqueeze";
                let mut full = vec![1usize];
                full.extend_from_slice(&a.dims);
                let per_sample = match &axes {
                    None if !unsq => a.dims.iter().copied().filter(|&d| d != 1).collect(),
                    _ => {
                        let out = squeeze_dims(&full, axes.as_deref(), unsq).map_err(|e| n.err(e))?;
                        let r = if unsq { out.len() } else { full.len() };
                        let touches_batch = axes.iter().flatten().any(|&x| axis(x, r) == Some(0));
                        if touches_batch {
                            if a.head.is_some() {
                                a.dims = vec![];
                                return one(Val::Act(a));
                            }
                            return Err(n.err("removes or moves the batch dimension"));
                        }
                        out[1..].to_vec()
                    }
                };
                if a.head.is_some() {
                    a.dims = per_sample;
                    return one(Val::Act(a));
                }
                self.set_dims(n, &mut a, per_sample)?;
                one(Val::Act(a))
            }
            "Transpose" => {
                let mut a = self.act_of(n, input(&mut ins, 0)?)?;
                self.transpose(n, &mut a)?;
                one(Val::Act(a))
            }
            "Shape" => {
                let a = self.act_of(n, input(&mut ins, 0)?)?;
                let mut full: Vec<i64> = vec![1];
                full.extend(a.dims.iter().map(|&d| d as i64));
                let r = full.len() as i64;
                let clampi = |v: i64| -> usize { (if v < 0 { v + r } else { v }).clamp(0, r) as usize };
                let start = clampi(n.int("start", 0));
                let end = clampi(n.int("end", r));
                let part = full[start..end.max(start)].to_vec();
                let l = part.len();
                one(Val::Const(Const::ints(part, vec![l])))
            }
            _ => Err(n.err(format!("{op} on the input-dependent tensor is not supported"))),
        }
    }

    /// Operations on constants only. A result may be at most as large as
    /// its inputs together (or 2^20 values), so folding never amplifies a
    /// small file into a huge constant; the work budget bounds the total.
    fn fold_const(&mut self, n: &N, ins: &mut [Option<Val>]) -> Result<Const, ImportError> {
        let in_total = ins
            .iter()
            .map(|v| if let Some(Val::Const(c)) = v { c.len() } else { 0 })
            .fold(0usize, usize::saturating_add);
        let limit = in_total.clamp(1 << 20, MAX_CONST_VALUES);
        let out = self.fold_const_within(n, ins, limit)?;
        check_dims(&out.dims, MAX_CONST_VALUES, "the folded constant").map_err(|e| n.err(e))?;
        self.spend(out.len(), || format!("the constant computed by {}", n.label))?;
        Ok(out)
    }

    fn fold_const_within(&mut self, n: &N, ins: &mut [Option<Val>], limit: usize) -> Result<Const, ImportError> {
        let c = |ins: &mut [Option<Val>], k: usize| -> Result<Const, ImportError> {
            match ins.get_mut(k).and_then(Option::take) {
                Some(Val::Const(c)) => Ok(c),
                _ => Err(n.err(format!("input {k} is missing"))),
            }
        };
        let e = |m: String| n.err(m);
        Ok(match n.op() {
            "Cast" => c(ins, 0)?.cast(n.int("to", 0) as i32).map_err(e)?,
            "Shape" => {
                let x = c(ins, 0)?;
                let v: Vec<i64> = x.dims.iter().map(|&d| d as i64).collect();
                let l = v.len();
                Const::ints(v, vec![l])
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let sym = match n.op() {
                    "Add" => '+',
                    "Sub" => '-',
                    "Mul" => '*',
                    _ => '/',
                };
                c(ins, 0)?.binary(&c(ins, 1)?, sym, limit).map_err(e)?
            }
            "Neg" => c(ins, 0)?.map_f(|x| -x),
            "Sqrt" => c(ins, 0)?.map_f(f64::sqrt),
            "Reciprocal" => c(ins, 0)?.map_f(|x| 1.0 / x),
            "Gather" => {
                let data = c(ins, 0)?;
                let idx = c(ins, 1)?;
                let ax = axis(n.int("axis", 0), data.dims.len()).ok_or_else(|| n.err("axis out of range"))?;
                data.gather(&idx, ax, limit).map_err(e)?
            }
            "Unsqueeze" | "Squeeze" => {
                let x = c(ins, 0)?;
                let axes = match ins.get_mut(1).and_then(Option::take) {
                    Some(Val::Const(a)) => Some(a.as_i64().ok_or_else(|| n.err("axes are not integers"))?),
                    _ => n.ints("axes"),
                };
                let dims = squeeze_dims(&x.dims, axes.as_deref(), n.op() == "Unsqueeze").map_err(e)?;
                x.reshape(dims)
            }
            "Concat" => {
                let parts: Vec<Const> = (0..ins.len()).map(|k| c(ins, k)).collect::<Result<_, _>>()?;
                let r = parts.first().map(|p| p.dims.len()).unwrap_or(1);
                let ax = axis(n.int("axis", 0), r).ok_or_else(|| n.err("axis out of range"))?;
                Const::concat(&parts, ax, limit).map_err(e)?
            }
            "Reshape" => {
                let x = c(ins, 0)?;
                let s = c(ins, 1)?.as_i64().ok_or_else(|| n.err("shape is not integer"))?;
                let dims = resolve_reshape(&x.dims, &s, n.int("allowzero", 0) != 0).map_err(e)?;
                x.reshape(dims)
            }
            "Flatten" => {
                let x = c(ins, 0)?;
                let ax = axis(n.int("axis", 1), x.dims.len() + 1).ok_or_else(|| n.err("axis out of range"))?;
                let dims = vec![numel(&x.dims[..ax]), numel(&x.dims[ax..])];
                x.reshape(dims)
            }
            "Slice" => {
                // tf2onnx's Flatten computes the target shape with Shape ->
                // Slice -> Concat; only constants are sliced.
                let mut x = c(ins, 0)?;
                let ints = |v: Option<Const>, what: &str| -> Result<Option<Vec<i64>>, ImportError> {
                    v.map(|c| c.as_i64().ok_or_else(|| n.err(format!("{what} are not integers")))).transpose()
                };
                let opt = |ins: &mut [Option<Val>], k: usize| match ins.get_mut(k).and_then(Option::take) {
                    Some(Val::Const(c)) => Some(c),
                    _ => None,
                };
                let (starts, ends, axes, steps) = if self.opset < 10 {
                    (n.ints("starts"), n.ints("ends"), n.ints("axes"), None)
                } else {
                    let (s, e, a, st) = (opt(ins, 1), opt(ins, 2), opt(ins, 3), opt(ins, 4));
                    (ints(s, "starts")?, ints(e, "ends")?, ints(a, "axes")?, ints(st, "steps")?)
                };
                let (starts, ends) = match (starts, ends) {
                    (Some(s), Some(e)) if s.len() == e.len() => (s, e),
                    _ => return Err(n.err("starts and ends are missing or of different lengths")),
                };
                let rank = x.dims.len();
                let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
                if axes.len() != starts.len() || steps.len() != starts.len() {
                    return Err(n.err("starts, ends, axes and steps differ in length"));
                }
                for k in 0..starts.len() {
                    let ax = axis(axes[k], rank).ok_or_else(|| n.err(format!("axis {} out of range", axes[k])))?;
                    let d = x.dims[ax] as i64;
                    let step = steps[k];
                    if step == 0 {
                        return Err(n.err("a step of 0"));
                    }
                    let clampi = |v: i64, lo: i64, hi: i64| (if v < 0 { v.saturating_add(d) } else { v }).clamp(lo, hi);
                    let idx: Vec<i64> = if step > 0 {
                        let (s, e) = (clampi(starts[k], 0, d), clampi(ends[k], 0, d));
                        (s..e).step_by(step as usize).collect()
                    } else {
                        let (s, e) = (clampi(starts[k], -1, d - 1), clampi(ends[k], -1, d - 1));
                        let mut v = Vec::new();
                        let mut i = s;
                        while i > e {
                            v.push(i);
                            i = i.saturating_add(step);
                        }
                        v
                    };
                    let l = idx.len();
                    x = x.gather(&Const::ints(idx, vec![l]), ax, limit).map_err(e)?;
                }
                x
            }
            "Transpose" => {
                let x = c(ins, 0)?;
                let perm: Vec<usize> = match n.ints("perm") {
                    Some(p) => p.iter().map(|&v| v as usize).collect(),
                    None => (0..x.dims.len()).rev().collect(),
                };
                x.transpose(&perm).map_err(e)?
            }
            op => {
                return Err(
                    n.err(format!("{op} on constants only (it does not depend on the model input) is not supported"))
                )
            }
        })
    }

    /// Checks a head (Softmax/ArgMax) may apply now.
    fn head_ready(&self, n: &N, a: &Act) -> Result<(), ImportError> {
        if let Some((h, at)) = &a.head {
            return Err(n.err(format!("follows the {h:?} output head at node {at}")));
        }
        if let Some(p) = &a.pending {
            return Err(n.err(format!(
                "follows the elementwise op(s) {} that could not be folded into a linear layer",
                p.origin
            )));
        }
        match last_non_flatten(a) {
            Some((l, _)) if l.is_linear() => Ok(()),
            Some((l, at)) => Err(n.err(format!(
                "follows {} ({}) without a linear layer in between; the output head must come right after the last linear layer",
                at,
                l.describe()
            ))),
            None => Err(n.err("applies to the raw input; there is no linear layer before it")),
        }
    }

    fn push(&mut self, n: &N, a: &mut Act, layer: Layer) -> Result<(), ImportError> {
        a.ir = layer.output_shape(a.ir).map_err(|e| n.err(format!("{} {e}", layer.describe())))?;
        if a.ir.len() > MAX_VALUES {
            return Err(n.err(format!(
                "{} outputs {:?}, more than the {MAX_VALUES} values tandem allows per layer",
                layer.describe(),
                a.ir.dims()
            )));
        }
        a.layers.push(layer);
        a.layer_nodes.push(format!("node {} ({})", n.label, n.op()));
        a.id = self.fresh();
        Ok(())
    }

    /// Transpose of an input-dependent tensor: a fixed permutation of each
    /// sample's flattened values (the batch dimension must stay first). An
    /// identity on the data (a transpose that only moves dimensions of
    /// size 1) only relabels the dims; otherwise an IR permute layer, which
    /// quantization folds into the adjacent linear layer exactly.
    fn transpose(&mut self, n: &N, a: &mut Act) -> Result<(), ImportError> {
        self.no_head(n, a)?;
        let rank = a.dims.len() + 1;
        let perm: Vec<i64> = n.ints("perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
        let mut seen = vec![false; rank];
        let mut p = Vec::with_capacity(rank);
        for &v in &perm {
            match axis(v, rank) {
                Some(x) if !seen[x] => {
                    seen[x] = true;
                    p.push(x);
                }
                _ => {
                    return Err(n.err(format!(
                        "perm = {perm:?} is not a permutation of the {rank} axes of a tensor of shape {}",
                        fmt_dims(&[&[1usize][..], &a.dims[..]].concat())
                    )))
                }
            }
        }
        if p.len() != rank {
            return Err(n.err(format!("perm = {perm:?} has {} axes; the tensor has {rank}", p.len())));
        }
        if p[0] != 0 {
            return Err(n.err(format!(
                "perm = {perm:?} moves the batch dimension; tandem supports transposes that keep it first \
                 (e.g. NHWC <-> NCHW: [0, 3, 1, 2] or [0, 2, 3, 1])"
            )));
        }
        // Per-sample axes: new axis i is old axis q[i].
        let q: Vec<usize> = p[1..].iter().map(|&x| x - 1).collect();
        let old = a.dims.clone();
        let new_dims: Vec<usize> = q.iter().map(|&x| old[x]).collect();
        let len = numel(&old);
        self.spend(2 * len, || format!("the permutation of {}", n.label))?;
        // Row-major strides of the old layout.
        let mut stride = vec![1usize; old.len()];
        for i in (0..old.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * old[i + 1];
        }
        let mut flat = Vec::with_capacity(len);
        let mut idx = vec![0usize; new_dims.len()];
        for _ in 0..len {
            flat.push(idx.iter().zip(&q).map(|(&i, &ax)| i * stride[ax]).sum::<usize>());
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < new_dims[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        if let Some(pend) = a.pending.as_mut() {
            pend.scale = flat.iter().map(|&k| pend.scale[k]).collect();
            pend.shift = flat.iter().map(|&k| pend.shift[k]).collect();
        }
        let out = match new_dims[..] {
            [c, h, w] => Shape::Image(c, h, w),
            _ => Shape::Vector(len),
        };
        if flat.iter().enumerate().all(|(i, &k)| i == k) {
            // Only size-1 axes moved: the data order is unchanged.
            if a.ir != out {
                a.ir = out;
                if a.layers.is_empty() {
                    a.input_dims = new_dims.clone();
                }
                a.id = self.fresh();
            }
        } else {
            self.push(n, a, Layer::Permute { perm: flat, out })?;
            self.notes.push(format!(
                "Transpose node {} ({perm:?}) kept as a permutation, folded into the adjacent linear layer when quantized",
                n.label
            ));
        }
        a.dims = new_dims;
        Ok(())
    }

    fn ensure_vector(&mut self, n: &N, a: &mut Act) -> Result<(), ImportError> {
        if matches!(a.ir, Shape::Image(..)) {
            self.push(n, a, Layer::Flatten)?;
        }
        Ok(())
    }

    fn no_head(&self, n: &N, a: &Act) -> Result<(), ImportError> {
        match &a.head {
            Some((h, at)) => Err(n.err(format!(
                "comes after the {h:?} output head at node {at}; tandem's head must be the last operation"
            ))),
            None => Ok(()),
        }
    }

    /// Sets ONNX per-sample dims after Flatten/Reshape/Squeeze/Unsqueeze.
    fn set_dims(&mut self, n: &N, a: &mut Act, dims: Vec<usize>) -> Result<(), ImportError> {
        if numel(&dims) != numel(&a.dims) {
            return Err(n.err(format!("changes the element count from {} to {}", numel(&a.dims), numel(&dims))));
        }
        match dims.len() {
            1 => self.ensure_vector(n, a)?,
            3 => {
                let img = Shape::Image(dims[0], dims[1], dims[2]);
                if a.ir != img {
                    if a.layers.is_empty() {
                        // A flat input read as an image: the data layout (CHW) is unchanged.
                        a.input_dims = dims.clone();
                        a.ir = img;
                        a.id = self.fresh();
                    } else if matches!(a.ir, Shape::Vector(_)) {
                        return Err(n.err(format!(
                            "reshapes a vector computed by {} into an image {}; tandem can only do that on the model input",
                            a.layer_nodes.last().map(String::as_str).unwrap_or("?"),
                            fmt_dims(&dims)
                        )));
                    } else {
                        return Err(n.err(format!("reshapes an image into a different image {}", fmt_dims(&dims))));
                    }
                }
            }
            _ => {}
        }
        a.dims = dims;
        Ok(())
    }

    /// Whether `a` can feed a dense layer of `ins` inputs.
    fn check_dense_input(&self, n: &N, a: &Act, ins: usize) -> Result<(), ImportError> {
        self.no_head(n, a)?;
        if a.dims.len() != 1 {
            return Err(n.err(format!(
                "multiplies a tensor of per-sample shape {}; tandem's dense layer takes a vector (flatten it first)",
                fmt_dims(&a.dims)
            )));
        }
        if a.ir.len() != ins {
            return Err(n.err(format!("weight expects {ins} inputs but the tensor has {}", a.ir.len())));
        }
        Ok(())
    }

    /// Appends a dense layer `out × in` (row-major, f64), folding a pending affine map into it.
    fn dense(
        &mut self,
        n: &N,
        a: &mut Act,
        ins: usize,
        outs: usize,
        mut w: Vec<f64>,
        mut b: Vec<f64>,
    ) -> Result<(), ImportError> {
        self.check_dense_input(n, a, ins)?;
        self.ensure_vector(n, a)?;
        self.spend(w.len() + b.len(), || format!("the layer of {}", n.label))?;
        if let Some(p) = a.pending.take() {
            for j in 0..outs {
                let row = &mut w[j * ins..(j + 1) * ins];
                b[j] += row.iter().zip(&p.shift).map(|(w, t)| w * t).sum::<f64>();
                row.iter_mut().zip(&p.scale).for_each(|(w, s)| *w *= s);
            }
            self.notes.push(format!("{} folded into the dense layer at node {}", p.origin, n.label));
        }
        let layer = Layer::Dense {
            inputs: ins,
            outputs: outs,
            weights: w.iter().map(|&v| v as f32).collect(),
            bias: b.iter().map(|&v| v as f32).collect(),
        };
        self.push(n, a, layer)?;
        a.dims = vec![outs];
        Ok(())
    }

    fn conv(&mut self, n: &N, a: &mut Act, w: Const, b: Option<Const>) -> Result<(), ImportError> {
        self.no_head(n, a)?;
        let Shape::Image(c, h, wd) = a.ir else {
            return Err(
                n.err(format!("needs an image [N, C, H, W]; the tensor has per-sample shape {}", fmt_dims(&a.dims)))
            );
        };
        if a.dims.len() != 3 {
            return Err(
                n.err(format!("needs an image [N, C, H, W]; the tensor has per-sample shape {}", fmt_dims(&a.dims)))
            );
        }
        if w.dims.len() != 4 {
            return Err(n.err(format!("weight shape {}: tandem supports 2-D convolutions only", fmt_dims(&w.dims))));
        }
        let group = n.int("group", 1);
        if group != 1 {
            return Err(n.err(format!(
                "group = {group}; tandem supports group = 1 only (no grouped or depthwise convolutions)"
            )));
        }
        if let Some(d) = n.ints("dilations") {
            if d.iter().any(|&x| x != 1) {
                return Err(n.err(format!("dilations = {d:?}; tandem supports dilation 1 only")));
            }
        }
        let (oc, ic, kh, kw) = (w.dims[0], w.dims[1], w.dims[2], w.dims[3]);
        if ic != c {
            return Err(n.err(format!("weight takes {ic} input channels but the tensor has {c}")));
        }
        if let Some(ks) = n.ints("kernel_shape") {
            if ks != [kh as i64, kw as i64] {
                return Err(n.err(format!("kernel_shape {ks:?} does not match the weight's {kh}x{kw}")));
            }
        }
        let strides = n.ints("strides").unwrap_or_else(|| vec![1, 1]);
        if strides.len() != 2 || strides.iter().any(|&s| s < 1) {
            return Err(n.err(format!("strides = {strides:?}")));
        }
        let (sh, sw) = (strides[0] as usize, strides[1] as usize);
        let [pt, pl, pb, pr] = conv_pads(n, [h, wd], [kh, kw], [sh, sw])?;
        let pads = [pt, pl];
        if pt >= kh || pb >= kh || pl >= kw || pr >= kw {
            return Err(n.err(format!(
                "pads [{pt}, {pl}, {pb}, {pr}] are not smaller than the {kh}x{kw} kernel; tandem accepts padding below the kernel size"
            )));
        }
        let bias = match b {
            Some(b) if b.len() == oc => b.as_f64(),
            Some(b) => return Err(n.err(format!("bias has {} values for {oc} output channels", b.len()))),
            None => vec![0.0; oc],
        };
        self.spend(2 * w.len() + 2 * oc, || format!("the weights of {}", n.label))?;
        let mut wv = w.as_f64();
        let mut bias = bias;
        if let Some(p) = a.pending.take() {
            let (s, t) = p.per_channel(c).ok_or_else(|| {
                n.err(format!(
                    "the elementwise op(s) {} vary within a channel and cannot be folded into this convolution",
                    p.origin
                ))
            })?;
            if [pt, pl, pb, pr].iter().any(|&x| x > 0) && t.iter().any(|&x| x != 0.0) {
                return Err(n.err(format!(
                    "the shift from {} cannot be folded into a zero-padded convolution (the padding would be shifted too)",
                    p.origin
                )));
            }
            let k = kh * kw;
            for o in 0..oc {
                for ch in 0..c {
                    let block = &mut wv[(o * c + ch) * k..(o * c + ch + 1) * k];
                    bias[o] += block.iter().sum::<f64>() * t[ch];
                    block.iter_mut().for_each(|x| *x *= s[ch]);
                }
            }
            self.notes.push(format!("{} folded into the convolution at node {}", p.origin, n.label));
        }
        let layer = Layer::Conv2d {
            in_channels: c,
            out_channels: oc,
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: pads,
            padding_end: [pb, pr],
            weights: wv.iter().map(|&v| v as f32).collect(),
            bias: bias.iter().map(|&v| v as f32).collect(),
        };
        self.push(n, a, layer)?;
        a.dims = a.ir.dims();
        Ok(())
    }

    fn avgpool(&mut self, n: &N, a: &mut Act) -> Result<(), ImportError> {
        self.no_head(n, a)?;
        let Shape::Image(c, h, w) = a.ir else {
            return Err(
                n.err(format!("needs an image [N, C, H, W]; the tensor has per-sample shape {}", fmt_dims(&a.dims)))
            );
        };
        let (kernel, stride) = if n.op() == "GlobalAveragePool" {
            ([h, w], [1, 1])
        } else {
            let k = n.ints("kernel_shape").ok_or_else(|| n.err("kernel_shape is missing"))?;
            if k.len() != 2 || k.iter().any(|&x| x < 1) {
                return Err(n.err(format!("kernel_shape = {k:?}; tandem supports 2-D pooling")));
            }
            let s = n.ints("strides").unwrap_or_else(|| vec![1, 1]);
            if s.len() != 2 || s.iter().any(|&x| x < 1) {
                return Err(n.err(format!("strides = {s:?}")));
            }
            if let Some(p) = n.ints("pads") {
                if p.iter().any(|&x| x != 0) {
                    return Err(n.err(format!("pads = {p:?}; tandem's average pooling has no padding")));
                }
            }
            match n.string("auto_pad").as_deref() {
                None | Some("NOTSET") | Some("VALID") | Some("") => {}
                Some(other) => {
                    return Err(n.err(format!("auto_pad = {other}; tandem's average pooling has no padding")))
                }
            }
            if let Some(d) = n.ints("dilations") {
                if d.iter().any(|&x| x != 1) {
                    return Err(n.err(format!("dilations = {d:?}; tandem supports dilation 1 only")));
                }
            }
            let (k, s) = ([k[0] as usize, k[1] as usize], [s[0] as usize, s[1] as usize]);
            if n.int("ceil_mode", 0) != 0 {
                let exact = h >= k[0] && w >= k[1] && (h - k[0]) % s[0] == 0 && (w - k[1]) % s[1] == 0;
                if !exact {
                    return Err(n.err("ceil_mode = 1 adds partial windows here; tandem pools full windows only"));
                }
            }
            (k, s)
        };
        if let Some(p) = a.pending.take() {
            // A per-channel affine map commutes with averaging.
            let (s, t) = p.per_channel(c).ok_or_else(|| {
                n.err(format!(
                    "the elementwise op(s) {} vary within a channel and cannot be moved past the pooling",
                    p.origin
                ))
            })?;
            self.push(n, a, Layer::AvgPool2d { kernel, stride })?;
            let per = a.ir.len() / c;
            a.pending = Some(Affine {
                scale: s.iter().flat_map(|&v| std::iter::repeat_n(v, per)).collect(),
                shift: t.iter().flat_map(|&v| std::iter::repeat_n(v, per)).collect(),
                origin: p.origin,
            });
        } else {
            self.push(n, a, Layer::AvgPool2d { kernel, stride })?;
        }
        a.dims = a.ir.dims();
        Ok(())
    }

    /// MaxPool/GlobalMaxPool → [`Layer::MaxPool2d`] (padding is `−∞`, as in
    /// ONNX: a window takes the max of its in-image cells).
    fn maxpool(&mut self, n: &N, a: &mut Act) -> Result<(), ImportError> {
        self.no_head(n, a)?;
        let Shape::Image(c, h, w) = a.ir else {
            return Err(
                n.err(format!("needs an image [N, C, H, W]; the tensor has per-sample shape {}", fmt_dims(&a.dims)))
            );
        };
        let layer = if n.op() == "GlobalMaxPool" {
            Layer::MaxPool2d { kernel: [h, w], stride: [1, 1], padding: [0, 0], padding_end: [0, 0] }
        } else {
            let k = n.ints("kernel_shape").ok_or_else(|| n.err("kernel_shape is missing"))?;
            if k.len() != 2 || k.iter().any(|&x| !(1..=1 << 20).contains(&x)) {
                return Err(n.err(format!("kernel_shape = {k:?}; tandem supports 2-D pooling")));
            }
            let s = n.ints("strides").unwrap_or_else(|| vec![1, 1]);
            if s.len() != 2 || s.iter().any(|&x| !(1..=1 << 20).contains(&x)) {
                return Err(n.err(format!("strides = {s:?}")));
            }
            if let Some(d) = n.ints("dilations") {
                if d.iter().any(|&x| x != 1) {
                    return Err(n.err(format!("dilations = {d:?}; tandem supports dilation 1 only")));
                }
            }
            let (k, s) = ([k[0] as usize, k[1] as usize], [s[0] as usize, s[1] as usize]);
            let [pt, pl, pb, pr] = conv_pads(n, [h, w], k, s)?;
            if pt >= k[0] || pb >= k[0] || pl >= k[1] || pr >= k[1] {
                return Err(n.err(format!(
                    "pads [{pt}, {pl}, {pb}, {pr}] are not smaller than the {}x{} kernel; tandem accepts padding below the kernel size",
                    k[0], k[1]
                )));
            }
            if n.int("ceil_mode", 0) != 0 {
                let (hp, wp) = (h + pt + pb, w + pl + pr);
                let exact = hp >= k[0] && wp >= k[1] && (hp - k[0]) % s[0] == 0 && (wp - k[1]) % s[1] == 0;
                if !exact {
                    return Err(n.err("ceil_mode = 1 adds partial windows here; tandem pools full windows only"));
                }
            }
            Layer::MaxPool2d { kernel: k, stride: s, padding: [pt, pl], padding_end: [pb, pr] }
        };
        match a.pending.take() {
            None => self.push(n, a, layer)?,
            Some(p) => {
                // max(s·x + t) = s·max(x) + t per channel, for s > 0 only.
                let (sc, t) = p.per_channel(c).filter(|(sc, _)| sc.iter().all(|&v| v > 0.0)).ok_or_else(|| {
                    n.err(format!(
                        "the elementwise op(s) {} are not a positive per-channel scale and shift, so they cannot be moved past the max",
                        p.origin
                    ))
                })?;
                self.push(n, a, layer)?;
                let per = a.ir.len() / c;
                a.pending = Some(Affine {
                    scale: sc.iter().flat_map(|&v| std::iter::repeat_n(v, per)).collect(),
                    shift: t.iter().flat_map(|&v| std::iter::repeat_n(v, per)).collect(),
                    origin: p.origin,
                });
            }
        }
        a.dims = a.ir.dims();
        Ok(())
    }

    fn activation(&mut self, n: &N, a: &mut Act, kind: ActivationKind) -> Result<(), ImportError> {
        self.no_head(n, a)?;
        if let Some(p) = &a.pending {
            return Err(n.err(format!(
                "follows the elementwise op(s) {}, which could not be folded into the preceding linear layer",
                p.origin
            )));
        }
        match last_non_flatten(a) {
            Some((l, _)) if l.is_linear() => {}
            Some((l, at)) => {
                return Err(n.err(format!(
                    "directly follows another activation ({}, {}); tandem needs a linear layer between activations",
                    l.describe(),
                    at
                )))
            }
            None => return Err(n.err("applies to the raw input; tandem needs a linear layer before an activation")),
        }
        self.push(n, a, Layer::Activation(kind))
    }

    /// Applies `y = scale·x + shift`: folded into the last linear layer when
    /// possible, else kept pending for the next one.
    fn affine(&mut self, n: &N, a: &mut Act, f: Affine) -> Result<(), ImportError> {
        if let Some((h, at)) = &a.head {
            return Err(n.err(format!("changes the output of the {h:?} head at node {at}")));
        }
        if f.is_identity() {
            return Ok(());
        }
        let f = match a.pending.take() {
            Some(p) => {
                self.spend(2 * p.scale.len(), || format!("the elementwise map of {}", n.label))?;
                p.then(&f)
            }
            None => f,
        };
        if f.is_identity() {
            return Ok(());
        }
        // Post-fold into the last linear layer (only flattens and permutes
        // after it: the map is carried back through each permute, where
        // value k came from value perm[k]).
        let last = a.layers.iter().rposition(|l| !matches!(l, Layer::Flatten | Layer::Permute { .. }));
        let pending_f = f.clone();
        let mut f = f;
        for l in a.layers[last.map_or(0, |i| i + 1)..].iter().rev() {
            if let Layer::Permute { perm, .. } = l {
                let (mut s, mut t) = (vec![1.0; perm.len()], vec![0.0; perm.len()]);
                for (k, &p) in perm.iter().enumerate() {
                    s[p] = f.scale[k];
                    t[p] = f.shift[k];
                }
                f.scale = s;
                f.shift = t;
            }
        }
        let folded = match last.map(|i| (i, &mut a.layers[i])) {
            Some((_, Layer::Dense { inputs, outputs, weights, bias })) => {
                for j in 0..*outputs {
                    let (s, t) = (f.scale[j], f.shift[j]);
                    weights[j * *inputs..(j + 1) * *inputs].iter_mut().for_each(|w| *w = (*w as f64 * s) as f32);
                    bias[j] = (bias[j] as f64 * s + t) as f32;
                }
                true
            }
            Some((_, Layer::Conv2d { in_channels, out_channels, kernel, weights, bias, .. })) => {
                match f.per_channel(*out_channels) {
                    Some((s, t)) => {
                        let k = *in_channels * kernel[0] * kernel[1];
                        for o in 0..*out_channels {
                            weights[o * k..(o + 1) * k].iter_mut().for_each(|w| *w = (*w as f64 * s[o]) as f32);
                            bias[o] = (bias[o] as f64 * s[o] + t[o]) as f32;
                        }
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if folded {
            let at = a.layer_nodes[last.expect("folded")].clone();
            self.notes.push(format!("{} folded into the layer of {at}", f.origin));
            a.id = self.fresh();
        } else {
            a.pending = Some(pending_f);
        }
        Ok(())
    }

    /// `q = 1 - p` and `p = sigmoid(z)` on one output (skl2onnx's binary head)?
    fn sigmoid_pair(&self, q: &Act, p: &Act) -> bool {
        let last_sigmoid = matches!(p.layers.last(), Some(Layer::Activation(ActivationKind::Sigmoid)));
        let q_is_one_minus =
            q.pending.as_ref().is_some_and(|a| a.scale.iter().all(|&s| s == -1.0) && a.shift.iter().all(|&t| t == 1.0));
        q.id == p.id
            && p.pending.is_none()
            && q_is_one_minus
            && p.head.is_none()
            && q.head.is_none()
            && last_sigmoid
            && p.ir.len() == 1
    }
}

fn last_non_flatten(a: &Act) -> Option<(&Layer, &str)> {
    a.layers
        .iter()
        .zip(&a.layer_nodes)
        .rev()
        .find(|(l, _)| !matches!(l, Layer::Flatten | Layer::Permute { .. }))
        .map(|(l, s)| (l, s.as_str()))
}

/// `[top, left, bottom, right]` zero padding of a Conv node.
fn conv_pads(n: &N, hw: [usize; 2], k: [usize; 2], s: [usize; 2]) -> Result<[usize; 4], ImportError> {
    let auto = n.string("auto_pad").unwrap_or_default();
    match auto.as_str() {
        "" | "NOTSET" => {
            let p = n.ints("pads").unwrap_or_else(|| vec![0; 4]);
            if p.len() != 4 || p.iter().any(|&x| !(0..=1 << 20).contains(&x)) {
                return Err(n.err(format!("pads = {p:?}; expected [top, left, bottom, right], each non-negative")));
            }
            Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
        }
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            // ONNX: output = ceil(in / stride); the odd unit of padding goes
            // at the end (SAME_UPPER, Keras/TensorFlow 'same') or the start.
            let mut out = [0; 4];
            for d in 0..2 {
                let o = hw[d].div_ceil(s[d]);
                let total = ((o - 1) * s[d] + k[d]).saturating_sub(hw[d]);
                let (small, big) = (total / 2, total - total / 2);
                let (begin, end) = if auto == "SAME_UPPER" { (small, big) } else { (big, small) };
                out[d] = begin;
                out[d + 2] = end;
            }
            Ok(out)
        }
        other => Err(n.err(format!("auto_pad = {other:?}; accepted NOTSET, VALID, SAME_UPPER, SAME_LOWER"))),
    }
}

fn constant_value(n: &N) -> Result<Const, ImportError> {
    let a = n.node.attribute.first().ok_or_else(|| n.err("has no value attribute"))?;
    let what = format!("the value of Constant node {}", n.label);
    Ok(match (a.name(), a.r#type()) {
        ("value", _) => {
            let t = a.t.as_ref().ok_or_else(|| n.err("value is not a tensor"))?;
            Const::from_proto(t, &what).map_err(ImportError::Malformed)?
        }
        ("value_float", _) | (_, AttributeType::Float) => Const::floats(vec![a.f.unwrap_or(0.0) as f64], vec![]),
        ("value_floats", _) => Const::floats(a.floats.iter().map(|&x| x as f64).collect(), vec![a.floats.len()]),
        ("value_int", _) => Const::ints(vec![a.i.unwrap_or(0)], vec![]),
        ("value_ints", _) => Const::ints(a.ints.clone(), vec![a.ints.len()]),
        (other, _) => return Err(n.err(format!("value attribute {other:?} is not supported"))),
    })
}

/// ONNX Reshape's target: `0` copies a dimension (unless allowzero), `-1` is inferred.
fn resolve_reshape(input: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    if target.len() > MAX_RANK {
        return Err(format!("a shape of rank {}; tandem accepts rank at most {MAX_RANK}", target.len()));
    }
    let total = numel(input);
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (k, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(k);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(k).ok_or("a 0 in the shape has no input dimension to copy")?),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(format!("shape {target:?} is invalid")),
        }
    }
    let known = numel(&out);
    if let Some(k) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {total} elements to {target:?}"));
        }
        out[k] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {total} elements to {target:?}"));
    }
    Ok(out)
}

fn squeeze_dims(dims: &[usize], axes: Option<&[i64]>, unsqueeze: bool) -> Result<Vec<usize>, String> {
    if unsqueeze {
        let axes = axes.ok_or("Unsqueeze without axes")?;
        let r = dims.len() + axes.len();
        if r > MAX_RANK {
            return Err(format!("unsqueezes to rank {r}; tandem accepts rank at most {MAX_RANK}"));
        }
        let mut ax: Vec<usize> =
            axes.iter().map(|&a| axis(a, r).ok_or(format!("axis {a} out of range"))).collect::<Result<_, _>>()?;
        ax.sort_unstable();
        // A repeated axis would insert past the end (found by tests/hostile_formats.rs).
        if ax.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("axes {axes:?} name an axis twice"));
        }
        let mut out = dims.to_vec();
        for a in ax {
            out.insert(a, 1);
        }
        Ok(out)
    } else {
        match axes {
            None => Ok(dims.iter().copied().filter(|&d| d != 1).collect()),
            Some(axes) => {
                let ax: Vec<usize> = axes
                    .iter()
                    .map(|&a| axis(a, dims.len()).ok_or(format!("axis {a} out of range")))
                    .collect::<Result<_, _>>()?;
                if ax.iter().any(|&a| dims[a] != 1) {
                    return Err(format!("squeezes an axis of size > 1 in {dims:?}"));
                }
                Ok(dims.iter().enumerate().filter(|(k, _)| !ax.contains(k)).map(|(_, &d)| d).collect())
            }
        }
    }
}

/// What a cloned value costs the work budget.
fn weight(v: &Val) -> usize {
    match v {
        Val::Const(c) => c.len(),
        Val::Act(a) => {
            let layers: usize = a
                .layers
                .iter()
                .map(|l| match l {
                    Layer::Dense { weights, bias, .. } | Layer::Conv2d { weights, bias, .. } => {
                        weights.len() + bias.len()
                    }
                    _ => 1,
                })
                .sum();
            layers + a.pending.as_ref().map_or(0, |p| 2 * p.scale.len()) + a.dims.len() + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (found by tests/hostile_formats.rs, onnx_synthetic_graphs):
    /// Unsqueeze with a repeated axis panicked on an out-of-range insert.
    #[test]
    fn unsqueeze_refuses_repeated_axes() {
        assert_eq!(squeeze_dims(&[3], Some(&[0, 2]), true), Ok(vec![1, 3, 1]));
        assert!(squeeze_dims(&[3], Some(&[2, 2]), true).unwrap_err().contains("twice"));
        assert!(squeeze_dims(&[3], Some(&[-1, 2]), true).unwrap_err().contains("twice"));
        assert!(squeeze_dims(&[3], Some(&[0; 20]), true).unwrap_err().contains("rank"));
    }
}
