use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error("model file: {0}")]
    File(String),
    #[error("model file layer {index}: unknown layer type {kind:?}; supported types are {supported}")]
    UnknownLayer { index: usize, kind: String, supported: &'static str },
    #[error("the model does not fit the bit budget: {layer} needs {bits_needed} bits, but the largest ring has k = {available} (PROTOCOL §7). Narrow the declared input range or reduce weight precision")]
    Budget { layer: String, bits_needed: u32, available: u32 },
    #[error("input has {got} values; this model takes exactly {expected}")]
    InputLength { expected: usize, got: usize },
    #[error("input value {index} is {value}, outside the model's declared range [{lo}, {hi}]")]
    InputOutOfRange { index: usize, value: f64, lo: f64, hi: f64 },
    #[error("output mode {mode} is not available for this model; available: {available}")]
    UnsupportedMode { mode: String, available: String },
}
