//! Server-side costs (GitHub issue 5, item 2/3), 2048-bit Paillier:
//!
//!     cargo bench --bench server_cost
//!
//! - S1: `W·[D]` on layers 1 (784×128) and 2 (128×128) of the trained MNIST
//!   MLP (models/mnist_mlp.onnx; random weights if it does not import), 12-bit
//!   quantized weights: Straus vs subset products (`MatvecPlan`, each forced,
//!   one thread) and S1's own choice on the 2-core pool; on layer 2 also
//!   `matvec_naive` (one `mod_pow` per weight). All return the same group
//!   elements (asserted).
//! - S2 per ciphertext: `SecretKey::decrypt_raw` (CRT; its two halves run in
//!   parallel via `rayon::join`, so also measured on one thread),
//!   `NoiseSource::encrypt` (DJN noise, fixed-base table; S2's source from
//!   `SecretKey::noise_source` and the public-key one S1 uses) vs
//!   `PublicKey::encrypt` (full `r^N`, the client's).
//! - A full in-process query of the MNIST MLP 784-128-128-10 (trained
//!   weights and MNIST test rows when they import, else random; ReLU, `label`
//!   mode), all three roles, result asserted equal to the integer reference.
//!
//! Criterion reports wall clock. The summary printed at the end gives, from
//! the same samples, the median wall time and — for single-threaded work —
//! the median CPU time of the thread (robust to other load on the machine),
//! and the ratios.

mod common;

use common::models::{load, Loaded};
use common::{client_pool, fmt_d, ratio, thread_cpu, Samples};
use criterion::{black_box, Criterion, SamplingMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_core::OsRng;
use std::time::{Duration, Instant};
use tandem_model::{OutputMode, QLayer};
use tandem_paillier::bigint_traits::Converter;
use tandem_paillier::matvec::{matvec_naive, MatvecMethod, MatvecPlan};
use tandem_paillier::{BigInt, NoiseSource, SecretKey};

static SAMPLES: Samples = Samples::new();
const KEY_BITS: u32 = 2048;
const PER_CT_SAMPLES: usize = 20;

/// `iters` runs of `f`, wall time; records the per-iteration mean, and the
/// calling thread's CPU time per iteration under `"{key}/cpu"` (meaningful
/// for single-threaded work only: it is robust to other load on the machine).
fn timed(key: &str, iters: u64, mut f: impl FnMut()) -> Duration {
    let (t, c) = (Instant::now(), thread_cpu());
    for _ in 0..iters {
        f();
    }
    let (d, cpu) = (t.elapsed(), thread_cpu() - c);
    SAMPLES.record(key, d / iters as u32);
    SAMPLES.record(&format!("{key}/cpu"), cpu / iters as u32);
    d
}

fn bench_matvec(c: &mut Criterion, sk: &SecretKey, mnist: &Loaded) {
    let pk = sk.public();
    let noise = NoiseSource::new(pk, &mut OsRng);
    let mut rng = StdRng::seed_from_u64(7);
    // Layers 0 (784×128) and 2 (128×128) of the 784-128-128-10 ReLU MLP.
    for (idx, name) in [(0usize, "784x128"), (2, "128x128")] {
        let QLayer::Linear(layer) = &mnist.q.layers[idx] else { unreachable!("784-128-128-10 ReLU MLP") };
        let rows = layer.rows.clone();
        let max_w = rows.iter().flatten().map(|&(_, w)| w.unsigned_abs()).max().unwrap();
        let weights: usize = rows.iter().map(|r| r.len()).sum();
        let plan = |m| MatvecPlan::with_method(&rows, layer.in_dim, pk.ciphertext_bytes(), m);
        let (straus, subset, cheapest) =
            (plan(MatvecMethod::Straus), plan(MatvecMethod::Subset), plan(MatvecMethod::Cheapest));
        println!(
            "matvec layer {name}: {weights} non-zero weights, max |W| = {max_w}; multiplications: Straus {}, \
             subset products {}; S1 uses {}",
            straus.multiplications,
            subset.multiplications,
            cheapest.method_name()
        );
        // [D] values as in tandem: up to ~k = 128 bits.
        let inputs: Vec<_> = (0..layer.in_dim)
            .map(|_| noise.encrypt(pk, &BigInt::from_bytes(&rng.gen::<[u8; 16]>()), &mut OsRng))
            .collect();
        let want = straus.apply(pk, &inputs);
        assert_eq!(subset.apply(pk, &inputs), want, "Straus and subset products disagree");
        if idx == 2 {
            assert_eq!(matvec_naive(pk, &rows, &inputs), want, "matvec and matvec_naive disagree");
        }

        let mut g = c.benchmark_group(format!("server_cost/s1_matvec_{name}"));
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(2));
        g.bench_function("cheapest_2_threads", |b| {
            b.iter_custom(|n| {
                timed(&format!("matvec{name}/cheapest_2t"), n, || drop(black_box(cheapest.apply(pk, &inputs))))
            })
        });
        for (label, p) in [("straus", &straus), ("subset", &subset)] {
            g.bench_function(format!("{label}_1_thread"), |b| {
                b.iter_custom(|n| {
                    client_pool().install(|| {
                        timed(&format!("matvec{name}/{label}_1t"), n, || drop(black_box(p.apply(pk, &inputs))))
                    })
                })
            });
        }
        if idx == 2 {
            g.measurement_time(Duration::from_millis(1));
            g.bench_function("naive_1_thread", |b| {
                b.iter_custom(|n| {
                    timed("matvec128x128/naive_1t", n, || drop(black_box(matvec_naive(pk, &rows, &inputs))))
                })
            });
        }
        g.finish();
    }
}

