//! S2, the activation server, as a gRPC service (`tandem.v1.ActivationService`).
//!
//! A thin shell around [`tandem_protocol::activation_server`]: each
//! `Session` stream is decoded message by message into the protocol's
//! structs, the matching [`ActivationSession`] step runs on
//! `tokio::task::spawn_blocking`, and the answer is encoded back. The replay
//! set is shared; everything else about a session lives in its task and is
//! dropped when the stream ends, fails or times out.

use anyhow::{bail, Context};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_crypto::{Ring, SecretKey, U256};
use tandem_proto::v1 as pb;
use tandem_proto::v1::activation_service_server::{ActivationService, ActivationServiceServer};
use tandem_proto::{status_from_protocol, wire_len};
use tandem_protocol::activation_server::{decrypt_seed, open_session, ActivationKeys};
use tandem_protocol::ActivationSession;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, error, info, warn};

pub mod keyfile;

/// Command-line / environment configuration of `activation-server`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "activation-server",
    version,
    about = "tandem activation server (S2): holds the Paillier key and evaluates activations on blinded values",
    long_about = "tandem activation server (S2). Holds the Paillier key pair (created on first start), \
                  evaluates ReLU/sigmoid/tanh/softmax/argmax on blinded values for the model server, and \
                  seals results for clients. Only the model server talks to it: run it with mutual TLS \
                  (--tls-cert, --tls-key, --tls-ca). Every flag can also be set by the environment \
                  variable shown."
)]
pub struct Config {
    /// Address to listen on (port 0: pick a free port; the bound address is printed).
    #[arg(long, env = "TANDEM_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Secret key file (JSON). Loaded if it exists; otherwise a new key is
    /// generated and written there with mode 0600.
    #[arg(long, env = "TANDEM_KEY_FILE", default_value = "activation-key.json")]
    pub key_file: PathBuf,
    /// Paillier modulus size for a new key: 2048 (default) or 3072.
    #[arg(long, env = "TANDEM_KEY_BITS", default_value_t = 2048)]
    pub key_bits: u32,
    /// Tests only: also accept 1024-bit keys (insecure).
    #[arg(long, env = "TANDEM_ALLOW_TEST_KEY_SIZES", hide = true)]
    pub allow_test_key_sizes: bool,
    /// Largest number of concurrent sessions; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TANDEM_MAX_SESSIONS", default_value_t = 64)]
    pub max_sessions: usize,
    /// A session (one query) that has not finished after this many seconds is
    /// aborted with DEADLINE_EXCEEDED and its state dropped.
    #[arg(long, env = "TANDEM_SESSION_TIMEOUT_SECS", default_value_t = 300)]
    pub session_timeout_secs: u64,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "TANDEM_MAX_MESSAGE_BYTES", default_value_t = tandem_proto::DEFAULT_MAX_INTERNAL_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// PEM certificate of this server (TLS).
    #[arg(long, env = "TANDEM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of this server.
    #[arg(long, env = "TANDEM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate that model servers' client certificates must chain
    /// to (mutual TLS: required with --tls-cert).
    #[arg(long, env = "TANDEM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Serve plaintext gRPC without TLS (development only: traffic is unencrypted).
    #[arg(long, env = "TANDEM_INSECURE")]
    pub insecure: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "TANDEM_LOG_JSON")]
    pub log_json: bool,
}

/// Shared state of one activation server.
pub struct ActivationState {
    keys: Arc<ActivationKeys>,
    fingerprint: String,
    /// Replay tags of every seed seen since start (PROTOCOL §4.2).
    seen: Mutex<HashSet<[u8; 32]>>,
    sessions: Arc<Semaphore>,
    max_sessions: usize,
    session_timeout: Duration,
}

impl ActivationState {
    pub fn new(sk: SecretKey, max_sessions: usize, session_timeout: Duration) -> Arc<Self> {
        let fingerprint = sk.public().fingerprint();
        Arc::new(ActivationState {
            keys: Arc::new(ActivationKeys::new(sk)),
            fingerprint,
            seen: Mutex::new(HashSet::new()),
            sessions: Arc::new(Semaphore::new(max_sessions)),
            max_sessions,
            session_timeout,
        })
    }
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    pub fn active_sessions(&self) -> usize {
        self.max_sessions - self.sessions.available_permits()
    }
}

