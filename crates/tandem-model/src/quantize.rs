//! Quantization to the fixed-point semantics of PROTOCOL §2, the bit budget
//! of §7, and the two evaluators: float and the integer reference.

use crate::activation::{argmax_first, binary_label, round_half_away, sigmoid_fixed, softmax_fixed, tanh_fixed};
use crate::error::ModelError;
use crate::ir::{ActivationKind, Layer, Model, OutputMode, Shape};
use num_bigint::BigInt;
use num_traits::{FromPrimitive, Signed, Zero};
use serde::{Deserialize, Serialize};

/// Input features: `x_int = round(x·2^{f_in})`; the default `f_in`, used
/// unless the model declares its own ([`Model::input_frac_bits`]).
pub const F_IN: u32 = 16;
/// The largest `f_in` a model may declare: 32 fraction bits are already far
/// beyond any float input's useful precision after clipping to a range, and
/// keep `x_int` an `i64` for every range the budget analysis accepts.
pub const MAX_F_IN: u32 = 32;
/// Sigmoid/tanh/softmax outputs are at scale `f_act`.
pub const F_ACT: u32 = 16;
/// ReLU blinding magnitudes are below `2^τ`.
pub const TAU: u32 = 32;
/// Statistical masking parameter for the additive masks `μ`.
pub const KAPPA: u32 = 40;
/// Ring sizes, smallest first.
pub const RING_BITS: [u32; 2] = [128, 256];

/// How float weights become integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantConfig {
    /// Signed bits per weight: each layer's scale `f_w` is the largest with
    /// `max|W_int| < 2^{weight_bits−1}`.
    pub weight_bits: u32,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig { weight_bits: 12 }
    }
}

/// A linear layer over integers: `z = W·a + b` with sparse rows.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinear {
    /// Which float layer(s) this came from, for error messages.
    pub source: String,
    pub in_dim: usize,
    pub out_dim: usize,
    /// Row `j`: `(i, W_ji)` for the non-zero weights.
    pub rows: Vec<Vec<(u32, i64)>>,
    /// `b = round(b_f·2^{s_ℓ})`.
    pub bias: Vec<BigInt>,
    pub f_w: u32,
    pub in_scale: u32,
    pub out_scale: u32,
    /// `max_j Σ_i |W_ji|` — bounds `|W·D|` by `2^{bits(l1)}·max|D|`.
    pub max_row_l1: u64,
    /// A step of a lowered max pool (weights ±1, no float counterpart),
    /// not one of the float model's linear layers.
    pub max_pool_step: bool,
}

