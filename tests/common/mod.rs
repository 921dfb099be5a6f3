//! Helpers for tests that run the real server binaries.
//!
//! The binaries belong to other packages of the workspace, so
//! `CARGO_BIN_EXE_*` is not available here. [`bin`] builds them once per test
//! run with the same cargo and profile as the test itself (a no-op when they
//! are up to date) and returns their path. `TANDEM_BIN_DIR` overrides this
//! with a directory of prebuilt binaries.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

pub const PACKAGES: [&str; 5] =
    ["tandem-activation-server", "tandem-model-server", "tandem-client", "tandem-cli", "tandem-loadgen"];

fn target_profile_dir() -> PathBuf {
    // target/<profile>/deps/services-<hash>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

fn build_binaries() -> PathBuf {
    if let Ok(dir) = std::env::var("TANDEM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let dir = target_profile_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).arg("build").arg("--bins");
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    // The profile this test was built with: `release` for `cargo test
    // --release`, else the test profile (which also lands in target/debug).
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => {
            cmd.arg("--release");
        }
        _ => {
            cmd.args(["--profile", "test"]);
        }
    }
    // Cargo sets per-package variables for the test process; build scripts
    // that track them (ring does) would otherwise rerun and rebuild half the
    // workspace on every nested build.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let per_package = k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || matches!(
                k.as_str(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if per_package {
            cmd.env_remove(&k);
        }
    }
    let status = cmd.status().expect("running cargo build for the server binaries");
    assert!(status.success(), "cargo build of the server binaries failed");
    dir
}

/// Path of one of the workspace's binaries, built if needed.
pub fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let p = DIR.get_or_init(build_binaries).join(name);
    assert!(p.exists(), "{} does not exist", p.display());
    p
}

/// A server process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    /// Lines the process printed on stdout before "listening on …".
    pub banner: Vec<String>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `args`, stderr to `log`, and waits (up to `wait`)
    /// for its "listening on ADDR" line.
    pub fn start(bin: &Path, args: &[String], log: &Path, wait: Duration) -> Proc {
        let err = std::fs::File::create(log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(err));
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            // Backstop: if the test process dies without dropping us, the
            // server dies too.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        let addr = a.trim().parse().expect("address");
                        return Proc { child, addr, banner, log: log.to_path_buf() };
                    }
                    banner.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} did not start within {wait:?}; its log:\n{}",
                        bin.display(),
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// An activation server with a 1024-bit test key stored at `key_file`
/// (created on first use), plaintext on loopback.
pub fn activation_server(dir: &Path, key_file: &Path, extra: &[&str], listen: &str) -> Proc {
    let mut args = s(&[
        "--listen",
        listen,
        "--key-file",
        key_file.to_str().unwrap(),
        "--key-bits",
        "1024",
        "--allow-test-key-sizes",
        "--insecure",
    ]);
    args.extend(s(extra));
    let log = dir.join(format!("s2-{}.log", unique()));
    Proc::start(&bin("activation-server"), &args, &log, Duration::from_secs(120))
}

/// A model server for the models in `models`, plaintext on loopback.
pub fn model_server(dir: &Path, models: &Path, s2: &str, extra: &[&str]) -> Proc {
    let mut args =
        s(&["--listen", "127.0.0.1:0", "--models", models.to_str().unwrap(), "--activation-server", s2, "--insecure"]);
    args.extend(s(extra));
    let log = dir.join(format!("s1-{}.log", unique()));
    Proc::start(&bin("model-server"), &args, &log, Duration::from_secs(120))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The repository root (data/, models/, docs/ are read from it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (header, rows) of one of data/'s CSVs: numeric, with a header line.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(str::to_string).collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|v| v.trim().parse().unwrap()).collect())
        .collect();
    (header, rows)
}
