//! S2's RLWE key pair. The secret key `s` is ternary; the public key is one
//! RLWE sample `(b, a) = (−a·s + e, a)` with `a` expanded from a 32-byte seed.
//! S1 uses the public key only to rerandomize its results (a fresh
//! encryption of zero per output ciphertext).

use std::fmt;
use std::sync::Arc;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::arith::{sample_cbd, sample_ternary, sample_uniform_mod, small_signed_mod, WordStream};
use crate::params::Context;
use crate::{wire, LatticeError};

/// Expands a 32-byte seed into a uniform polynomial **in NTT form** (limb
/// after limb, each value uniform in `[0, p_i)` by rejection on
/// `bits(p_i)`-bit words of the ChaCha20 stream; see
/// [`crate::arith`]). A uniform polynomial is uniform in either domain, so
/// sampling the NTT form directly saves a transform on both sides.
pub(crate) fn expand_seed(ctx: &Context, seed: &[u8; 32], out: &mut Vec<u64>) {
    let mut chacha = ChaCha20Rng::from_seed(*seed);
    let mut rng = WordStream::new(&mut chacha);
    out.clear();
    out.reserve(ctx.limbs() * ctx.n);
    for &p in &ctx.primes {
        for _ in 0..ctx.n {
            out.push(sample_uniform_mod(&mut rng, p));
        }
    }
}

/// A small signed polynomial written into every limb (coefficient form).
pub(crate) fn small_to_rns(ctx: &Context, coeffs: &[i64], out: &mut [u64]) {
    let n = ctx.n;
    for (l, &p) in ctx.primes.iter().enumerate() {
        for (k, &c) in coeffs.iter().enumerate() {
            out[l * n + k] = small_signed_mod(c, p);
        }
    }
}

/// Forward NTT of every limb in place.
pub(crate) fn fwd_all(ctx: &Context, poly: &mut [u64]) {
    for (l, plan) in ctx.plans.iter().enumerate() {
        plan.fwd(&mut poly[l * ctx.n..(l + 1) * ctx.n]);
    }
}

/// A fresh CBD error polynomial in RNS coefficient form.
pub(crate) fn sample_error_rns(ctx: &Context, rng: &mut impl RngCore, out: &mut [u64]) {
    let n = ctx.n;
    let eta = ctx.params.eta;
    let mut rng = WordStream::new(rng);
    for k in 0..n {
        let e = sample_cbd(&mut rng, eta);
        for (l, &p) in ctx.primes.iter().enumerate() {
            out[l * n + k] = small_signed_mod(e, p);
        }
    }
}

/// A fresh ternary polynomial (coefficients in `{−1, 0, 1}`).
pub(crate) fn sample_ternary_poly(ctx: &Context, rng: &mut impl RngCore) -> Zeroizing<Vec<i64>> {
    let mut buf = [0u8; 64];
    let mut pos = buf.len();
    let v = (0..ctx.n).map(|_| sample_ternary(rng, &mut buf, &mut pos)).collect();
    buf.zeroize();
    Zeroizing::new(v)
}

/// S2's secret key: a ternary polynomial, kept in the two NTT forms the
/// protocol needs (`−s` to encrypt, `s/N` to decrypt). Zeroized on drop;
/// its `Debug` prints nothing secret.
pub struct SecretKey {
    pub(crate) ctx: Arc<Context>,
    /// Coefficients of `s`, in `{−1, 0, 1}`.
    s: Vec<i64>,
    /// NTT form of `−s`.
    pub(crate) neg_s_ntt: Vec<u64>,
    /// NTT form of `s`, times `N^{-1} mod p_i`, so that one inverse
    /// transform of `c_1 ⊙ (s/N)` gives `c_1·s` in coefficient form.
    pub(crate) s_dec_ntt: Vec<u64>,
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.s.zeroize();
        self.neg_s_ntt.zeroize();
        self.s_dec_ntt.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey { .. }")
    }
}