fn bench_per_ciphertext(c: &mut Criterion, sk: &SecretKey) {
    let pk = sk.public();
    // S1's noise source (public key only) and S2's (`SecretKey::noise_source`,
    // which may use the factors).
    let noise = NoiseSource::new(pk, &mut OsRng);
    let noise_s2 = sk.noise_source(&mut OsRng);
    // The 6-bit windows of earlier releases, side by side with today's 8.
    let noise_s2_w6 = sk.noise_source_with_window(6, &mut OsRng);
    let noise_w6 = NoiseSource::with_window(pk, 6, &mut OsRng);
    let m = BigInt::from_bytes(&[0x5a; 16]);
    let ct = pk.encrypt(&m, &mut OsRng);
    assert_eq!(sk.decrypt_raw(&ct), m);
    assert_eq!(sk.decrypt_raw(&noise.encrypt(pk, &m, &mut OsRng)), m);
    assert_eq!(sk.decrypt_raw(&noise_s2.encrypt(pk, &m, &mut OsRng)), m);
    assert_eq!(sk.decrypt_raw(&noise_s2_w6.encrypt(pk, &m, &mut OsRng)), m);
    assert_eq!(sk.decrypt_raw(&noise_w6.encrypt(pk, &m, &mut OsRng)), m);

    let mut g = c.benchmark_group("server_cost/s2_per_ciphertext");
    g.sample_size(PER_CT_SAMPLES).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g.bench_function("decrypt_raw", |b| {
        b.iter_custom(|n| timed("ct/decrypt_2t", n, || drop(black_box(sk.decrypt_raw(&ct)))))
    });
    g.bench_function("decrypt_raw_1_thread", |b| {
        b.iter_custom(|n| client_pool().install(|| timed("ct/decrypt_1t", n, || drop(black_box(sk.decrypt_raw(&ct))))))
    });
    g.bench_function("noise_source_encrypt_s2", |b| {
        b.iter_custom(|n| timed("ct/noise_encrypt_s2", n, || drop(black_box(noise_s2.encrypt(pk, &m, &mut OsRng)))))
    });
    g.bench_function("noise_source_encrypt_s2_window6", |b| {
        b.iter_custom(|n| {
            timed("ct/noise_encrypt_s2_w6", n, || drop(black_box(noise_s2_w6.encrypt(pk, &m, &mut OsRng))))
        })
    });
    g.bench_function("noise_source_encrypt_public_window6", |b| {
        b.iter_custom(|n| timed("ct/noise_encrypt_w6", n, || drop(black_box(noise_w6.encrypt(pk, &m, &mut OsRng)))))
    });
    g.bench_function("noise_source_encrypt_public", |b| {
        b.iter_custom(|n| timed("ct/noise_encrypt", n, || drop(black_box(noise.encrypt(pk, &m, &mut OsRng)))))
    });
    g.bench_function("rerandomize_full", |b| {
        b.iter_custom(|n| timed("ct/rerandomize_full", n, || drop(black_box(pk.rerandomize_full(&ct, &mut OsRng)))))
    });
    g.bench_function("noise_source_rerandomize_public", |b| {
        b.iter_custom(|n| timed("ct/rerandomize_djn", n, || drop(black_box(noise.rerandomize(pk, &ct, &mut OsRng)))))
    });
    g.bench_function("public_key_encrypt", |b| {
        b.iter_custom(|n| timed("ct/full_encrypt", n, || drop(black_box(pk.encrypt(&m, &mut OsRng)))))
    });
    g.finish();
}

