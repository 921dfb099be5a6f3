//! Cost of one private inference, in-process, per party and per step.
//!
//!     cargo run --release --example query_cost -- [DIMS] [KEY_BITS] [QUERIES]
//!
//! DIMS defaults to 784,128,128,10 (a ReLU MLP with random weights: the cost
//! does not depend on the weights' values), KEY_BITS to 2048, QUERIES to 3.
//! DIMS may instead be an ONNX file with its `.input-range` sidecar (e.g.
//! `models/mnist_vgg.onnx`): that model, on a random input in its range.
//! Prints the wall time of every role call and the median total, and the
//! process CPU time of all queries.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_core::OsRng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_core::PreprocessingEngine;
use tandem_core::{Client, ModelInfo};
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, OutputMode, QuantConfig, QuantizedModel};
use tandem_paillier::activation_server::open_session;
use tandem_paillier::{ActivationKeys, ModelServer, PreprocessingStep, SecretKey};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let onnx = args.get(1).filter(|s| s.ends_with(".onnx")).map(std::path::PathBuf::from);
    let dims: Vec<usize> = match &onnx {
        Some(_) => Vec::new(),
        None => args
            .get(1)
            .map(|s| s.split(',').map(|d| d.parse().expect("DIMS like 784,128,10")).collect())
            .unwrap_or_else(|| vec![784, 128, 128, 10]),
    };
    let bits: u32 = args.get(2).map(|s| s.parse().expect("KEY_BITS")).unwrap_or(2048);
    let queries: usize = args.get(3).map(|s| s.parse().expect("QUERIES")).unwrap_or(3);

    let t = Instant::now();
    let sk = SecretKey::generate(bits).expect("key size");
    println!("key generation ({bits} bits): {:?}", t.elapsed());
    let mut rng = StdRng::seed_from_u64(1);
    let m = match &onnx {
        Some(path) => {
            // The sidecar the servers read: range and input precision.
            let sidecar = tandem_onnx::read_input_sidecar(path).expect("readable sidecar");
            let opts = tandem_onnx::InputSidecar::fill(sidecar, Default::default());
            tandem_onnx::import_file(path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        }
        None => random_mlp(&mut rng, &dims, &[ActivationKind::Relu], 0.1, OutputMode::Label),
    };
    let q = Arc::new(QuantizedModel::new(&m, QuantConfig::default()).expect("fits the budget"));
    let rounds = q.layers.iter().filter(|l| matches!(l, tandem_model::QLayer::Activation { .. })).count();
    println!("model: {} input values, {rounds} hidden rounds", q.input_len());
    let x = random_input(&mut rng, &m);
    // The ring the bit budget chose (a deep CNN needs k = 256).
    match q.ring_bits {
        128 => run::<u128>(q, sk, x, queries),
        _ => run::<tandem_core::ring::U256>(q, sk, x, queries),
    }
}

fn run<R: tandem_core::Ring>(q: Arc<QuantizedModel>, sk: SecretKey, x: Vec<f64>, queries: usize) {
    let t = Instant::now();
    let pool = tandem_paillier::thread_pool(0);
    let keys = Arc::new(ActivationKeys::new(sk, pool.clone(), &mut OsRng));
    let pk = keys.public_key().clone();
    let s1 = ModelServer::<R>::new(q.clone(), pk.clone(), pool).unwrap();
    println!("server setup (noise tables): {:?}", t.elapsed());
    let info = ModelInfo::of("bench", &q);
    let client = Client::new(pk.to_pure(), tandem_core::SeedEpoch([0; 16]));
    let mut totals = Vec::new();
    for i in 0..queries {
        let mut steps: Vec<(String, Duration)> = Vec::new();
        let time = |name: String, steps: &mut Vec<(String, Duration)>, t: Instant| steps.push((name, t.elapsed()));
        let start = Instant::now();
        let t = Instant::now();
        let (pending, req) = client.prepare::<R, _>(&info, &x, OutputMode::Label, &mut OsRng).unwrap();
        time("C  prepare (quantize, PRG, encrypt seed)".into(), &mut steps, t);
        // Preprocessing: everything homomorphic, before the input is needed.
        let t = Instant::now();
        let (mut pre, ss) = s1.start_preprocessing(req.mode, &req.seed, &mut OsRng).unwrap();
        time("S1 start (rerandomize seed)".into(), &mut steps, t);
        let t = Instant::now();
        // (No replay log here: this measures the Paillier work only.)
        let tandem_core::SeedSource::Encrypted { enc_seed, epoch } = &ss.seed else { unreachable!("a one-shot query") };
        let seed = tandem_paillier::PaillierEngine.s2_decrypt_secret(&keys, enc_seed).unwrap().seed(epoch);
        let (mut sess, masks) = open_session::<R, _>(keys.clone(), &ss, seed, &mut OsRng);
        time(format!("S2 decrypt seed, encrypt {} r_i", q.input_len()), &mut steps, t);
        let t = Instant::now();
        let mut step = pre.on_input_masks(masks).unwrap();
        time("S1 layer 1: W·[D], blind, pack".into(), &mut steps, t);
        let mut layer = 1;
        let prepared = loop {
            match step {
                PreprocessingStep::Round(r) => {
                    let t = Instant::now();
                    let rho = sess.on_blinded_round(&r).unwrap();
                    time(
                        format!("S2 round {layer}: decrypt {} packed, encrypt {} rho", r.packed.len(), r.count),
                        &mut steps,
                        t,
                    );
                    let t = Instant::now();
                    step = pre.on_rho_masks(rho).unwrap();
                    layer += 1;
                    time(format!("S1 new [D] + layer {layer}: W·[D], blind, pack"), &mut steps, t);
                }
                PreprocessingStep::Output(o) => {
                    let t = Instant::now();
                    let (ready, session) = sess.on_blinded_output(&o).unwrap();
                    time(format!("S2 output round: decrypt {} packed", o.packed.len()), &mut steps, t);
                    break (pre.on_ready(ready).unwrap(), session);
                }
            }
        };
        // Online: ring arithmetic only.
        let t = Instant::now();
        let (prepared, session) = prepared;
        let online = tandem_core::online(prepared, session, req.masked_input).unwrap();
        time(format!("online phase, S1 + S2 ({} rounds)", online.to_s2.len()), &mut steps, t);
        let out = online.output;
        let t = Instant::now();
        let _ = out;
        let got = pending.finish(online.response).unwrap();
        time("C  open".into(), &mut steps, t);
        let total = start.elapsed();
        assert_eq!(got, q.reference(&q.quantize_input(&x).unwrap(), OutputMode::Label).unwrap());
        println!("query {i}: total {total:?} (result equals the integer reference)");
        for (name, d) in &steps {
            println!("    {d:>12.3?}  {name}");
        }
        totals.push(total);
    }
    totals.sort();
    println!("median of {queries}: {:?}", totals[queries / 2]);
    // Whole process (key generation and setup included), all threads.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        println!(
            "process CPU (user + system, all threads, setup included): {:.2} s",
            (ticks(11) + ticks(12)) as f64 / 100.0
        );
    }
}
