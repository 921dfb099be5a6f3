//! IKNP OT extension (Ishai–Kilian–Nissim–Petrank 2003), semi-honest.
//!
//! Columns are `words · 128` bits (the number of OTs `M` padded up to a
//! multiple of 128); column `j` occupies bytes `[j·16·words, (j+1)·16·words)`
//! of a buffer, OT `i` being bit `i % 8` of the column's byte `i / 8`.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::base::{OtReceiverKey, OtSenderKey, BASE_OTS};
use crate::transpose::transpose_columns;

const PRG_DOMAIN: &[u8] = b"tandem/v1/iknp-prg";

/// 128-bit words per column for `m` OTs.
pub(crate) fn words_for(m: usize) -> usize {
    m.div_ceil(128)
}

/// Bytes of `U` for `m` OTs: 128 columns of `16 · words_for(m)` bytes.
pub(crate) fn u_len(m: usize) -> usize {
    BASE_OTS * 16 * words_for(m)
}

/// `G(k)`: the first `out.len()` bytes of
/// `ChaCha20Rng::from_seed(SHA-256("tandem/v1/iknp-prg" ‖ k ‖ sid))`.
pub(crate) fn prg(seed: &[u8; 32], sid: &[u8; 16], out: &mut [u8]) {
    let mut key: [u8; 32] =
        Sha256::new().chain_update(PRG_DOMAIN).chain_update(seed).chain_update(sid).finalize().into();
    let mut rng = ChaCha20Rng::from_seed(key);
    key.zeroize();
    rng.fill_bytes(out);
}

/// S1 (extension receiver): from the packed choice bits `c` (`16 · words`
/// bytes), returns `U` (all columns) and the rows `t_i` (`128 · words` of them).
pub(crate) fn receiver(
    key: &OtReceiverKey,
    sid: &[u8; 16],
    choice: &[u8],
    words: usize,
) -> (Vec<u8>, Zeroizing<Vec<u128>>) {
    let cb = 16 * words;
    debug_assert_eq!(choice.len(), cb);
    if words == 0 {
        return (Vec::new(), Zeroizing::new(Vec::new()));
    }
    let mut t = Zeroizing::new(vec![0u8; BASE_OTS * cb]);
    let mut u = vec![0u8; BASE_OTS * cb];
    for (j, (tc, uc)) in t.chunks_exact_mut(cb).zip(u.chunks_exact_mut(cb)).enumerate() {
        prg(&key.seeds0[j], sid, tc);
        prg(&key.seeds1[j], sid, uc);
        for ((ub, tb), cbit) in uc.iter_mut().zip(tc.iter()).zip(choice) {
            *ub ^= tb ^ cbit;
        }
    }
    let mut rows = Zeroizing::new(vec![0u128; BASE_OTS * words]);
    transpose_columns(&t, words, &mut rows);
    (u, rows)
}

/// S2 (extension sender): `Q_j = G(k_j^{Δ_j}) ⊕ Δ_j·U_j`, returned as rows
/// `q_i = t_i ⊕ c_i·Δ`. `u.len()` must be `128 · 16 · words` (checked by the caller).
pub(crate) fn sender(key: &OtSenderKey, sid: &[u8; 16], u: &[u8], words: usize) -> Zeroizing<Vec<u128>> {
    let cb = 16 * words;
    debug_assert_eq!(u.len(), BASE_OTS * cb);
    if words == 0 {
        return Zeroizing::new(Vec::new());
    }
    let mut q = Zeroizing::new(vec![0u8; BASE_OTS * cb]);
    for (j, (qc, uc)) in q.chunks_exact_mut(cb).zip(u.chunks_exact(cb)).enumerate() {
        prg(&key.seeds[j], sid, qc);
        // All-ones when Δ_j = 1, zero otherwise: no branch on Δ.
        let mask = 0u8.wrapping_sub(((key.delta >> j) & 1) as u8);
        for (qb, ub) in qc.iter_mut().zip(uc) {
            *qb ^= ub & mask;
        }
    }
    let mut rows = Zeroizing::new(vec![0u128; BASE_OTS * words]);
    transpose_columns(&q, words, &mut rows);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::{s1_setup_finish, s1_setup_request, s2_setup};
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::RngCore;

    fn keys(seed: u64) -> (OtReceiverKey, OtSenderKey) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (p, req) = s1_setup_request(&mut rng);
        let (sk, reply) = s2_setup(&req, &mut rng).unwrap();
        (s1_setup_finish(p, &reply).unwrap(), sk)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        /// `q_i = t_i ⊕ c_i·Δ` for every row, including the padding rows.
        #[test]
        fn q_equals_t_xor_c_delta(m in 1usize..700, seed in any::<u64>()) {
            let (rk, sk) = keys(seed);
            let words = words_for(m);
            let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 1);
            let mut choice = vec![0u8; 16 * words];
            rng.fill_bytes(&mut choice[..m.div_ceil(8)]);
            if m % 8 != 0 {
                choice[m / 8] &= (1u8 << (m % 8)) - 1;
            }
            let sid = [3u8; 16];
            let (u, t) = receiver(&rk, &sid, &choice, words);
            prop_assert_eq!(u.len(), u_len(m));
            let q = sender(&sk, &sid, &u, words);
            prop_assert_eq!(q.len(), t.len());
            for i in 0..t.len() {
                let c = (choice[i / 8] >> (i % 8)) & 1;
                let want = t[i] ^ if c == 1 { sk.delta } else { 0 };
                prop_assert_eq!(q[i], want, "row {}", i);
            }
        }
    }

    #[test]
    fn repeated_sid_reveals_choice_xor() {
        // Documents why sids must be fresh: U ⊕ U' = c ⊕ c' (per column).
        let (rk, _sk) = keys(9);
        let words = 2;
        let c1 = vec![0xA5u8; 32];
        let c2 = vec![0x0Fu8; 32];
        let sid = [1u8; 16];
        let (u1, _) = receiver(&rk, &sid, &c1, words);
        let (u2, _) = receiver(&rk, &sid, &c2, words);
        for k in 0..u1.len() {
            assert_eq!(u1[k] ^ u2[k], c1[k % 32] ^ c2[k % 32]);
        }
        let (u3, _) = receiver(&rk, &[2u8; 16], &c2, words);
        assert!((0..u1.len()).any(|k| u1[k] ^ u3[k] != c1[k % 32] ^ c2[k % 32]));
    }
}
