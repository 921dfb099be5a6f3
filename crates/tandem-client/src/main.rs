//! `tandem-client`: private inference from the command line.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tandem_client::{cpu, describe_output, input, parse_fingerprint, parse_mode, ClientOptions, TandemClient};

#[derive(Parser)]
#[command(name = "tandem-client", version, about = "Private neural-network inference against a tandem model server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one private inference and print the result.
    Infer(InferArgs),
    /// List the models the server offers.
    Models(Conn),
}

#[derive(Args, Clone)]
struct Conn {
    /// Model server URL: https://host:port (or http://host:port with --insecure).
    #[arg(long, env = "TANDEM_SERVER")]
    server: String,
    /// PEM CA certificate to verify the server (default: the web PKI roots).
    #[arg(long, env = "TANDEM_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Name to verify in the server's certificate (default: the URL's host).
    #[arg(long, env = "TANDEM_TLS_DOMAIN")]
    tls_domain: Option<String>,
    /// Allow a plaintext http:// server URL (traffic is unencrypted).
    #[arg(long, env = "TANDEM_INSECURE")]
    insecure: bool,
    /// Deadline of each call, in seconds.
    #[arg(long, env = "TANDEM_TIMEOUT_SECS", default_value_t = 300)]
    timeout_secs: u64,
    /// API token, for a server that requires one (sent as `authorization:
    /// Bearer <token>`). Prefer the environment variable: command lines are
    /// visible to other users of the machine.
    #[arg(long, env = "TANDEM_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
}

