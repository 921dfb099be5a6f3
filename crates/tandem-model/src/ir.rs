//! The float model: a feed-forward stack of layers, as imported or trained.

use crate::error::ModelError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Output modes of PROTOCOL §4.8 (and the model's default one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// The last layer's integer outputs at their scale.
    Logits,
    /// Softmax at scale `f_act` (models with 2+ outputs).
    Probabilities,
    /// The arg-max class (1 output: 1 iff the logit is positive). Default:
    /// it tells the client least about the model.
    Label,
    /// Logistic sigmoid of the single output, at scale `f_act`.
    Sigmoid,
}

impl OutputMode {
    pub const ALL: [OutputMode; 4] =
        [OutputMode::Logits, OutputMode::Probabilities, OutputMode::Label, OutputMode::Sigmoid];

    pub fn name(self) -> &'static str {
        match self {
            OutputMode::Logits => "logits",
            OutputMode::Probabilities => "probabilities",
            OutputMode::Label => "label",
            OutputMode::Sigmoid => "sigmoid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Modes a model with `outputs` outputs offers.
    pub fn available(outputs: usize) -> Vec<OutputMode> {
        if outputs == 1 {
            vec![OutputMode::Label, OutputMode::Sigmoid, OutputMode::Logits]
        } else {
            vec![OutputMode::Label, OutputMode::Probabilities, OutputMode::Logits]
        }
    }
}

impl fmt::Display for OutputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Largest activation (values per layer) a model may have: bounds every
/// allocation made for a model read from an untrusted file.
pub const MAX_VALUES: usize = 1 << 24;
/// Largest number of multiply-adds in one linear layer (a layer that size
/// already takes minutes per private query).
pub const MAX_MACS: usize = 1 << 25;

/// Shape of the activation between layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    Vector(usize),
    /// Channels, height, width (stored flattened in CHW order).
    Image(usize, usize, usize),
}

impl Shape {
    pub fn len(&self) -> usize {
        match *self {
            Shape::Vector(d) => d,
            Shape::Image(c, h, w) => c.saturating_mul(h).saturating_mul(w),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn from_dims(dims: &[usize]) -> Result<Shape, ModelError> {
        match *dims {
            [d] => Ok(Shape::Vector(d)),
            [c, h, w] => Ok(Shape::Image(c, h, w)),
            _ => Err(ModelError::Invalid(format!(
                "input shape {dims:?}: expected [features] or [channels, height, width]"
            ))),
        }
    }
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            Shape::Vector(d) => vec![d],
            Shape::Image(c, h, w) => vec![c, h, w],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    Relu,
    Sigmoid,
    Tanh,
}

impl ActivationKind {
    pub fn name(self) -> &'static str {
        match self {
            ActivationKind::Relu => "relu",
            ActivationKind::Sigmoid => "sigmoid",
            ActivationKind::Tanh => "tanh",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `z = W·a + b`, `W` row-major `outputs × inputs`.
    Dense {
        inputs: usize,
        outputs: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
    },
    /// Cross-correlation like PyTorch/ONNX; weights `[out][in][kh][kw]`.
    /// Zero padding `padding` (top, left) before the image and `padding_end`
    /// (bottom, right) after it; they differ for ONNX `SAME_UPPER`/`SAME_LOWER`
    /// (Keras `padding='same'`) with an even total.
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        padding_end: [usize; 2],
        weights: Vec<f32>,
        bias: Vec<f32>,
    },
    /// Average over `kernel` windows, no padding.
    AvgPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
    },
    /// Maximum over `kernel` windows (ONNX `MaxPool`, 2-D, dilation 1).
    /// Padding (`padding` top/left, `padding_end` bottom/right) is `−∞`:
    /// a window takes the max of its in-image values only. Exact in the
    /// protocol as a tree of `max(a, b) = a + ReLU(b − a)` rounds
    /// (PROTOCOL §4.9).
    MaxPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        padding_end: [usize; 2],
    },
    /// Image → vector (CHW order); a no-op on the data.
    Flatten,
    /// A fixed permutation of the flattened values: `out[k] = in[perm[k]]`,
    /// with the result read as `out` (e.g. the NHWC → NCHW Transpose
    /// tf2onnx puts before a convolution). Exact and free: quantization folds
    /// it into the adjacent linear layer's rows or columns.
    Permute {
        perm: Vec<usize>,
        out: Shape,
    },
    Activation(ActivationKind),
}

