//! `tandem-loadgen`: a load generator for running tandem servers.
//!
//! N concurrent clients (each with its own connection) run private
//! inferences for T seconds or Q queries per concurrency level, in one-shot
//! mode (`Infer` with the seed) or ticket mode (tickets fetched ahead with
//! `CreateTicket`, the timed query is the online `Infer` on a ticket). It
//! reports predictions per hour, latency percentiles, errors by kind, CPU
//! seconds per query on each server, memory, and bytes per query on each
//! link, as a table, as JSON and as a PNG plot. With `--model-file` every
//! answer is checked against the model's integer reference, bit for bit.
//! With `--spawn` it starts the two server binaries itself.
//!
//! The servers are measured from the outside through `/proc/PID/…` (Linux):
//! pass their pids (`--s1-pid`, `--s2-pid`) or use `--spawn`.

pub mod data;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod run;
pub mod spawn;
pub mod tcpbytes;

use clap::Parser;
use report::LevelResult;
use run::{Plan, Stop, Work};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tandem_client::{parse_mode, ClientOptions, TandemClient};
use tandem_model::OutputMode;

/// An input range `lo,hi`.
#[derive(Clone, Copy, Debug)]
pub struct Range(pub f64, pub f64);

fn parse_range(s: &str) -> Result<Range, String> {
    tandem_onnx::parse_range(s).map(|(a, b)| Range(a, b))
}

fn parse_levels(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("a concurrency level must be at least 1".into()),
        Ok(n) if n > 4096 => Err(format!("{n} concurrent clients is more than this tool allows (4096)")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of clients (use e.g. --concurrency 1,2,4)")),
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tandem-loadgen",
    version,
    about = "Load generator for tandem servers: concurrent private inferences, throughput, latency, CPU, memory and bytes per link",
    after_help = "Exit status: 0 all queries answered (and equal to the reference with --model-file); \
3 some queries failed or mismatched, or memory grew past --max-rss-growth-mib; 130 interrupted; 1 could not run; 2 bad arguments.\n\n\
Bytes per link called 'tcp' are TCP payload bytes from the kernel's socket counters: TLS records and HTTP/2 + gRPC framing included."
)]
pub struct Cli {
    /// Model server URL: https://host:port (or http://host:port with --insecure). Not with --spawn.
    #[arg(long, required_unless_present_any = ["spawn", "replot"], conflicts_with = "spawn")]
    pub server: Option<String>,
    /// Model id (default: the file stem of --model-file).
    #[arg(long)]
    pub model: Option<String>,
    /// Output mode: label, probabilities, logits or sigmoid (default: the
    /// model's default). The model server must allow it; with --spawn the
    /// spawned one is started with --allow-modes=MODEL=label,MODE.
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<OutputMode>,
    /// PEM CA certificate to verify the model server (default: the web PKI roots).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Name to verify in the server's certificate (default: the URL's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
    /// Allow a plaintext http:// server URL (set automatically with --spawn).
    #[arg(long)]
    pub insecure: bool,
    /// Hex SHA-256 fingerprint of the activation server's key; any other key
    /// is refused (with --spawn: pinned automatically to the new key).
    #[arg(long)]
    pub activation_key_fingerprint: Option<String>,
    /// Deadline of each call, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// API token, for a server that requires one (sent as `authorization:
    /// Bearer <token>`). Prefer the environment variable: command lines are
    /// visible to other users of the machine. Never written to the report.
    #[arg(long, env = "TANDEM_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Concurrency levels, one measured run each: e.g. 1,2,4.
    #[arg(long, value_delimiter = ',', value_parser = parse_levels, default_value = "1")]
    pub concurrency: Vec<usize>,
    /// Length of each level, in seconds (default 30 unless --queries is given).
    #[arg(long, value_parser = parse_secs, conflicts_with = "queries")]
    pub duration: Option<f64>,
    /// Number of queries per level instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub queries: Option<u64>,
    /// Queries run once before the first level, not measured (warms the
    /// connections and the servers' allocations).
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Ticket mode: each worker keeps --ticket-reserve tickets ready
    /// (CreateTicket, off its critical path); the latency measured is the
    /// online query on a ticket, and ticket creation is reported apart.
    #[arg(long)]
    pub tickets: bool,
    /// Seed sessions (PROTOCOL §4.1a): each connection encrypts one secret
    /// per session instead of one seed per query. Off by default, so the
    /// figures stay those of one-shot queries.
    #[arg(long)]
    pub seed_sessions: bool,
    /// Encrypt every seed with full-size `r^N` (a client that sends one
    /// query). By default each connection builds a short-exponent noise
    /// table once and then encrypts at about a tenth of the cost, as a
    /// gateway sending many one-shot queries would (`noise_table` in the
    /// client library).
    #[arg(long)]
    pub full_noise: bool,
    /// Tickets each worker keeps ready in ticket mode.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub ticket_reserve: u64,
    /// Pause of each worker between two queries, in milliseconds (an idle
    /// client; in ticket mode its next ticket is made meanwhile).
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,

