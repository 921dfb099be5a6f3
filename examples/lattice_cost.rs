//! Cost of one private inference on the lattice engine's full path
//! (PROTOCOL §4.2c: every layer on RLWE and OT), in-process, per step and
//! per party, at the production RLWE parameters.
//!
//!     cargo run --release --example lattice_cost -- [DIMS|MODEL.onnx] [QUERIES]
//!
//! DIMS defaults to 784,128,128,10 (a ReLU MLP with random weights: the
//! cost does not depend on the weights' values); an ONNX file is read with
//! its `.input-range` sidecar. QUERIES defaults to 5. Prints, per
//! preprocessing message, the median wall time of the party that computes
//! it and the bytes it carries; then the median online time and the
//! process CPU time per query. Each role call runs on this thread and on
//! S2's pool of 2 threads (the servers' default on a 2-core machine).

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem::{os_seed, paillier_keys, Harness};
use tandem_core::engine::{PreprocessingEngine, S1Step, S2Step};
use tandem_lattice_engine::tandem_lattice::{Ciphertext, Params, SeededCiphertext};
use tandem_lattice_engine::{LatticeEngine, LatticeReply, LatticeStep};
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, OutputMode, QuantConfig};
use tandem_paillier::SecretKey;

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut rng = StdRng::seed_from_u64(1);
    let m = match args.get(1) {
        Some(p) if p.ends_with(".onnx") => {
            let path = std::path::Path::new(p);
            let sidecar = tandem_onnx::read_input_sidecar(path).expect("readable sidecar");
            let opts = tandem_onnx::InputSidecar::fill(sidecar, Default::default());
            tandem_onnx::import_file(path, &opts).unwrap_or_else(|e| panic!("{p}: {e}"))
        }
        other => {
            let dims: Vec<usize> = other
                .map(|s| s.split(',').map(|d| d.parse().expect("DIMS like 784,128,10")).collect())
                .unwrap_or_else(|| vec![784, 128, 128, 10]);
            random_mlp(&mut rng, &dims, &[ActivationKind::Relu], 0.1, OutputMode::Label)
        }
    };
    let queries: usize = args.get(2).map(|s| s.parse().expect("QUERIES")).unwrap_or(5);

    let sk = SecretKey::generate(2048).expect("key size");
    let engine = Arc::new(LatticeEngine::production());
    let ctx = engine.context().clone();
    assert!(Params::production() == *ctx.params());
    let mut krng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(os_seed());
    let keys = engine.keys(paillier_keys(&sk, &mut krng), &mut krng);
    let t = Instant::now();
    let mut h = Harness::with_engine(engine.clone(), keys, &m, QuantConfig::default(), None, os_seed()).expect("harness");
    println!("S1 model set-up (incl. the in-process OT setup): {:?}", t.elapsed());
    let s1 = h.s1_128.clone().expect("a k = 128 model");
    if let Err(why) = s1.all_layers_on_lattice() {
        panic!("this model does not run every layer on the lattice: {why}");
    }
    // Per linear layer: the flooding bound (SECURITY.md) and the bytes.
    for l in &h.model.layers {
        if let tandem_model::QLayer::Linear(l) = l {
            let lay = tandem_lattice_engine::tandem_lattice::Layout::new(&ctx, l.in_dim, l.out_dim).expect("a layout");
            println!(
                "layer {}×{}: {} input and {} output ciphertexts, flooding distance 2^{:.1}, worst-case noise 2^{:.2}",
                l.out_dim,
                l.in_dim,
                lay.n_blocks,
                lay.n_groups,
                lay.flooding_distance_log2(&ctx),
                lay.total_noise_bound_log2(&ctx)
            );
        }
    }
    let mode = OutputMode::Label;
    let mut steps: Vec<(String, Vec<f64>, usize)> = Vec::new();
    let mut online = Vec::new();
    let mut cpu = Vec::new();
    let record = |i: usize, name: String, ms: f64, bytes: usize, steps: &mut Vec<(String, Vec<f64>, usize)>| {
        if steps.len() <= i {
            steps.push((name, Vec::new(), bytes));
        }
        steps[i].1.push(ms);
    };
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..queries {
        let x = random_input(&mut rng, &m);
        let want = h.reference(&x, mode);
        let c0 = cpu_time();
        let tandem_core::InProcess { s2, client, info, rng: hrng, .. } = &mut h.0;
        let (pending, req) = client.prepare::<u128, _>(info, &x, mode, hrng).expect("prepare");
        let mut i = 0;
        let t = Instant::now();
        let (mut prep, start) = engine.s1_start(&s1, mode, &req.seed, hrng).expect("s1 start");
        record(i, "S1 start (rerandomize [secret], draw blinding, OT extension)".into(), ms(t), 0, &mut steps);
        i += 1;
        let t = Instant::now();
        let (mut pre, mut reply) = s2.start_session::<u128>(&start, Duration::ZERO).expect("s2 start");
        let b = reply_bytes(&ctx, &reply);
        record(i, "S2 start (decrypt [secret], r, Enc(r))".into(), ms(t), b, &mut steps);
        i += 1;
        let (prepared, session) = loop {
            let t = Instant::now();
            let step = engine.s1_step(&mut prep, reply).expect("s1 step");
            let msg = match step {
                S1Step::Send(msg) => msg,
                S1Step::Ready(p) => {
                    record(i, "S1 ready".into(), ms(t), 0, &mut steps);
                    break (p, None);
                }
            };
            let b = step_bytes(&ctx, &msg);
            record(i, format!("S1 {}", step_name(&msg)), ms(t), b, &mut steps);
            i += 1;
            let t = Instant::now();
            match engine.s2_step(&mut pre, msg).expect("s2 step") {
                S2Step::Send(r) => {
                    record(i, format!("S2 {}", reply_name(&r)), ms(t), reply_bytes(&ctx, &r), &mut steps);
                    reply = r;
                }
                S2Step::Ready(r, session) => {
                    record(i, "S2 open X, store".into(), ms(t), 0, &mut steps);
                    let t = Instant::now();
                    let S1Step::Ready(p) = engine.s1_step(&mut prep, r).expect("s1 ready") else { panic!("ready") };
                    i += 1;
                    record(i, "S1 ready".into(), ms(t), 0, &mut steps);
                    break (p, Some(session));
                }
            }
            i += 1;
        };
        let mut session = *session.expect("S2's half");
        let t = Instant::now();
        let (mut q, mut step) = prepared.start(req.masked_input.clone()).expect("online start");
        let result = loop {
            match step {
                tandem_core::OnlineStep::Round(r) => {
                    let v = session.activate(&r).expect("activate");
                    step = q.on_values(v).expect("values");
                }
                tandem_core::OnlineStep::Output(o) => {
                    let out = session.finish(&o).expect("output");
                    break q.on_output(out).expect("response");
                }
            }
        };
        online.push(ms(t));
        let got = pending.finish(result).expect("the client opens the result");
        cpu.push((cpu_time() - c0).as_secs_f64() * 1e3);
        assert_eq!(got, want, "private result equals the reference");
    }
    println!("\n{queries} queries, every result equal to the integer reference\n");
    println!("| step | median ms | bytes |");
    println!("|---|---:|---:|");
    let mut total = 0.0;
    let (mut up, mut down) = (0usize, 0usize);
    for (name, v, b) in &mut steps {
        let med = median(v);
        total += med;
        if name.starts_with("S1") {
            down += *b;
        } else {
            up += *b;
        }
        println!("| {name} | {med:.2} | {b} |");
    }
    println!("| online (ring arithmetic, both servers) | {:.2} | |", median(&mut online));
    println!("\npreprocessing, sum of step medians: {total:.1} ms; S1→S2 {down} B, S2→S1 {up} B per query");
    println!("process CPU per query (both servers and the client, median): {:.1} ms", median(&mut cpu));
}

