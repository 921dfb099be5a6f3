//! The online ring `R = Z_{2^k}` (PROTOCOL §2) for `k ∈ {128, 256}`.
//!
//! All masked values that travel in the clear (`ỹ`, `u`, `e`, `h`) live here.
//! The protocol code is generic over [`Ring`] so one implementation serves
//! both ring sizes; `k = 128` maps to native `u128` arithmetic.

use rand_core::RngCore;
use std::fmt::Debug;
use std::hash::Hash;

/// 256-bit ring element (wrapping arithmetic mod 2^256).
pub type U256 = ruint::Uint<256, 4>;

/// Wrapping arithmetic in `Z_{2^k}`, plus the conversions the protocol needs.
pub trait Ring: Copy + Clone + Eq + PartialEq + Debug + Default + Hash + Send + Sync + 'static {
    /// `k`.
    const BITS: u32;
    /// `k / 8`, the size of one element on the wire (little-endian).
    const BYTES: usize;

    /// `0`.
    fn zero() -> Self;
    /// `1`.
    fn one() -> Self;
    /// `self + o mod 2^k`.
    fn add(self, o: Self) -> Self;
    /// `self − o mod 2^k`.
    fn sub(self, o: Self) -> Self;
    /// `self·o mod 2^k`.
    fn mul(self, o: Self) -> Self;
    /// `−self mod 2^k`.
    fn neg(self) -> Self;
    /// `v mod 2^k`.
    fn from_u64(v: u64) -> Self;
    /// Two's complement embedding of a signed value.
    fn from_i64(v: i64) -> Self {
        if v < 0 {
            Self::from_u64(v.unsigned_abs()).neg()
        } else {
            Self::from_u64(v as u64)
        }
    }
    /// Reads exactly `BYTES` little-endian bytes; `None` on a wrong length.
    fn from_le_slice(b: &[u8]) -> Option<Self>;
    /// Reduces an arbitrary-length little-endian magnitude mod 2^k.
    fn from_le_truncating(b: &[u8]) -> Self {
        let mut buf = vec![0u8; Self::BYTES];
        let n = b.len().min(Self::BYTES);
        buf[..n].copy_from_slice(&b[..n]);
        Self::from_le_slice(&buf).expect("length is BYTES")
    }
    /// Exactly `BYTES` little-endian bytes.
    fn to_le_bytes(self) -> Vec<u8>;
    /// The top bit: `signed(v) < 0` (PROTOCOL §2).
    fn is_negative(self) -> bool;
    /// `v^{-1} mod 2^k` for odd `v`, `None` for even `v`.
    fn inv_odd(self) -> Option<Self>;
    /// Uniform element from the next `k/8` bytes of `rng`, little-endian
    /// (S2's `ρ`, S1's `β`; the input mask has its own expansion,
    /// `Seed::input_mask`).
    fn random<G: RngCore + ?Sized>(rng: &mut G) -> Self {
        let mut buf = vec![0u8; Self::BYTES];
        rng.fill_bytes(&mut buf);
        Self::from_le_slice(&buf).expect("length is BYTES")
    }
}

impl Ring for u128 {
    const BITS: u32 = 128;
    const BYTES: usize = 16;
    fn zero() -> Self {
        0
    }
    fn one() -> Self {
        1
    }
    fn add(self, o: Self) -> Self {
        self.wrapping_add(o)
    }
    fn sub(self, o: Self) -> Self {
        self.wrapping_sub(o)
    }
    fn mul(self, o: Self) -> Self {
        self.wrapping_mul(o)
    }
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
    fn from_u64(v: u64) -> Self {
        v as u128
    }
    fn from_le_slice(b: &[u8]) -> Option<Self> {
        Some(u128::from_le_bytes(b.try_into().ok()?))
    }
    fn to_le_bytes(self) -> Vec<u8> {
        u128::to_le_bytes(self).to_vec()
    }
    fn is_negative(self) -> bool {
        self >> 127 == 1
    }
    fn inv_odd(self) -> Option<Self> {
        if self & 1 == 0 {
            return None;
        }
        // Newton iteration: each step doubles the number of correct low bits
        // (x = v is correct to 3 bits for odd v).
        let mut x = self;
        for _ in 0..7 {
            x = x.wrapping_mul(2u128.wrapping_sub(self.wrapping_mul(x)));
        }
        Some(x)
    }
}

impl Ring for U256 {
    const BITS: u32 = 256;
    const BYTES: usize = 32;
    fn zero() -> Self {
        U256::ZERO
    }
    fn one() -> Self {
        U256::from(1u64)
    }
    fn add(self, o: Self) -> Self {
        self.wrapping_add(o)
    }
    fn sub(self, o: Self) -> Self {
        self.wrapping_sub(o)
    }
    fn mul(self, o: Self) -> Self {
        self.wrapping_mul(o)
    }
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
    fn from_u64(v: u64) -> Self {
        U256::from(v)
    }
    fn from_le_slice(b: &[u8]) -> Option<Self> {
        if b.len() != 32 {
            return None;
        }
        U256::try_from_le_slice(b)
    }
    fn to_le_bytes(self) -> Vec<u8> {
        self.to_le_bytes_vec()
    }
    fn is_negative(self) -> bool {
        self.bit(255)
    }
    fn inv_odd(self) -> Option<Self> {
        if !self.bit(0) {
            return None;
        }
        let two = U256::from(2u64);
        let mut x = self;
        for _ in 0..8 {
            x = x.wrapping_mul(two.wrapping_sub(self.wrapping_mul(x)));
        }
        Some(x)
    }
}

/// Encodes a slice of ring elements as concatenated little-endian words.
pub fn encode_vec<R: Ring>(v: &[R]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * R::BYTES);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Inverse of [`encode_vec`]; `None` when the length is not a multiple of `k/8`.
pub fn decode_vec<R: Ring>(b: &[u8]) -> Option<Vec<R>> {
    if !b.len().is_multiple_of(R::BYTES) {
        return None;
    }
    b.chunks_exact(R::BYTES).map(R::from_le_slice).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn inverse_u128(v in any::<u128>()) {
            let v = v | 1;
            prop_assert_eq!(v.mul(v.inv_odd().unwrap()), 1u128);
        }

        #[test]
        fn inverse_u256(a in any::<[u8; 32]>()) {
            let v = <U256 as Ring>::from_le_slice(&a).unwrap() | U256::from(1u64);
            prop_assert_eq!(v.mul(v.inv_odd().unwrap()), U256::one());
        }

        #[test]
        fn signed_embedding(v in any::<i64>()) {
            let r = <u128 as Ring>::from_i64(v);
            prop_assert_eq!(r as i128, v as i128);
            prop_assert_eq!(r.is_negative(), v < 0);
            let s = <U256 as Ring>::from_i64(v);
            prop_assert_eq!(s.is_negative(), v < 0);
            prop_assert_eq!(s.add(<U256 as Ring>::from_i64(-v)), U256::ZERO);
        }
    }

    #[test]
    fn even_has_no_inverse() {
        assert!(4u128.inv_odd().is_none());
        assert!(U256::from(6u64).inv_odd().is_none());
    }

    #[test]
    fn vec_round_trip() {
        let v: Vec<U256> = (0..5).map(|i| <U256 as Ring>::from_i64(i - 2)).collect();
        assert_eq!(decode_vec::<U256>(&encode_vec(&v)).unwrap(), v);
        assert!(decode_vec::<u128>(&[0u8; 17]).is_none());
    }
}