impl Layer {
    pub fn describe(&self) -> String {
        match self {
            Layer::Dense { inputs, outputs, .. } => format!("dense {inputs}→{outputs}"),
            Layer::Conv2d { in_channels, out_channels, kernel, stride, padding, padding_end, .. } => {
                let mut d = format!(
                    "conv2d {in_channels}→{out_channels} kernel {}x{} stride {}x{} padding {}x{}",
                    kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]
                );
                if padding_end != padding {
                    d += &format!(" (bottom/right {}x{})", padding_end[0], padding_end[1]);
                }
                d
            }
            Layer::Permute { out, .. } => format!("permute to {:?}", out.dims()),
            Layer::AvgPool2d { kernel, stride } => {
                format!("avgpool2d {}x{} stride {}x{}", kernel[0], kernel[1], stride[0], stride[1])
            }
            Layer::MaxPool2d { kernel, stride, padding, padding_end } => {
                let mut d = format!("maxpool2d {}x{} stride {}x{}", kernel[0], kernel[1], stride[0], stride[1]);
                if padding != &[0, 0] || padding_end != padding {
                    d += &format!(
                        " padding {}x{} (bottom/right {}x{})",
                        padding[0], padding[1], padding_end[0], padding_end[1]
                    );
                }
                d
            }
            Layer::Flatten => "flatten".into(),
            Layer::Activation(k) => k.name().into(),
        }
    }

    /// The windows of a [`Layer::MaxPool2d`] on a `c×h×w` image, in output
    /// (CHW) order: each the flattened input indices of its in-image cells
    /// (padding cells are `−∞` and dropped; never empty for a layer
    /// [`Layer::output_shape`] accepted). Shared by the float evaluation and
    /// the quantizer so both take the same maxima.
    pub fn max_windows(&self, input: Shape) -> Vec<Vec<usize>> {
        let (Layer::MaxPool2d { kernel, stride, padding, .. }, Ok(Shape::Image(_, oh, ow)), Shape::Image(c, h, w)) =
            (self, self.output_shape(input), input)
        else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(c * oh * ow);
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut win = Vec::with_capacity(kernel[0] * kernel[1]);
                    for ky in 0..kernel[0] {
                        for kx in 0..kernel[1] {
                            let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                            let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                win.push((ch * h + iy as usize) * w + ix as usize);
                            }
                        }
                    }
                    out.push(win);
                }
            }
        }
        out
    }

    /// Output shape for `input`, or why the layer cannot take it.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, String> {
        match (self, input) {
            (Layer::Dense { inputs, outputs, weights, bias }, Shape::Vector(d)) => {
                if *inputs != d {
                    return Err(format!("takes {inputs} inputs but receives {d}"));
                }
                if inputs.checked_mul(*outputs) != Some(weights.len()) || bias.len() != *outputs {
                    return Err(format!(
                        "has {} weights and {} biases; expected {} and {}",
                        weights.len(),
                        bias.len(),
                        inputs * outputs,
                        outputs
                    ));
                }
                Ok(Shape::Vector(*outputs))
            }
            (Layer::Dense { .. }, Shape::Image(..)) => {
                Err("receives an image; insert a flatten layer before it".into())
            }
            (
                Layer::Conv2d { in_channels, out_channels, kernel, stride, padding, padding_end, weights, bias },
                Shape::Image(c, h, w),
            ) => {
                if *in_channels != c {
                    return Err(format!("takes {in_channels} channels but receives {c}"));
                }
                if kernel.contains(&0) || stride.contains(&0) {
                    return Err("kernel and stride must be positive".into());
                }
                let count = out_channels
                    .checked_mul(*in_channels)
                    .and_then(|v| v.checked_mul(kernel[0]))
                    .and_then(|v| v.checked_mul(kernel[1]));
                if count != Some(weights.len()) || bias.len() != *out_channels {
                    return Err("weight or bias count does not match its shape".into());
                }
                if padding[0] >= kernel[0]
                    || padding[1] >= kernel[1]
                    || padding_end[0] >= kernel[0]
                    || padding_end[1] >= kernel[1]
                {
                    return Err("padding must be smaller than the kernel".into());
                }
                let (hp, wp) = (h + padding[0] + padding_end[0], w + padding[1] + padding_end[1]);
                if hp < kernel[0] || wp < kernel[1] {
                    return Err(format!("kernel larger than the padded {hp}x{wp} input"));
                }
                Ok(Shape::Image(*out_channels, (hp - kernel[0]) / stride[0] + 1, (wp - kernel[1]) / stride[1] + 1))
            }
            (Layer::AvgPool2d { kernel, stride }, Shape::Image(c, h, w)) => {
                if kernel.contains(&0) || stride.contains(&0) {
                    return Err("kernel and stride must be positive".into());
                }
                if h < kernel[0] || w < kernel[1] {
                    return Err(format!("kernel larger than the {h}x{w} input"));
                }
                Ok(Shape::Image(c, (h - kernel[0]) / stride[0] + 1, (w - kernel[1]) / stride[1] + 1))
            }
            (Layer::MaxPool2d { kernel, stride, padding, padding_end }, Shape::Image(c, h, w)) => {
                if kernel.contains(&0) || stride.contains(&0) {
                    return Err("kernel and stride must be positive".into());
                }
                // Every window must hold an in-image cell (padding is −∞).
                if padding[0] >= kernel[0]
                    || padding[1] >= kernel[1]
                    || padding_end[0] >= kernel[0]
                    || padding_end[1] >= kernel[1]
                {
                    return Err("padding must be smaller than the kernel".into());
                }
                let (hp, wp) = (h + padding[0] + padding_end[0], w + padding[1] + padding_end[1]);
                if hp < kernel[0] || wp < kernel[1] {
                    return Err(format!("kernel larger than the padded {hp}x{wp} input"));
                }
                Ok(Shape::Image(c, (hp - kernel[0]) / stride[0] + 1, (wp - kernel[1]) / stride[1] + 1))
            }
            (Layer::Conv2d { .. } | Layer::AvgPool2d { .. } | Layer::MaxPool2d { .. }, Shape::Vector(_)) => {
                Err("needs an image input [channels, height, width]".into())
            }
            (Layer::Flatten, s) => Ok(Shape::Vector(s.len())),
            (Layer::Permute { perm, out }, s) => {
                if perm.len() != s.len() || out.len() != s.len() {
                    return Err(format!(
                        "permutes {} values into {:?} but receives {}",
                        perm.len(),
                        out.dims(),
                        s.len()
                    ));
                }
                let mut seen = vec![false; perm.len()];
                for &p in perm {
                    if p >= seen.len() || std::mem::replace(&mut seen[p], true) {
                        return Err("is not a permutation (an index is out of range or repeated)".into());
                    }
                }
                Ok(*out)
            }
            (Layer::Activation(_), s) => Ok(s),
        }
    }

    /// Dense, conv2d and avgpool2d: the layers that start a round with S2.
    /// (Flatten and permute only relabel values; they are transparent.)
    pub fn is_linear(&self) -> bool {
        matches!(self, Layer::Dense { .. } | Layer::Conv2d { .. } | Layer::AvgPool2d { .. })
    }
}

