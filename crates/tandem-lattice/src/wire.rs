//! Bit-packed residues: every residue mod `p_i` takes exactly `bits(p_i)`
//! bits, least significant bit first, limb after limb; the field is padded
//! with zero bits to a whole byte. Parsing checks the exact length, that
//! every residue is `< p_i` and that the padding is zero, so one value has
//! exactly one encoding.

use crate::params::Context;
use crate::LatticeError;

/// Bytes of `per_limb` residues in every limb.
pub(crate) fn packed_len(ctx: &Context, per_limb: usize) -> usize {
    let bits: usize = (0..ctx.limbs()).map(|l| ctx.residue_bits(l) as usize * per_limb).sum();
    bits.div_ceil(8)
}

/// Appends `data` (limb-major, `per_limb` residues per limb) to `out`.
///
/// Whole 64-bit words go out at a time: a byte at a time this was about a
/// tenth of both servers' CPU per query (3.7 MB of residues each way).
pub(crate) fn pack(ctx: &Context, data: &[u64], per_limb: usize, out: &mut Vec<u8>) {
    debug_assert_eq!(data.len(), per_limb * ctx.limbs());
    let start = out.len();
    out.resize(start + packed_len(ctx, per_limb), 0);
    let buf = &mut out[start..];
    let mut pos = 0;
    let mut acc: u128 = 0;
    let mut nbits: u32 = 0;
    for l in 0..ctx.limbs() {
        let w = ctx.residue_bits(l);
        for &v in &data[l * per_limb..(l + 1) * per_limb] {
            debug_assert!(w == 64 || v >> w == 0);
            // nbits < 64 and w ≤ 64 here, so nothing shifts out of acc.
            acc |= (v as u128) << nbits;
            nbits += w;
            if nbits >= 64 {
                buf[pos..pos + 8].copy_from_slice(&(acc as u64).to_le_bytes());
                pos += 8;
                acc >>= 64;
                nbits -= 64;
            }
        }
    }
    let tail = nbits.div_ceil(8) as usize;
    buf[pos..pos + tail].copy_from_slice(&(acc as u64).to_le_bytes()[..tail]);
    debug_assert_eq!(pos + tail, buf.len());
}

/// Parses exactly `packed_len(ctx, per_limb)` bytes.
pub(crate) fn unpack(
    ctx: &Context,
    bytes: &[u8],
    per_limb: usize,
    what: &'static str,
) -> Result<Vec<u64>, LatticeError> {
    let expected = packed_len(ctx, per_limb);
    if bytes.len() != expected {
        return Err(LatticeError::WrongLength { what, expected, got: bytes.len() });
    }
    let mut out = Vec::with_capacity(per_limb * ctx.limbs());
    let mut acc: u128 = 0;
    let mut nbits: u32 = 0;
    let mut pos = 0;
    for l in 0..ctx.limbs() {
        let w = ctx.residue_bits(l);
        let p = ctx.primes[l];
        let mask = (1u128 << w) - 1;
        for index in 0..per_limb {
            if nbits < w {
                // Up to 8 bytes at a time; the length check above means the
                // bytes left always cover the residue (nbits < w ≤ 64, so
                // acc holds the 64 new bits).
                let take = (bytes.len() - pos).min(8);
                let mut word = [0u8; 8];
                word[..take].copy_from_slice(&bytes[pos..pos + take]);
                pos += take;
                acc |= (u64::from_le_bytes(word) as u128) << nbits;
                nbits += 8 * take as u32;
            }
            let v = (acc & mask) as u64;
            acc >>= w;
            nbits -= w;
            if v >= p {
                return Err(LatticeError::CoefficientOutOfRange { what, limb: l, index });
            }
            out.push(v);
        }
    }
    if acc != 0 || pos != bytes.len() {
        return Err(LatticeError::NonZeroPadding { what });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use rand::{Rng, SeedableRng};

    /// The format as the module comment states it, one bit at a time.
    fn pack_bitwise(ctx: &Context, data: &[u64], per_limb: usize) -> Vec<u8> {
        let mut bits = Vec::new();
        for l in 0..ctx.limbs() {
            for &v in &data[l * per_limb..(l + 1) * per_limb] {
                bits.extend((0..ctx.residue_bits(l)).map(|i| (v >> i) & 1 == 1));
            }
        }
        bits.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (i, &x)| b | (x as u8) << i)).collect()
    }

    #[test]
    fn word_packing_matches_the_bitwise_format_and_round_trips() {
        let ctx = Context::new(Params::insecure_test(10)).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for per_limb in (0..40).chain([127, 1024]) {
            let data: Vec<u64> = (0..ctx.limbs())
                .flat_map(|l| {
                    let p = ctx.primes[l];
                    (0..per_limb).map(|_| rng.gen_range(0..p)).collect::<Vec<_>>()
                })
                .collect();
            let mut out = vec![0xee];
            pack(&ctx, &data, per_limb, &mut out);
            assert_eq!(out[0], 0xee, "appends");
            assert_eq!(&out[1..], &pack_bitwise(&ctx, &data, per_limb)[..], "{per_limb} per limb");
            assert_eq!(unpack(&ctx, &out[1..], per_limb, "t").unwrap(), data);
            // A set padding bit, a residue ≥ p, a short or long field: refused.
            let bits: usize = (0..ctx.limbs()).map(|l| ctx.residue_bits(l) as usize * per_limb).sum();
            if !bits.is_multiple_of(8) {
                let mut bad = out[1..].to_vec();
                *bad.last_mut().unwrap() |= 0x80;
                assert!(matches!(unpack(&ctx, &bad, per_limb, "t"), Err(LatticeError::NonZeroPadding { .. })));
            }
            if per_limb > 0 {
                let mut high = data.clone();
                high[0] = ctx.primes[0];
                let mut bad = Vec::new();
                pack(&ctx, &high, per_limb, &mut bad);
                assert!(matches!(unpack(&ctx, &bad, per_limb, "t"), Err(LatticeError::CoefficientOutOfRange { .. })));
            }
            if out.len() > 1 {
                assert!(unpack(&ctx, &out[2..], per_limb, "t").is_err());
            }
            let mut long = out[1..].to_vec();
            long.push(0);
            assert!(unpack(&ctx, &long, per_limb, "t").is_err());
        }
    }
}
