//! Bit-matrix transposition for IKNP.
//!
//! A 128×128 bit matrix is `[u128; 128]`: element `(r, c)` is bit `c`
//! (least significant bit = 0) of word `r`.

/// Transposes a 128×128 bit matrix in place (Eklundh's recursive block swap:
/// seven rounds, each swapping the off-diagonal `s×s` sub-blocks, for
/// `s = 64, 32, …, 1`).
pub fn transpose_128x128(m: &mut [u128; 128]) {
    let mut s = 64usize;
    // Bits whose index has bit `s` clear: the "low" columns of each 2s block.
    let mut mask: u128 = u128::from(u64::MAX);
    while s != 0 {
        let mut k = 0;
        while k < 128 {
            for i in k..k + s {
                let t = ((m[i] >> s) ^ m[i + s]) & mask;
                m[i] ^= t << s;
                m[i + s] ^= t;
            }
            k += 2 * s;
        }
        s >>= 1;
        mask ^= mask << s;
    }
}

/// Transposes 128 columns of `words × 128` bits each into `words × 128`
/// rows of 128 bits.
///
/// `cols` holds the columns one after the other, column `j` at bytes
/// `[j·16·words, (j+1)·16·words)`, bit `r` of a column being bit `r % 8` of
/// its byte `r / 8`. Row `r` of the result has bit `j` = bit `r` of column `j`.
///
/// # Panics
/// If `cols.len() != 128 · 16 · words` or `rows.len() != 128 · words`.
pub fn transpose_columns(cols: &[u8], words: usize, rows: &mut [u128]) {
    let col_bytes = 16 * words;
    assert_eq!(cols.len(), 128 * col_bytes, "columns buffer size");
    assert_eq!(rows.len(), 128 * words, "rows buffer size");
    for (w, out) in rows.chunks_exact_mut(128).enumerate() {
        let block: &mut [u128; 128] = out.try_into().expect("chunk of 128");
        for (j, word) in block.iter_mut().enumerate() {
            let at = j * col_bytes + 16 * w;
            let mut b = [0u8; 16];
            b.copy_from_slice(&cols[at..at + 16]);
            *word = u128::from_le_bytes(b);
        }
        transpose_128x128(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(m: &[u128; 128]) -> [u128; 128] {
        let mut out = [0u128; 128];
        for (r, row) in m.iter().enumerate() {
            for (c, o) in out.iter_mut().enumerate() {
                *o |= ((row >> c) & 1) << r;
            }
        }
        out
    }

    fn arb_matrix() -> impl Strategy<Value = [u128; 128]> {
        proptest::collection::vec(any::<u128>(), 128).prop_map(|v| v.try_into().unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn block_transpose_matches_naive(m in arb_matrix()) {
            let mut t = m;
            transpose_128x128(&mut t);
            prop_assert_eq!(t, naive(&m));
            transpose_128x128(&mut t);
            prop_assert_eq!(t, m);
        }

        #[test]
        fn columns_transpose_matches_naive(words in 1usize..4, seed in any::<u64>()) {
            use rand_core::{RngCore, SeedableRng};
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let mut cols = vec![0u8; 128 * 16 * words];
            rng.fill_bytes(&mut cols);
            let mut rows = vec![0u128; 128 * words];
            transpose_columns(&cols, words, &mut rows);
            for (r, row) in rows.iter().enumerate() {
                for j in 0..128 {
                    let byte = cols[j * 16 * words + r / 8];
                    let bit = (byte >> (r % 8)) & 1;
                    prop_assert_eq!(((row >> j) & 1) as u8, bit, "row {} col {}", r, j);
                }
            }
        }
    }

    #[test]
    fn identity_and_single_bits() {
        let mut id = [0u128; 128];
        for (i, w) in id.iter_mut().enumerate() {
            *w = 1u128 << i;
        }
        let mut t = id;
        transpose_128x128(&mut t);
        assert_eq!(t, id);
        let mut m = [0u128; 128];
        m[3] = 1u128 << 100;
        transpose_128x128(&mut m);
        let mut want = [0u128; 128];
        want[100] = 1u128 << 3;
        assert_eq!(m, want);
    }
}
