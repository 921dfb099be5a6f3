//! The fixed-point semantics of the non-linear functions (PROTOCOL §3, §4.8).
//!
//! These functions are the *only* definition: the integer reference and the
//! activation server both call them, so bit-exactness holds by construction.
//! Transcendentals come from the `libm` crate (a Rust port of musl) rather
//! than the platform's libm, so a reference computed on one OS matches a
//! server on another.

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{ToPrimitive, Zero};

/// Round half away from zero (C `round`).
pub fn round_half_away(x: f64) -> f64 {
    libm::round(x)
}

/// Canonical magnitude → f64. Values over 64 bits keep their top 64 bits
/// (truncated) and are scaled back; the result is the same wherever it runs,
/// saturates at f64::MAX instead of wrapping, and both parties use it.
pub fn magnitude_to_f64(m: &BigUint) -> f64 {
    let bits = m.bits();
    if bits <= 64 {
        return m.to_u64().expect("fits in 64 bits") as f64;
    }
    let shift = bits - 64;
    let top = (m >> shift).to_u64().expect("64 bits");
    if shift > 900 {
        return f64::MAX;
    }
    libm::scalbn(top as f64, shift as i32)
}

/// `|v| / 2^scale` as f64.
fn scaled_magnitude(v: &BigInt, scale: u32) -> f64 {
    libm::scalbn(magnitude_to_f64(v.magnitude()), -(scale as i32))
}

fn signum(v: &BigInt) -> i64 {
    match v.sign() {
        Sign::Minus => -1,
        Sign::NoSign => 0,
        Sign::Plus => 1,
    }
}

/// `F_σ(v) = 2^{f_act−1} + sgn(v)·round(2^{f_act}·tanh(|v|/2^{s+1})/2)`,
/// output at scale `f_act`, in `[0, 2^{f_act}]`.
pub fn sigmoid_fixed(v: &BigInt, scale: u32, f_act: u32) -> BigInt {
    let t = libm::tanh(scaled_magnitude(v, scale + 1));
    let half = round_half_away(libm::scalbn(t, f_act as i32 - 1)) as i64;
    BigInt::from((1i64 << (f_act - 1)) + signum(v) * half)
}

/// `F_tanh(v) = sgn(v)·round(2^{f_act}·tanh(|v|/2^s))`, in `[−2^{f_act}, 2^{f_act}]`.
pub fn tanh_fixed(v: &BigInt, scale: u32, f_act: u32) -> BigInt {
    let t = libm::tanh(scaled_magnitude(v, scale));
    BigInt::from(signum(v) * round_half_away(libm::scalbn(t, f_act as i32)) as i64)
}

/// Fixed-point softmax at scale `f_act` of logits `z` at scale `s`.
///
/// Depends only on the differences `max(z) − z_i`, so it is invariant under
/// a common shift (the `β` of PROTOCOL §4.8). The normalizer is summed over
/// the sorted terms, so a permutation of `z` permutes the result exactly —
/// floating-point addition is not associative, and S2 sees the logits in a
/// random order.
pub fn softmax_fixed(z: &[BigInt], scale: u32, f_act: u32) -> Vec<u64> {
    let Some(max) = z.iter().max() else { return Vec::new() };
    let e: Vec<f64> = z.iter().map(|zi| libm::exp(-scaled_magnitude(&(max - zi), scale))).collect();
    let mut sorted = e.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("exp of a finite value is not NaN"));
    let sum: f64 = sorted.iter().sum();
    e.iter().map(|ei| round_half_away(libm::scalbn(ei / sum, f_act as i32)) as u64).collect()
}

/// Index of the largest value; the lowest index wins a tie.
pub fn argmax_first(z: &[BigInt]) -> usize {
    let mut best = 0;
    for (i, v) in z.iter().enumerate() {
        if v > &z[best] {
            best = i;
        }
    }
    best
}

/// Binary label of a single logit: 1 iff `z > 0` (sigmoid(z) > 1/2, the
/// threshold scikit-learn and most exporters use).
pub fn binary_label(z: &BigInt) -> usize {
    usize::from(z > &BigInt::zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn big(v: i128) -> BigInt {
        BigInt::from(v)
    }

    proptest! {
        #[test]
        fn sigmoid_symmetry(v in any::<i128>(), s in 0u32..100) {
            let a = sigmoid_fixed(&big(v), s, 16);
            let b = sigmoid_fixed(&-big(v), s, 16);
            prop_assert_eq!(a + b, BigInt::from(1 << 16));
        }

        #[test]
        fn tanh_symmetry(v in any::<i128>(), s in 0u32..100) {
            prop_assert_eq!(tanh_fixed(&big(v), s, 16), -tanh_fixed(&-big(v), s, 16));
        }

        #[test]
        fn softmax_is_shift_and_permutation_invariant(
            z in prop::collection::vec(-1_000_000i64..1_000_000, 1..12),
            shift in any::<i64>(),
            rot in 0usize..12,
        ) {
            let zb: Vec<BigInt> = z.iter().map(|&v| BigInt::from(v)).collect();
            let p = softmax_fixed(&zb, 16, 16);
            let shifted: Vec<BigInt> = zb.iter().map(|v| v + shift).collect();
            prop_assert_eq!(&softmax_fixed(&shifted, 16, 16), &p);
            let r = rot % z.len();
            let mut rotated = zb.clone();
            rotated.rotate_left(r);
            let mut expect = p.clone();
            expect.rotate_left(r);
            prop_assert_eq!(softmax_fixed(&rotated, 16, 16), expect);
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(sigmoid_fixed(&big(0), 16, 16), big(1 << 15));
        assert_eq!(tanh_fixed(&big(0), 16, 16), big(0));
        // tanh(1) = 0.76159415...; ·65536 = 49911.8 → 49912
        assert_eq!(tanh_fixed(&big(1 << 16), 16, 16), big(49912));
        // saturation far beyond 2^53 and 2^128
        let huge = BigInt::from(1u8) << 300;
        assert_eq!(tanh_fixed(&huge, 0, 16), big(1 << 16));
        assert_eq!(sigmoid_fixed(&-huge, 0, 16), big(0));
        assert_eq!(argmax_first(&[big(3), big(7), big(7)]), 1);
        assert_eq!(binary_label(&big(0)), 0);
    }

    #[test]
    fn magnitude_conversion_is_monotone_and_saturates() {
        let a = BigUint::from(u64::MAX);
        let b = BigUint::from(u64::MAX) + 1u8;
        assert!(magnitude_to_f64(&a) <= magnitude_to_f64(&b));
        assert_eq!(magnitude_to_f64(&(BigUint::from(1u8) << 2000)), f64::MAX);
    }
}
