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
pub(crate) fn pack(ctx: &Context, data: &[u64], per_limb: usize, out: &mut Vec<u8>) {
    debug_assert_eq!(data.len(), per_limb * ctx.limbs());
    out.reserve(packed_len(ctx, per_limb));
    let mut acc: u128 = 0;
    let mut nbits: u32 = 0;
    for l in 0..ctx.limbs() {
        let w = ctx.residue_bits(l);
        for &v in &data[l * per_limb..(l + 1) * per_limb] {
            acc |= (v as u128) << nbits;
            nbits += w;
            while nbits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                nbits -= 8;
            }
        }
    }
    if nbits > 0 {
        out.push(acc as u8);
    }
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
    let mut it = bytes.iter();
    for l in 0..ctx.limbs() {
        let w = ctx.residue_bits(l);
        let p = ctx.primes[l];
        let mask = (1u128 << w) - 1;
        for index in 0..per_limb {
            while nbits < w {
                // length checked above, so the iterator cannot run dry
                let b = *it.next().expect("length checked");
                acc |= (b as u128) << nbits;
                nbits += 8;
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
    if acc != 0 || it.next().is_some() {
        return Err(LatticeError::NonZeroPadding { what });
    }
    Ok(out)
}
