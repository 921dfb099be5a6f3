//! Scalar arithmetic: modular operations on 64-bit primes, 128×128-bit
//! products, the prime search, and the samplers.
//!
//! Everything here is deliberately plain (no SIMD): the hot loops (NTTs and
//! point-wise products) run in `tfhe-ntt`; these helpers touch O(N) values
//! per polynomial at most.

use rand_core::RngCore;

/// `a·b mod p` through a 128-bit product.
#[inline]
pub(crate) fn mul_mod(a: u64, b: u64, p: u64) -> u64 {
    ((a as u128 * b as u128) % p as u128) as u64
}

/// `a + b mod p` for `a, b < p`.
#[inline]
pub(crate) fn add_mod(a: u64, b: u64, p: u64) -> u64 {
    let s = a + b; // p < 2^63, so no overflow
    if s >= p {
        s - p
    } else {
        s
    }
}

/// `base^exp mod p`.
pub(crate) fn pow_mod(mut base: u64, mut exp: u64, p: u64) -> u64 {
    let mut acc = 1 % p;
    base %= p;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul_mod(acc, base, p);
        }
        base = mul_mod(base, base, p);
        exp >>= 1;
    }
    acc
}

/// Inverse of `a` modulo the prime `p` (Fermat).
pub(crate) fn inv_mod(a: u64, p: u64) -> u64 {
    pow_mod(a, p - 2, p)
}

/// A signed integer reduced into `[0, p)`.
#[inline]
pub(crate) fn signed_mod(v: i128, p: u64) -> u64 {
    let r = v.rem_euclid(p as i128);
    r as u64
}

/// A small signed integer (`|v| < p`) reduced into `[0, p)` without a
/// 128-bit division (the samplers call this `limbs·N` times per polynomial).
#[inline]
pub(crate) fn small_signed_mod(v: i64, p: u64) -> u64 {
    debug_assert!(v.unsigned_abs() < p);
    if v < 0 {
        p - v.unsigned_abs()
    } else {
        v as u64
    }
}

/// Deterministic Miller–Rabin for every `n < 2^64` (the first twelve primes
/// as bases suffice below 3.3·10^24).
pub fn is_prime_u64(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    for &b in &BASES {
        if n.is_multiple_of(b) {
            return n == b;
        }
    }
    let mut d = n - 1;
    let mut s = 0;
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    'outer: for &a in &BASES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'outer;
            }
        }
        return false;
    }
    true
}

/// The `count` largest primes `p < 2^bits` with `p ≡ 1 (mod 2N)`, largest
/// first. `p ≡ 1 (mod 2N)` is what a negacyclic NTT of length `N` needs (a
/// primitive `2N`-th root of unity mod `p`). Returns `None` if fewer than
/// `count` such primes have exactly `bits` bits.
pub fn ntt_primes(n: usize, bits: u32, count: usize) -> Option<Vec<u64>> {
    if !(20..=62).contains(&bits) || n == 0 || !n.is_power_of_two() {
        return None;
    }
    let step = 2 * n as u64;
    let top = 1u64 << bits;
    let low = 1u64 << (bits - 1);
    let mut p = ((top - 1) / step) * step + 1;
    if p >= top {
        p -= step;
    }
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        if p <= low {
            return None;
        }
        if is_prime_u64(p) {
            out.push(p);
        }
        p -= step;
    }
    Some(out)
}

/// The full 256-bit product of two `u128`, as `(high, low)`.
#[inline]
pub(crate) fn widening_mul_u128(a: u128, b: u128) -> (u128, u128) {
    let (a1, a0) = (a >> 64, a & u64::MAX as u128);
    let (b1, b0) = (b >> 64, b & u64::MAX as u128);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // middle = p01 + p10 + (p00 >> 64); may carry into bit 128
    let (mid, c1) = p01.overflowing_add(p10);
    let (mid, c2) = mid.overflowing_add(p00 >> 64);
    let carry = ((c1 as u128) + (c2 as u128)) << 64;
    let low = (mid << 64) | (p00 & u64::MAX as u128);
    let high = p11 + (mid >> 64) + carry;
    (high, low)
}

/// `round(a·b / 2^128)` for `a, b < 2^128`: the high half of the product,
/// plus one if bit 127 of the low half is set. The result is `< 2^128`
/// whenever `a < 2^128` and `b < 2^128` (shown in `docs/LATTICE.md`).
#[inline]
pub(crate) fn round_mul_shr128(a: u128, b: u128) -> u128 {
    let (hi, lo) = widening_mul_u128(a, b);
    hi + (lo >> 127)
}

