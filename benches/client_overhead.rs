//! Client cost of one private query: tandem vs the pure-Paillier baseline
//! (GitHub issue 5, item 2).
//!
//!     cargo bench --bench client_overhead
//!
//! Models — the trained ONNX models shipped in models/ with real test rows
//! from data/ when `tandem-onnx` imports them, else random weights with the
//! same architectures (the cost does not depend on the weights' values; the
//! bench prints which it used):
//! - MNIST MLP 784-128-128-10, ReLU, `label` mode (the product default);
//! - Pima MLP 7-16-1, ReLU hidden, `sigmoid` output mode.
//!
//! 2048-bit Paillier keys. What is timed is the **client's CPU time**
//! (`CLOCK_THREAD_CPUTIME_ID` of a dedicated one-thread pool standing in for a
//! single-core client): tandem = `Client::prepare` + `PendingQuery::finish`
//! (one-shot: one encryption per query); tandem with a seed session =
//! `Client::prepare_in_session` + `finish` per query, and the session's
//! setup (`Client::open_session`: one encryption) timed apart and amortized
//! over 100 queries in the summary;
//! pure-HE = encrypt every feature + per hidden layer (decrypt n, activate,
//! re-encrypt n) + decrypt the logits and apply the head. The servers run
//! in-process between the client's steps, outside the timed sections (each
//! criterion iteration is one full, real query, and its result is asserted
//! equal to the integer reference). Criterion runs one warm-up query and one
//! query per sample (flat sampling), so its "Unable to complete N samples"
//! warning is expected.
//!
//! At the end a summary (markdown) prints, from the same run, the medians
//! of criterion's samples (the warm-up query is not counted),
//! bytes sent + received by the client, and the pure-HE / tandem ratios.

mod common;

use common::models::{load, model_for, Loaded};
use common::{fmt_d, on_client, pure_he, ratio, serve_tandem, tandem_request_bytes, tandem_response_bytes, Samples};
use criterion::{Criterion, SamplingMode};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::{ActivationServer, Client, ModelInfo};
use tandem_model::testing::random_input;
use tandem_model::{ActivationKind, Model, OutputMode, QuantizedModel};
use tandem_paillier::{ModelServer, PaillierEngine, Ring, SecretKey, U256};

static SAMPLES: Samples = Samples::new();
/// `(sent, received, round trips)` per `"{case}/{scheme}"`; asserted constant.
static BYTES: Mutex<BTreeMap<String, (usize, usize, usize)>> = Mutex::new(BTreeMap::new());

const KEY_BITS: u32 = 2048;
/// Queries a seed session's setup is spread over in the summary.
const AMORTIZE: usize = 100;

struct Case {
    id: &'static str,
    title: &'static str,
    dims: &'static [usize],
    mode: OutputMode,
    /// The trained model's metadata (model path, test rows, input range),
    /// relative to the workspace root.
    meta: &'static str,
    /// Criterion samples (one query each) per scheme.
    samples_tandem: usize,
    samples_pure_he: usize,
}

const CASES: &[Case] = &[
    Case {
        id: "mnist_784-128-128-10",
        title: "MNIST MLP 784-128-128-10 (ReLU, label)",
        dims: &[784, 128, 128, 10],
        mode: OutputMode::Label,
        meta: "data/mnist_mlp/meta.json",
        samples_tandem: 10,
        samples_pure_he: 10,
    },
    Case {
        id: "pima_7-16-1",
        title: "Pima MLP 7-16-1 (ReLU, sigmoid output)",
        dims: &[7, 16, 1],
        mode: OutputMode::Sigmoid,
        meta: "data/pima_mlp/meta.json",
        samples_tandem: 20,
        samples_pure_he: 20,
    },
];

fn record_bytes(key: String, v: (usize, usize, usize)) {
    let mut m = BYTES.lock().unwrap();
    let old = *m.entry(key.clone()).or_insert(v);
    assert_eq!(old, v, "{key}: bytes per query changed between queries");
}

