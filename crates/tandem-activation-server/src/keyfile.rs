//! The secret key on disk: JSON (`tandem_paillier::SecretKeyFile`), mode 0600.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::Path;
use tandem_paillier::paillier::SecretKeyFile;
use tandem_paillier::SecretKey;
use tracing::warn;

/// Writes `sk` to a new file `path` with mode 0600 (fails if it exists).
pub fn write_new(path: &Path, sk: &SecretKey) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(&sk.to_file())?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("cannot create key file {}", path.display()))?;
    f.write_all(&json)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

pub fn load(path: &Path) -> anyhow::Result<SecretKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "key file {} has mode {mode:o}: a secret key must not be accessible by group or others; run `chmod 600 {}` (or 400)",
                    path.display(),
                    path.display()
                );
            }
        }
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    let f: SecretKeyFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("key file {} is not a tandem secret key (JSON)", path.display()))?;
    SecretKey::from_file(&f).with_context(|| format!("key file {}", path.display()))
}

/// Loads `path`, or generates a `bits`-bit key and writes it there.
/// Returns the key and whether it was created.
pub fn load_or_create(path: &Path, bits: u32, allow_test_sizes: bool) -> anyhow::Result<(SecretKey, bool)> {
    if path.exists() {
        let sk = load(path)?;
        let have = sk.public().bits();
        if have == 1024 && !allow_test_sizes {
            bail!("key file {} holds a 1024-bit test key; use a 2048- or 3072-bit key", path.display());
        }
        if have != bits {
            warn!(file_bits = have, requested_bits = bits, "the existing key file wins over --key-bits");
        }
        return Ok((sk, false));
    }
    let sk = SecretKey::generate(bits).map_err(|e| anyhow::anyhow!("{e}"))?;
    write_new(path, &sk)?;
    Ok((sk, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        let (sk, created) = load_or_create(&p, 1024, true).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, created) = load_or_create(&p, 2048, true).unwrap();
        assert!(!created);
        assert_eq!(again.public(), sk.public());
        assert!(load_or_create(&p, 1024, false).is_err());
        std::fs::write(&p, b"{}").unwrap();
        assert!(load(&p).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_file_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        load_or_create(&p, 1024, true).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load(&p).expect_err("a group- or world-accessible key must be refused").to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load(&p).is_ok());
    }
}
