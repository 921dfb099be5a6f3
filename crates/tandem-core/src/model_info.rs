//! The public metadata S1 publishes per model.

use crate::error::{ProtocolError, Result};
use crate::masking::InputMasking;
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
    /// `B` of the compact input mask (§4.1): the client sends
    /// `x_int + B + r`. 0 with the full-ring mask.
    pub input_offset: u64,
    /// `m`: each `r_i` is uniform in `[0, 2^m)`; `m = k` is the full-ring
    /// mask.
    pub input_mask_bits: u32,
}

impl ModelInfo {
    /// The metadata of a quantized model served as `id`.
    pub fn of(id: &str, m: &QuantizedModel) -> Self {
        let masking = InputMasking::of_model(m);
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
            input_offset: masking.offset,
            input_mask_bits: masking.mask_bits,
        }
    }
    /// The input mask, recomputed from the public range, `f_in` and `k`
    /// ([`InputMasking::new`]) and checked against the published
    /// `input_offset` and `input_mask_bits`: a client never masks with
    /// parameters the model's range does not imply (a smaller `m` would hide
    /// less than SECURITY.md states).
    pub fn masking(&self) -> Result<InputMasking> {
        let m = InputMasking::new(self.input_range, self.f_in, self.ring_bits);
        if (m.offset, m.mask_bits) != (self.input_offset, self.input_mask_bits) {
            return Err(ProtocolError::PeerMisbehaved(format!(
                "the model info publishes input_offset {} and input_mask_bits {}, but its input range, f_in \
                 and ring imply {} and {} (docs/PROTOCOL.md §4.1)",
                self.input_offset, self.input_mask_bits, m.offset, m.mask_bits
            )));
        }
        Ok(m)
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
