//! protobuf ⇄ [`tandem_core::messages`], engine-neutral: what the client
//! and the online phase exchange. Decoding checks every length against what
//! the receiver expects before it allocates or parses. The client's
//! `[secret]` is checked for its exact width here and parsed by the engine.

use crate::status::invalid;
use crate::v1 as pb;
use tandem_core::messages as m;
use tandem_core::messages::SessionId;
use tandem_core::paillier_pk::PublicKey;
use tandem_core::{EncryptedSeed, InputMasking, Ring, SeedEpoch};
use tandem_model::{ActivationKind, OutputMode};
use tandem_core::{CryptoError, ProtocolError};

// ---------------------------------------------------------------- enums

pub fn mode_to_proto(mode: OutputMode) -> pb::OutputMode {
    match mode {
        OutputMode::Label => pb::OutputMode::Label,
        OutputMode::Probabilities => pb::OutputMode::Probabilities,
        OutputMode::Logits => pb::OutputMode::Logits,
        OutputMode::Sigmoid => pb::OutputMode::Sigmoid,
    }
}

/// `None` for `OUTPUT_MODE_UNSPECIFIED` (use the model's default).
pub fn mode_from_proto(v: i32) -> Result<Option<OutputMode>, ProtocolError> {
    match pb::OutputMode::try_from(v) {
        Ok(pb::OutputMode::Unspecified) => Ok(None),
        Ok(pb::OutputMode::Label) => Ok(Some(OutputMode::Label)),
        Ok(pb::OutputMode::Probabilities) => Ok(Some(OutputMode::Probabilities)),
        Ok(pb::OutputMode::Logits) => Ok(Some(OutputMode::Logits)),
        Ok(pb::OutputMode::Sigmoid) => Ok(Some(OutputMode::Sigmoid)),
        Err(_) => Err(invalid(format!(
            "unknown output mode {v}; accepted: 0 (model default), 1 label, 2 probabilities, 3 logits, 4 sigmoid"
        ))),
    }
}

/// Like [`mode_from_proto`], but the mode must be set.
pub fn required_mode(v: i32, field: &str) -> Result<OutputMode, ProtocolError> {
    mode_from_proto(v)?.ok_or_else(|| invalid(format!("{field}: the output mode must be set")))
}

pub fn kind_to_proto(kind: ActivationKind) -> pb::ActivationKind {
    match kind {
        ActivationKind::Relu => pb::ActivationKind::Relu,
        ActivationKind::Sigmoid => pb::ActivationKind::Sigmoid,
        ActivationKind::Tanh => pb::ActivationKind::Tanh,
    }
}

pub fn kind_from_proto(v: i32) -> Result<ActivationKind, ProtocolError> {
    match pb::ActivationKind::try_from(v) {
        Ok(pb::ActivationKind::Relu) => Ok(ActivationKind::Relu),
        Ok(pb::ActivationKind::Sigmoid) => Ok(ActivationKind::Sigmoid),
        Ok(pb::ActivationKind::Tanh) => Ok(ActivationKind::Tanh),
        _ => Err(invalid(format!("activation kind {v}; accepted: 1 relu, 2 sigmoid, 3 tanh"))),
    }
}

// ---------------------------------------------------------------- vectors

/// Ring values as concatenated `k/8`-byte little-endian words.
pub fn encode_ring<R: Ring>(v: &[R]) -> Vec<u8> {
    tandem_core::ring::encode_vec(v)
}

/// Inverse of [`encode_ring`]; `expected` is the number of values the
/// receiver needs (`None`: any positive multiple of `k/8` bytes).
pub fn decode_ring<R: Ring>(b: &[u8], expected: Option<usize>, field: &str) -> Result<Vec<R>, ProtocolError> {
    let w = R::BYTES;
    // checked: `expected` may be absurd, and must then fail the comparison, not overflow
    match expected {
        Some(n) if n.checked_mul(w) != Some(b.len()) => Err(invalid(format!(
            "{field} has {} bytes; expected {n} ring values of {w} bytes (k = {}, little-endian) = {} bytes",
            b.len(),
            R::BITS,
            n as u128 * w as u128
        ))),
        None if !b.len().is_multiple_of(w) => Err(invalid(format!(
            "{field} has {} bytes, not a multiple of {w} (one ring value is k/8 = {w} bytes)",
            b.len()
        ))),
        _ => Ok(tandem_core::ring::decode_vec::<R>(b).expect("length checked")),
    }
}

