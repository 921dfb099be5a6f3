//! The tweakable correlation-robust hash of Guo–Katz–Wang–Yu (S&P 2020):
//! `H(i, x) = π(π(x) ⊕ i) ⊕ π(x)`, `π` = AES-128 under a fixed public key.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

type Block = GenericArray<u8, aes::cipher::consts::U16>;

/// Blocks per `encrypt_blocks` call (AES-NI pipelines 8 at a time).
pub(crate) const CHUNK: usize = 64;

const KEY_DOMAIN: &[u8] = b"tandem/v1/tccr-fixed-key";
const TWEAK_DOMAIN: &[u8] = b"tandem/v1/ot-tweak";

/// The fixed public AES key: the first 16 bytes of SHA-256("tandem/v1/tccr-fixed-key").
pub(crate) fn fixed_key() -> [u8; 16] {
    let d = Sha256::digest(KEY_DOMAIN);
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// `H` for one session: π and the session's 64-bit tweak tag.
pub(crate) struct Tccr {
    aes: Aes128,
    /// `tag << 64`, `tag` = the first 8 bytes (LE) of SHA-256("tandem/v1/ot-tweak" ‖ sid).
    tag: u128,
}

impl Tccr {
    pub(crate) fn new(sid: &[u8; 16]) -> Self {
        let aes = Aes128::new(&fixed_key().into());
        let d = Sha256::new().chain_update(TWEAK_DOMAIN).chain_update(sid).finalize();
        let mut t = [0u8; 8];
        t.copy_from_slice(&d[..8]);
        Self { aes, tag: u128::from(u64::from_le_bytes(t)) << 64 }
    }

    /// The tweak of the session's OT number `i`.
    #[inline]
    pub(crate) fn tweak(&self, i: u64) -> u128 {
        self.tag | u128::from(i)
    }

    /// `out[k] = H(tweak(ot(k)), xs[k])` for `xs.len() <= CHUNK`.
    pub(crate) fn hash_chunk(&self, xs: &[u128], ot: impl Fn(usize) -> u64, out: &mut [u128]) {
        debug_assert!(xs.len() <= CHUNK && xs.len() == out.len());
        let n = xs.len();
        let mut px = [Block::default(); CHUNK];
        let mut y = [Block::default(); CHUNK];
        for (b, x) in px.iter_mut().zip(xs) {
            *b = Block::from(x.to_le_bytes());
        }
        self.aes.encrypt_blocks(&mut px[..n]);
        for k in 0..n {
            let p = u128::from_le_bytes(px[k].into());
            y[k] = Block::from((p ^ self.tweak(ot(k))).to_le_bytes());
        }
        self.aes.encrypt_blocks(&mut y[..n]);
        for k in 0..n {
            out[k] = u128::from_le_bytes(y[k].into()) ^ u128::from_le_bytes(px[k].into());
        }
        for b in px[..n].iter_mut().chain(y[..n].iter_mut()) {
            b.as_mut_slice().zeroize();
        }
    }

    /// `out[k] = H(tweak(first + k), xs[k])`, any length.
    pub(crate) fn hash_seq(&self, first: u64, xs: &[u128], out: &mut [u128]) {
        debug_assert_eq!(xs.len(), out.len());
        for (c, (xc, oc)) in xs.chunks(CHUNK).zip(out.chunks_mut(CHUNK)).enumerate() {
            let base = first + (c * CHUNK) as u64;
            self.hash_chunk(xc, |k| base + k as u64, oc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockEncrypt;

    /// The batched hash equals the one-block-at-a-time definition.
    #[test]
    fn matches_definition() {
        let sid = [7u8; 16];
        let h = Tccr::new(&sid);
        let aes = Aes128::new(&fixed_key().into());
        let pi = |x: u128| {
            let mut b = Block::from(x.to_le_bytes());
            aes.encrypt_block(&mut b);
            u128::from_le_bytes(b.into())
        };
        let xs: Vec<u128> = (0..200u128).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).collect();
        let mut out = vec![0u128; xs.len()];
        h.hash_seq(5, &xs, &mut out);
        for (k, (&x, &o)) in xs.iter().zip(&out).enumerate() {
            let i = h.tweak(5 + k as u64);
            assert_eq!(o, pi(pi(x) ^ i) ^ pi(x));
        }
        // Tweaks separate: same x, different index or sid, different output.
        let mut o2 = [0u128; 1];
        h.hash_seq(6, &xs[..1], &mut o2);
        assert_ne!(o2[0], out[0]);
        let h2 = Tccr::new(&[8u8; 16]);
        h2.hash_seq(5, &xs[..1], &mut o2);
        assert_ne!(o2[0], out[0]);
        assert_ne!(h.tag, h2.tag);
    }
}
