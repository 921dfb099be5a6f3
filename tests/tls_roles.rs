//! Role-bound identities on the S1↔S2 link (issue 14, item 5): a
//! certificate signed by the CA is not enough. The activation server (S2)
//! accepts only the model server's role (or pinned key); the model server
//! (S1) accepts only the activation server's role (or pinned key). The real
//! binaries on loopback, with `tandem dev-certs` material.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tandem_grpc::v1 as pb;
use tandem_grpc::v1::activation_service_client::ActivationServiceClient;
use tonic::Code;

struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let out = run_bin("tandem", &["dev-certs", "--out", dir.path().join("c").to_str().unwrap(), "--days", "2"]);
        assert!(out.status.success(), "dev-certs: {}", String::from_utf8_lossy(&out.stderr));
        Certs { dir }
    }
    fn p(&self, name: &str) -> String {
        self.dir.path().join("c").join(name).to_str().unwrap().to_string()
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.p(name)).unwrap()
    }
    /// A certificate and key the dev CA signs for `role_uri` (or no role),
    /// written as NAME.pem / NAME-key.pem: what anyone holding the CA key
    /// (or a CA shared with other services) can make.
    fn issue(&self, name: &str, role_uri: Option<&str>, server_auth: bool) -> (String, String) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose as Eku, Issuer, KeyPair, SanType};
        let ca_key = KeyPair::from_pem(&self.read("ca-key.pem")).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&self.read("ca.pem"), ca_key).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        if let Some(r) = role_uri {
            params.subject_alt_names.push(SanType::URI(r.try_into().unwrap()));
        }
        params.extended_key_usages =
            if server_auth { vec![Eku::ServerAuth, Eku::ClientAuth] } else { vec![Eku::ClientAuth] };
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (c, k) = (self.p(&format!("{name}.pem")), self.p(&format!("{name}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
    fn spki(&self, cert: &str) -> String {
        let out = run_bin("tandem", &["spki", cert]);
        assert!(out.status.success(), "tandem spki: {}", String::from_utf8_lossy(&out.stderr));
        let pin = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(pin.len(), 64, "{pin}");
        pin
    }
}

fn run_bin(name: &str, args: &[&str]) -> Output {
    std::process::Command::new(bin(name)).args(args).output().unwrap()
}

fn key_file(dir: &Path) -> PathBuf {
    dir.join("activation-key.json")
}

/// An activation server on loopback with mutual TLS from `cert`/`key`.
fn s2(c: &Certs, cert: &str, key: &str, extra: &[&str], log: &str) -> Proc {
    let mut args = s(&[
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        key_file(c.dir.path()).to_str().unwrap(),
        "--key-bits",
        "1024",
        "--allow-test-key-sizes",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-ca",
        &c.p("ca.pem"),
    ]);
    args.extend(s(extra));
    Proc::start(&bin("activation-server"), &args, &c.dir.path().join(log), Duration::from_secs(120))
}

fn model_server_args(c: &Certs, s2: &Proc, models: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = s(&[
        "--listen",
        "127.0.0.1:0",
        "--models",
        models.to_str().unwrap(),
        "--activation-server",
        &format!("https://{}", s2.addr),
        "--tls-cert",
        &c.p("model-server.pem"),
        "--tls-key",
        &c.p("model-server-key.pem"),
        "--tls-ca",
        &c.p("ca.pem"),
        "--connect-retries",
        "2",
    ]);
    args.extend(s(extra));
    args
}

fn demo_models(dir: &Path) -> PathBuf {
    let m = dir.join("models");
    std::fs::create_dir_all(&m).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo/demo.tandem");
    std::fs::copy(root, m.join("demo.tandem")).unwrap();
    m
}

/// GetPublicKey on S2 presenting `cert`/`key` (or no certificate).
async fn call_s2(c: &Certs, s2: &Proc, identity: Option<(&str, &str)>) -> Result<(), tonic::Status> {
    let ca = PathBuf::from(c.p("ca.pem"));
    let id = identity.map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)));
    let tls = tandem_grpc::tls::client_tls(
        Some(&ca),
        id.as_ref().map(|(a, b)| (a.as_path(), b.as_path())),
        Some("localhost"),
    )
    .unwrap();
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", s2.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    ActivationServiceClient::new(ch).get_public_key(pb::GetPublicKeyRequest {}).await.map(|_| ())
}

