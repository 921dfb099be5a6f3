//! Conversions between ring values and num-bigint (the fixed-point
//! semantics in `tandem_model`).

use crate::ring::Ring;
use num_bigint::{BigInt as NumBigInt, Sign};

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
    use crate::ring::U256;

    #[test]
    fn round_trips() {
        for v in [-5i64, 0, 7, i64::MIN, i64::MAX] {
            let r: u128 = ring_from_num(&NumBigInt::from(v));
            assert_eq!(signed_num(r), NumBigInt::from(v));
            let r2: U256 = ring_from_num(&NumBigInt::from(v));
            assert_eq!(signed_num(r2), NumBigInt::from(v));
        }
        let big = NumBigInt::from(1u32) << 300;
        assert_eq!(ring_from_num::<u128>(&(big + NumBigInt::from(9u32))), 9u128);
    }
}
