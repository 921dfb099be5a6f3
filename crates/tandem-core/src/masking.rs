//! The compact input mask (docs/PROTOCOL.md §4.1, SECURITY.md "Input
//! masking"): its parameters and the wire encoding of the masked input.
//!
//! A quantized feature lies in `[−B, B]`, so a mask `r` uniform in
//! `[0, 2^m)` with `m = b + κ_in` (`B < 2^b`) already hides it
//! statistically; a full ring value (`k` bits) is not needed. The client
//! sends `u = x_int + B + r`, a non-negative integer below `2^{m+1}`, in
//! `⌈(m+1)/8⌉` bytes instead of `k/8`; S1 turns it back into the ring value
//! `ỹ = u − B = x_int + r (mod 2^k)` and nothing downstream changes.
//!
//! One function, [`InputMasking::new`], computes the parameters from the
//! model's public metadata: S1 publishes them in the model info and tells
//! S2 `m`, the client recomputes them and refuses a model info that
//! disagrees ([`crate::ModelInfo::masking`]).

use crate::error::{ProtocolError, Result};
use crate::ring::Ring;
use tandem_model::{max_abs_input, QuantizedModel};

/// The statistical distance between the masked inputs of any two inputs in
/// range is at most `2^−INPUT_HIDING_BITS`, for the whole vector.
pub const INPUT_HIDING_BITS: u32 = 40;

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

/// `⌈log2 d⌉` (0 for `d ≤ 1`).
fn ceil_log2(d: usize) -> u32 {
    if d <= 1 {
        0
    } else {
        usize::BITS - (d - 1).leading_zeros()
    }
}

impl InputMasking {
    /// The parameters for `d` features in `range` at `f_in` fraction bits
    /// in `Z_{2^k}`: `B = max |x_int|`, `b = bits(B)` (at least 1),
    /// `κ_in = 41 + ⌈log2 d⌉`, `m = b + κ_in`. Per feature the masked values
    /// of `x` and `x'` are `|x − x'|/2^m ≤ 2B/2^m < 2^{1−κ_in}` apart in
    /// statistical distance, so the whole vector is at most
    /// `d·2^{1−κ_in} ≤ 2^−40` apart. When `m + 1 > k` the sent value would
    /// not fit the ring: the full-ring mask is used instead (`m = k`,
    /// `B = 0`, `k/8` bytes per feature, perfectly hiding).
    pub fn new(range: (f64, f64), f_in: u32, d: usize, ring_bits: u32) -> Self {
        let offset = max_abs_input(range, f_in);
        let b = (u64::BITS - offset.leading_zeros()).max(1);
        let mask_bits = b + 1 + INPUT_HIDING_BITS + ceil_log2(d);
        if mask_bits < ring_bits {
            InputMasking { offset, mask_bits, ring_bits }
        } else {
            InputMasking { offset: 0, mask_bits: ring_bits, ring_bits }
        }
    }

    /// The parameters of a quantized model.
    pub fn of_model(m: &QuantizedModel) -> Self {
        InputMasking::new(m.input_range, m.f_in, m.input_len(), m.ring_bits)
    }

    /// Whether the compact mask is in use (`m < k`), not the full-ring one.
    pub fn is_compact(&self) -> bool {
        self.mask_bits < self.ring_bits
    }

    /// Bytes of one sent value: `⌈(m+1)/8⌉` (compact) or `k/8` (full ring).
    pub fn value_bytes(&self) -> usize {
        if self.is_compact() {
            (self.mask_bits as usize + 1).div_ceil(8)
        } else {
            self.ring_bits as usize / 8
        }
    }

    /// Bytes of a masked input of `d` features (`None` on overflow).
    pub fn encoded_len(&self, d: usize) -> Option<usize> {
        d.checked_mul(self.value_bytes())
    }

