//! The layer-level protocol step: S2 encrypts its mask vector `r`, S1
//! computes `W·r + μ` under encryption (with rerandomization and noise
//! flooding), S2 decrypts exactly the `n_out` coefficients it needs.
//!
//! **Packing** (coefficient encoding, as in Cheetah). The inputs are cut into
//! `n_blocks` blocks of `block` values; block `b` is the polynomial
//! `m_b(X) = Σ_i r_{b·block+i} X^i`. The outputs are cut into groups of
//! `rows` rows with `rows·block ≤ N`; for group `g` and block `b` the weight
//! polynomial is `w_{g,b}(X) = Σ_j Σ_i W_{g·rows+j, b·block+i} X^{j·block + block−1−i}`.
//! Coefficient `j·block + block − 1` of `w_{g,b}·m_b` is then exactly
//! `Σ_i W_{row j, i} r_i` over the block (no other pair of exponents meets
//! there, and no product reaches `X^N`, because `rows·block ≤ N`), and
//! `Σ_b w_{g,b}·ct_b` holds the full inner products of the group's rows.

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use ruint::aliases::U256;
use zeroize::{Zeroize, Zeroizing};

use crate::arith::{add_mod, sample_cbd, sample_flood, signed_mod, WordStream};
use crate::keys::{expand_seed, fwd_all, sample_error_rns, sample_ternary_poly, small_to_rns};
use crate::params::{Context, MAX_DIM};
use crate::{wire, LatticeError, PublicKey, SecretKey};

/// How a `n_out × n_in` layer is packed; a function of the shape and `N`
/// only, so both servers compute the same layout independently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Inputs.
    pub n_in: usize,
    /// Outputs.
    pub n_out: usize,
    /// Ring degree.
    pub n: usize,
    /// Input values per input ciphertext.
    pub block: usize,
    /// Input ciphertexts (S2 → S1).
    pub n_blocks: usize,
    /// Rows per output ciphertext.
    pub rows: usize,
    /// Output ciphertexts (S1 → S2).
    pub n_groups: usize,
}

