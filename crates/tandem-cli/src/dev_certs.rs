//! Development TLS material: a throw-away CA, a certificate for each server
//! and a client certificate, all for loopback names by default.
//!
//! Each server certificate carries its ROLE as a URI subject alternative name
//! (`urn:tandem:role:activation-server`, `urn:tandem:role:model-server`):
//! the activation server accepts only client certificates with the model
//! server's role (or a pinned key), and the model server only an activation
//! server with the activation server's role, so the client certificate, or
//! one server's certificate presented by the other, is refused although the
//! same CA signed it. The model server's certificate carries both the
//! serverAuth (for clients) and the clientAuth (for mutual TLS with the
//! activation server) usages.

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use tandem_grpc::peer::{ACTIVATION_SERVER_ROLE, MODEL_SERVER_ROLE};

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
/// addresses both servers' certificates are valid for.
pub fn generate(names: &[String], days: i64) -> anyhow::Result<DevCerts> {
    generate_for_roles(names, &[], &[], days)
}

/// Like [`generate`], plus names only the activation server's certificate
/// (`activation_names`) or only the model server's (`model_names`) holds.
pub fn generate_for_roles(
    names: &[String],
    activation_names: &[String],
    model_names: &[String],
    days: i64,
) -> anyhow::Result<DevCerts> {
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

    let leaf =
        |cn: &str, sans: Vec<String>, role: Option<&str>, ekus: Vec<ExtendedKeyUsagePurpose>| -> anyhow::Result<Pair> {
            let mut p = CertificateParams::new(sans)?;
            if let Some(role) = role {
                p.subject_alt_names.push(SanType::URI(role.try_into()?));
            }
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
    let with = |extra: &[String]| -> Vec<String> {
        let mut v = names.to_vec();
        v.extend(extra.iter().filter(|n| !names.contains(n)).cloned());
        v
    };
    Ok(DevCerts {
        activation_server: leaf(
            "tandem activation server",
            with(activation_names),
            Some(ACTIVATION_SERVER_ROLE),
            vec![ServerAuth],
        )?,
        model_server: leaf(
            "tandem model server",
            with(model_names),
            Some(MODEL_SERVER_ROLE),
            vec![ServerAuth, ClientAuth],
        )?,
        // No role: a client may present it to the model server, and the
        // activation server must refuse it.
        client: leaf("tandem client", Vec::new(), None, vec![ClientAuth])?,
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

/// File names written by [`write()`].
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

/// Where [`write_split`] puts each party's files. The CA key goes only to
/// `ca`; every other directory gets its party's certificate and key and
/// `ca.pem`, so a server's volume never holds the CA key or the other
/// party's key.
pub struct Dirs<'a> {
    pub ca: &'a Path,
    pub activation_server: &'a Path,
    pub model_server: &'a Path,
    pub client: &'a Path,
}

/// Writes the certificates (0644) and keys (0600) into `dir`.
pub fn write(dir: &Path, certs: &DevCerts, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    write_split(&Dirs { ca: dir, activation_server: dir, model_server: dir, client: dir }, certs, force)
}

/// Writes each party's files into its own directory (see [`Dirs`]).
pub fn write_split(dirs: &Dirs, certs: &DevCerts, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut items: Vec<(PathBuf, &str, bool)> =
        vec![(dirs.ca.join(FILES[0]), &certs.ca.cert_pem, false), (dirs.ca.join(FILES[1]), &certs.ca.key_pem, true)];
    for (dir, names, pair) in [
        (dirs.activation_server, [FILES[2], FILES[3]], &certs.activation_server),
        (dirs.model_server, [FILES[4], FILES[5]], &certs.model_server),
        (dirs.client, [FILES[6], FILES[7]], &certs.client),
    ] {
        items.push((dir.join(names[0]), &pair.cert_pem, false));
        items.push((dir.join(names[1]), &pair.key_pem, true));
        items.push((dir.join(FILES[0]), &certs.ca.cert_pem, false));
    }
    let mut seen = std::collections::HashSet::new();
    items.retain(|(p, _, _)| seen.insert(p.clone()));
    for (p, _, _) in &items {
        let dir = p.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if !force && p.exists() {
            bail!("{} already exists; pass --force to overwrite", p.display());
        }
    }
    let mut out = Vec::new();
    for (p, contents, secret) in items {
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

    #[test]
    fn split_keeps_the_ca_key_and_other_keys_out_of_each_servers_dir() {
        let root = tempfile::tempdir().unwrap();
        let d = |n: &str| root.path().join(n);
        let (ca, s2, s1, cl) = (d("ca"), d("s2"), d("s1"), d("client"));
        let certs = generate_for_roles(&["localhost".into()], &["activation-server".into()], &[], 30).unwrap();
        let dirs = Dirs { ca: &ca, activation_server: &s2, model_server: &s1, client: &cl };
        write_split(&dirs, &certs, false).unwrap();
        let ls = |p: &Path| {
            let mut v: Vec<String> =
                std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        };
        assert_eq!(ls(&ca), ["ca-key.pem", "ca.pem"]);
        assert_eq!(ls(&s2), ["activation-server-key.pem", "activation-server.pem", "ca.pem"]);
        assert_eq!(ls(&s1), ["ca.pem", "model-server-key.pem", "model-server.pem"]);
        assert_eq!(ls(&cl), ["ca.pem", "client-key.pem", "client.pem"]);
        // Role-specific names: only S2's certificate is valid for "activation-server".
        let has = |pem: &str, needle: &[u8]| {
            let der = tandem_grpc::peer::first_cert_der(pem.as_bytes()).unwrap();
            der.windows(needle.len()).any(|w| w == needle)
        };
        assert!(has(&certs.activation_server.cert_pem, b"activation-server"));
        assert!(!has(&certs.model_server.cert_pem, b"activation-server"));
        assert!(has(&certs.activation_server.cert_pem, ACTIVATION_SERVER_ROLE.as_bytes()));
        assert!(has(&certs.model_server.cert_pem, MODEL_SERVER_ROLE.as_bytes()));
        assert!(!has(&certs.client.cert_pem, b"urn:tandem:role"));
    }
}