#[derive(Args)]
struct InferArgs {
    #[command(flatten)]
    conn: Conn,
    /// Model id (see `tandem-client models`).
    #[arg(long, env = "TANDEM_MODEL")]
    model: String,
    /// Input file: CSV (optional header; a `label` column is set aside, so
    /// tandem-eval's test splits work as they are) or JSON (array, or
    /// {"input": [...]}).
    #[arg(long)]
    input: PathBuf,
    /// The CSV data row to send, from 0 (as tandem-eval numbers samples);
    /// needed when the file has more than one.
    #[arg(long)]
    row: Option<usize>,
    /// Header name of the CSV column holding the true label (not an input).
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Output mode: label, probabilities, logits or sigmoid (default: the model's default).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<tandem_model::OutputMode>,
    /// Hex SHA-256 fingerprint of the activation server's key; the client
    /// refuses to encrypt to any other key.
    #[arg(long, env = "TANDEM_ACTIVATION_KEY_FINGERPRINT", value_parser = parse_fingerprint)]
    activation_key_fingerprint: Option<String>,
    /// Fetch a ticket first (the seed's encryption and all the servers'
    /// homomorphic work, before the input is used), then run the fast
    /// online query on it. With --verbose both phases are reported.
    #[arg(long)]
    ticket: bool,
    /// Also print costs: the client's CPU time and bytes sent/received.
    #[arg(long, short)]
    verbose: bool,
}

fn options(c: &Conn, pin: Option<String>) -> ClientOptions {
    let mut o = ClientOptions::new(c.server.clone());
    o.tls_ca = c.tls_ca.clone();
    o.tls_domain = c.tls_domain.clone();
    o.insecure = c.insecure;
    o.pinned_fingerprint = pin;
    o.timeout = Duration::from_secs(c.timeout_secs.max(1));
    o.api_token = c.api_token.clone();
    // One query per process: a seed session would add a round trip and
    // save nothing (the same one encryption either way).
    o.seed_sessions = false;
    o
}

fn warn_insecure(c: &Conn) {
    if c.server.starts_with("http://") && c.insecure {
        eprintln!("WARN: --insecure: talking to {} over plaintext http; the traffic is unencrypted", c.server);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn kib(b: u64) -> String {
    format!("{b} B ({:.1} KiB)", b as f64 / 1024.0)
}

async fn infer(a: InferArgs) -> Result<(), String> {
    let sample = input::read_sample(&a.input, &input::InputSpec { row: a.row, label_column: &a.label_column })?;
    let x = sample.values;
    warn_insecure(&a.conn);
    let cpu0 = cpu::process_cpu_time();
    let mut client = TandemClient::connect(&options(&a.conn, a.activation_key_fingerprint.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let model = client.model(&a.model).await.map_err(|e| e.to_string())?;
    if !model.pinned {
        eprintln!(
            "WARN: the activation server's key is not pinned (fingerprint {}); pass --activation-key-fingerprint to refuse any other key",
            model.fingerprint
        );
    }
    let (r, pre) = if a.ticket {
        let t = client.create_ticket(&model, a.mode).await.map_err(|e| e.to_string())?;
        let pre = t.cost.clone();
        (client.infer_on_ticket(t, &x).await.map_err(|e| e.to_string())?, Some(pre))
    } else {
        (client.infer_with(&model, &x, a.mode).await.map_err(|e| e.to_string())?, None)
    };
    let cpu_total = cpu::process_cpu_time().saturating_sub(cpu0);
    println!("{}", describe_output(&r.output));
    if a.verbose {
        let c = &r.cost;
        println!(
            "input: {}{}, {} values{}",
            a.input.display(),
            if sample.rows > 1 { format!(" row {} of {}", sample.row, sample.rows) } else { String::new() },
            x.len(),
            sample.label.map(|l| format!(", the file's label {l}")).unwrap_or_default()
        );
        println!("model: {}, mode {}, ring k = {}", model_title(&model.info.id, &model.name), r.mode, model.info.ring_bits);
        println!(
            "activation key: {} ({} bits{})",
            model.fingerprint,
            model.key.bits(),
            if model.pinned { ", pinned" } else { "" }
        );
        println!(
            "client CPU: {} (prepare {} + finish {}); whole process incl. TLS/gRPC: {}",
            ms(c.client_cpu()),
            ms(c.prepare_cpu),
            ms(c.finish_cpu),
            ms(cpu_total)
        );
        println!(
            "bytes sent: {}, received: {} (Infer call, protobuf + gRPC framing)",
            kib(c.bytes_sent),
            kib(c.bytes_received)
        );
        println!("latency: {} (Infer round trip), {} (whole query)", ms(c.round_trip), ms(c.wall));
        if let Some(p) = &pre {
            println!(
                "ticket (preprocessing): {} wall, client CPU {}, sent {}, received {}",
                ms(p.wall),
                ms(p.prepare_cpu),
                kib(p.bytes_sent),
                kib(p.bytes_received)
            );
            if let Some(s) = &p.server {
                print_server("ticket server side", s);
            }
            println!("online query on the ticket:");
        }
        if let Some(s) = &c.server {
            print_server("server", s);
        }
    }
    Ok(())
}

fn print_server(label: &str, s: &tandem_grpc::v1::QueryStats) {
    println!(
        "{label}: model server wall {} (online phase {}, compute {}), {} rounds, S1->S2 {}, S2->S1 {}",
        ms(Duration::from_micros(s.s1_wall_micros)),
        ms(Duration::from_micros(s.online_micros)),
        ms(Duration::from_micros(s.s1_compute_micros)),
        s.rounds,
        kib(s.s1_to_s2_bytes),
        kib(s.s2_to_s1_bytes)
    );
}

/// `id`, or `id (name)` when the model's name says more.
fn model_title(id: &str, name: &str) -> String {
    if name.is_empty() || name == id {
        id.to_string()
    } else {
        format!("{id} ({name})")
    }
}

/// Rows of cells as columns padded to their widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, s)| format!("{s:<w$}", w = width[c])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn models(c: Conn) -> Result<(), String> {
    warn_insecure(&c);
    let mut client = TandemClient::connect(&options(&c, None)).await.map_err(|e| e.to_string())?;
    let models = client.list_models().await.map_err(|e| e.to_string())?;
    if models.is_empty() {
        println!("(no models)");
        return Ok(());
    }
    let mut rows = vec![["MODEL", "INPUT SHAPE", "INPUT RANGE", "OUTPUTS", "RING", "MODES (* = default)"]
        .map(String::from)
        .to_vec()];
    for m in &models {
        let i = &m.info;
        let modes = i
            .modes
            .iter()
            .map(|&md| if md == i.default_mode { format!("{}*", md.name()) } else { md.name().to_string() })
            .collect::<Vec<_>>()
            .join(",");
        let shape = i.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        rows.push(vec![
            model_title(&i.id, &m.name),
            shape,
            format!("[{}, {}]", i.input_range.0, i.input_range.1),
            i.output_len.to_string(),
            format!("Z_2^{}", i.ring_bits),
            modes,
        ]);
    }
    print!("{}", table(&rows));
    // One key serves every model; say so once, and what to do with it.
    let mut fps: Vec<&str> = models.iter().map(|m| m.fingerprint.as_str()).collect();
    fps.dedup();
    for fp in fps {
        println!(
            "activation key fingerprint: {fp} (compare it with the one the activation server's operator gives you, \
             then pin it: infer --activation-key-fingerprint)"
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Infer(a) => infer(a).await,
        Cmd::Models(c) => models(c).await,
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