/// Ternary value: uniform in `{−1, 0, 1}` (rejection from bytes, exact).
#[inline]
pub(crate) fn sample_ternary(rng: &mut impl RngCore, buf: &mut [u8; 64], pos: &mut usize) -> i64 {
    loop {
        if *pos == buf.len() {
            rng.fill_bytes(buf);
            *pos = 0;
        }
        let b = buf[*pos];
        *pos += 1;
        if b < 255 {
            return (b % 3) as i64 - 1;
        }
    }
}

/// Centered binomial with parameter `eta ≤ 32`: `Σ a_i − Σ b_i` over `eta`
/// fair bits each; `|e| ≤ eta`, variance `eta/2`.
#[inline]
pub(crate) fn sample_cbd<R: RngCore>(rng: &mut WordStream<'_, R>, eta: u32) -> i64 {
    let mask = (1u64 << eta) - 1;
    let x = rng.next_u64();
    let a = (x & mask).count_ones() as i64;
    let b = ((x >> 32) & mask).count_ones() as i64;
    a - b
}

/// 64-bit little-endian words from an RNG, drawn in 2 KiB batches
/// (`fill_bytes` is several times cheaper per byte than `next_u64`). For a
/// ChaCha RNG the words are exactly those `next_u64` would return; whatever
/// is left of the last batch is discarded.
pub(crate) struct WordStream<'a, R: RngCore> {
    rng: &'a mut R,
    buf: [u8; 2048],
    pos: usize,
}

impl<'a, R: RngCore> WordStream<'a, R> {
    pub(crate) fn new(rng: &'a mut R) -> Self {
        WordStream { rng, buf: [0u8; 2048], pos: 2048 }
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        if self.pos == self.buf.len() {
            self.rng.fill_bytes(&mut self.buf);
            self.pos = 0;
        }
        let w = u64::from_le_bytes(self.buf[self.pos..self.pos + 8].try_into().expect("8 bytes"));
        self.pos += 8;
        w
    }
}

impl<R: RngCore> Drop for WordStream<'_, R> {
    fn drop(&mut self) {
        // The buffer held error/secret randomness.
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

/// Uniform in `[0, p)` by rejection on `bits(p)`-bit words. The stream
/// consumption is part of the wire format for seeded polynomials: one
/// `next_u64` per attempt, masked to the low `bits(p)` bits.
#[inline]
pub(crate) fn sample_uniform_mod<R: RngCore>(rng: &mut WordStream<'_, R>, p: u64) -> u64 {
    let bits = 64 - p.leading_zeros();
    let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    loop {
        let v = rng.next_u64() & mask;
        if v < p {
            return v;
        }
    }
}

/// Uniform in `[−2^f, 2^f)` for `f ≤ 125`.
#[inline]
pub(crate) fn sample_flood<R: RngCore>(rng: &mut WordStream<'_, R>, f: u32) -> i128 {
    let raw = ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128;
    let masked = raw & ((1u128 << (f + 1)) - 1);
    masked as i128 - (1i128 << f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_matches_ruint() {
        use ruint::aliases::U256;
        let cases = [
            (u128::MAX, u128::MAX),
            (u128::MAX, 1),
            (1u128 << 127, 3),
            (0x1234_5678_9abc_def0_1122_3344_5566_7788, 0xffee_ddcc_bbaa_9988_7766_5544_3322_1100),
        ];
        for (a, b) in cases {
            let (hi, lo) = widening_mul_u128(a, b);
            let full = U256::from(a) * U256::from(b);
            assert_eq!(U256::from(hi) << 128 | U256::from(lo), full);
            let rounded = (full + (U256::from(1u8) << 127)) >> 128;
            assert_eq!(U256::from(round_mul_shr128(a, b)), rounded);
        }
    }

    #[test]
    fn primes_are_ntt_friendly() {
        let ps = ntt_primes(8192, 54, 4).unwrap();
        for &p in &ps {
            assert!(is_prime_u64(p));
            assert_eq!(p % 16384, 1);
            assert_eq!(64 - p.leading_zeros(), 54);
        }
        assert!(!is_prime_u64(561) && !is_prime_u64(3215031751) && is_prime_u64(1_000_000_007));
    }
}