impl QLinear {
    pub fn apply(&self, a: &[BigInt]) -> Vec<BigInt> {
        self.rows
            .iter()
            .zip(&self.bias)
            .map(|(row, b)| {
                let mut acc = b.clone();
                for &(i, w) in row {
                    acc += &a[i as usize] * w;
                }
                acc
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum QLayer {
    Linear(QLinear),
    /// Applied to the previous linear layer's output, whose scale is `scale`.
    ///
    /// Values `0..keep` are **kept**: they pass through unchanged, S2 never
    /// sees them, and S1 carries them (`y_j = u_j`, `[D_j] = [g_j]`) across
    /// the round (PROTOCOL §4.9); the activation applies to values
    /// `keep..`, which are the round's neurons `0..n − keep`. Only a
    /// lowered max pool keeps values (with ReLU): its next linear step sums
    /// `a + ReLU(b − a)` from a kept `a` and an activated difference.
    /// Every engine must honour it; `keep = 0` is a plain activation.
    Activation {
        kind: ActivationKind,
        scale: u32,
        source: String,
        keep: usize,
    },
}

/// Bits per step from the budget analysis (public metadata).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerBits {
    pub layer: String,
    /// `bits(max |z|)` over the declared input range.
    pub value_bits: u32,
    /// Bits the ring must have for this step (sign and blinding included).
    pub needed_bits: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedModel {
    pub name: String,
    pub input_shape: Shape,
    pub input_range: (f64, f64),
    pub default_mode: OutputMode,
    pub output_len: usize,
    pub f_in: u32,
    pub f_act: u32,
    /// `k`: 128 if every step fits, else 256 (§7).
    pub ring_bits: u32,
    pub layers: Vec<QLayer>,
    pub budget: Vec<LayerBits>,
    /// The float model, kept for float evaluation and comparisons.
    pub float: Model,
}

/// The result of one inference in any mode; the private protocol and the
/// integer reference produce this same type, so they compare with `==`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Signed integers at `scale`.
    Logits {
        values: Vec<BigInt>,
        scale: u32,
    },
    /// Softmax at `scale` (= f_act), in output order.
    Probabilities {
        values: Vec<u64>,
        scale: u32,
    },
    Label(usize),
    /// `F_σ` of the single output at `scale` (= f_act).
    Sigmoid {
        value: u64,
        scale: u32,
    },
}

impl Output {
    /// Real-valued view (what a user reads).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Output::Logits { values, scale } => values
                .iter()
                .map(|v| {
                    let m = crate::activation::magnitude_to_f64(v.magnitude());
                    let x = libm::scalbn(m, -(*scale as i32));
                    if v.is_negative() {
                        -x
                    } else {
                        x
                    }
                })
                .collect(),
            Output::Probabilities { values, scale } => {
                values.iter().map(|&v| libm::scalbn(v as f64, -(*scale as i32))).collect()
            }
            Output::Label(l) => vec![*l as f64],
            Output::Sigmoid { value, scale } => vec![libm::scalbn(*value as f64, -(*scale as i32))],
        }
    }

    /// The predicted class, read from this output.
    ///
    /// From `logits` and `label` outputs this is exactly what `label` mode
    /// returns. From `probabilities` and `sigmoid` outputs it is read from
    /// the rounded fixed-point values, so it can differ from `label` mode
    /// when logits are closer than the rounding can tell apart: two classes
    /// whose probabilities round equal go to the lower index, and a sigmoid
    /// that rounds to exactly 1/2 (`0 < z < ~2^{s−17}`) reads as class 0
    /// while `label` mode says 1. Use `label` mode when the class is what
    /// matters.
    pub fn label(&self) -> usize {
        match self {
            Output::Logits { values, .. } if values.len() == 1 => binary_label(&values[0]),
            Output::Logits { values, .. } => argmax_first(values),
            Output::Probabilities { values, .. } => {
                argmax_first(&values.iter().map(|&v| BigInt::from(v)).collect::<Vec<_>>())
            }
            Output::Label(l) => *l,
            Output::Sigmoid { value, scale } => usize::from(*value > 1u64 << (scale - 1)),
        }
    }

    pub fn mode(&self) -> OutputMode {
        match self {
            Output::Logits { .. } => OutputMode::Logits,
            Output::Probabilities { .. } => OutputMode::Probabilities,
            Output::Label(_) => OutputMode::Label,
            Output::Sigmoid { .. } => OutputMode::Sigmoid,
        }
    }
}

fn bigint_from_f64(x: f64) -> BigInt {
    BigInt::from_f64(x).unwrap_or_else(BigInt::zero)
}

fn bits_of(v: &BigInt) -> u32 {
    v.bits() as u32
}

/// Most signed bits per weight adaptive precision gives a layer.
pub const MAX_ADAPTIVE_WEIGHT_BITS: u32 = 28;
/// A column (or row) whose largest weight is within `2^SPREAD_SLACK` of the
/// layer's largest keeps at least `weight_bits − 1 − SPREAD_SLACK` bits at the
/// base precision; wider spreads ask for extra bits.
const SPREAD_SLACK: u32 = 4;

fn check_bits(b: u32) -> Result<(), ModelError> {
    if !(2..=32).contains(&b) {
        return Err(ModelError::Invalid(format!("weight_bits = {b}; accepted 2..=32")));
    }
    Ok(())
}

/// Extra weight bits layer `l` asks for: `log2` of the spread between its
/// largest weight and the largest weight of its weakest input column or
/// output row (minus [`SPREAD_SLACK`]), so that every column and row keeps
/// about `weight_bits − 1 − SPREAD_SLACK` significant bits. A folded
/// StandardScaler divides column `i` by `σ_i`; σ spanning 0.003 … 600 (breast
/// cancer) is a spread of 2^18, and one 12-bit scale rounds the large-σ
/// columns to zero.
fn wanted_extra_bits(l: &Layer, base: u32) -> u32 {
    let (cols, rows): (Vec<f64>, Vec<f64>) = match l {
        Layer::Dense { inputs, outputs, weights, .. } => {
            let mut c = vec![0f64; *inputs];
            let mut r = vec![0f64; *outputs];
            for j in 0..*outputs {
                for i in 0..*inputs {
                    let w = (weights[j * inputs + i] as f64).abs();
                    c[i] = c[i].max(w);
                    r[j] = r[j].max(w);
                }
            }
            (c, r)
        }
        Layer::Conv2d { in_channels, out_channels, kernel, weights, .. } => {
            let k = kernel[0] * kernel[1];
            let mut c = vec![0f64; *in_channels];
            let mut r = vec![0f64; *out_channels];
            for o in 0..*out_channels {
                for ch in 0..*in_channels {
                    for &w in &weights[(o * in_channels + ch) * k..(o * in_channels + ch + 1) * k] {
                        c[ch] = c[ch].max((w as f64).abs());
                        r[o] = r[o].max((w as f64).abs());
                    }
                }
            }
            (c, r)
        }
        _ => return 0,
    };
    let max = cols.iter().cloned().fold(0f64, f64::max);
    if max == 0.0 || !max.is_finite() {
        return 0;
    }
    // Columns too small for any precision tandem takes (below max·2^{−27};
    // e.g. the weights of a feature that is constant in the training data,
    // decayed by L2) are ignored: asking bits for them would only cost.
    let floor = libm::scalbn(max, -(MAX_ADAPTIVE_WEIGHT_BITS as i32 - 1));
    let weakest = cols.iter().chain(&rows).cloned().filter(|&v| v >= floor).fold(max, f64::min);
    let spread = (max / weakest).log2().floor().max(0.0) as u32;
    spread.saturating_sub(SPREAD_SLACK).min(MAX_ADAPTIVE_WEIGHT_BITS.saturating_sub(base))
}

/// `f_w` such that `max|W|·2^{f_w} < 2^{weight_bits−1}`.
fn weight_scale(weights: &[f32], weight_bits: u32) -> u32 {
    let m = weights.iter().fold(0f64, |m, &w| m.max((w as f64).abs()));
    if m == 0.0 {
        return 0;
    }
    let limit = ((1u64 << (weight_bits - 1)) - 1) as f64;
    let f = (limit / m).log2().floor();
    f.clamp(0.0, 40.0) as u32
}

/// Refuses weights whose quantized magnitude would not fit an i64: they
/// would saturate silently, and the integer reference (and the private
/// result) would then differ from the model (found by
/// tests/hostile_formats.rs: an ONNX weight of 3.4e38 quantized to 2^63 − 1).
fn check_weight_range(weights: &[f32], f_w: u32, source: &str) -> Result<(), ModelError> {
    let m = weights.iter().fold(0f64, |m, &w| m.max((w as f64).abs()));
    if libm::scalbn(m, f_w as i32) >= (1u64 << 62) as f64 {
        return Err(ModelError::Invalid(format!(
            "{source}: a weight of magnitude {m:e} is too large to quantize (at most 2^62)"
        )));
    }
    Ok(())
}

fn quantize_weight(w: f32, f_w: u32) -> i64 {
    round_half_away(libm::scalbn(w as f64, f_w as i32)) as i64
}

/// A max pool lowered to exact ReLU rounds (PROTOCOL §4.9).
///
/// Each window's operands start as its input values (plus the constant 0
/// when a ReLU beside the pool is folded in: `ReLU(max W) = max(W ∪ {0})`).
/// A round pairs the operands of every window, `(a, b)`, in order, an odd
/// one out waiting: a linear step computes the kept `a`s (and waiting
/// operands) first and the differences `b − a` after them, and a ReLU keeps
/// the former and activates the latter, so `max(a, b) = a + ReLU(b − a)` is
/// a sum of two values of the next state. Operands are linear forms over the
/// current state (`(index, ±1)` terms; the constant 0 is the empty form and
/// is never kept), so that sum is simply the next step's row. After
/// `⌈log2(operands)⌉` rounds every window has one form; a last linear step
/// outputs them. All weights are integers at scale 0: the pool is exact at
/// `scale`, the scale of its input.
fn max_pool_steps(source: &str, in_dim: usize, windows: &[Vec<usize>], with_zero: bool, scale: u32) -> Vec<QLayer> {
    type Form = Vec<(u32, i64)>;
    let step = |what: String, in_dim: usize, rows: Vec<Form>| {
        QLayer::Linear(QLinear {
            source: format!("{source} {what}"),
            in_dim,
            out_dim: rows.len(),
            max_row_l1: row_l1(&rows),
            bias: vec![BigInt::zero(); rows.len()],
            rows,
            f_w: 0,
            in_scale: scale,
            out_scale: scale,
            max_pool_step: true,
        })
    };
    let mut ops: Vec<Vec<Form>> = windows
        .iter()
        .map(|w| {
            let mut v: Vec<Form> = w.iter().map(|&i| vec![(i as u32, 1)]).collect();
            if with_zero {
                v.push(Vec::new());
            }
            v
        })
        .collect();
    let mut dim = in_dim;
    let mut out = Vec::new();
    let mut round = 0;
    while ops.iter().any(|w| w.len() > 1) {
        round += 1;
        let (mut kept, mut diffs): (Vec<Form>, Vec<Form>) = (Vec::new(), Vec::new());
        // Per new operand: (index into kept, index into diffs).
        let mut next: Vec<Vec<(Option<usize>, Option<usize>)>> = Vec::with_capacity(ops.len());
        for w in &ops {
            let mut nw = Vec::with_capacity(w.len().div_ceil(2));
            for pair in w.chunks(2) {
                let a = (!pair[0].is_empty()).then(|| {
                    kept.push(pair[0].clone());
                    kept.len() - 1
                });
                let d = pair.get(1).map(|b| {
                    let mut f = b.clone();
                    f.extend(pair[0].iter().map(|&(i, c)| (i, -c)));
                    diffs.push(f);
                    diffs.len() - 1
                });
                nw.push((a, d));
            }
            next.push(nw);
        }
        let keep = kept.len();
        let rows: Vec<Form> = kept.into_iter().chain(diffs).collect();
        let n = rows.len();
        out.push(step(format!("step {round}"), dim, rows));
        out.push(QLayer::Activation {
            kind: ActivationKind::Relu,
            scale,
            source: format!("{source} round {round}"),
            keep,
        });
        ops = next
            .into_iter()
            .map(|w| {
                w.into_iter()
                    .map(|(a, d)| {
                        a.map(|a| (a as u32, 1)).into_iter().chain(d.map(|d| ((keep + d) as u32, 1))).collect()
                    })
                    .collect()
            })
            .collect();
        dim = n;
    }
    let rows: Vec<Form> = ops.into_iter().map(|mut w| w.pop().unwrap_or_default()).collect();
    out.push(step("max".into(), dim, rows));
    out
}

fn row_l1(rows: &[Vec<(u32, i64)>]) -> u64 {
    // Saturating: weights of huge magnitude quantize to ±2^63 and must fail
    // the bit budget, not overflow here (found by tests/hostile_formats.rs).
    rows.iter().map(|r| r.iter().fold(0u64, |a, &(_, w)| a.saturating_add(w.unsigned_abs()))).max().unwrap_or(0)
}

impl QuantizedModel {
    /// Quantizes `model` with adaptive per-layer weight precision: every
    /// linear layer gets at least `cfg.weight_bits` signed bits, and a layer
    /// whose weights span a wide dynamic range across input columns or
    /// output rows (a folded StandardScaler, a folded BatchNorm) gets more,
    /// up to [`MAX_ADAPTIVE_WEIGHT_BITS`], as far as the ring the
    /// `cfg.weight_bits` model needs (k = 128 or 256) still holds every
    /// step of the bit budget (§7). The ring size, hence the protocol's cost
    /// class, never grows. [`QuantizedModel::with_fixed_bits`] is the old
    /// behaviour (one `cfg.weight_bits` for every layer).
    pub fn new(model: &Model, cfg: QuantConfig) -> Result<Self, ModelError> {
        check_bits(cfg.weight_bits)?;
        let base_bits = vec![cfg.weight_bits; model.layers.len()];
        let base = Self::build(model, &base_bits)?;
        let want: Vec<u32> = model.layers.iter().map(|l| wanted_extra_bits(l, cfg.weight_bits)).collect();
        if want.iter().all(|&w| w == 0) {
            return Ok(base);
        }
        let k = base.ring_bits;
        let with = |num: u32, den: u32| -> Vec<u32> {
            base_bits.iter().zip(&want).map(|(&b, &w)| b + w * num / den).collect()
        };
        // The largest fraction t = num/16 of the wanted extra bits that still
        // fits the base ring (bisection; the budget grows with t).
        let fits = |bits: &[u32]| Self::build(model, bits).ok().filter(|q| q.ring_bits <= k);
        if let Some(q) = fits(&with(1, 1)) {
            return Ok(q);
        }
        let (mut lo, mut hi) = (0u32, 16u32);
        let mut best = base;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            match fits(&with(mid, 16)) {
                Some(q) => {
                    lo = mid;
                    best = q;
                }
                None => hi = mid,
            }
        }
        Ok(best)
    }

