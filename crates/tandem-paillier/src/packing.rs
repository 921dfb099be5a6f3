//! Packing several blinded values into one ciphertext (PROTOCOL §5).
//!
//! Each `C_p ∈ (−2^{b_tg}, 2^{b_tg+κ} + 2^{b_tg})` is shifted by `2^{b_tg}` so
//! every slot is a non-negative integer below `2^{w−1}` with
//! `w = b_tg + κ + 2`, then `P = Σ_p (C_p + 2^{b_tg})·2^{w·p}` is formed by
//! Horner's rule and rerandomized. `P < 2^{n·w} ≤ 2^{|N|−2}`, so it decrypts
//! to itself and S2 splits it back into slots.

use crate::paillier::{Ciphertext, PublicKey};
use curv::arithmetic::traits::*;
use kzen_paillier::BigInt;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tandem_core::CryptoError;

/// The layout S1 announces with a packed batch; public metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackingParams {
    /// `b_tg`: `2^{b_tg}` bounds `|t_j·g_j|` for the whole layer.
    pub offset_bits: u32,
    /// `w = b_tg + κ + 2`.
    pub slot_bits: u32,
    /// `n = ⌊(|N| − 2)/w⌋`.
    pub slots_per_ciphertext: u32,
}

impl PackingParams {
    pub fn new(offset_bits: u32, kappa: u32, key_bits: u32) -> Result<Self, CryptoError> {
        let slot_bits = offset_bits + kappa + 2;
        let usable = key_bits.saturating_sub(2);
        if slot_bits > usable {
            return Err(CryptoError::Budget(format!(
                "a slot needs {slot_bits} bits but a {key_bits}-bit key leaves {usable}"
            )));
        }
        Ok(PackingParams { offset_bits, slot_bits, slots_per_ciphertext: usable / slot_bits })
    }

    /// Checks parameters that arrived over the wire against the key.
    pub fn validate(&self, key_bits: u32) -> Result<(), CryptoError> {
        let ok = self.slot_bits as u64 > self.offset_bits as u64 + 1
            && self.slots_per_ciphertext >= 1
            && (self.slot_bits as u64) * (self.slots_per_ciphertext as u64) <= key_bits as u64 - 2;
        if ok {
            Ok(())
        } else {
            Err(CryptoError::Budget(format!("packing layout {self:?} does not fit a {key_bits}-bit key")))
        }
    }

    pub fn ciphertexts_for(&self, values: usize) -> usize {
        values.div_ceil(self.slots_per_ciphertext as usize)
    }
}

/// Packs and rerandomizes. `values[p]` lands in slot `p mod n` of ciphertext
/// `p / n`.
///
/// The packed ciphertexts go to S2, which holds the secret key and knows the
/// randomness of its own `[r]`/`[ρ]` that `values` were computed from, so
/// they are rerandomized with a full-size `r^N` (uniform over the `N`-th
/// residues, whoever knows `p, q`), not with short-exponent noise.
pub fn pack<G: RngCore + CryptoRng + ?Sized>(
    pk: &PublicKey,
    params: &PackingParams,
    values: &[Ciphertext],
    rng: &mut G,
) -> Vec<Ciphertext> {
    let n = params.slots_per_ciphertext as usize;
    let shift = BigInt::one() << params.slot_bits as usize;
    let offset = BigInt::one() << params.offset_bits as usize;
    let rngs = crate::split_rng(rng, values.len().div_ceil(n.max(1)));
    values
        .par_chunks(n)
        .zip(rngs)
        .map(|(chunk, mut rng)| {
            let mut acc = chunk[chunk.len() - 1].0.clone();
            let mut total_offset = offset.clone();
            for c in chunk[..chunk.len() - 1].iter().rev() {
                acc = BigInt::mod_pow(&acc, &shift, pk.nn());
                acc = BigInt::mod_mul(&acc, &c.0, pk.nn());
                total_offset = (total_offset << params.slot_bits as usize) + &offset;
            }
            // Adding all offsets at once equals adding 2^{b_tg} to each slot.
            let packed = pk.add_plain(&Ciphertext(acc), &total_offset);
            pk.rerandomize_full(&packed, &mut rng)
        })
        .collect()
}

/// Splits a decrypted packed plaintext into `count` values `C_p`.
pub fn unpack(params: &PackingParams, plaintext: &BigInt, count: usize) -> Result<Vec<BigInt>, CryptoError> {
    if count > params.slots_per_ciphertext as usize {
        return Err(CryptoError::Budget("more values than slots".into()));
    }
    if plaintext < &BigInt::zero() || plaintext.bit_length() > count * params.slot_bits as usize {
        return Err(CryptoError::MalformedCiphertext("packed plaintext is wider than its slots".into()));
    }
    let w = params.slot_bits as usize;
    let mask = (BigInt::one() << w) - BigInt::one();
    let offset = BigInt::one() << params.offset_bits as usize;
    Ok((0..count).map(|p| ((plaintext >> (w * p)) & &mask) - &offset).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paillier::tests::key1024;

    #[test]
    fn round_trip_at_slot_extremes() {
        let sk = key1024();
        let pk = sk.public();
        let noise = sk.noise_source(&mut rand_core::OsRng);
        let kappa = 40;
        for b_tg in [1u32, 60, 300] {
            let params = PackingParams::new(b_tg, kappa, pk.bits()).unwrap();
            let lo = -(BigInt::one() << b_tg as usize) + BigInt::one();
            let hi = (BigInt::one() << (b_tg + kappa) as usize) + (BigInt::one() << b_tg as usize) - BigInt::one();
            let n = params.slots_per_ciphertext as usize;
            let vals: Vec<BigInt> = (0..2 * n + 1)
                .map(|i| match i % 4 {
                    0 => lo.clone(),
                    1 => hi.clone(),
                    2 => BigInt::zero(),
                    _ => BigInt::from(-1),
                })
                .collect();
            let cts: Vec<_> = vals.iter().map(|v| noise.encrypt(pk, v, &mut rand_core::OsRng)).collect();
            let packed = pack(pk, &params, &cts, &mut rand_core::OsRng);
            assert_eq!(packed.len(), params.ciphertexts_for(vals.len()));
            let mut out = Vec::new();
            for (i, c) in packed.iter().enumerate() {
                let count = (vals.len() - i * n).min(n);
                out.extend(unpack(&params, &sk.decrypt_raw(c), count).unwrap());
            }
            assert_eq!(out, vals, "b_tg = {b_tg}");
        }
    }

    #[test]
    fn too_wide_for_key() {
        assert!(PackingParams::new(1000, 40, 1024).is_err());
        let p = PackingParams::new(100, 40, 1024).unwrap();
        assert!(p.validate(1024).is_ok());
        let bad = PackingParams { slots_per_ciphertext: 100, ..p };
        assert!(bad.validate(1024).is_err());
    }
}
