//! S2, the activation server, as a gRPC service (`tandem.v1.ActivationService`).
//!
//! A thin shell around [`tandem_paillier::activation_server`] (the
//! preprocessing) and [`tandem_core::activation`] (the online phase): each
//! `Preprocess` stream is decoded message by message into the protocol's
//! structs, the matching preprocessing step runs on
//! `tokio::task::spawn_blocking`, and the answer is encoded back; the
//! preprocessed session is then kept in a bounded, expiring store until one
//! `Evaluate` stream takes it for the (cheap, inline) online phase. The
//! replay set is shared; a session's state is dropped when its stream
//! fails or times out, when it is evaluated, or when it expires.

use tandem_grpc::OrStatus;
use anyhow::{bail, Context};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::store::{ExpiringStore, StoreError, Taken};
use tandem_core::{ActivationServer, ActivationSession, Admitted, PreprocessingEngine};
use tandem_grpc::peer::MutualTls;
use tandem_grpc::v1 as pb;
use tandem_grpc::v1::activation_service_server::{ActivationService, ActivationServiceServer};
use tandem_grpc::{status_from_protocol, wire_len};
use tandem_paillier::activation_server::{open_session, ActivationKeys};
use tandem_grpc::server::EngineKind;
use tandem_lattice_engine::tandem_lattice::{Context as RlweContext, SeededCiphertext};
use tandem_lattice_engine::{LatticeEngine, LatticeKeys, PublicKeyInfo};
use tandem_paillier::PaillierEngine;
use tandem_paillier::{Ring, SecretKey, U256};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

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
    /// Largest number of concurrent sessions being preprocessed (and,
    /// separately, evaluated); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TANDEM_MAX_SESSIONS", default_value_t = 64)]
    pub max_sessions: usize,
    /// A session stream (preprocessing or evaluation) that has not finished
    /// after this many seconds is aborted with DEADLINE_EXCEEDED and its
    /// state dropped.
    #[arg(long, env = "TANDEM_SESSION_TIMEOUT_SECS", default_value_t = 300)]
    pub session_timeout_secs: u64,
    /// Largest number of preprocessed sessions (tickets) kept for their
    /// online phase; more preprocessing is refused with RESOURCE_EXHAUSTED.
    /// About 10 KB each for the MNIST MLP.
    #[arg(long, env = "TANDEM_MAX_PREPARED", default_value_t = 4096)]
    pub max_prepared: usize,
    /// A preprocessed session not evaluated within this many seconds is
    /// dropped. Keep it above the model server's --ticket-ttl-secs.
    #[arg(long, env = "TANDEM_PREPARED_TTL_SECS", default_value_t = 900)]
    pub prepared_ttl_secs: u64,
    /// Seeds remembered per seed epoch for replay detection (about 40 bytes
    /// each). S2 keeps two epochs; when the current one is full a new random
    /// epoch starts and the oldest is forgotten, so clients of that epoch
    /// must fetch the model info again. Memory: at most twice this many tags.
    #[arg(long, env = "TANDEM_REPLAY_SEEDS_PER_EPOCH", default_value_t = tandem_core::replay::DEFAULT_SEEDS_PER_EPOCH)]
    pub replay_seeds_per_epoch: usize,
    /// Largest number of seed sessions held at once (PROTOCOL §4.1a; about
    /// 300 bytes each); opening more is refused with RESOURCE_EXHAUSTED and
    /// clients fall back to one encrypted seed per query.
    #[arg(long, env = "TANDEM_MAX_SEED_SESSIONS", default_value_t = tandem_core::seed_session::DEFAULT_MAX_SEED_SESSIONS)]
    pub max_seed_sessions: usize,
    /// Queries one seed session serves at most.
    #[arg(long, env = "TANDEM_SEED_SESSION_QUERIES", default_value_t = tandem_core::seed_session::DEFAULT_QUERIES_PER_SESSION)]
    pub seed_session_queries: u64,
    /// Seconds a seed session lives after it was opened (SECURITY.md: a
    /// leaked session key exposes the queries of its session).
    #[arg(long, env = "TANDEM_SEED_SESSION_LIFETIME_SECS", default_value_t = tandem_core::seed_session::DEFAULT_SESSION_LIFETIME.as_secs())]
    pub seed_session_lifetime_secs: u64,
    /// Accept only model servers whose certificate's SubjectPublicKeyInfo
    /// has this SHA-256 (64 hex digits; repeat the flag or separate with
    /// commas for several; `tandem spki CERT.pem` prints it). Without it, a
    /// client certificate must carry the model-server role URI
    /// (urn:tandem:role:model-server, as `tandem dev-certs` issues): a
    /// certificate from the CA alone is not enough.
    #[arg(long, env = "TANDEM_MODEL_SERVER_SPKI_SHA256", value_delimiter = ',')]
    pub model_server_spki_sha256: Vec<String>,
    /// TLS, logging and the inter-server message limit.
    #[command(flatten)]
    pub common: tandem_grpc::server::ServerFlags,
}