pub fn session_id_from_bytes(b: &[u8], field: &str) -> Result<SessionId, ProtocolError> {
    id16(b, field, "a session id")
}

/// An OT setup id (from `SetupOt`): exactly 16 bytes. Its own function so
/// that a wrong length names the OT setup, not a session.
pub fn ot_setup_id_from_bytes(b: &[u8], field: &str) -> Result<[u8; 16], ProtocolError> {
    id16(b, field, "an OT setup id (from SetupOt)")
}

fn id16(b: &[u8], field: &str, what: &str) -> Result<[u8; 16], ProtocolError> {
    b.try_into().map_err(|_| invalid(format!("{field} has {} bytes; {what} is exactly 16", b.len())))
}

// ---------------------------------------------------------------- keys

/// A seed epoch: exactly 16 bytes.
pub fn epoch_from_proto(b: &[u8], field: &str) -> Result<SeedEpoch, ProtocolError> {
    SeedEpoch::from_slice(b).ok_or_else(|| {
        invalid(format!(
            "{field} has {} bytes; a seed epoch is exactly 16 (activation_key.seed_epoch of the model info)",
            b.len()
        ))
    })
}

/// Parses a key (pure Rust, for the client) and checks that its stated
/// fingerprint is its own (the caller must still compare the fingerprint
/// with a pinned one).
pub fn public_key_from_proto(p: &pb::PaillierPublicKey) -> Result<PublicKey, ProtocolError> {
    let bad = |what: String| ProtocolError::Crypto(CryptoError::InvalidKey(format!("the activation server's: {what}")));
    let hex_n = if p.n_hex.len() % 2 == 1 { format!("0{}", p.n_hex) } else { p.n_hex.clone() };
    let n = hex::decode(&hex_n).map_err(|_| bad("N is not valid hex".into()))?;
    let pk = PublicKey::from_bytes(&n).map_err(|e| bad(e.to_string()))?;
    if pk.fingerprint() != p.fingerprint {
        return Err(bad("fingerprint does not match N".into()));
    }
    Ok(pk)
}

/// The client's `[secret]` as it arrives: exactly one ciphertext's width
/// (`⌈2|N|/8⌉` bytes) for the server's key; the engine parses it.
pub fn enc_seed_from_bytes(b: &[u8], ciphertext_bytes: usize, field: &str) -> Result<EncryptedSeed, ProtocolError> {
    if b.len() != ciphertext_bytes {
        return Err(invalid(format!(
            "{field} has {} bytes; one ciphertext under the activation server's key is exactly {ciphertext_bytes} (big-endian)",
            b.len()
        )));
    }
    Ok(EncryptedSeed(b.to_vec()))
}

/// A seed session id: exactly 16 bytes.
pub fn seed_session_id_from_bytes(b: &[u8], field: &str) -> Result<m::SeedSessionId, ProtocolError> {
    b.try_into().map_err(|_| {
        invalid(format!("{field} has {} bytes; a seed session id is exactly 16 (from OpenSeedSession)", b.len()))
    })
}

/// The seed fields of a request: `enc_seed` with `seed_epoch`, or
/// `seed_session_id` with `seed_counter`, never both.
pub fn seed_source_from_proto(
    enc_seed: &[u8],
    seed_epoch: &[u8],
    seed_session_id: &[u8],
    seed_counter: u64,
    ciphertext_bytes: usize,
) -> Result<m::SeedSource, ProtocolError> {
    match (enc_seed.is_empty(), seed_session_id.is_empty()) {
        (false, true) => Ok(m::SeedSource::Encrypted {
            enc_seed: enc_seed_from_bytes(enc_seed, ciphertext_bytes, "enc_seed")?,
            epoch: epoch_from_proto(seed_epoch, "seed_epoch")?,
        }),
        (true, false) if seed_epoch.is_empty() => Ok(m::SeedSource::Session {
            id: seed_session_id_from_bytes(seed_session_id, "seed_session_id")?,
            counter: seed_counter,
        }),
        (true, false) => Err(invalid("seed_epoch goes with enc_seed; a query in a seed session sends neither")),
        (false, false) => Err(invalid("send either enc_seed (with seed_epoch) or seed_session_id (with seed_counter), not both")),
        (true, true) => Err(invalid(
            "no seed: send enc_seed with seed_epoch, or seed_session_id with seed_counter (from OpenSeedSession)",
        )),
    }
}

