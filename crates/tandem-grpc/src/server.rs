//! Set-up both servers share (feature `server`): the flags they have in
//! common, the tonic server builder with keepalive and TLS, a no-delay
//! listener, logging, the shutdown signal and the blocking-pool hop.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::Status;

/// The flags both servers take, with one set of names, environment
/// variables and defaults (flattened into each server's `Config`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerFlags {
    /// PEM certificate of this server. The model server also presents it as
    /// its client certificate to the activation server (mutual TLS).
    #[arg(long, env = "TANDEM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TANDEM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate the other server's certificate must chain to
    /// (mutual TLS between the servers; the activation server requires it
    /// with --tls-cert).
    #[arg(long, env = "TANDEM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Plaintext gRPC without TLS (development only: traffic is unencrypted
    /// and unauthenticated).
    #[arg(long, env = "TANDEM_INSECURE")]
    pub insecure: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "TANDEM_LOG_JSON")]
    pub log_json: bool,
    /// Largest message exchanged between the servers, in bytes.
    #[arg(
        long,
        alias = "max-message-bytes",
        env = "TANDEM_MAX_INTERNAL_MESSAGE_BYTES",
        default_value_t = crate::DEFAULT_MAX_INTERNAL_MESSAGE_BYTES
    )]
    pub max_internal_message_bytes: usize,
    /// The preprocessing engine: `lattice` (default: every layer's product
    /// over Ring-LWE and the per-neuron products by OT multiplication,
    /// docs/PROTOCOL.md §4.2c; models it cannot take, such as 256-bit
    /// rings, run on Paillier), or `paillier` (every step on Paillier). An
    /// activation server on `lattice` also serves model servers on
    /// `paillier`; a model server on `lattice` needs an activation server
    /// on `lattice`.
    #[arg(long, env = "TANDEM_ENGINE", value_enum, default_value_t = EngineKind::Lattice)]
    pub engine: EngineKind,
}

/// The preprocessing engine a server runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// Paillier for every homomorphic step (docs/PROTOCOL.md §4.2–§4.8).
    Paillier,
    /// Every linear layer on Ring-LWE and every per-neuron product by OT
    /// multiplication (§4.2c); the first layer only (§4.2b) without an OT
    /// setup; Paillier for what neither can take. The servers' default.
    #[default]
    Lattice,
}

/// Runs `f` on tokio's blocking pool (the protocol's heavy steps must not
/// stall the async workers) and measures it. `server` names the process in
/// the status a failed worker becomes.
pub async fn blocking<T: Send + 'static>(
    server: &'static str,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<(T, Duration), Status> {
    let t = Instant::now();
    let r = tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!("a {server} worker failed: {e}");
        Status::internal(format!("internal error in the {server} (worker failed)"))
    })??;
    Ok((r, t.elapsed()))
}

/// A tonic server with HTTP/2 keepalive (so a vanished peer's streams end)
/// and, when given, TLS.
pub fn builder(tls: Option<ServerTlsConfig>) -> Result<Server, String> {
    let builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    match tls {
        Some(tls) => builder.tls_config(tls).map_err(|e| format!("TLS configuration: {e}")),
        None => Ok(builder),
    }
}

/// The listener's connections with Nagle off: the protocol's rounds are
/// small request/response pairs, and Nagle would add delay to each.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Keeps freed memory in the process instead of returning it to the kernel
/// at once. A lattice query allocates and frees tens of megabytes of
/// polynomials and messages; with glibc's defaults many of those buffers
/// were fresh `mmap`s, so every query paid page faults and page zeroing
/// again. Measured in the load generator (release build, MNIST MLP, lattice
/// engine, concurrency 4, 30 s each, back to back): 120,839 predictions an
/// hour with these thresholds, 102,146 without (S1's CPU per query 28 ms
/// against 35 ms), for about 35 MiB more resident memory in S1.
/// Called first thing in both servers' `main`; a no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; these two are
    // documented as adjustable at any time, and a refused value (return 0)
    // leaves glibc's default in place.
    unsafe {
        // Allocations below 32 MiB come from the heap, not from mmap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // Free heap memory is returned to the kernel above 256 MiB.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Logs to stderr, as text (colored on a terminal) or JSON lines, filtered
/// by `RUST_LOG` (default: info, with the HTTP/2 stack quieted).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { b.json().try_init() } else { b.try_init() };
}

/// Completes on Ctrl-C or SIGTERM, and logs that the server is shutting
/// down.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