/// Limits of one activation server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Concurrent Preprocess streams (and, separately, Evaluate streams).
    pub max_sessions: usize,
    /// A stream that has not finished after this long is aborted.
    pub session_timeout: Duration,
    /// Preprocessed sessions kept for their online phase.
    pub max_prepared: usize,
    /// A preprocessed session not evaluated within this long is dropped.
    pub prepared_ttl: Duration,
    /// Seeds per replay epoch (memory bound of the replay log).
    pub replay_seeds_per_epoch: usize,
    /// Seed sessions: how many, how many queries each, how long.
    pub seed_sessions: tandem_core::SeedSessionLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 64,
            session_timeout: Duration::from_secs(300),
            max_prepared: 4096,
            prepared_ttl: Duration::from_secs(900),
            replay_seeds_per_epoch: tandem_core::replay::DEFAULT_SEEDS_PER_EPOCH,
            seed_sessions: tandem_core::SeedSessionLimits::default(),
        }
    }
}

/// A preprocessed session of either ring.
enum AnySession {
    K128(ActivationSession<u128>),
    K256(ActivationSession<U256>),
}

/// A slot in the store of preprocessed sessions, claimed before any work;
/// given back if the session never completes.
struct Slot {
    state: Arc<ActivationState>,
    slot: Option<tandem_core::Reservation<()>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let (Some(slot), Ok(mut p)) = (self.slot.take(), self.state.prepared.lock()) {
            p.cancel(slot);
        }
    }
}

/// The lattice engine's half of S2 (`--engine lattice`): the RLWE key is
/// drawn fresh at every start and never leaves memory.
struct LatticeS2 {
    engine: LatticeEngine,
    keys: Arc<LatticeKeys>,
    fingerprint: String,
}

/// Shared state of one activation server.
pub struct ActivationState {
    keys: Arc<ActivationKeys>,
    lattice: Option<LatticeS2>,
    fingerprint: String,
    /// The core's S2: the epochs and the replay log (PROTOCOL §4.2), the
    /// same checks the in-process driver runs. Held only for the public
    /// checks and the recording, never across a decryption.
    server: Mutex<ActivationServer<PaillierEngine>>,
    sessions: Arc<Semaphore>,
    evaluations: Arc<Semaphore>,
    /// Preprocessed sessions waiting for their online phase, bounded in
    /// number and age so abandoned tickets cannot grow memory.
    prepared: Mutex<ExpiringStore<AnySession>>,
    /// The store's clock: time since this server started.
    origin: Instant,
    limits: Limits,
}

impl ActivationState {
    pub fn new(sk: SecretKey, limits: Limits) -> Arc<Self> {
        Self::with_engine(sk, limits, EngineKind::Paillier)
    }

