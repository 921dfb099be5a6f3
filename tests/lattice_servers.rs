//! The lattice engine (docs/PROTOCOL.md §4.2b, and §4.2c: every layer on
//! RLWE and OT for the k = 128 MLPs) through the real servers:
//! `--engine lattice` on both, production RLWE parameters, 1024-bit Paillier
//! test keys. Answers equal the integer reference; a `k = 256` model falls
//! back to Paillier with a logged reason; mismatched engines are refused
//! with a message that says what to do; S2's fresh RLWE key after a restart
//! is picked up without the caller noticing.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Duration;
use tandem_client::{ClientError, ClientOptions, TandemClient};
use tandem_model::testing::{random_cnn, random_input, random_mlp};
use tandem_model::{ActivationKind, Model, OutputMode, QuantConfig, QuantizedModel};
use tonic::Code;

fn models() -> Vec<(String, Model)> {
    use ActivationKind::{Relu, Sigmoid};
    let mut rng = StdRng::seed_from_u64(4242);
    let v = vec![
        ("mlp_relu", random_mlp(&mut rng, &[6, 8, 5], &[Relu], 1.0, OutputMode::Label)),
        ("mlp_sigmoid", random_mlp(&mut rng, &[5, 6, 4, 3], &[Sigmoid], 1.0, OutputMode::Probabilities)),
        ("mlp_deep_k256", random_mlp(&mut rng, &[4, 6, 6, 6, 6, 6, 6, 3], &[Relu], 1.0, OutputMode::Label)),
        ("cnn", random_cnn(&mut rng, Relu, 3, OutputMode::Label)),
    ];
    v.into_iter().map(|(id, m)| (id.to_string(), m)).collect()
}

fn reference(m: &Model, x: &[f64], mode: OutputMode) -> tandem_model::Output {
    let q = QuantizedModel::new(m, QuantConfig::default()).unwrap();
    q.reference(&q.quantize_input(x).unwrap(), mode).unwrap()
}

async fn client(url: &str, seed_sessions: bool) -> TandemClient {
    let mut o = ClientOptions::new(url);
    o.insecure = true;
    o.timeout = Duration::from_secs(60);
    o.seed_sessions = seed_sessions;
    TandemClient::connect(&o).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lattice_engine_through_the_servers() {
    let ms = models();
    let dir = tempfile::tempdir().unwrap();
    let models_dir = dir.path().join("models");
    std::fs::create_dir(&models_dir).unwrap();
    for (id, m) in &ms {
        tandem_model::format::save(m, &models_dir.join(format!("{id}.tandem"))).unwrap();
    }
    let key = dir.path().join("activation-key.json");
    let s2 = activation_server(dir.path(), &key, &["--engine", "lattice"], "127.0.0.1:0");
    let s2_addr = s2.addr.to_string();
    let s1 = model_server(dir.path(), &models_dir, &s2.url(), &["--engine", "lattice", "--allow-modes", "mlp_sigmoid=label,probabilities"]);
    let log = s1.log_text();
    assert!(log.contains("model=mlp_relu") && log.contains("runs on RLWE"), "{log}");
    // §4.2c: S1 made an OT setup with S2, and the k = 128 MLPs run every
    // layer on RLWE and OT.
    assert_eq!(log.matches("OT setup with the activation server (full lattice path)").count(), 1, "{log}");
    for id in ["mlp_relu", "mlp_sigmoid"] {
        assert!(
            log.lines().any(|l| l.contains(&format!("model={id}")) && l.contains("every layer runs on RLWE and OT")),
            "{id} should be on the full lattice path: {log}"
        );
    }
    assert!(s2.log_text().contains("OT setup made"), "{}", s2.log_text());
    assert!(log.contains("Paillier, because the model's ring is k = 256"), "{log}");

    for seed_sessions in [false, true] {
        let mut c = client(&s1.url(), seed_sessions).await;
        for (i, (id, m)) in ms.iter().enumerate() {
            let modes: &[OutputMode] =
                if id == "mlp_sigmoid" { &[OutputMode::Label, OutputMode::Probabilities] } else { &[OutputMode::Label] };
            for &mode in modes {
                let x = random_input(&mut StdRng::seed_from_u64(100 + i as u64), m);
                let r = c.infer(id, &x, Some(mode)).await.unwrap_or_else(|e| panic!("{id} {mode}: {e}"));
                assert_eq!(r.output, reference(m, &x, mode), "{id} {mode} (seed sessions: {seed_sessions})");
            }
        }
    }

    // A model server on the Paillier engine is served by a lattice S2.
    let s1p = model_server(dir.path(), &models_dir, &s2.url(), &["--engine", "paillier"]);
    let mut c = client(&s1p.url(), false).await;
    let (id, m) = &ms[0];
    let x = random_input(&mut StdRng::seed_from_u64(7), m);
    assert_eq!(c.infer(id, &x, None).await.unwrap().output, reference(m, &x, OutputMode::Label));
    drop(s1p);

    // S2 restarts: same Paillier key, a fresh RLWE key. S1's next session
    // names the old RLWE key, S2 refuses it, S1 fetches the keys again, and
    // the library retries: the caller sees answers.
    drop(s2);
    let s2 = activation_server(dir.path(), &key, &["--engine", "lattice"], &s2_addr);
    let mut c = client(&s1.url(), true).await;
    let mut ok = false;
    for _ in 0..20 {
        match c.infer(id, &x, None).await {
            Ok(r) => {
                assert_eq!(r.output, reference(m, &x, OutputMode::Label));
                ok = true;
                break;
            }
            // S1's channel to the new S2 may take a moment, and the one
            // query that found the stale key is refused before S1 refetched.
            Err(ClientError::Status(s)) if matches!(s.code(), Code::Unavailable | Code::FailedPrecondition) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("the restart should be hidden, got {e}"),
        }
    }
    assert!(ok, "no answer after the activation server came back");
    assert!(s1.log_text().contains("RLWE key changed"), "{}", s1.log_text());
    // The restarted S2 holds no OT setup: S1 made a new one with the new
    // keys, and the answer above came through the full lattice path.
    let log = s1.log_text();
    assert_eq!(log.matches("OT setup with the activation server (full lattice path)").count(), 2, "{log}");
    assert!(s2.log_text().contains("OT setup made"), "{}", s2.log_text());
    assert!(!s2.log_text().contains("panicked"), "{}", s2.log_text());
    drop(s1);

    // A lattice model server needs a lattice activation server: refused at
    // start with what to do.
    drop(s2);
    let s2 = activation_server(dir.path(), &key, &["--engine", "paillier"], "127.0.0.1:0");
    let out = std::process::Command::new(bin("model-server"))
        .args(["--listen", "127.0.0.1:0", "--models", models_dir.to_str().unwrap(), "--activation-server"])
        .arg(s2.url())
        .args(["--insecure", "--engine", "lattice"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--engine lattice needs an activation server on --engine lattice"), "{err}");
    assert!(!s2.log_text().contains("panicked"));
}
