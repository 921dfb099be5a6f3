//! `[g] = W·[D]` (PROTOCOL §4.4) without a `mod_pow` per weight.
//!
//! Two multi-exponentiation methods share the work of one product across all
//! output neurons; [`MatvecPlan`] counts, from the weights themselves, the
//! modular multiplications each would need and keeps the cheaper one. At
//! 2048 bits one multiplication mod `N²` costs about 5 µs whatever GMP call
//! makes it (measured: in-place `mpz`, `mpn` division and Montgomery
//! reduction all land within 5 %), so the count of multiplications is the
//! cost.
//!
//! * **Straus** (interleaved windows): per input ciphertext `[D_i]` a table
//!   `[D_i]^d, d ∈ [1, 2^c)` shared by every row; each row walks the weights'
//!   `c`-bit windows from the top, squaring its accumulators `c` times per
//!   window and multiplying one table entry per non-zero (weight, window).
//!   Negative weights go to a second accumulator inverted once per row.
//!   About `⌈bits(W)/c⌉` multiplications per weight: best for sparse rows
//!   (convolutions), where few rows share an input.
//! * **Subset products** (bit planes, the "four Russians" idea): every weight
//!   is offset to `u = w + 2^B ≥ 0` (`|w| < 2^B`), the inputs are split into
//!   groups of `G`, and per group a table holds the product of every subset
//!   of its `G` ciphertexts (`2^G` entries, one multiplication each). Row `j`
//!   then needs, per bit plane `b` of `u`, one table entry per group — the
//!   subset of inputs whose `u_ji` has bit `b` set — and Horner over the
//!   `B + 1` planes. The offset is removed once for all rows:
//!   `[g_j] = Π_i [D_i]^{u_ji} · (Π_i [D_i])^{−2^B}`. A row costs
//!   `(B+1)·⌈n/G⌉` multiplications instead of `≈ n·⌈B/c⌉`: for the dense
//!   784×128 first layer of the bundled MNIST MLP, 172 k instead of 216 k
//!   (1.25× fewer; measured 1.16× less CPU, BENCHMARKS.md).
//!
//! Rows run in parallel (rayon) in both methods.

use crate::paillier::{Ciphertext, PublicKey};
use curv::arithmetic::traits::*;
use kzen_paillier::BigInt;
use rayon::prelude::*;

/// Bytes we allow the tables of one product to take.
const TABLE_MEMORY_CAP: usize = 256 << 20;

/// Largest subset-product group: `2^G` table entries per group.
const MAX_GROUP: u32 = 10;

/// One sparse row: `(input index, weight)` pairs.
pub type SparseRow = Vec<(u32, i64)>;