/// The tonic service.
#[derive(Clone)]
pub struct ActivationSvc {
    state: Arc<ActivationState>,
}

pub fn service(state: Arc<ActivationState>, max_message_bytes: usize) -> ActivationServiceServer<ActivationSvc> {
    ActivationServiceServer::new(ActivationSvc { state })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::S2ToS1, Status>> + Send>>;

#[tonic::async_trait]
impl ActivationService for ActivationSvc {
    async fn get_public_key(
        &self,
        _: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::PaillierPublicKey>, Status> {
        Ok(Response::new(tandem_proto::public_key_to_proto(self.state.keys.public_key())))
    }

    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Result<Response<pb::ActivationStatus>, Status> {
        let s = &self.state;
        let seen = s.seen.lock().map(|g| g.len()).unwrap_or(0);
        Ok(Response::new(pb::ActivationStatus {
            active_sessions: s.active_sessions() as u32,
            max_sessions: s.max_sessions as u32,
            seen_seeds: seen as u64,
            key_fingerprint: s.fingerprint.clone(),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(&self, request: Request<Streaming<pb::S1ToS2>>) -> Result<Response<SessionStream>, Status> {
        let state = self.state.clone();
        let permit = state.sessions.clone().try_acquire_owned().map_err(|_| {
            warn!(max_sessions = state.max_sessions, "session refused: at the concurrent-session limit");
            Status::resource_exhausted(format!(
                "the activation server is at its limit of {} concurrent sessions; retry later",
                state.max_sessions
            ))
        })?;
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _permit = permit; // released when the session ends, however it ends
            let t0 = Instant::now();
            let mut log = SessionLog::default();
            let outcome = tokio::time::timeout(state.session_timeout, drive(&state, inbound, &tx, &mut log)).await;
            let result = match outcome {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "the session did not finish within the activation server's {} s session timeout",
                    state.session_timeout.as_secs()
                ))),
            };
            let ms = t0.elapsed().as_millis() as u64;
            match result {
                Ok(()) => {
                    info!(session = %log.id, ring_bits = log.ring_bits, input_len = log.input_len, rounds = log.rounds, compute_ms = log.compute.as_millis() as u64, wall_ms = ms, "session finished")
                }
                Err(status) => {
                    if status.code() == tonic::Code::Cancelled {
                        info!(session = %log.id, rounds = log.rounds, wall_ms = ms, ?peer, "session abandoned by the model server: {}", status.message());
                    } else {
                        warn!(session = %log.id, rounds = log.rounds, wall_ms = ms, code = ?status.code(), ?peer, "session failed: {}", status.message());
                    }
                    // The receiver may be gone; then there is nobody to tell.
                    let _ = tx.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What a finished or failed session logs (no secrets: the session id is
/// public to both servers and the client).
#[derive(Default)]
struct SessionLog {
    id: String,
    ring_bits: u32,
    input_len: u32,
    rounds: u32,
    compute: Duration,
}

/// Runs `f` on the blocking pool and measures it.
async fn blocking<T: Send + 'static>(
    log: &mut SessionLog,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<(T, Duration), Status> {
    let t = Instant::now();
    let r = tokio::task::spawn_blocking(f).await.map_err(|e| {
        error!("a session worker failed: {e}");
        Status::internal("internal error in the activation server (worker failed)")
    })??;
    let d = t.elapsed();
    log.compute += d;
    Ok((r, d))
}

async fn next(inbound: &mut Streaming<pb::S1ToS2>, expecting: &str) -> Result<pb::s1_to_s2::Msg, Status> {
    match inbound.message().await {
        Ok(Some(pb::S1ToS2 { msg: Some(m) })) => Ok(m),
        Ok(Some(pb::S1ToS2 { msg: None })) => {
            Err(Status::invalid_argument(format!("empty message; expected {expecting}")))
        }
        Ok(None) => Err(Status::cancelled(format!("the model server closed the stream before sending {expecting}"))),
        Err(s) => {
            Err(Status::cancelled(format!("the model server's stream failed before {expecting}: {}", s.message())))
        }
    }
}

async fn send(
    tx: &mpsc::Sender<Result<pb::S2ToS1, Status>>,
    msg: pb::s2_to_s1::Msg,
    compute: Duration,
) -> Result<(), Status> {
    let m = pb::S2ToS1 { msg: Some(msg), compute_micros: compute.as_micros() as u64 };
    debug!(bytes = wire_len(&m), "sending");
    tx.send(Ok(m)).await.map_err(|_| Status::cancelled("the model server went away"))
}

fn short_id(id: &[u8]) -> String {
    hex::encode(&id[..id.len().min(8)])
}

async fn drive(
    state: &Arc<ActivationState>,
    mut inbound: Streaming<pb::S1ToS2>,
    tx: &mpsc::Sender<Result<pb::S2ToS1, Status>>,
    log: &mut SessionLog,
) -> Result<(), Status> {
    let start = match next(&mut inbound, "SessionStart").await? {
        pb::s1_to_s2::Msg::Start(s) => s,
        _ => return Err(Status::invalid_argument("the first message of a session must be SessionStart")),
    };
    log.id = short_id(&start.session_id);
    log.ring_bits = start.ring_bits;
    log.input_len = start.input_len;
    if start.key_fingerprint != state.fingerprint {
        return Err(Status::failed_precondition(format!(
            "the model server encrypts to key {}, but this activation server's key is {} (was it restarted with a new key? the model server must fetch the key again)",
            if start.key_fingerprint.is_empty() { "(none given)" } else { &start.key_fingerprint },
            state.fingerprint
        )));
    }
    match start.ring_bits {
        128 => drive_ring::<u128>(state, start, inbound, tx, log).await,
        256 => drive_ring::<U256>(state, start, inbound, tx, log).await,
        k => Err(Status::invalid_argument(format!("ring_bits = {k}; accepted 128 or 256"))),
    }
}

async fn drive_ring<R: Ring>(
    state: &Arc<ActivationState>,
    start: pb::SessionStart,
    mut inbound: Streaming<pb::S1ToS2>,
    tx: &mpsc::Sender<Result<pb::S2ToS1, Status>>,
    log: &mut SessionLog,
) -> Result<(), Status> {
    let keys = state.keys.clone();
    // §4.2: decrypt the seed (outside any lock), then refuse replays.
    let ((msg, seed, tag), d1) = blocking(log, move || {
        let msg = tandem_proto::session_start_from_proto(keys.public_key(), &start)?;
        let (seed, tag) = decrypt_seed::<R>(&keys, &msg).map_err(|e| status_from_protocol(&e))?;
        Ok((msg, seed, tag))
    })
    .await?;
    {
        let mut seen = state.seen.lock().map_err(|_| Status::internal("replay set poisoned"))?;
        if !seen.insert(tag) {
            return Err(status_from_protocol(&tandem_protocol::ProtocolError::ReplayedSeed));
        }
    }
    let keys = state.keys.clone();
    let ((mut session, masks), d2) = blocking(log, move || {
        let (session, masks) = open_session::<R>(keys.clone(), &msg, seed);
        Ok((session, tandem_proto::input_masks_to_proto(keys.public_key(), &masks)))
    })
    .await?;
    send(tx, pb::s2_to_s1::Msg::Masks(masks), d1 + d2).await?;
    loop {
        match next(&mut inbound, "ActivationRequest or OutputRequest").await? {
            pb::s1_to_s2::Msg::Activate(req) => {
                let keys = state.keys.clone();
                let ((s, resp), d) = blocking(log, move || {
                    let pk = keys.public_key();
                    let req = tandem_proto::activation_request_from_proto::<R>(pk, &req)?;
                    let resp = session.activate(&req).map_err(|e| status_from_protocol(&e))?;
                    Ok((session, tandem_proto::activation_response_to_proto(pk, &resp)))
                })
                .await?;
                session = s;
                log.rounds += 1;
                send(tx, pb::s2_to_s1::Msg::Activation(resp), d).await?;
            }
            pb::s1_to_s2::Msg::Finish(req) => {
                let keys = state.keys.clone();
                let (resp, d) = blocking(log, move || {
                    let req = tandem_proto::output_request_from_proto::<R>(keys.public_key(), &req)?;
                    finish(session, &req)
                })
                .await?;
                log.rounds += 1;
                send(tx, pb::s2_to_s1::Msg::Output(resp), d).await?;
                return Ok(());
            }
            pb::s1_to_s2::Msg::Start(_) => {
                return Err(Status::invalid_argument("SessionStart sent twice: one session per stream"))
            }
        }
    }
}

fn finish<R: Ring>(
    session: ActivationSession<R>,
    req: &tandem_protocol::OutputRequest<R>,
) -> Result<pb::OutputResponse, Status> {
    let out = session.finish(req).map_err(|e| status_from_protocol(&e))?;
    Ok(pb::OutputResponse { sealed: out.sealed })
}

/// Serves `svc` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    svc: ActivationServiceServer<ActivationSvc>,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("TLS configuration")?;
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    builder.add_service(svc).serve_with_incoming_shutdown(incoming, shutdown).await.context("gRPC server")?;
    Ok(())
}

pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { b.json().try_init() } else { b.try_init() };
}

fn check_key_bits(bits: u32, allow_test: bool) -> anyhow::Result<()> {
    match bits {
        2048 | 3072 => Ok(()),
        1024 if allow_test => {
            warn!("using a 1024-bit Paillier key: for tests only, NOT secure");
            Ok(())
        }
        _ => bail!("--key-bits {bits}: accepted 2048 (default) or 3072"),
    }
}

/// TLS from the config: mutual TLS, or `None` with `--insecure`.
pub fn tls_from_config(cfg: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let Some(ca) = &cfg.tls_ca else {
                bail!("--tls-ca is required with --tls-cert: the activation server accepts only model servers that present a client certificate signed by that CA (mutual TLS)");
            };
            Ok(Some(tandem_proto::tls::server_tls(cert, key, Some(ca)).map_err(anyhow::Error::msg)?))
        }
        _ if cfg.insecure => {
            warn!("--insecure: serving plaintext gRPC WITHOUT TLS; traffic between the servers is unencrypted and unauthenticated (development only)");
            Ok(None)
        }
        _ => bail!("no TLS configured: pass --tls-cert, --tls-key and --tls-ca (mutual TLS), or --insecure for unencrypted development use"),
    }
}

/// The `activation-server` program.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    check_key_bits(cfg.key_bits, cfg.allow_test_key_sizes)?;
    if cfg.max_sessions == 0 {
        bail!("--max-sessions must be at least 1");
    }
    let tls = tls_from_config(&cfg)?;
    let path = cfg.key_file.clone();
    let (bits, allow) = (cfg.key_bits, cfg.allow_test_key_sizes);
    let (sk, created) = tokio::task::spawn_blocking(move || keyfile::load_or_create(&path, bits, allow)).await??;
    let fp = sk.public().fingerprint();
    if created {
        info!(bits = sk.public().bits(), path = %cfg.key_file.display(), "generated a new Paillier key");
    } else {
        info!(bits = sk.public().bits(), path = %cfg.key_file.display(), "loaded the Paillier key");
    }
    println!("activation key fingerprint: {fp}");
    let state = ActivationState::new(sk, cfg.max_sessions, Duration::from_secs(cfg.session_timeout_secs.max(1)));
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, tls = tls.is_some(), max_sessions = cfg.max_sessions, session_timeout_secs = cfg.session_timeout_secs, "activation server listening");
    println!("listening on {addr}");
    serve(listener, service(state, cfg.max_message_bytes), tls, shutdown_signal()).await
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
    info!("shutting down");
}

/// Loads the key without creating it (for tools).
pub fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    keyfile::load(path)
}