    /// One input (CSV row or JSON array, as tandem-client reads it), sent by every query.
    #[arg(long, conflicts_with = "data")]
    pub input: Option<PathBuf>,
    /// A CSV of many input rows (optional header; a --label-column is not an
    /// input), used in turn. Default: random rows in the model's input range.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Column of --data holding the true label (reported as accuracy).
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Use at most this many rows of --data.
    #[arg(long)]
    pub rows: Option<usize>,
    /// Random rows to use when neither --input nor --data is given.
    #[arg(long, default_value_t = 64)]
    pub random_rows: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The model (.tandem or .onnx) the server serves: every answer is then
    /// checked against its integer reference, bit for bit; a mismatch is an error.
    #[arg(long)]
    pub model_file: Option<PathBuf>,
    /// Input range lo,hi of an ONNX --model-file (default: its metadata or NAME.onnx.input-range).
    #[arg(long, value_parser = parse_range)]
    pub input_range: Option<Range>,
    /// Weight quantization of the reference (the model server's --weight-bits).
    #[arg(long, default_value_t = 12)]
    pub weight_bits: u32,

    /// Pid of the model server (S1), for CPU, memory and bytes from /proc.
    #[arg(long, conflicts_with = "spawn")]
    pub s1_pid: Option<u32>,
    /// Pid of the activation server (S2).
    #[arg(long, conflicts_with = "spawn")]
    pub s2_pid: Option<u32>,

    /// Start activation-server and model-server (plaintext, loopback, free
    /// ports, a fresh key unless --key-file) and measure them.
    #[arg(long)]
    pub spawn: bool,
    /// Directory holding the server binaries (default: this executable's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// --spawn: the model server's models directory (default: a temporary
    /// directory holding only --model-file).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// --spawn: the preprocessing engine both servers run (`lattice`, the
    /// servers' default: every layer over Ring-LWE and OT; or `paillier`).
    /// Without --spawn the servers' own --engine decides.
    #[arg(long, value_parser = ["paillier", "lattice"], default_value = "lattice")]
    pub engine: String,
    /// --spawn: Paillier key size of the activation server.
    #[arg(long, default_value_t = 2048)]
    pub key_bits: u32,
    /// --spawn: the activation server's key file (created if missing; default: a fresh key in a temporary directory).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// --spawn: an extra model-server argument (repeatable), e.g. --s1-arg=--workers=2.
    #[arg(long = "s1-arg", allow_hyphen_values = true)]
    pub s1_args: Vec<String>,
    /// --spawn: an extra activation-server argument (repeatable).
    #[arg(long = "s2-arg", allow_hyphen_values = true)]
    pub s2_args: Vec<String>,
    /// --spawn: keep the servers' logs here (default: a temporary directory).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,

    /// Write every level's figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a PNG plot: latency distribution per level, throughput and percentiles vs concurrency.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Fail (exit 3) if either server's resident memory at the end of a level
    /// exceeds its value at the start of the first level by more than this.
    #[arg(long)]
    pub max_rss_growth_mib: Option<f64>,
    /// Redraw --plot (and print the table) from a JSON report of an earlier
    /// run; no server is contacted.
    #[arg(long, conflicts_with_all = ["server", "spawn"], requires = "plot")]
    pub replot: Option<PathBuf>,
    /// Progress line on stderr every this many seconds (0: none).
    #[arg(long, default_value_t = 10)]
    pub progress_secs: u64,
}

