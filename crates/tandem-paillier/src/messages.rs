//! The Paillier engine's preprocessing messages (PROTOCOL §4.2, §4.5,
//! §4.7, §4.8): after the core's `SessionStart`, S2 answers `InputMasks`;
//! then per hidden layer `BlindedRound` → `RhoMasks`, then
//! `BlindedOutput` → `SessionReady`.

use crate::packing::PackingParams;
use crate::Ciphertext;
use tandem_model::{ActivationKind, OutputMode};

/// S2 → S1: `[r_i]` for the derived input mask.
#[derive(Clone, Debug, PartialEq)]
pub struct InputMasks {
    pub enc_r: Vec<Ciphertext>,
}

/// S1 → S2, preprocessing: the homomorphic half of one hidden activation
/// layer (§4.5), in position order.
#[derive(Clone, Debug, PartialEq)]
pub struct BlindedRound {
    pub kind: ActivationKind,
    /// Scale `s` of the pre-activations (sigmoid/tanh need it).
    pub scale: u32,
    /// Number of positions (neurons) of the layer.
    pub count: u32,
    pub packing: PackingParams,
    /// `C_p = t_j·g_j + μ_j`, packed and rerandomized.
    pub packed: Vec<Ciphertext>,
}

/// S2 → S1, preprocessing: `[ρ_p]` for one hidden layer; S2 keeps `ρ_p`
/// and the decrypted `c_p` for the online phase.
#[derive(Clone, Debug, PartialEq)]
pub struct RhoMasks {
    pub enc_rho: Vec<Ciphertext>,
}

/// S1 → S2, preprocessing: the homomorphic half of the output layer (§4.8).
#[derive(Clone, Debug, PartialEq)]
pub struct BlindedOutput {
    pub mode: OutputMode,
    /// Scale of the logits.
    pub scale: u32,
    /// Number of logits.
    pub count: u32,
    pub packing: PackingParams,
    pub packed: Vec<Ciphertext>,
}

/// S2 → S1: the session is preprocessed and waits for its online phase.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionReady;

/// S1's next preprocessing message to S2.
#[derive(Clone, Debug, PartialEq)]
pub enum PreprocessingStep {
    Round(BlindedRound),
    Output(BlindedOutput),
}

/// S2's next preprocessing message to S1 (the engine trait's `ToS1`).
#[derive(Clone, Debug, PartialEq)]
pub enum PreprocessingReply {
    InputMasks(InputMasks),
    Rho(RhoMasks),
    Ready(SessionReady),
}
