//! Set-up both servers share (feature `server`): the tonic server builder
//! with keepalive and TLS, a no-delay listener, and logging.

use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

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

/// Logs to stderr, as text (colored on a terminal) or JSON lines, filtered
/// by `RUST_LOG` (default: info, with the HTTP/2 stack quieted).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { b.json().try_init() } else { b.try_init() };
}

/// Completes on Ctrl-C or SIGTERM.
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
}