/// How a finished run went.
pub struct Outcome {
    pub levels: Vec<LevelResult>,
    pub interrupted: bool,
    /// No errors or mismatches, memory within the bound.
    pub clean: bool,
    pub report: serde_json::Value,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.clean {
            0
        } else {
            // 2 is clap's code for bad arguments.
            3
        }
    }
}

const NOTES: &[&str] = &[
    "latency: one-shot = the whole query at the client (prepare with the seed's Paillier encryption, the Infer round trip, open); ticket mode = the online Infer on a ticket, with CreateTicket timed apart",
    "predictions_per_hour = answered queries equal to the reference (or all answered without --model-file) / elapsed wall time of the level",
    "cpu_s_per_query s1/s2 = utime+stime delta of the server process over the level (/proc/PID/stat) / answered queries; it includes anything else the server did meanwhile",
    "bytes 'tcp' are TCP payload bytes from the kernel's per-socket counters (netlink sock_diag tcp_info: bytes_acked sent, bytes_received), i.e. what the processes wrote into their sockets: TLS records and HTTP/2 + gRPC framing included, TCP/IP headers not. client_to_s1/s1_to_client: this process's sockets (all connections to S1); s1_to_s2/s2_to_s1: the activation server's sockets (S2 talks only to S1; needs its pid, same machine). /proc/PID/io rchar/wchar are not used: Rust sockets read with recv(2), which rchar does not count",
    "bytes 'payload' = protobuf messages with the 5-byte gRPC framing, as the client library (client link) and the model server's QueryStats (server link) count them; no HTTP/2 or TLS",
    "peak_rss_kib is VmHWM (peak since the process started); rss_max_kib the largest VmRSS seen during the level (sampled about every second)",
];

fn check_writable(p: &Path, what: &str) -> Result<(), String> {
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!("{what} {}: the directory {} does not exist", p.display(), dir.display()));
    }
    Ok(())
}

fn write_file(p: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// The command line for the report, with an `--api-token` value replaced:
/// the JSON file may be shared, the token must not be.
fn redacted_command_line(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push("<redacted>".into());
            hide_next = false;
        } else if a == "--api-token" {
            out.push(a);
            hide_next = true;
        } else if a.starts_with("--api-token=") {
            out.push("--api-token=<redacted>".into());
        } else {
            out.push(a);
        }
    }
    out
}

/// The spawned model server's arguments: `--s1-arg`s, and, for a --mode
/// other than label, permission to use it (the model server serves label
/// only unless the model's owner allows more; here the owner is whoever
/// runs the load test). An explicit `--s1-arg=--allow-modes=...` wins.
fn spawn_s1_args(cli: &Cli, model_id: &str) -> Vec<String> {
    let mut args = cli.s1_args.clone();
    let configured = args.iter().any(|a| a.starts_with("--allow-modes"));
    match cli.mode {
        Some(mode) if mode != OutputMode::Label && !configured => {
            args.push(format!("--allow-modes={model_id}=label,{mode}"));
        }
        _ => {}
    }
    args
}

/// Prepares the spawned servers' models directory: the loaded model saved
/// as `<id>.tandem`, so that the server serves exactly the model the
/// answers are checked against (an ONNX file imports to the same model).
fn spawn_models_dir(cli: &Cli, id: &str, model: Option<&tandem_model::Model>, tmp: &Path) -> Result<PathBuf, String> {
    if let Some(d) = &cli.models {
        if !d.is_dir() {
            return Err(format!("--models {}: not a directory", d.display()));
        }
        return Ok(d.clone());
    }
    let model = model.ok_or("--spawn needs --model-file (the model to serve) or --models DIR")?;
    let dir = tmp.join("models");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    tandem_model::format::save(model, &dir.join(format!("{id}.tandem")))
        .map_err(|e| format!("cannot write the model for the model server: {e}"))?;
    Ok(dir)
}