impl SecretKey {
    /// A fresh ternary secret key (each coefficient uniform in `{−1, 0, 1}`).
    pub fn generate(ctx: &Arc<Context>, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let s = sample_ternary_poly(ctx, rng);
        Self::from_coeffs(ctx, s.to_vec())
    }

    fn from_coeffs(ctx: &Arc<Context>, s: Vec<i64>) -> Self {
        let n = ctx.n;
        let mut s_ntt = Zeroizing::new(vec![0u64; ctx.limbs() * n]);
        small_to_rns(ctx, &s, &mut s_ntt);
        fwd_all(ctx, &mut s_ntt);
        let mut neg_s_ntt = vec![0u64; s_ntt.len()];
        let mut s_dec_ntt = s_ntt.to_vec();
        for (l, &p) in ctx.primes.iter().enumerate() {
            let range = l * n..(l + 1) * n;
            for (d, &v) in neg_s_ntt[range.clone()].iter_mut().zip(&s_ntt[range.clone()]) {
                *d = if v == 0 { 0 } else { p - v };
            }
            ctx.plans[l].normalize(&mut s_dec_ntt[range]);
        }
        SecretKey { ctx: ctx.clone(), s, neg_s_ntt, s_dec_ntt }
    }

    /// The context this key belongs to.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// A fresh public key `(−a·s + e, a)`, `a` from a fresh seed.
    pub fn public_key(&self, rng: &mut (impl RngCore + CryptoRng)) -> PublicKey {
        let ctx = &self.ctx;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut a_ntt = Vec::new();
        expand_seed(ctx, &seed, &mut a_ntt);
        let mut b_ntt = vec![0u64; ctx.limbs() * ctx.n];
        sample_error_rns(ctx, rng, &mut b_ntt);
        fwd_all(ctx, &mut b_ntt);
        let n = ctx.n;
        for l in 0..ctx.limbs() {
            let r = l * n..(l + 1) * n;
            ctx.plans[l].mul_accumulate(&mut b_ntt[r.clone()], &a_ntt[r.clone()], &self.neg_s_ntt[r]);
        }
        PublicKey { ctx: ctx.clone(), seed, a_ntt, b_ntt }
    }

    /// Two bits per coefficient (`s + 1` in `{0, 1, 2}`), four coefficients
    /// a byte, lowest first. For S2's key file; the caller keeps it secret.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![0u8; self.ctx.n / 4]);
        for (k, &c) in self.s.iter().enumerate() {
            out[k / 4] |= ((c + 1) as u8) << (2 * (k % 4));
        }
        out
    }

    /// Parses [`SecretKey::to_bytes`]; refuses a wrong length or the code 3.
    pub fn from_bytes(ctx: &Arc<Context>, bytes: &[u8]) -> Result<Self, LatticeError> {
        if bytes.len() != ctx.n / 4 {
            return Err(LatticeError::WrongLength { what: "secret key", expected: ctx.n / 4, got: bytes.len() });
        }
        let mut s = vec![0i64; ctx.n];
        for (k, c) in s.iter_mut().enumerate() {
            let code = (bytes[k / 4] >> (2 * (k % 4))) & 3;
            if code == 3 {
                s.zeroize();
                return Err(LatticeError::CoefficientOutOfRange { what: "secret key", limb: 0, index: k });
            }
            *c = code as i64 - 1;
        }
        Ok(Self::from_coeffs(ctx, s))
    }
}

/// S2's public key, given to S1 once: `(b, a) = (−a·s + e, a)` in NTT form,
/// `a` expanded from `seed`.
#[derive(Clone)]
pub struct PublicKey {
    pub(crate) ctx: Arc<Context>,
    seed: [u8; 32],
    pub(crate) a_ntt: Vec<u64>,
    pub(crate) b_ntt: Vec<u64>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("seed", &self.seed).finish_non_exhaustive()
    }
}

