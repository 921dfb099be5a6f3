//! A whole query replayed from fixed seeds, message for message (issue 13).
//!
//! The core is sans-IO and draws every random choice from the CSPRNG its
//! caller passes, so one query run from a fixed key, model, input and RNG
//! seed produces the same bytes on every machine: the client's `[secret]`
//! and masked input, S1's session start, every preprocessing and online
//! message of both servers, and the sealed answer. Each message is
//! compared, in its gRPC wire encoding, with the SHA-256 recorded in
//! `tests/fixtures/transcript-paillier-1024.txt`. A change to any role's
//! arithmetic, message layout or randomness schedule shows up as the first
//! line that differs.
//!
//! To re-record after a deliberate change:
//! `TANDEM_RECORD_TRANSCRIPT=1 cargo test --test transcript`.

use prost::Message;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use tandem::Harness;
use tandem_core::{InputMasking, Transcript};
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, Output, OutputMode, QuantConfig};
use tandem_paillier::bigint_traits::Converter;
use tandem_paillier::{BigInt, PaillierEngine, PreprocessingReply, SecretKey};

/// A fixed 1024-bit test key (two 512-bit primes, test use only).
const P: &str = "f9ac6efb23fb3775ee4d08f6255706f162cdcd4df449f8ddbc95ce7bd5b7b90eab1cfe8f0e076406707d5567ead25106db68e4673a63febe0ca3b71bc7c22b39";
const Q: &str = "cbce8c2269e219f0e52e3fa6e80dcf04cb547b89f192546730a59888588871257c60711b8099aad27679dd3615c94870d3f5c535d18dc0a9fa93e94569017f75";
const RECORDED: &str = "tests/fixtures/transcript-paillier-1024.txt";

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// One line per message: its place in the query and the SHA-256 of its
/// gRPC encoding.
fn lines(sk: &SecretKey, masking: &InputMasking, t: &Transcript<PaillierEngine, u128>, out: &Output) -> Vec<String> {
    let pk = sk.public();
    let mut v = vec![format!(
        "client->S1 InferRequest {}",
        sha(&tandem_grpc::query_request_to_proto(&t.query, masking).unwrap().encode_to_vec())
    )];
    let p = &t.preprocessing;
    let start = tandem_grpc::session_start_to_proto(&pk.fingerprint(), &p.session_start);
    v.push(format!("S1->S2 SessionStart {}", sha(&start.encode_to_vec())));
    for (i, m) in p.to_s1.iter().enumerate() {
        let b = match m {
            PreprocessingReply::InputMasks(m) => tandem_grpc::input_masks_to_proto(pk, m).encode_to_vec(),
            PreprocessingReply::Rho(m) => tandem_grpc::rho_masks_to_proto(pk, m).encode_to_vec(),
            PreprocessingReply::Ready(_) => b"ready".to_vec(),
        };
        v.push(format!("S2->S1 preprocessing[{i}] {}", sha(&b)));
        if let Some(m) = p.to_s2.get(i) {
            let b = tandem_grpc::preprocessing_step_to_proto(pk, m).encode_to_vec();
            v.push(format!("S1->S2 preprocessing[{i}] {}", sha(&b)));
        }
    }
    let o = &t.online;
    for (i, m) in o.to_s2.iter().enumerate() {
        v.push(format!("S1->S2 online[{i}] {}", sha(&tandem_grpc::online_step_to_proto(m).encode_to_vec())));
        if let Some(h) = o.from_s2.get(i) {
            let b = tandem_grpc::activation_values_to_proto(h).encode_to_vec();
            v.push(format!("S2->S1 online[{i}] {}", sha(&b)));
        }
    }
    v.push(format!("S2->S1 OutputResponse {}", sha(&o.output.sealed)));
    let resp = tandem_grpc::query_response_to_proto(&o.response, None).encode_to_vec();
    v.push(format!("S1->client InferResponse {}", sha(&resp)));
    v.push(format!("client result {out:?}"));
    v
}

fn run_once() -> Vec<String> {
    let sk = SecretKey::from_primes(BigInt::from_hex(P).unwrap(), BigInt::from_hex(Q).unwrap()).unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    let model =
        random_mlp(&mut rng, &[6, 5, 4, 3], &[ActivationKind::Relu, ActivationKind::Sigmoid], 1.0, OutputMode::Label);
    let x = random_input(&mut rng, &model);
    let mut h = Harness::seeded(&model, &sk, QuantConfig::default(), None, [42; 32]).unwrap();
    let (out, t) = {
        let tandem_core::InProcess { info, s2, client, s1_128, rng, .. } = &mut h.0;
        tandem_core::run_query(client, info, s1_128.as_ref().unwrap(), s2, &x, OutputMode::Label, rng).unwrap()
    };
    assert_eq!(out, h.reference(&x, OutputMode::Label), "the replayed query is exact");
    lines(&sk, &h.0.info.masking().unwrap(), &t, &out)
}

#[test]
fn a_query_replays_message_for_message_from_fixed_seeds() {
    let a = run_once();
    // Same seeds, same process: identical, whatever the thread pool did.
    assert_eq!(a, run_once(), "two runs from the same seeds differ");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORDED);
    if std::env::var_os("TANDEM_RECORD_TRANSCRIPT").is_some() {
        std::fs::write(&path, a.join("\n") + "\n").unwrap();
        return;
    }
    let recorded = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; record it with TANDEM_RECORD_TRANSCRIPT=1 cargo test --test transcript", path.display())
    });
    let recorded: Vec<&str> = recorded.lines().collect();
    assert_eq!(a.len(), recorded.len(), "the query has another number of messages than the recorded one");
    for (got, want) in a.iter().zip(&recorded) {
        assert_eq!(got, want, "first message that differs from the recorded transcript");
    }
}
