//! Cost of one private inference, in-process, per party and per step.
//!
//!     cargo run --release --example query_cost -- [DIMS] [KEY_BITS] [QUERIES]
//!
//! DIMS defaults to 784,128,128,10 (a ReLU MLP with random weights: the cost
//! does not depend on the weights' values), KEY_BITS to 2048, QUERIES to 3.
//! Prints the wall time of every role call and the median total.

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_crypto::{NoiseSource, SecretKey};
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, OutputMode, QuantConfig, QuantizedModel};
use tandem_protocol::{ActivationServer, Client, ModelInfo, ModelServer, ToActivation};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dims: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|d| d.parse().expect("DIMS like 784,128,10")).collect())
        .unwrap_or_else(|| vec![784, 128, 128, 10]);
    let bits: u32 = args.get(2).map(|s| s.parse().expect("KEY_BITS")).unwrap_or(2048);
    let queries: usize = args.get(3).map(|s| s.parse().expect("QUERIES")).unwrap_or(3);

    let t = Instant::now();
    let sk = SecretKey::generate(bits).expect("key size");
    println!("key generation ({bits} bits): {:?}", t.elapsed());
    let mut rng = StdRng::seed_from_u64(1);
    let m = random_mlp(&mut rng, &dims, &[ActivationKind::Relu], 0.1, OutputMode::Label);
    let q = Arc::new(QuantizedModel::new(&m, QuantConfig::default()).expect("fits the budget"));
    assert_eq!(q.ring_bits, 128);
    let t = Instant::now();
    let mut s2 = ActivationServer::new(sk);
    let pk = s2.public_key().clone();
    let s1 = ModelServer::<u128>::new(q.clone(), pk.clone(), Arc::new(NoiseSource::new(&pk))).unwrap();
    println!("server setup (noise tables): {:?}", t.elapsed());
    let info = ModelInfo::of("bench", &q);
    let client = Client::new(pk);
    let x = random_input(&mut rng, &m);
    let mut totals = Vec::new();
    for i in 0..queries {
        let mut steps: Vec<(String, Duration)> = Vec::new();
        let mut time = |name: String, steps: &mut Vec<(String, Duration)>, t: Instant| steps.push((name, t.elapsed()));
        let start = Instant::now();
        let t = Instant::now();
        let (pending, req) = client.prepare::<u128>(&info, &x, OutputMode::Label).unwrap();
        time("C  prepare (quantize, PRG, encrypt seed)".into(), &mut steps, t);
        let t = Instant::now();
        let (mut mq, ss) = s1.start_query(req).unwrap();
        time("S1 start (rerandomize seed)".into(), &mut steps, t);
        let t = Instant::now();
        let (mut sess, masks) = s2.start_session::<u128>(&ss).unwrap();
        time(format!("S2 decrypt seed, encrypt {} r_i", dims[0]), &mut steps, t);
        let t = Instant::now();
        let mut step = mq.on_input_masks(masks).unwrap();
        time("S1 layer 1: W·y, W·[D], blind, pack".into(), &mut steps, t);
        let mut layer = 1;
        let out = loop {
            match step {
                ToActivation::Activate(r) => {
                    let t = Instant::now();
                    let resp = sess.activate(&r).unwrap();
                    time(
                        format!("S2 activation {layer}: decrypt {} packed, encrypt {} rho", r.packed.len(), r.e.len()),
                        &mut steps,
                        t,
                    );
                    let t = Instant::now();
                    step = mq.on_activation(resp).unwrap();
                    layer += 1;
                    time(format!("S1 unblind + layer {layer}"), &mut steps, t);
                }
                ToActivation::Finish(r) => {
                    let t = Instant::now();
                    let o = sess.finish(&r).unwrap();
                    time("S2 output + seal".into(), &mut steps, t);
                    break o;
                }
            }
        };
        let t = Instant::now();
        let resp = mq.on_output(out).unwrap();
        let got = pending.finish(resp).unwrap();
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
}