    /// Every linear layer at exactly `cfg.weight_bits` signed bits (its scale
    /// `f_w` is the largest with `max|W_int| < 2^{weight_bits−1}`).
    pub fn with_fixed_bits(model: &Model, cfg: QuantConfig) -> Result<Self, ModelError> {
        check_bits(cfg.weight_bits)?;
        Self::build(model, &vec![cfg.weight_bits; model.layers.len()])
    }

    /// Signed weight bits each linear layer was quantized with, by source
    /// (`bits(max|W_int|) + 1`; a power-of-two average pool shows 1).
    pub fn weight_bits(&self) -> Vec<(String, u32)> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                QLayer::Linear(l) => {
                    let m = l.rows.iter().flatten().map(|&(_, w)| w.unsigned_abs()).max().unwrap_or(0);
                    Some((l.source.clone(), 64 - m.leading_zeros() + 1))
                }
                _ => None,
            })
            .collect()
    }

    /// Quantizes with `bits[i]` signed weight bits for float layer `i`.
    fn build(model: &Model, bits: &[u32]) -> Result<Self, ModelError> {
        let shapes = model.shapes()?;
        let mut layers: Vec<QLayer> = Vec::new();
        let mut scale = model.input_frac_bits;
        let mut shape = model.input_shape;
        // A permutation met before any linear layer, for the next one's columns.
        let mut pending_cols: Option<Vec<usize>> = None;
        for (idx, layer) in model.layers.iter().enumerate() {
            let source = format!("layer {idx} ({})", layer.describe());
            let out_shape = shapes[idx];
            let wbits = bits[idx];
            match layer {
                Layer::Dense { inputs, outputs, weights, bias } => {
                    let f_w = weight_scale(weights, wbits);
                    check_weight_range(weights, f_w, &source)?;
                    let rows: Vec<Vec<(u32, i64)>> = (0..*outputs)
                        .map(|j| {
                            (0..*inputs)
                                .filter_map(|i| {
                                    let w = quantize_weight(weights[j * inputs + i], f_w);
                                    (w != 0).then_some((i as u32, w))
                                })
                                .collect()
                        })
                        .collect();
                    layers.push(Self::linear(source, *inputs, rows, bias, f_w, scale));
                }
                Layer::Conv2d { in_channels, out_channels, kernel, stride, padding, weights, bias, .. } => {
                    let f_w = weight_scale(weights, wbits);
                    check_weight_range(weights, f_w, &source)?;
                    let Shape::Image(_, h, w) = shape else { unreachable!("checked by shapes()") };
                    let Shape::Image(_, oh, ow) = out_shape else { unreachable!() };
                    let [kh, kw] = *kernel;
                    let mut rows = Vec::with_capacity(out_shape.len());
                    for o in 0..*out_channels {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut row = Vec::new();
                                for c in 0..*in_channels {
                                    for ky in 0..kh {
                                        for kx in 0..kw {
                                            let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                                            let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                                continue; // zero padding
                                            }
                                            let wi = ((o * in_channels + c) * kh + ky) * kw + kx;
                                            let q = quantize_weight(weights[wi], f_w);
                                            if q != 0 {
                                                let col = (c * h + iy as usize) * w + ix as usize;
                                                row.push((col as u32, q));
                                            }
                                        }
                                    }
                                }
                                rows.push(row);
                            }
                        }
                    }
                    let bias: Vec<f32> =
                        (0..*out_channels).flat_map(|o| std::iter::repeat_n(bias[o], oh * ow)).collect();
                    layers.push(Self::linear(source, shape.len(), rows, &bias, f_w, scale));
                }
                Layer::AvgPool2d { kernel, stride } => {
                    let Shape::Image(c, h, w) = shape else { unreachable!("checked by shapes()") };
                    let Shape::Image(_, oh, ow) = out_shape else { unreachable!() };
                    let area = kernel[0] * kernel[1];
                    // A power-of-two window averages exactly: weight 1 at scale log2(area).
                    let (f_w, q) = if area.is_power_of_two() {
                        (area.trailing_zeros(), 1i64)
                    } else {
                        let f = wbits - 1;
                        (f, round_half_away(libm::scalbn(1.0 / area as f64, f as i32)) as i64)
                    };
                    let mut rows = Vec::with_capacity(out_shape.len());
                    for ch in 0..c {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut row = Vec::with_capacity(area);
                                for ky in 0..kernel[0] {
                                    for kx in 0..kernel[1] {
                                        let (iy, ix) = (oy * stride[0] + ky, ox * stride[1] + kx);
                                        row.push((((ch * h + iy) * w + ix) as u32, q));
                                    }
                                }
                                rows.push(row);
                            }
                        }
                    }
                    let bias = vec![0f32; rows.len()];
                    layers.push(Self::linear(source, shape.len(), rows, &bias, f_w, scale));
                }
                Layer::MaxPool2d { .. } => {
                    let relu_at = |i: Option<usize>| {
                        matches!(i.and_then(|i| model.layers.get(i)), Some(Layer::Activation(ActivationKind::Relu)))
                    };
                    let with_zero = relu_at(idx.checked_sub(1)) || relu_at(Some(idx + 1));
                    let mut windows = layer.max_windows(shape);
                    if let Some(cols) = pending_cols.take() {
                        windows.iter_mut().flatten().for_each(|i| *i = cols[*i]);
                    }
                    layers.extend(max_pool_steps(&source, shape.len(), &windows, with_zero, scale));
                }
                Layer::Flatten => {}
                Layer::Permute { perm, .. } => {
                    // Exact: reorder the rows of the last linear layer (an
                    // elementwise activation in between commutes with it),
                    // or, before any, the columns of the next one.
                    match layers.iter_mut().rev().find_map(|l| match l {
                        QLayer::Linear(l) => Some(l),
                        _ => None,
                    }) {
                        Some(l) => {
                            l.rows = perm.iter().map(|&p| std::mem::take(&mut l.rows[p])).collect();
                            let bias = std::mem::take(&mut l.bias);
                            l.bias = perm.iter().map(|&p| bias[p].clone()).collect();
                            l.source = format!("{}, {source}", l.source);
                        }
                        None => {
                            pending_cols = Some(match pending_cols.take() {
                                None => perm.clone(),
                                Some(prev) => perm.iter().map(|&p| prev[p]).collect(),
                            });
                        }
                    }
                }
                Layer::Activation(kind) => {
                    // ReLU next to a max pool is folded into the pool's tree
                    // (max(0, window)), which saves its round (§4.9).
                    let beside_pool =
                        |i: Option<usize>| matches!(i.and_then(|i| model.layers.get(i)), Some(Layer::MaxPool2d { .. }));
                    if *kind == ActivationKind::Relu && (beside_pool(idx.checked_sub(1)) || beside_pool(Some(idx + 1)))
                    {
                        shape = out_shape;
                        continue;
                    }
                    layers.push(QLayer::Activation { kind: *kind, scale, source, keep: 0 });
                    if *kind != ActivationKind::Relu {
                        scale = F_ACT;
                    }
                }
            }
            if layer.is_linear() {
                if let (Some(cols), Some(QLayer::Linear(l))) = (pending_cols.take(), layers.last_mut()) {
                    for row in &mut l.rows {
                        for (i, _) in row.iter_mut() {
                            *i = cols[*i as usize] as u32;
                        }
                    }
                }
            }
            if let Some(QLayer::Linear(l)) = layers.last() {
                if layer.is_linear() {
                    scale = l.out_scale;
                }
            }
            shape = out_shape;
        }
        let mut q = QuantizedModel {
            name: model.name.clone(),
            input_shape: model.input_shape,
            input_range: model.input_range,
            default_mode: model.default_mode,
            output_len: shape.len(),
            f_in: model.input_frac_bits,
            f_act: F_ACT,
            ring_bits: 0,
            layers,
            budget: Vec::new(),
            float: model.clone(),
        };
        q.budget = q.analyze_budget();
        let needed = q.budget.iter().map(|b| b.needed_bits).max().unwrap_or(0);
        q.ring_bits = match RING_BITS.iter().find(|&&k| needed <= k) {
            Some(&k) => k,
            None => {
                let worst = q.budget.iter().find(|b| b.needed_bits > RING_BITS[1]).expect("max exceeds");
                return Err(ModelError::Budget {
                    layer: worst.layer.clone(),
                    bits_needed: worst.needed_bits,
                    available: RING_BITS[1],
                });
            }
        };
        Ok(q)
    }

    fn linear(
        source: String,
        in_dim: usize,
        rows: Vec<Vec<(u32, i64)>>,
        bias: &[f32],
        f_w: u32,
        in_scale: u32,
    ) -> QLayer {
        let out_scale = in_scale + f_w;
        let bias =
            bias.iter().map(|&b| bigint_from_f64(round_half_away(libm::scalbn(b as f64, out_scale as i32)))).collect();
        QLayer::Linear(QLinear {
            source,
            in_dim,
            out_dim: rows.len(),
            max_row_l1: row_l1(&rows),
            rows,
            bias,
            f_w,
            in_scale,
            out_scale,
            max_pool_step: false,
        })
    }

    pub fn input_len(&self) -> usize {
        self.input_shape.len()
    }

    pub fn output_scale(&self) -> u32 {
        self.layers
            .iter()
            .rev()
            .find_map(|l| match l {
                QLayer::Linear(l) => Some(l.out_scale),
                _ => None,
            })
            .expect("a model ends with a linear layer")
    }

    pub fn modes(&self) -> Vec<OutputMode> {
        OutputMode::available(self.output_len)
    }

    pub fn check_mode(&self, mode: OutputMode) -> Result<(), ModelError> {
        if self.modes().contains(&mode) {
            Ok(())
        } else {
            Err(ModelError::UnsupportedMode {
                mode: mode.name().into(),
                available: self.modes().iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
            })
        }
    }

    /// Worst-case bits per step over the declared input range, by interval
    /// arithmetic on exact integers.
    fn analyze_budget(&self) -> Vec<LayerBits> {
        let (lo, hi) = self.input_range;
        let qlo = bigint_from_f64(round_half_away(libm::scalbn(lo, self.f_in as i32)));
        let qhi = bigint_from_f64(round_half_away(libm::scalbn(hi, self.f_in as i32)));
        let mut lo_v = vec![qlo; self.input_len()];
        let mut hi_v = vec![qhi; self.input_len()];
        let mut out = Vec::new();
        let max_abs = |l: &[BigInt], h: &[BigInt]| -> u32 { l.iter().chain(h).map(bits_of).max().unwrap_or(0) };
        let n_layers = self.layers.len();
        for (idx, layer) in self.layers.iter().enumerate() {
            match layer {
                QLayer::Linear(l) => {
                    let (mut nlo, mut nhi) = (l.bias.clone(), l.bias.clone());
                    for (j, row) in l.rows.iter().enumerate() {
                        for &(i, w) in row {
                            let (a, b) = (&lo_v[i as usize] * w, &hi_v[i as usize] * w);
                            if w > 0 {
                                nlo[j] += a;
                                nhi[j] += b;
                            } else {
                                nlo[j] += b;
                                nhi[j] += a;
                            }
                        }
                    }
                    lo_v = nlo;
                    hi_v = nhi;
                    let bits = max_abs(&lo_v, &hi_v);
                    let is_output = idx + 1 == n_layers;
                    // Every true pre-activation must read back correctly as a
                    // signed ring value.
                    let mut needed = bits + 1;
                    if is_output {
                        let n = self.output_len as u32;
                        let n_bits = 32 - n.leading_zeros();
                        // probabilities: |z + β| with |β| < 2^{k−3} → |z| < 2^{k−2};
                        // label (n ≥ 2): |m·(n·z + n − 1) + β| → + τ + bits(n) + 1;
                        // label (n = 1): |σ·m·(2z − 1)| < 2^{k−1}.
                        let label = if n == 1 { bits + 1 + TAU + 1 } else { bits + n_bits + 1 + TAU + 2 };
                        needed = needed.max(bits + 2).max(label);
                    }
                    out.push(LayerBits { layer: l.source.clone(), value_bits: bits, needed_bits: needed });
                }
                QLayer::Activation { kind, source, keep, .. } => {
                    // Kept values pass through (S2 never sees them): only
                    // the activated ones enter this step's requirement.
                    let keep = (*keep).min(lo_v.len());
                    let (lo_v, hi_v) = (&mut lo_v[keep..], &mut hi_v[keep..]);
                    let bits = max_abs(lo_v, hi_v);
                    let needed = match kind {
                        ActivationKind::Relu => bits + TAU + 1,
                        _ => bits + 1,
                    };
                    out.push(LayerBits { layer: source.clone(), value_bits: bits, needed_bits: needed });
                    let zero = BigInt::zero();
                    match kind {
                        ActivationKind::Relu => {
                            for v in lo_v.iter_mut().chain(hi_v.iter_mut()) {
                                if *v < zero {
                                    *v = zero.clone();
                                }
                            }
                        }
                        ActivationKind::Sigmoid => {
                            lo_v.iter_mut().for_each(|v| *v = zero.clone());
                            hi_v.iter_mut().for_each(|v| *v = BigInt::from(1u64 << F_ACT));
                        }
                        ActivationKind::Tanh => {
                            lo_v.iter_mut().for_each(|v| *v = -BigInt::from(1u64 << F_ACT));
                            hi_v.iter_mut().for_each(|v| *v = BigInt::from(1u64 << F_ACT));
                        }
                    }
                }
            }
        }
        out
    }

    /// `x_int = round(x·2^{f_in})`, rejecting wrong lengths, non-finite and
    /// out-of-range values.
    pub fn quantize_input(&self, x: &[f64]) -> Result<Vec<i64>, ModelError> {
        quantize_input(x, self.input_len(), self.input_range, self.f_in)
    }

    /// Plain integer evaluation up to the last linear layer: the logits.
    pub fn reference_logits(&self, x_int: &[i64]) -> Vec<BigInt> {
        self.reference_logits_from(x_int.iter().map(|&v| BigInt::from(v)).collect())
    }

    /// [`QuantizedModel::reference_logits`] from integer values `a` at the
    /// model's input (tests run single layers through it).
    pub fn reference_logits_from(&self, mut a: Vec<BigInt>) -> Vec<BigInt> {
        for layer in &self.layers {
            a = match layer {
                QLayer::Linear(l) => l.apply(&a),
                QLayer::Activation { kind, scale, keep, .. } => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match kind {
                        _ if i < *keep => v.clone(),
                        ActivationKind::Relu => {
                            if v.is_negative() {
                                BigInt::zero()
                            } else {
                                v.clone()
                            }
                        }
                        ActivationKind::Sigmoid => sigmoid_fixed(v, *scale, self.f_act),
                        ActivationKind::Tanh => tanh_fixed(v, *scale, self.f_act),
                    })
                    .collect(),
            };
        }
        a
    }

    /// The integer reference (§2): what private inference must equal.
    pub fn reference(&self, x_int: &[i64], mode: OutputMode) -> Result<Output, ModelError> {
        self.check_mode(mode)?;
        if x_int.len() != self.input_len() {
            return Err(ModelError::InputLength { expected: self.input_len(), got: x_int.len() });
        }
        let z = self.reference_logits(x_int);
        let s = self.output_scale();
        Ok(head(&z, s, self.f_act, mode))
    }

    /// Float evaluation of the original model, head included.
    pub fn float_output(&self, x: &[f64], mode: OutputMode) -> Vec<f64> {
        let z = eval_f64(&self.float, x);
        float_head(&z, mode)
    }
}

