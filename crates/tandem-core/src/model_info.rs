//! The public metadata S1 publishes per model.

use crate::error::Result;
use serde::{Deserialize, Serialize};
use tandem_model::{ModelError, OutputMode, QuantizedModel};

/// What a client must know about a model: public metadata S1 publishes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model id clients name.
    pub id: String,
    /// Input tensor shape (row-major).
    pub input_shape: Vec<usize>,
    /// The range every feature is clipped to before quantization.
    pub input_range: (f64, f64),
    /// Fraction bits of the quantized input.
    pub f_in: u32,
    /// Fraction bits of activations and probabilities.
    pub f_act: u32,
    /// `k` of the ring `Z_{2^k}`.
    pub ring_bits: u32,
    /// Number of outputs (logits).
    pub output_len: usize,
    /// Fraction bits of the logits.
    pub output_scale: u32,
    /// Output modes the model can answer in.
    pub modes: Vec<OutputMode>,
    /// The mode used when a request names none.
    pub default_mode: OutputMode,
}

impl ModelInfo {
    /// The metadata of a quantized model served as `id`.
    pub fn of(id: &str, m: &QuantizedModel) -> Self {
        ModelInfo {
            id: id.into(),
            input_shape: m.input_shape.dims(),
            input_range: m.input_range,
            f_in: m.f_in,
            f_act: m.f_act,
            ring_bits: m.ring_bits,
            output_len: m.output_len,
            output_scale: m.output_scale(),
            modes: m.modes(),
            default_mode: m.default_mode,
        }
    }
    /// Number of input features.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }
    /// Refuses a mode the model cannot answer in.
    pub fn check_mode(&self, mode: OutputMode) -> Result<()> {
        if self.modes.contains(&mode) {
            Ok(())
        } else {
            Err(ModelError::UnsupportedMode {
                mode: mode.name().into(),
                available: self.modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
            }
            .into())
        }
    }
}
