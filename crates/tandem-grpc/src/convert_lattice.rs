//! The lattice engine's preprocessing messages (docs/PROTOCOL.md §4.2b):
//! RLWE ciphertexts as bytes (formats in docs/LATTICE.md §7), checked for
//! count and size before any parsing, then parsed by `tandem-lattice`,
//! which refuses a residue out of range or non-zero padding.

use crate::convert_paillier::{decode_ciphertexts, encode_ciphertexts};
use crate::v1 as pb;
use tandem_core::ProtocolError;
use tandem_lattice_engine::tandem_lattice::{Ciphertext, Context, Layout, SeededCiphertext};
use tandem_lattice_engine::{LatticeKeys, PublicKeyInfo};
use tandem_paillier::PublicKey;

fn bad(field: &str, e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Malformed(format!("{field}: {e}"))
}

fn check_count(field: &'static str, expected: usize, got: usize) -> Result<(), ProtocolError> {
    if expected != got {
        return Err(ProtocolError::LengthMismatch { field, expected, got });
    }
    Ok(())
}

/// S2 → S1: `r` under RLWE.
pub fn lattice_inputs_to_proto(ctx: &Context, cts: &[SeededCiphertext]) -> pb::LatticeInputs {
    pb::LatticeInputs { ciphertexts: cts.iter().map(|c| c.to_bytes(ctx)).collect() }
}

/// S1's side: exactly `layout.n_blocks` ciphertexts of the fixed size.
pub fn lattice_inputs_from_proto(
    ctx: &Context,
    layout: &Layout,
    p: &pb::LatticeInputs,
) -> Result<Vec<SeededCiphertext>, ProtocolError> {
    check_count("lattice_inputs.ciphertexts", layout.n_blocks, p.ciphertexts.len())?;
    p.ciphertexts.iter().map(|b| SeededCiphertext::from_bytes(ctx, b).map_err(|e| bad("lattice_inputs", e))).collect()
}

/// S1 → S2: `W·r + μ'` under RLWE.
pub fn lattice_products_to_proto(ctx: &Context, cts: &[Ciphertext]) -> pb::LatticeProducts {
    pb::LatticeProducts { ciphertexts: cts.iter().map(|c| c.to_bytes(ctx)).collect() }
}

/// S2's side: exactly `layout.n_groups` ciphertexts, each with its group's
/// row count.
pub fn lattice_products_from_proto(
    ctx: &Context,
    layout: &Layout,
    p: &pb::LatticeProducts,
) -> Result<Vec<Ciphertext>, ProtocolError> {
    products_from_bytes(ctx, layout, &p.ciphertexts)
}

fn products_from_bytes(ctx: &Context, layout: &Layout, cts: &[Vec<u8>]) -> Result<Vec<Ciphertext>, ProtocolError> {
    check_count("lattice_products.ciphertexts", layout.n_groups, cts.len())?;
    cts.iter()
        .enumerate()
        .map(|(g, b)| Ciphertext::from_bytes(ctx, b, layout.rows_in_group(g)).map_err(|e| bad("lattice_products", e)))
        .collect()
}

/// S2 → S1: `[s]` under Paillier.
pub fn first_products_to_proto(pk: &PublicKey, enc_s: &[tandem_paillier::Ciphertext]) -> pb::FirstLayerProducts {
    pb::FirstLayerProducts { enc_s: encode_ciphertexts(pk, enc_s) }
}

/// S1's side: `n` ciphertexts, each checked like every Paillier ciphertext.
pub fn first_products_from_proto(
    pk: &PublicKey,
    p: &pb::FirstLayerProducts,
    n: usize,
) -> Result<Vec<tandem_paillier::Ciphertext>, ProtocolError> {
    decode_ciphertexts(pk, &p.enc_s, Some(n), "first_products.enc_s")
}

/// S2's RLWE public key for `GetLatticeKey`.
pub fn lattice_key_to_proto(keys: &LatticeKeys) -> pb::LatticePublicKey {
    let info = keys.public_key_info();
    pb::LatticePublicKey { key: info.key, params: info.params, fingerprint: info.fingerprint }
}