/// Runs the whole load test. Blocking: spawned servers are started from the
/// calling thread (their parent-death signal is tied to it), and the async
/// part runs on a runtime of its own.
pub fn run(cli: Cli) -> Result<Outcome, String> {
    if let Some(j) = &cli.replot {
        return replot(j, cli.plot.as_deref().expect("clap requires --plot with --replot"));
    }
    let started = SystemTime::now();
    let command_line = redacted_command_line(std::env::args());
    if let Some(p) = &cli.json {
        check_writable(p, "--json")?;
    }
    if let Some(p) = &cli.plot {
        check_writable(p, "--plot")?;
    }
    let model_id = match (&cli.model, &cli.model_file) {
        (Some(m), _) => m.clone(),
        (None, Some(f)) => f.file_stem().map(|s| s.to_string_lossy().into_owned()).ok_or("--model-file has no name")?,
        (None, None) => return Err("--model ID is required (or --model-file, whose file stem is then the id)".into()),
    };
    let model =
        cli.model_file.as_deref().map(|p| data::load_model(p, cli.input_range.map(|r| (r.0, r.1)))).transpose()?;
    let inputs = match (&cli.input, &cli.data) {
        (Some(p), _) => Some(data::from_input_file(p)?),
        (None, Some(p)) => Some(data::from_csv(p, &cli.label_column, cli.rows)?),
        (None, None) => None,
    };

    // --spawn: both servers, before any thread of the async runtime exists.
    let tmp = tempfile::Builder::new()
        .prefix("tandem-loadgen-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let spawned = if cli.spawn {
        let bin_dir = match &cli.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .ok_or("cannot find this executable's directory; pass --bin-dir")?,
        };
        let log_dir = cli.log_dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
        std::fs::create_dir_all(&log_dir).map_err(|e| format!("--log-dir {}: {e}", log_dir.display()))?;
        let opts = spawn::SpawnOptions {
            bin_dir,
            models_dir: spawn_models_dir(&cli, &model_id, model.as_ref(), tmp.path())?,
            key_file: cli.key_file.clone().unwrap_or_else(|| tmp.path().join("activation-key.json")),
            key_bits: cli.key_bits,
            s1_args: [vec![format!("--engine={}", cli.engine)], spawn_s1_args(&cli, &model_id)].concat(),
            s2_args: [vec![format!("--engine={}", cli.engine)], cli.s2_args.clone()].concat(),
            log_dir,
            start_timeout: Duration::from_secs(300),
        };
        let s = spawn::spawn(&opts)?;
        println!(
            "activation-server pid {} on {}, model-server pid {} on {} (logs in {})",
            s.s2.pid(),
            s.s2.addr,
            s.s1.pid(),
            s.s1.addr,
            opts.log_dir.display()
        );
        Some(s)
    } else {
        None
    };

    let mut client = ClientOptions::new(match &spawned {
        Some(s) => s.url(),
        None => cli.server.clone().expect("clap requires --server without --spawn"),
    });
    client.tls_ca = cli.tls_ca.clone();
    client.tls_domain = cli.tls_domain.clone();
    client.insecure = cli.insecure || spawned.is_some();
    client.pinned_fingerprint =
        cli.activation_key_fingerprint.clone().or_else(|| spawned.as_ref().map(|s| s.fingerprint.clone()));
    client.timeout = Duration::from_secs(cli.timeout_secs.max(1));
    client.api_token = cli.api_token.clone();
    client.seed_sessions = cli.seed_sessions;
    client.noise_table = !cli.full_noise;
    let plan = Plan {
        client,
        model_id,
        mode: cli.mode,
        levels: cli.concurrency.clone(),
        stop: match (cli.queries, cli.duration) {
            (Some(q), _) => Stop::Queries(q),
            (None, d) => Stop::Duration(Duration::from_secs_f64(d.unwrap_or(30.0))),
        },
        warmup: cli.warmup,
        tickets: cli.tickets,
        reserve: cli.ticket_reserve as usize,
        think: Duration::from_millis(cli.think_ms),
        s1_pid: cli.s1_pid.or(spawned.as_ref().map(|s| s.s1.pid())),
        s2_pid: cli.s2_pid.or(spawned.as_ref().map(|s| s.s2.pid())),
        progress_every: Duration::from_secs(cli.progress_secs),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = rt.block_on(run_async(&cli, &plan, model, inputs, started, command_line, spawned.as_ref()));
    // Let cancelled requests drain before the servers go away.
    rt.shutdown_timeout(Duration::from_secs(2));
    let mut outcome = result?;
    if let Some(mut s) = spawned {
        for srv in [&mut s.s1, &mut s.s2] {
            if let Some(st) = srv.exited() {
                eprintln!("WARN: {} exited during the run ({st}); last log lines:\n{}", srv.name, srv.log_tail(20));
                outcome.clean = false;
            }
        }
    }
    Ok(outcome)
}

