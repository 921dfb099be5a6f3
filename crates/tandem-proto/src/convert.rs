//! protobuf ⇄ [`tandem_protocol::messages`]. Decoding checks every length
//! against what the receiver expects before it allocates or parses, and every
//! ciphertext with [`PublicKey::ciphertext_from_bytes`].

use crate::status::invalid;
use crate::v1 as pb;
use rayon::prelude::*;
use tandem_crypto::packing::PackingParams;
use tandem_crypto::{Ciphertext, PublicKey, Ring, SeedEpoch};
use tandem_model::{ActivationKind, OutputMode};
use tandem_protocol::messages as m;
use tandem_protocol::messages::SessionId;
use tonic::Status;

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
pub fn mode_from_proto(v: i32) -> Result<Option<OutputMode>, Status> {
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
pub fn required_mode(v: i32, field: &str) -> Result<OutputMode, Status> {
    mode_from_proto(v)?.ok_or_else(|| invalid(format!("{field}: the output mode must be set")))
}

pub fn kind_to_proto(kind: ActivationKind) -> pb::ActivationKind {
    match kind {
        ActivationKind::Relu => pb::ActivationKind::Relu,
        ActivationKind::Sigmoid => pb::ActivationKind::Sigmoid,
        ActivationKind::Tanh => pb::ActivationKind::Tanh,
    }
}

pub fn kind_from_proto(v: i32) -> Result<ActivationKind, Status> {
    match pb::ActivationKind::try_from(v) {
        Ok(pb::ActivationKind::Relu) => Ok(ActivationKind::Relu),
        Ok(pb::ActivationKind::Sigmoid) => Ok(ActivationKind::Sigmoid),
        Ok(pb::ActivationKind::Tanh) => Ok(ActivationKind::Tanh),
        _ => Err(invalid(format!("activation kind {v}; accepted: 1 relu, 2 sigmoid, 3 tanh"))),
    }
}

pub fn packing_to_proto(p: &PackingParams) -> pb::Packing {
    pb::Packing { offset_bits: p.offset_bits, slot_bits: p.slot_bits, slots_per_ciphertext: p.slots_per_ciphertext }
}

/// The layout is validated against the key by the state machine.
pub fn packing_from_proto(p: Option<&pb::Packing>, field: &str) -> Result<PackingParams, Status> {
    let p = p.ok_or_else(|| invalid(format!("{field}: packing layout missing")))?;
    Ok(PackingParams {
        offset_bits: p.offset_bits,
        slot_bits: p.slot_bits,
        slots_per_ciphertext: p.slots_per_ciphertext,
    })
}

// ---------------------------------------------------------------- vectors

/// Ring values as concatenated `k/8`-byte little-endian words.
pub fn encode_ring<R: Ring>(v: &[R]) -> Vec<u8> {
    tandem_crypto::ring::encode_vec(v)
}

/// Inverse of [`encode_ring`]; `expected` is the number of values the
/// receiver needs (`None`: any positive multiple of `k/8` bytes).
pub fn decode_ring<R: Ring>(b: &[u8], expected: Option<usize>, field: &str) -> Result<Vec<R>, Status> {
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
        _ => Ok(tandem_crypto::ring::decode_vec::<R>(b).expect("length checked")),
    }
}

/// Ciphertexts as concatenated fixed-width big-endian values.
pub fn encode_ciphertexts(pk: &PublicKey, cts: &[Ciphertext]) -> Vec<u8> {
    let w = pk.ciphertext_bytes();
    let mut out = Vec::with_capacity(cts.len() * w);
    for c in cts {
        out.extend_from_slice(&pk.ciphertext_to_bytes(c));
    }
    out
}

/// Parses untrusted concatenated ciphertexts; `expected` as in [`decode_ring`].
pub fn decode_ciphertexts(
    pk: &PublicKey,
    b: &[u8],
    expected: Option<usize>,
    field: &str,
) -> Result<Vec<Ciphertext>, Status> {
    let w = pk.ciphertext_bytes();
    match expected {
        Some(n) if n.checked_mul(w) != Some(b.len()) => {
            return Err(invalid(format!(
                "{field} has {} bytes; expected {n} ciphertexts of {w} bytes ({}-bit key, big-endian) = {} bytes",
                b.len(),
                pk.bits(),
                n as u128 * w as u128
            )))
        }
        None if !b.len().is_multiple_of(w) => {
            return Err(invalid(format!(
                "{field} has {} bytes, not a multiple of {w} (one ciphertext under this {}-bit key)",
                b.len(),
                pk.bits()
            )))
        }
        _ => {}
    }
    b.par_chunks_exact(w)
        .enumerate()
        .map(|(i, c)| pk.ciphertext_from_bytes(c).map_err(|e| invalid(format!("{field}[{i}]: {e}"))))
        .collect()
}