impl Layout {
    /// Chooses the packing with the lowest estimated cost over every
    /// possible number of input blocks. Cost, in units of one NTT of one
    /// limb: an input ciphertext ≈ 1 NTT at S2 + its bytes ≈ 2 (so 3), an
    /// output ciphertext ≈ 3 NTTs at S1 + 1 at S2 + its bytes ≈ 2 (so 6),
    /// a plaintext×ciphertext product ≈ 0.75 (two point-wise products);
    /// scaled by 4 to stay in integers. Ties go to fewer input blocks.
    /// Refuses empty shapes, dimensions above [`MAX_DIM`], and shapes
    /// whose worst-case noise would not decrypt exactly.
    pub fn new(ctx: &Context, n_in: usize, n_out: usize) -> Result<Self, LatticeError> {
        if n_in == 0 || n_out == 0 || n_in > MAX_DIM || n_out > MAX_DIM {
            return Err(LatticeError::InvalidShape { n_in, n_out, reason: "dimensions must be in 1..=65536" });
        }
        let n = ctx.n;
        let mut best: Option<(u64, Layout)> = None;
        let min_blocks = n_in.div_ceil(n);
        for k in min_blocks..=n_in {
            let block = n_in.div_ceil(k);
            let n_blocks = n_in.div_ceil(block);
            if n_blocks != k {
                continue; // the same layout as a smaller k
            }
            let rows = (n / block).min(n_out);
            let n_groups = n_out.div_ceil(rows);
            let cost = 12 * n_blocks as u64 + 24 * n_groups as u64 + 3 * (n_blocks * n_groups) as u64;
            let layout = Layout { n_in, n_out, n, block, n_blocks, rows, n_groups };
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, layout));
            }
        }
        let layout = best.expect("k = n_in always gives a layout").1;
        if !ctx.fits(layout.weight_noise_bound_x2(ctx)) {
            return Err(LatticeError::InvalidShape {
                n_in,
                n_out,
                reason: "worst-case noise exceeds the decryption bound",
            });
        }
        Ok(layout)
    }

    /// Rows in output ciphertext `g` (the last one may be short).
    pub fn rows_in_group(&self, g: usize) -> usize {
        self.rows.min(self.n_out - g * self.rows)
    }

    /// Inputs in block `b` (the last one may be short).
    pub fn inputs_in_block(&self, b: usize) -> usize {
        self.block.min(self.n_in - b * self.block)
    }

    /// The coefficient of an output ciphertext that holds its row `j`.
    pub fn output_coefficient(&self, j: usize) -> usize {
        j * self.block + self.block - 1
    }

    /// `2·B_w`: twice the worst-case weight-dependent noise of one output
    /// coefficient before flooding. Coefficient `k` of `Σ_b w_{g,b}·(e_b + ε_b)`
    /// is a signed sum of at most `rows·n_in` products `w·(e + ε)` with
    /// `|w| ≤ 2^B − 1`, `|e| ≤ η`, `|ε| ≤ 1/2`:
    /// `B_w = rows · n_in · (2^B − 1) · (η + 1/2)`.
    pub fn weight_noise_bound_x2(&self, ctx: &Context) -> U256 {
        let p = ctx.params;
        U256::from(self.rows as u64)
            * U256::from(self.n_in as u64)
            * U256::from((1u64 << p.weight_bits) - 1)
            * U256::from(2 * p.eta as u64 + 1)
    }

    /// log2 of the worst-case noise of a decrypted coefficient (weights,
    /// rerandomization, flooding, mask rounding), to compare with
    /// `log2(q/2t)`.
    pub fn total_noise_bound_log2(&self, ctx: &Context) -> f64 {
        let x2 = ctx.total_noise_bound_x2(self.weight_noise_bound_x2(ctx)).expect("checked in Layout::new");
        u256_log2(x2) - 1.0
    }

    /// log2 of the statistical distance, over all `n_out` outputs of this
    /// layer, between what S2 decrypts and the same values with the
    /// weight- and `u`-dependent noise removed:
    /// `n_out · (B_w + B_0 + 1) / 2^{f+1}`.
    pub fn flooding_distance_log2(&self, ctx: &Context) -> f64 {
        let dev_x2 = self.weight_noise_bound_x2(ctx) + U256::from(2 * ctx.fresh_zero_noise_bound() + 2);
        (self.n_out as f64).log2() + u256_log2(dev_x2) - 1.0 - (ctx.params.flood_bits as f64 + 1.0)
    }

    /// Bytes S2 sends S1 for this layer (seeded input ciphertexts).
    pub fn bytes_s2_to_s1(&self, ctx: &Context) -> usize {
        self.n_blocks * SeededCiphertext::byte_len(ctx)
    }

    /// Bytes S1 sends S2 for this layer (output ciphertexts).
    pub fn bytes_s1_to_s2(&self, ctx: &Context) -> usize {
        (0..self.n_groups).map(|g| Ciphertext::byte_len(ctx, self.rows_in_group(g))).sum()
    }
}

fn u256_log2(x: U256) -> f64 {
    let bits = x.bit_len();
    if bits <= 64 {
        return (x.to::<u64>() as f64).log2();
    }
    let top = (x >> (bits - 64)).to::<u64>();
    (top as f64).log2() + (bits - 64) as f64
}

/// An input ciphertext from S2: `(c_0, a)` with `c_0 = −a·s + e + round(q·m/t)`
/// in NTT form and `a` expanded from `seed` (so `a` costs 32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct SeededCiphertext {
    seed: [u8; 32],
    c0_ntt: Vec<u64>,
}

impl std::fmt::Debug for SeededCiphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededCiphertext").field("seed", &self.seed).field("c0_len", &self.c0_ntt.len()).finish()
    }
}

impl SeededCiphertext {
    /// Wire size: `32 + poly_bytes`.
    pub fn byte_len(ctx: &Context) -> usize {
        32 + ctx.poly_bytes()
    }