/// Startup check: the baseline (and tandem) equal the integer reference on
/// small random models covering ReLU/sigmoid/tanh and every output mode
/// (1024-bit test key), then on the Pima model at 2048 bits in all its modes.
/// Panics on any mismatch. (Every benchmarked query is checked too.)
fn check_baseline(sk2048: &SecretKey, pima: &Loaded) {
    let t = Instant::now();
    let mut checked = 0;
    let mut run = |sk: &SecretKey, m: &Model, q: &QuantizedModel, inputs: &[Vec<f64>]| {
        let he_server = pure_he::Server::new(q, sk.public().clone());
        let he_client = pure_he::Client::new(sk);
        let mut h = tandem::Harness::new(m, sk).expect("harness");
        for x in inputs {
            for mode in q.modes() {
                let want = h.reference(x, mode);
                let (got, _) = pure_he::run_query(&he_client, &he_server, q, x, mode);
                assert_eq!(got, want, "pure-HE baseline != integer reference ({}, {mode})", m.name);
                let got = h.infer(x, mode).expect("tandem query");
                assert_eq!(got, want, "tandem != integer reference ({}, {mode})", m.name);
                checked += 1;
            }
        }
    };
    let small: &[(&[usize], &[ActivationKind], f32)] = &[
        (&[6, 5, 4, 3], &[ActivationKind::Sigmoid, ActivationKind::Tanh], 1.0),
        (&[5, 6, 4, 3], &[ActivationKind::Relu, ActivationKind::Tanh], 1.0),
        (&[4, 5, 1], &[ActivationKind::Relu], 1.0),
        (&[3, 4, 1], &[ActivationKind::Tanh], 2.0),
    ];
    for (i, (dims, acts, scale)) in small.iter().enumerate() {
        let (m, q) = model_for(dims, acts, *scale, OutputMode::Label, 10 + i as u64);
        let mut rng = StdRng::seed_from_u64(100 + i as u64);
        let inputs: Vec<_> = (0..3).map(|_| random_input(&mut rng, &m)).collect();
        run(tandem::test_key_1024(), &m, &q, &inputs);
    }
    let mut rng = StdRng::seed_from_u64(99);
    let inputs: Vec<_> = (0..2).map(|_| pima.input(&mut rng)).collect();
    run(sk2048, &pima.m, &pima.q, &inputs);
    println!(
        "startup check: pure-HE baseline and tandem equal the integer reference on {checked} (model, input, mode) \
         cases [{}]",
        fmt_d(t.elapsed())
    );
}

fn bench_case<R: Ring>(c: &mut Criterion, sk: &SecretKey, case: &Case, l: &Loaded, seed: u64) {
    let q = &l.q;
    assert_eq!(q.ring_bits, R::BITS);
    let pk = sk.public().clone();
    let mut roles_rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    let keys = tandem::paillier_keys(sk, &mut roles_rng);
    let mut s2 = ActivationServer::new(Arc::new(PaillierEngine), keys, &mut roles_rng);
    let s1 = ModelServer::<R>::new(q.clone(), pk.clone(), tandem::test_pool()).expect("S1");
    let info = ModelInfo::of(case.id, q);
    let masking = info.masking().expect("the model's own mask");
    let client = Client::new(pk.to_pure(), s2.seed_epoch());
    let he_server = pure_he::Server::new(q, pk.clone());
    let he_client = pure_he::Client::new(sk);
    let mut rng = StdRng::seed_from_u64(seed);
    let mode = case.mode;
    let reference = |x: &[f64]| q.reference(&q.quantize_input(x).unwrap(), mode).unwrap();

    let mut g = c.benchmark_group(format!("client_overhead/{}", case.id));
    g.sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));

    let key = format!("{}/tandem", case.id);
    g.sample_size(case.samples_tandem);
    g.bench_function("tandem", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let x = l.input(&mut rng);
                let ((pending, req), prep) =
                    on_client(|| client.prepare::<R, _>(&info, &x, mode, &mut rand_core::OsRng).expect("prepare"));
                let sent = tandem_request_bytes(&req, &masking, pk.ciphertext_bytes());
                let t = Instant::now();
                let resp = serve_tandem(&s1, &mut s2, req, &mut roles_rng);
                let server = t.elapsed();
                let received = tandem_response_bytes(&resp);
                let (out, fin) = on_client(|| pending.finish(resp).expect("finish"));
                assert_eq!(out, reference(&x), "tandem != integer reference");
                record_bytes(key.clone(), (sent, received, 1));
                SAMPLES.record(&format!("{key}/prepare"), prep.cpu);
                SAMPLES.record(&format!("{key}/finish"), fin.cpu);
                SAMPLES.record(&format!("{key}/cpu"), prep.cpu + fin.cpu);
                SAMPLES.record(&format!("{key}/wall"), prep.wall + fin.wall);
                SAMPLES.record(&format!("{key}/server_wall"), server);
                total += prep.cpu + fin.cpu;
            }
            total
        })
    });

    // Seed sessions: the setup alone (one encryption per session; S1's
    // relay and S2's opening run untimed), then queries in one session.
    let key = format!("{}/session_setup", case.id);
    let mut session = None;
    g.sample_size(case.samples_tandem);
    g.bench_function("session_setup", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let ((pending, open), prep) =
                    on_client(|| client.open_session(&mut rand_core::OsRng).expect("open a seed session"));
                let relayed = tandem_core::seed_session::relay_open_session(client.public_key(), &open, &mut roles_rng)
                    .expect("relay");
                let opened = s2.open_session_in_process(&relayed, Duration::ZERO).expect("S2 opens the session");
                // enc_secret and the epoch; the id, max_queries, lifetime back.
                record_bytes(key.clone(), (open.enc_secret.0.len() + 16, 16 + 8 + 4, 1));
                SAMPLES.record(&format!("{key}/cpu"), prep.cpu);
                SAMPLES.record(&format!("{key}/wall"), prep.wall);
                session = Some(pending.opened(&opened));
                total += prep.cpu;
            }
            total
        })
    });
    let mut session = session.expect("criterion ran the setup at least once");

    let key = format!("{}/tandem_session", case.id);
    g.sample_size(case.samples_tandem);
    g.bench_function("tandem_session", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let x = l.input(&mut rng);
                let ((pending, req), prep) = on_client(|| {
                    client
                        .prepare_in_session::<R>(&mut session, &info, &x, mode)
                        .expect("prepare")
                        .expect("the session has queries left")
                });
                let sent = tandem_request_bytes(&req, &masking, pk.ciphertext_bytes());
                let t = Instant::now();
                let resp = serve_tandem(&s1, &mut s2, req, &mut roles_rng);
                let server = t.elapsed();
                let received = tandem_response_bytes(&resp);
                let (out, fin) = on_client(|| pending.finish(resp).expect("finish"));
                assert_eq!(out, reference(&x), "tandem (seed session) != integer reference");
                record_bytes(key.clone(), (sent, received, 1));
                SAMPLES.record(&format!("{key}/prepare"), prep.cpu);
                SAMPLES.record(&format!("{key}/finish"), fin.cpu);
                SAMPLES.record(&format!("{key}/cpu"), prep.cpu + fin.cpu);
                SAMPLES.record(&format!("{key}/wall"), prep.wall + fin.wall);
                SAMPLES.record(&format!("{key}/server_wall"), server);
                total += prep.cpu + fin.cpu;
            }
            total
        })
    });

    let key = format!("{}/pure_he", case.id);
    g.sample_size(case.samples_pure_he);
    g.bench_function("pure_he", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let x = l.input(&mut rng);
                let (out, st) = pure_he::run_query(&he_client, &he_server, q, &x, mode);
                assert_eq!(out, reference(&x), "pure-HE baseline != integer reference");
                let ct = pk.ciphertext_bytes();
                record_bytes(key.clone(), (st.ciphertexts_sent * ct, st.ciphertexts_received * ct, st.rounds));
                SAMPLES.record(&format!("{key}/encrypt_input"), st.encrypt_input.cpu);
                SAMPLES.record(&format!("{key}/hidden"), st.hidden.cpu);
                SAMPLES.record(&format!("{key}/output"), st.output.cpu);
                SAMPLES.record(&format!("{key}/cpu"), st.client().cpu);
                SAMPLES.record(&format!("{key}/wall"), st.client().wall);
                SAMPLES.record(&format!("{key}/server_wall"), st.server_wall);
                total += st.client().cpu;
            }
            total
        })
    });
    g.finish();
}