/// The seed fields for a proto message: (enc_seed, seed_epoch,
/// seed_session_id, seed_counter).
pub fn seed_source_to_proto(s: &m::SeedSource) -> (Vec<u8>, Vec<u8>, Vec<u8>, u64) {
    match s {
        m::SeedSource::Encrypted { enc_seed, epoch } => (enc_seed.0.clone(), epoch.0.to_vec(), Vec::new(), 0),
        m::SeedSource::Session { id, counter } => (Vec::new(), Vec::new(), id.to_vec(), *counter),
    }
}

/// The client's (or S1's) request to open a seed session.
pub fn open_seed_session_to_proto(o: &m::OpenSeedSession) -> pb::OpenSeedSessionRequest {
    pb::OpenSeedSessionRequest { enc_secret: o.enc_secret.0.clone(), seed_epoch: o.epoch.0.to_vec() }
}

/// S1's and S2's side of an opening request.
pub fn open_seed_session_from_proto(
    ciphertext_bytes: usize,
    o: &pb::OpenSeedSessionRequest,
) -> Result<m::OpenSeedSession, ProtocolError> {
    Ok(m::OpenSeedSession {
        enc_secret: enc_seed_from_bytes(&o.enc_secret, ciphertext_bytes, "enc_secret")?,
        epoch: epoch_from_proto(&o.seed_epoch, "seed_epoch")?,
    })
}

/// S2's answer.
pub fn seed_session_to_proto(o: &m::SeedSessionOpened) -> pb::SeedSession {
    pb::SeedSession {
        seed_session_id: o.id.to_vec(),
        max_queries: o.max_queries,
        expires_in_seconds: o.expires_in_seconds,
    }
}

/// The client's (and S1's) side of S2's answer.
pub fn seed_session_from_proto(o: &pb::SeedSession) -> Result<m::SeedSessionOpened, ProtocolError> {
    if o.max_queries == 0 {
        return Err(invalid("seed session with max_queries = 0"));
    }
    Ok(m::SeedSessionOpened {
        id: seed_session_id_from_bytes(&o.seed_session_id, "seed_session_id")?,
        max_queries: o.max_queries,
        expires_in_seconds: o.expires_in_seconds,
    })
}

// ---------------------------------------------------------------- C ⇄ S1

/// The client's one-shot query; the masked input in the model's encoding
/// (`masking`: compact `x_int + B + r`, or full ring values, §4.1).
pub fn query_request_to_proto<R: Ring>(
    q: &m::QueryRequest<R>,
    masking: &InputMasking,
) -> Result<pb::InferRequest, ProtocolError> {
    let (enc_seed, seed_epoch, seed_session_id, seed_counter) = seed_source_to_proto(&q.seed);
    Ok(pb::InferRequest {
        model_id: q.model_id.clone(),
        mode: mode_to_proto(q.mode) as i32,
        masked_input: masking.encode(&q.masked_input)?,
        enc_seed,
        ticket_id: Vec::new(),
        seed_epoch,
        seed_session_id,
        seed_counter,
    })
}

/// The online query on a ticket, encoded as [`query_request_to_proto`] does.
pub fn ticket_query_to_proto<R: Ring>(
    q: &m::TicketQuery<R>,
    masking: &InputMasking,
) -> Result<pb::InferRequest, ProtocolError> {
    Ok(pb::InferRequest {
        model_id: q.model_id.clone(),
        mode: mode_to_proto(q.mode) as i32,
        masked_input: masking.encode(&q.masked_input)?,
        enc_seed: Vec::new(),
        ticket_id: q.ticket.to_vec(),
        seed_epoch: Vec::new(),
        seed_session_id: Vec::new(),
        seed_counter: 0,
    })
}

/// S1's side of the masked input (one-shot or ticket): exactly `input_len`
/// values in the model's encoding, each in range, back to ring values
/// `ỹ = u − B (mod 2^k)`.
pub fn masked_input_from_proto<R: Ring>(
    b: &[u8],
    masking: &InputMasking,
    input_len: usize,
) -> Result<Vec<R>, ProtocolError> {
    masking.decode(b, input_len, "masked_input")
}