pub fn decode_one_ciphertext(pk: &PublicKey, b: &[u8], field: &str) -> Result<Ciphertext, Status> {
    pk.ciphertext_from_bytes(b).map_err(|e| invalid(format!("{field}: {e}")))
}

pub fn session_id_from_bytes(b: &[u8], field: &str) -> Result<SessionId, Status> {
    b.try_into().map_err(|_| invalid(format!("{field} has {} bytes; a session id is exactly 16", b.len())))
}

// ---------------------------------------------------------------- keys

/// The key with `seed_epoch` empty: the epoch changes while the key does
/// not, so whoever publishes the key sets the current epoch.
pub fn public_key_to_proto(pk: &PublicKey) -> pb::PaillierPublicKey {
    let f = pk.to_file();
    pb::PaillierPublicKey { n_hex: f.n, bits: pk.bits(), fingerprint: f.fingerprint, seed_epoch: Vec::new() }
}

/// A seed epoch: exactly 16 bytes.
pub fn epoch_from_proto(b: &[u8], field: &str) -> Result<SeedEpoch, Status> {
    SeedEpoch::from_slice(b).ok_or_else(|| {
        invalid(format!(
            "{field} has {} bytes; a seed epoch is exactly 16 (activation_key.seed_epoch of the model info)",
            b.len()
        ))
    })
}

/// Parses a key and checks that its stated fingerprint is its own (the caller
/// must still compare the fingerprint with a pinned one).
pub fn public_key_from_proto(p: &pb::PaillierPublicKey) -> Result<PublicKey, Status> {
    let pk = PublicKey::from_file(&tandem_crypto::paillier::PublicKeyFile {
        n: p.n_hex.clone(),
        fingerprint: p.fingerprint.clone(),
    })
    .map_err(|e| Status::failed_precondition(format!("activation server key: {e}")))?;
    Ok(pk)
}

// ---------------------------------------------------------------- C ⇄ S1

pub fn query_request_to_proto<R: Ring>(pk: &PublicKey, q: &m::QueryRequest<R>) -> pb::InferRequest {
    pb::InferRequest {
        model_id: q.model_id.clone(),
        mode: mode_to_proto(q.mode) as i32,
        masked_input: encode_ring(&q.masked_input),
        enc_seed: pk.ciphertext_to_bytes(&q.enc_seed),
        ticket_id: Vec::new(),
        seed_epoch: q.epoch.0.to_vec(),
    }
}

/// The online query on a ticket.
pub fn ticket_query_to_proto<R: Ring>(q: &m::TicketQuery<R>) -> pb::InferRequest {
    pb::InferRequest {
        model_id: q.model_id.clone(),
        mode: mode_to_proto(q.mode) as i32,
        masked_input: encode_ring(&q.masked_input),
        enc_seed: Vec::new(),
        ticket_id: q.ticket.to_vec(),
        seed_epoch: Vec::new(),
    }
}

pub fn ticket_request_to_proto(pk: &PublicKey, q: &m::TicketRequest) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        model_id: q.model_id.clone(),
        mode: mode_to_proto(q.mode) as i32,
        enc_seed: pk.ciphertext_to_bytes(&q.enc_seed),
        seed_epoch: q.epoch.0.to_vec(),
    }
}

/// The client's side: the ticket S1 confirmed.
pub fn ticket_from_proto(t: &pb::Ticket) -> Result<m::Ticket, Status> {
    Ok(m::Ticket {
        session_id: session_id_from_bytes(&t.ticket_id, "ticket_id")?,
        model_id: t.model_id.clone(),
        mode: required_mode(t.mode, "ticket.mode")?,
    })
}

