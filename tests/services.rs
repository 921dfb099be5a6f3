//! The gRPC services end to end: the real `activation-server`,
//! `model-server`, `tandem-client` and `tandem` binaries on free loopback
//! ports, driven with the thin client library (and raw gRPC for requests the
//! library would never send). 1024-bit keys keep it fast.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tandem_client::{ClientError, ClientOptions, TandemClient};
use tandem_core::paillier_pk::PublicKey;
use tandem_core::SeedSecret;
use tandem_grpc::v1 as pb;
use tandem_grpc::v1::activation_service_client::ActivationServiceClient;
use tandem_grpc::v1::model_service_client::ModelServiceClient;
use tandem_model::testing::{random_cnn, random_input, random_mlp};
use tandem_model::{ActivationKind, Model, OutputMode, QuantConfig, QuantizedModel};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

fn models() -> Vec<(String, Model)> {
    use ActivationKind::{Relu, Sigmoid, Tanh};
    use OutputMode::{Label, Probabilities};
    let mut rng = StdRng::seed_from_u64(2024);
    let mut v = vec![
        ("mlp_relu", random_mlp(&mut rng, &[6, 8, 5], &[Relu], 1.0, Label)),
        ("mlp_sigmoid", random_mlp(&mut rng, &[5, 6, 4, 3], &[Sigmoid], 1.0, Probabilities)),
        ("mlp_tanh", random_mlp(&mut rng, &[4, 7, 2], &[Tanh], 1.0, Label)),
        ("mlp_mixed_binary", random_mlp(&mut rng, &[5, 6, 6, 1], &[Relu, Tanh], 1.0, OutputMode::Sigmoid)),
        ("mlp_deep_k256", random_mlp(&mut rng, &[4, 6, 6, 6, 6, 6, 6, 3], &[Relu], 1.0, Label)),
        ("cnn", random_cnn(&mut rng, Relu, 3, Label)),
    ];
    v.iter_mut().for_each(|(_, m)| m.name = "test model".into());
    v.into_iter().map(|(id, m)| (id.to_string(), m)).collect()
}

/// A medium model whose queries take long enough to interrupt.
fn slow_model() -> Model {
    let mut rng = StdRng::seed_from_u64(7);
    random_mlp(&mut rng, &[32, 128, 128, 4], &[ActivationKind::Relu], 1.0, OutputMode::Label)
}