    /// `seed ‖ c_0` (bit-packed residues, NTT form).
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::byte_len(ctx));
        out.extend_from_slice(&self.seed);
        wire::pack(ctx, &self.c0_ntt, ctx.n, &mut out);
        out
    }

    /// Parses [`SeededCiphertext::to_bytes`]: exact length, every residue
    /// below its prime, zero padding; typed errors, no panics.
    pub fn from_bytes(ctx: &Context, bytes: &[u8]) -> Result<Self, LatticeError> {
        let expected = Self::byte_len(ctx);
        if bytes.len() != expected {
            return Err(LatticeError::WrongLength { what: "seeded ciphertext", expected, got: bytes.len() });
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let c0_ntt = wire::unpack(ctx, &bytes[32..], ctx.n, "seeded ciphertext")?;
        Ok(SeededCiphertext { seed, c0_ntt })
    }
}

/// An output ciphertext from S1: `c_1` in full (NTT form) and `c_0` only at
/// the group's output coefficients (coefficient form). S1 drops every other
/// coefficient of `c_0`: those hold mixed partial sums of `W` and `r`, which
/// S2 could otherwise decrypt (flooding hides noise, not messages).
#[derive(Clone, PartialEq, Eq)]
pub struct Ciphertext {
    c1_ntt: Vec<u64>,
    /// Limb-major: `c0[l·rows + j]`.
    c0: Vec<u64>,
    rows: usize,
}

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ciphertext").field("rows", &self.rows).finish_non_exhaustive()
    }
}

impl Ciphertext {
    /// Wire size for `rows` output coefficients.
    pub fn byte_len(ctx: &Context, rows: usize) -> usize {
        ctx.poly_bytes() + wire::packed_len(ctx, rows)
    }

    /// The number of output coefficients it carries.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `c_1 ‖ c_0[outputs]`, both bit-packed.
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::byte_len(ctx, self.rows));
        wire::pack(ctx, &self.c1_ntt, ctx.n, &mut out);
        wire::pack(ctx, &self.c0, self.rows, &mut out);
        out
    }

    /// Parses [`Ciphertext::to_bytes`] for an expected number of rows
    /// (from the [`Layout`]); exact length, ranges and padding are checked.
    pub fn from_bytes(ctx: &Context, bytes: &[u8], rows: usize) -> Result<Self, LatticeError> {
        if rows == 0 || rows > ctx.n {
            return Err(LatticeError::WrongCount { what: "ciphertext rows", expected: ctx.n, got: rows });
        }
        let expected = Self::byte_len(ctx, rows);
        if bytes.len() != expected {
            return Err(LatticeError::WrongLength { what: "ciphertext", expected, got: bytes.len() });
        }
        let split = ctx.poly_bytes();
        let c1_ntt = wire::unpack(ctx, &bytes[..split], ctx.n, "ciphertext c1")?;
        let c0 = wire::unpack(ctx, &bytes[split..], rows, "ciphertext c0")?;
        Ok(Ciphertext { c1_ntt, c0, rows })
    }
}

/// S1's weights for one layer, encoded once and kept in NTT form (they do
/// not change between queries).
pub struct EncodedWeights {
    ctx: Arc<Context>,
    layout: Layout,
    /// `w_{g,b}` at index `g·n_blocks + b`, each `limbs·N` values.
    polys: Vec<Vec<u64>>,
}

impl Drop for EncodedWeights {
    fn drop(&mut self) {
        // The weights are S1's secret (the model).
        for p in &mut self.polys {
            p.zeroize();
        }
    }
}

impl std::fmt::Debug for EncodedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedWeights").field("layout", &self.layout).finish_non_exhaustive()
    }
}