fn magnitude_bits(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Which method [`MatvecPlan::with_method`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatvecMethod {
    /// The one with fewer multiplications (what S1 uses).
    Cheapest,
    Straus,
    Subset,
}

/// How one layer's product is computed; built once per model (the counting
/// walks every weight, so it is not redone per query).
#[derive(Clone, Debug)]
pub struct MatvecPlan {
    inputs: usize,
    method: Method,
    /// Modular multiplications the chosen method needs per product.
    pub multiplications: u64,
}

#[derive(Clone, Debug)]
enum Method {
    /// All weights zero: every one of `rows` outputs is `[0]`.
    Zero {
        rows: usize,
    },
    Straus {
        rows: Vec<SparseRow>,
        window: u32,
        windows: u32,
        uses: Vec<u32>,
    },
    Subset(SubsetLayout),
}

#[derive(Clone, Debug)]
struct SubsetLayout {
    group: u32,
    /// `B`: `|w| < 2^B`, `u = w + 2^B` has `B + 1` bits.
    offset_bits: u32,
    /// `patterns[j][b][γ]`: the subset of group `γ` whose `u_ji` has bit
    /// `b` set, planes from the top (`b = B` first).
    patterns: Vec<Vec<Vec<u16>>>,
}

impl MatvecPlan {
    /// Picks the cheaper method for these rows over `inputs` ciphertexts of
    /// `ct_bytes` bytes each.
    ///
    /// Panics if a row names an input index `≥ inputs`: rows come from a
    /// validated model, never from the network.
    pub fn new(rows: &[SparseRow], inputs: usize, ct_bytes: usize) -> MatvecPlan {
        Self::with_method(rows, inputs, ct_bytes, MatvecMethod::Cheapest)
    }

    /// Like [`MatvecPlan::new`] but with the method forced (tests and
    /// benches compare the two; [`MatvecMethod::Subset`] falls back to
    /// Straus where subset tables would not fit in memory).
    pub fn with_method(rows: &[SparseRow], inputs: usize, ct_bytes: usize, choice: MatvecMethod) -> MatvecPlan {
        for row in rows {
            for &(i, _) in row {
                assert!((i as usize) < inputs, "row names input {i} of {inputs}");
            }
        }
        let max_w = rows.iter().flatten().map(|&(_, w)| w.unsigned_abs()).max().unwrap_or(0);
        if max_w == 0 {
            return MatvecPlan { inputs, method: Method::Zero { rows: rows.len() }, multiplications: 0 };
        }
        let wbits = magnitude_bits(max_w);
        let (straus_cost, straus) = straus_plan(rows, inputs, wbits, ct_bytes);
        // Weights of more than 16 bits would make the planes dominate; the
        // model's quantization uses 12.
        let subset = if wbits <= 16 { subset_plan(rows, inputs, wbits, ct_bytes) } else { None };
        let (method, multiplications) = match (subset, choice) {
            (Some((c, layout)), MatvecMethod::Subset) => (Method::Subset(layout), c),
            (Some((c, layout)), MatvecMethod::Cheapest) if c < straus_cost => (Method::Subset(layout), c),
            _ => (straus, straus_cost),
        };
        MatvecPlan { inputs, method, multiplications }
    }

    /// `"straus"`, `"subset"` or `"zero"`.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            Method::Zero { .. } => "zero",
            Method::Straus { .. } => "straus",
            Method::Subset(_) => "subset",
        }
    }

    /// Computes `[g_j] = Π_i [D_i]^{W_ji}` for every row `j`.
    ///
    /// Panics if `inputs.len()` differs from the plan's: the caller sizes
    /// `[D]` from the same model.
    pub fn apply(&self, pk: &PublicKey, inputs: &[Ciphertext]) -> Vec<Ciphertext> {
        assert_eq!(inputs.len(), self.inputs, "matvec plan for {} inputs applied to {}", self.inputs, inputs.len());
        match &self.method {
            Method::Zero { rows } => vec![Ciphertext(BigInt::one()); *rows],
            Method::Straus { rows, window, windows, uses } => straus(pk, rows, inputs, *window, *windows, uses),
            Method::Subset(layout) => subset(pk, layout, inputs),
        }
    }
}

/// Computes `[g_j] = Π_i [D_i]^{W_ji}` for every row `j` (plans and applies
/// in one go; S1 keeps its plans per model instead).
pub fn matvec(pk: &PublicKey, rows: &[SparseRow], inputs: &[Ciphertext]) -> Vec<Ciphertext> {
    MatvecPlan::new(rows, inputs.len(), pk.ciphertext_bytes()).apply(pk, inputs)
}

/// Straus with the window that minimizes the exact multiplication count.
fn straus_plan(rows: &[SparseRow], inputs: usize, wbits: u32, ct_bytes: usize) -> (u64, Method) {
    let mut uses = vec![0u32; inputs];
    for &(i, w) in rows.iter().flatten() {
        if w != 0 {
            uses[i as usize] += 1;
        }
    }
    let used = uses.iter().filter(|&&u| u > 0).count();
    let mut best: Option<(u64, u32)> = None;
    for c in 1..=8u32 {
        if used * ((1usize << c) - 1) * ct_bytes > TABLE_MEMORY_CAP && c > 1 {
            break;
        }
        let windows = wbits.div_ceil(c);
        let mask = (1u64 << c) - 1;
        let table = used as u64 * ((1u64 << c) - 2);
        let mut cost = table;
        for row in rows {
            let (mut pos, mut neg) = (false, false);
            for w in (0..windows).rev() {
                // Squarings only once an accumulator holds something.
                cost += c as u64 * (pos as u64 + neg as u64);
                for &(_, wt) in row {
                    if (wt.unsigned_abs() >> (c * w)) & mask != 0 {
                        cost += 1;
                        if wt > 0 {
                            pos = true
                        } else {
                            neg = true
                        }
                    }
                }
            }
            if neg {
                cost += 40; // an inversion mod N², as multiplications (measured ≈ 35–45)
            }
        }
        if best.is_none_or(|(b, _)| cost < b) {
            best = Some((cost, c));
        }
    }
    let (cost, c) = best.expect("c = 1 is always tried");
    (cost, Method::Straus { rows: rows.to_vec(), window: c, windows: wbits.div_ceil(c), uses })
}

