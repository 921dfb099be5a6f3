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
    check_count("lattice_products.ciphertexts", layout.n_groups, p.ciphertexts.len())?;
    p.ciphertexts
        .iter()
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