impl EncodedWeights {
    /// Encodes `weights` (row-major `n_out × n_in`, each `|w| < 2^weight_bits`).
    pub fn new(ctx: &Arc<Context>, weights: &[i64], n_out: usize, n_in: usize) -> Result<Self, LatticeError> {
        let layout = Layout::new(ctx, n_in, n_out)?;
        if weights.len() != n_out * n_in {
            return Err(LatticeError::WrongCount { what: "weights", expected: n_out * n_in, got: weights.len() });
        }
        let bound = 1i64 << ctx.params.weight_bits;
        if let Some(pos) = weights.iter().position(|w| w.unsigned_abs() >= bound as u64) {
            return Err(LatticeError::WeightOutOfRange {
                row: pos / n_in,
                col: pos % n_in,
                bits: ctx.params.weight_bits,
            });
        }
        let n = ctx.n;
        let mut polys = Vec::with_capacity(layout.n_groups * layout.n_blocks);
        let mut coeffs = vec![0i64; n];
        for g in 0..layout.n_groups {
            for b in 0..layout.n_blocks {
                coeffs.iter_mut().for_each(|c| *c = 0);
                for j in 0..layout.rows_in_group(g) {
                    let row = g * layout.rows + j;
                    for i in 0..layout.inputs_in_block(b) {
                        let col = b * layout.block + i;
                        coeffs[j * layout.block + layout.block - 1 - i] = weights[row * n_in + col];
                    }
                }
                let mut poly = vec![0u64; ctx.limbs() * n];
                small_to_rns(ctx, &coeffs, &mut poly);
                fwd_all(ctx, &mut poly);
                polys.push(poly);
            }
        }
        Ok(EncodedWeights { ctx: ctx.clone(), layout, polys })
    }

