//! The compact input mask (docs/PROTOCOL.md §4.1, SECURITY.md "Input
//! masking"): its parameters and the wire encoding of the masked input.
//!
//! A quantized feature lies in `[−B, B]`, so a mask `r` uniform in
//! `[0, 2^m)` with `m = b + 1 + κ` (`B < 2^b`, κ =
//! [`INPUT_HIDING_BITS_PER_FEATURE`]) already hides it statistically; a
//! full ring value (`k` bits) is not needed. The client sends
//! `u = x_int + B + r`, a non-negative integer below `2^{m+1}`, as `m + 1`
//! bits, the `d` values packed into one bit string of `⌈d(m+1)/8⌉` bytes
//! instead of `d·k/8`; S1 turns each back into the ring value
//! `ỹ = u − B = x_int + r (mod 2^k)` and nothing downstream changes.
//!
//! One function, [`InputMasking::new`], computes the parameters from the
//! model's public metadata: S1 publishes them in the model info and tells
//! S2 `m`, the client recomputes them and refuses a model info that
//! disagrees ([`crate::ModelInfo::masking`]).

use crate::error::{ProtocolError, Result};
use crate::ring::Ring;
use tandem_model::{max_abs_input, QuantizedModel};

/// κ of the compact mask, **per feature**: for any two inputs in range, the
/// masked values of one feature are at most `2^−40` apart in statistical
/// distance. Over a vector of `d` features the distance is at most
/// `d·2^−40` (MNIST, `d = 784`: `2^−30.4`); SECURITY.md, "Input masking",
/// states what that bound means and why this is the parameter issue 17
/// chose.
pub const INPUT_HIDING_BITS_PER_FEATURE: u32 = 40;

/// The widest ring value in bytes (`k = 256`), for the decoder's buffer.
const MAX_VALUE_BYTES: usize = 32;

/// How a model's input is masked and sent (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputMasking {
    /// `B`: every quantized feature lies in `[−B, B]`; the client adds it so
    /// what it sends is non-negative. 0 for the full-ring mask.
    pub offset: u64,
    /// `m`: each `r_i` is uniform in `[0, 2^m)`. `m = k` is the full-ring
    /// mask (the fallback when `m + 1 > k`).
    pub mask_bits: u32,
    /// `k` of the model's ring.
    pub ring_bits: u32,
}

impl InputMasking {
    /// The parameters for `d` features in `range` at `f_in` fraction bits
    /// in `Z_{2^k}`: `B = max |x_int|`, `b = bits(B)` (at least 1),
    /// `m = b + 1 + κ` with κ = [`INPUT_HIDING_BITS_PER_FEATURE`]. Two
    /// inputs' shifted features `x_int + B` lie in `[0, 2B]`, so per
    /// feature their masked values are `|x − x'|/2^m ≤ 2B/2^m < 2^{−κ}`
    /// apart in statistical distance, and the whole vector at most
    /// `d·2^{−κ}`: `d` does not enter `m` (SECURITY.md, "Input masking").
    /// When `m + 1 > k` the sent value would not fit the ring: the
    /// full-ring mask is used instead (`m = k`, `B = 0`, `k` bits per
    /// feature, perfectly hiding).
    pub fn new(range: (f64, f64), f_in: u32, ring_bits: u32) -> Self {
        let offset = max_abs_input(range, f_in);
        let b = (u64::BITS - offset.leading_zeros()).max(1);
        let mask_bits = b + 1 + INPUT_HIDING_BITS_PER_FEATURE;
        if mask_bits < ring_bits {
            InputMasking { offset, mask_bits, ring_bits }
        } else {
            InputMasking { offset: 0, mask_bits: ring_bits, ring_bits }
        }
    }

    /// The parameters of a quantized model.
    pub fn of_model(m: &QuantizedModel) -> Self {
        InputMasking::new(m.input_range, m.f_in, m.ring_bits)
    }

    /// Whether the compact mask is in use (`m < k`), not the full-ring one.
    pub fn is_compact(&self) -> bool {
        self.mask_bits < self.ring_bits
    }

    /// Bits of one sent value in the packed string: `m + 1` (compact) or
    /// `k` (full ring; `k` is a multiple of 8, so the packed string is the
    /// values' `k/8` little-endian bytes concatenated).
    pub fn value_bits(&self) -> u32 {
        if self.is_compact() {
            self.mask_bits + 1
        } else {
            self.ring_bits
        }
    }

