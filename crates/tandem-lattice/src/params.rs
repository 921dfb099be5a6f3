//! Parameters, their validation, and the precomputed context (NTT plans,
//! CRT constants, the `q/t` scaling) every other module works against.

use std::fmt;
use std::sync::Arc;

use ruint::aliases::U256;
use tfhe_ntt::prime64::Plan;

use crate::arith::{inv_mod, ntt_primes};
use crate::LatticeError;

/// Largest `n_in` and `n_out` a layer may have. Noise is not what limits
/// shapes (the flooding bound leaves ≥ 2^85 of room at the production
/// parameters, see `docs/LATTICE.md`); this caps memory and work per layer.
pub const MAX_DIM: usize = 1 << 16;

/// log2 of the plaintext modulus `t = 2^128`.
pub const PLAINTEXT_BITS: u32 = 128;

/// The HomomorphicEncryption.org security standard (Albrecht et al., v1.1,
/// November 2018), Table 1: the largest `log2 q` for 128-bit *classical*
/// security, ternary (also uniform and error-distributed) secret, error of
/// standard deviation `σ ≈ 3.2`, per ring degree `N`.
pub const HE_STANDARD_128: [(usize, u32); 6] =
    [(1024, 27), (2048, 54), (4096, 109), (8192, 218), (16384, 438), (32768, 881)];

/// The numbers that define an instance. `Params::production()` is the one
/// to deploy; `Params::insecure_test` exists only to make tests fast with
/// the same code paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// `log2 N`, the ring degree (`R = Z[X]/(X^N + 1)`).
    pub log_n: u32,
    /// Every RNS prime has exactly this many bits.
    pub prime_bits: u32,
    /// Number of RNS primes; `q` is their product.
    pub num_primes: usize,
    /// Centered-binomial parameter of every error polynomial: `|e| ≤ eta`,
    /// variance `eta/2` (21 gives `σ = 3.24`, the standard's `σ ≈ 3.19`).
    pub eta: u32,
    /// Weights must satisfy `|w| < 2^weight_bits`.
    pub weight_bits: u32,
    /// S1's flooding noise is uniform in `[−2^flood_bits, 2^flood_bits)`.
    pub flood_bits: u32,
}

impl Params {
    /// N = 8192, q = four 54-bit NTT primes (q < 2^216, within the
    /// standard's 218 bits), ternary secret, CBD(21) errors, weights below
    /// 2^16, flooding 2^86. Justified in `docs/LATTICE.md`.
    pub const fn production() -> Self {
        Params { log_n: 13, prime_bits: 54, num_primes: 4, eta: 21, weight_bits: 16, flood_bits: 86 }
    }

    /// The production parameters at a smaller ring degree (`log_n` 10 or
    /// 11): **insecure** (q is far above the standard's bound for such N) but
    /// the same code, noise analysis and exactness argument, so tests run fast.
    pub const fn insecure_test(log_n: u32) -> Self {
        Params { log_n, ..Params::production() }
    }

    /// Ring degree `N`.
    pub const fn n(&self) -> usize {
        1 << self.log_n
    }

    /// Whether `⌈log2 q⌉` is within the HE standard's Table 1 bound for
    /// 128-bit security at this `N` (ternary secret, σ ≈ 3.2). Uses the
    /// worst case `num_primes · prime_bits` for `log2 q`.
    pub fn meets_he_standard_128(&self) -> bool {
        let log_q = self.num_primes as u32 * self.prime_bits;
        HE_STANDARD_128.iter().any(|&(n, max)| n == self.n() && log_q <= max) && self.eta >= 20
        // σ = sqrt(eta/2) ≥ 3.16
    }

    fn validate(&self) -> Result<(), LatticeError> {
        let bad = |m: &str| Err(LatticeError::InvalidParams(m.to_string()));
        if !(4..=15).contains(&self.log_n) {
            return bad("log_n must be in 4..=15");
        }
        if !(30..=61).contains(&self.prime_bits) {
            return bad("prime_bits must be in 30..=61");
        }
        if self.num_primes == 0 || self.num_primes as u32 * self.prime_bits > 250 {
            return bad("q must have at most 250 bits (num_primes * prime_bits)");
        }
        if !(1..=32).contains(&self.eta) {
            return bad("eta must be in 1..=32");
        }
        if !(1..=40).contains(&self.weight_bits) || self.weight_bits >= self.prime_bits {
            return bad("weight_bits must be in 1..=40 and below prime_bits");
        }
        if self.flood_bits > 125 {
            return bad("flood_bits must be at most 125");
        }
        Ok(())
    }
}

