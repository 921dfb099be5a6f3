//! Conversions between ring values and GMP integers (Paillier plaintexts).

use crate::bigint_traits::*;
use crate::BigInt;
use tandem_core::Ring;

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

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigInt as NumBigInt;
    use tandem_core::convert::signed_num;
    use tandem_core::U256;

    #[test]
    fn round_trips() {
        for v in [-5i64, 0, 7, i64::MIN, i64::MAX] {
            let g = crate::bigint_from_i64(v);
            let r2: U256 = ring_from_gmp(&g);
            assert_eq!(signed_num(r2), NumBigInt::from(v));
        }
        let big = BigInt::from(1u32) << 300;
        assert_eq!(ring_from_gmp::<u128>(&(big + BigInt::from(9u32))), 9u128);
        assert_eq!(gmp_from_ring(u128::MAX), (BigInt::from(1u32) << 128) - BigInt::from(1u32));
    }
}