    /// [`ActivationState::new`] for an engine; `lattice` also draws the
    /// RLWE key (production parameters).
    pub fn with_engine(sk: SecretKey, limits: Limits, engine: EngineKind) -> Arc<Self> {
        let fingerprint = sk.public().fingerprint();
        // The shell's randomness: the OS CSPRNG seeds the noise tables and
        // the core's CSPRNG that draws the epochs.
        let keys = ActivationKeys::new(sk, tandem_paillier::thread_pool(0), &mut rand_core::OsRng);
        let server = ActivationServer::with_replay_bound(
            Arc::new(PaillierEngine),
            keys,
            limits.replay_seeds_per_epoch,
            &mut rand_core::OsRng,
        )
        .with_seed_session_limits(limits.seed_sessions);
        let lattice = (engine == EngineKind::Lattice).then(|| {
            let engine = LatticeEngine::production();
            let keys = Arc::new(engine.keys_sharing(server.keys().clone(), &mut rand_core::OsRng));
            let fingerprint = keys.public_key_info().fingerprint;
            info!(fingerprint = %fingerprint, params = %PublicKeyInfo::params_id(engine.context()), "drew a fresh RLWE key (lattice engine)");
            LatticeS2 { engine, keys, fingerprint }
        });
        Arc::new(ActivationState {
            keys: server.keys().clone(),
            lattice,
            fingerprint,
            server: Mutex::new(server),
            sessions: Arc::new(Semaphore::new(limits.max_sessions)),
            evaluations: Arc::new(Semaphore::new(limits.max_sessions)),
            prepared: Mutex::new(ExpiringStore::new(limits.max_prepared, limits.max_prepared, limits.prepared_ttl)),
            origin: Instant::now(),
            limits,
        })
    }
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// The epoch clients derive new seeds under (public).
    pub fn seed_epoch(&self) -> Result<tandem_paillier::SeedEpoch, Status> {
        Ok(self.server()?.seed_epoch())
    }
    fn server(&self) -> Result<std::sync::MutexGuard<'_, ActivationServer<PaillierEngine>>, Status> {
        self.server.lock().map_err(|_| Status::internal("replay log poisoned"))
    }
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
    /// Preprocess streams open now.
    pub fn active_sessions(&self) -> usize {
        self.limits.max_sessions - self.sessions.available_permits()
    }
    /// Seed sessions held.
    pub fn seed_sessions(&self) -> usize {
        let now = self.now();
        self.server().map(|mut s| s.seed_sessions().len(now)).unwrap_or(0)
    }
    /// Preprocessed sessions waiting for their online phase.
    pub fn prepared_sessions(&self) -> usize {
        let now = self.now();
        self.prepared.lock().map(|mut p| p.len(now)).unwrap_or(0)
    }

    fn prepared(&self) -> Result<std::sync::MutexGuard<'_, ExpiringStore<AnySession>>, Status> {
        self.prepared.lock().map_err(|_| Status::internal("session store poisoned"))
    }

    /// The one place store refusals become statuses.
    fn store_status(&self, e: StoreError<()>, id: &[u8]) -> Status {
        let ttl = self.limits.prepared_ttl.as_secs();
        match e {
            StoreError::Full { limit } | StoreError::HolderFull { limit, .. } => {
                warn!(max_prepared = limit, "preprocessing refused: the store of prepared sessions is full");
                Status::resource_exhausted(format!(
                    "the activation server holds its limit of {limit} preprocessed sessions; evaluate or let some expire ({ttl} s), then retry"
                ))
            }
            StoreError::Unknown => Status::not_found(format!(
                "no preprocessed session {}: it was already evaluated, expired after {ttl} s, or this activation server restarted",
                short_id(id)
            )),
        }
    }

    /// Claims a slot before any work, so a burst cannot overshoot the limit.
    fn reserve(self: &Arc<Self>) -> Result<Slot, Status> {
        let now = self.now();
        let slot = self.prepared()?.reserve((), now).map_err(|e| self.store_status(e, &[]))?;
        Ok(Slot { state: self.clone(), slot: Some(slot) })
    }

    fn store(&self, id: [u8; 16], s: AnySession, mut slot: Slot) -> Result<(), Status> {
        let now = self.now();
        if let Some(r) = slot.slot.take() {
            self.prepared()?.insert(id, s, r, now);
        }
        Ok(())
    }

    fn take(&self, id: &[u8]) -> Result<AnySession, Status> {
        let key = tandem_grpc::session_id_from_bytes(id, "resume.session_id").or_status()?;
        let now = self.now();
        let taken = self.prepared()?.take(&key, now, |_| Ok::<(), std::convert::Infallible>(()));
        taken.map_err(|e| match e {
            Taken::Store(e) => self.store_status(e, id),
            Taken::Refused(never) => match never {},
        })
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

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Runs one stream's driver in its own task, under the session timeout, and
/// reports its failure (if any) as the stream's final status.
fn spawn_stream<T: Send + 'static, F>(
    state: Arc<ActivationState>,
    permit: tokio::sync::OwnedSemaphorePermit,
    phase: &'static str,
    peer: Option<SocketAddr>,
    drive: impl FnOnce(Arc<ActivationState>, mpsc::Sender<Result<T, Status>>, SessionLog) -> F + Send + 'static,
) -> ReplyStream<T>
where
    F: Future<Output = (SessionLog, Result<(), Status>)> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let _permit = permit; // released when the stream ends, however it ends
        let t0 = Instant::now();
        let timeout = state.limits.session_timeout;
        let (log, result) = match tokio::time::timeout(timeout, drive(state, tx.clone(), SessionLog::default())).await {
            Ok(r) => r,
            Err(_) => (
                SessionLog { id: "?".into(), ..SessionLog::default() },
                Err(Status::deadline_exceeded(format!(
                    "the {phase} stream did not finish within the activation server's {} s session timeout",
                    timeout.as_secs()
                ))),
            ),
        };
        let ms = t0.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                info!(phase, session = %log.id, ring_bits = log.ring_bits, input_len = log.input_len, rounds = log.rounds, compute_ms = log.compute.as_millis() as u64, wall_ms = ms, "session phase finished")
            }
            Err(status) => {
                if status.code() == tonic::Code::Cancelled {
                    info!(phase, session = %log.id, rounds = log.rounds, wall_ms = ms, ?peer, "session abandoned by the model server: {}", status.message());
                } else {
                    warn!(phase, session = %log.id, rounds = log.rounds, wall_ms = ms, code = ?status.code(), ?peer, "session failed: {}", status.message());
                }
                // The receiver may be gone; then there is nobody to tell.
                let _ = tx.send(Err(status)).await;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl ActivationService for ActivationSvc {
    async fn get_lattice_key(
        &self,
        _: Request<pb::GetLatticeKeyRequest>,
    ) -> Result<Response<pb::LatticePublicKey>, Status> {
        match &self.state.lattice {
            Some(l) => Ok(Response::new(tandem_grpc::lattice_key_to_proto(&l.keys))),
            None => Err(Status::failed_precondition(
                "this activation server runs the paillier engine; start it with --engine lattice to serve model servers on --engine lattice",
            )),
        }
    }

    async fn setup_ot(&self, req: Request<pb::SetupOtRequest>) -> Result<Response<pb::SetupOtReply>, Status> {
        let Some(l) = &self.state.lattice else {
            return Err(Status::failed_precondition(
                "this activation server runs the paillier engine; start it with --engine lattice to serve model servers on --engine lattice",
            ));
        };
        let req = tandem_grpc::setup_ot_request_from_proto(req.get_ref()).or_status()?;
        let keys = l.keys.clone();
        let (reply, d) = tandem_grpc::server::blocking("activation server", move || {
            keys.setup_ot(&req, &mut rand_core::OsRng).map_err(|e| status_from_protocol(&e))
        })
        .await?;
        info!(setup = %short_id(&reply.id), compute_ms = d.as_millis() as u64, "OT setup made (lattice engine)");
        Ok(Response::new(tandem_grpc::setup_ot_reply_to_proto(&reply)))
    }

    async fn get_public_key(
        &self,
        _: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::PaillierPublicKey>, Status> {
        let mut key = tandem_grpc::public_key_to_proto(self.state.keys.public_key());
        key.seed_epoch = self.state.seed_epoch()?.0.to_vec();
        Ok(Response::new(key))
    }

    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Result<Response<pb::ActivationStatus>, Status> {
        let s = &self.state;
        let seen = s.server().map(|g| g.seen_seeds()).unwrap_or(0);
        Ok(Response::new(pb::ActivationStatus {
            active_sessions: s.active_sessions() as u32,
            max_sessions: s.limits.max_sessions as u32,
            seen_seeds: seen as u64,
            key_fingerprint: s.fingerprint.clone(),
            prepared_sessions: s.prepared_sessions() as u32,
            max_prepared: s.limits.max_prepared as u32,
            seed_sessions: s.seed_sessions() as u32,
            max_seed_sessions: s.limits.seed_sessions.max_sessions as u32,
        }))
    }

    async fn open_seed_session(
        &self,
        req: Request<pb::OpenSeedSessionRequest>,
    ) -> Result<Response<pb::SeedSession>, Status> {
        let state = &self.state;
        let keys = state.keys.clone();
        let msg = tandem_grpc::open_seed_session_from_proto(keys.public_key().ciphertext_bytes(), req.get_ref())
            .or_status()?;
        // §4.1a: epoch and room are public and checked before the
        // decryption (outside any lock); then only the derived key's replay
        // tag decides.
        state.server()?.admit_open(&msg, state.now()).map_err(|e| status_from_protocol(&e))?;
        let epoch = msg.epoch;
        let (key, _) = tandem_grpc::server::blocking("activation server", move || {
            PaillierEngine
                .s2_decrypt_secret(&keys, &msg.enc_secret)
                .map(|d| d.session_key(&epoch))
                .map_err(|e| status_from_protocol(&e))
        })
        .await?;
        let opened = state.server()?.open_seed_session(&epoch, key, state.now()).map_err(|e| status_from_protocol(&e))?;
        info!(session = %short_id(&opened.id), "seed session opened");
        Ok(Response::new(tandem_grpc::seed_session_to_proto(&opened)))
    }

    type PreprocessStream = ReplyStream<pb::PreprocessReply>;

    async fn preprocess(
        &self,
        request: Request<Streaming<pb::PreprocessMsg>>,
    ) -> Result<Response<Self::PreprocessStream>, Status> {
        let state = self.state.clone();
        let permit = state.sessions.clone().try_acquire_owned().map_err(|_| {
            warn!(max_sessions = state.limits.max_sessions, "session refused: at the concurrent-session limit");
            Status::resource_exhausted(format!(
                "the activation server is at its limit of {} concurrent sessions; retry later",
                state.limits.max_sessions
            ))
        })?;
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        Ok(Response::new(spawn_stream(state, permit, "preprocess", peer, move |state, tx, mut log| async move {
            let r = preprocess(&state, inbound, &tx, &mut log).await;
            (log, r)
        })))
    }

    type EvaluateStream = ReplyStream<pb::EvaluateReply>;

    async fn evaluate(
        &self,
        request: Request<Streaming<pb::EvaluateMsg>>,
    ) -> Result<Response<Self::EvaluateStream>, Status> {
        let state = self.state.clone();
        let permit = state.evaluations.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the activation server is at its limit of {} concurrent evaluations; retry later",
                state.limits.max_sessions
            ))
        })?;
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        Ok(Response::new(spawn_stream(state, permit, "evaluate", peer, move |state, tx, mut log| async move {
            let r = evaluate(&state, inbound, &tx, &mut log).await;
            (log, r)
        })))
    }
}

