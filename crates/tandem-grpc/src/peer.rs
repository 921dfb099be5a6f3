//! Role-bound identities on the S1↔S2 link (feature `server`).
//!
//! A CA signature alone says "someone the CA vouched for", and a CA usually
//! vouches for more than the two servers (the development CA also signs a
//! client certificate). So each end of the link also checks the ROLE of its
//! peer's certificate:
//!
//! * pinned: the SHA-256 of the certificate's SubjectPublicKeyInfo is one of
//!   the operator's pins (`--model-server-spki-sha256` at S2,
//!   `--activation-server-spki-sha256` at S1). Pins survive a re-issued
//!   certificate as long as the key is kept, and do not depend on what the CA
//!   is willing to sign;
//! * without pins: the certificate carries the peer's role identity, a URI
//!   subject alternative name `urn:tandem:role:model-server` or
//!   `urn:tandem:role:activation-server` (what `tandem dev-certs` writes).
//!
//! S2 enforces its side on every call ([`PeerIdentity::check_request`],
//! refused with PERMISSION_DENIED before the call reaches the service); S1
//! enforces its side right after each TLS handshake in its own connector
//! ([`RoleTlsConnector`]), before any request is sent.

use crate::tls::read_pem;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::ServerTlsConfig;

/// URI SAN of a model server's (S1's) certificate.
pub const MODEL_SERVER_ROLE: &str = "urn:tandem:role:model-server";
/// URI SAN of an activation server's (S2's) certificate.
pub const ACTIVATION_SERVER_ROLE: &str = "urn:tandem:role:activation-server";

/// Who the peer on the S1↔S2 link must be.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// "model server" / "activation server", for messages.
    peer: &'static str,
    role: &'static str,
    /// The flag that sets `pins`, for messages.
    pin_flag: &'static str,
    pins: Vec<[u8; 32]>,
}

impl PeerIdentity {
    /// What S2 requires of its clients: S1's role or one of `pins`.
    pub fn model_server(pins: Vec<[u8; 32]>) -> Self {
        PeerIdentity { peer: "model server", role: MODEL_SERVER_ROLE, pin_flag: "--model-server-spki-sha256", pins }
    }

    /// What S1 requires of S2: S2's role or one of `pins`.
    pub fn activation_server(pins: Vec<[u8; 32]>) -> Self {
        PeerIdentity {
            peer: "activation server",
            role: ACTIVATION_SERVER_ROLE,
            pin_flag: "--activation-server-spki-sha256",
            pins,
        }
    }

    /// One line for the start-up log: what is accepted.
    pub fn describe(&self) -> String {
        if self.pins.is_empty() {
            format!("{} certificates with the role URI {}", self.peer, self.role)
        } else {
            let pins: Vec<String> = self.pins.iter().map(hex::encode).collect();
            format!("{} certificates whose SPKI SHA-256 is pinned ({})", self.peer, pins.join(", "))
        }
    }

    /// Checks the peer's end-entity certificate (DER). The error says what
    /// the certificate is and what would have been accepted; it names only
    /// public data (a public-key hash, the subject, the role URIs).
    pub fn check(&self, cert_der: &[u8]) -> Result<(), String> {
        let info = CertInfo::parse(cert_der)?;
        if self.pins.is_empty() {
            if info.roles.iter().any(|r| r == self.role) {
                return Ok(());
            }
            return Err(format!(
                "the peer's certificate is not the {peer}'s: {info}; accepted: a certificate carrying the role URI \
                 subject alternative name {role} (what `tandem dev-certs` issues to the {peer}), or pin the {peer}'s \
                 key with {flag} HEX (the SPKI SHA-256 printed by `tandem dev-certs` or `tandem spki CERT.pem`)",
                peer = self.peer,
                role = self.role,
                flag = self.pin_flag,
            ));
        }
        if self.pins.contains(&info.spki_sha256) {
            return Ok(());
        }
        let pins: Vec<String> = self.pins.iter().map(hex::encode).collect();
        Err(format!(
            "the peer's certificate is not the pinned {peer}'s: {info}; accepted: SPKI SHA-256 {pins} ({flag})",
            peer = self.peer,
            pins = pins.join(" or "),
            flag = self.pin_flag,
        ))
    }

    /// For a server-side interceptor: refuses a call whose TLS peer is not
    /// this identity. A call without TLS peer certificates is refused too,
    /// so the check cannot be skipped by a misconfigured listener.
    pub fn check_request<T>(&self, req: &tonic::Request<T>) -> Result<(), tonic::Status> {
        let certs = req.peer_certs();
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            tracing::warn!("refused a call without a TLS client certificate");
            return Err(tonic::Status::permission_denied(format!(
                "no TLS client certificate: this server accepts only {}",
                self.describe()
            )));
        };
        self.check(leaf.as_ref()).map_err(|e| {
            tracing::warn!(remote = ?req.remote_addr(), "refused a call: {e}");
            tonic::Status::permission_denied(e)
        })
    }
}