fn no_key_material(log: &str) {
    assert!(!log.contains("PRIVATE KEY"), "a log holds key material:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_server_accepts_only_the_model_servers_role() {
    let c = Certs::new();
    let s2 = s2(&c, &c.p("activation-server.pem"), &c.p("activation-server-key.pem"), &[], "s2.log");

    // S1's certificate (role model-server) is accepted.
    call_s2(&c, &s2, Some((&c.p("model-server.pem"), &c.p("model-server-key.pem"))))
        .await
        .expect("the model server's certificate must be accepted");

    // The client certificate dev-certs writes is CA-signed but not S1's:
    // refused, with a message naming the role that would be accepted.
    let err = call_s2(&c, &s2, Some((&c.p("client.pem"), &c.p("client-key.pem"))))
        .await
        .expect_err("a client certificate must not reach the activation service");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("urn:tandem:role:model-server"), "{}", err.message());
    assert!(err.message().contains("tandem client"), "the message names the refused certificate: {}", err.message());

    // Any other certificate the CA signs without S1's role: refused too.
    let (oc, ok) = c.issue("other-service", Some("urn:example:some-other-service"), true);
    let err = call_s2(&c, &s2, Some((&oc, &ok))).await.expect_err("another service's certificate");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // S2's own certificate has no clientAuth usage: refused (at the handshake).
    let err = call_s2(&c, &s2, Some((&c.p("activation-server.pem"), &c.p("activation-server-key.pem")))).await;
    assert!(err.is_err(), "S2's own certificate must not pass as a model server");

    // No certificate at all: refused.
    assert!(call_s2(&c, &s2, None).await.is_err());

    let log = s2.log_text();
    assert!(log.contains("refused a call"), "refusals are logged:\n{log}");
    no_key_material(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_model_server_key_beats_the_role() {
    let c = Certs::new();
    let pin = c.spki(&c.p("model-server.pem"));
    let s2 = s2(
        &c,
        &c.p("activation-server.pem"),
        &c.p("activation-server-key.pem"),
        &["--model-server-spki-sha256", &pin],
        "s2-pinned.log",
    );
    call_s2(&c, &s2, Some((&c.p("model-server.pem"), &c.p("model-server-key.pem"))))
        .await
        .expect("the pinned model server must be accepted");
    // The CA signs a second certificate WITH the model-server role but a
    // different key: the pin refuses it.
    let (fc, fk) = c.issue("forged-model-server", Some("urn:tandem:role:model-server"), true);
    let err = call_s2(&c, &s2, Some((&fc, &fk))).await.expect_err("a non-pinned key must be refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(&pin), "the message names the accepted pin: {}", err.message());

    // A malformed pin stops the server at start-up with what is accepted.
    let out = run_bin(
        "activation-server",
        &[
            "--key-file",
            key_file(c.dir.path()).to_str().unwrap(),
            "--tls-cert",
            &c.p("activation-server.pem"),
            "--tls-key",
            &c.p("activation-server-key.pem"),
            "--tls-ca",
            &c.p("ca.pem"),
            "--model-server-spki-sha256",
            "abc",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("64 hex digits"), "{err}");
    no_key_material(&s2.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_server_refuses_an_activation_server_impostor() {
    let c = Certs::new();
    let models = demo_models(c.dir.path());

    // An impostor S2 presenting the model server's certificate (CA-signed,
    // serverAuth, valid for 127.0.0.1, but role model-server).
    let impostor = s2(&c, &c.p("model-server.pem"), &c.p("model-server-key.pem"), &[], "impostor.log");
    let out = std::process::Command::new(bin("model-server"))
        .args(model_server_args(&c, &impostor, &models, &[]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "S1 must not start against an impostor S2:\n{err}");
    assert!(err.contains("refusing the activation server"), "{err}");
    assert!(err.contains("urn:tandem:role:activation-server"), "{err}");
    no_key_material(&err);

    // Another CA-signed server certificate without the role: refused too.
    let (oc, ok) = c.issue("other-server", None, true);
    let impostor2 = s2(&c, &oc, &ok, &[], "impostor2.log");
    let out = std::process::Command::new(bin("model-server"))
        .args(model_server_args(&c, &impostor2, &models, &[]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing the activation server"));

    // The real S2: S1 starts (it has fetched S2's key over the role-checked
    // link), and a private inference goes through.
    let real = s2(&c, &c.p("activation-server.pem"), &c.p("activation-server-key.pem"), &[], "s2-real.log");
    let s1 = Proc::start(
        &bin("model-server"),
        &model_server_args(&c, &real, &models, &[]),
        &c.dir.path().join("s1.log"),
        Duration::from_secs(120),
    );
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo/sample.json");
    let out = run_bin(
        "tandem-client",
        &[
            "infer",
            "--server",
            &format!("https://{}", s1.addr),
            "--tls-ca",
            &c.p("ca.pem"),
            "--model",
            "demo",
            "--input",
            sample.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // models/demo/sample.json is labelled 1 (a vertical stroke).
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().next(), Some("label: 1"));

    // Pinned: the right pin is accepted, a wrong pin refuses the real S2.
    let pin = c.spki(&c.p("activation-server.pem"));
    let s1_pinned = Proc::start(
        &bin("model-server"),
        &model_server_args(&c, &real, &models, &["--activation-server-spki-sha256", &pin]),
        &c.dir.path().join("s1-pinned.log"),
        Duration::from_secs(120),
    );
    drop(s1_pinned);
    let wrong = c.spki(&c.p("model-server.pem"));
    let out = std::process::Command::new(bin("model-server"))
        .args(model_server_args(&c, &real, &models, &["--activation-server-spki-sha256", &wrong]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not the pinned activation server's") && err.contains(&wrong), "{err}");
    no_key_material(&s1.log_text());
    no_key_material(&real.log_text());
}