    /// What the wire carries for each `ỹ_i = x_int,i + r_i`: `u_i = ỹ_i + B`,
    /// its low [`Self::value_bytes`] bytes, little-endian, concatenated.
    /// Refuses a value that does not fit (`u ≥ 2^{m+1}`), which a client
    /// masking an input in range with this model's `m` never produces: it
    /// would be sent truncated, i.e. as another input.
    pub fn encode<R: Ring>(&self, masked: &[R]) -> Result<Vec<u8>> {
        self.check_ring::<R>()?;
        let w = self.value_bytes();
        let b = R::from_u64(self.offset);
        let mut out = Vec::with_capacity(masked.len() * w);
        for (i, y) in masked.iter().enumerate() {
            let le = y.add(b).to_le_bytes();
            if le[w..].iter().any(|&x| x != 0) || !self.fits(le[w - 1]) {
                return Err(ProtocolError::Malformed(format!(
                    "masked input value {i} does not fit {} bits: the input is outside the model's range or was \
                     not masked with this model's input_mask_bits (m = {})",
                    self.mask_bits + 1,
                    self.mask_bits
                )));
            }
            out.extend_from_slice(&le[..w]);
        }
        Ok(out)
    }

    /// S1's side of [`Self::encode`]: exactly `d` values of
    /// [`Self::value_bytes`] bytes, each below `2^{m+1}` (compact), back to
    /// `ỹ_i = u_i − B (mod 2^k)`. The length is checked before anything is
    /// allocated; `field` names the request field in the error.
    pub fn decode<R: Ring>(&self, bytes: &[u8], d: usize, field: &str) -> Result<Vec<R>> {
        self.check_ring::<R>()?;
        let w = self.value_bytes();
        if self.encoded_len(d) != Some(bytes.len()) {
            return Err(ProtocolError::Malformed(format!(
                "{field} has {} bytes; expected {d} values of {w} bytes = {} bytes ({})",
                bytes.len(),
                d as u128 * w as u128,
                self.describe()
            )));
        }
        let b = R::from_u64(self.offset);
        bytes
            .chunks_exact(w)
            .enumerate()
            .map(|(i, c)| {
                if !self.fits(c[w - 1]) {
                    return Err(ProtocolError::Malformed(format!(
                        "{field}: value {i} is not below 2^{} ({})",
                        self.mask_bits + 1,
                        self.describe()
                    )));
                }
                Ok(R::from_le_truncating(c).sub(b))
            })
            .collect()
    }

    /// The encoding in words, for error messages.
    fn describe(&self) -> String {
        if self.is_compact() {
            format!(
                "each is x_int + B + r < 2^{} with B = {} and m = {}, little-endian",
                self.mask_bits + 1,
                self.offset,
                self.mask_bits
            )
        } else {
            format!("each a ring value of k/8 bytes, k = {}, little-endian", self.ring_bits)
        }
    }

    /// Whether the top byte of a value keeps it below `2^{m+1}`: only the
    /// last byte can hold bits above `m` (the width is `⌈(m+1)/8⌉` bytes).
    fn fits(&self, top: u8) -> bool {
        if !self.is_compact() {
            return true;
        }
        let used = (self.mask_bits + 1) - 8 * (self.value_bytes() as u32 - 1);
        used >= 8 || top >> used == 0
    }