/// Subset products with the group size that minimizes the exact count, or
/// `None` if no group size keeps the tables under the memory cap.
fn subset_plan(rows: &[SparseRow], inputs: usize, wbits: u32, ct_bytes: usize) -> Option<(u64, SubsetLayout)> {
    if inputs == 0 {
        return None;
    }
    let offset = 1i64 << wbits;
    let planes = wbits + 1;
    // Dense u = w + 2^B per row; absent weights are 0, so u = 2^B there.
    let dense: Vec<Vec<u32>> = rows
        .iter()
        .map(|row| {
            let mut u = vec![offset as u32; inputs];
            for &(i, w) in row {
                u[i as usize] = (w + offset) as u32;
            }
            u
        })
        .collect();
    let mut best: Option<(u64, u32)> = None;
    for g in 2..=MAX_GROUP {
        let groups = inputs.div_ceil(g as usize);
        if groups * (1usize << g) * ct_bytes > TABLE_MEMORY_CAP {
            break;
        }
        // Table entries that are not single ciphertexts: one multiplication each.
        let mut cost = 0u64;
        for gi in 0..groups {
            let size = (inputs - gi * g as usize).min(g as usize) as u64;
            cost += (1u64 << size) - size - 1;
        }
        // The offset: Π_i D_i from the groups' full subsets, B squarings,
        // one inversion, one multiplication per row.
        cost += groups as u64 + wbits as u64 + 40 + rows.len() as u64;
        for u in &dense {
            let mut started = false;
            for b in (0..planes).rev() {
                if started {
                    cost += 1;
                }
                for chunk in u.chunks(g as usize) {
                    if chunk.iter().any(|&v| (v >> b) & 1 == 1) {
                        cost += 1;
                        started = true;
                    }
                }
            }
        }
        if best.is_none_or(|(b, _)| cost < b) {
            best = Some((cost, g));
        }
    }
    let (cost, g) = best?;
    let patterns = dense
        .iter()
        .map(|u| {
            (0..planes)
                .rev()
                .map(|b| {
                    u.chunks(g as usize)
                        .map(|chunk| {
                            chunk.iter().enumerate().fold(0u16, |s, (k, &v)| s | ((((v >> b) & 1) as u16) << k))
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    Some((cost, SubsetLayout { group: g, offset_bits: wbits, patterns }))
}

fn straus(
    pk: &PublicKey,
    rows: &[SparseRow],
    inputs: &[Ciphertext],
    c: u32,
    windows: u32,
    uses: &[u32],
) -> Vec<Ciphertext> {
    let nn = pk.nn();
    let mask = (1u64 << c) - 1;
    // tables[i][d-1] = [D_i]^d; empty for inputs no row reads.
    let tables: Vec<Vec<BigInt>> = inputs
        .par_iter()
        .zip(uses.par_iter())
        .map(|(ct, &u)| {
            if u == 0 {
                return Vec::new();
            }
            let mut t = Vec::with_capacity(mask as usize);
            t.push(ct.0.clone());
            for d in 1..mask as usize {
                t.push(BigInt::mod_mul(&t[d - 1], &ct.0, nn));
            }
            t
        })
        .collect();

    rows.par_iter()
        .map(|row| {
            let mut pos = BigInt::one();
            let mut neg = BigInt::one();
            let (mut pos_one, mut neg_one) = (true, true);
            for w in (0..windows).rev() {
                if !pos_one {
                    for _ in 0..c {
                        pos = BigInt::mod_mul(&pos, &pos, nn);
                    }
                }
                if !neg_one {
                    for _ in 0..c {
                        neg = BigInt::mod_mul(&neg, &neg, nn);
                    }
                }
                for &(i, wt) in row {
                    let digit = (wt.unsigned_abs() >> (c * w)) & mask;
                    if digit == 0 {
                        continue;
                    }
                    let entry = &tables[i as usize][digit as usize - 1];
                    if wt > 0 {
                        pos *= entry;
                        pos %= nn;
                        pos_one = false;
                    } else {
                        neg *= entry;
                        neg %= nn;
                        neg_one = false;
                    }
                }
            }
            if !neg_one {
                let inv = BigInt::mod_inv(&neg, nn).expect("product of units is a unit");
                pos = BigInt::mod_mul(&pos, &inv, nn);
            }
            Ciphertext(pos)
        })
        .collect()
}

fn subset(pk: &PublicKey, layout: &SubsetLayout, inputs: &[Ciphertext]) -> Vec<Ciphertext> {
    let nn = pk.nn();
    let g = layout.group as usize;
    // tables[γ][s] = Π_{k ∈ s} [D_{γG+k}]; entry 0 (the empty product) unused.
    let tables: Vec<Vec<BigInt>> = inputs
        .par_chunks(g)
        .map(|cts| {
            let mut t: Vec<BigInt> = Vec::with_capacity(1 << cts.len());
            t.push(BigInt::one());
            for s in 1usize..(1 << cts.len()) {
                let low = s.trailing_zeros() as usize;
                let rest = s & (s - 1);
                t.push(if rest == 0 { cts[low].0.clone() } else { BigInt::mod_mul(&t[rest], &cts[low].0, nn) });
            }
            t
        })
        .collect();
    // (Π_i [D_i])^{-2^B}: removes the offset from every row at once.
    let mut all = BigInt::one();
    for t in &tables {
        all *= t.last().expect("a group has at least one input");
        all %= nn;
    }
    for _ in 0..layout.offset_bits {
        all = BigInt::mod_mul(&all, &all, nn);
    }
    let correction = BigInt::mod_inv(&all, nn).expect("product of units is a unit");

    layout
        .patterns
        .par_iter()
        .map(|planes| {
            let mut acc = BigInt::one();
            let mut started = false;
            for plane in planes {
                if started {
                    acc = BigInt::mod_mul(&acc, &acc, nn);
                }
                for (t, &s) in tables.iter().zip(plane) {
                    if s != 0 {
                        acc *= &t[s as usize];
                        acc %= nn;
                        started = true;
                    }
                }
            }
            Ciphertext(BigInt::mod_mul(&acc, &correction, nn))
        })
        .collect()
}

/// The textbook product, one `mod_pow` per weight. Tests and benches only.
pub fn matvec_naive(pk: &PublicKey, rows: &[SparseRow], inputs: &[Ciphertext]) -> Vec<Ciphertext> {
    rows.iter()
        .map(|row| {
            let mut acc = Ciphertext(BigInt::one());
            for &(i, w) in row {
                let t = pk.scalar_mul(&inputs[i as usize], &crate::bigint_from_i64(w));
                pk.add_assign(&mut acc, &t);
            }
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paillier::tests::key1024;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn matches_plaintext_product(
            cols in 1usize..12,
            rows in prop::collection::vec(prop::collection::vec(-5000i64..5000, 12), 1..6),
            xs in prop::collection::vec(-1_000_000i64..1_000_000, 12),
            sparsity in 0u32..3,
        ) {
            let sk = key1024();
            let pk = sk.public();
            let noise = sk.noise_source(&mut rand_core::OsRng);
            let enc: Vec<_> = xs[..cols].iter().map(|&x| noise.encrypt(pk, &crate::bigint_from_i64(x), &mut rand_core::OsRng)).collect();
            let sparse: Vec<SparseRow> = rows.iter().map(|r| {
                r[..cols].iter().enumerate()
                    .filter(|(i, _)| sparsity == 0 || (*i as u32).is_multiple_of(sparsity + 1))
                    .map(|(i, &w)| (i as u32, w)).collect()
            }).collect();
            let fast = matvec(pk, &sparse, &enc);
            let naive = matvec_naive(pk, &sparse, &enc);
            let forced: Vec<_> = [MatvecMethod::Straus, MatvecMethod::Subset]
                .into_iter()
                .map(|m| MatvecPlan::with_method(&sparse, cols, pk.ciphertext_bytes(), m).apply(pk, &enc))
                .collect();
            for (j, row) in sparse.iter().enumerate() {
                let want = crate::bigint_from_i64(row.iter().map(|&(i, w)| w * xs[i as usize]).sum());
                prop_assert_eq!(&sk.decrypt(&fast[j]), &want);
                prop_assert_eq!(&sk.decrypt(&naive[j]), &want);
                for out in &forced {
                    prop_assert_eq!(&sk.decrypt(&out[j]), &want);
                }
            }
        }
    }

    /// Dense rows wider than a group, with all-zero rows and columns, in
    /// both methods: the subset tables, the offset and its removal.
    #[test]
    fn subset_products_on_a_dense_block() {
        let sk = key1024();
        let pk = sk.public();
        let noise = sk.noise_source(&mut rand_core::OsRng);
        let xs: Vec<i64> = (0..23).map(|i| (i * 7919 % 1000) - 500).collect();
        let enc: Vec<_> =
            xs.iter().map(|&x| noise.encrypt(pk, &crate::bigint_from_i64(x), &mut rand_core::OsRng)).collect();
        let mut rows: Vec<SparseRow> = (0..9)
            .map(|j| (0..23u32).filter(|&i| i != 5).map(|i| (i, ((j * 31 + i as i64 * 17) % 4095) - 2047)).collect())
            .collect();
        rows.push(Vec::new());
        rows.push(vec![(3, -2047), (22, 2047)]);
        let plan = MatvecPlan::with_method(&rows, 23, pk.ciphertext_bytes(), MatvecMethod::Subset);
        assert_eq!(plan.method_name(), "subset");
        let out = plan.apply(pk, &enc);
        for (j, row) in rows.iter().enumerate() {
            let want: i64 = row.iter().map(|&(i, w)| w * xs[i as usize]).sum();
            assert_eq!(sk.decrypt(&out[j]), crate::bigint_from_i64(want), "row {j}");
        }
    }

    /// The count decides: dense rows sharing every input go to subset
    /// products, a sparse (convolution-like) layer stays with Straus.
    #[test]
    fn the_cheaper_method_is_chosen() {
        let dense: Vec<SparseRow> =
            (0..128).map(|j| (0..784u32).map(|i| (i, ((j * 131 + i as i64 * 71) % 4095) - 2047)).collect()).collect();
        let plan = MatvecPlan::new(&dense, 784, 512);
        assert_eq!(plan.method_name(), "subset");
        let straus = MatvecPlan::with_method(&dense, 784, 512, MatvecMethod::Straus);
        assert!(
            plan.multiplications * 13 < straus.multiplications * 10,
            "{} vs {}",
            plan.multiplications,
            straus.multiplications
        );
        let sparse: Vec<SparseRow> =
            (0..128).map(|j| (0..9u32).map(|k| ((j as u32 * 5 + k) % 784, 1000 - k as i64 * 250)).collect()).collect();
        assert_eq!(MatvecPlan::new(&sparse, 784, 512).method_name(), "straus");
    }

    #[test]
    fn extreme_weights() {
        let sk = key1024();
        let pk = sk.public();
        let noise = sk.noise_source(&mut rand_core::OsRng);
        let enc = vec![
            noise.encrypt(pk, &BigInt::from(3), &mut rand_core::OsRng),
            noise.encrypt(pk, &BigInt::from(-2), &mut rand_core::OsRng),
        ];
        let rows = vec![vec![(0, i32::MAX as i64), (1, i32::MIN as i64)], vec![], vec![(1, 0)]];
        let out = matvec(pk, &rows, &enc);
        assert_eq!(MatvecPlan::new(&rows, 2, pk.ciphertext_bytes()).method_name(), "straus", "32-bit weights");
        let want = 3 * i32::MAX as i64 + (-2) * (i32::MIN as i64);
        assert_eq!(sk.decrypt(&out[0]), crate::bigint_from_i64(want));
        assert_eq!(sk.decrypt(&out[1]), BigInt::zero());
        assert_eq!(sk.decrypt(&out[2]), BigInt::zero());
    }
}