    /// Bytes of a masked input of `d` features: `⌈d·w/8⌉` for `w` =
    /// [`Self::value_bits`] (`None` on overflow).
    pub fn encoded_len(&self, d: usize) -> Option<usize> {
        d.checked_mul(self.value_bits() as usize).map(|bits| bits.div_ceil(8))
    }

    /// What the wire carries for `ỹ_i = x_int,i + r_i`: `u_i = ỹ_i + B`,
    /// packed as one bit string, value `i`'s `w` = [`Self::value_bits`]
    /// bits at bit offset `i·w`, least significant bit first; bit `j` of the
    /// string is bit `j mod 8` of byte `⌊j/8⌋`; the unused high bits of the
    /// last byte are zero. Refuses a value that does not fit `w` bits,
    /// which a client masking an input in range with this model's `m` never
    /// produces: it would be sent truncated, i.e. as another input.
    pub fn encode<R: Ring>(&self, masked: &[R]) -> Result<Vec<u8>> {
        self.check_ring::<R>()?;
        let w = self.value_bits() as usize;
        let len = self
            .encoded_len(masked.len())
            .ok_or_else(|| ProtocolError::Malformed(format!("{} masked values do not fit a message", masked.len())))?;
        let b = R::from_u64(self.offset);
        let mut out = vec![0u8; len];
        for (i, y) in masked.iter().enumerate() {
            let le = y.add(b).to_le_bytes();
            if !fits_bits(&le, w) {
                return Err(ProtocolError::Malformed(format!(
                    "masked input value {i} does not fit {w} bits: the input is outside the model's range or was \
                     not masked with this model's input_mask_bits (m = {})",
                    self.mask_bits
                )));
            }
            let (start, shift) = ((i * w) / 8, (i * w) % 8);
            // The bits above `w` are zero (checked above), so OR-ing whole
            // shifted bytes never touches the next value's bits; a carry
            // past the end of `out` can only be zero.
            for (t, &v) in le[..w.div_ceil(8)].iter().enumerate() {
                let wide = (v as u16) << shift;
                out[start + t] |= wide as u8;
                if let Some(next) = out.get_mut(start + t + 1) {
                    *next |= (wide >> 8) as u8;
                }
            }
        }
        Ok(out)
    }

    /// S1's side of [`Self::encode`]: exactly [`Self::encoded_len`]`(d)`
    /// bytes whose bits after the `d`-th value are zero, each value back to
    /// `ỹ_i = u_i − B (mod 2^k)`. The length is checked before anything is
    /// allocated; `field` names the request field in the error.
    pub fn decode<R: Ring>(&self, bytes: &[u8], d: usize, field: &str) -> Result<Vec<R>> {
        self.check_ring::<R>()?;
        let w = self.value_bits() as usize;
        let expected = self.encoded_len(d);
        if expected != Some(bytes.len()) {
            let expected = (d as u128 * w as u128).div_ceil(8);
            return Err(ProtocolError::Malformed(format!(
                "{field} has {} bytes; expected {expected} bytes: {d} values of {w} bits packed ({})",
                bytes.len(),
                self.describe()
            )));
        }
        let used = (d * w) % 8;
        if used != 0 && bytes[bytes.len() - 1] >> used != 0 {
            return Err(ProtocolError::Malformed(format!(
                "{field}: the {} padding bits after the last value are not zero ({})",
                8 - used,
                self.describe()
            )));
        }
        let b = R::from_u64(self.offset);
        let wb = w.div_ceil(8);
        let top_mask = 0xffu8 >> (8 * wb - w);
        let mut buf = [0u8; MAX_VALUE_BYTES];
        Ok((0..d)
            .map(|i| {
                let (start, shift) = ((i * w) / 8, (i * w) % 8);
                for (t, slot) in buf[..wb].iter_mut().enumerate() {
                    let lo = bytes[start + t] >> shift;
                    let hi = match (shift, bytes.get(start + t + 1)) {
                        (1.., Some(&h)) => h << (8 - shift),
                        _ => 0,
                    };
                    *slot = lo | hi;
                }
                buf[wb - 1] &= top_mask;
                R::from_le_truncating(&buf[..wb]).sub(b)
            })
            .collect())
    }