/// What a finished or failed session logs (no secrets: the session id is
/// public to both servers and the client).
#[derive(Default)]
pub struct SessionLog {
    id: String,
    ring_bits: u32,
    input_len: u32,
    rounds: u32,
    compute: Duration,
}

/// Runs `f` on the blocking pool and adds its time to the session's.
async fn blocking<T: Send + 'static>(
    log: &mut SessionLog,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<(T, Duration), Status> {
    let (r, d) = tandem_grpc::server::blocking("activation server", f).await?;
    log.compute += d;
    Ok((r, d))
}

async fn next<M>(inbound: &mut Streaming<M>, expecting: &str) -> Result<M, Status> {
    match inbound.message().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(Status::cancelled(format!("the model server closed the stream before sending {expecting}"))),
        Err(s) => {
            Err(Status::cancelled(format!("the model server's stream failed before {expecting}: {}", s.message())))
        }
    }
}

async fn reply<T>(tx: &mpsc::Sender<Result<T, Status>>, msg: T) -> Result<(), Status> {
    tx.send(Ok(msg)).await.map_err(|_| Status::cancelled("the model server went away"))
}

fn short_id(id: &[u8]) -> String {
    hex::encode(&id[..id.len().min(8)])
}

/// S2's compute time stays in its own log (SessionLog), never on the wire:
/// it depends on the values S2 handles.
fn pre_reply(msg: pb::preprocess_reply::Msg) -> pb::PreprocessReply {
    let m = pb::PreprocessReply { msg: Some(msg) };
    debug!(bytes = wire_len(&m), "sending");
    m
}