/// S1's side: `mode` already resolved (default applied, availability checked
/// by the state machine), `input_len` is the model's `d`.
pub fn query_request_from_proto<R: Ring>(
    pk: &PublicKey,
    req: &pb::InferRequest,
    mode: OutputMode,
    input_len: usize,
) -> Result<m::QueryRequest<R>, Status> {
    let masked_input = decode_ring::<R>(&req.masked_input, Some(input_len), "masked_input")?;
    let enc_seed = decode_one_ciphertext(pk, &req.enc_seed, "enc_seed")?;
    let epoch = epoch_from_proto(&req.seed_epoch, "seed_epoch")?;
    Ok(m::QueryRequest { model_id: req.model_id.clone(), mode, masked_input, enc_seed, epoch })
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
pub fn query_response_from_proto<R: Ring>(r: &pb::InferResponse) -> Result<m::QueryResponse<R>, Status> {
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

pub fn session_start_to_proto(pk: &PublicKey, s: &m::SessionStart) -> pb::SessionStart {
    pb::SessionStart {
        session_id: s.session_id.to_vec(),
        enc_seed: pk.ciphertext_to_bytes(&s.enc_seed),
        input_len: s.input_len,
        ring_bits: s.ring_bits,
        key_fingerprint: pk.fingerprint(),
        seed_epoch: s.epoch.0.to_vec(),
    }
}

/// S2's side. The state machine checks `input_len` and `ring_bits`; the
/// caller checks `key_fingerprint`.
pub fn session_start_from_proto(pk: &PublicKey, s: &pb::SessionStart) -> Result<m::SessionStart, Status> {
    Ok(m::SessionStart {
        session_id: session_id_from_bytes(&s.session_id, "session_id")?,
        enc_seed: decode_one_ciphertext(pk, &s.enc_seed, "enc_seed")?,
        input_len: s.input_len,
        ring_bits: s.ring_bits,
        epoch: epoch_from_proto(&s.seed_epoch, "seed_epoch")?,
    })
}

pub fn input_masks_to_proto(pk: &PublicKey, m: &m::InputMasks) -> pb::InputMasks {
    pb::InputMasks { enc_r: encode_ciphertexts(pk, &m.enc_r) }
}

pub fn input_masks_from_proto(pk: &PublicKey, p: &pb::InputMasks, input_len: usize) -> Result<m::InputMasks, Status> {
    Ok(m::InputMasks { enc_r: decode_ciphertexts(pk, &p.enc_r, Some(input_len), "input_masks.enc_r")? })
}

pub fn rho_masks_to_proto(pk: &PublicKey, m: &m::RhoMasks) -> pb::RhoMasks {
    pb::RhoMasks { enc_rho: encode_ciphertexts(pk, &m.enc_rho) }
}

/// S1's side: `n` is the layer width S1 sent in the round.
pub fn rho_masks_from_proto(pk: &PublicKey, p: &pb::RhoMasks, n: usize) -> Result<m::RhoMasks, Status> {
    Ok(m::RhoMasks { enc_rho: decode_ciphertexts(pk, &p.enc_rho, Some(n), "rho.enc_rho")? })
}

pub fn blinded_round_to_proto(pk: &PublicKey, r: &m::BlindedRound) -> pb::BlindedRound {
    pb::BlindedRound {
        kind: kind_to_proto(r.kind) as i32,
        scale: r.scale,
        count: r.count,
        packing: Some(packing_to_proto(&r.packing)),
        packed: encode_ciphertexts(pk, &r.packed),
    }
}

/// S2's side; counts are checked by the state machine against the packing.
pub fn blinded_round_from_proto(pk: &PublicKey, r: &pb::BlindedRound) -> Result<m::BlindedRound, Status> {
    Ok(m::BlindedRound {
        kind: kind_from_proto(r.kind)?,
        scale: r.scale,
        count: r.count,
        packing: packing_from_proto(r.packing.as_ref(), "round.packing")?,
        packed: decode_ciphertexts(pk, &r.packed, None, "round.packed")?,
    })
}

pub fn blinded_output_to_proto(pk: &PublicKey, r: &m::BlindedOutput) -> pb::BlindedOutput {
    pb::BlindedOutput {
        mode: mode_to_proto(r.mode) as i32,
        scale: r.scale,
        count: r.count,
        packing: Some(packing_to_proto(&r.packing)),
        packed: encode_ciphertexts(pk, &r.packed),
    }
}

pub fn blinded_output_from_proto(pk: &PublicKey, r: &pb::BlindedOutput) -> Result<m::BlindedOutput, Status> {
    Ok(m::BlindedOutput {
        mode: required_mode(r.mode, "output.mode")?,
        scale: r.scale,
        count: r.count,
        packing: packing_from_proto(r.packing.as_ref(), "output.packing")?,
        packed: decode_ciphertexts(pk, &r.packed, None, "output.packed")?,
    })
}

pub fn offline_step_to_proto(pk: &PublicKey, t: &m::OfflineStep) -> pb::PreprocessMsg {
    let msg = match t {
        m::OfflineStep::Round(r) => pb::preprocess_msg::Msg::Round(blinded_round_to_proto(pk, r)),
        m::OfflineStep::Output(o) => pb::preprocess_msg::Msg::Output(blinded_output_to_proto(pk, o)),
    };
    pb::PreprocessMsg { msg: Some(msg) }
}

pub fn online_step_to_proto<R: Ring>(t: &m::OnlineStep<R>) -> pb::EvaluateMsg {
    let msg = match t {
        m::OnlineStep::Round(r) => pb::evaluate_msg::Msg::Round(pb::MaskedRound { e: encode_ring(&r.e) }),
        m::OnlineStep::Output(o) => pb::evaluate_msg::Msg::Output(pb::MaskedOutput { e: encode_ring(&o.e) }),
    };
    pb::EvaluateMsg { msg: Some(msg) }
}

/// S2's side; the session checks the count against what it preprocessed.
pub fn masked_round_from_proto<R: Ring>(r: &pb::MaskedRound) -> Result<m::MaskedRound<R>, Status> {
    Ok(m::MaskedRound { e: decode_ring(&r.e, None, "round.e")? })
}

pub fn masked_output_from_proto<R: Ring>(r: &pb::MaskedOutput) -> Result<m::MaskedOutput<R>, Status> {
    Ok(m::MaskedOutput { e: decode_ring(&r.e, None, "output.e")? })
}

pub fn activation_values_to_proto<R: Ring>(v: &m::ActivationValues<R>) -> pb::ActivationValues {
    pb::ActivationValues { h: encode_ring(&v.h) }
}

/// S1's side: `n` is the number of values S1 sent in the round.
pub fn activation_values_from_proto<R: Ring>(
    v: &pb::ActivationValues,
    n: usize,
) -> Result<m::ActivationValues<R>, Status> {
    Ok(m::ActivationValues { h: decode_ring(&v.h, Some(n), "values.h")? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_crypto::{SecretKey, U256};

    #[test]
    fn ring_lengths_are_checked() {
        let v: Vec<U256> = vec![<U256 as Ring>::from_i64(-3), <U256 as Ring>::one()];
        let b = encode_ring(&v);
        assert_eq!(decode_ring::<U256>(&b, Some(2), "x").unwrap(), v);
        let e = decode_ring::<U256>(&b, Some(3), "x").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("expected 3 ring values of 32 bytes"), "{}", e.message());
        assert!(decode_ring::<u128>(&b[..17], None, "x").is_err());
    }

    #[test]
    fn ciphertexts_round_trip_and_reject_junk() {
        let sk = SecretKey::generate(1024).unwrap();
        let pk = sk.public();
        let cts: Vec<_> = (0..3).map(|i| pk.encrypt(&tandem_crypto::BigInt::from(i))).collect();
        let b = encode_ciphertexts(pk, &cts);
        assert_eq!(decode_ciphertexts(pk, &b, Some(3), "c").unwrap(), cts);
        let mut bad = b.clone();
        bad[256..512].fill(0);
        let e = decode_ciphertexts(pk, &bad, None, "c").unwrap_err();
        assert!(e.message().starts_with("c[1]: malformed ciphertext"), "{}", e.message());
        assert!(decode_ciphertexts(pk, &b[1..], None, "c").is_err());
        let p = public_key_to_proto(pk);
        assert_eq!(&public_key_from_proto(&p).unwrap(), pk);
        let mut wrong = p.clone();
        wrong.fingerprint = "00".into();
        assert!(public_key_from_proto(&wrong).is_err());
    }

    /// Regression (found by tests/hostile_formats.rs): an absurd expected
    /// count is a length mismatch, not an overflow.
    #[test]
    fn absurd_expected_counts_do_not_overflow() {
        let e = decode_ring::<U256>(&[], Some(usize::MAX), "x").unwrap_err();
        assert!(e.message().contains("expected 18446744073709551615 ring values"), "{}", e.message());
        assert!(decode_ring::<u128>(&[0; 16], Some(usize::MAX / 16 + 2), "x").is_err());
        let sk = SecretKey::generate(1024).unwrap();
        assert!(decode_ciphertexts(sk.public(), &[], Some(usize::MAX), "c").is_err());
        assert!(decode_ciphertexts(sk.public(), &[], Some(usize::MAX / 256 + 1), "c").is_err());
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