/// `--allow-modes` values that let clients use every mode of each model,
/// the model file's own default first (so the served default is the file's).
fn allow_every_mode(models: &[(String, Model)]) -> Vec<String> {
    let mut args = Vec::new();
    for (id, m) in models {
        let mut modes = vec![m.default_mode];
        modes.extend(OutputMode::available(m.output_len().unwrap()).into_iter().filter(|x| *x != m.default_mode));
        let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
        args.push("--allow-modes".to_string());
        args.push(format!("{id}={}", names.join(",")));
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

struct Env {
    dir: tempfile::TempDir,
    key: PathBuf,
    models_dir: PathBuf,
}

fn env(models: &[(String, Model)]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let models_dir = dir.path().join("models");
    std::fs::create_dir(&models_dir).unwrap();
    for (id, m) in models {
        tandem_model::format::save(m, &models_dir.join(format!("{id}.tandem"))).unwrap();
    }
    // Not a model: ignored by the loader.
    std::fs::write(models_dir.join("README.txt"), "not a model").unwrap();
    let key = dir.path().join("activation-key.json");
    Env { dir, key, models_dir }
}

fn fingerprint(s2: &Proc) -> String {
    s2.banner
        .iter()
        .find_map(|l| l.strip_prefix("activation key fingerprint: "))
        .expect("the activation server prints its fingerprint")
        .trim()
        .to_string()
}

async fn client(url: &str, pin: Option<&str>) -> TandemClient {
    client_with(url, pin, true).await
}

/// `seed_sessions` off: every query sends its own encrypted seed.
async fn client_with(url: &str, pin: Option<&str>, seed_sessions: bool) -> TandemClient {
    let mut o = ClientOptions::new(url);
    o.insecure = true;
    o.pinned_fingerprint = pin.map(str::to_string);
    o.timeout = Duration::from_secs(60);
    o.seed_sessions = seed_sessions;
    TandemClient::connect(&o).await.expect("connect")
}

fn reference(m: &Model, x: &[f64], mode: OutputMode) -> tandem_model::Output {
    let q = QuantizedModel::new(m, QuantConfig::default()).unwrap();
    q.reference(&q.quantize_input(x).unwrap(), mode).unwrap()
}

fn status(e: ClientError) -> tonic::Status {
    match e {
        ClientError::Status(s) => s,
        other => panic!("expected a gRPC status, got {other}"),
    }
}

fn assert_status(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    let s = r.expect_err("the call should fail");
    assert_eq!(s.code(), code, "wrong code for {:?}", s.message());
    assert!(s.message().contains(needle), "message {:?} should mention {needle:?}", s.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_and_mode_matches_the_integer_reference() {
    let ms = models();
    let e = env(&ms);
    let s2 = activation_server(e.dir.path(), &e.key, &[], "127.0.0.1:0");
    // The owner allows every mode of every model (by default only label is served).
    let allow = allow_every_mode(&ms);
    let s1 = model_server(e.dir.path(), &e.models_dir, &s2.url(), &[&["--strict"][..], &strs(&allow)].concat());
    let fp = fingerprint(&s2);
    let mut c = client(&s1.url(), Some(&fp)).await;

    let listed: Vec<String> = c.list_models().await.unwrap().into_iter().map(|m| m.info.id).collect();
    let mut ids: Vec<String> = ms.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(listed, ids);

    let mut rng = StdRng::seed_from_u64(99);
    let mut rings = Vec::new();
    for (id, m) in &ms {
        let q = QuantizedModel::new(m, QuantConfig::default()).unwrap();
        let remote = c.model(id).await.unwrap();
        assert_eq!(remote.info.ring_bits, q.ring_bits, "{id}");
        assert_eq!(remote.info.default_mode, m.default_mode, "{id}");
        let mut offered = remote.info.modes.clone();
        offered.sort_by_key(|m| m.name());
        let mut all = q.modes();
        all.sort_by_key(|m| m.name());
        assert_eq!(offered, all, "{id}: every mode allowed");
        assert_eq!(remote.fingerprint, fp);
        assert!(remote.pinned);
        rings.push(q.ring_bits);
        for mode in q.modes() {
            let x = random_input(&mut rng, m);
            let got = c.infer_with(&remote, &x, Some(mode)).await.unwrap_or_else(|e| panic!("{id} {mode}: {e}"));
            assert_eq!(got.output, reference(m, &x, mode), "{id} in {mode} mode");
            assert_eq!(got.mode, mode);
            assert!(got.cost.bytes_sent > 0 && got.cost.bytes_received > 0);
            let stats = got.cost.server.expect("server stats");
            assert!(stats.rounds >= 2 && stats.s1_to_s2_bytes > 0 && stats.s2_to_s1_bytes > 0);
        }
        // The default mode, as the library picks it.
        let x = random_input(&mut rng, m);
        let got = c.infer(id, &x, None).await.unwrap();
        assert_eq!(got.output, reference(m, &x, m.default_mode), "{id} default mode");
    }
    assert!(rings.contains(&128) && rings.contains(&256), "rings {rings:?}");

    // Concurrent queries on one connection.
    let (id, m) = &ms[0];
    let remote = c.model(id).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut c = c.clone();
        let remote = remote.clone();
        let x = random_input(&mut StdRng::seed_from_u64(1000 + i), m);
        tasks.push(tokio::spawn(async move { (c.infer_with(&remote, &x, Some(OutputMode::Logits)).await, x) }));
    }
    for t in tasks {
        let (r, x) = t.await.unwrap();
        assert_eq!(r.unwrap().output, reference(m, &x, OutputMode::Logits));
    }
}

/// A well-formed request for `model`, built with the protocol's own client.
fn valid_request(remote: &tandem_client::RemoteModel, x: &[f64], mode: OutputMode) -> pb::InferRequest {
    let pk = &remote.key;
    let (_, q) = tandem_core::Client::new(pk.clone(), remote.epoch)
        .prepare::<u128, _>(&remote.info, x, mode, &mut rand_core::OsRng)
        .unwrap();
    tandem_grpc::query_request_to_proto(&q, &remote.info.masking().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses() {
    let ms: Vec<(String, Model)> =
        models().into_iter().filter(|(id, _)| id == "mlp_relu" || id == "mlp_mixed_binary").collect();
    let e = env(&ms);
    // A model that fails the bit budget is skipped, with the reason logged.
    let mut wide = ms[0].1.clone();
    wide.input_range = (-1e60, 1e60);
    tandem_model::format::save(&wide, &e.models_dir.join("too_wide.tandem")).unwrap();
    let s2 = activation_server(e.dir.path(), &e.key, &[], "127.0.0.1:0");
    let s1 = model_server(
        e.dir.path(),
        &e.models_dir,
        &s2.url(),
        &["--max-request-bytes", "65536", "--allow-modes", "mlp_relu=label,probabilities"],
    );
    assert!(s1.log_text().contains("does not fit the bit budget"), "{}", s1.log_text());
    let fp = fingerprint(&s2);
    let mut c = client(&s1.url(), Some(&fp)).await;
    let m = &ms.iter().find(|(id, _)| id == "mlp_relu").unwrap().1;
    let remote = c.model("mlp_relu").await.unwrap();
    let x = random_input(&mut StdRng::seed_from_u64(5), m);
    let mut raw = ModelServiceClient::connect(s1.url()).await.unwrap();

    // Unknown model.
    assert_status(
        c.model("nope").await.map_err(status),
        Code::NotFound,
        "unknown model \"nope\"; this server serves: mlp_mixed_binary, mlp_relu",
    );
    let mut req = valid_request(&remote, &x, OutputMode::Label);
    req.model_id = "nope".into();
    assert_status(raw.infer(req).await, Code::NotFound, "unknown model");

    // Output modes: GetModelInfo lists exactly what the owner allows (label
    // only when nothing is configured, whatever the model file's own default).
    use pb::OutputMode as P;
    let info = |id: &str| {
        let mut raw = raw.clone();
        let id = id.to_string();
        async move { raw.get_model_info(pb::GetModelInfoRequest { model_id: id }).await.unwrap().into_inner() }
    };
    let relu = info("mlp_relu").await;
    assert_eq!((relu.modes, relu.default_mode), (vec![P::Label as i32, P::Probabilities as i32], P::Label as i32));
    let binary = info("mlp_mixed_binary").await;
    assert_eq!((binary.modes, binary.default_mode), (vec![P::Label as i32], P::Label as i32));
    assert_eq!(remote.info.modes, [OutputMode::Label, OutputMode::Probabilities]);
    // A mode the model could compute but its owner does not allow:
    // PERMISSION_DENIED naming the allowed ones (the library refuses first).
    let err = c.infer_with(&remote, &x, Some(OutputMode::Logits)).await.unwrap_err();
    assert!(
        err.to_string().contains("output mode logits is not available for this model; available: label, probabilities"),
        "{err}"
    );
    let mut unrestricted = remote.clone();
    unrestricted.info.modes = OutputMode::available(unrestricted.info.output_len);
    let mut req = valid_request(&unrestricted, &x, OutputMode::Logits);
    assert_status(
        raw.infer(req.clone()).await,
        Code::PermissionDenied,
        "output mode logits is not allowed on model \"mlp_relu\" by its owner; allowed: label, probabilities",
    );
    let t = pb::CreateTicketRequest {
        model_id: "mlp_relu".into(),
        mode: P::Logits as i32,
        enc_seed: req.enc_seed.clone(),
        seed_epoch: req.seed_epoch.clone(),
        ..Default::default()
    };
    assert_status(raw.create_ticket(t).await, Code::PermissionDenied, "allowed: label, probabilities");
    // A mode the model cannot compute at all.
    let err = c.infer_with(&remote, &x, Some(OutputMode::Sigmoid)).await.unwrap_err();
    assert!(err.to_string().contains("output mode sigmoid is not available for this model"), "{err}");
    req.mode = pb::OutputMode::Sigmoid as i32;
    assert_status(
        raw.infer(req.clone()).await,
        Code::InvalidArgument,
        "output mode sigmoid is not available for model \"mlp_relu\" (5 outputs); allowed: label, probabilities",
    );
    req.mode = 42;
    assert_status(raw.infer(req).await, Code::InvalidArgument, "unknown output mode 42");

    // Wrong input length.
    let err = c.infer_with(&remote, &x[..5], None).await.unwrap_err();
    assert!(err.to_string().contains("input has 5 values; this model takes exactly 6"), "{err}");
    // The compact masked input (§4.1): [-1, 1] at f_in = 16 is B = 2^16
    // (b = 17), so m = 17 + 1 + 40 = 58 and the six 59-bit values are
    // packed into ⌈354/8⌉ = 45 bytes, the last one's top 6 bits padding.
    assert_eq!((remote.info.input_offset, remote.info.input_mask_bits), (1 << 16, 58));
    let mut req = valid_request(&remote, &x, OutputMode::Label);
    assert_eq!(req.masked_input.len(), 45);
    req.masked_input.truncate(44);
    assert_status(
        raw.infer(req).await,
        Code::InvalidArgument,
        "masked_input has 44 bytes; expected 45 bytes: 6 values of 59 bits packed (each is x_int + B + r < 2^59 \
         with B = 65536 and m = 58, least significant bit first",
    );
    // Full-ring values (k/8 bytes) are no longer what this model takes.
    let mut req = valid_request(&remote, &x, OutputMode::Label);
    req.masked_input.resize(6 * 16, 0);
    assert_status(raw.infer(req).await, Code::InvalidArgument, "masked_input has 96 bytes; expected 45 bytes");
    // A set padding bit: a hostile or broken client's, refused before any
    // work (the encoding has one string per input, so nothing else can hide
    // there).
    let mut req = valid_request(&remote, &x, OutputMode::Label);
    req.masked_input[44] |= 0x80;
    assert_status(
        raw.infer(req).await,
        Code::InvalidArgument,
        "masked_input: the 6 padding bits after the last value are not zero",
    );

    // Values outside the declared range (only the client can see them).
    let mut bad = x.clone();
    bad[2] = 7.5;
    let err = c.infer_with(&remote, &bad, None).await.unwrap_err();
    assert!(err.to_string().contains("input value 2 is 7.5, outside the model's declared range [-1, 1]"), "{err}");
    bad[2] = f64::NAN;
    assert!(c.infer_with(&remote, &bad, None).await.is_err());

    // Malformed ciphertexts.
    let mut req = valid_request(&remote, &x, OutputMode::Label);
    req.enc_seed = vec![0xff; req.enc_seed.len()];
    assert_status(raw.infer(req.clone()).await, Code::InvalidArgument, "malformed ciphertext: value is not in (0, N²)");
    req.enc_seed = vec![1; 10];
    assert_status(
        raw.infer(req.clone()).await,
        Code::InvalidArgument,
        "one ciphertext under the activation server's key is exactly 256",
    );
    // A valid ciphertext of something that is not a 32-byte secret is NOT
    // refused: a refusal that depended on the plaintext was a decryption
    // oracle (SECURITY.md). The query runs and its answer opens for nobody.
    let mut big = vec![0u8; 38];
    big[0] = 0x10; // 2^300, big-endian
    req.enc_seed = remote.key.encrypt(&big, &mut rand_core::OsRng).unwrap();
    raw.infer(req.clone()).await.expect("no refusal that depends on the decrypted plaintext");
    // Seed epochs: malformed, or one the activation server does not hold.
    let mut req = valid_request(&remote, &x, OutputMode::Label);
    req.seed_epoch = vec![1; 3];
    assert_status(
        raw.infer(req.clone()).await,
        Code::InvalidArgument,
        "seed_epoch has 3 bytes; a seed epoch is exactly 16",
    );
    req.seed_epoch = vec![1; 16];
    assert_status(raw.infer(req).await, Code::FailedPrecondition, "fetch the model info again");

    // Oversize request (the server was started with a 64 KiB limit).
    let mut req = valid_request(&remote, &x, OutputMode::Label);
    req.masked_input = vec![0; 100_000];
    assert_status(raw.infer(req).await, Code::OutOfRange, "the limit is: 65536 bytes");

    // Replayed request: S2 refuses the seed the second time.
    let req = valid_request(&remote, &x, OutputMode::Label);
    raw.infer(req.clone()).await.expect("first use of the seed");
    assert_status(raw.infer(req).await, Code::AlreadyExists, "this seed was already used");

    // A client pinned to another key refuses to encrypt.
    let mut pinned = client(&s1.url(), Some(&"ab".repeat(32))).await;
    match pinned.infer("mlp_relu", &x, None).await {
        Err(ClientError::KeyMismatch { got, .. }) => assert_eq!(got, fp),
        other => panic!("expected a key mismatch, got {other:?}"),
    }
    // Plaintext only when asked for.
    let mut o = ClientOptions::new(s1.url());
    o.insecure = false;
    assert!(TandemClient::connect(&o).await.err().unwrap().to_string().contains("pass --insecure"));

    // The servers still work after all that.
    let ok = c.infer_with(&remote, &x, None).await.unwrap();
    assert_eq!(ok.output, reference(m, &x, m.default_mode));
    let log = s1.log_text() + &s2.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

async fn s2_client(url: String) -> ActivationServiceClient<tonic::transport::Channel> {
    ActivationServiceClient::connect(url).await.unwrap()
}

struct RawSession {
    tx: mpsc::Sender<pb::PreprocessMsg>,
    rx: tonic::Streaming<pb::PreprocessReply>,
}

async fn open_raw(
    s2: &mut ActivationServiceClient<tonic::transport::Channel>,
    start: pb::SessionStart,
) -> Result<RawSession, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::PreprocessMsg { msg: Some(pb::preprocess_msg::Msg::Start(start)) }).await.unwrap();
    let rx = s2.preprocess(ReceiverStream::new(rx)).await?.into_inner();
    Ok(RawSession { tx, rx })
}

fn start_msg(pk: &PublicKey, epoch: &[u8], d: u32) -> pb::SessionStart {
    pb::SessionStart {
        session_id: vec![7; 16],
        enc_seed: pk.encrypt(SeedSecret::random(&mut rand_core::OsRng).plaintext_be(), &mut rand_core::OsRng).unwrap(),
        input_len: d,
        ring_bits: 128,
        key_fingerprint: pk.fingerprint(),
        seed_epoch: epoch.to_vec(),
        input_mask_bits: 60,
        ..Default::default()
    }
}

async fn active_sessions(s2: &mut ActivationServiceClient<tonic::transport::Channel>) -> u32 {
    s2.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().active_sessions
}

async fn wait_sessions(s2: &mut ActivationServiceClient<tonic::transport::Channel>, want: u32, within: Duration) {
    let t = Instant::now();
    loop {
        let n = active_sessions(s2).await;
        if n == want {
            return;
        }
        assert!(t.elapsed() < within, "{n} active sessions after {within:?}; expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_server_sessions_are_bounded_and_cleaned_up() {
    let e = env(&[]);
    let s2p =
        activation_server(e.dir.path(), &e.key, &["--max-sessions", "2", "--session-timeout-secs", "4"], "127.0.0.1:0");
    let mut s2 = s2_client(s2p.url()).await;
    let key = s2.get_public_key(pb::GetPublicKeyRequest {}).await.unwrap().into_inner();
    let pk = tandem_grpc::public_key_from_proto(&key).unwrap();
    let epoch = key.seed_epoch.clone();
    assert_eq!(epoch.len(), 16);
    assert_eq!(pk.fingerprint(), fingerprint(&s2p));

    // Protocol violations.
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::PreprocessMsg { msg: Some(pb::preprocess_msg::Msg::Output(pb::BlindedOutput::default())) })
        .await
        .unwrap();
    let mut st = s2.preprocess(ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert_status(st.message().await, Code::InvalidArgument, "the first message of a session must be SessionStart");
    // Evaluate: it must name a preprocessed session, and only one that exists.
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::EvaluateMsg { msg: Some(pb::evaluate_msg::Msg::Round(pb::MaskedRound::default())) }).await.unwrap();
    let mut st = s2.evaluate(ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert_status(st.message().await, Code::InvalidArgument, "the first message of an evaluation must be Resume");
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::EvaluateMsg { msg: Some(pb::evaluate_msg::Msg::Resume(pb::Resume { session_id: vec![9; 16] })) })
        .await
        .unwrap();
    let mut st = s2.evaluate(ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert_status(st.message().await, Code::NotFound, "no preprocessed session 0909090909090909");
    let mut wrong = start_msg(&pk, &epoch, 3);
    wrong.key_fingerprint = "00".repeat(32);
    let mut s = open_raw(&mut s2, wrong).await.unwrap();
    assert_status(s.rx.message().await, Code::FailedPrecondition, "this activation server's key is");
    let mut bad = start_msg(&pk, &epoch, 3);
    bad.enc_seed[0] ^= 0xff;
    bad.enc_seed = vec![0xff; bad.enc_seed.len()];
    let mut s = open_raw(&mut s2, bad).await.unwrap();
    assert_status(s.rx.message().await, Code::InvalidArgument, "malformed ciphertext");
    let mut k = start_msg(&pk, &epoch, 3);
    k.ring_bits = 64;
    let mut s = open_raw(&mut s2, k).await.unwrap();
    assert_status(s.rx.message().await, Code::InvalidArgument, "ring_bits = 64; accepted 128 or 256");
    // S2 derives r_i in [0, 2^m): m = 0 would mask nothing, m > k is no
    // ring value; both refused before the seed is decrypted.
    for m in [0, 129] {
        let mut w = start_msg(&pk, &epoch, 3);
        w.input_mask_bits = m;
        let mut s = open_raw(&mut s2, w).await.unwrap();
        assert_status(
            s.rx.message().await,
            Code::InvalidArgument,
            &format!("input_mask_bits is {m}; accepted 1..=128 (k of the session's ring)"),
        );
    }
    let mut big = start_msg(&pk, &epoch, 3);
    big.input_len = 5_000_000;
    let mut s = open_raw(&mut s2, big).await.unwrap();
    assert_status(s.rx.message().await, Code::InvalidArgument, "input length is 5000000; accepted 1..=");

    // Replay at S2.
    let start = start_msg(&pk, &epoch, 3);
    let mut a = open_raw(&mut s2, start.clone()).await.unwrap();
    assert!(matches!(a.rx.message().await.unwrap().unwrap().msg, Some(pb::preprocess_reply::Msg::Masks(_))));
    let mut again = open_raw(&mut s2, start).await.unwrap();
    assert_status(again.rx.message().await, Code::AlreadyExists, "replay refused");

    // A stream that stops mid-session frees its state.
    wait_sessions(&mut s2, 1, Duration::from_secs(5)).await;
    drop(a);
    wait_sessions(&mut s2, 0, Duration::from_secs(5)).await;

    // At most 2 sessions; idle ones time out.
    let mut a = open_raw(&mut s2, start_msg(&pk, &epoch, 3)).await.unwrap();
    let mut b = open_raw(&mut s2, start_msg(&pk, &epoch, 3)).await.unwrap();
    a.rx.message().await.unwrap().unwrap();
    b.rx.message().await.unwrap().unwrap();
    assert_status(
        open_raw(&mut s2, start_msg(&pk, &epoch, 3)).await.map(|_| ()),
        Code::ResourceExhausted,
        "limit of 2 concurrent sessions",
    );
    assert_status(a.rx.message().await, Code::DeadlineExceeded, "4 s session timeout");
    assert_status(b.rx.message().await, Code::DeadlineExceeded, "session timeout");
    wait_sessions(&mut s2, 0, Duration::from_secs(5)).await;
    let ok = open_raw(&mut s2, start_msg(&pk, &epoch, 3)).await.unwrap();
    drop((ok, a.tx, b.tx));
    assert!(!s2p.log_text().contains("panicked"));
}

fn signal(p: &Proc, sig: i32) {
    // SAFETY: signals a child this test started, by its pid.
    unsafe {
        libc::kill(p.child.id() as i32, sig);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_server_outages_become_statuses() {
    let model = slow_model();
    let e = env(&[("slow".to_string(), model.clone())]);
    let mut s2p = activation_server(e.dir.path(), &e.key, &[], "127.0.0.1:0");
    let s2_addr = s2p.addr.to_string();
    let s1 = model_server(e.dir.path(), &e.models_dir, &s2p.url(), &["--activation-timeout-secs", "2"]);
    // One-shot seeds, so that the restart below meets a seed of the old
    // epoch (a seed session's restart is `seed_sessions_through_the_servers`).
    let mut c = client_with(&s1.url(), None, false).await;
    let remote = c.model("slow").await.unwrap();
    let x = random_input(&mut StdRng::seed_from_u64(3), &model);
    let t = Instant::now();
    let ok = c.infer_with(&remote, &x, None).await.unwrap();
    assert_eq!(ok.output, reference(&model, &x, OutputMode::Label));
    eprintln!("slow model query: {:?}", t.elapsed());
    let mut s2 = s2_client(s2p.url()).await;

    // Frozen mid-query: the model server's deadline fires, and once S2 runs
    // again it drops the abandoned session.
    let mut interrupted = false;
    for _ in 0..5 {
        let mut cc = c.clone();
        let (r, xx) = (remote.clone(), x.clone());
        let q = tokio::spawn(async move { cc.infer_with(&r, &xx, None).await });
        wait_sessions(&mut s2, 1, Duration::from_secs(10)).await;
        signal(&s2p, libc::SIGSTOP);
        let r = q.await.unwrap();
        signal(&s2p, libc::SIGCONT);
        match r {
            Ok(_) => continue, // finished before the freeze; try again
            Err(e) => {
                let s = status(e);
                assert_eq!(s.code(), Code::DeadlineExceeded, "{}", s.message());
                assert!(s.message().contains("within 2 s"), "{}", s.message());
                interrupted = true;
                break;
            }
        }
    }
    assert!(interrupted, "could not interrupt a query");
    wait_sessions(&mut s2, 0, Duration::from_secs(10)).await;

    // Killed mid-query.
    let mut interrupted = false;
    for _ in 0..5 {
        let mut cc = c.clone();
        let (r, xx) = (remote.clone(), x.clone());
        let q = tokio::spawn(async move { cc.infer_with(&r, &xx, None).await });
        wait_sessions(&mut s2, 1, Duration::from_secs(10)).await;
        signal(&s2p, libc::SIGSTOP);
        if q.is_finished() {
            signal(&s2p, libc::SIGCONT);
            let _ = q.await;
            continue;
        }
        s2p.kill();
        let s = status(q.await.unwrap().unwrap_err());
        assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
        assert!(s.message().contains("unavailable or was restarted mid-query"), "{}", s.message());
        interrupted = true;
        break;
    }
    assert!(interrupted, "could not interrupt a query");

    // Down: every query fails fast with UNAVAILABLE.
    let s = status(c.infer_with(&remote, &x, None).await.unwrap_err());
    assert_eq!(s.code(), Code::Unavailable, "{}", s.message());

    // Back with the same key on the same port, in a new seed epoch: a seed
    // derived under the old epoch is refused before S2 decrypts it (so no
    // seed recorded before the restart can ever be served again), and the
    // library's `infer` refetches the model info and retries by itself.
    let s2p = activation_server(e.dir.path(), &e.key, &[], &s2_addr);
    let mut stale = None;
    for _ in 0..20 {
        match c.infer_with(&remote, &x, None).await {
            Err(ClientError::Status(s)) if s.code() == Code::FailedPrecondition => {
                stale = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(_) => panic!("a seed of the epoch before the restart must be refused"),
        }
    }
    assert!(stale.expect("the old epoch is refused").message().contains("seed epoch"));
    let mut ok = false;
    for _ in 0..20 {
        match c.infer("slow", &x, None).await {
            Ok(r) => {
                assert_eq!(r.output, reference(&model, &x, OutputMode::Label));
                ok = true;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(ok, "no successful query after the activation server came back");
    drop(s2p);

    // Back with a new key: the query under the old key is refused, the model
    // server picks up the new key, and a client that refetches succeeds.
    let new_key = e.dir.path().join("new-key.json");
    let s2p = activation_server(e.dir.path(), &new_key, &[], &s2_addr);
    let new_fp = fingerprint(&s2p);
    assert_ne!(new_fp, remote.fingerprint);
    let mut refused = None;
    for _ in 0..20 {
        match c.infer_with(&remote, &x, None).await {
            Err(e) => {
                let s = status(e);
                if s.code() == Code::FailedPrecondition {
                    refused = Some(s);
                    break;
                }
            }
            Ok(_) => panic!("a seed encrypted to the old key must not work"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused.expect("key change detected").message().contains("key or seed epoch changed"));
    let mut fresh = None;
    for _ in 0..50 {
        let m = c.model("slow").await.unwrap();
        if m.fingerprint == new_fp {
            fresh = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = fresh.expect("the model server refetched the key");
    let r = c.infer_with(&fresh, &x, None).await.unwrap();
    assert_eq!(r.output, reference(&model, &x, OutputMode::Label));
    // A client pinned to the old key refuses the new one.
    let mut pinned = client(&s1.url(), Some(&remote.fingerprint)).await;
    assert!(matches!(pinned.infer("slow", &x, None).await, Err(ClientError::KeyMismatch { .. })));
    assert!(!s1.log_text().contains("panicked"));
}

/// Seed sessions over gRPC (PROTOCOL §4.1a): one opening serves many exact
/// queries, none of which carries a ciphertext; S2 refuses a served counter,
/// an unknown session and a request with two seeds, each with its status;
/// and after S2 restarts the library opens a new session by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_sessions_through_the_servers() {
    let ms: Vec<(String, Model)> = models().into_iter().filter(|(id, _)| id == "mlp_relu").collect();
    let m = &ms[0].1;
    let e = env(&ms);
    let s2p = activation_server(e.dir.path(), &e.key, &[], "127.0.0.1:0");
    let s2_addr = s2p.addr.to_string();
    let s1 = model_server(e.dir.path(), &e.models_dir, &s2p.url(), &[]);
    let fp = fingerprint(&s2p);
    let mut c = client(&s1.url(), Some(&fp)).await;
    let mut s2 = s2_client(s2p.url()).await;
    let mut sent = Vec::new();
    for i in 0..4 {
        let x = random_input(&mut StdRng::seed_from_u64(40 + i), m);
        let r = c.infer("mlp_relu", &x, None).await.unwrap();
        assert_eq!(r.output, reference(m, &x, OutputMode::Label));
        sent.push(r.cost.bytes_sent);
    }
    let status = s2.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.seed_sessions, 1, "one opening for four queries");
    // The opening query also paid for the session; the others carry no
    // ciphertext (a 1024-bit one is 256 bytes).
    assert!(sent[1..].iter().all(|&b| b + 256 <= sent[0]), "bytes sent per query: {sent:?}");

    // Raw requests: the same counter twice, an unknown session, two seeds.
    let remote = c.model("mlp_relu").await.unwrap();
    let mut raw = ModelServiceClient::connect(s1.url()).await.unwrap();
    let client = tandem_core::Client::new(remote.key.clone(), remote.epoch);
    let (pending, open) = client.open_session(&mut rand_core::OsRng).unwrap();
    let opened = raw.open_seed_session(tandem_grpc::open_seed_session_to_proto(&open)).await.unwrap().into_inner();
    let mut session = pending.opened(&tandem_grpc::seed_session_from_proto(&opened).unwrap());
    let x = random_input(&mut StdRng::seed_from_u64(50), m);
    let (_, q) = client.prepare_in_session::<u128>(&mut session, &remote.info, &x, OutputMode::Label).unwrap().unwrap();
    let req = tandem_grpc::query_request_to_proto(&q, &remote.info.masking().unwrap()).unwrap();
    raw.infer(req.clone()).await.unwrap();
    assert_status(raw.infer(req.clone()).await, Code::AlreadyExists, "already used");
    let mut unknown = req.clone();
    unknown.seed_session_id = vec![9; 16];
    assert_status(raw.infer(unknown).await, Code::FailedPrecondition, "unknown seed session");
    let mut both = req.clone();
    both.enc_seed = valid_request(&remote, &x, OutputMode::Label).enc_seed;
    assert_status(raw.infer(both).await, Code::InvalidArgument, "not both");
    let bad_open = pb::OpenSeedSessionRequest { enc_secret: vec![1; 10], seed_epoch: remote.epoch.0.to_vec() };
    assert_status(raw.open_seed_session(bad_open).await, Code::InvalidArgument, "enc_secret has 10 bytes");

    // S2 restarts (same key, new epoch, no sessions): the library's `infer`
    // drops its session, refetches the model info, opens a new session and
    // retries, so the caller sees only answers.
    drop(s2p);
    let s2p = activation_server(e.dir.path(), &e.key, &[], &s2_addr);
    let mut s2 = s2_client(s2p.url()).await;
    let mut ok = false;
    for _ in 0..20 {
        match c.infer("mlp_relu", &x, None).await {
            Ok(r) => {
                assert_eq!(r.output, reference(m, &x, OutputMode::Label));
                ok = true;
                break;
            }
            // S1's channel to the new S2 may take a moment.
            Err(ClientError::Status(s)) if s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("the library should hide the restart, got {e}"),
        }
    }
    assert!(ok, "no answer after the activation server came back");
    let status = s2.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.seed_sessions, 1, "the new server holds the new session");
    assert!(!s1.log_text().contains("panicked"));
}

fn run_bin(name: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin(name)).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mutual_tls_and_the_client_binary() {
    let ms: Vec<(String, Model)> = models().into_iter().filter(|(id, _)| id == "mlp_sigmoid").collect();
    let m = ms[0].1.clone();
    let e = env(&ms);
    let certs = e.dir.path().join("certs");
    let out = run_bin("tandem", &["dev-certs", "--out", certs.to_str().unwrap(), "--days", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = |n: &str| certs.join(n).to_str().unwrap().to_string();

    // Without TLS and without --insecure, the servers refuse to start.
    let out = run_bin(
        "model-server",
        &["--models", e.models_dir.to_str().unwrap(), "--activation-server", "http://127.0.0.1:1"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TLS configured"));
    let out = run_bin(
        "activation-server",
        &[
            "--key-file",
            e.key.to_str().unwrap(),
            "--tls-cert",
            &p("activation-server.pem"),
            "--tls-key",
            &p("activation-server-key.pem"),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-ca is required"));

    let s2 = Proc::start(
        &bin("activation-server"),
        &s(&[
            "--listen",
            "127.0.0.1:0",
            "--key-file",
            e.key.to_str().unwrap(),
            "--key-bits",
            "1024",
            "--allow-test-key-sizes",
            "--tls-cert",
            &p("activation-server.pem"),
            "--tls-key",
            &p("activation-server-key.pem"),
            "--tls-ca",
            &p("ca.pem"),
        ]),
        &e.dir.path().join("s2-tls.log"),
        Duration::from_secs(60),
    );
    // The owner's modes in a sidecar next to the model file; the first is the default.
    std::fs::write(e.models_dir.join("mlp_sigmoid.tandem.modes"), "probabilities,label,logits\n").unwrap();
    let s1 = Proc::start(
        &bin("model-server"),
        &s(&[
            "--listen",
            "127.0.0.1:0",
            "--models",
            e.models_dir.to_str().unwrap(),
            "--activation-server",
            &format!("https://{}", s2.addr),
            "--tls-cert",
            &p("model-server.pem"),
            "--tls-key",
            &p("model-server-key.pem"),
            "--tls-ca",
            &p("ca.pem"),
        ]),
        &e.dir.path().join("s1-tls.log"),
        Duration::from_secs(60),
    );
    let fp = fingerprint(&s2);
    let url = format!("https://{}", s1.addr);
    let mut o = ClientOptions::new(url.clone());
    o.tls_ca = Some(PathBuf::from(p("ca.pem")));
    o.pinned_fingerprint = Some(fp.clone());
    let mut c = TandemClient::connect(&o).await.unwrap();
    let x = random_input(&mut StdRng::seed_from_u64(11), &m);
    let r = c.infer("mlp_sigmoid", &x, Some(OutputMode::Probabilities)).await.unwrap();
    assert_eq!(r.output, reference(&m, &x, OutputMode::Probabilities));

    // Without trusting the dev CA, the client cannot connect.
    let o2 = ClientOptions::new(url.clone());
    assert!(TandemClient::connect(&o2).await.is_err());
    // S2 refuses a TLS client without a client certificate.
    let tls = tandem_grpc::tls::client_tls(Some(Path::new(&p("ca.pem"))), None, None).unwrap();
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", s2.addr)).unwrap().tls_config(tls).unwrap();
    let refused = match ch.connect().await {
        Err(_) => true,
        Ok(ch) => ActivationServiceClient::new(ch).get_public_key(pb::GetPublicKeyRequest {}).await.is_err(),
    };
    assert!(refused, "the activation server must require a client certificate");

    // The client binary: JSON input with costs, CSV input on a ticket, and
    // a wrong pin.
    let ca = p("ca.pem");
    let infer = |input: &Path, pin: &str, extra: &[&str]| {
        let mut args = vec!["infer", "--server", &url, "--tls-ca", &ca, "--model", "mlp_sigmoid"];
        args.extend(["--input", input.to_str().unwrap(), "--activation-key-fingerprint", pin]);
        args.extend(extra);
        let out = run_bin("tandem-client", &args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let input = e.dir.path().join("x.json");
    std::fs::write(&input, serde_json::json!({ "input": x }).to_string()).unwrap();
    let (ok, stdout, stderr) = infer(&input, &fp, &["--mode", "logits", "--verbose"]);
    assert!(ok, "{stdout}\n{stderr}");
    let want = tandem_client::describe_output(&reference(&m, &x, OutputMode::Logits));
    assert!(stdout.contains(&want), "{stdout} should contain {want}");
    assert!(stdout.contains("client CPU:") && stdout.contains("bytes sent:"), "{stdout}");
    let csv = e.dir.path().join("x.csv");
    let header: Vec<String> = (0..x.len()).map(|i| format!("f{i}")).collect();
    let row: Vec<String> = x.iter().map(|v| v.to_string()).collect();
    std::fs::write(&csv, format!("{}\n{}\n", header.join(","), row.join(","))).unwrap();
    let (ok, stdout, stderr) = infer(&csv, &fp, &["--ticket", "--verbose"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&tandem_client::describe_output(&reference(&m, &x, OutputMode::Probabilities))),
        "{stdout}"
    );
    assert!(stdout.contains("ticket (preprocessing):") && stdout.contains("online query on the ticket"), "{stdout}");
    let (ok, _, stderr) = infer(&csv, &"cd".repeat(32), &[]);
    assert!(!ok);
    assert!(stderr.contains("refusing to encrypt"), "{stderr}");
    // A placeholder or truncated pin is refused before anything is sent,
    // saying what a fingerprint looks like.
    for (bad, why) in [("HEX", "'H' is not a hexadecimal digit"), (&fp[..60], "60 hex digits, expected 64")] {
        let (ok, _, stderr) = infer(&input, bad, &[]);
        assert!(!ok && stderr.contains("is not a key fingerprint") && stderr.contains(why), "{bad}: {stderr}");
    }
    // tandem-eval's test-split form: a header with a label column (anywhere),
    // several rows, one chosen with --row.
    let split = e.dir.path().join("split.csv");
    let mut text = format!("label,{}\n", header.join(","));
    for (i, v) in [vec![0.0; x.len()], x.clone()].iter().enumerate() {
        text += &format!("{i},{}\n", v.iter().map(f64::to_string).collect::<Vec<_>>().join(","));
    }
    std::fs::write(&split, text).unwrap();
    let (ok, _, stderr) = infer(&split, &fp, &[]);
    assert!(!ok && stderr.contains("2 data rows") && stderr.contains("--row N"), "{stderr}");
    let (ok, stdout, stderr) = infer(&split, &fp, &["--row", "1", "--mode", "logits", "--verbose"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&want) && stdout.contains("row 1 of 2") && stdout.contains("the file's label 1"), "{stdout}");
    let out = run_bin("tandem-client", &["models", "--server", &url, "--tls-ca", &p("ca.pem")]);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    // A header, one row per model with its id once, the default mode starred,
    // and the key's fingerprint once, ready to pin.
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines[0].starts_with("MODEL ") && lines[0].contains("OUTPUTS"), "{listing}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row.first(), Some(&"mlp_sigmoid"), "{listing}");
    assert_eq!(row.iter().filter(|c| **c == "mlp_sigmoid").count(), 1, "{listing}");
    assert_eq!(row.last(), Some(&"probabilities*,label,logits"), "{listing}");
    assert!(listing.contains(&format!("activation key fingerprint: {fp} ")), "{listing}");
}

/// Tickets over gRPC (docs/PROTOCOL.md §4.0): preprocessed ahead of the
/// input, used once, in their own mode, bounded in number and age; every
/// answer equals the reference, and refused requests do not burn a ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_single_use_bounded_and_exact() {
    let ms: Vec<(String, Model)> =
        models().into_iter().filter(|(id, _)| id == "mlp_sigmoid" || id == "mlp_deep_k256").collect();
    let e = env(&ms);
    let s2 = activation_server(e.dir.path(), &e.key, &[], "127.0.0.1:0");
    let allow = allow_every_mode(&ms);
    let s1 = model_server(
        e.dir.path(),
        &e.models_dir,
        &s2.url(),
        &[&["--max-tickets", "3", "--ticket-ttl-secs", "3"][..], &strs(&allow)].concat(),
    );
    let mut c = client(&s1.url(), Some(&fingerprint(&s2))).await;
    let mut raw = ModelServiceClient::connect(s1.url()).await.unwrap();
    let mut rng = StdRng::seed_from_u64(77);

    // Both rings, every mode: a pool of tickets first, then the queries.
    for (id, m) in &ms {
        let remote = c.model(id).await.unwrap();
        let q = QuantizedModel::new(m, QuantConfig::default()).unwrap();
        for mode in q.modes() {
            let t = c.create_ticket(&remote, Some(mode)).await.unwrap();
            assert_eq!((t.model_id(), t.mode()), (id.as_str(), mode));
            let pre = t.cost.server.expect("preprocessing stats");
            assert!(pre.s1_to_s2_bytes > 0 && pre.s2_to_s1_bytes > 0 && pre.rounds >= 2);
            let x = random_input(&mut rng, m);
            let got = c.infer_on_ticket(t, &x).await.unwrap_or_else(|e| panic!("{id} {mode}: {e}"));
            assert_eq!(got.output, reference(m, &x, mode), "{id} in {mode} mode on a ticket");
            let online = got.cost.server.expect("online stats");
            // A ticket query is all online phase (measured a moment before the wall time).
            assert!(online.online_micros > 0 && online.online_micros <= online.s1_wall_micros, "{online:?}");
        }
    }

    let (id, m) = &ms[0];
    let remote = c.model(id).await.unwrap();
    let x = random_input(&mut rng, m);
    let ticket = c.create_ticket(&remote, Some(OutputMode::Label)).await.unwrap();
    let tid = ticket.id().to_vec();
    let masked = |_: &PublicKey| {
        let mut r = valid_request(&remote, &x, OutputMode::Label);
        r.enc_seed.clear();
        r.ticket_id = tid.clone();
        r
    };
    // Refusals that leave the ticket usable: another mode, a seed as well,
    // a short input, a malformed id.
    let mut r = masked(&remote.key);
    r.mode = pb::OutputMode::Probabilities as i32;
    assert_status(
        raw.infer(r).await,
        Code::InvalidArgument,
        "the ticket is for label mode, but the query asks for probabilities",
    );
    let mut r = valid_request(&remote, &x, OutputMode::Label);
    r.ticket_id = tid.clone();
    assert_status(raw.infer(r).await, Code::InvalidArgument, "send ticket_id without enc_seed or seed_session_id");
    let mut r = masked(&remote.key);
    r.masked_input.truncate(16);
    assert_status(raw.infer(r).await, Code::InvalidArgument, "masked_input");
    let mut r = masked(&remote.key);
    let top = r.masked_input.len() - 1;
    // The last byte's high bits are padding in the packed encoding.
    r.masked_input[top] = 0xff;
    assert_status(raw.infer(r).await, Code::InvalidArgument, "padding bits after the last value are not zero");
    let mut r = masked(&remote.key);
    r.ticket_id = vec![1, 2, 3];
    assert_status(raw.infer(r).await, Code::InvalidArgument, "ticket_id has 3 bytes; a session id is exactly 16");
    // The ticket still answers exactly, once.
    let got = c.infer_on_ticket(ticket, &x).await.unwrap();
    assert_eq!(got.output, reference(m, &x, OutputMode::Label));
    assert_status(raw.infer(masked(&remote.key)).await, Code::NotFound, "already used, expired");

    // At most 3 outstanding tickets; an unused one expires after 3 s.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(c.create_ticket(&remote, None).await.unwrap());
    }
    assert_status(
        c.create_ticket(&remote, None).await.map(|_| ()).map_err(status),
        Code::ResourceExhausted,
        "limit of 3 outstanding tickets",
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let stale = held.pop().unwrap();
    let err = status(c.infer_on_ticket(stale, &x).await.unwrap_err());
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let fresh = c.create_ticket(&remote, None).await.expect("expired tickets free their slots");
    let got = c.infer_on_ticket(fresh, &x).await.unwrap();
    assert_eq!(got.output, reference(m, &x, m.default_mode));
    assert!(!s1.log_text().contains("panicked") && !s2.log_text().contains("panicked"));
}

async fn token_client(url: &str, pin: &str, token: &str) -> TandemClient {
    let mut o = ClientOptions::new(url);
    o.insecure = true;
    o.pinned_fingerprint = Some(pin.to_string());
    o.timeout = Duration::from_secs(60);
    o.api_token = Some(token.to_string());
    // One-shot seeds: the budgets below count queries, and opening a seed
    // session is charged like one.
    o.seed_sessions = false;
    TandemClient::connect(&o).await.expect("connect")
}

/// API tokens and per-client rate limits on the public service
/// (SECURITY.md, "API tokens and rate limits"): refused calls get
/// UNAUTHENTICATED or RESOURCE_EXHAUSTED saying what to do, budgets are per
/// client, a ticket's online query is paid for by the ticket, and the
/// budget refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_and_rate_limits() {
    const ALICE: &str = "alice-token-5f0c1e9a7b3d";
    const BOB: &str = "bob-token-9d2e4f6a8c1b7e30";
    // printf %s bob-token-9d2e4f6a8c1b7e30 | sha256sum
    const BOB_SHA256: &str = "9adba70fbaed5d1741028abe26c5c5a03e631257d433dc4dd6b3d8622d88759f";
    let ms: Vec<(String, Model)> = models().into_iter().filter(|(id, _)| id == "mlp_relu").collect();
    let m = ms[0].1.clone();
    let e = env(&ms);
    let tokens = e.dir.path().join("api-tokens");
    std::fs::write(&tokens, format!("# client-id token\nalice {ALICE}\nbob sha256:{BOB_SHA256}\n")).unwrap();
    let s2 = activation_server(e.dir.path(), &e.key, &[], "127.0.0.1:0");
    let s1 = model_server(
        e.dir.path(),
        &e.models_dir,
        &s2.url(),
        &[
            "--api-tokens",
            tokens.to_str().unwrap(),
            "--rate-limit",
            "2/6s",
            "--allow-modes",
            "mlp_relu=label,probabilities,logits",
        ],
    );
    let fp = fingerprint(&s2);
    let url = s1.url();
    let mut raw = ModelServiceClient::connect(url.clone()).await.unwrap();

    // The token is checked from the headers, before the body is read: a
    // request over any size limit (40 MiB; the old default was 32 MiB)
    // without a token is UNAUTHENTICATED, not decoded (OUT_OF_RANGE). With a
    // token it reaches the decoder, whose limit is sized from the served
    // model (16 KiB floor).
    let huge = pb::InferRequest { model_id: "mlp_relu".into(), masked_input: vec![7; 40 << 20], ..Default::default() };
    assert_status(raw.infer(huge).await, Code::Unauthenticated, "requires an API token");
    let big = pb::InferRequest { model_id: "mlp_relu".into(), masked_input: vec![7; 1 << 20], ..Default::default() };
    let mut authed = tonic::Request::new(big);
    authed.metadata_mut().insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
    assert_status(raw.infer(authed).await, Code::OutOfRange, "16384");

    // No token, a wrong token, a token in the wrong scheme: refused before any work.
    let mut anon = client(&url, Some(&fp)).await;
    let s = status(anon.list_models().await.unwrap_err());
    assert_eq!(s.code(), Code::Unauthenticated, "{}", s.message());
    for needle in ["requires an API token", "send gRPC metadata `authorization: Bearer <token>`", "--api-token"] {
        assert!(s.message().contains(needle), "{:?} should mention {needle:?}", s.message());
    }
    let bare = pb::InferRequest { model_id: "mlp_relu".into(), ..Default::default() };
    assert_status(raw.infer(bare.clone()).await, Code::Unauthenticated, "requires an API token");
    let bare_ticket = pb::CreateTicketRequest { model_id: "mlp_relu".into(), ..Default::default() };
    assert_status(raw.create_ticket(bare_ticket).await, Code::Unauthenticated, "requires an API token");
    let mut wrong = token_client(&url, &fp, "not-the-right-token-123").await;
    assert_status(wrong.model("mlp_relu").await.map_err(status), Code::Unauthenticated, "the API token is not valid");
    let mut basic = tonic::Request::new(pb::ListModelsRequest {});
    basic.metadata_mut().insert("authorization", format!("Basic {ALICE}").parse().unwrap());
    assert_status(raw.list_models(basic).await, Code::Unauthenticated, "not a Bearer token");

    // alice: a ticket and a one-shot query use up her burst of 2; both exact.
    let mut alice = token_client(&url, &fp, ALICE).await;
    let remote = alice.model("mlp_relu").await.unwrap();
    assert_eq!(remote.info.modes, [OutputMode::Label, OutputMode::Probabilities, OutputMode::Logits]);
    let mut rng = StdRng::seed_from_u64(41);
    let ticket = alice.create_ticket(&remote, Some(OutputMode::Probabilities)).await.unwrap();
    let x = random_input(&mut rng, &m);
    let got = alice.infer_with(&remote, &x, Some(OutputMode::Logits)).await.unwrap();
    assert_eq!(got.output, reference(&m, &x, OutputMode::Logits));

    // A third query is over the limit: RESOURCE_EXHAUSTED, with the limit and when to retry.
    let denied_at = Instant::now();
    let s = status(alice.infer_with(&remote, &x, None).await.unwrap_err());
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    for needle in ["rate limit exceeded for client \"alice\"", "2 queries per 6 s (bursts of up to 2)", "retry in"] {
        assert!(s.message().contains(needle), "{:?} should mention {needle:?}", s.message());
    }
    let retry: u64 = s.metadata().get("retry-after").expect("retry-after metadata").to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "retry-after {retry}");
    let s = status(alice.create_ticket(&remote, None).await.map(|_| ()).unwrap_err());
    assert_eq!(s.code(), Code::ResourceExhausted, "tickets share the budget: {}", s.message());
    // Metadata calls are not charged.
    assert_eq!(alice.list_models().await.unwrap().len(), 1);

    // bob (stored as a digest) has his own budget; he cannot spend alice's ticket.
    let mut bob = token_client(&url, &fp, BOB).await;
    let mut stolen = valid_request(&remote, &x, OutputMode::Probabilities);
    stolen.enc_seed.clear();
    stolen.ticket_id = ticket.id().to_vec();
    assert_status(bob.raw().infer(bob.request(stolen)).await, Code::PermissionDenied, "issued to another client");
    let got = bob.infer_with(&remote, &x, None).await.unwrap();
    assert_eq!(got.output, reference(&m, &x, OutputMode::Label));

    // alice's ticket still answers, exactly: its online query was paid for with the ticket.
    let x2 = random_input(&mut rng, &m);
    let got = alice.infer_on_ticket(ticket, &x2).await.unwrap();
    assert_eq!(got.output, reference(&m, &x2, OutputMode::Probabilities));

    // After retry-after, alice may query again.
    tokio::time::sleep(Duration::from_secs(retry).saturating_sub(denied_at.elapsed())).await;
    let got = alice.infer_with(&remote, &x2, None).await.unwrap();
    assert_eq!(got.output, reference(&m, &x2, OutputMode::Label));

    // The client binary: --api-token, TANDEM_API_TOKEN, and the refusal without either.
    let input = e.dir.path().join("x.json");
    std::fs::write(&input, serde_json::json!(x).to_string()).unwrap();
    let cli = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(bin("tandem-client"));
        cmd.args(args).env_remove("TANDEM_API_TOKEN");
        if let Some(t) = token {
            cmd.env("TANDEM_API_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = cli(&["models", "--server", &url, "--insecure"], Some(ALICE));
    assert!(ok && stdout.lines().nth(1).is_some_and(|l| l.starts_with("mlp_relu ")), "{stdout}\n{stderr}");
    let infer_args =
        ["infer", "--server", &url, "--insecure", "--model", "mlp_relu", "--input", input.to_str().unwrap()];
    let (ok, stdout, stderr) =
        cli(&[&infer_args[..], &["--api-token", BOB, "--activation-key-fingerprint", &fp]].concat(), None);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&tandem_client::describe_output(&reference(&m, &x, OutputMode::Label))), "{stdout}");
    let (ok, _, stderr) = cli(&infer_args, None);
    assert!(!ok && stderr.contains("UNAUTHENTICATED") && stderr.contains("authorization: Bearer <token>"), "{stderr}");

    let log = s1.log_text();
    assert!(log.contains("API tokens required"), "{log}");
    assert!(!log.contains(ALICE) && !log.contains(BOB) && !log.contains(BOB_SHA256), "a token was logged:\n{log}");
    assert!(!log.contains("panicked"), "{log}");

    // Without tokens: open (with a warning), rate-limited per IP address.
    let open = model_server(e.dir.path(), &e.models_dir, &s2.url(), &["--rate-limit", "1/60s"]);
    assert!(open.log_text().contains("authentication is OFF"), "{}", open.log_text());
    let mut c = client_with(&open.url(), Some(&fp), false).await;
    let remote = c.model("mlp_relu").await.unwrap();
    c.infer_with(&remote, &x, None).await.unwrap();
    let s = status(c.infer_with(&remote, &x, None).await.unwrap_err());
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    assert!(
        s.message().contains("rate limit exceeded for client 127.0.0.1: this model server allows 1 query per minute"),
        "{}",
        s.message()
    );
    assert!(!open.log_text().contains("panicked"));
}

/// Model ids are checked before anything logs or echoes them (issue 14,
/// item 7): a 1 MiB id gets a short INVALID_ARGUMENT, not a status too big
/// for gRPC clients (RESOURCE_EXHAUSTED "Stream removed"), and an id with a
/// newline cannot forge a log record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_ids_are_validated_before_they_are_logged_or_echoed() {
    let ms: Vec<(String, Model)> = models().into_iter().filter(|(id, _)| id == "mlp_relu").collect();
    let e = env(&ms);
    let s2 = activation_server(e.dir.path(), &e.key, &[], "127.0.0.1:0");
    // A request limit large enough for the long id to reach the service.
    let s1 = model_server(e.dir.path(), &e.models_dir, &s2.url(), &["--max-request-bytes", "4194304"]);
    let mut raw = ModelServiceClient::connect(s1.url()).await.unwrap();
    let forged = "x\n2026-01-01T00:00:00Z  INFO tandem_model_server: served model=mlp_relu FORGED";
    let huge = "A".repeat(1 << 20);
    for id in [huge.as_str(), forged, "", "a b", "../etc/passwd"] {
        let info = raw.get_model_info(pb::GetModelInfoRequest { model_id: id.into() }).await;
        let infer = raw.infer(pb::InferRequest { model_id: id.into(), ..Default::default() }).await;
        let ticket = raw.create_ticket(pb::CreateTicketRequest { model_id: id.into(), ..Default::default() }).await;
        for s in [info.map(|_| ()).unwrap_err(), infer.map(|_| ()).unwrap_err(), ticket.map(|_| ()).unwrap_err()] {
            assert_eq!(s.code(), Code::InvalidArgument, "{:.200}", s.message());
            assert!(s.message().len() < 200, "the status echoes the id: {:.300}", s.message());
            assert!(
                s.message().contains(&format!("model_id ({} bytes) is not a model id", id.len()))
                    && s.message().contains("1 to 128 characters of A-Z a-z 0-9 . _ -"),
                "{}",
                s.message()
            );
        }
    }
    // A well-formed id that names no model is still NOT_FOUND, echoed.
    assert_status(
        raw.get_model_info(pb::GetModelInfoRequest { model_id: "nope".into() }).await,
        Code::NotFound,
        "unknown model \"nope\"; this server serves: mlp_relu",
    );
    let log = s1.log_text();
    assert!(!log.contains("FORGED") && !log.contains(&"A".repeat(200)), "a client's id reached the log:\n{log:.2000}");
    assert!(log.len() < 100_000, "the log grew by {} bytes", log.len());
    assert!(!log.contains("panicked"), "{log}");
}

/// One client cannot hold every ticket (issue 14, item 9), and the rate
/// limiter can weigh modes (`--mode-cost`, item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_cap_per_client_and_mode_costs() {
    const ALICE: &str = "alice-token-5f0c1e9a7b3d";
    const BOB: &str = "bob-token-9d2e4f6a8c1b7e30";
    let ms: Vec<(String, Model)> = models().into_iter().filter(|(id, _)| id == "mlp_relu").collect();
    let m = ms[0].1.clone();
    let e = env(&ms);
    let tokens = e.dir.path().join("api-tokens");
    std::fs::write(&tokens, format!("alice {ALICE}\nbob {BOB}\n")).unwrap();
    let s2 = activation_server(e.dir.path(), &e.key, &[], "127.0.0.1:0");
    let fp = fingerprint(&s2);
    let args = [
        "--api-tokens",
        tokens.to_str().unwrap(),
        "--max-tickets-per-client",
        "2",
        "--rate-limit",
        "6/60s",
        "--mode-cost",
        "logits=4",
        "--allow-modes",
        "mlp_relu=label,logits",
    ];
    let s1 = model_server(e.dir.path(), &e.models_dir, &s2.url(), &args);
    let mut alice = token_client(&s1.url(), &fp, ALICE).await;
    let mut bob = token_client(&s1.url(), &fp, BOB).await;
    let remote = alice.model("mlp_relu").await.unwrap();
    let mut rng = StdRng::seed_from_u64(5);

    // alice may hold 2 tickets; the third is refused, naming the cap, and is not charged.
    let t1 = alice.create_ticket(&remote, None).await.unwrap();
    let _t2 = alice.create_ticket(&remote, None).await.unwrap();
    let s = status(alice.create_ticket(&remote, None).await.map(|_| ()).unwrap_err());
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    assert!(
        s.message().contains("client \"alice\" holds its limit of 2 outstanding tickets per client"),
        "{}",
        s.message()
    );
    // bob is not blocked by alice's tickets.
    let tb = bob.create_ticket(&remote, None).await.unwrap();
    let x = random_input(&mut rng, &m);
    assert_eq!(bob.infer_on_ticket(tb, &x).await.unwrap().output, reference(&m, &x, OutputMode::Label));
    // Spending a ticket frees alice's slot.
    assert_eq!(alice.infer_on_ticket(t1, &x).await.unwrap().output, reference(&m, &x, OutputMode::Label));
    let _t3 = alice.create_ticket(&remote, None).await.expect("a spent ticket frees its slot");

    // alice has spent 3 of her 6 (the refused ticket was refunded). A logits
    // query costs 4: refused, saying so; a label query (1) still fits.
    let s = status(alice.infer_with(&remote, &x, Some(OutputMode::Logits)).await.unwrap_err());
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    assert!(s.message().contains("and a logits query counts as 4"), "{}", s.message());
    alice.infer_with(&remote, &x, None).await.unwrap();
    // bob has spent 1: one logits query fits, a second does not.
    let got = bob.infer_with(&remote, &x, Some(OutputMode::Logits)).await.unwrap();
    assert_eq!(got.output, reference(&m, &x, OutputMode::Logits));
    assert!(bob.infer_with(&remote, &x, Some(OutputMode::Logits)).await.is_err());
    let log = s1.log_text();
    assert!(log.contains("queries cost more than one in some modes") && !log.contains("panicked"), "{log}");

    // A cost no burst can pay is a start-up error, not a mode nobody can use.
    let out = run_bin(
        "model-server",
        &[
            "--models",
            e.models_dir.to_str().unwrap(),
            "--insecure",
            "--activation-server",
            "http://127.0.0.1:1",
            "--rate-limit",
            "2/min",
            "--mode-cost",
            "logits=5",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--mode-cost logits=5 is more than the rate limit's burst of 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An activation server that accepts S1's streams and then never reads
/// them nor answers: a peer that stops reading (issue 14, item 11).
struct DeafActivationServer {
    key: pb::PaillierPublicKey,
    held: std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>,
}

#[tonic::async_trait]
impl tandem_grpc::v1::activation_service_server::ActivationService for DeafActivationServer {
    async fn get_public_key(
        &self,
        _: tonic::Request<pb::GetPublicKeyRequest>,
    ) -> Result<tonic::Response<pb::PaillierPublicKey>, tonic::Status> {
        Ok(tonic::Response::new(self.key.clone()))
    }
    async fn get_lattice_key(
        &self,
        _: tonic::Request<pb::GetLatticeKeyRequest>,
    ) -> Result<tonic::Response<pb::LatticePublicKey>, tonic::Status> {
        Err(tonic::Status::failed_precondition("this deaf server runs the paillier engine"))
    }
    async fn setup_ot(
        &self,
        _: tonic::Request<pb::SetupOtRequest>,
    ) -> Result<tonic::Response<pb::SetupOtReply>, tonic::Status> {
        Err(tonic::Status::failed_precondition("this deaf server runs the paillier engine"))
    }
    async fn get_status(
        &self,
        _: tonic::Request<pb::GetStatusRequest>,
    ) -> Result<tonic::Response<pb::ActivationStatus>, tonic::Status> {
        Ok(tonic::Response::new(pb::ActivationStatus::default()))
    }
    type PreprocessStream = tokio_stream::Pending<Result<pb::PreprocessReply, tonic::Status>>;
    async fn preprocess(
        &self,
        req: tonic::Request<tonic::Streaming<pb::PreprocessMsg>>,
    ) -> Result<tonic::Response<Self::PreprocessStream>, tonic::Status> {
        // Kept, never polled: S1's messages stay unread.
        self.held.lock().unwrap().push(Box::new(req.into_inner()));
        Ok(tonic::Response::new(tokio_stream::pending()))
    }
    type EvaluateStream = tokio_stream::Pending<Result<pb::EvaluateReply, tonic::Status>>;
    async fn evaluate(
        &self,
        req: tonic::Request<tonic::Streaming<pb::EvaluateMsg>>,
    ) -> Result<tonic::Response<Self::EvaluateStream>, tonic::Status> {
        self.held.lock().unwrap().push(Box::new(req.into_inner()));
        Ok(tonic::Response::new(tokio_stream::pending()))
    }
    async fn open_seed_session(
        &self,
        _: tonic::Request<pb::OpenSeedSessionRequest>,
    ) -> Result<tonic::Response<pb::SeedSession>, tonic::Status> {
        // Never answers, like the streams above.
        std::future::pending().await
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// S1 facing an activation server that stops reading: every query and
/// ticket request ends with DEADLINE_EXCEEDED at the activation deadline
/// (SECURITY.md, API tokens and limits), nothing is left held (admission
/// slots, ticket slots), and S1's memory does not grow with the number of
/// stuck calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_cannot_hang_the_model_server() {
    let ms: Vec<(String, Model)> = models().into_iter().filter(|(id, _)| id == "mlp_relu").collect();
    let m = ms[0].1.clone();
    let e = env(&ms);
    let sk = tandem_paillier::SecretKey::generate(1024).unwrap();
    let stub = DeafActivationServer {
        key: pb::PaillierPublicKey { seed_epoch: vec![3; 16], ..tandem_grpc::public_key_to_proto(sk.public()) },
        held: std::sync::Mutex::new(Vec::new()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tandem_grpc::v1::activation_service_server::ActivationServiceServer::new(stub))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let s1 = model_server(
        e.dir.path(),
        &e.models_dir,
        &stub_url,
        // Workers for all four calls of a round: none waits in line behind a stuck one.
        // The stub speaks the Paillier engine's messages only.
        &[
            "--engine",
            "paillier",
            "--activation-timeout-secs",
            "2",
            "--query-timeout-secs",
            "4",
            "--max-queries",
            "4",
            "--workers",
            "4",
            "--max-tickets-per-client",
            "2",
        ],
    );
    // One-shot seeds, so that the stuck calls are preprocessing streams; a
    // seed session's opening against the deaf S2 is checked on its own.
    let mut c = client_with(&s1.url(), None, false).await;
    let remote = c.model("mlp_relu").await.unwrap();
    let x = random_input(&mut StdRng::seed_from_u64(8), &m);
    let mut with_session = client(&s1.url(), None).await;
    let s = status(with_session.infer_with(&remote, &x, None).await.unwrap_err());
    assert_eq!(s.code(), Code::DeadlineExceeded, "{}", s.message());
    assert!(s.message().contains("did not open the seed session within 2 s"), "{}", s.message());

    let round = |c: &TandemClient| {
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (mut c, r, x) = (c.clone(), remote.clone(), x.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let s = if i % 2 == 0 {
                    status(c.infer_with(&r, &x, None).await.unwrap_err())
                } else {
                    status(c.create_ticket(&r, None).await.map(|_| ()).unwrap_err())
                };
                (s, t.elapsed())
            }));
        }
        tasks
    };
    let mut rss = Vec::new();
    for _ in 0..4 {
        for t in round(&c) {
            let (s, took) = t.await.unwrap();
            assert_eq!(s.code(), Code::DeadlineExceeded, "{}", s.message());
            assert!(s.message().contains("within 2 s"), "{}", s.message());
            assert!(took < Duration::from_secs(4), "the query hung for {took:?}, past its 2 s deadline");
        }
        rss.push(rss_kib(s1.child.id()));
    }
    // Four rounds of four stuck calls: the slots were all given back (else
    // RESOURCE_EXHAUSTED above), and memory stays flat after the first round.
    let growth = rss[3].saturating_sub(rss[0]);
    assert!(growth < 16 * 1024, "model server RSS grew by {growth} KiB over 12 stuck calls: {rss:?} KiB");
    // Still serving.
    assert_eq!(c.model("mlp_relu").await.unwrap().info.id, "mlp_relu");
    assert!(!s1.log_text().contains("panicked"));
    drop(s1);

    // A client that opens more calls than --max-streams-per-connection on
    // one connection: only 2 run at once (the others wait for a free
    // stream, so the last ones end a whole deadline later), while another
    // connection is served at once.
    let s1 = model_server(
        e.dir.path(),
        &e.models_dir,
        &stub_url,
        &["--engine", "paillier", "--activation-timeout-secs", "2", "--workers", "4", "--max-streams-per-connection", "2"],
    );
    let c = client(&s1.url(), None).await;
    let remote = c.clone().model("mlp_relu").await.unwrap();
    let t0 = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (mut c, r, x) = (c.clone(), remote.clone(), x.clone());
            tokio::spawn(async move { (c.infer_with(&r, &x, None).await.map(|_| ()).map_err(status), t0.elapsed()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut other = client(&s1.url(), None).await;
    let t = Instant::now();
    other.model("mlp_relu").await.expect("another connection is not blocked");
    assert!(t.elapsed() < Duration::from_secs(1), "another connection waited {:?}", t.elapsed());
    let mut took = Vec::new();
    for call in calls {
        let (r, elapsed) = call.await.unwrap();
        assert_eq!(r.unwrap_err().code(), Code::DeadlineExceeded);
        took.push(elapsed);
    }
    took.sort();
    assert!(took[1] < Duration::from_secs(3) && took[3] >= Duration::from_millis(3900), "{took:?}");
    assert!(!s1.log_text().contains("panicked"));
}