async fn preprocess(
    state: &Arc<ActivationState>,
    mut inbound: Streaming<pb::PreprocessMsg>,
    tx: &mpsc::Sender<Result<pb::PreprocessReply, Status>>,
    log: &mut SessionLog,
) -> Result<(), Status> {
    let start = match next(&mut inbound, "SessionStart").await?.msg {
        Some(pb::preprocess_msg::Msg::Start(s)) => s,
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
    if start.first_layer_outputs > 0 || !start.ot_setup_id.is_empty() {
        let Some(l) = &state.lattice else {
            return Err(Status::failed_precondition(
                "the model server runs the lattice engine, this activation server the paillier engine (start it with --engine lattice)",
            ));
        };
        if start.lattice_key_fingerprint != l.fingerprint {
            return Err(Status::failed_precondition(format!(
                "the model server rerandomizes with RLWE key {}, but this activation server's is {} (it draws a new one at every start; the model server must fetch the keys again)",
                if start.lattice_key_fingerprint.is_empty() { "(none given)" } else { &start.lattice_key_fingerprint },
                l.fingerprint
            )));
        }
    }
    // §4.2c: the OT setup is public; one S2 does not hold (it restarted, or
    // dropped the oldest) is refused before the seed is admitted or
    // decrypted, so the model server can run SetupOt and retry at no cost.
    if !start.ot_setup_id.is_empty() {
        let l = state.lattice.as_ref().expect("checked above");
        let id = tandem_grpc::ot_setup_id_from_bytes(&start.ot_setup_id, "session_start.ot_setup_id").or_status()?;
        if l.keys.ot_setup(&id).is_none() {
            return Err(Status::failed_precondition(format!(
                "unknown OT setup {}: this activation server restarted or dropped it; the model server must run SetupOt again and retry",
                short_id(&id)
            )));
        }
    }
    // Refuse before any work when the session could not be kept.
    let slot = state.reserve()?;
    match start.ring_bits {
        128 => preprocess_ring::<u128>(state, start, inbound, tx, log, AnySession::K128, slot).await,
        256 => preprocess_ring::<U256>(state, start, inbound, tx, log, AnySession::K256, slot).await,
        k => Err(Status::invalid_argument(format!("ring_bits = {k}; accepted 128 or 256"))),
    }
}

async fn preprocess_ring<R: Ring>(
    state: &Arc<ActivationState>,
    start: pb::SessionStart,
    mut inbound: Streaming<pb::PreprocessMsg>,
    tx: &mpsc::Sender<Result<pb::PreprocessReply, Status>>,
    log: &mut SessionLog,
    wrap: fn(ActivationSession<R>) -> AnySession,
    slot: Slot,
) -> Result<(), Status> {
    let keys = state.keys.clone();
    let msg = tandem_grpc::session_start_from_proto(keys.public_key().ciphertext_bytes(), &start).or_status()?;
    // §4.2: the epoch is public, so it is checked before anything is
    // decrypted; after the decryption (outside any lock) nothing depends on
    // the plaintext but the derived seed, whose replay tag is recorded.
    // A seed session's query is decided by its public id and counter alone.
    let to_decrypt = match state.server()?.admit::<R>(&msg, state.now()).map_err(|e| status_from_protocol(&e))? {
        Admitted::Seed(seed) => Err(seed),
        Admitted::Decrypt { enc_seed, epoch } => Ok((enc_seed.clone(), epoch)),
    };
    let seed = match to_decrypt {
        Err(seed) => seed,
        Ok((enc_seed, epoch)) => {
            let (seed, _) = blocking(log, move || {
                PaillierEngine
                    .s2_decrypt_secret(&keys, &enc_seed)
                    .map(|d| d.seed(&epoch))
                    .map_err(|e| status_from_protocol(&e))
            })
            .await?;
            state.server()?.record_seed(&epoch, &seed).map_err(|e| status_from_protocol(&e))?;
            seed
        }
    };
    if msg.ot_setup.is_some() {
        return lattice_full::<R>(state, msg, seed, &mut inbound, tx, log, wrap, slot).await;
    }
    let mut session = if msg.first_layer_outputs == 0 {
        let keys = state.keys.clone();
        let ((session, masks), _) = blocking(log, move || {
            let (session, masks) = open_session::<R, _>(keys.clone(), &msg, seed, &mut rand_core::OsRng);
            Ok((session, tandem_grpc::input_masks_to_proto(keys.public_key(), &masks)))
        })
        .await?;
        reply(tx, pre_reply(pb::preprocess_reply::Msg::Masks(masks))).await?;
        session
    } else {
        lattice_first_layer::<R>(state, msg, seed, &mut inbound, tx, log).await?
    };
    loop {
        match next(&mut inbound, "BlindedRound or BlindedOutput").await?.msg {
            Some(pb::preprocess_msg::Msg::Round(req)) => {
                let keys = state.keys.clone();
                let ((s, rho), _) = blocking(log, move || {
                    let pk = keys.public_key();
                    let req = tandem_grpc::blinded_round_from_proto(pk, &req).or_status()?;
                    let rho = session.on_blinded_round(&req).map_err(|e| status_from_protocol(&e))?;
                    Ok((session, tandem_grpc::rho_masks_to_proto(pk, &rho)))
                })
                .await?;
                session = s;
                log.rounds += 1;
                reply(tx, pre_reply(pb::preprocess_reply::Msg::Rho(rho))).await?;
            }
            Some(pb::preprocess_msg::Msg::Output(req)) => {
                let keys = state.keys.clone();
                let (s, _) = blocking(log, move || {
                    let req = tandem_grpc::blinded_output_from_proto(keys.public_key(), &req).or_status()?;
                    let (_, ready) = session.on_blinded_output(&req).map_err(|e| status_from_protocol(&e))?;
                    Ok(ready)
                })
                .await?;
                log.rounds += 1;
                state.store(s.session_id(), wrap(s), slot)?;
                reply(tx, pre_reply(pb::preprocess_reply::Msg::Ready(pb::SessionReady {}))).await?;
                return Ok(());
            }
            Some(pb::preprocess_msg::Msg::Start(_)) => {
                return Err(Status::invalid_argument("SessionStart sent twice: one session per stream"))
            }
            Some(pb::preprocess_msg::Msg::LatticeProducts(_)) => {
                return Err(Status::invalid_argument(
                    "LatticeProducts out of order: expected BlindedRound or BlindedOutput",
                ))
            }
            Some(pb::preprocess_msg::Msg::FullStep(_)) => {
                return Err(Status::invalid_argument(
                    "FullStep in a session that is not on the full lattice path (its SessionStart named no ot_setup_id)",
                ))
            }
            None => return Err(Status::invalid_argument("empty message; expected BlindedRound or BlindedOutput")),
        }
    }
}

/// §4.2b steps 1–4: `r` under RLWE to S1, S1's products back, `[s]` to
/// S1; then the Paillier rounds go on with the returned state.
async fn lattice_first_layer<R: Ring>(
    state: &Arc<ActivationState>,
    msg: tandem_core::SessionStart,
    seed: tandem_core::Seed,
    inbound: &mut Streaming<pb::PreprocessMsg>,
    tx: &mpsc::Sender<Result<pb::PreprocessReply, Status>>,
    log: &mut SessionLog,
) -> Result<tandem_paillier::ActivationPreprocessing<R>, Status> {
    let Some(l) = &state.lattice else {
        return Err(Status::failed_precondition("this activation server runs the paillier engine"));
    };
    let pre = open_lattice(l, log, tx, move |ctx, keys| {
        tandem_lattice_engine::s2_open::<R, _>(ctx, keys, &msg, seed, &mut rand_core::OsRng)
    })
    .await?;
    let products = match next(inbound, "LatticeProducts").await?.msg {
        Some(pb::preprocess_msg::Msg::LatticeProducts(p)) => p,
        _ => return Err(Status::invalid_argument("after LatticeInputs the model server must send LatticeProducts")),
    };
    let (ctx, pk) = (l.engine.context().clone(), state.keys.public_key().clone());
    let ((pre, enc_s), _) = blocking(log, move || {
        let mut pre = pre;
        let layout = *pre.awaiting().expect("s2_open leaves the layout");
        let cts = tandem_grpc::lattice_products_from_proto(&ctx, &layout, &products).or_status()?;
        let enc_s = pre.on_products(&cts).map_err(|e| status_from_protocol(&e))?;
        Ok((pre, tandem_grpc::first_products_to_proto(&pk, &enc_s)))
    })
    .await?;
    log.rounds += 1;
    reply(tx, pre_reply(pb::preprocess_reply::Msg::FirstProducts(enc_s))).await?;
    Ok(pre.into_paillier())
}

/// Opens S2's half of a lattice session on the blocking pool (the seed's
/// decryption, `r` under RLWE) and sends S1 the input ciphertexts: the
/// same first move on both lattice paths.
async fn open_lattice<P: Send + 'static>(
    l: &LatticeS2,
    log: &mut SessionLog,
    tx: &mpsc::Sender<Result<pb::PreprocessReply, Status>>,
    open: impl FnOnce(&Arc<RlweContext>, &Arc<LatticeKeys>) -> tandem_core::Result<(P, Vec<SeededCiphertext>)>
        + Send
        + 'static,
) -> Result<P, Status> {
    let (ctx, keys) = (l.engine.context().clone(), l.keys.clone());
    let ((pre, inputs), _) = blocking(log, move || {
        let (pre, cts) = open(&ctx, &keys).map_err(|e| status_from_protocol(&e))?;
        Ok((pre, tandem_grpc::lattice_inputs_to_proto(&ctx, &cts)))
    })
    .await?;
    reply(tx, pre_reply(pb::preprocess_reply::Msg::LatticeInputs(inputs))).await?;
    Ok(pre)
}