fn bench_query(c: &mut Criterion, sk: &SecretKey, mnist: &Loaded) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut h = tandem::Harness::new(&mnist.m, sk).expect("harness");
    if mnist.q.ring_bits == 128 {
        // How many ciphertexts S1 sends S2 per query: each gets a full-size
        // r^N (SECURITY.md, "Rerandomization toward the key holder").
        let t = h.transcript_128(&mnist.input(&mut rng), OutputMode::Label).expect("query");
        let packed: usize = t
            .preprocessing
            .to_s2
            .iter()
            .map(|s| match s {
                tandem_paillier::PreprocessingStep::Round(r) => r.packed.len(),
                tandem_paillier::PreprocessingStep::Output(o) => o.packed.len(),
            })
            .sum();
        println!("MNIST query: {packed} packed ciphertexts + 1 seed = {} full-size rerandomizations by S1", packed + 1);
    }
    let mut g = c.benchmark_group("server_cost/query");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    g.bench_function("mnist_784-128-128-10_label", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let x = mnist.input(&mut rng);
                let want = h.reference(&x, OutputMode::Label);
                let t = Instant::now();
                let got = h.infer(&x, OutputMode::Label).expect("query");
                let d = t.elapsed();
                assert_eq!(got, want, "tandem != integer reference");
                SAMPLES.record("query/mnist", d);
                total += d;
            }
            total
        })
    });
    g.finish();
}