/// Applies an output head to integer logits.
pub fn head(z: &[BigInt], scale: u32, f_act: u32, mode: OutputMode) -> Output {
    match mode {
        OutputMode::Logits => Output::Logits { values: z.to_vec(), scale },
        OutputMode::Probabilities => Output::Probabilities { values: softmax_fixed(z, scale, f_act), scale: f_act },
        OutputMode::Label if z.len() == 1 => Output::Label(binary_label(&z[0])),
        OutputMode::Label => Output::Label(argmax_first(z)),
        OutputMode::Sigmoid => Output::Sigmoid {
            value: sigmoid_fixed(&z[0], scale, f_act).try_into().expect("in [0, 2^f_act]"),
            scale: f_act,
        },
    }
}

/// `B`, the largest `|x_int|` [`quantize_input`] can produce for `range`:
/// `max(|round(lo·2^f_in)|, |round(hi·2^f_in)|)`, rounded exactly as the
/// inputs are (rounding is monotone, so the extremes come from the ends).
/// The compact input mask (docs/PROTOCOL.md §4.1) offsets every feature by
/// it, so it must bound every value a client in range can send.
pub fn max_abs_input(range: (f64, f64), f_in: u32) -> u64 {
    let q = |v: f64| (round_half_away(libm::scalbn(v, f_in as i32)) as i64).unsigned_abs();
    q(range.0).max(q(range.1))
}