/// §4.2c: every layer on RLWE and OT. `r` under RLWE to S1, then one
/// `FullStep` → `FullReply` per linear layer until S1's last step, which
/// completes S2's half: stored like the other paths', answered with
/// `SessionReady`.
#[allow(clippy::too_many_arguments)]
async fn lattice_full<R: Ring>(
    state: &Arc<ActivationState>,
    msg: tandem_core::SessionStart,
    seed: tandem_core::Seed,
    inbound: &mut Streaming<pb::PreprocessMsg>,
    tx: &mpsc::Sender<Result<pb::PreprocessReply, Status>>,
    log: &mut SessionLog,
    wrap: fn(ActivationSession<R>) -> AnySession,
    slot: Slot,
) -> Result<(), Status> {
    let Some(l) = &state.lattice else {
        return Err(Status::failed_precondition("this activation server runs the paillier engine"));
    };
    let mut pre = open_lattice(l, log, tx, move |_, keys| {
        tandem_lattice_engine::s2_open_full::<R, _>(keys, &msg, seed, &mut rand_core::OsRng)
    })
    .await?;
    loop {
        let step = match next(inbound, "FullStep").await?.msg {
            Some(pb::preprocess_msg::Msg::FullStep(s)) => s,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "a session on the full lattice path takes FullStep messages only after its SessionStart",
                ))
            }
            None => return Err(Status::invalid_argument("empty message; expected FullStep")),
        };
        let ctx = l.engine.context().clone();
        let ((p, answer), _) = blocking(log, move || {
            let layout = pre.full_awaiting();
            let step = tandem_grpc::full_step_from_proto(&ctx, layout.as_ref(), &step).or_status()?;
            let answer = match pre.on_full_step(step).map_err(|e| status_from_protocol(&e))? {
                Ok(r) => Ok(tandem_grpc::full_reply_to_proto(&ctx, &r)),
                Err(session) => Err(session),
            };
            Ok((pre, answer))
        })
        .await?;
        pre = p;
        log.rounds += 1;
        match answer {
            Ok(r) => reply(tx, pre_reply(pb::preprocess_reply::Msg::FullReply(r))).await?,
            Err(session) => {
                let s = *session;
                state.store(s.session_id(), wrap(s), slot)?;
                reply(tx, pre_reply(pb::preprocess_reply::Msg::Ready(pb::SessionReady {}))).await?;
                return Ok(());
            }
        }
    }
}

