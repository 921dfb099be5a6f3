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

/// A seed session's id: 16 random bytes S2 chose (public).
pub type SeedSessionId = [u8; 16];

/// Where a query's seed comes from (§4.1, §4.1a).
#[derive(Clone, Debug, PartialEq)]
pub enum SeedSource {
    /// A session of length 1: `[secret]` for this query alone, derived
    /// under `epoch`.
    Encrypted {
        /// `[secret]` under S2's key.
        enc_seed: EncryptedSeed,
        /// S2's seed epoch the client derived its seed under.
        epoch: SeedEpoch,
    },
    /// Query `counter` of the seed session `id`: no ciphertext at all.
    Session {
        /// The seed session S2 opened.
        id: SeedSessionId,
        /// The query's counter, below the session's `max_queries`; each is
        /// served at most once.
        counter: u64,
    },
}

/// Client → S1 → S2 (§4.1a): open a seed session from one encrypted secret.
/// S1 relays it, rerandomized.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenSeedSession {
    /// `[secret]` under S2's key.
    pub enc_secret: EncryptedSeed,
    /// S2's seed epoch the client derived its session key under.
    pub epoch: SeedEpoch,
}

/// S2 → S1 → client: the seed session is open.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedSessionOpened {
    /// The session's id.
    pub id: SeedSessionId,
    /// Counters `0..max_queries` may be used, each once.
    pub max_queries: u64,
    /// S2 forgets the session this long after it opened it.
    pub expires_in_seconds: u32,
}

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
    /// The query's seed.
    pub seed: SeedSource,
}

/// Client → S1: ask for a ticket, i.e. a session preprocessed ahead of the
/// input (§4.0). The client keeps the seed until it has an input.
#[derive(Clone, Debug, PartialEq)]
pub struct TicketRequest {
    /// The model to preprocess for.
    pub model_id: String,
    /// The output mode.
    pub mode: OutputMode,
    /// The ticket's seed.
    pub seed: SeedSource,
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
    /// The client's seed: its `[secret]` rerandomized by S1 with the epoch
    /// it named (S2 refuses an epoch it does not hold before decrypting),
    /// or a seed session and counter (S2 refuses an unknown session or a
    /// used counter before anything else).
    pub seed: SeedSource,
    /// `d`, the number of input features.
    pub input_len: u32,
    /// `k` of the ring the session runs in.
    pub ring_bits: u32,
    /// `m` of the input mask: S2 derives each `r_i` in `[0, 2^m)` (§4.1;
    /// `m = k` is the full-ring mask). The model's public
    /// [`crate::InputMasking`]; S2 accepts `1..=k`.
    pub input_mask_bits: u32,
    /// The output count of the model's first linear layer, for an engine
    /// whose first preprocessing message depends on it (the lattice
    /// engine's packing layout); 0 when the engine does not use it. S2
    /// learns that width from the first round's count anyway, unless two
    /// linear layers follow each other (SECURITY.md's leakage table).
    pub first_layer_outputs: u32,
    /// The lattice engine's OT setup this session's multiplications run
    /// on (PROTOCOL §4.2c; public, names S2's half of the base OTs); `None`
    /// for every session that does not run every step on the lattice engine.
    pub ot_setup: Option<[u8; 16]>,
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
