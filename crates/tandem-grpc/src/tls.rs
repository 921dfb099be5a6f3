//! TLS configuration from PEM files, shared by the servers and the client.
//! Errors name the file and what was expected.

use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub(crate) fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let b = std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if !b.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(format!("{what} {} is not a PEM file (no -----BEGIN line)", path.display()));
    }
    Ok(b)
}

pub fn identity(cert: &Path, key: &Path) -> Result<Identity, String> {
    Ok(Identity::from_pem(read_pem(cert, "certificate")?, read_pem(key, "private key")?))
}

pub fn certificate(ca: &Path) -> Result<Certificate, String> {
    Ok(Certificate::from_pem(read_pem(ca, "CA certificate")?))
}

/// Server TLS; with `client_ca`, every client must present a certificate
/// signed by it (mutual TLS).
pub fn server_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTlsConfig, String> {
    let mut cfg = ServerTlsConfig::new().identity(identity(cert, key)?);
    if let Some(ca) = client_ca {
        cfg = cfg.client_ca_root(certificate(ca)?).client_auth_optional(false);
    }
    Ok(cfg)
}

/// Client TLS: trust `ca` (or the bundled web PKI roots when `None` and
/// `webpki_fallback`), present `identity` if given (mutual TLS), and verify
/// the server as `domain` (default: the URL's host).
pub fn client_tls(
    ca: Option<&Path>,
    identity_files: Option<(&Path, &Path)>,
    domain: Option<&str>,
) -> Result<ClientTlsConfig, String> {
    let mut cfg = ClientTlsConfig::new();
    if let Some(ca) = ca {
        cfg = cfg.ca_certificate(certificate(ca)?);
    }
    if let Some((cert, key)) = identity_files {
        cfg = cfg.identity(identity(cert, key)?);
    }
    if let Some(d) = domain {
        cfg = cfg.domain_name(d);
    }
    Ok(cfg)
}

/// `https://…` → TLS, `http://…` → plaintext (needs `--insecure`), no scheme →
/// `https://` is assumed. Returns the normalized URL and whether it is TLS.
pub fn normalize_url(url: &str) -> (String, bool) {
    if let Some(rest) = url.strip_prefix("http://") {
        (format!("http://{rest}"), false)
    } else if url.starts_with("https://") {
        (url.to_string(), true)
    } else {
        (format!("https://{url}"), true)
    }
}
