//! `--spawn`: start the real `activation-server` and `model-server` binaries
//! on free loopback ports, so that one command measures everything and knows
//! both pids.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What to start.
pub struct SpawnOptions {
    pub bin_dir: PathBuf,
    /// Directory of models for S1 (already prepared by the caller).
    pub models_dir: PathBuf,
    pub key_file: PathBuf,
    pub key_bits: u32,
    pub s1_args: Vec<String>,
    pub s2_args: Vec<String>,
    /// Where the servers' stderr goes.
    pub log_dir: PathBuf,
    /// How long each server may take to print "listening on" (S2 generates
    /// its key first: seconds at 2048 bits on a loaded machine).
    pub start_timeout: Duration,
}

/// One running server, stopped on drop.
pub struct Server {
    pub name: &'static str,
    child: Child,
    pub addr: SocketAddr,
    pub banner: Vec<String>,
    pub log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM (the servers shut down gracefully on it), then SIGKILL if it
    /// has not exited within `grace`.
    fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill(2) on the pid of our own child, which we have not
        // reaped yet (so the pid cannot have been reused).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < grace {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Both servers. Dropping this stops them (S1 first).
pub struct Spawned {
    pub s1: Server,
    pub s2: Server,
    pub fingerprint: String,
}

impl Spawned {
    pub fn url(&self) -> String {
        format!("http://{}", self.s1.addr)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // S1 first, so S2 does not log S1's sessions as failures.
        self.s1.stop(Duration::from_secs(3));
    }
}

fn binary(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{name} not found in {} (build it with `cargo build --release -p tandem-{}`, or pass --bin-dir DIR)",
            dir.display(),
            if name == "model-server" { "model-server" } else { "activation-server" }
        ))
    }
}

fn start(name: &'static str, bin: &Path, args: &[String], log: &Path, wait: Duration) -> Result<Server, String> {
    let err = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(err));
    // The servers take every flag from TANDEM_* variables too: drop them so
    // that the spawned servers run exactly with the flags below (and the
    // loadgen's own TANDEM_SERVER etc. do not leak in).
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TANDEM_") {
            cmd.env_remove(&k);
        }
    }
    // Warnings only: at the default level both servers log a line per query
    // to stderr, and those writes would be counted in their wchar (bytes
    // per link are measured from /proc/PID/io).
    cmd.env("RUST_LOG", "warn");
    {
        use std::os::unix::process::CommandExt;
        // A process group of its own: a Ctrl-C in the terminal reaches only
        // the loadgen, which then still reads the servers' counters and
        // writes its report before stopping them.
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            // Backstop: if the loadgen dies without stopping the servers
            // (SIGKILL), they die too. The servers are spawned from the main
            // thread, which lives as long as the process.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps reading after the banner so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("listening on ") {
                    let addr = a.trim().parse().map_err(|e| format!("{name} printed a bad address {a:?}: {e}"))?;
                    return Ok(Server { name, child, addr, banner, log: log.to_path_buf() });
                }
                banner.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                if let Ok(Some(status)) = child.try_wait() {
                    let log_text = std::fs::read_to_string(log).unwrap_or_default();
                    return Err(format!("{name} exited ({status}) before listening; its log:\n{log_text}"));
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log_text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("{name} did not start within {wait:?}; its log:\n{log_text}"));
            }
        }
    }
}

/// Starts S2, then S1 pointing at it, both plaintext on 127.0.0.1 with
/// kernel-chosen ports.
pub fn spawn(o: &SpawnOptions) -> Result<Spawned, String> {
    let s2_bin = binary(&o.bin_dir, "activation-server")?;
    let s1_bin = binary(&o.bin_dir, "model-server")?;
    println!("starting the activation server ({}-bit key) and the model server …", o.key_bits);
    let mut s2_args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--key-file".into(),
        o.key_file.display().to_string(),
        "--key-bits".into(),
        o.key_bits.to_string(),
        "--insecure".into(),
    ];
    if o.key_bits < 2048 {
        s2_args.push("--allow-test-key-sizes".into());
    }
    s2_args.extend(o.s2_args.iter().cloned());
    let s2 = start("activation-server", &s2_bin, &s2_args, &o.log_dir.join("activation-server.log"), o.start_timeout)?;
    let fingerprint = s2
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("activation key fingerprint: "))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| format!("the activation server printed no key fingerprint: {:?}", s2.banner))?;
    let mut s1_args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--models".into(),
        o.models_dir.display().to_string(),
        "--activation-server".into(),
        format!("http://{}", s2.addr),
        "--insecure".into(),
    ];
    s1_args.extend(o.s1_args.iter().cloned());
    let s1 = start("model-server", &s1_bin, &s1_args, &o.log_dir.join("model-server.log"), o.start_timeout)?;
    Ok(Spawned { s1, s2, fingerprint })
}