    /// The layout these weights were encoded for.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

/// S2: encrypts its mask vector `r` (length `layout.n_in`) under its secret
/// key, one seeded ciphertext per input block.
pub fn encrypt_vector(
    sk: &SecretKey,
    layout: &Layout,
    r: &[u128],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<SeededCiphertext>, LatticeError> {
    let ctx = &sk.ctx;
    check_layout(ctx, layout)?;
    if r.len() != layout.n_in {
        return Err(LatticeError::WrongCount { what: "input vector", expected: layout.n_in, got: r.len() });
    }
    let n = ctx.n;
    let limbs = ctx.limbs();
    let mut a_ntt = Vec::new();
    let mut enc = [0u64; 8];
    let mut out = Vec::with_capacity(layout.n_blocks);
    for b in 0..layout.n_blocks {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        expand_seed(ctx, &seed, &mut a_ntt);
        // e + round(q·m/t), coefficient form
        let mut c0 = vec![0u64; limbs * n];
        sample_error_rns(ctx, rng, &mut c0);
        for i in 0..layout.inputs_in_block(b) {
            ctx.encode_scaled(r[b * layout.block + i], &mut enc[..limbs]);
            for (l, &p) in ctx.primes.iter().enumerate() {
                c0[l * n + i] = add_mod(c0[l * n + i], enc[l], p);
            }
        }
        enc.zeroize();
        fwd_all(ctx, &mut c0);
        for l in 0..limbs {
            let rg = l * n..(l + 1) * n;
            ctx.plans[l].mul_accumulate(&mut c0[rg.clone()], &a_ntt[rg.clone()], &sk.neg_s_ntt[rg]);
        }
        out.push(SeededCiphertext { seed, c0_ntt: c0 });
    }
    Ok(out)
}

/// S1: `Σ_b w_{g,b}·ct_b`, plus a fresh public-key encryption of zero, plus
/// `round(q·μ/t)` and flooding noise at the output coefficients; `c_0` is
/// kept only at those coefficients. S2 decrypts `(W·r + μ) mod 2^128`.
pub fn linear_layer(
    pk: &PublicKey,
    weights: &EncodedWeights,
    cts: &[SeededCiphertext],
    mu: &[u128],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<Ciphertext>, LatticeError> {
    let ctx = &pk.ctx;
    if !Arc::ptr_eq(ctx, &weights.ctx) && ctx.params != weights.ctx.params {
        return Err(LatticeError::ContextMismatch);
    }
    let layout = &weights.layout;
    if cts.len() != layout.n_blocks {
        return Err(LatticeError::WrongCount { what: "input ciphertexts", expected: layout.n_blocks, got: cts.len() });
    }
    if mu.len() != layout.n_out {
        return Err(LatticeError::WrongCount { what: "masks", expected: layout.n_out, got: mu.len() });
    }
    let n = ctx.n;
    let limbs = ctx.limbs();
    let len = limbs * n;
    if cts.iter().any(|c| c.c0_ntt.len() != len) {
        return Err(LatticeError::ContextMismatch);
    }
    let a_polys: Vec<Vec<u64>> = cts
        .iter()
        .map(|c| {
            let mut a = Vec::new();
            expand_seed(ctx, &c.seed, &mut a);
            a
        })
        .collect();
    let mut out = Vec::with_capacity(layout.n_groups);
    let mut enc = Zeroizing::new([0u64; 8]);
    let mut acc0 = Zeroizing::new(vec![0u64; len]);
    let mut u_ntt = Zeroizing::new(vec![0u64; len]);
    let mut e2 = Zeroizing::new(vec![0u64; len]);
    for g in 0..layout.n_groups {
        acc0.iter_mut().for_each(|v| *v = 0);
        let mut acc1 = vec![0u64; len];
        for (b, ct) in cts.iter().enumerate() {
            let w = &weights.polys[g * layout.n_blocks + b];
            for l in 0..limbs {
                let rg = l * n..(l + 1) * n;
                let plan = &ctx.plans[l];
                plan.mul_accumulate(&mut acc0[rg.clone()], &w[rg.clone()], &ct.c0_ntt[rg.clone()]);
                plan.mul_accumulate(&mut acc1[rg.clone()], &w[rg.clone()], &a_polys[b][rg]);
            }
        }
        // Rerandomize: + (b_pk·u + e_1, a_pk·u + e_2) with fresh ternary u.
        let u = sample_ternary_poly(ctx, rng);
        small_to_rns(ctx, &u, &mut u_ntt);
        drop(u);
        fwd_all(ctx, &mut u_ntt);
        sample_error_rns(ctx, rng, &mut e2);
        fwd_all(ctx, &mut e2);
        for l in 0..limbs {
            let rg = l * n..(l + 1) * n;
            let plan = &ctx.plans[l];
            let p = ctx.primes[l];
            plan.mul_accumulate(&mut acc0[rg.clone()], &pk.b_ntt[rg.clone()], &u_ntt[rg.clone()]);
            plan.mul_accumulate(&mut acc1[rg.clone()], &pk.a_ntt[rg.clone()], &u_ntt[rg.clone()]);
            for (x, &e) in acc1[rg.clone()].iter_mut().zip(&e2[rg.clone()]) {
                *x = add_mod(*x, e, p);
            }
            plan.inv(&mut acc0[rg.clone()]);
            plan.normalize(&mut acc0[rg]);
        }
        // c_0 at the output coefficients: + e_1 + flooding + round(q·μ/t).
        let rows = layout.rows_in_group(g);
        let mut c0 = vec![0u64; limbs * rows];
        let mut ws = WordStream::new(&mut *rng);
        for j in 0..rows {
            let k = layout.output_coefficient(j);
            let noise = sample_flood(&mut ws, ctx.params.flood_bits) + sample_cbd(&mut ws, ctx.params.eta) as i128;
            ctx.encode_scaled(mu[g * layout.rows + j], &mut enc[..limbs]);
            for (l, &p) in ctx.primes.iter().enumerate() {
                let v = add_mod(acc0[l * n + k], signed_mod(noise, p), p);
                c0[l * rows + j] = add_mod(v, enc[l], p);
            }
        }
        out.push(Ciphertext { c1_ntt: acc1, c0, rows });
    }
    Ok(out)
}

/// [`EncodedWeights::new`] then [`linear_layer`], for callers that do not
/// keep the encoded weights (S1 should keep them: encoding costs
/// `limbs` NTTs per weight polynomial).
pub fn linear_layer_plain(
    pk: &PublicKey,
    weights: &[i64],
    n_out: usize,
    n_in: usize,
    cts: &[SeededCiphertext],
    mu: &[u128],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<Ciphertext>, LatticeError> {
    let w = EncodedWeights::new(&pk.ctx, weights, n_out, n_in)?;
    linear_layer(pk, &w, cts, mu, rng)
}

/// S2: decrypts the `n_out` outputs `(W·r + μ) mod 2^128`, in row order.
pub fn decrypt_outputs(sk: &SecretKey, layout: &Layout, cts: &[Ciphertext]) -> Result<Vec<u128>, LatticeError> {
    Ok(decrypt_inner(sk, layout, cts, false)?.into_iter().map(|(m, _)| m).collect())
}

/// Like [`decrypt_outputs`], with each coefficient's noise
/// `x − round(q·m/t)` (centered, saturating to `i128`): what S2 can see of
/// the noise anyway, exposed for the noise-budget tests and diagnostics.
pub fn decrypt_outputs_with_noise(
    sk: &SecretKey,
    layout: &Layout,
    cts: &[Ciphertext],
) -> Result<Vec<(u128, i128)>, LatticeError> {
    decrypt_inner(sk, layout, cts, true)
}

fn decrypt_inner(
    sk: &SecretKey,
    layout: &Layout,
    cts: &[Ciphertext],
    with_noise: bool,
) -> Result<Vec<(u128, i128)>, LatticeError> {
    let ctx = &sk.ctx;
    check_layout(ctx, layout)?;
    if cts.len() != layout.n_groups {
        return Err(LatticeError::WrongCount { what: "output ciphertexts", expected: layout.n_groups, got: cts.len() });
    }
    let n = ctx.n;
    let limbs = ctx.limbs();
    let mut out = Vec::with_capacity(layout.n_out);
    let mut tmp = vec![0u64; limbs * n];
    let mut res = [0u64; 8];
    for (g, ct) in cts.iter().enumerate() {
        let rows = layout.rows_in_group(g);
        if ct.rows != rows || ct.c0.len() != limbs * rows || ct.c1_ntt.len() != limbs * n {
            return Err(LatticeError::WrongCount { what: "ciphertext rows", expected: rows, got: ct.rows });
        }
        tmp.iter_mut().for_each(|v| *v = 0);
        for l in 0..limbs {
            let rg = l * n..(l + 1) * n;
            ctx.plans[l].mul_accumulate(&mut tmp[rg.clone()], &ct.c1_ntt[rg.clone()], &sk.s_dec_ntt[rg.clone()]);
            ctx.plans[l].inv(&mut tmp[rg]);
        }
        for j in 0..rows {
            let k = layout.output_coefficient(j);
            for (l, &p) in ctx.primes.iter().enumerate() {
                res[l] = add_mod(ct.c0[l * rows + j], tmp[l * n + k], p);
            }
            let x = ctx.crt(&res[..limbs]);
            let m = ctx.decode(x);
            let noise = if with_noise { ctx.centered_noise(x, m) } else { 0 };
            out.push((m, noise));
        }
    }
    tmp.zeroize();
    Ok(out)
}

fn check_layout(ctx: &Context, layout: &Layout) -> Result<(), LatticeError> {
    if Layout::new(ctx, layout.n_in, layout.n_out)? != *layout {
        return Err(LatticeError::ContextMismatch);
    }
    Ok(())
}

/// The plain product `(W·r + μ) mod 2^128` (weights signed, wrapping
/// arithmetic): what [`decrypt_outputs`] must return bit for bit.
pub fn reference_product(weights: &[i64], n_out: usize, n_in: usize, r: &[u128], mu: &[u128]) -> Vec<u128> {
    (0..n_out)
        .map(|j| {
            let mut acc = mu[j];
            for i in 0..n_in {
                acc = acc.wrapping_add((weights[j * n_in + i] as i128 as u128).wrapping_mul(r[i]));
            }
            acc
        })
        .collect()
}