fn summary() {
    // Criterion sample sizes, per key prefix (the warm-up calls come first and are not counted).
    let n_of = |k: &str| if k.starts_with("ct/") { PER_CT_SAMPLES } else { 10 };
    let med = |k: &str| SAMPLES.median_last(k, n_of(k));
    println!("\n## Server costs ({KEY_BITS}-bit Paillier), medians of criterion's samples of this run (wall time)\n");
    println!("| operation | samples | median wall | median CPU (single-threaded rows) |");
    println!("|---|---:|---:|---:|");
    let rows = [
        ("S1 matvec 784×128 (layer 1), S1's choice, 2 threads", "matvec784x128/cheapest_2t", false),
        ("S1 matvec 784×128 (layer 1), Straus, 1 thread", "matvec784x128/straus_1t", true),
        ("S1 matvec 784×128 (layer 1), subset products, 1 thread", "matvec784x128/subset_1t", true),
        ("S1 matvec 128×128 (layer 2), S1's choice, 2 threads", "matvec128x128/cheapest_2t", false),
        ("S1 matvec 128×128 (layer 2), Straus, 1 thread", "matvec128x128/straus_1t", true),
        ("S1 matvec 128×128 (layer 2), subset products, 1 thread", "matvec128x128/subset_1t", true),
        ("S1 matvec 128×128 (layer 2), naive (mod_pow per weight), 1 thread", "matvec128x128/naive_1t", true),
        ("S2 `decrypt_raw` (CRT halves in parallel)", "ct/decrypt_2t", false),
        ("S2 `decrypt_raw`, 1 thread", "ct/decrypt_1t", true),
        ("S2 `NoiseSource::encrypt`, S2's source (`SecretKey::noise_source`)", "ct/noise_encrypt_s2", true),
        ("S2 `NoiseSource::encrypt`, S2's source, 6-bit windows (before)", "ct/noise_encrypt_s2_w6", true),
        ("`NoiseSource::encrypt`, public-key source (`NoiseSource::new`, S1's)", "ct/noise_encrypt", true),
        ("`NoiseSource::encrypt`, public-key source, 6-bit windows (before)", "ct/noise_encrypt_w6", true),
        ("`PublicKey::encrypt` (full r^N)", "ct/full_encrypt", true),
        ("S1 `PublicKey::rerandomize_full` (full r^N, toward S2 since issue 14)", "ct/rerandomize_full", true),
        ("S1 `NoiseSource::rerandomize`, public source (DJN, toward S2 before issue 14)", "ct/rerandomize_djn", true),
        ("full query MNIST 784-128-128-10, label, in-process", "query/mnist", false),
    ];
    for (name, k, single) in rows {
        if let Some((d, n)) = med(k) {
            let cpu = match med(&format!("{k}/cpu")) {
                Some((c, _)) if single => fmt_d(c),
                _ => "—".into(),
            };
            println!("| {name} | {n} | {} | {cpu} |", fmt_d(d));
        }
    }
    println!();
    let r = |a: &str, b: &str, what: &str| {
        if let (Some((a, _)), Some((b, _))) = (med(a), med(b)) {
            println!("RATIO {what}: {:.1}x", ratio(a, b));
        }
    };
    r(
        "matvec128x128/naive_1t/cpu",
        "matvec128x128/straus_1t/cpu",
        "matvec 128×128 naive / Straus, both 1 thread (CPU)",
    );
    r(
        "matvec784x128/straus_1t/cpu",
        "matvec784x128/subset_1t/cpu",
        "matvec 784×128 Straus / subset products, 1 thread (CPU)",
    );
    r(
        "matvec128x128/straus_1t/cpu",
        "matvec128x128/subset_1t/cpu",
        "matvec 128×128 Straus / subset products, 1 thread (CPU)",
    );
    r(
        "matvec784x128/straus_1t",
        "matvec784x128/cheapest_2t",
        "matvec 784×128 Straus 1 thread / S1's choice 2 threads (wall)",
    );
    r("ct/full_encrypt/cpu", "ct/noise_encrypt_s2/cpu", "PublicKey::encrypt / NoiseSource::encrypt, S2's source (CPU)");
    r(
        "ct/full_encrypt/cpu",
        "ct/noise_encrypt/cpu",
        "PublicKey::encrypt / NoiseSource::encrypt, public-key source (CPU)",
    );
    r("ct/full_encrypt", "ct/noise_encrypt_s2", "PublicKey::encrypt / NoiseSource::encrypt, S2's source (wall)");
    r("ct/decrypt_1t", "ct/decrypt_2t", "decrypt_raw 1 thread / 2 threads");
    r(
        "ct/rerandomize_full/cpu",
        "ct/rerandomize_djn/cpu",
        "rerandomization toward S2: full r^N / DJN public source (CPU)",
    );
    r(
        "ct/noise_encrypt_s2_w6/cpu",
        "ct/noise_encrypt_s2/cpu",
        "NoiseSource::encrypt S2's source, 6-bit / 8-bit windows (CPU)",
    );
    r(
        "ct/noise_encrypt_w6/cpu",
        "ct/noise_encrypt/cpu",
        "NoiseSource::encrypt public source, 6-bit / 8-bit windows (CPU)",
    );
}

fn main() {
    let t = Instant::now();
    let sk = SecretKey::generate(KEY_BITS).expect("key size");
    println!("key generation ({KEY_BITS} bits): {}", fmt_d(t.elapsed()));
    let mnist = load("data/mnist_mlp/meta.json", &[784, 128, 128, 10], OutputMode::Label, 1);
    println!("MNIST MLP: {}; ring k = {}", mnist.source, mnist.q.ring_bits);
    let mut c = Criterion::default().nresamples(10_000).configure_from_args();
    bench_matvec(&mut c, &sk, &mnist);
    bench_per_ciphertext(&mut c, &sk);
    bench_query(&mut c, &sk, &mnist);
    c.final_summary();
    summary();
}