fn step_name(m: &LatticeStep) -> String {
    match m {
        LatticeStep::Full(s) => match (&s.ole, s.products.is_empty(), &s.next) {
            (Some(_), _, n) => format!("OT extension + products → {n:?}"),
            (None, true, _) => "output X".into(),
            (None, false, n) => format!("X + products → {n:?}"),
        },
        other => format!("{other:?}"),
    }
}

fn reply_name(r: &LatticeReply) -> String {
    match r {
        LatticeReply::Full(f) if f.inputs.is_empty() => format!("decrypt, {} OT batches", f.corrections.len()),
        LatticeReply::Full(f) => format!("decrypt, {} OT batches, Enc(β)", f.corrections.len()),
        other => format!("{other:?}"),
    }
}

fn step_bytes(ctx: &tandem_lattice_engine::tandem_lattice::Context, m: &LatticeStep) -> usize {
    match m {
        LatticeStep::Full(s) => {
            s.ole.as_ref().map_or(0, |r| r.to_bytes().len())
                + 16 * s.x.len()
                + s.products.iter().map(|c| Ciphertext::byte_len(ctx, c.rows())).sum::<usize>()
        }
        _ => 0,
    }
}

fn reply_bytes(ctx: &tandem_lattice_engine::tandem_lattice::Context, r: &LatticeReply) -> usize {
    match r {
        LatticeReply::Inputs(c) => c.len() * SeededCiphertext::byte_len(ctx),
        LatticeReply::Full(f) => {
            f.corrections.iter().map(|c| 16 * c.0.len()).sum::<usize>() + f.inputs.len() * SeededCiphertext::byte_len(ctx)
        }
        _ => 0,
    }
}
