//! Development TLS material: a throw-away CA, a certificate for each server
//! and a client certificate, all for loopback names by default.
//!
//! The model server's certificate carries both the serverAuth (for clients)
//! and the clientAuth (for mutual TLS with the activation server) usages.

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One certificate and its private key, PEM.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct DevCerts {
    pub ca: Pair,
    pub activation_server: Pair,
    pub model_server: Pair,
    /// For clients that want to present a certificate (not required by default).
    pub client: Pair,
}

/// (year, month, day) of a Unix day number (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 / 86_400)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Generates the CA and leaf certificates; `names` are the DNS names / IP
/// addresses the servers' certificates are valid for.
pub fn generate(names: &[String], days: i64) -> anyhow::Result<DevCerts> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "tandem development CA");
    ca_params.distinguished_name.push(DnType::OrganizationName, "tandem (development only)");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca_params, days);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Pair { cert_pem: ca_cert.pem(), key_pem: ca_key.serialize_pem() };
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |cn: &str, sans: Vec<String>, ekus: Vec<ExtendedKeyUsagePurpose>| -> anyhow::Result<Pair> {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = ekus;
        validity(&mut p, days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok(Pair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    };
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    Ok(DevCerts {
        activation_server: leaf("tandem activation server", names.to_vec(), vec![ServerAuth])?,
        model_server: leaf("tandem model server", names.to_vec(), vec![ServerAuth, ClientAuth])?,
        client: leaf("tandem client", Vec::new(), vec![ClientAuth])?,
        ca,
    })
}

fn write_file(path: &Path, contents: &str, secret: bool, force: bool) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).with_context(|| {
        format!("cannot create {} (it may already exist: pass --force to overwrite)", path.display())
    })?;
    #[cfg(unix)]
    if secret {
        // `mode` only applies to new files; make sure an overwritten key is 0600 too.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// File names written by [`write`].
pub const FILES: [&str; 8] = [
    "ca.pem",
    "ca-key.pem",
    "activation-server.pem",
    "activation-server-key.pem",
    "model-server.pem",
    "model-server-key.pem",
    "client.pem",
    "client-key.pem",
];

/// Writes the certificates (0644) and keys (0600) into `dir`.
pub fn write(dir: &Path, certs: &DevCerts, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let items = [
        (&certs.ca.cert_pem, false),
        (&certs.ca.key_pem, true),
        (&certs.activation_server.cert_pem, false),
        (&certs.activation_server.key_pem, true),
        (&certs.model_server.cert_pem, false),
        (&certs.model_server.key_pem, true),
        (&certs.client.cert_pem, false),
        (&certs.client.key_pem, true),
    ];
    if !force {
        for name in FILES {
            if dir.join(name).exists() {
                bail!("{} already exists; pass --force to overwrite", dir.join(name).display());
            }
        }
    }
    let mut out = Vec::new();
    for (name, (contents, secret)) in FILES.iter().zip(items) {
        let p = dir.join(name);
        write_file(&p, contents, secret, force)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn writes_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let certs = generate(&["localhost".into(), "127.0.0.1".into()], 30).unwrap();
        let files = write(dir.path(), &certs, false).unwrap();
        assert_eq!(files.len(), 8);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |n: &str| std::fs::metadata(dir.path().join(n)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("ca-key.pem"), 0o600);
            assert_eq!(mode("model-server-key.pem"), 0o600);
            assert_eq!(mode("ca.pem"), 0o644);
        }
        assert!(write(dir.path(), &certs, false).is_err());
        assert!(write(dir.path(), &certs, true).is_ok());
    }
}