/// The client's ticket request.
pub fn ticket_request_to_proto(q: &m::TicketRequest) -> pb::CreateTicketRequest {
    let (enc_seed, seed_epoch, seed_session_id, seed_counter) = seed_source_to_proto(&q.seed);
    pb::CreateTicketRequest {
        model_id: q.model_id.clone(),
        mode: mode_to_proto(q.mode) as i32,
        enc_seed,
        seed_epoch,
        seed_session_id,
        seed_counter,
    }
}

/// The client's side: the ticket S1 confirmed.
pub fn ticket_from_proto(t: &pb::Ticket) -> Result<m::Ticket, ProtocolError> {
    Ok(m::Ticket {
        session_id: session_id_from_bytes(&t.ticket_id, "ticket_id")?,
        model_id: t.model_id.clone(),
        mode: required_mode(t.mode, "ticket.mode")?,
    })
}

/// S1's side: `mode` already resolved (default applied, availability checked
/// by the state machine), `masking` the model's input mask, `input_len` its
/// `d`.
pub fn query_request_from_proto<R: Ring>(
    ciphertext_bytes: usize,
    req: &pb::InferRequest,
    mode: OutputMode,
    masking: &InputMasking,
    input_len: usize,
) -> Result<m::QueryRequest<R>, ProtocolError> {
    let masked_input = masked_input_from_proto::<R>(&req.masked_input, masking, input_len)?;
    let seed =
        seed_source_from_proto(&req.enc_seed, &req.seed_epoch, &req.seed_session_id, req.seed_counter, ciphertext_bytes)?;
    Ok(m::QueryRequest { model_id: req.model_id.clone(), mode, masked_input, seed })
}

pub fn query_response_to_proto<R: Ring>(r: &m::QueryResponse<R>, stats: Option<pb::QueryStats>) -> pb::InferResponse {
    let aux = match &r.aux {
        m::OutputAux::Logits(v) => pb::infer_response::Aux::LogitsUPlusMu(encode_ring(v)),
        m::OutputAux::Permutation(p) => pb::infer_response::Aux::Permutation(pb::Permutation { index: p.clone() }),
        m::OutputAux::Negated(b) => pb::infer_response::Aux::Negated(*b),
    };
    pb::InferResponse {
        session_id: r.session_id.to_vec(),
        sealed: r.sealed.clone(),
        aux: Some(aux),
        stats,
        mode: pb::OutputMode::Unspecified as i32,
    }
}

/// The client's side; the state machine checks the aux against the mode.
pub fn query_response_from_proto<R: Ring>(r: &pb::InferResponse) -> Result<m::QueryResponse<R>, ProtocolError> {
    let aux = match &r.aux {
        Some(pb::infer_response::Aux::LogitsUPlusMu(b)) => {
            m::OutputAux::Logits(decode_ring(b, None, "logits_u_plus_mu")?)
        }
        Some(pb::infer_response::Aux::Permutation(p)) => m::OutputAux::Permutation(p.index.clone()),
        Some(pb::infer_response::Aux::Negated(b)) => m::OutputAux::Negated(*b),
        None => return Err(invalid("the response carries no aux field")),
    };
    Ok(m::QueryResponse {
        session_id: session_id_from_bytes(&r.session_id, "session_id")?,
        sealed: r.sealed.clone(),
        aux,
    })
}

// ---------------------------------------------------------------- S1 ⇄ S2

/// S1's side; `key_fingerprint` names the key S1 believes S2 holds.
pub fn session_start_to_proto(key_fingerprint: &str, s: &m::SessionStart) -> pb::SessionStart {
    let (enc_seed, seed_epoch, seed_session_id, seed_counter) = seed_source_to_proto(&s.seed);
    pb::SessionStart {
        session_id: s.session_id.to_vec(),
        enc_seed,
        input_len: s.input_len,
        ring_bits: s.ring_bits,
        key_fingerprint: key_fingerprint.to_string(),
        seed_epoch,
        seed_session_id,
        seed_counter,
        input_mask_bits: s.input_mask_bits,
        first_layer_outputs: s.first_layer_outputs,
        lattice_key_fingerprint: String::new(),
        ot_setup_id: s.ot_setup.map(|id| id.to_vec()).unwrap_or_default(),
    }
}

