//! Exactness, noise budget and hostile-bytes tests for the layer step.
//!
//! Small-N tests use `Params::insecure_test` (same primes, same noise and
//! exactness argument, insecure ring degree) so they run fast in debug CI;
//! `full_size_784x128_n8192` runs the production parameters (about a
//! second in the test profile, which the workspace builds at opt-level 2).

use std::sync::Arc;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tandem_lattice::*;

struct Setup {
    ctx: Arc<Context>,
    sk: SecretKey,
    pk: PublicKey,
}

fn setup(params: Params, seed: u64) -> Setup {
    let ctx = Context::new(params).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let sk = SecretKey::generate(&ctx, &mut rng);
    let pk = sk.public_key(&mut rng);
    Setup { ctx, sk, pk }
}

/// Runs the whole step through the wire encodings and returns S2's result.
fn run(s: &Setup, w: &[i64], n_out: usize, n_in: usize, r: &[u128], mu: &[u128], rng: &mut ChaCha20Rng) -> Vec<u128> {
    let layout = Layout::new(&s.ctx, n_in, n_out).unwrap();
    let cts = encrypt_vector(&s.sk, &layout, r, rng).unwrap();
    // S2 -> S1 on the wire
    let cts: Vec<SeededCiphertext> =
        cts.iter().map(|c| SeededCiphertext::from_bytes(&s.ctx, &c.to_bytes(&s.ctx)).unwrap()).collect();
    let out = linear_layer_plain(&s.pk, w, n_out, n_in, &cts, mu, rng).unwrap();
    // S1 -> S2 on the wire
    let out: Vec<Ciphertext> = out
        .iter()
        .enumerate()
        .map(|(g, c)| Ciphertext::from_bytes(&s.ctx, &c.to_bytes(&s.ctx), layout.rows_in_group(g)).unwrap())
        .collect();
    decrypt_outputs(&s.sk, &layout, &out).unwrap()
}

