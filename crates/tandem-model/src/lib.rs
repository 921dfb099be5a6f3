//! Models for tandem: the float IR, fixed-point quantization (PROTOCOL §2),
//! the bit budget (§7), the float evaluator and the integer reference that
//! private inference must match bit for bit, and the native file format.

pub mod activation;
pub mod drift;
pub mod error;
pub mod format;
pub mod ir;
pub mod quantize;
pub mod testing;

pub use drift::{check_quantization_drift, DriftBound, DriftReport};
pub use error::ModelError;
pub use ir::{ActivationKind, Layer, Model, OutputMode, Shape};
pub use quantize::{
    max_abs_input, quantize_input, Output, QLayer, QLinear, QuantConfig, QuantizedModel, F_ACT, F_IN, KAPPA,
    MAX_ADAPTIVE_WEIGHT_BITS, MAX_F_IN, TAU,
};