/// Parameters plus everything precomputed from them. Shared (`Arc`) by keys
/// and ciphertexts; two objects work together only if they share one.
pub struct Context {
    pub(crate) params: Params,
    pub(crate) n: usize,
    pub(crate) primes: Vec<u64>,
    pub(crate) plans: Vec<Plan>,
    /// `q`, the product of the primes.
    pub(crate) q: U256,
    /// `⌊q/t⌋ mod p_i`.
    pub(crate) delta_mod: Vec<u64>,
    /// `q mod t` (`t = 2^128`).
    pub(crate) q_mod_t: u128,
    /// `(q/p_i)^{-1} mod p_i`.
    pub(crate) crt_inv: Vec<u64>,
    /// `q/p_i`.
    pub(crate) crt_q: Vec<U256>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("params", &self.params).field("primes", &self.primes).finish_non_exhaustive()
    }
}

impl Context {
    /// Validates `params`, finds the primes, builds one NTT plan per prime
    /// and the CRT constants. Also checks that the ciphertext modulus leaves
    /// room for flooding: `2^129·(2^flood_bits + B_0 + 1) < q`, with `B_0` the
    /// public-key encryption noise bound (see [`Context::fresh_zero_noise_bound`]).
    pub fn new(params: Params) -> Result<Arc<Context>, LatticeError> {
        params.validate()?;
        let n = params.n();
        let primes = ntt_primes(n, params.prime_bits, params.num_primes)
            .ok_or_else(|| LatticeError::InvalidParams("not enough NTT-friendly primes of that size".into()))?;
        let plans = primes
            .iter()
            .map(|&p| Plan::try_new(n, p))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LatticeError::InvalidParams("tfhe-ntt refused a prime".into()))?;
        let mut q = U256::from(1u8);
        for &p in &primes {
            q *= U256::from(p);
        }
        let delta = q >> PLAINTEXT_BITS;
        let q_mod_t: u128 = q.wrapping_to::<u128>();
        let delta_mod = primes.iter().map(|&p| (delta % U256::from(p)).to::<u64>()).collect();
        let crt_q: Vec<U256> = primes.iter().map(|&p| q / U256::from(p)).collect();
        let crt_inv = primes.iter().zip(&crt_q).map(|(&p, qi)| inv_mod((*qi % U256::from(p)).to::<u64>(), p)).collect();
        let ctx = Context { params, n, primes, plans, q, delta_mod, q_mod_t, crt_inv, crt_q };
        // Room for decryption with flooding alone (weights come on top, per layer).
        if !ctx.fits(U256::ZERO) {
            return Err(LatticeError::InvalidParams("q too small for t = 2^128 and this flooding".into()));
        }
        Ok(Arc::new(ctx))
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Ring degree `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The RNS primes, largest first.
    pub fn primes(&self) -> &[u64] {
        &self.primes
    }

    /// `log2 q` (fractional).
    pub fn log2_q(&self) -> f64 {
        self.primes.iter().map(|&p| (p as f64).log2()).sum()
    }

    /// Bound on the infinity norm of the decryption noise of a fresh
    /// public-key encryption of zero, `e_pk·u + e_1 + e_2·s`:
    /// `eta·N + eta + eta·N` (ternary `u`, `s`).
    pub fn fresh_zero_noise_bound(&self) -> u128 {
        let eta = self.params.eta as u128;
        eta * (2 * self.n as u128 + 1)
    }

    /// Does a ciphertext whose noise, before flooding, is at most
    /// `weight_noise_x2 / 2 + B_0` still decrypt exactly after adding
    /// flooding and the mask's rounding? Condition (`docs/LATTICE.md`):
    /// `2^128 · (weight_noise_x2 + 2·B_0 + 2^{f+1} + 1) < q`.
    pub(crate) fn fits(&self, weight_noise_x2: U256) -> bool {
        use ruint::aliases::U384;
        match self.total_noise_bound_x2(weight_noise_x2) {
            Some(total) => (U384::from(total) << PLAINTEXT_BITS as usize) < U384::from(self.q),
            None => false,
        }
    }

    /// `2 · (weight noise + B_0 + 2^f + 1/2)`, or `None` on overflow.
    pub(crate) fn total_noise_bound_x2(&self, weight_noise_x2: U256) -> Option<U256> {
        let b0_x2 = U256::from(2 * self.fresh_zero_noise_bound());
        let flood_x2 = U256::from(1u8) << (self.params.flood_bits as usize + 1);
        weight_noise_x2.checked_add(b0_x2)?.checked_add(flood_x2)?.checked_add(U256::from(1u8))
    }

    pub(crate) fn limbs(&self) -> usize {
        self.primes.len()
    }

    /// Bits of each residue on the wire: `bits(p_i)`.
    pub(crate) fn residue_bits(&self, limb: usize) -> u32 {
        64 - self.primes[limb].leading_zeros()
    }

    /// Bytes of one full polynomial (every limb, every coefficient), bit-packed.
    pub fn poly_bytes(&self) -> usize {
        let bits: usize = (0..self.limbs()).map(|l| self.residue_bits(l) as usize * self.n).sum();
        bits.div_ceil(8)
    }

    /// `round(q·m/t) mod p_i` for every limb: the BFV encoding of `m ∈ Z_t`
    /// with the exact scaling `q/t` (not `⌊q/t⌋`), so that a product with an
    /// integer weight polynomial keeps `(q/t)·(w·m mod t)` up to the weights'
    /// L1 norm times 1/2 (the wrap-around multiple of `t` becomes a multiple
    /// of `q`). `round(q·m/t) = ⌊q/t⌋·m + round((q mod t)·m / t)`.
    #[inline]
    pub(crate) fn encode_scaled(&self, m: u128, out: &mut [u64]) {
        let c = crate::arith::round_mul_shr128(self.q_mod_t, m);
        for (l, &p) in self.primes.iter().enumerate() {
            let m_p = (m % p as u128) as u64;
            let c_p = (c % p as u128) as u64;
            out[l] = crate::arith::add_mod(crate::arith::mul_mod(self.delta_mod[l], m_p, p), c_p, p);
        }
    }

    /// From the residues `x_i` of `x ∈ [0, q)`: `x` itself (CRT).
    pub(crate) fn crt(&self, residues: &[u64]) -> U256 {
        let mut acc = U256::ZERO;
        for (l, &p) in self.primes.iter().enumerate() {
            let y = crate::arith::mul_mod(residues[l], self.crt_inv[l], p);
            acc += self.crt_q[l] * U256::from(y);
            if acc >= self.q {
                // Each term is < q, so one subtraction per term keeps acc < q.
                acc -= self.q;
            }
        }
        acc
    }

    /// `round(t·x/q) mod t` for `x ∈ [0, q)`: BFV decoding. `q` is odd and
    /// `t` a power of two, so `t·x/q` is never a half-integer and the
    /// rounding is unambiguous.
    pub(crate) fn decode(&self, x: U256) -> u128 {
        use ruint::aliases::U384;
        let x = U384::from(x);
        let q = U384::from(self.q);
        // round(a/q) = ⌊(2a + q) / 2q⌋ with a = x·2^128
        let num = (x << (PLAINTEXT_BITS as usize + 1)) + q;
        let quot: U384 = num / (q << 1);
        quot.wrapping_to::<u128>()
    }

    /// `x − round(q·m/t)` centered in `(−q/2, q/2]`, as `i128` (saturating):
    /// the noise of a decrypted coefficient whose message is `m`.
    pub(crate) fn centered_noise(&self, x: U256, m: u128) -> i128 {
        let mut enc = [0u64; 8];
        let limbs = self.limbs();
        self.encode_scaled(m, &mut enc[..limbs]);
        let e = self.crt(&enc[..limbs]);
        let d = if x >= e { x - e } else { x + self.q - e };
        let half = self.q >> 1;
        let (neg, mag) = if d > half { (true, self.q - d) } else { (false, d) };
        let mag: i128 = if mag > U256::from(i128::MAX as u128) { i128::MAX } else { mag.to::<u128>() as i128 };
        if neg {
            -mag
        } else {
            mag
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_meets_standard() {
        let p = Params::production();
        assert!(p.meets_he_standard_128());
        let ctx = Context::new(p).unwrap();
        assert!(ctx.log2_q() < 216.0 && ctx.log2_q() > 215.9);
        assert!(!Params::insecure_test(11).meets_he_standard_128());
    }

    #[test]
    fn rejects_bad_params() {
        for p in [
            Params { log_n: 3, ..Params::production() },
            Params { prime_bits: 62, ..Params::production() },
            Params { num_primes: 5, ..Params::production() },
            Params { num_primes: 2, ..Params::production() }, // q too small for t
            Params { flood_bits: 126, ..Params::production() },
            Params { flood_bits: 87, ..Params::production() }, // no room left
            Params { eta: 0, ..Params::production() },
        ] {
            assert!(matches!(Context::new(p), Err(LatticeError::InvalidParams(_))), "{p:?}");
        }
    }

    #[test]
    fn encode_decode_roundtrip() {
        let ctx = Context::new(Params::insecure_test(10)).unwrap();
        for m in [0u128, 1, 2, u128::MAX, u128::MAX - 1, 1 << 127, (1 << 127) - 1, 0xdead_beef] {
            let mut r = [0u64; 4];
            ctx.encode_scaled(m, &mut r);
            let x = ctx.crt(&r);
            assert_eq!(ctx.decode(x), m);
            assert_eq!(ctx.centered_noise(x, m), 0);
        }
    }
}