/// S1's side: the key parsed under S1's own parameters; refused if S2 runs
/// other parameters or the fingerprint does not match the key.
pub fn lattice_key_from_proto(
    ctx: &std::sync::Arc<Context>,
    p: &pb::LatticePublicKey,
) -> Result<tandem_lattice_engine::tandem_lattice::PublicKey, ProtocolError> {
    let ours = PublicKeyInfo::params_id(ctx);
    if p.params != ours {
        return Err(ProtocolError::Malformed(format!(
            "the activation server runs lattice parameters {:?}, this model server {ours:?}",
            p.params
        )));
    }
    let pk = tandem_lattice_engine::tandem_lattice::PublicKey::from_bytes(ctx, &p.key).map_err(|e| bad("lattice key", e))?;
    let fp = PublicKeyInfo::of(&pk).fingerprint;
    if fp != p.fingerprint {
        return Err(ProtocolError::Malformed("the lattice key's fingerprint does not match the key".into()));
    }
    Ok(pk)
}

// ------------------------------------------------ full lattice path (§4.2c)

use tandem_lattice_engine::tandem_ot::{Corrections, OleRequest, SetupReply, SetupRequest};
use tandem_lattice_engine::{FullReply, FullStep, Next};

fn ot_bad(field: &str, e: tandem_lattice_engine::tandem_ot::Error) -> ProtocolError {
    ProtocolError::Malformed(format!("{field}: {e}"))
}

/// The most `X` values one step carries (16 MiB); a layer's width is far
/// below it (the RLWE layouts are bounded by the engine's per-message bound).
pub const MAX_FULL_X_VALUES: usize = 1 << 20;

/// The most OT-correction batches in one reply (a ReLU round has 3).
pub const MAX_FULL_CORRECTION_BATCHES: usize = 3;

/// The most seeded ciphertexts in one reply: what fits the lattice engine's
/// per-message bound.
pub fn max_full_inputs(ctx: &Context) -> usize {
    tandem_lattice_engine::MAX_MESSAGE_BYTES / SeededCiphertext::byte_len(ctx) + 1
}

/// S1 → S2: `SetupOt`'s request.
pub fn setup_ot_request_to_proto(req: &SetupRequest) -> pb::SetupOtRequest {
    pb::SetupOtRequest { a_point: req.to_bytes() }
}

/// S2's side: exactly 32 bytes (the point itself is checked by the setup).
pub fn setup_ot_request_from_proto(p: &pb::SetupOtRequest) -> Result<SetupRequest, ProtocolError> {
    SetupRequest::from_bytes(&p.a_point).map_err(|e| ot_bad("setup_ot.a_point", e))
}

/// S2 → S1: `SetupOt`'s reply (`id ‖ B_0 ‖ … ‖ B_127` split in two fields).
pub fn setup_ot_reply_to_proto(r: &SetupReply) -> pb::SetupOtReply {
    let b = r.to_bytes();
    pb::SetupOtReply { setup_id: b[..16].to_vec(), b_points: b[16..].to_vec() }
}

/// S1's side: a 16-byte id and exactly 128 points of 32 bytes (the points
/// are checked when S1 finishes the setup).
pub fn setup_ot_reply_from_proto(p: &pb::SetupOtReply) -> Result<SetupReply, ProtocolError> {
    check_count("setup_ot.setup_id bytes", 16, p.setup_id.len())?;
    check_count("setup_ot.b_points bytes", SetupReply::LEN - 16, p.b_points.len())?;
    let mut b = Vec::with_capacity(SetupReply::LEN);
    b.extend_from_slice(&p.setup_id);
    b.extend_from_slice(&p.b_points);
    SetupReply::from_bytes(&b).map_err(|e| ot_bad("setup_ot", e))
}

fn next_to_proto(n: &Next) -> pb::FullNext {
    use pb::full_next::Next as N;
    let next = match n {
        Next::Linear { outputs } => N::Linear(pb::FullNextLinear { outputs: *outputs }),
        Next::Round { kind, scale, keep, next_outputs } => N::Round(pb::FullNextRound {
            kind: crate::kind_to_proto(*kind) as i32,
            scale: *scale,
            keep: *keep,
            next_outputs: *next_outputs,
        }),
        Next::Output { mode, scale } => {
            N::Output(pb::FullNextOutput { mode: crate::mode_to_proto(*mode) as i32, scale: *scale })
        }
    };
    pb::FullNext { next: Some(next) }
}