/// S2's side. The state machine checks `input_len`, `ring_bits` and
/// `input_mask_bits` (before any decryption); the caller checks
/// `key_fingerprint`.
pub fn session_start_from_proto(ciphertext_bytes: usize, s: &pb::SessionStart) -> Result<m::SessionStart, ProtocolError> {
    Ok(m::SessionStart {
        session_id: session_id_from_bytes(&s.session_id, "session_id")?,
        seed: seed_source_from_proto(&s.enc_seed, &s.seed_epoch, &s.seed_session_id, s.seed_counter, ciphertext_bytes)?,
        input_len: s.input_len,
        ring_bits: s.ring_bits,
        input_mask_bits: s.input_mask_bits,
        first_layer_outputs: s.first_layer_outputs,
        ot_setup: if s.ot_setup_id.is_empty() {
            None
        } else {
            Some(ot_setup_id_from_bytes(&s.ot_setup_id, "ot_setup_id")?)
        },
    })
}

pub fn online_step_to_proto<R: Ring>(t: &m::OnlineStep<R>) -> pb::EvaluateMsg {
    let msg = match t {
        m::OnlineStep::Round(r) => pb::evaluate_msg::Msg::Round(pb::MaskedRound { e: encode_ring(&r.e) }),
        m::OnlineStep::Output(o) => pb::evaluate_msg::Msg::Output(pb::MaskedOutput { e: encode_ring(&o.e) }),
    };
    pb::EvaluateMsg { msg: Some(msg) }
}

/// S2's side; the session checks the count against what it preprocessed.
pub fn masked_round_from_proto<R: Ring>(r: &pb::MaskedRound) -> Result<m::MaskedRound<R>, ProtocolError> {
    Ok(m::MaskedRound { e: decode_ring(&r.e, None, "round.e")? })
}

pub fn masked_output_from_proto<R: Ring>(r: &pb::MaskedOutput) -> Result<m::MaskedOutput<R>, ProtocolError> {
    Ok(m::MaskedOutput { e: decode_ring(&r.e, None, "output.e")? })
}

pub fn activation_values_to_proto<R: Ring>(v: &m::ActivationValues<R>) -> pb::ActivationValues {
    pb::ActivationValues { h: encode_ring(&v.h) }
}

/// S1's side: `n` is the number of values S1 sent in the round.
pub fn activation_values_from_proto<R: Ring>(
    v: &pb::ActivationValues,
    n: usize,
) -> Result<m::ActivationValues<R>, ProtocolError> {
    Ok(m::ActivationValues { h: decode_ring(&v.h, Some(n), "values.h")? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::U256;

    #[test]
    fn ring_lengths_are_checked() {
        let v: Vec<U256> = vec![<U256 as Ring>::from_i64(-3), <U256 as Ring>::one()];
        let b = encode_ring(&v);
        assert_eq!(decode_ring::<U256>(&b, Some(2), "x").unwrap(), v);
        let e = decode_ring::<U256>(&b, Some(3), "x").unwrap_err();
        assert_eq!(crate::status::code_of(&e), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("expected 3 ring values of 32 bytes"), "{e}");
        assert!(decode_ring::<u128>(&b[..17], None, "x").is_err());
    }

    /// Regression (found by tests/hostile_formats.rs): an absurd expected
    /// count is a length mismatch, not an overflow.
    #[test]
    fn absurd_expected_counts_do_not_overflow() {
        let e = decode_ring::<U256>(&[], Some(usize::MAX), "x").unwrap_err();
        assert!(e.to_string().contains("expected 18446744073709551615 ring values"), "{e}");
        assert!(decode_ring::<u128>(&[0; 16], Some(usize::MAX / 16 + 2), "x").is_err());
    }

    #[test]
    fn enc_seed_width_is_checked() {
        assert!(enc_seed_from_bytes(&[1; 256], 256, "enc_seed").is_ok());
        let e = enc_seed_from_bytes(&[1; 255], 256, "enc_seed").unwrap_err();
        assert!(e.to_string().contains("exactly 256"), "{e}");
    }

    #[test]
    fn modes_round_trip() {
        for mode in OutputMode::ALL {
            assert_eq!(mode_from_proto(mode_to_proto(mode) as i32).unwrap(), Some(mode));
        }
        assert_eq!(mode_from_proto(0).unwrap(), None);
        assert!(mode_from_proto(99).is_err());
    }
}
