//! The plain message structs that pass between the roles (PROTOCOL §4).
//! Nothing here knows about sockets; the gRPC shells convert them to and from
//! protobuf.

use tandem_crypto::packing::PackingParams;
use tandem_crypto::Ciphertext;
use tandem_model::{ActivationKind, OutputMode};

pub type SessionId = [u8; 16];

/// Client → S1 (§4.1).
#[derive(Clone, Debug, PartialEq)]
pub struct QueryRequest<R> {
    pub model_id: String,
    pub mode: OutputMode,
    /// `ỹ = x_int + r (mod 2^k)`.
    pub masked_input: Vec<R>,
    /// `[seed]` under S2's key.
    pub enc_seed: Ciphertext,
}

/// S1 → S2: open a session (§4.2).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionStart {
    pub session_id: SessionId,
    /// The client's `[seed]`, rerandomized by S1.
    pub enc_seed: Ciphertext,
    /// `d`, the number of input features.
    pub input_len: u32,
    pub ring_bits: u32,
}

/// S2 → S1: `[r_i]` for the derived input mask.
#[derive(Clone, Debug, PartialEq)]
pub struct InputMasks {
    pub enc_r: Vec<Ciphertext>,
}

/// S1 → S2: one hidden activation layer (§4.5), in position order.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationRequest<R> {
    pub kind: ActivationKind,
    /// Scale `s` of the pre-activations (sigmoid/tanh need it).
    pub scale: u32,
    /// `e_p = t_j·u_j + μ_j`.
    pub e: Vec<R>,
    pub packing: PackingParams,
    /// `C_p = t_j·g_j + μ_j`, packed and rerandomized.
    pub packed: Vec<Ciphertext>,
}

/// S2 → S1 (§4.6).
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationResponse<R> {
    /// `h_p = F(v_p) + ρ_p`.
    pub h: Vec<R>,
    /// `[ρ_p]`.
    pub enc_rho: Vec<Ciphertext>,
}

/// S1 → S2: the output layer (§4.8).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputRequest<R> {
    pub mode: OutputMode,
    /// Scale of the logits.
    pub scale: u32,
    /// Number of logits.
    pub count: u32,
    /// `e_p`; empty in `logits` mode, where S2 only needs `c`.
    pub e: Vec<R>,
    pub packing: PackingParams,
    pub packed: Vec<Ciphertext>,
}

/// S2 → S1: the result sealed for the client (§6).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputResponse {
    pub sealed: Vec<u8>,
}

/// What S1 adds in the clear so the client can finish (§4.8's "S1 returns").
#[derive(Clone, Debug, PartialEq)]
pub enum OutputAux<R> {
    /// `logits`: `u + μ`.
    Logits(Vec<R>),
    /// `probabilities` and multi-class `label`: `π`, position `p` → neuron `π[p]`.
    Permutation(Vec<u32>),
    /// `sigmoid` and single-output `label`: whether `σ = −1`.
    Negated(bool),
}

/// S1 → client.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResponse<R> {
    pub session_id: SessionId,
    pub sealed: Vec<u8>,
    pub aux: OutputAux<R>,
}

/// S1's next message to S2.
#[derive(Clone, Debug, PartialEq)]
pub enum ToActivation<R> {
    Activate(ActivationRequest<R>),
    Finish(OutputRequest<R>),
}
