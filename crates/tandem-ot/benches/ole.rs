//! Medians for the base-OT setup, the IKNP extension + Gilboa multiplication
//! on each side, and the 128×128 transposition.
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tandem_ot::*;

const BITS: u32 = 32;

fn keys() -> (OtReceiverKey, OtSenderKey) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (p, req) = s1_setup_request(&mut rng);
    let (sk, reply) = s2_setup(&req, &mut rng).unwrap();
    (s1_setup_finish(p, &reply).unwrap(), sk)
}

fn setup(c: &mut Criterion) {
    let mut g = c.benchmark_group("base_ot");
    g.sample_size(20);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    g.bench_function("s1_setup_request", |b| b.iter(|| s1_setup_request(&mut rng)));
    let (_, req) = s1_setup_request(&mut rng);
    g.bench_function("s2_setup", |b| b.iter(|| s2_setup(black_box(&req), &mut rng).unwrap()));
    g.bench_function("s1_setup_finish", |b| {
        b.iter_batched(
            || {
                let (p, req) = s1_setup_request(&mut rng);
                let (_, reply) = s2_setup(&req, &mut rng).unwrap();
                (p, reply)
            },
            |(p, reply)| s1_setup_finish(p, &reply).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn ole(c: &mut Criterion) {
    let (rk, sk) = keys();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let sid = [5u8; 16];
    let mut g = c.benchmark_group("ole");
    g.sample_size(20);
    for m in [16_384usize, 65_536] {
        let n = m / BITS as usize;
        let scalars: Vec<u128> = (0..n).map(|_| u128::from(rng.gen::<u32>())).collect();
        let values: Vec<u128> = (0..n).map(|_| rng.gen()).collect();
        let batches = vec![ScalarBatch { bits: BITS, scalars }];
        let (_, req) = receiver_extend(&rk, &sid, &batches).unwrap();
        let mut tx = sender_extend(&sk, &sid, &req).unwrap();
        let (_, corr) = tx.respond(BITS, &values).unwrap();

        g.bench_with_input(BenchmarkId::new("s1_receiver_extend+receive", m), &m, |b, _| {
            b.iter(|| {
                let (mut rx, req) = receiver_extend(&rk, &sid, &batches).unwrap();
                let x = rx.receive(&corr).unwrap();
                (req, x)
            })
        });
        g.bench_with_input(BenchmarkId::new("s2_sender_extend+respond", m), &m, |b, _| {
            b.iter(|| {
                let mut tx = sender_extend(&sk, &sid, black_box(&req)).unwrap();
                tx.respond(BITS, &values).unwrap()
            })
        });
    }
    g.finish();
}

fn transpose(c: &mut Criterion) {
    let mut m = [0u128; 128];
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    for w in m.iter_mut() {
        *w = rng.gen();
    }
    c.bench_function("transpose_128x128", |b| {
        b.iter(|| {
            tandem_ot::transpose::transpose_128x128(black_box(&mut m));
        })
    });
}

criterion_group!(benches, setup, ole, transpose);
criterion_main!(benches);