pub fn quantize_input(x: &[f64], len: usize, range: (f64, f64), f_in: u32) -> Result<Vec<i64>, ModelError> {
    if x.len() != len {
        return Err(ModelError::InputLength { expected: len, got: x.len() });
    }
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if !(v.is_finite() && v >= range.0 && v <= range.1) {
                return Err(ModelError::InputOutOfRange { index: i, value: v, lo: range.0, hi: range.1 });
            }
            Ok(round_half_away(libm::scalbn(v, f_in as i32)) as i64)
        })
        .collect()
}

/// Float forward pass up to the logits.
pub fn eval_f64(model: &Model, x: &[f64]) -> Vec<f64> {
    let mut a = x.to_vec();
    let mut shape = model.input_shape;
    for layer in &model.layers {
        let out_shape = layer.output_shape(shape).expect("model validated");
        a = match layer {
            Layer::Dense { inputs, outputs, weights, bias } => (0..*outputs)
                .map(|j| bias[j] as f64 + (0..*inputs).map(|i| weights[j * inputs + i] as f64 * a[i]).sum::<f64>())
                .collect(),
            Layer::Conv2d { in_channels, out_channels, kernel, stride, padding, weights, bias, .. } => {
                let Shape::Image(_, h, w) = shape else { unreachable!() };
                let Shape::Image(_, oh, ow) = out_shape else { unreachable!() };
                let mut out = vec![0f64; out_shape.len()];
                for o in 0..*out_channels {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = bias[o] as f64;
                            for c in 0..*in_channels {
                                for ky in 0..kernel[0] {
                                    for kx in 0..kernel[1] {
                                        let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                                        let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let wi = ((o * in_channels + c) * kernel[0] + ky) * kernel[1] + kx;
                                        acc += weights[wi] as f64 * a[(c * h + iy as usize) * w + ix as usize];
                                    }
                                }
                            }
                            out[(o * oh + oy) * ow + ox] = acc;
                        }
                    }
                }
                out
            }
            Layer::AvgPool2d { kernel, stride } => {
                let Shape::Image(c, h, w) = shape else { unreachable!() };
                let Shape::Image(_, oh, ow) = out_shape else { unreachable!() };
                let area = (kernel[0] * kernel[1]) as f64;
                let mut out = Vec::with_capacity(out_shape.len());
                for ch in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = 0.0;
                            for ky in 0..kernel[0] {
                                for kx in 0..kernel[1] {
                                    acc += a[(ch * h + oy * stride[0] + ky) * w + ox * stride[1] + kx];
                                }
                            }
                            out.push(acc / area);
                        }
                    }
                }
                out
            }
            Layer::MaxPool2d { .. } => layer
                .max_windows(shape)
                .iter()
                .map(|w| w.iter().map(|&i| a[i]).fold(f64::NEG_INFINITY, f64::max))
                .collect(),
            Layer::Flatten => a,
            Layer::Permute { perm, .. } => perm.iter().map(|&p| a[p]).collect(),
            Layer::Activation(k) => a
                .iter()
                .map(|&v| match k {
                    ActivationKind::Relu => v.max(0.0),
                    ActivationKind::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    ActivationKind::Tanh => v.tanh(),
                })
                .collect(),
        };
        shape = out_shape;
    }
    a
}

/// Float output head.
pub fn float_head(z: &[f64], mode: OutputMode) -> Vec<f64> {
    match mode {
        OutputMode::Logits => z.to_vec(),
        OutputMode::Probabilities => {
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        }
        OutputMode::Label if z.len() == 1 => vec![if z[0] > 0.0 { 1.0 } else { 0.0 }],
        OutputMode::Label => {
            let mut best = 0;
            for (i, v) in z.iter().enumerate() {
                if *v > z[best] {
                    best = i;
                }
            }
            vec![best as f64]
        }
        OutputMode::Sigmoid => vec![1.0 / (1.0 + (-z[0]).exp())],
    }
}

/// Predicted class from float logits.
pub fn float_label(z: &[f64]) -> usize {
    float_head(z, OutputMode::Label)[0] as usize
}