fn plot_title(model: &str, mode: &str, tickets: bool, stop: &str, key_bits: u64, started: &str) -> String {
    format!(
        "tandem-loadgen: {model} ({mode}), {} mode, {stop}, {key_bits}-bit key, {started}",
        if tickets { "ticket" } else { "one-shot" }
    )
}

/// `--replot`: the plot and table again from a report.
fn replot(json: &Path, png: &Path) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("cannot read {}: {e}", json.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", json.display()))?;
    let levels: Vec<LevelResult> = serde_json::from_value(report["levels"].clone())
        .map_err(|e| format!("{}: not a tandem-loadgen report: {e}", json.display()))?;
    let tickets = report["tickets"].as_bool().unwrap_or(false);
    let stop = match (report["stop"]["duration_s"].as_f64(), report["stop"]["queries"].as_u64()) {
        (Some(d), _) => format!("{d:.0} s per level"),
        (None, Some(q)) => format!("{q} queries per level"),
        _ => String::new(),
    };
    let title = plot_title(
        report["model"].as_str().unwrap_or("?"),
        report["mode"].as_str().unwrap_or("?"),
        tickets,
        &stop,
        report["activation_key_bits"].as_u64().unwrap_or(0),
        report["started_at"].as_str().unwrap_or(""),
    );
    check_writable(png, "--plot")?;
    plot::plot(png, &title, &levels, tickets)?;
    print!("{}", report::table(&levels, tickets));
    println!("plot: {}", png.display());
    let clean = report["clean"].as_bool().unwrap_or(false);
    let interrupted = report["interrupted"].as_bool().unwrap_or(false);
    Ok(Outcome { levels, interrupted, clean, report })
}

