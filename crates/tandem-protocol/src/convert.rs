//! Conversions between ring values and the two big-integer types: GMP
//! (`tandem_crypto::BigInt`, for Paillier) and num-bigint (for the
//! fixed-point semantics in `tandem_model`).

use num_bigint::{BigInt as NumBigInt, Sign};
use tandem_crypto::bigint_traits::*;
use tandem_crypto::{BigInt, Ring};

/// An integer (any sign, any size) reduced mod 2^k.
pub fn ring_from_gmp<R: Ring>(v: &BigInt) -> R {
    let mut le = v.abs().to_bytes();
    le.reverse();
    let r = R::from_le_truncating(&le);
    if v < &BigInt::zero() {
        r.neg()
    } else {
        r
    }
}

/// The ring value as a non-negative integer in `[0, 2^k)`.
pub fn gmp_from_ring<R: Ring>(r: R) -> BigInt {
    let mut be = r.to_le_bytes();
    be.reverse();
    BigInt::from_bytes(&be)
}

/// `signed(v)` (PROTOCOL §2) as a num-bigint.
pub fn signed_num<R: Ring>(r: R) -> NumBigInt {
    let v = NumBigInt::from_bytes_le(Sign::Plus, &r.to_le_bytes());
    if r.is_negative() {
        v - (NumBigInt::from(1u8) << R::BITS)
    } else {
        v
    }
}

/// A num-bigint reduced mod 2^k.
pub fn ring_from_num<R: Ring>(v: &NumBigInt) -> R {
    let (sign, mag) = v.to_bytes_le();
    let r = R::from_le_truncating(&mag);
    if sign == Sign::Minus {
        r.neg()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_crypto::U256;

    #[test]
    fn round_trips() {
        for v in [-5i64, 0, 7, i64::MIN, i64::MAX] {
            let r: u128 = ring_from_num(&NumBigInt::from(v));
            assert_eq!(signed_num(r), NumBigInt::from(v));
            let g = tandem_crypto::bigint_from_i64(v);
            let r2: U256 = ring_from_gmp(&g);
            assert_eq!(signed_num(r2), NumBigInt::from(v));
        }
        let big = BigInt::from(1u32) << 300;
        assert_eq!(ring_from_gmp::<u128>(&(big + BigInt::from(9u32))), 9u128);
        assert_eq!(gmp_from_ring(u128::MAX), (BigInt::from(1u32) << 128) - BigInt::from(1u32));
    }
}
