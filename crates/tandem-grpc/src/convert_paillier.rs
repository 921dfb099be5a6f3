//! protobuf ⇄ the Paillier engine's preprocessing messages
//! ([`tandem_paillier::messages`]) and keys. Every incoming ciphertext is
//! parsed with [`PublicKey::ciphertext_from_bytes`] (exact width, in
//! `(0, N²)`, a unit mod `N`).

use crate::convert::{kind_from_proto, kind_to_proto, mode_to_proto, required_mode};
use crate::status::invalid;
use crate::v1 as pb;
use tandem_paillier::messages as m;
use tandem_paillier::packing::PackingParams;
use tandem_paillier::{Ciphertext, PublicKey};
use tandem_core::{CryptoError, ProtocolError};

pub fn packing_to_proto(p: &PackingParams) -> pb::Packing {
    pb::Packing { offset_bits: p.offset_bits, slot_bits: p.slot_bits, slots_per_ciphertext: p.slots_per_ciphertext }
}

/// The layout is validated against the key by the state machine.
pub fn packing_from_proto(p: Option<&pb::Packing>, field: &str) -> Result<PackingParams, ProtocolError> {
    let p = p.ok_or_else(|| invalid(format!("{field}: packing layout missing")))?;
    Ok(PackingParams {
        offset_bits: p.offset_bits,
        slot_bits: p.slot_bits,
        slots_per_ciphertext: p.slots_per_ciphertext,
    })
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

/// Parses untrusted concatenated ciphertexts; `expected` as in [`crate::convert::decode_ring`].
pub fn decode_ciphertexts(
    pk: &PublicKey,
    b: &[u8],
    expected: Option<usize>,
    field: &str,
) -> Result<Vec<Ciphertext>, ProtocolError> {
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
    // Sequential: parsing is cheap next to the engine's work, and the shells
    // keep every thread pool out of the conversions.
    b.chunks_exact(w)
        .enumerate()
        .map(|(i, c)| pk.ciphertext_from_bytes(c).map_err(|e| invalid(format!("{field}[{i}]: {e}"))))
        .collect()
}

pub fn decode_one_ciphertext(pk: &PublicKey, b: &[u8], field: &str) -> Result<Ciphertext, ProtocolError> {
    pk.ciphertext_from_bytes(b).map_err(|e| invalid(format!("{field}: {e}")))
}

/// The key with `seed_epoch` empty: the epoch changes while the key does
/// not, so whoever publishes the key sets the current epoch.
pub fn public_key_to_proto(pk: &PublicKey) -> pb::PaillierPublicKey {
    let f = pk.to_file();
    pb::PaillierPublicKey { n_hex: f.n, bits: pk.bits(), fingerprint: f.fingerprint, seed_epoch: Vec::new() }
}

pub fn input_masks_to_proto(pk: &PublicKey, m: &m::InputMasks) -> pb::InputMasks {
    pb::InputMasks { enc_r: encode_ciphertexts(pk, &m.enc_r) }
}

pub fn input_masks_from_proto(pk: &PublicKey, p: &pb::InputMasks, input_len: usize) -> Result<m::InputMasks, ProtocolError> {
    Ok(m::InputMasks { enc_r: decode_ciphertexts(pk, &p.enc_r, Some(input_len), "input_masks.enc_r")? })
}

pub fn rho_masks_to_proto(pk: &PublicKey, m: &m::RhoMasks) -> pb::RhoMasks {
    pb::RhoMasks { enc_rho: encode_ciphertexts(pk, &m.enc_rho) }
}

/// S1's side: `n` is the layer width S1 sent in the round.
pub fn rho_masks_from_proto(pk: &PublicKey, p: &pb::RhoMasks, n: usize) -> Result<m::RhoMasks, ProtocolError> {
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
pub fn blinded_round_from_proto(pk: &PublicKey, r: &pb::BlindedRound) -> Result<m::BlindedRound, ProtocolError> {
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

pub fn blinded_output_from_proto(pk: &PublicKey, r: &pb::BlindedOutput) -> Result<m::BlindedOutput, ProtocolError> {
    Ok(m::BlindedOutput {
        mode: required_mode(r.mode, "output.mode")?,
        scale: r.scale,
        count: r.count,
        packing: packing_from_proto(r.packing.as_ref(), "output.packing")?,
        packed: decode_ciphertexts(pk, &r.packed, None, "output.packed")?,
    })
}

pub fn preprocessing_step_to_proto(pk: &PublicKey, t: &m::PreprocessingStep) -> pb::PreprocessMsg {
    let msg = match t {
        m::PreprocessingStep::Round(r) => pb::preprocess_msg::Msg::Round(blinded_round_to_proto(pk, r)),
        m::PreprocessingStep::Output(o) => pb::preprocess_msg::Msg::Output(blinded_output_to_proto(pk, o)),
    };
    pb::PreprocessMsg { msg: Some(msg) }
}

/// S1's side: S2's key for the engine's homomorphic work (GMP), with its
/// stated fingerprint checked against its `N`.
pub fn paillier_public_key_from_proto(p: &pb::PaillierPublicKey) -> Result<PublicKey, ProtocolError> {
    PublicKey::from_file(&tandem_paillier::paillier::PublicKeyFile {
        n: p.n_hex.clone(),
        fingerprint: p.fingerprint.clone(),
    })
    .map_err(|e| ProtocolError::Crypto(CryptoError::InvalidKey(format!("the activation server's: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::public_key_from_proto;
    use rand_core::OsRng;
    use tandem_paillier::SecretKey;

    #[test]
    fn ciphertexts_round_trip_and_reject_junk() {
        let sk = SecretKey::generate(1024).unwrap();
        let pk = sk.public();
        let cts: Vec<_> = (0..3).map(|i| pk.encrypt(&tandem_paillier::BigInt::from(i), &mut OsRng)).collect();
        let b = encode_ciphertexts(pk, &cts);
        assert_eq!(decode_ciphertexts(pk, &b, Some(3), "c").unwrap(), cts);
        let mut bad = b.clone();
        bad[256..512].fill(0);
        let e = decode_ciphertexts(pk, &bad, None, "c").unwrap_err();
        assert!(e.to_string().starts_with("c[1]: malformed ciphertext"), "{e}");
        assert!(decode_ciphertexts(pk, &b[1..], None, "c").is_err());
        // The client's pure-Rust parse of the published key is the same key.
        let p = public_key_to_proto(pk);
        let pure = public_key_from_proto(&p).unwrap();
        assert_eq!(pure.to_bytes(), pk.to_bytes());
        assert_eq!(pure.fingerprint(), pk.fingerprint());
        let mut wrong = p.clone();
        wrong.fingerprint = "00".into();
        assert!(public_key_from_proto(&wrong).is_err());
        assert!(decode_ciphertexts(pk, &[], Some(usize::MAX), "c").is_err());
        assert!(decode_ciphertexts(pk, &[], Some(usize::MAX / 256 + 1), "c").is_err());
    }
}