async fn run_async(
    cli: &Cli,
    plan: &Plan,
    model: Option<tandem_model::Model>,
    inputs: Option<data::Inputs>,
    started: SystemTime,
    command_line: Vec<String>,
    spawned: Option<&spawn::Spawned>,
) -> Result<Outcome, String> {
    let (abort_tx, abort_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        eprintln!("\ninterrupted: stopping (the figures so far are still written; Ctrl-C again to quit at once)");
        let _ = abort_tx.send(true);
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });

    if plan.client.server.starts_with("http://") && plan.client.insecure && !cli.spawn {
        eprintln!("WARN: --insecure: plaintext http to {}", plan.client.server);
    }
    let mut c = TandemClient::connect(&plan.client).await.map_err(|e| e.to_string())?;
    let remote = c.model(&plan.model_id).await.map_err(|e| format!("model {:?}: {e}", plan.model_id))?;
    if !remote.pinned {
        eprintln!(
            "WARN: the activation server's key is not pinned (fingerprint {}); pass --activation-key-fingerprint",
            remote.fingerprint
        );
    }
    let mode = plan.mode.unwrap_or(remote.info.default_mode);
    remote.info.check_mode(mode).map_err(|e| e.to_string())?;
    let inputs = inputs.unwrap_or_else(|| data::random(&remote.info, cli.random_rows.max(1), cli.seed));
    data::check_rows(&inputs, &remote.info)?;
    let references = match &model {
        Some(m) => {
            let (m, info, rows, wb) = (m.clone(), remote.info.clone(), inputs.rows.clone(), cli.weight_bits);
            Some(
                tokio::task::spawn_blocking(move || data::references(&m, wb, &info, &rows, mode))
                    .await
                    .map_err(|e| format!("computing the references: {e}"))??,
            )
        }
        None => None,
    };
    println!(
        "model {:?} ({}): input {:?} in [{}, {}], {} outputs, ring k = {}, mode {mode}, activation key {} bits {}{}",
        remote.info.id,
        remote.name,
        remote.info.input_shape,
        remote.info.input_range.0,
        remote.info.input_range.1,
        remote.info.output_len,
        remote.info.ring_bits,
        remote.key.bits(),
        remote.fingerprint,
        if remote.pinned { " (pinned)" } else { "" }
    );
    println!(
        "inputs: {}; answers checked against the integer reference: {}",
        inputs.source,
        if references.is_some() { "yes" } else { "no (pass --model-file)" }
    );
    let stop_desc = match plan.stop {
        Stop::Duration(d) => format!("{:.0} s per level", d.as_secs_f64()),
        Stop::Queries(q) => format!("{q} queries per level"),
    };
    println!(
        "{} mode ({}), concurrency {:?}, {stop_desc}{}",
        if plan.tickets { "ticket" } else { "one-shot" },
        match (plan.client.seed_sessions, plan.client.noise_table) {
            (true, _) => "seed sessions",
            (false, true) => "each seed encrypted with a per-connection DJN noise table",
            (false, false) => "each seed encrypted with full-size r^N",
        },
        plan.levels,
        if plan.s1_pid.is_none() && plan.s2_pid.is_none() {
            "; no server pids (--s1-pid/--s2-pid or --spawn): no server CPU, memory or syscall bytes"
        } else {
            ""
        }
    );
    let work = Arc::new(Work { rows: inputs.rows.clone(), labels: inputs.labels.clone(), references });

    for w in run::warmup(plan, work.clone(), mode, abort_rx.clone()).await {
        eprintln!("WARN: {w}");
    }
    let mut levels: Vec<LevelResult> = Vec::new();
    let mut interrupted = *abort_rx.borrow();
    for &c in &plan.levels {
        if interrupted {
            break;
        }
        println!("level: {c} concurrent client{} …", if c == 1 { "" } else { "s" });
        match run::level(plan, work.clone(), mode, c, abort_rx.clone()).await {
            Ok(l) => {
                interrupted = l.interrupted;
                let lat = l.latency_ms.as_ref().map(|s| format!("p50 {:.1} ms, p95 {:.1} ms", s.p50, s.p95));
                println!(
                    "  {} queries in {:.1} s: {} ok, {} errors, {:.0} predictions/hour{}",
                    l.queries,
                    l.elapsed_s,
                    l.ok,
                    l.errors,
                    l.predictions_per_hour,
                    lat.map(|s| format!(", {s}")).unwrap_or_default()
                );
                for e in &l.error_examples {
                    println!("    {e}");
                }
                levels.push(l);
            }
            Err(e) if *abort_rx.borrow() => {
                eprintln!("{e}");
                interrupted = true;
            }
            Err(e) => {
                // Keep what was measured: report it, then fail.
                if levels.is_empty() {
                    return Err(e);
                }
                eprintln!("error: level {c}: {e}");
                interrupted = true;
            }
        }
    }

    // Memory growth against the first level's start (after the warm-up).
    let mut rss_exceeded = Vec::new();
    if let (Some(bound), Some(first)) = (cli.max_rss_growth_mib, levels.first()) {
        for l in &levels {
            for (name, base, now) in [
                ("model server", first.s1.as_ref(), l.s1.as_ref()),
                ("activation server", first.s2.as_ref(), l.s2.as_ref()),
            ] {
                if let (Some(b), Some(n)) = (base, now) {
                    let growth = (n.rss_end_kib as f64 - b.rss_start_kib as f64) / 1024.0;
                    if growth > bound {
                        rss_exceeded.push(format!(
                            "{name}: resident memory grew by {growth:.1} MiB (bound {bound} MiB) by the end of level {}",
                            l.concurrency
                        ));
                    }
                }
            }
        }
    }
    let errors: u64 = levels.iter().map(|l| l.errors).sum();
    let clean = errors == 0 && rss_exceeded.is_empty() && !levels.is_empty();
    let checked: u64 = levels.iter().map(|l| l.reference_checked).sum();

    let finished = SystemTime::now();
    let report = serde_json::json!({
        "tool": "tandem-loadgen",
        "version": env!("CARGO_PKG_VERSION"),
        "command_line": command_line,
        "started_at": report::rfc3339(started),
        "finished_at": report::rfc3339(finished),
        "server": plan.client.server,
        "model": remote.info.id,
        "model_name": remote.name,
        "model_info": {
            "input_shape": remote.info.input_shape,
            "input_range": [remote.info.input_range.0, remote.info.input_range.1],
            "output_len": remote.info.output_len,
            "ring_bits": remote.info.ring_bits,
        },
        "mode": mode.name(),
        "tickets": plan.tickets,
        "ticket_reserve": plan.tickets.then_some(plan.reserve),
        "think_ms": plan.think.as_millis() as u64,
        "stop": match plan.stop {
            Stop::Duration(d) => serde_json::json!({"duration_s": d.as_secs_f64()}),
            Stop::Queries(q) => serde_json::json!({"queries": q}),
        },
        "warmup_queries": plan.warmup,
        "activation_key_bits": remote.key.bits(),
        "activation_key_fingerprint": remote.fingerprint,
        "pinned": remote.pinned,
        "inputs": inputs.source,
        "input_rows": work.rows.len(),
        "reference_check": {
            "enabled": work.references.is_some(),
            "model_file": cli.model_file.as_ref().map(|p| p.display().to_string()),
            "checked": checked,
            "mismatches": levels.iter().map(|l| l.reference_mismatches).sum::<u64>(),
        },
        "spawned": spawned.map(|s| serde_json::json!({
            "model_server": {"pid": s.s1.pid(), "addr": s.s1.addr.to_string(), "args": cli.s1_args},
            "activation_server": {"pid": s.s2.pid(), "addr": s.s2.addr.to_string(), "args": cli.s2_args},
            "key_bits": cli.key_bits,
        })),
        "s1_pid": plan.s1_pid,
        "s2_pid": plan.s2_pid,
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_start": levels.first().and_then(|l| l.loadavg_start),
            "loadavg_end": levels.last().and_then(|l| l.loadavg_end),
        },
        "interrupted": interrupted,
        "errors": errors,
        "rss_growth_exceeded": rss_exceeded,
        "max_rss_growth_mib": cli.max_rss_growth_mib,
        "clean": clean,
        "notes": NOTES,
        "levels": levels,
    });
    if let Some(p) = &cli.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| format!("JSON: {e}"))?;
        write_file(p, text.as_bytes())?;
    }
    if let Some(p) = &cli.plot {
        if levels.is_empty() {
            eprintln!("WARN: no level finished: no plot");
        } else {
            let title = plot_title(
                &remote.info.id,
                mode.name(),
                plan.tickets,
                &stop_desc,
                remote.key.bits() as u64,
                &report::rfc3339(started),
            );
            plot::plot(p, &title, &levels, plan.tickets)?;
        }
    }
    println!();
    print!("{}", report::table(&levels, plan.tickets));
    println!("(B = bytes per query: TCP payload from the kernel's socket counters, TLS and HTTP/2 framing included; C->S1 / S1->C at the loadgen's sockets, S1->S2 / S2->S1 at S2's, else the protobuf payload; cpu/q = server CPU seconds per query from /proc/PID/stat)");
    if interrupted {
        println!("* interrupted");
    }
    for r in &rss_exceeded {
        println!("FAIL: {r}");
    }
    if let Some(p) = &cli.json {
        println!("JSON: {}", p.display());
    }
    if let Some(p) = &cli.plot {
        if !levels.is_empty() {
            println!("plot: {}", p.display());
        }
    }
    Ok(Outcome { levels, interrupted, clean, report })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_token_stays_out_of_the_report() {
        let args = ["x", "--api-token", "s3cret", "--api-token=s3cret", "--model", "m"].map(String::from);
        let out = super::redacted_command_line(args.into_iter());
        assert_eq!(out, ["x", "--api-token", "<redacted>", "--api-token=<redacted>", "--model", "m"]);
    }
}
