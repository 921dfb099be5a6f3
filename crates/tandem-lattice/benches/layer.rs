//! The lattice linear-layer step at production parameters (N = 8192, four
//! 54-bit primes): S2's encryption of `r`, S1's product with
//! rerandomization and flooding, S2's decryption, for the MNIST MLP's
//! 784×128 and 128×128 layers (and 128×10). Single-threaded.
//!
//! `cargo bench -p tandem-lattice`

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tandem_lattice::*;

fn layer(c: &mut Criterion, n_out: usize, n_in: usize) {
    let ctx = Context::new(Params::production()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&ctx, &mut rng);
    let pk = sk.public_key(&mut rng);
    let w: Vec<i64> = (0..n_out * n_in).map(|_| rng.gen_range(-2047..=2047)).collect();
    let r: Vec<u128> = (0..n_in).map(|_| rng.gen()).collect();
    let mu: Vec<u128> = (0..n_out).map(|_| rng.gen()).collect();
    let layout = Layout::new(&ctx, n_in, n_out).unwrap();
    let wts = EncodedWeights::new(&ctx, &w, n_out, n_in).unwrap();
    let cts = encrypt_vector(&sk, &layout, &r, &mut rng).unwrap();
    let out = linear_layer(&pk, &wts, &cts, &mu, &mut rng).unwrap();
    assert_eq!(decrypt_outputs(&sk, &layout, &out).unwrap(), reference_product(&w, n_out, n_in, &r, &mu));
    eprintln!(
        "{n_out}x{n_in}: {} input ct ({} B S2->S1), {} output ct ({} B S1->S2)",
        layout.n_blocks,
        layout.bytes_s2_to_s1(&ctx),
        layout.n_groups,
        layout.bytes_s1_to_s2(&ctx)
    );
    let mut g = c.benchmark_group(format!("layer_{n_out}x{n_in}"));
    g.sample_size(20);
    g.bench_function("s2_encrypt_r", |b| b.iter(|| encrypt_vector(&sk, &layout, &r, &mut rng).unwrap()));
    g.bench_function("s1_product", |b| b.iter(|| linear_layer(&pk, &wts, &cts, &mu, &mut rng).unwrap()));
    g.bench_function("s2_decrypt", |b| b.iter(|| decrypt_outputs(&sk, &layout, &out).unwrap()));
    g.bench_function("s1_encode_weights_once", |b| b.iter(|| EncodedWeights::new(&ctx, &w, n_out, n_in).unwrap()));
    g.bench_function("wire_roundtrip", |b| {
        b.iter(|| {
            for ct in &cts {
                SeededCiphertext::from_bytes(&ctx, &ct.to_bytes(&ctx)).unwrap();
            }
            for (gi, ct) in out.iter().enumerate() {
                Ciphertext::from_bytes(&ctx, &ct.to_bytes(&ctx), layout.rows_in_group(gi)).unwrap();
            }
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    layer(c, 128, 784);
    layer(c, 128, 128);
    layer(c, 10, 128);
}

criterion_group!(lattice, benches);
criterion_main!(lattice);