    /// The encoding in words, for error messages.
    fn describe(&self) -> String {
        if self.is_compact() {
            format!(
                "each is x_int + B + r < 2^{} with B = {} and m = {}, least significant bit first, bit j in \
                 byte j/8, unused high bits of the last byte zero",
                self.mask_bits + 1,
                self.offset,
                self.mask_bits
            )
        } else {
            format!("each a ring value of k/8 bytes, k = {}, little-endian", self.ring_bits)
        }
    }

    fn check_ring<R: Ring>(&self) -> Result<()> {
        if self.ring_bits != R::BITS {
            return Err(ProtocolError::RingMismatch { model: self.ring_bits, code: R::BITS });
        }
        Ok(())
    }
}

/// Whether the little-endian `le` is below `2^w`.
fn fits_bits(le: &[u8], w: usize) -> bool {
    let full = w / 8;
    let rest = w % 8;
    le.iter().enumerate().skip(full).all(|(j, &v)| if j == full { v >> rest == 0 } else { v == 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::U256;
    use crate::seed::Seed;
    use proptest::prelude::*;

    #[test]
    fn parameters_for_the_bundled_shapes() {
        // MNIST: [0, 1] at 8 fraction bits → B = 2^8 (9 bits); m = 9 + 1 +
        // 40 = 50, 51 bits a feature, 784 features in ⌈784·51/8⌉ = 4,998
        // bytes.
        let mnist = InputMasking::new((0.0, 1.0), 8, 128);
        assert_eq!((mnist.offset, mnist.mask_bits, mnist.value_bits()), (1 << 8, 50, 51));
        assert_eq!(mnist.encoded_len(784), Some(4998));
        // At the default 16 fraction bits: B = 2^16, m = 58.
        assert_eq!(InputMasking::new((0.0, 1.0), 16, 128).mask_bits, 58);
        // Rounding as quantize_input: 4300·2^16 and −5·2^16 are exact.
        assert_eq!(InputMasking::new((0.0, 4300.0), 16, 128).offset, 4300 << 16);
        assert_eq!(InputMasking::new((-5.0, 5.0), 16, 128).offset, 5 << 16);
        // A range of zeros still has b = 1.
        assert_eq!(InputMasking::new((0.0, 0.0), 16, 128).mask_bits, 1 + 1 + 40);
    }

    #[test]
    fn falls_back_to_the_full_ring_when_the_value_would_not_fit() {
        // x_int is an i64, so b ≤ 64 and no input reaches m + 1 > 128; the
        // rule itself is checked in a 64-bit ring.
        // B = 2^16 (b = 17): m = 58 and m + 1 = 59 ≤ 64: compact.
        let fits = InputMasking::new((0.0, 1.0), 16, 64);
        assert_eq!((fits.mask_bits, fits.is_compact(), fits.value_bits()), (58, true, 59));
        // B = 2^22 (b = 23): m = 64, which would send 65 bits: the full ring.
        let full = InputMasking::new((0.0, 64.0), 16, 64);
        assert_eq!(full, InputMasking { offset: 0, mask_bits: 64, ring_bits: 64 });
        assert_eq!((full.value_bits(), full.encoded_len(3)), (64, Some(24)));
        // The edge: m + 1 = k is compact (u < 2^k fits the ring), m = k is not.
        let edge = InputMasking::new((0.0, 32.0), 16, 64); // B = 2^21, m = 22 + 1 + 40 = 63
        assert_eq!((edge.mask_bits, edge.is_compact(), edge.value_bits()), (63, true, 64));
        // The widest input an i64 holds is compact at k = 128.
        let widest = InputMasking::new((-1e300, 1e300), 16, 128);
        assert_eq!((widest.offset, widest.mask_bits), (1 << 63, 64 + 1 + 40));
    }

    #[test]
    fn the_full_ring_encoding_is_k_over_8_little_endian_bytes_per_value() {
        // The packed string with w = k (a multiple of 8) is the encoding the
        // full-ring mask always had: values concatenated, k/8 bytes each.
        let full = InputMasking { offset: 0, mask_bits: 128, ring_bits: 128 };
        let y = [1u128, u128::MAX, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10];
        let wire = full.encode(&y).unwrap();
        assert_eq!(wire, y.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        assert_eq!(full.decode::<u128>(&wire, 3, "masked_input").unwrap(), y);
    }

    #[test]
    fn decode_refuses_a_wrong_length_and_nonzero_padding() {
        let m = InputMasking::new((0.0, 1.0), 16, 128); // m = 58 → 59 bits; 3 values: 177 bits, 23 bytes
        assert_eq!((m.mask_bits, m.value_bits(), m.encoded_len(3)), (58, 59, Some(23)));
        let ok = [0u8; 23];
        assert_eq!(m.decode::<u128>(&ok, 3, "masked_input").unwrap(), vec![0u128.wrapping_sub(1 << 16); 3]);
        for bad_len in [22, 24, 0] {
            let bytes = vec![0u8; bad_len];
            let e = m.decode::<u128>(&bytes, 3, "masked_input").unwrap_err().to_string();
            assert!(
                e.contains(&format!("masked_input has {bad_len} bytes; expected 23 bytes: 3 values of 59 bits packed")),
                "{e}"
            );
        }
        // Bit 176 is value 2's top bit; bits 177..184 are padding.
        let mut last = ok;
        last[22] = 0x01;
        let y = m.decode::<u128>(&last, 3, "masked_input").unwrap();
        assert_eq!(y[2], (1u128 << 58).wrapping_sub(1 << 16));
        for bit in 1..8 {
            let mut pad = ok;
            pad[22] = 1 << bit;
            let e = m.decode::<u128>(&pad, 3, "masked_input").unwrap_err().to_string();
            assert!(e.contains("masked_input: the 7 padding bits after the last value are not zero"), "{e}");
            assert!(e.contains("B = 65536"), "{e}");
        }
        // The wrong ring.
        assert!(matches!(m.decode::<U256>(&ok, 3, "x"), Err(ProtocolError::RingMismatch { .. })));
        // A value of m + 2 bits cannot be encoded.
        let e = m.encode(&[(1u128 << 59).wrapping_sub(1 << 16)]).unwrap_err().to_string();
        assert!(e.contains("masked input value 0 does not fit 59 bits"), "{e}");
    }

    /// The packing of `w`-bit values, bit by bit, as PROTOCOL §4.1 words
    /// it: value `i`'s bit `j` is bit `i·w + j` of the string, which is bit
    /// `(i·w + j) mod 8` of byte `⌊(i·w + j)/8⌋`.
    fn pack_by_the_spec(values: &[Vec<u8>], w: usize) -> Vec<u8> {
        let mut out = vec![0u8; (values.len() * w).div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            for j in 0..w {
                if v[j / 8] >> (j % 8) & 1 == 1 {
                    let at = i * w + j;
                    out[at / 8] |= 1 << (at % 8);
                }
            }
        }
        out
    }

    fn ring_value<R: Ring>(bytes: &[u8], w: u32) -> R {
        let mut b = bytes.to_vec();
        let w = w as usize;
        for (j, x) in b.iter_mut().enumerate() {
            if 8 * j >= w {
                *x = 0;
            } else if 8 * (j + 1) > w {
                *x &= 0xff >> (8 * (j + 1) - w);
            }
        }
        R::from_le_truncating(&b)
    }

    fn packing_round_trips<R: Ring + std::fmt::Debug>(
        offset_bits: u32,
        d: usize,
        raw: &[u8],
    ) -> std::result::Result<(), TestCaseError> {
        // A masking whose offset has `offset_bits` bits; any u < 2^w is a
        // value the packing must carry (the encoding does not care whether
        // u came from an input in range).
        let offset = if offset_bits == 0 { 0 } else { 1u64 << (offset_bits - 1) };
        let b = (u64::BITS - offset.leading_zeros()).max(1);
        let mask_bits = b + 1 + INPUT_HIDING_BITS_PER_FEATURE;
        let m = if mask_bits < R::BITS {
            InputMasking { offset, mask_bits, ring_bits: R::BITS }
        } else {
            InputMasking { offset: 0, mask_bits: R::BITS, ring_bits: R::BITS }
        };
        let w = m.value_bits();
        let vb = R::BITS as usize / 8;
        let u: Vec<R> = raw.chunks_exact(vb).take(d).map(|c| ring_value::<R>(c, w)).collect();
        let y: Vec<R> = u.iter().map(|&u| u.sub(R::from_u64(m.offset))).collect();
        let wire = m.encode(&y).unwrap();
        prop_assert_eq!(Some(wire.len()), m.encoded_len(d));
        prop_assert_eq!(wire.len(), (d * w as usize).div_ceil(8));
        let le: Vec<Vec<u8>> = u.iter().map(|u| u.to_le_bytes()).collect();
        prop_assert_eq!(&wire, &pack_by_the_spec(&le, w as usize));
        prop_assert_eq!(m.decode::<R>(&wire, d, "masked_input").unwrap(), y);
        // One byte more or less is refused, and so is any padding bit.
        let mut longer = wire.clone();
        longer.push(0);
        prop_assert!(m.decode::<R>(&longer, d, "masked_input").is_err());
        if !wire.is_empty() {
            prop_assert!(m.decode::<R>(&wire[..wire.len() - 1], d, "masked_input").is_err());
        }
        let used = (d * w as usize) % 8;
        if used != 0 {
            for bit in used..8 {
                let mut pad = wire.clone();
                *pad.last_mut().unwrap() |= 1 << bit;
                let e = m.decode::<R>(&pad, d, "masked_input").unwrap_err().to_string();
                prop_assert!(e.contains("padding bits"), "{}", e);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The compact mask round-trips: for an input in range, every sent
        /// value is below 2^{m+1} and `u − B − r == x_int`, and S1's
        /// decoding gives back `ỹ = x_int + r (mod 2^k)`.
        #[test]
        fn compact_masking_round_trips(
            lo in -3000.0f64..0.0,
            width in 0.0f64..6000.0,
            f_in in 0u32..24,
            d in 1usize..300,
            seed in any::<[u8; 32]>(),
            pick in proptest::collection::vec(0.0f64..=1.0, 300),
        ) {
            let range = (lo, lo + width);
            let m = InputMasking::new(range, f_in, 128);
            prop_assert!(m.is_compact());
            let x: Vec<f64> = pick[..d].iter().map(|t| range.0 + t * (range.1 - range.0)).collect();
            let x_int = tandem_model::quantize_input(&x, d, range, f_in).unwrap();
            let r: Vec<u128> = Seed::from_bytes(seed).input_mask(d, m.mask_bits);
            let y: Vec<u128> = x_int.iter().zip(&r).map(|(&x, &r)| u128::from_i64(x).add(r)).collect();
            let wire = m.encode(&y).unwrap();
            prop_assert_eq!(Some(wire.len()), m.encoded_len(d));
            let back = m.decode::<u128>(&wire, d, "masked_input").unwrap();
            for i in 0..d {
                let u = back[i].add(m.offset as u128);
                prop_assert!(u < 1u128 << (m.mask_bits + 1));
                prop_assert!(r[i] < 1u128 << m.mask_bits);
                prop_assert_eq!(u as i128 - m.offset as i128 - r[i] as i128, x_int[i] as i128);
            }
            prop_assert_eq!(back, y);
        }

        /// The packing alone, for every width an i64 input can give (b from
        /// 1 to 64, so w from 43 to 106 bits), in both rings: the bytes are
        /// those of the bit-by-bit definition, decoding inverts encoding,
        /// and a wrong length or a set padding bit is refused.
        #[test]
        fn packing_matches_the_spec_and_round_trips_k128(
            offset_bits in 0u32..=64,
            d in 0usize..40,
            raw in proptest::collection::vec(any::<u8>(), 40 * 16),
        ) {
            packing_round_trips::<u128>(offset_bits, d, &raw)?;
        }

        #[test]
        fn packing_matches_the_spec_and_round_trips_k256(
            offset_bits in 0u32..=64,
            d in 0usize..20,
            raw in proptest::collection::vec(any::<u8>(), 20 * 32),
        ) {
            packing_round_trips::<U256>(offset_bits, d, &raw)?;
        }

        /// With the full-ring mask every string of `16·d` bytes is a valid
        /// masked input, and it round-trips unchanged.
        #[test]
        fn full_ring_packing_round_trips(
            d in 0usize..20,
            raw in proptest::collection::vec(any::<u8>(), 20 * 16),
        ) {
            let full = InputMasking { offset: 0, mask_bits: 128, ring_bits: 128 };
            let bytes = &raw[..16 * d];
            let y = full.decode::<u128>(bytes, d, "masked_input").unwrap();
            prop_assert_eq!(full.encode(&y).unwrap(), bytes.to_vec());
        }
    }
}
