//! The native model file (`.tandem`), version 1:
//!
//! ```text
//! magic  "TANDEMMD"            8 bytes
//! version u32 LE = 1
//! header_len u64 LE
//! header  JSON, header_len bytes (see `Header`)
//! blob    f32 LE values; tensors are [offset, len] in f32 units into it
//! ```
//!
//! The header is small JSON so a person can read it with `head -c`; the
//! weights are raw little-endian floats so large models load fast.

use crate::error::ModelError;
use crate::ir::{ActivationKind, Layer, Model, OutputMode, Shape};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const MAGIC: &[u8; 8] = b"TANDEMMD";
pub const VERSION: u32 = 1;
/// Headers above this size are refused before any allocation.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;
pub const SUPPORTED_LAYERS: &str = "dense, conv2d, avgpool2d, maxpool2d, flatten, permute, relu, sigmoid, tanh";

#[derive(Serialize, Deserialize)]
struct Header {
    name: String,
    input_shape: Vec<usize>,
    input_range: [f64; 2],
    /// Absent (files written before it, or at the default) means
    /// [`crate::F_IN`]; only a declared precision is written, so a model at
    /// the default serializes exactly as before.
    #[serde(default = "default_f_in", skip_serializing_if = "is_default_f_in")]
    input_frac_bits: u32,
    default_mode: OutputMode,
    layers: Vec<Value>,
}

fn default_f_in() -> u32 {
    crate::F_IN
}

fn is_default_f_in(f: &u32) -> bool {
    *f == crate::F_IN
}

fn err(msg: impl Into<String>) -> ModelError {
    ModelError::File(msg.into())
}