    fn check_ring<R: Ring>(&self) -> Result<()> {
        if self.ring_bits != R::BITS {
            return Err(ProtocolError::RingMismatch { model: self.ring_bits, code: R::BITS });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::Seed;
    use proptest::prelude::*;

    #[test]
    fn parameters_for_the_bundled_shapes() {
        // MNIST: [0, 1] at 16 fraction bits → B = 2^16 (17 bits); d = 784
        // → κ_in = 41 + 10; m = 68, 69 bits sent in 9 bytes.
        let mnist = InputMasking::new((0.0, 1.0), 16, 784, 128);
        assert_eq!((mnist.offset, mnist.mask_bits, mnist.value_bytes()), (1 << 16, 68, 9));
        // Rounding as quantize_input: 4300·2^16 and −5·2^16 are exact.
        assert_eq!(InputMasking::new((0.0, 4300.0), 16, 30, 128).offset, 4300 << 16);
        assert_eq!(InputMasking::new((-5.0, 5.0), 16, 13, 128).offset, 5 << 16);
        // A range of zeros still has b = 1.
        assert_eq!(InputMasking::new((0.0, 0.0), 16, 1, 128).mask_bits, 1 + 41);
    }

    #[test]
    fn falls_back_to_the_full_ring_when_the_value_would_not_fit() {
        // x_int is an i64, so b ≤ 64 and no model reaches m + 1 > 128 with
        // a sane d; the rule itself is checked in a 64-bit ring.
        // B = 2^16 (b = 17), d = 1: m = 58 and m + 1 = 59 ≤ 64: compact.
        let fits = InputMasking::new((0.0, 1.0), 16, 1, 64);
        assert_eq!((fits.mask_bits, fits.is_compact(), fits.value_bytes()), (58, true, 8));
        // 2^6 features: m = 64, which would send 65 bits: the full ring.
        let full = InputMasking::new((0.0, 1.0), 16, 64, 64);
        assert_eq!(full, InputMasking { offset: 0, mask_bits: 64, ring_bits: 64 });
        assert_eq!(full.value_bytes(), 8);
        // The edge: m + 1 = k is compact (u < 2^k fits the ring), m = k is not.
        let edge = InputMasking::new((0.0, 1.0), 16, 32, 64); // m = 17 + 41 + 5 = 63
        assert_eq!((edge.mask_bits, edge.is_compact(), edge.value_bytes()), (63, true, 8));
        assert!(!InputMasking::new((0.0, 1.0), 16, 33, 64).is_compact());
        // The widest input an i64 holds, at the largest d, is compact at k = 128.
        let widest = InputMasking::new((-1e300, 1e300), 16, 1 << 20, 128);
        assert_eq!((widest.offset, widest.mask_bits), (1 << 63, 64 + 41 + 20));
    }

    #[test]
    fn decode_refuses_a_wrong_length_and_a_value_above_the_width() {
        let m = InputMasking::new((0.0, 1.0), 16, 3, 128); // m = 17 + 43 = 60 → 61 bits, 8 bytes
        assert_eq!((m.mask_bits, m.value_bytes()), (60, 8));
        let ok = [0u8; 24];
        assert_eq!(m.decode::<u128>(&ok, 3, "masked_input").unwrap(), vec![0u128.wrapping_sub(1 << 16); 3]);
        let e = m.decode::<u128>(&ok[..23], 3, "masked_input").unwrap_err().to_string();
        assert!(e.contains("masked_input has 23 bytes; expected 3 values of 8 bytes = 24 bytes"), "{e}");
        // Bit 61 of value 1 set: 2^61 ≥ 2^61.
        let mut high = ok;
        high[15] = 0x20;
        let e = m.decode::<u128>(&high, 3, "masked_input").unwrap_err().to_string();
        assert!(e.contains("masked_input: value 1 is not below 2^61") && e.contains("B = 65536"), "{e}");
        // 2^61 − 1 is accepted.
        high[15] = 0x1f;
        high[8..15].fill(0xff);
        assert!(m.decode::<u128>(&high, 3, "masked_input").is_ok());
        // The wrong ring.
        assert!(matches!(m.decode::<crate::U256>(&ok, 3, "x"), Err(ProtocolError::RingMismatch { .. })));
    }

    proptest! {
        /// The compact mask round-trips: for an input in range, every sent
        /// value is below 2^{m+1}, `u − B − r == x_int`, and S1's decoding
        /// gives back `ỹ = x_int + r (mod 2^k)`.
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
            let m = InputMasking::new(range, f_in, d, 128);
            prop_assert!(m.is_compact());
            let x: Vec<f64> = pick[..d].iter().map(|t| range.0 + t * (range.1 - range.0)).collect();
            let x_int = tandem_model::quantize_input(&x, d, range, f_in).unwrap();
            let r: Vec<u128> = Seed::from_bytes(seed).input_mask(d, m.mask_bits);
            let y: Vec<u128> = x_int.iter().zip(&r).map(|(&x, &r)| u128::from_i64(x).add(r)).collect();
            let wire = m.encode(&y).unwrap();
            prop_assert_eq!(wire.len(), d * m.value_bytes());
            for (i, c) in wire.chunks_exact(m.value_bytes()).enumerate() {
                let u = u128::from_le_truncating(c);
                prop_assert!(u < 1u128 << (m.mask_bits + 1));
                prop_assert!(r[i] < 1u128 << m.mask_bits);
                prop_assert_eq!(u as i128 - m.offset as i128 - r[i] as i128, x_int[i] as i128);
            }
            prop_assert_eq!(m.decode::<u128>(&wire, d, "masked_input").unwrap(), y);
        }
    }
}