fn summary(loaded: &[Loaded]) {
    let bytes = BYTES.lock().unwrap().clone();
    println!("\n## Client cost per query: tandem vs pure-HE ({KEY_BITS}-bit Paillier)\n");
    for (case, l) in CASES.iter().zip(loaded) {
        println!("- {}: {}; ring k = {}", case.title, l.source, l.q.ring_bits);
    }
    println!();
    println!("Medians over criterion's samples of this run (one query each; the warm-up query is not counted);");
    println!("client CPU = CPU time of the client's one thread. Bytes: ring values k/8, ciphertexts");
    println!(
        "2|N|/8 = {} B, sealed payload + 16-B tag, aux, tandem's 16-B session id; no model id, mode",
        2 * KEY_BITS / 8
    );
    println!("or framing.\n");
    println!(
        "| model | scheme | queries | client CPU | client wall | sent (B) | received (B) | total (B) | round trips |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for case in CASES {
        let mut row = Vec::new();
        for scheme in ["tandem", "pure_he"] {
            let n = if scheme == "pure_he" { case.samples_pure_he } else { case.samples_tandem };
            let med = |k: &str| SAMPLES.median_last(k, n);
            let k = format!("{}/{scheme}", case.id);
            let (Some((cpu, n)), Some((wall, _)), Some(&(s, r, rt))) =
                (med(&format!("{k}/cpu")), med(&format!("{k}/wall")), bytes.get(&k))
            else {
                continue;
            };
            println!(
                "| {} | {} | {n} | {} | {} | {s} | {r} | {} | {rt} |",
                case.title,
                if scheme == "tandem" { "tandem" } else { "pure-HE" },
                fmt_d(cpu),
                fmt_d(wall),
                s + r
            );
            row.push((cpu, s + r));
        }
        if let [(t_cpu, t_b), (h_cpu, h_b)] = row[..] {
            println!(
                "| {} | **pure-HE / tandem** | | **×{:.0}** | | | | **×{:.1}** | |",
                case.title,
                ratio(h_cpu, t_cpu),
                h_b as f64 / t_b as f64
            );
            ratios.push((case.title, ratio(h_cpu, t_cpu), h_b as f64 / t_b as f64));
        }
    }
    println!("\n### With seed sessions (PROTOCOL §4.1a)\n");
    println!("Setup = opening one session (the client's one encryption); per query = a query in an open");
    println!("session; amortized = per query + setup / {AMORTIZE}. Bytes of the setup: enc_secret + epoch sent,");
    println!("id + max_queries + lifetime received.\n");
    println!("| model | client CPU: setup | per query | amortized over {AMORTIZE} | sent / query (B) | received / query (B) | pure-HE / amortized: CPU | pure-HE / amortized: bytes sent | pure-HE / amortized: bytes total |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case in CASES {
        let n = case.samples_tandem;
        let med = |k: &str| SAMPLES.median_last(&format!("{}/{k}", case.id), n).map(|(d, _)| d);
        let (Some(setup), Some(per), Some(he)) =
            (med("session_setup/cpu"), med("tandem_session/cpu"), SAMPLES.median_last(&format!("{}/pure_he/cpu", case.id), case.samples_pure_he).map(|(d, _)| d))
        else {
            continue;
        };
        let (Some(&(ss, sr, _)), Some(&(qs, qr, _)), Some(&(hs, hr, _))) = (
            bytes.get(&format!("{}/session_setup", case.id)),
            bytes.get(&format!("{}/tandem_session", case.id)),
            bytes.get(&format!("{}/pure_he", case.id)),
        ) else {
            continue;
        };
        let amortized = per + setup / AMORTIZE as u32;
        let sent = qs as f64 + ss as f64 / AMORTIZE as f64;
        let total = sent + qr as f64 + sr as f64 / AMORTIZE as f64;
        println!(
            "| {} | {} | {} | {} | {qs} (+{ss} per session) | {qr} (+{sr} per session) | **×{:.0}** | **×{:.0}** | **×{:.1}** |",
            case.title,
            fmt_d(setup),
            fmt_d(per),
            fmt_d(amortized),
            ratio(he, amortized),
            hs as f64 / sent,
            (hs + hr) as f64 / total,
        );
        println!(
            "RATIO {} with seed sessions: client time pure-HE/tandem = {:.0}x (per query alone {:.0}x), client bytes sent pure-HE/tandem = {:.0}x",
            case.title,
            ratio(he, amortized),
            ratio(he, per),
            hs as f64 / sent
        );
    }
    println!("\nBreakdown (medians, client CPU unless marked wall):\n");
    println!("| model | tandem prepare | tandem finish | servers (wall, untimed) | pure-HE encrypt input | pure-HE hidden layers | pure-HE output | pure-HE server (wall, untimed) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for case in CASES {
        let g = |s: &str| {
            let n = if s.starts_with("tandem") { case.samples_tandem } else { case.samples_pure_he };
            SAMPLES.median_last(&format!("{}/{s}", case.id), n).map(|(d, _)| fmt_d(d)).unwrap_or_else(|| "—".into())
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            case.title,
            g("tandem/prepare"),
            g("tandem/finish"),
            g("tandem/server_wall"),
            g("pure_he/encrypt_input"),
            g("pure_he/hidden"),
            g("pure_he/output"),
            g("pure_he/server_wall")
        );
    }
    println!();
    for (title, t, b) in ratios {
        println!("RATIO {title}: client time pure-HE/tandem = {t:.0}x, client bytes pure-HE/tandem = {b:.1}x");
    }
}

fn main() {
    let t = Instant::now();
    let sk = SecretKey::generate(KEY_BITS).expect("key size");
    println!("key generation ({KEY_BITS} bits): {}", fmt_d(t.elapsed()));
    let loaded: Vec<Loaded> =
        CASES.iter().enumerate().map(|(i, case)| load(case.meta, case.dims, case.mode, 1 + i as u64)).collect();
    for (case, l) in CASES.iter().zip(&loaded) {
        println!("{}: {}; ring k = {}", case.id, l.source, l.q.ring_bits);
    }
    check_baseline(&sk, &loaded[1]);
    let mut c = Criterion::default().nresamples(10_000).configure_from_args();
    for (i, (case, l)) in CASES.iter().zip(&loaded).enumerate() {
        let seed = 1000 + i as u64;
        match l.q.ring_bits {
            128 => bench_case::<u128>(&mut c, &sk, case, l, seed),
            _ => bench_case::<U256>(&mut c, &sk, case, l, seed),
        }
    }
    c.final_summary();
    summary(&loaded);
}