fn random_case(rng: &mut ChaCha20Rng, n_out: usize, n_in: usize, wbits: u32) -> (Vec<i64>, Vec<u128>, Vec<u128>) {
    let b = (1i64 << wbits) - 1;
    let w = (0..n_out * n_in).map(|_| rng.gen_range(-b..=b)).collect();
    let r = (0..n_in).map(|_| rng.gen()).collect();
    let mu = (0..n_out).map(|_| rng.gen()).collect();
    (w, r, mu)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// decrypt(layer(enc(r))) == W·r + μ mod 2^128, bit for bit, for random
    /// shapes (including several input blocks and output groups at N = 1024).
    #[test]
    fn exact_random_shapes(
        n_in in 1usize..1200,
        n_out in 1usize..48,
        log_n in 10u32..12,
        seed in any::<u64>(),
    ) {
        let s = setup(Params::insecure_test(log_n), seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
        let (w, r, mu) = random_case(&mut rng, n_out, n_in, 16);
        let got = run(&s, &w, n_out, n_in, &r, &mu, &mut rng);
        prop_assert_eq!(got, reference_product(&w, n_out, n_in, &r, &mu));
    }
}

#[test]
fn exact_mnist_shapes_small_n() {
    let s = setup(Params::insecure_test(11), 3);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    for (n_out, n_in) in [(128, 784), (128, 128), (10, 128), (7, 16), (1, 1), (16, 7)] {
        let (w, r, mu) = random_case(&mut rng, n_out, n_in, 16);
        let got = run(&s, &w, n_out, n_in, &r, &mu, &mut rng);
        assert_eq!(got, reference_product(&w, n_out, n_in, &r, &mu), "{n_out}x{n_in}");
    }
}

/// Extremes: every weight ±(2^16 − 1), every input 2^128 − 1, masks at both
/// ends; at the largest noise the layout allows for the shape.
#[test]
fn exact_extremes() {
    let s = setup(Params::insecure_test(10), 5);
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let b = (1i64 << 16) - 1;
    for (n_out, n_in) in [(128, 784), (7, 16), (3, 1024)] {
        for pattern in 0..4 {
            let w: Vec<i64> = (0..n_out * n_in)
                .map(|k| match pattern {
                    0 => b,
                    1 => -b,
                    2 => {
                        if k % 2 == 0 {
                            b
                        } else {
                            -b
                        }
                    }
                    _ => {
                        if rng.gen() {
                            b
                        } else {
                            -b
                        }
                    }
                })
                .collect();
            let r = vec![u128::MAX; n_in];
            let mu: Vec<u128> = (0..n_out).map(|j| if j % 2 == 0 { u128::MAX } else { 0 }).collect();
            let got = run(&s, &w, n_out, n_in, &r, &mu, &mut rng);
            assert_eq!(got, reference_product(&w, n_out, n_in, &r, &mu));
        }
    }
}

/// Production parameters, the MNIST MLP's first layer.
#[test]
fn full_size_784x128_n8192() {
    let s = setup(Params::production(), 7);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let (n_out, n_in) = (128, 784);
    let layout = Layout::new(&s.ctx, n_in, n_out).unwrap();
    assert_eq!((layout.n_blocks, layout.block, layout.n_groups, layout.rows), (7, 112, 2, 73));
    let (w, r, mu) = random_case(&mut rng, n_out, n_in, 16);
    let got = run(&s, &w, n_out, n_in, &r, &mu, &mut rng);
    assert_eq!(got, reference_product(&w, n_out, n_in, &r, &mu));
}

/// The measured noise stays below the proven bound: without flooding
/// (flood_bits = 0) against `B_w + B_0 + 2`, with production flooding
/// against the full bound; and flooding really floods.
#[test]
fn noise_below_proven_bound() {
    let unflooded = Params { flood_bits: 0, ..Params::insecure_test(11) };
    for (params, flooded) in [(unflooded, false), (Params::insecure_test(11), true)] {
        let s = setup(params, 9);
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let (n_out, n_in) = (128, 784);
        let layout = Layout::new(&s.ctx, n_in, n_out).unwrap();
        let (w, r, mu) = random_case(&mut rng, n_out, n_in, 16);
        let cts = encrypt_vector(&s.sk, &layout, &r, &mut rng).unwrap();
        let out = linear_layer_plain(&s.pk, &w, n_out, n_in, &cts, &mu, &mut rng).unwrap();
        let got = decrypt_outputs_with_noise(&s.sk, &layout, &out).unwrap();
        let max = got.iter().map(|(_, e)| e.unsigned_abs()).max().unwrap();
        let bound_log2 = layout.total_noise_bound_log2(&s.ctx);
        let measured_log2 = (max as f64).log2();
        eprintln!(
            "flooded={flooded}: measured max |noise| = 2^{measured_log2:.2}, proven bound 2^{bound_log2:.2}, log2(q/2t) = {:.2}",
            s.ctx.log2_q() - 129.0
        );
        assert!(measured_log2 <= bound_log2);
        assert!(bound_log2 < s.ctx.log2_q() - 129.0);
        if flooded {
            // 128 uniform draws in [-2^86, 2^86): max below 2^84 has probability 2^-256.
            assert!(measured_log2 > 84.0);
        } else {
            // weight noise is about sqrt(rows·n_in)·2^16/sqrt(3)·3.2 ≈ 2^27: far above
            // the rerandomization's 2^18 and far below the bound.
            assert!(measured_log2 > 20.0 && measured_log2 < 34.0);
        }
        let want = reference_product(&w, n_out, n_in, &r, &mu);
        assert!(got.iter().map(|(m, _)| *m).eq(want));
    }
}

#[test]
fn layout_and_bytes_at_production() {
    let ctx = Context::new(Params::production()).unwrap();
    let l = Layout::new(&ctx, 784, 128).unwrap();
    // 221,184-byte polynomials (8192 · 4 · 54 bits)
    assert_eq!(ctx.poly_bytes(), 221_184);
    assert_eq!(l.bytes_s2_to_s1(&ctx), 7 * (32 + 221_184));
    assert_eq!(l.bytes_s1_to_s2(&ctx), 2 * 221_184 + (73 + 55) * 27);
    assert!(l.flooding_distance_log2(&ctx) < -43.0);
    let l = Layout::new(&ctx, 128, 128).unwrap();
    assert_eq!((l.n_blocks, l.n_groups), (2, 1));
    let l = Layout::new(&ctx, 128, 10).unwrap();
    assert_eq!((l.n_blocks, l.n_groups), (1, 1));
    assert!(Layout::new(&ctx, 0, 3).is_err());
    assert!(Layout::new(&ctx, 3, MAX_DIM + 1).is_err());
}

#[test]
fn typed_errors_for_bad_inputs() {
    let s = setup(Params::insecure_test(10), 11);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let layout = Layout::new(&s.ctx, 20, 5).unwrap();
    let r = vec![1u128; 20];
    assert!(matches!(encrypt_vector(&s.sk, &layout, &r[..19], &mut rng), Err(LatticeError::WrongCount { .. })));
    let cts = encrypt_vector(&s.sk, &layout, &r, &mut rng).unwrap();
    let w = vec![1i64; 100];
    let mu = vec![0u128; 5];
    let mut big = w.clone();
    big[42] = 1 << 16;
    assert_eq!(
        linear_layer_plain(&s.pk, &big, 5, 20, &cts, &mu, &mut rng).unwrap_err(),
        LatticeError::WeightOutOfRange { row: 2, col: 2, bits: 16 }
    );
    big[42] = -(1 << 16);
    assert!(linear_layer_plain(&s.pk, &big, 5, 20, &cts, &mu, &mut rng).is_err());
    assert!(linear_layer_plain(&s.pk, &w[..99], 5, 20, &cts, &mu, &mut rng).is_err());
    assert!(linear_layer_plain(&s.pk, &w, 5, 20, &cts, &mu[..4], &mut rng).is_err());
    assert!(linear_layer_plain(&s.pk, &w, 5, 20, &[], &mu, &mut rng).is_err());
    let out = linear_layer_plain(&s.pk, &w, 5, 20, &cts, &mu, &mut rng).unwrap();
    // A layout with another group count or row count is refused (the
    // layout itself is agreed between the servers, not carried by the
    // ciphertexts).
    let other = Layout::new(&s.ctx, 20, 200).unwrap();
    assert!(matches!(decrypt_outputs(&s.sk, &other, &out), Err(LatticeError::WrongCount { .. })));
    let other = Layout::new(&s.ctx, 20, 4).unwrap();
    assert!(matches!(decrypt_outputs(&s.sk, &other, &out), Err(LatticeError::WrongCount { .. })));
    assert!(decrypt_outputs(&s.sk, &layout, &[]).is_err());
}

#[test]
fn hostile_bytes_are_refused_with_typed_errors() {
    let s = setup(Params::insecure_test(10), 13);
    let ctx = &s.ctx;
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let layout = Layout::new(ctx, 30, 4).unwrap();
    let cts = encrypt_vector(&s.sk, &layout, &[7u128; 30], &mut rng).unwrap();
    let good = cts[0].to_bytes(ctx);
    // wrong lengths
    for len in [0, 1, 31, 32, good.len() - 1, good.len() + 1] {
        let mut b = good.clone();
        b.resize(len, 0);
        assert!(matches!(SeededCiphertext::from_bytes(ctx, &b), Err(LatticeError::WrongLength { .. })));
    }
    // a residue at 2^54 - 1 >= p in the first and the last limb
    let mut b = good.clone();
    b[32..39].fill(0xff);
    b[39] |= 0x3f;
    assert_eq!(
        SeededCiphertext::from_bytes(ctx, &b).unwrap_err(),
        LatticeError::CoefficientOutOfRange { what: "seeded ciphertext", limb: 0, index: 0 }
    );
    let mut b = good.clone();
    let n = b.len();
    b[n - 7..].fill(0xff);
    assert!(matches!(SeededCiphertext::from_bytes(ctx, &b), Err(LatticeError::CoefficientOutOfRange { limb: 3, .. })));
    let w = vec![-3i64; 120];
    let out = linear_layer_plain(&s.pk, &w, 4, 30, &cts, &[1, 2, 3, 4], &mut rng).unwrap();
    let ob = out[0].to_bytes(ctx);
    assert!(Ciphertext::from_bytes(ctx, &ob, 4).is_ok());
    assert!(matches!(Ciphertext::from_bytes(ctx, &ob, 3), Err(LatticeError::WrongLength { .. })));
    assert!(Ciphertext::from_bytes(ctx, &ob, 0).is_err());
    assert!(Ciphertext::from_bytes(ctx, &ob, usize::MAX).is_err());
    let mut bad = ob.clone();
    let m = bad.len();
    bad[m - 7..].fill(0xff);
    assert!(matches!(
        Ciphertext::from_bytes(ctx, &bad, 4),
        Err(LatticeError::CoefficientOutOfRange { what: "ciphertext c0", .. })
    ));
    assert!(PublicKey::from_bytes(ctx, &ob).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random bytes and random bit flips never panic a parser; a parse that
    /// succeeds re-encodes to the same bytes (one value, one encoding).
    #[test]
    fn parsers_never_panic(seed in any::<u64>(), flips in proptest::collection::vec(any::<usize>(), 0..8), len_delta in -2i64..3) {
        let s = setup(Params::insecure_test(10), 15);
        let ctx = &s.ctx;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let layout = Layout::new(ctx, 9, 3).unwrap();
        let cts = encrypt_vector(&s.sk, &layout, &[u128::MAX; 9], &mut rng).unwrap();
        let out = linear_layer_plain(&s.pk, &[5i64; 27], 3, 9, &cts, &[0; 3], &mut rng).unwrap();
        for mut bytes in [cts[0].to_bytes(ctx), out[0].to_bytes(ctx), s.pk.to_bytes()] {
            for f in &flips {
                let i = f % bytes.len();
                bytes[i] ^= 1 << (f % 8);
            }
            let new_len = (bytes.len() as i64 + len_delta).max(0) as usize;
            bytes.resize(new_len, 0xa5);
            if let Ok(c) = SeededCiphertext::from_bytes(ctx, &bytes) {
                prop_assert_eq!(c.to_bytes(ctx), bytes.clone());
            }
            if let Ok(c) = Ciphertext::from_bytes(ctx, &bytes, 3) {
                prop_assert_eq!(c.to_bytes(ctx), bytes.clone());
            }
            if let Ok(k) = PublicKey::from_bytes(ctx, &bytes) {
                prop_assert_eq!(k.to_bytes(), bytes.clone());
            }
            let random: Vec<u8> = (0..bytes.len()).map(|_| rng.gen()).collect();
            let _ = SeededCiphertext::from_bytes(ctx, &random);
            let _ = Ciphertext::from_bytes(ctx, &random, 3);
            let _ = PublicKey::from_bytes(ctx, &random);
        }
    }
}

/// S1's result is rerandomized: the same inputs give unrelated `c1`s.
#[test]
fn outputs_are_rerandomized() {
    let s = setup(Params::insecure_test(10), 16);
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let layout = Layout::new(&s.ctx, 10, 2).unwrap();
    let cts = encrypt_vector(&s.sk, &layout, &[3u128; 10], &mut rng).unwrap();
    let w = vec![2i64; 20];
    let a = linear_layer_plain(&s.pk, &w, 2, 10, &cts, &[0, 0], &mut rng).unwrap();
    let b = linear_layer_plain(&s.pk, &w, 2, 10, &cts, &[0, 0], &mut rng).unwrap();
    let (ab, bb) = (a[0].to_bytes(&s.ctx), b[0].to_bytes(&s.ctx));
    let same = ab.iter().zip(&bb).filter(|(x, y)| x == y).count();
    assert!(same < ab.len() / 64, "{same} equal bytes");
    assert_eq!(decrypt_outputs(&s.sk, &layout, &a).unwrap(), vec![60, 60]);
    assert_eq!(decrypt_outputs(&s.sk, &layout, &b).unwrap(), vec![60, 60]);
}

/// Known answer: pins the wire format, the seed expansion and the NTT
/// order of `tfhe-ntt` (NTT-form residues are on the wire). If this changes,
/// the two servers must not run different versions.
#[test]
fn wire_format_known_answer() {
    let s = setup(Params::insecure_test(10), 18);
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let layout = Layout::new(&s.ctx, 5, 2).unwrap();
    let cts = encrypt_vector(&s.sk, &layout, &[1, 2, 3, 4, 5], &mut rng).unwrap();
    let out = linear_layer_plain(&s.pk, &[1, -1, 2, -2, 3, 0, 0, 0, 0, 9], 2, 5, &cts, &[0, 1], &mut rng).unwrap();
    let fnv = |b: &[u8]| b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3));
    let got = (fnv(&s.pk.to_bytes()), fnv(&cts[0].to_bytes(&s.ctx)), fnv(&out[0].to_bytes(&s.ctx)));
    eprintln!("{got:#x?}");
    assert_eq!(got, KAT);
    assert_eq!(decrypt_outputs(&s.sk, &layout, &out).unwrap(), vec![12, 46]);
}

const KAT: (u64, u64, u64) = (0x39e7_5084_f04d_52d6, 0x42b3_3c72_37fa_a0f4, 0x13e0_66c8_c4f6_ce1a);

/// The engine shares these across threads (one context, many sessions).
#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Context>();
    check::<SecretKey>();
    check::<PublicKey>();
    check::<EncodedWeights>();
    check::<SeededCiphertext>();
    check::<Ciphertext>();
    check::<Layout>();
}

/// The documented shape bounds: the widest and the tallest layers
/// (`MAX_DIM`) are exact at small N; one more is refused.
#[test]
fn exact_at_dimension_bounds() {
    let s = setup(Params::insecure_test(10), 20);
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    for (n_out, n_in) in [(1, MAX_DIM), (MAX_DIM, 1), (3, 5000)] {
        let (w, r, mu) = random_case(&mut rng, n_out, n_in, 16);
        let got = run(&s, &w, n_out, n_in, &r, &mu, &mut rng);
        assert_eq!(got, reference_product(&w, n_out, n_in, &r, &mu), "{n_out}x{n_in}");
    }
    assert!(Layout::new(&s.ctx, MAX_DIM + 1, 1).is_err());
}
