//! `[g] = W·[D]` (PROTOCOL §4.4) without a `mod_pow` per weight.
//!
//! Straus' interleaved multi-exponentiation with per-base tables shared by all
//! output neurons: for every input ciphertext `[D_i]` that some row uses we
//! precompute `[D_i]^d` for `d ∈ [1, 2^c)`; each row then walks the weights'
//! `c`-bit windows from the top, squaring its accumulators `c` times per
//! window and multiplying in one table entry per (weight, window). A row costs
//! `⌈bits(W)/c⌉` multiplications per weight plus a few squarings, the tables
//! `2^c − 1` per base, amortized over every row that reads that base. Negative
//! weights go to a second accumulator that is inverted once per row.
//! Rows run in parallel (rayon).

use crate::paillier::{Ciphertext, PublicKey};
use curv::arithmetic::traits::*;
use kzen_paillier::BigInt;
use rayon::prelude::*;

/// Bytes we allow the per-base tables of one product to take.
const TABLE_MEMORY_CAP: usize = 256 << 20;

/// One sparse row: `(input index, weight)` pairs.
pub type SparseRow = Vec<(u32, i64)>;

fn magnitude_bits(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Picks the window `c` that minimizes table cost plus per-use cost.
fn choose_window(weight_bits: u32, uses_per_base: f64, bases: usize, ct_bytes: usize) -> u32 {
    let mut best = (f64::INFINITY, 1);
    for c in 1..=8u32 {
        let table = bases * ((1usize << c) - 1) * ct_bytes;
        if table > TABLE_MEMORY_CAP && c > 1 {
            break;
        }
        let cost = ((1u64 << c) - 1) as f64 + uses_per_base * weight_bits.div_ceil(c) as f64;
        if cost < best.0 {
            best = (cost, c);
        }
    }
    best.1
}

/// Computes `[g_j] = Π_i [D_i]^{W_ji}` for every row `j`.
///
/// Panics if a row names an input index out of range: rows come from a
/// validated model, never from the network.
pub fn matvec(pk: &PublicKey, rows: &[SparseRow], inputs: &[Ciphertext]) -> Vec<Ciphertext> {
    let nn = pk.nn();
    let mut uses = vec![0u32; inputs.len()];
    let mut max_w = 0u64;
    for row in rows {
        for &(i, w) in row {
            if w != 0 {
                uses[i as usize] += 1;
                max_w = max_w.max(w.unsigned_abs());
            }
        }
    }
    if max_w == 0 {
        return vec![Ciphertext(BigInt::one()); rows.len()];
    }
    let used: usize = uses.iter().filter(|&&u| u > 0).count();
    let total_uses: u64 = uses.iter().map(|&u| u as u64).sum();
    let wbits = magnitude_bits(max_w);
    let c = choose_window(wbits, total_uses as f64 / used as f64, used, pk.ciphertext_bytes());
    let windows = wbits.div_ceil(c);
    let mask = (1u64 << c) - 1;

    // tables[i][d-1] = [D_i]^d; empty for inputs no row reads.
    let tables: Vec<Vec<BigInt>> = inputs
        .par_iter()
        .zip(uses.par_iter())
        .map(|(ct, &u)| {
            if u == 0 {
                return Vec::new();
            }
            let mut t = Vec::with_capacity(mask as usize);
            t.push(ct.0.clone());
            for d in 1..mask as usize {
                t.push(BigInt::mod_mul(&t[d - 1], &ct.0, nn));
            }
            t
        })
        .collect();

    rows.par_iter()
        .map(|row| {
            let mut pos = BigInt::one();
            let mut neg = BigInt::one();
            let (mut pos_one, mut neg_one) = (true, true);
            for w in (0..windows).rev() {
                if !pos_one {
                    for _ in 0..c {
                        pos = BigInt::mod_mul(&pos, &pos, nn);
                    }
                }
                if !neg_one {
                    for _ in 0..c {
                        neg = BigInt::mod_mul(&neg, &neg, nn);
                    }
                }
                for &(i, wt) in row {
                    let digit = (wt.unsigned_abs() >> (c * w)) & mask;
                    if digit == 0 {
                        continue;
                    }
                    let entry = &tables[i as usize][digit as usize - 1];
                    if wt > 0 {
                        pos *= entry;
                        pos %= nn;
                        pos_one = false;
                    } else {
                        neg *= entry;
                        neg %= nn;
                        neg_one = false;
                    }
                }
            }
            if !neg_one {
                let inv = BigInt::mod_inv(&neg, nn).expect("product of units is a unit");
                pos = BigInt::mod_mul(&pos, &inv, nn);
            }
            Ciphertext(pos)
        })
        .collect()
}

/// The textbook product, one `mod_pow` per weight. Tests and benches only.
pub fn matvec_naive(pk: &PublicKey, rows: &[SparseRow], inputs: &[Ciphertext]) -> Vec<Ciphertext> {
    rows.iter()
        .map(|row| {
            let mut acc = Ciphertext(BigInt::one());
            for &(i, w) in row {
                let t = pk.scalar_mul(&inputs[i as usize], &crate::bigint_from_i64(w));
                pk.add_assign(&mut acc, &t);
            }
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paillier::tests::key1024;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn matches_plaintext_product(
            cols in 1usize..12,
            rows in prop::collection::vec(prop::collection::vec(-5000i64..5000, 12), 1..6),
            xs in prop::collection::vec(-1_000_000i64..1_000_000, 12),
            sparsity in 0u32..3,
        ) {
            let sk = key1024();
            let pk = sk.public();
            let noise = sk.noise_source();
            let enc: Vec<_> = xs[..cols].iter().map(|&x| noise.encrypt(pk, &crate::bigint_from_i64(x))).collect();
            let sparse: Vec<SparseRow> = rows.iter().map(|r| {
                r[..cols].iter().enumerate()
                    .filter(|(i, _)| sparsity == 0 || (*i as u32) % (sparsity + 1) == 0)
                    .map(|(i, &w)| (i as u32, w)).collect()
            }).collect();
            let fast = matvec(pk, &sparse, &enc);
            let naive = matvec_naive(pk, &sparse, &enc);
            for (j, row) in sparse.iter().enumerate() {
                let want: i64 = row.iter().map(|&(i, w)| w * xs[i as usize]).sum();
                prop_assert_eq!(sk.decrypt(&fast[j]), crate::bigint_from_i64(want));
                prop_assert_eq!(sk.decrypt(&naive[j]), crate::bigint_from_i64(want));
            }
        }
    }

    #[test]
    fn extreme_weights() {
        let sk = key1024();
        let pk = sk.public();
        let noise = sk.noise_source();
        let enc = vec![noise.encrypt(pk, &BigInt::from(3)), noise.encrypt(pk, &BigInt::from(-2))];
        let rows = vec![vec![(0, i32::MAX as i64), (1, i32::MIN as i64)], vec![], vec![(1, 0)]];
        let out = matvec(pk, &rows, &enc);
        let want = 3 * i32::MAX as i64 + (-2) * (i32::MIN as i64);
        assert_eq!(sk.decrypt(&out[0]), crate::bigint_from_i64(want));
        assert_eq!(sk.decrypt(&out[1]), BigInt::zero());
        assert_eq!(sk.decrypt(&out[2]), BigInt::zero());
    }
}
