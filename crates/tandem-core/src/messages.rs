//! The plain message structs that pass between the roles (PROTOCOL §4).
//! Nothing here knows about sockets; the gRPC shells convert them to and from
//! protobuf.
//!
//! A query has two phases (docs/PROTOCOL.md §4.0):
//! - **preprocessing**: everything homomorphic. It depends on the seed and
//!   on the servers' randomness, never on the input, so it can run before
//!   the client has an input ("tickets"). It opens with [`SessionStart`];
//!   the rest of its messages belong to the preprocessing engine (the
//!   Paillier engine's are in `tandem_paillier::messages`);
//! - **online**: ring arithmetic only. `QueryRequest` (or `OnlineRequest`
//!   for a ticket), then per hidden layer `MaskedRound` → `ActivationValues`,
//!   then `MaskedOutput` → `OutputResponse` → `QueryResponse`.

use crate::seed::SeedEpoch;
use tandem_model::OutputMode;

/// A session (and ticket) id, chosen by S1.
pub type SessionId = [u8; 16];

/// The client's `[secret]` under S2's Paillier key: the ciphertext as
/// fixed-width big-endian bytes (`⌈2|N|/8⌉`). Opaque to the core; S1
/// rerandomizes it and S2 decrypts it, both in the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedSeed(pub Vec<u8>);

/// Client → S1 (§4.1): a one-shot query, preprocessing included.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryRequest<R> {
    /// The model to query.
    pub model_id: String,
    /// The output mode.
    pub mode: OutputMode,
    /// `ỹ = x_int + r (mod 2^k)`, `r_i ∈ [0, 2^m)`; on the wire each is
    /// sent as `ỹ_i + B` ([`crate::InputMasking`]).
    pub masked_input: Vec<R>,
    /// `[secret]` under S2's key.
    pub enc_seed: EncryptedSeed,
    /// S2's seed epoch the client derived its seed under.
    pub epoch: SeedEpoch,
}

/// Client → S1: ask for a ticket, i.e. a session preprocessed ahead of the
/// input (§4.0). The client keeps the seed until it has an input.
#[derive(Clone, Debug, PartialEq)]
pub struct TicketRequest {
    /// The model to preprocess for.
    pub model_id: String,
    /// The output mode.
    pub mode: OutputMode,
    /// `[secret]` under S2's key.
    pub enc_seed: EncryptedSeed,
    /// S2's seed epoch the client derived its seed under.
    pub epoch: SeedEpoch,
}

/// S1 → client: the ticket is ready. The id is the session id, which the
/// client needs anyway to open the sealed result.
#[derive(Clone, Debug, PartialEq)]
pub struct Ticket {
    /// The session id; the client needs it to open the sealed result.
    pub session_id: SessionId,
    /// The model.
    pub model_id: String,
    /// The output mode.
    pub mode: OutputMode,
}

/// Client → S1: the online query on a ticket.
#[derive(Clone, Debug, PartialEq)]
pub struct TicketQuery<R> {
    /// The ticket (the preprocessed session id).
    pub ticket: SessionId,
    /// The model.
    pub model_id: String,
    /// The output mode.
    pub mode: OutputMode,
    /// `ỹ = x_int + r (mod 2^k)`, `r` derived from the ticket's seed; sent
    /// as for [`QueryRequest::masked_input`].
    pub masked_input: Vec<R>,
}

/// S1 → S2: open a session (§4.2).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionStart {
    /// The session id S1 chose.
    pub session_id: SessionId,
    /// The client's `[secret]`, rerandomized by S1.
    pub enc_seed: EncryptedSeed,
    /// The seed epoch the client named (public; S2 refuses one it does not
    /// hold before decrypting).
    pub epoch: SeedEpoch,
    /// `d`, the number of input features.
    pub input_len: u32,
    /// `k` of the ring the session runs in.
    pub ring_bits: u32,
    /// `m` of the input mask: S2 derives each `r_i` in `[0, 2^m)` (§4.1;
    /// `m = k` is the full-ring mask). The model's public
    /// [`crate::InputMasking`]; S2 accepts `1..=k`.
    pub input_mask_bits: u32,
}

/// S1 → S2, online: the ring half of one hidden layer, `e_p = t_j·u_j + μ_j`.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskedRound<R> {
    /// `e_p = t_j·u_j + μ_j`, in position order.
    pub e: Vec<R>,
}

/// S2 → S1, online (§4.6): `h_p = F(v_p) + ρ_p`.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationValues<R> {
    /// `h_p = F(v_p) + ρ_p`, in position order.
    pub h: Vec<R>,
}

/// S1 → S2, online: the ring half of the output layer; `e` is empty in
/// `logits` mode, where S2 only needs `c`.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskedOutput<R> {
    /// `e_p`, in position order (empty in `logits` mode).
    pub e: Vec<R>,
}

/// S2 → S1: the result sealed for the client (§6).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputResponse {
    /// The result sealed for the client (§6).
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
    /// The session id (the sealed result's associated data).
    pub session_id: SessionId,
    /// S2's sealed result.
    pub sealed: Vec<u8>,
    /// What S1 adds in the clear.
    pub aux: OutputAux<R>,
}

/// S1's next online message to S2.
#[derive(Clone, Debug, PartialEq)]
pub enum OnlineStep<R> {
    /// A hidden round.
    Round(MaskedRound<R>),
    /// The output round.
    Output(MaskedOutput<R>),
}