fn next_from_proto(n: &pb::FullNext) -> Result<Next, ProtocolError> {
    use pb::full_next::Next as N;
    match &n.next {
        Some(N::Linear(l)) => Ok(Next::Linear { outputs: l.outputs }),
        Some(N::Round(r)) => Ok(Next::Round {
            kind: crate::kind_from_proto(r.kind)?,
            scale: r.scale,
            keep: r.keep,
            next_outputs: r.next_outputs,
        }),
        Some(N::Output(o)) => Ok(Next::Output { mode: crate::required_mode(o.mode, "full_step.next.output")?, scale: o.scale }),
        None => Err(ProtocolError::Malformed("full_step.next: set but empty (linear, round or output)".into())),
    }
}

fn x_to_bytes(x: &[u128]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn x_from_bytes(b: &[u8]) -> Result<Vec<u128>, ProtocolError> {
    if !b.len().is_multiple_of(16) || b.len() > 16 * MAX_FULL_X_VALUES {
        return Err(ProtocolError::Malformed(format!(
            "full_step.x: {} bytes; expected 16 bytes per value, at most {MAX_FULL_X_VALUES} values",
            b.len()
        )));
    }
    Ok(b.chunks_exact(16).map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes"))).collect())
}

/// S1 → S2: one step of the full lattice path.
pub fn full_step_to_proto(ctx: &Context, s: &FullStep) -> pb::FullStep {
    pb::FullStep {
        ole_request: s.ole.as_ref().map(|r| r.to_bytes()).unwrap_or_default(),
        x: x_to_bytes(&s.x),
        products: s.products.iter().map(|c| c.to_bytes(ctx)).collect(),
        next: s.next.as_ref().map(next_to_proto),
    }
}

/// S2's side: `awaiting` is the layout of the products S2 expects
/// (`LatticeActivationPreprocessing::full_awaiting`); with none, the step
/// must carry no products (the last step).
pub fn full_step_from_proto(ctx: &Context, awaiting: Option<&Layout>, p: &pb::FullStep) -> Result<FullStep, ProtocolError> {
    let ole = if p.ole_request.is_empty() {
        None
    } else {
        Some(OleRequest::from_bytes(&p.ole_request).map_err(|e| ot_bad("full_step.ole_request", e))?)
    };
    let x = x_from_bytes(&p.x)?;
    let products = match awaiting {
        Some(layout) => products_from_bytes(ctx, layout, &p.products).map_err(|e| bad("full_step.products", e))?,
        None => {
            check_count("full_step.products (none expected after the output round)", 0, p.products.len())?;
            Vec::new()
        }
    };
    let next = p.next.as_ref().map(next_from_proto).transpose()?;
    Ok(FullStep { ole, x, products, next })
}

/// S2 → S1: a reply on the full lattice path.
pub fn full_reply_to_proto(ctx: &Context, r: &FullReply) -> pb::FullReply {
    pb::FullReply {
        corrections: r.corrections.iter().map(|c| c.to_bytes()).collect(),
        inputs: r.inputs.iter().map(|c| c.to_bytes(ctx)).collect(),
    }
}

/// S1's side: at most [`MAX_FULL_CORRECTION_BATCHES`] batches of 16-byte
/// values, at most [`max_full_inputs`] seeded ciphertexts of the fixed size
/// (S1's state machine checks the exact counts).
pub fn full_reply_from_proto(ctx: &Context, p: &pb::FullReply) -> Result<FullReply, ProtocolError> {
    if p.corrections.len() > MAX_FULL_CORRECTION_BATCHES {
        return Err(ProtocolError::Malformed(format!(
            "full_reply.corrections: {} batches; at most {MAX_FULL_CORRECTION_BATCHES}",
            p.corrections.len()
        )));
    }
    let max = max_full_inputs(ctx);
    if p.inputs.len() > max {
        return Err(ProtocolError::Malformed(format!("full_reply.inputs: {} ciphertexts; at most {max}", p.inputs.len())));
    }
    let corrections = p
        .corrections
        .iter()
        .map(|b| Corrections::from_bytes(b).map_err(|e| ot_bad("full_reply.corrections", e)))
        .collect::<Result<_, _>>()?;
    let inputs = p
        .inputs
        .iter()
        .map(|b| SeededCiphertext::from_bytes(ctx, b).map_err(|e| bad("full_reply.inputs", e)))
        .collect::<Result<_, _>>()?;
    Ok(FullReply { corrections, inputs })
}