impl PublicKey {
    /// The context this key belongs to.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// `seed ‖ b` (bit-packed NTT form): `32 + poly_bytes` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.ctx.poly_bytes());
        out.extend_from_slice(&self.seed);
        wire::pack(&self.ctx, &self.b_ntt, self.ctx.n, &mut out);
        out
    }

    /// Parses [`PublicKey::to_bytes`] with the usual checks (length, ranges,
    /// padding).
    pub fn from_bytes(ctx: &Arc<Context>, bytes: &[u8]) -> Result<Self, LatticeError> {
        let expected = 32 + ctx.poly_bytes();
        if bytes.len() != expected {
            return Err(LatticeError::WrongLength { what: "public key", expected, got: bytes.len() });
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let b_ntt = wire::unpack(ctx, &bytes[32..], ctx.n, "public key")?;
        let mut a_ntt = Vec::new();
        expand_seed(ctx, &seed, &mut a_ntt);
        Ok(PublicKey { ctx: ctx.clone(), seed, a_ntt, b_ntt })
    }
}

/// `a·b mod p` for every pair, written to `out` (helper for tests).
#[cfg(test)]
pub(crate) fn pointwise(p: u64, a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(&x, &y)| crate::arith::mul_mod(x, y, p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    /// Checks the convention every module relies on: `fwd` is a ring
    /// homomorphism for the negacyclic product, and `inv ∘ fwd = N·id`.
    #[test]
    fn ntt_is_negacyclic_homomorphism() {
        let ctx = Context::new(Params::insecure_test(4 + 6)).unwrap();
        let n = ctx.n;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let a: Vec<i64> = (0..n).map(|_| (rng.next_u32() % 7) as i64 - 3).collect();
        let b: Vec<i64> = (0..n).map(|_| (rng.next_u32() % 5) as i64 - 2).collect();
        // schoolbook negacyclic product
        let mut c = vec![0i64; n];
        for (i, &ai) in a.iter().enumerate() {
            for (j, &bj) in b.iter().enumerate() {
                if i + j < n {
                    c[i + j] += ai * bj;
                } else {
                    c[i + j - n] -= ai * bj;
                }
            }
        }
        for (l, &p) in ctx.primes.iter().enumerate() {
            let mut fa: Vec<u64> = a.iter().map(|&v| small_signed_mod(v, p)).collect();
            let mut fb: Vec<u64> = b.iter().map(|&v| small_signed_mod(v, p)).collect();
            ctx.plans[l].fwd(&mut fa);
            ctx.plans[l].fwd(&mut fb);
            let mut prod = pointwise(p, &fa, &fb);
            ctx.plans[l].inv(&mut prod);
            ctx.plans[l].normalize(&mut prod);
            let want: Vec<u64> = c.iter().map(|&v| crate::arith::signed_mod(v as i128, p)).collect();
            assert_eq!(prod, want);
        }
    }

    #[test]
    fn secret_key_bytes_roundtrip_and_hostile() {
        let ctx = Context::new(Params::insecure_test(10)).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let sk = SecretKey::generate(&ctx, &mut rng);
        let bytes = sk.to_bytes();
        let sk2 = SecretKey::from_bytes(&ctx, &bytes).unwrap();
        assert_eq!(sk.s, sk2.s);
        assert_eq!(format!("{sk:?}"), "SecretKey { .. }");
        let mut bad = bytes.to_vec();
        bad[5] |= 0b11;
        assert!(SecretKey::from_bytes(&ctx, &bad).is_err());
        assert!(SecretKey::from_bytes(&ctx, &bytes[1..]).is_err());
        let pk = sk.public_key(&mut rng);
        let pkb = pk.to_bytes();
        let pk2 = PublicKey::from_bytes(&ctx, &pkb).unwrap();
        assert_eq!(pk2.a_ntt, pk.a_ntt);
        assert_eq!(pk2.b_ntt, pk.b_ntt);
    }
}