pub fn to_bytes(model: &Model) -> Result<Vec<u8>, ModelError> {
    model.shapes()?;
    let mut blob: Vec<f32> = Vec::new();
    let mut put = |v: &[f32]| {
        let off = blob.len();
        blob.extend_from_slice(v);
        json!([off, v.len()])
    };
    let layers = model
        .layers
        .iter()
        .map(|l| match l {
            Layer::Dense { inputs, outputs, weights, bias } => json!({
                "type": "dense", "inputs": inputs, "outputs": outputs,
                "weights": put(weights), "bias": put(bias),
            }),
            Layer::Conv2d { in_channels, out_channels, kernel, stride, padding, padding_end, weights, bias } => {
                let mut v = json!({
                    "type": "conv2d", "in_channels": in_channels, "out_channels": out_channels,
                    "kernel": kernel, "stride": stride, "padding": padding,
                    "weights": put(weights), "bias": put(bias),
                });
                // Written only when it differs, so symmetric models keep their bytes.
                if padding_end != padding {
                    v["padding_end"] = json!(padding_end);
                }
                v
            }
            // Indices below 2^24 (MAX_VALUES) are exact in f32.
            Layer::Permute { perm, out } => json!({
                "type": "permute", "out": out.dims(),
                "perm": put(&perm.iter().map(|&p| p as f32).collect::<Vec<_>>()),
            }),
            Layer::AvgPool2d { kernel, stride } => json!({"type": "avgpool2d", "kernel": kernel, "stride": stride}),
            Layer::MaxPool2d { kernel, stride, padding, padding_end } => json!({
                "type": "maxpool2d", "kernel": kernel, "stride": stride,
                "padding": padding, "padding_end": padding_end,
            }),
            Layer::Flatten => json!({"type": "flatten"}),
            Layer::Activation(k) => json!({"type": k.name()}),
        })
        .collect();
    let header = Header {
        name: model.name.clone(),
        input_shape: model.input_shape.dims(),
        input_range: [model.input_range.0, model.input_range.1],
        input_frac_bits: model.input_frac_bits,
        default_mode: model.default_mode,
        layers,
    };
    let h = serde_json::to_vec_pretty(&header).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::with_capacity(20 + h.len() + blob.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for v in blob {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err(err("not a tandem model file (missing TANDEMMD magic)"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(err(format!("format version {version}; this build reads version {VERSION}")));
    }
    let hlen = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    if hlen > MAX_HEADER_BYTES || hlen > (bytes.len() - 20) as u64 {
        return Err(err(format!("header length {hlen} exceeds the file or the {MAX_HEADER_BYTES}-byte limit")));
    }
    let hend = 20 + hlen as usize;
    let header: Header = serde_json::from_slice(&bytes[20..hend]).map_err(|e| err(format!("header: {e}")))?;
    let blob_bytes = &bytes[hend..];
    if !blob_bytes.len().is_multiple_of(4) {
        return Err(err("weight blob length is not a multiple of 4 bytes"));
    }
    let blob: Vec<f32> = blob_bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
    let layers =
        header.layers.iter().enumerate().map(|(i, v)| parse_layer(i, v, &blob)).collect::<Result<Vec<_>, _>>()?;
    let model = Model {
        name: header.name,
        input_shape: Shape::from_dims(&header.input_shape)?,
        input_range: (header.input_range[0], header.input_range[1]),
        input_frac_bits: header.input_frac_bits,
        default_mode: header.default_mode,
        layers,
    };
    model.shapes()?;
    Ok(model)
}

fn parse_layer(index: usize, v: &Value, blob: &[f32]) -> Result<Layer, ModelError> {
    let lerr = |m: String| err(format!("layer {index}: {m}"));
    let kind = v.get("type").and_then(Value::as_str).ok_or_else(|| lerr("missing \"type\"".into()))?;
    let usize_field = |name: &str| -> Result<usize, ModelError> {
        v.get(name)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| lerr(format!("missing or non-integer field {name:?}")))
    };
    let pair = |name: &str| -> Result<[usize; 2], ModelError> {
        serde_json::from_value(v.get(name).cloned().unwrap_or(Value::Null))
            .map_err(|_| lerr(format!("field {name:?} must be [a, b]")))
    };
    let tensor = |name: &str| -> Result<Vec<f32>, ModelError> {
        let [off, len] = pair(name)?;
        let end = off.checked_add(len).filter(|&e| e <= blob.len());
        match end {
            Some(end) => Ok(blob[off..end].to_vec()),
            None => Err(lerr(format!("tensor {name:?} [{off}, {len}] lies outside the {}-value blob", blob.len()))),
        }
    };
    Ok(match kind {
        "dense" => Layer::Dense {
            inputs: usize_field("inputs")?,
            outputs: usize_field("outputs")?,
            weights: tensor("weights")?,
            bias: tensor("bias")?,
        },
        "conv2d" => Layer::Conv2d {
            in_channels: usize_field("in_channels")?,
            out_channels: usize_field("out_channels")?,
            kernel: pair("kernel")?,
            stride: pair("stride")?,
            padding: pair("padding")?,
            padding_end: if v.get("padding_end").is_some() { pair("padding_end")? } else { pair("padding")? },
            weights: tensor("weights")?,
            bias: tensor("bias")?,
        },
        "permute" => {
            let dims: Vec<usize> = serde_json::from_value(v.get("out").cloned().unwrap_or(Value::Null))
                .map_err(|_| lerr("field \"out\" must be a list of dimensions".into()))?;
            let out = Shape::from_dims(&dims).map_err(|e| lerr(e.to_string()))?;
            let perm = tensor("perm")?
                .into_iter()
                .map(|p| {
                    if p >= 0.0 && p.fract() == 0.0 && (p as f64) < crate::ir::MAX_VALUES as f64 {
                        Ok(p as usize)
                    } else {
                        Err(lerr(format!("permutation index {p} is not an index")))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Layer::Permute { perm, out }
        }
        "avgpool2d" => Layer::AvgPool2d { kernel: pair("kernel")?, stride: pair("stride")? },
        "maxpool2d" => Layer::MaxPool2d {
            kernel: pair("kernel")?,
            stride: pair("stride")?,
            padding: pair("padding")?,
            padding_end: pair("padding_end")?,
        },
        "flatten" => Layer::Flatten,
        "relu" => Layer::Activation(ActivationKind::Relu),
        "sigmoid" => Layer::Activation(ActivationKind::Sigmoid),
        "tanh" => Layer::Activation(ActivationKind::Tanh),
        other => return Err(ModelError::UnknownLayer { index, kind: other.into(), supported: SUPPORTED_LAYERS }),
    })
}

pub fn load(path: &std::path::Path) -> Result<Model, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    from_bytes(&bytes).map_err(|e| match e {
        ModelError::File(m) => err(format!("{}: {m}", path.display())),
        other => other,
    })
}

pub fn save(model: &Model, path: &std::path::Path) -> Result<(), ModelError> {
    std::fs::write(path, to_bytes(model)?).map_err(|e| err(format!("{}: {e}", path.display())))
}