async fn evaluate(
    state: &Arc<ActivationState>,
    mut inbound: Streaming<pb::EvaluateMsg>,
    tx: &mpsc::Sender<Result<pb::EvaluateReply, Status>>,
    log: &mut SessionLog,
) -> Result<(), Status> {
    let resume = match next(&mut inbound, "Resume").await?.msg {
        Some(pb::evaluate_msg::Msg::Resume(r)) => r,
        _ => return Err(Status::invalid_argument("the first message of an evaluation must be Resume")),
    };
    log.id = short_id(&resume.session_id);
    match state.take(&resume.session_id)? {
        AnySession::K128(s) => evaluate_ring(s, inbound, tx, log).await,
        AnySession::K256(s) => evaluate_ring(s, inbound, tx, log).await,
    }
}

/// The online phase: ring arithmetic only, so it runs inline on the async
/// task rather than queueing behind preprocessing on the blocking pool.
async fn evaluate_ring<R: Ring>(
    mut session: ActivationSession<R>,
    mut inbound: Streaming<pb::EvaluateMsg>,
    tx: &mpsc::Sender<Result<pb::EvaluateReply, Status>>,
    log: &mut SessionLog,
) -> Result<(), Status> {
    log.ring_bits = R::BITS;
    loop {
        let msg = next(&mut inbound, "MaskedRound or MaskedOutput").await?.msg;
        let t = Instant::now();
        let out = match msg {
            Some(pb::evaluate_msg::Msg::Round(r)) => {
                let r = tandem_grpc::masked_round_from_proto::<R>(&r).or_status()?;
                let v = session.activate(&r).map_err(|e| status_from_protocol(&e))?;
                pb::evaluate_reply::Msg::Values(tandem_grpc::activation_values_to_proto(&v))
            }
            Some(pb::evaluate_msg::Msg::Output(o)) => {
                let o = tandem_grpc::masked_output_from_proto::<R>(&o).or_status()?;
                let out = session.finish(&o).map_err(|e| status_from_protocol(&e))?;
                let reply = pb::EvaluateReply {
                    msg: Some(pb::evaluate_reply::Msg::Output(pb::OutputResponse { sealed: out.sealed })),
                };
                log.rounds += 1;
                log.compute += t.elapsed();
                return self::reply(tx, reply).await;
            }
            Some(pb::evaluate_msg::Msg::Resume(_)) => {
                return Err(Status::invalid_argument("Resume sent twice: one session per stream"))
            }
            None => return Err(Status::invalid_argument("empty message; expected MaskedRound or MaskedOutput")),
        };
        let d = t.elapsed();
        log.rounds += 1;
        log.compute += d;
        reply(tx, pb::EvaluateReply { msg: Some(out) }).await?;
    }
}