/// The public facts of a certificate that identify it to an operator.
struct CertInfo {
    spki_sha256: [u8; 32],
    subject: String,
    roles: Vec<String>,
}

impl CertInfo {
    fn parse(der: &[u8]) -> Result<CertInfo, String> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("the peer's certificate cannot be parsed as X.509: {e}"))?;
        let spki_sha256 = Sha256::digest(cert.tbs_certificate.subject_pki.raw).into();
        let mut roles = Vec::new();
        if let Ok(Some(san)) = cert.tbs_certificate.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::URI(u) = n {
                    roles.push(u.to_string());
                }
            }
        }
        Ok(CertInfo { spki_sha256, subject: cert.tbs_certificate.subject.to_string(), roles })
    }
}

impl std::fmt::Display for CertInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "subject \"{}\", SPKI SHA-256 {}", self.subject, hex::encode(self.spki_sha256))?;
        if self.roles.is_empty() {
            write!(f, ", no role URI")
        } else {
            write!(f, ", URIs {}", self.roles.join(" "))
        }
    }
}

/// The first certificate in PEM data, DER.
pub fn first_cert_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let cert = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no CERTIFICATE in the PEM data")?
        .map_err(|e| format!("bad PEM certificate: {e}"))?;
    Ok(cert.as_ref().to_vec())
}

/// SHA-256 of the SubjectPublicKeyInfo of the first certificate in PEM
/// data: the value to pin.
pub fn spki_sha256_of_pem(pem: &[u8]) -> Result<[u8; 32], String> {
    Ok(CertInfo::parse(&first_cert_der(pem)?)?.spki_sha256)
}

/// Parses pins: 64 hex digits each (colons and case ignored, so `openssl`
/// style `AB:CD:…` works), several per argument separated by commas.
pub fn parse_pins(args: &[String], flag: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut out = Vec::new();
    for a in args.iter().flat_map(|a| a.split(',')) {
        let t: String = a.trim().chars().filter(|c| *c != ':').collect();
        if t.is_empty() {
            continue;
        }
        let mut pin = [0u8; 32];
        hex::decode_to_slice(&t, &mut pin).map_err(|_| {
            format!(
                "{flag} {a:?}: expected the SHA-256 of a certificate's SubjectPublicKeyInfo as 64 hex digits \
                 (`tandem spki CERT.pem` prints it)"
            )
        })?;
        out.push(pin);
    }
    Ok(out)
}

/// The activation server's TLS: the server configuration (client
/// certificates must chain to the CA) and who the clients must be.
#[derive(Clone)]
pub struct MutualTls {
    pub config: ServerTlsConfig,
    pub peer: PeerIdentity,
}

/// The model server's TLS towards S2: verifies S2's chain and name like any
/// TLS client, presents S1's certificate, then checks S2's role identity.
#[derive(Clone)]
pub struct RoleTlsConnector {
    config: Arc<rustls::ClientConfig>,
    /// Name to verify in S2's certificate; `None`: the URL's host.
    domain: Option<String>,
    peer: PeerIdentity,
}

impl RoleTlsConnector {
    pub fn new(
        ca: &Path,
        cert: &Path,
        key: &Path,
        domain: Option<&str>,
        peer: PeerIdentity,
    ) -> Result<RoleTlsConnector, String> {
        let ca_pem = read_pem(ca, "CA certificate")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca_pem) {
            let c = c.map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("CA certificate {} holds no CERTIFICATE", ca.display()));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(cert, "certificate")?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("certificate {} holds no CERTIFICATE", cert.display()));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&read_pem(key, "private key")?)
            .map_err(|e| format!("private key {}: not a PEM private key ({e})", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| format!("certificate {} and key {} do not go together: {e}", cert.display(), key.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(RoleTlsConnector { config: Arc::new(config), domain: domain.map(str::to_string), peer })
    }

    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }
}

type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<tonic::codegen::http::Uri> for RoleTlsConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Io, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            use std::io::{Error, ErrorKind};
            let host = uri.host().ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("no host in {uri}")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = this.domain.clone().unwrap_or_else(|| host.clone());
            let server_name = ServerName::try_from(name.clone())
                .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("TLS name {name:?}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(this.config.clone()).connect(server_name, tcp).await?;
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let verdict = match leaf {
                Some(c) => this.peer.check(c.as_ref()),
                None => Err("the activation server presented no certificate".to_string()),
            };
            if let Err(e) = verdict {
                tracing::error!(server = %uri, "refusing the activation server: {e}");
                return Err(Error::new(ErrorKind::PermissionDenied, format!("refusing the activation server: {e}")));
            }
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}
