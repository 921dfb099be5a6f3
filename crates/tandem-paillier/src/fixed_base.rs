//! Fixed-base exponentiation with a precomputed table (the "comb"/windowed
//! method): `base^x` for many different `x` costs `⌈bits/c⌉` modular
//! multiplications instead of ~`1.2·bits` for square-and-multiply.

use curv::arithmetic::traits::*;
use kzen_paillier::BigInt;
use rayon::prelude::*;

pub struct FixedBase {
    /// `table[w][d-1] = base^{d·2^{c·w}}` for `d ∈ [1, 2^c)`.
    table: Vec<Vec<BigInt>>,
    modulus: BigInt,
    window: usize,
}

impl FixedBase {
    pub fn new(base: &BigInt, modulus: &BigInt, exp_bits: usize, window: usize) -> Self {
        let windows = exp_bits.div_ceil(window);
        // Base of each window: base^{2^{c·w}}, by repeated squaring.
        let mut bases = Vec::with_capacity(windows);
        let mut b = BigInt::modulus(base, modulus);
        for _ in 0..windows {
            bases.push(b.clone());
            for _ in 0..window {
                b = BigInt::mod_mul(&b, &b, modulus);
            }
        }
        let table = bases
            .par_iter()
            .map(|wb| {
                let mut row = Vec::with_capacity((1 << window) - 1);
                let mut acc = wb.clone();
                row.push(acc.clone());
                for _ in 2..(1usize << window) {
                    acc = BigInt::mod_mul(&acc, wb, modulus);
                    row.push(acc.clone());
                }
                row
            })
            .collect();
        FixedBase { table, modulus: modulus.clone(), window }
    }

    /// `base^x mod modulus` for `0 ≤ x < 2^{exp_bits}`.
    pub fn pow(&self, x: &BigInt) -> BigInt {
        assert!(x.bit_length() <= self.table.len() * self.window, "exponent wider than the table");
        let mut acc = BigInt::one();
        for (w, row) in self.table.iter().enumerate() {
            let mut digit = 0usize;
            for i in 0..self.window {
                if x.test_bit(w * self.window + i) {
                    digit |= 1 << i;
                }
            }
            if digit != 0 {
                acc *= &row[digit - 1];
                acc %= &self.modulus;
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_mod_pow() {
        let m = BigInt::from_hex("f123456789abcdef0123456789abcdef01234567").unwrap();
        let base = BigInt::from(987654321u64);
        let fb = FixedBase::new(&base, &m, 100, 5);
        for _ in 0..50 {
            let x = BigInt::sample(100);
            assert_eq!(fb.pow(&x), BigInt::mod_pow(&base, &x, &m));
        }
        assert_eq!(fb.pow(&BigInt::zero()), BigInt::one());
    }
}