/// Serves `svc` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    svc: ActivationServiceServer<ActivationSvc>,
    tls: Option<MutualTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (config, peer) = match tls {
        Some(t) => (Some(t.config), Some(t.peer)),
        None => (None, None),
    };
    // Every call, whatever the service, passes the peer's role check first:
    // the CA signs more than model servers (SECURITY.md, trust).
    let role_check = move |req: Request<()>| -> Result<Request<()>, Status> {
        if let Some(peer) = &peer {
            peer.check_request(&req)?;
        }
        Ok(req)
    };
    let mut builder = tandem_grpc::server::builder(config)
        .map_err(anyhow::Error::msg)?
        .layer(tonic::service::InterceptorLayer::new(role_check));
    let incoming = tandem_grpc::server::incoming(listener);
    builder.add_service(svc).serve_with_incoming_shutdown(incoming, shutdown).await.context("gRPC server")?;
    Ok(())
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

/// TLS from the config: mutual TLS bound to the model server's role (or
/// pinned key), or `None` with `--insecure`.
pub fn tls_from_config(cfg: &Config) -> anyhow::Result<Option<MutualTls>> {
    match (&cfg.common.tls_cert, &cfg.common.tls_key) {
        (Some(cert), Some(key)) => {
            let Some(ca) = &cfg.common.tls_ca else {
                bail!("--tls-ca is required with --tls-cert: the activation server accepts only model servers that present a client certificate signed by that CA (mutual TLS)");
            };
            let pins = tandem_grpc::peer::parse_pins(&cfg.model_server_spki_sha256, "--model-server-spki-sha256")
                .map_err(anyhow::Error::msg)?;
            let peer = tandem_grpc::peer::PeerIdentity::model_server(pins);
            info!("mutual TLS: accepting only {}", peer.describe());
            let config = tandem_grpc::tls::server_tls(cert, key, Some(ca)).map_err(anyhow::Error::msg)?;
            Ok(Some(MutualTls { config, peer }))
        }
        _ if cfg.common.insecure => {
            if !cfg.model_server_spki_sha256.is_empty() {
                bail!("--model-server-spki-sha256 needs mutual TLS (--tls-cert, --tls-key, --tls-ca): with --insecure there is no certificate to check");
            }
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
    let state = ActivationState::with_engine(
        sk,
        Limits {
            max_sessions: cfg.max_sessions,
            session_timeout: Duration::from_secs(cfg.session_timeout_secs.max(1)),
            max_prepared: cfg.max_prepared,
            prepared_ttl: Duration::from_secs(cfg.prepared_ttl_secs.max(1)),
            replay_seeds_per_epoch: cfg.replay_seeds_per_epoch.max(1),
            seed_sessions: tandem_core::SeedSessionLimits {
                max_sessions: cfg.max_seed_sessions.max(1),
                queries_per_session: cfg.seed_session_queries.max(1),
                lifetime: Duration::from_secs(cfg.seed_session_lifetime_secs.max(1)),
            },
        },
        cfg.common.engine,
    );
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, tls = tls.is_some(), max_sessions = cfg.max_sessions, session_timeout_secs = cfg.session_timeout_secs, "activation server listening");
    println!("listening on {addr}");
    serve(listener, service(state, cfg.common.max_internal_message_bytes), tls, tandem_grpc::server::shutdown_signal()).await
}


/// Loads the key without creating it (for tools).
pub fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    keyfile::load(path)
}