/// A float model with the metadata private inference needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: String,
    pub input_shape: Shape,
    /// Every input feature must lie in `[lo, hi]`; the bit budget (§7) is
    /// computed for this range.
    pub input_range: (f64, f64),
    /// `f_in`: inputs are quantized as `round(x·2^{f_in})`. The owner may
    /// declare fewer than [`crate::F_IN`] when the data has less precision
    /// (8-bit pixels): the client's masked input is then `F_IN − f_in` bits
    /// narrower per feature (PROTOCOL §4.1). At most [`crate::MAX_F_IN`].
    pub input_frac_bits: u32,
    pub default_mode: OutputMode,
    pub layers: Vec<Layer>,
}

impl Model {
    /// Shapes after each layer; checks the stack is well formed: it starts
    /// and ends with a linear layer (the protocol's output layer is linear),
    /// activations follow linear layers, and the output is a vector.
    pub fn shapes(&self) -> Result<Vec<Shape>, ModelError> {
        let (lo, hi) = self.input_range;
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(ModelError::Invalid(format!("input range [{lo}, {hi}] is not a finite interval")));
        }
        if self.input_frac_bits > crate::MAX_F_IN {
            return Err(ModelError::Invalid(format!(
                "input precision of {} fraction bits; at most {} are accepted",
                self.input_frac_bits,
                crate::MAX_F_IN
            )));
        }
        let dims_ok = self.input_shape.dims().iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        match dims_ok {
            Some(0) => return Err(ModelError::Invalid("input has no features".into())),
            Some(n) if n <= MAX_VALUES => {}
            _ => {
                return Err(ModelError::Invalid(format!(
                    "input shape {:?} has more than {MAX_VALUES} values",
                    self.input_shape.dims()
                )))
            }
        }
        let mut shapes = Vec::with_capacity(self.layers.len());
        let mut s = self.input_shape;
        let mut prev_linear = false;
        for (i, l) in self.layers.iter().enumerate() {
            s = l.output_shape(s).map_err(|e| ModelError::Invalid(format!("layer {i} ({}) {e}", l.describe())))?;
            if let Layer::Dense { weights, bias, .. } | Layer::Conv2d { weights, bias, .. } = l {
                if !weights.iter().chain(bias).all(|v| v.is_finite()) {
                    return Err(ModelError::Invalid(format!(
                        "layer {i} ({}) has a weight or bias that is NaN or infinite",
                        l.describe()
                    )));
                }
            }
            let macs = match l {
                Layer::Dense { weights, .. } => weights.len(),
                Layer::Conv2d { in_channels, kernel, .. } => {
                    s.len().saturating_mul(in_channels * kernel[0] * kernel[1])
                }
                Layer::AvgPool2d { kernel, .. } | Layer::MaxPool2d { kernel, .. } => {
                    s.len().saturating_mul(kernel[0].saturating_mul(kernel[1]))
                }
                _ => 0,
            };
            if macs > MAX_MACS {
                return Err(ModelError::Invalid(format!(
                    "layer {i} ({}) needs {macs} multiply-adds; the limit is {MAX_MACS}",
                    l.describe()
                )));
            }
            let n = s.dims().iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if !matches!(n, Some(n) if n > 0 && n <= MAX_VALUES) {
                return Err(ModelError::Invalid(format!(
                    "layer {i} ({}) outputs {:?}: empty or more than {MAX_VALUES} values",
                    l.describe(),
                    s.dims()
                )));
            }
            if let Layer::Activation(_) = l {
                if !prev_linear {
                    return Err(ModelError::Invalid(format!(
                        "layer {i} ({}) must follow a linear layer (dense, conv2d, avgpool2d) or maxpool2d",
                        l.describe()
                    )));
                }
                prev_linear = false;
            } else if l.is_linear() || matches!(l, Layer::MaxPool2d { .. }) {
                // A max pool ends in a linear step (`a + ReLU(b − a)` is
                // summed by S1), so an activation may follow it.
                prev_linear = true;
            }
            shapes.push(s);
        }
        if !prev_linear {
            return Err(ModelError::Invalid(
                "the last layer must be linear (its outputs are the logits; the output head applies softmax/sigmoid/argmax)".into(),
            ));
        }
        match s {
            Shape::Vector(d) if d > 0 => {}
            _ => return Err(ModelError::Invalid("the output must be a non-empty vector (add flatten)".into())),
        }
        if !OutputMode::available(s.len()).contains(&self.default_mode) {
            return Err(ModelError::Invalid(format!(
                "default mode {} is not available for {} outputs",
                self.default_mode,
                s.len()
            )));
        }
        Ok(shapes)
    }

    pub fn output_len(&self) -> Result<usize, ModelError> {
        Ok(self.shapes()?.last().map(|s| s.len()).unwrap_or(0))
    }
}
