//! S1, the model server, as a gRPC service (`tandem.v1.ModelService`).
//!
//! A thin shell: requests are decoded into [`tandem_core`] structs, the
//! Paillier engine's [`tandem_paillier::Preprocessing`] is driven over one
//! `ActivationService.Preprocess` stream and the core's
//! [`tandem_core::OnlineQuery`] over one `Evaluate` stream per query
//! ([`query`]), and the result is encoded back. No protocol math lives here.

use tandem_grpc::OrStatus;
use anyhow::{bail, Context};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tandem_grpc::peer::RoleTlsConnector;
use tandem_grpc::server::EngineKind;
use tandem_grpc::v1 as pb;
use tandem_grpc::v1::activation_service_client::ActivationServiceClient;
use tandem_grpc::v1::model_service_server::{ModelService, ModelServiceServer};
use tandem_core::TicketTerms;
use tandem_model::{QuantConfig, QuantizedModel};
use tandem_paillier::{PublicKey, SeedEpoch};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

pub mod access;
pub mod models;
pub mod query;
pub mod tickets;

pub use models::{Engine, Registry, Served};

/// Command-line / environment configuration of `model-server`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "model-server",
    version,
    about = "tandem model server (S1): serves private inference on its models to clients",
    long_about = "tandem model server (S1). Loads every model in --models, quantizes it, checks its bit \
                  budget, and serves private inference to clients, driving the activation server (S2) \
                  for the non-linear layers. Clients connect with TLS (--tls-cert, --tls-key); the link to \
                  S2 is mutual TLS with the same certificate and --tls-ca. Every flag can also be set by the \
                  environment variable shown."
)]
pub struct Config {
    /// Address to listen on for clients (port 0: pick a free port; the bound address is printed).
    #[arg(long, env = "TANDEM_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Directory of models: every `*.tandem` and `*.onnx` file in it or one subdirectory down (models/demo/) is
    /// served under its file stem; an ONNX file's input range comes from NAME.onnx.input-range or its metadata.
    #[arg(long, env = "TANDEM_MODELS")]
    pub models: PathBuf,
    /// URL of the activation server: https://host:port (mutual TLS) or
    /// http://host:port (with --insecure).
    #[arg(long, env = "TANDEM_ACTIVATION_SERVER", default_value = "https://127.0.0.1:50052")]
    pub activation_server: String,
    /// Name to verify in the activation server's certificate (default: the URL's host).
    #[arg(long, env = "TANDEM_ACTIVATION_TLS_DOMAIN")]
    pub activation_tls_domain: Option<String>,
    /// Fail at startup if any model cannot be loaded or fails the bit budget
    /// (default: log the reason and skip it).
    #[arg(long, env = "TANDEM_STRICT")]
    pub strict: bool,
    /// Signed bits per quantized weight.
    #[arg(long, env = "TANDEM_WEIGHT_BITS", default_value_t = QuantConfig::default().weight_bits)]
    pub weight_bits: u32,
    /// Accept only an activation server whose certificate's
    /// SubjectPublicKeyInfo has this SHA-256 (64 hex digits; repeat or
    /// separate with commas for several; `tandem spki CERT.pem` prints it).
    /// Without it, the activation server's certificate must carry the
    /// activation-server role URI (urn:tandem:role:activation-server, as
    /// `tandem dev-certs` issues): a certificate from the CA alone is not enough.
    #[arg(long, env = "TANDEM_ACTIVATION_SERVER_SPKI_SHA256", value_delimiter = ',')]
    pub activation_server_spki_sha256: Vec<String>,
    /// Largest number of queries and ticket requests admitted at once
    /// (running or waiting for a worker); more are refused with
    /// RESOURCE_EXHAUSTED. Online queries on tickets do not count.
    #[arg(long, env = "TANDEM_MAX_QUERIES", default_value_t = 32)]
    pub max_queries: usize,
    /// How many admitted queries / ticket requests do their Paillier work at
    /// once; the rest wait in line. Each uses all cores through a thread
    /// pool, so more workers than cores adds memory (tens of MB each for
    /// MNIST-size layers), not throughput. 0: the number of CPUs.
    #[arg(long, env = "TANDEM_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Deadline for a whole query, in seconds.
    #[arg(long, env = "TANDEM_QUERY_TIMEOUT_SECS", default_value_t = 300)]
    pub query_timeout_secs: u64,
    /// Deadline for each answer from the activation server, in seconds.
    #[arg(long, env = "TANDEM_ACTIVATION_TIMEOUT_SECS", default_value_t = 120)]
    pub activation_timeout_secs: u64,
    /// Attempts to fetch the activation server's key at startup (1 s apart).
    #[arg(long, env = "TANDEM_CONNECT_RETRIES", default_value_t = 30)]
    pub connect_retries: u32,
    /// Largest number of outstanding tickets (preprocessed sessions waiting
    /// for their query); more are refused with RESOURCE_EXHAUSTED. A few KB
    /// each for the MNIST MLP.
    #[arg(long, env = "TANDEM_MAX_TICKETS", default_value_t = 1024)]
    pub max_tickets: usize,
    /// An unused ticket is dropped after this many seconds. Keep it below
    /// the activation server's --prepared-ttl-secs.
    #[arg(long, env = "TANDEM_TICKET_TTL_SECS", default_value_t = 600)]
    pub ticket_ttl_secs: u64,
    /// Most outstanding tickets one client (API token id, or IP address
    /// without --api-tokens) may hold; more are refused with
    /// RESOURCE_EXHAUSTED naming the limit.
    #[arg(long, env = "TANDEM_MAX_TICKETS_PER_CLIENT", default_value_t = 64)]
    pub max_tickets_per_client: usize,
    /// Largest request accepted from a client, in bytes. Default: what the
    /// largest served model's InferRequest takes (its masked input plus 1.2
    /// KiB for the encrypted seed and ids; at least 16 KiB).
    #[arg(long, env = "TANDEM_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Most concurrent gRPC calls (HTTP/2 streams) on one client
    /// connection; the client waits for a free one.
    #[arg(long, env = "TANDEM_MAX_STREAMS_PER_CONNECTION", default_value_t = 64)]
    pub max_streams_per_connection: u32,
    /// File of API tokens, one client per line: `CLIENT-ID TOKEN`, or
    /// `CLIENT-ID sha256:HEX` to keep only the token's SHA-256 on the server
    /// (`#` starts a comment). Every call must then carry gRPC metadata
    /// `authorization: Bearer <token>`. Without this file the service is open
    /// to anyone who can connect (a warning is logged).
    #[arg(long, env = "TANDEM_API_TOKENS")]
    pub api_tokens: Option<PathBuf>,
    /// Queries per client: N per minute, or N/s, N/min, N/hour, N/day, N/Ks
    /// (per K seconds). Charged per Infer without a ticket and per
    /// CreateTicket (the online query on a ticket is already paid for);
    /// ListModels and GetModelInfo are free. Clients are their token's id,
    /// or their IP address (IPv6: /64) without --api-tokens. 0: no limit.
    #[arg(long, env = "TANDEM_RATE_LIMIT", default_value = "0")]
    pub rate_limit: String,
    /// Most queries a client may make at once before the rate applies
    /// (the token bucket's size). Default: N of --rate-limit.
    #[arg(long, env = "TANDEM_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Most clients the rate limiter tracks at once (about 100 bytes each).
    /// Clients whose budget has refilled are forgotten; when the table is
    /// full of clients still within their window, new ones are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TANDEM_RATE_LIMIT_CLIENTS", default_value_t = 100_000)]
    pub rate_limit_clients: usize,
    /// Output modes clients may use on a model, as MODEL-ID=MODE[,MODE...]
    /// (repeatable; `;` separates entries in the environment variable). The
    /// first mode is the model's default. Overrides the model's sidecar
    /// file `FILE.modes`; a model configured by neither allows `label` only.
    #[arg(long = "allow-modes", env = "TANDEM_ALLOW_MODES", value_delimiter = ';')]
    pub allow_modes: Vec<String>,
    /// What one query costs from a client's --rate-limit budget, by mode:
    /// MODE=N[,MODE=N...], e.g. `logits=10,probabilities=4` (default: 1
    /// each). A mode's cost must fit the burst.
    #[arg(long, env = "TANDEM_MODE_COST", default_value = "")]
    pub mode_cost: String,
    /// TLS, logging and the inter-server message limit.
    #[command(flatten)]
    pub common: tandem_grpc::server::ServerFlags,
}

/// The access policy of `cfg`: the token file read, the rate limit parsed.
pub fn access_from_config(cfg: &Config) -> anyhow::Result<access::Access> {
    let tokens = cfg.api_tokens.as_deref().map(access::ApiTokens::load).transpose()?;
    let limit = access::RateLimit::parse(&cfg.rate_limit, cfg.rate_burst).map_err(anyhow::Error::msg)?;
    let limiter = limit.map(|l| access::RateLimiter::new(l, cfg.rate_limit_clients));
    let mode_costs = access::ModeCosts::parse(&cfg.mode_cost).map_err(|e| anyhow::anyhow!("--mode-cost: {e}"))?;
    match (&limit, mode_costs.max()) {
        (Some(l), Some((mode, cost))) if cost > l.burst => bail!(
            "--mode-cost {mode}={cost} is more than the rate limit's burst of {}: no client could ever afford a {mode} query; raise --rate-burst or lower the cost",
            l.burst
        ),
        (None, _) if !mode_costs.is_default() => {
            warn!("--mode-cost has no effect without --rate-limit")
        }
        _ => {}
    }
    match &tokens {
        Some(t) => info!(clients = t.len(), "API tokens required (authorization: Bearer)"),
        None => warn!("no --api-tokens: authentication is OFF; anyone who can connect may query the models"),
    }
    match &limiter {
        Some(l) => {
            let per = if tokens.is_some() { "client id" } else { "IP address" };
            info!(limit = %l.limit(), per, "rate limit")
        }
        None => info!("no --rate-limit: queries are not rate-limited"),
    }
    if !mode_costs.is_default() {
        info!(costs = %mode_costs, "queries cost more than one in some modes");
    }
    Ok(access::Access { tokens, limiter, mode_costs })
}

/// Settings of a running model service (the parts of [`Config`] the service uses).
#[derive(Clone, Debug)]
pub struct Settings {
    pub strict: bool,
    pub max_queries: usize,
    pub workers: usize,
    pub deadlines: query::Deadlines,
    /// None: sized from the models ([`models::request_limit`]).
    pub max_request_bytes: Option<usize>,
    pub max_internal_message_bytes: usize,
    pub max_tickets: usize,
    pub max_tickets_per_client: usize,
    pub ticket_ttl: Duration,
    pub max_streams_per_connection: u32,
    /// Output modes each model's owner allows (the `--allow-modes` flags;
    /// `run` adds the models' sidecars).
    pub allowed_modes: models::AllowedModes,
    /// The pool the Paillier engine's heavy steps run on (one worker per
    /// core): the engine never touches rayon's global pool.
    pub pool: Arc<rayon::ThreadPool>,
    /// The preprocessing engine (`--engine`).
    pub engine: EngineKind,
}

/// Largest header block (gRPC metadata) accepted on a client call: tokens
/// and gRPC's own headers take a few hundred bytes.
pub const MAX_HEADER_BYTES: u32 = 16 << 10;

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        Settings {
            strict: cfg.strict,
            max_queries: cfg.max_queries.max(1),
            workers: if cfg.workers == 0 { default_workers() } else { cfg.workers },
            deadlines: query::Deadlines {
                step: Duration::from_secs(cfg.activation_timeout_secs.max(1)),
                query: Duration::from_secs(cfg.query_timeout_secs.max(1)),
            },
            max_request_bytes: cfg.max_request_bytes,
            max_internal_message_bytes: cfg.common.max_internal_message_bytes,
            max_tickets: cfg.max_tickets,
            max_tickets_per_client: cfg.max_tickets_per_client.max(1),
            ticket_ttl: Duration::from_secs(cfg.ticket_ttl_secs.max(1)),
            max_streams_per_connection: cfg.max_streams_per_connection.max(1),
            allowed_modes: models::AllowedModes::default(),
            pool: tandem_paillier::thread_pool(0),
            engine: cfg.common.engine,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            strict: false,
            max_queries: 32,
            workers: default_workers(),
            deadlines: query::Deadlines { step: Duration::from_secs(120), query: Duration::from_secs(300) },
            max_request_bytes: None,
            max_internal_message_bytes: tandem_grpc::DEFAULT_MAX_INTERNAL_MESSAGE_BYTES,
            max_tickets: 1024,
            max_tickets_per_client: 64,
            ticket_ttl: Duration::from_secs(600),
            max_streams_per_connection: 64,
            allowed_modes: models::AllowedModes::default(),
            pool: tandem_paillier::thread_pool(0),
            engine: EngineKind::Paillier,
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// The model service's shared state.
pub struct ModelState {
    quantized: Vec<(String, Arc<QuantizedModel>)>,
    registry: RwLock<Arc<Registry>>,
    s2: ActivationServiceClient<Channel>,
    /// Admission: queries running or waiting (bounded queue).
    queries: Arc<Semaphore>,
    /// Workers: queries doing Paillier work now.
    workers: Arc<Semaphore>,
    tickets: Arc<tickets::TicketStore>,
    settings: Settings,
    /// The request limit in force (the flag, or sized from the models).
    max_request_bytes: usize,
    access: access::Access,
    refreshing: tokio::sync::Mutex<()>,
    /// S2's current seed epoch, published in every model info (public).
    seed_epoch: RwLock<SeedEpoch>,
}

impl ModelState {
    /// Fetches S2's key (with `retries` attempts) and builds the models for
    /// it; the service is open to everyone, without rate limits.
    pub async fn new(
        quantized: Vec<(String, Arc<QuantizedModel>)>,
        s2: ActivationServiceClient<Channel>,
        settings: Settings,
        retries: u32,
    ) -> anyhow::Result<Arc<Self>> {
        Self::with_access(quantized, s2, settings, retries, access::Access::default()).await
    }

    /// [`ModelState::new`] with an access policy (API tokens, rate limit).
    pub async fn with_access(
        quantized: Vec<(String, Arc<QuantizedModel>)>,
        s2: ActivationServiceClient<Channel>,
        settings: Settings,
        retries: u32,
        access: access::Access,
    ) -> anyhow::Result<Arc<Self>> {
        let (key, epoch) = fetch_key(&s2, retries, settings.deadlines.step).await?;
        info!(fingerprint = %key.fingerprint(), bits = key.bits(), "activation server key");
        let lattice = match settings.engine {
            EngineKind::Lattice => {
                let mut l = fetch_lattice_key(&s2, retries, settings.deadlines.step).await?;
                info!(fingerprint = %l.fingerprint, "activation server RLWE key (lattice engine)");
                l.ot = setup_ot_or_warn(&s2, settings.deadlines.step).await;
                Some(l)
            }
            EngineKind::Paillier => None,
        };
        let max_request_bytes = settings.max_request_bytes.unwrap_or_else(|| models::request_limit(&quantized));
        let registry = build_registry(quantized.clone(), key, lattice, &settings, max_request_bytes).await?;
        if registry.models.is_empty() {
            warn!("no model is being served");
        }
        Ok(Arc::new(ModelState {
            quantized,
            registry: RwLock::new(Arc::new(registry)),
            s2,
            queries: Arc::new(Semaphore::new(settings.max_queries)),
            workers: Arc::new(Semaphore::new(settings.workers.max(1))),
            tickets: tickets::TicketStore::new(
                settings.max_tickets,
                settings.max_tickets_per_client,
                settings.ticket_ttl,
            ),
            settings,
            max_request_bytes,
            access,
            refreshing: tokio::sync::Mutex::new(()),
            seed_epoch: RwLock::new(epoch),
        }))
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").clone()
    }

    /// The model info clients see: the model's own, with S2's current seed
    /// epoch filled in.
    fn model_info(&self, served: &Served) -> pb::ModelInfo {
        let mut info = served.proto.clone();
        if let Some(k) = info.activation_key.as_mut() {
            k.seed_epoch = self.seed_epoch.read().expect("epoch lock").0.to_vec();
        }
        info
    }

    /// After S2 reported a different key or refused a seed epoch: fetch both
    /// and, if the key changed, rebuild the models.
    async fn refresh_key(self: Arc<Self>, redo_ot: bool) {
        // The OT setup the failed query named, before waiting: a refresh
        // that ran meanwhile may already have replaced it.
        let failed_ot = self.registry().lattice.as_ref().and_then(|l| l.ot.as_ref().map(|o| o.0));
        // Waits for a refresh already running rather than skipping it: the
        // caller answers its client only afterwards, so that a client that
        // refetches the model info at once gets the new key and epoch.
        let _guard = self.refreshing.lock().await;
        let old = self.registry().key.fingerprint();
        let old_lattice = self.registry().lattice.as_ref().map(|l| l.fingerprint.clone());
        let old_ot = self.registry().lattice.as_ref().and_then(|l| l.ot.clone());
        let redo_ot = redo_ot && old_ot.as_ref().map(|o| o.0) == failed_ot;
        let (key, epoch) = match fetch_key(&self.s2, 1, self.settings.deadlines.step).await {
            Ok(k) => k,
            Err(e) => {
                warn!("could not refetch the activation server's key: {e:#}");
                return;
            }
        };
        let lattice = match self.settings.engine {
            EngineKind::Paillier => None,
            EngineKind::Lattice => match fetch_lattice_key(&self.s2, 1, self.settings.deadlines.step).await {
                Ok(l) => Some(l),
                Err(e) => {
                    warn!("could not refetch the activation server's RLWE key: {e:#}");
                    return;
                }
            },
        };
        let old_epoch = std::mem::replace(&mut *self.seed_epoch.write().expect("epoch lock"), epoch);
        if old_epoch != epoch {
            info!(epoch = %epoch.to_hex(), "the activation server started a new seed epoch (restart or replay-log rotation)");
        }
        let new_lattice = lattice.as_ref().map(|l| l.fingerprint.clone());
        if key.fingerprint() == old && new_lattice == old_lattice && !redo_ot {
            return;
        }
        // §4.2c: a new RLWE key means S2 restarted and holds no OT setup of
        // ours; an unknown setup (S2 dropped it) needs a new one too.
        let mut lattice = lattice;
        if let Some(l) = lattice.as_mut() {
            l.ot = if new_lattice == old_lattice && !redo_ot {
                old_ot
            } else {
                setup_ot_or_warn(&self.s2, self.settings.deadlines.step).await
            };
        }
        if key.fingerprint() == old && new_lattice == old_lattice {
            info!("the activation server dropped our OT setup; ran a new one, rebuilding the models' lattice state");
        } else if key.fingerprint() == old {
            // S2 draws a new RLWE key at every start; the Paillier key and
            // the model infos clients hold stay valid.
            info!("the activation server's RLWE key changed (it restarted); rebuilding the models' lattice state");
        } else {
            warn!(old = %old, new = %key.fingerprint(), "the activation server's key changed; rebuilding the models for the new key (clients must fetch the model info again)");
        }
        match build_registry(self.quantized.clone(), key, lattice, &self.settings, self.max_request_bytes).await {
            Ok(r) => *self.registry.write().expect("registry lock") = Arc::new(r),
            Err(e) => error!("cannot serve the models under the new key: {e:#}"),
        }
    }
}

async fn build_registry(
    quantized: Vec<(String, Arc<QuantizedModel>)>,
    key: PublicKey,
    lattice: Option<models::LatticeKey>,
    settings: &Settings,
    max_request_bytes: usize,
) -> anyhow::Result<Registry> {
    let strict = settings.strict;
    let allowed = settings.allowed_modes.clone();
    let pool = settings.pool.clone();
    tokio::task::spawn_blocking(move || {
        Registry::build(&quantized, &key, strict, max_request_bytes, &allowed, &pool, lattice.as_ref())
    })
    .await?
}

/// `GetLatticeKey` with a deadline, `attempts` times one second apart: S2's
/// RLWE public key, parsed under this server's (production) parameters.
pub async fn fetch_lattice_key(
    s2: &ActivationServiceClient<Channel>,
    attempts: u32,
    deadline: Duration,
) -> anyhow::Result<models::LatticeKey> {
    let ctx = tandem_lattice_engine::LatticeEngine::production().context().clone();
    let mut last = String::new();
    for attempt in 1..=attempts.max(1) {
        let mut c = s2.clone();
        let mut req = Request::new(pb::GetLatticeKeyRequest {});
        req.set_timeout(deadline);
        match tokio::time::timeout(deadline, c.get_lattice_key(req)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                let pk = tandem_grpc::lattice_key_from_proto(&ctx, &r).map_err(|e| anyhow::anyhow!("{e}"))?;
                return Ok(models::LatticeKey { ctx, pk, fingerprint: r.fingerprint, ot: None });
            }
            Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition || s.code() == tonic::Code::Unimplemented => {
                bail!("--engine lattice needs an activation server on --engine lattice: {}", s.message())
            }
            Ok(Err(s)) => last = format!("{:?}: {}", s.code(), s.message()),
            Err(_) => last = format!("no answer within {} s", deadline.as_secs()),
        }
        if attempt < attempts {
            warn!(attempt, attempts, "activation server not reachable yet ({last}); retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    bail!("cannot fetch the activation server's RLWE key after {attempts} attempt(s): {last}")
}

/// `SetupOt` with a deadline (§4.2c): S1's half of a new OT setup with S2.
pub async fn setup_ot(
    s2: &ActivationServiceClient<Channel>,
    deadline: Duration,
) -> anyhow::Result<tandem_lattice_engine::LocalOt> {
    let (pending, req) = tandem_lattice_engine::tandem_ot::s1_setup_request(&mut rand_core::OsRng);
    let mut c = s2.clone();
    let mut r = Request::new(tandem_grpc::setup_ot_request_to_proto(&req));
    r.set_timeout(deadline);
    let reply = match tokio::time::timeout(deadline, c.setup_ot(r)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => bail!("SetupOt refused ({:?}): {}", s.code(), s.message()),
        Err(_) => bail!("SetupOt: no answer within {} s", deadline.as_secs()),
    };
    let reply = tandem_grpc::setup_ot_reply_from_proto(&reply).map_err(|e| anyhow::anyhow!("SetupOt reply: {e}"))?;
    let key = tokio::task::spawn_blocking(move || tandem_lattice_engine::tandem_ot::s1_setup_finish(pending, &reply))
        .await?
        .map_err(|e| anyhow::anyhow!("SetupOt reply: {e}"))?;
    Ok((key.id(), Arc::new(key)))
}

/// [`setup_ot`], or `None` with a warning: the models then run the first
/// layer only on RLWE (§4.2b).
async fn setup_ot_or_warn(
    s2: &ActivationServiceClient<Channel>,
    deadline: Duration,
) -> Option<tandem_lattice_engine::LocalOt> {
    match setup_ot(s2, deadline).await {
        Ok(ot) => {
            info!(setup = %hex::encode(&ot.0[..8]), "OT setup with the activation server (full lattice path)");
            Some(ot)
        }
        Err(e) => {
            warn!("no OT setup with the activation server, so no model runs every layer on the lattice: {e:#}");
            None
        }
    }
}

/// `GetPublicKey` with a deadline, `attempts` times one second apart: S2's
/// key and its current seed epoch.
pub async fn fetch_key(
    s2: &ActivationServiceClient<Channel>,
    attempts: u32,
    deadline: Duration,
) -> anyhow::Result<(PublicKey, SeedEpoch)> {
    let mut last = String::new();
    for attempt in 1..=attempts.max(1) {
        let mut c = s2.clone();
        let mut req = Request::new(pb::GetPublicKeyRequest {});
        req.set_timeout(deadline);
        match tokio::time::timeout(deadline, c.get_public_key(req)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                let key =
                    tandem_grpc::paillier_public_key_from_proto(&r).map_err(|e| anyhow::anyhow!("{e}"))?;
                let epoch = tandem_grpc::epoch_from_proto(&r.seed_epoch, "the activation server's seed_epoch")
                    .map_err(|e| anyhow::anyhow!("{e} (is the activation server older than this model server?)"))?;
                return Ok((key, epoch));
            }
            Ok(Err(s)) => last = format!("{:?}: {}", s.code(), s.message()),
            Err(_) => last = format!("no answer within {} s", deadline.as_secs()),
        }
        if attempt < attempts {
            warn!(attempt, attempts, "activation server not reachable yet ({last}); retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    bail!("cannot fetch the activation server's public key after {attempts} attempt(s): {last}")
}

/// A channel to S2 (lazy: it reconnects by itself after S2 restarts).
/// With `tls`, the URL's `https` is carried out by [`RoleTlsConnector`]
/// (which checks S2's role after each handshake), so tonic sees `http`.
pub fn activation_channel(url: &str, tls: Option<RoleTlsConnector>, step: Duration) -> anyhow::Result<Channel> {
    let url = match (&tls, url.strip_prefix("https://")) {
        (Some(_), Some(rest)) => format!("http://{rest}"),
        _ => url.to_string(),
    };
    let ep = Endpoint::from_shared(url.clone())
        .with_context(|| format!("bad activation server URL {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(step)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(match tls {
        Some(tls) => ep.connect_with_connector_lazy(tls),
        None => ep.connect_lazy(),
    })
}

pub fn activation_client(channel: Channel, max_message_bytes: usize) -> ActivationServiceClient<Channel> {
    ActivationServiceClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The tonic service.
#[derive(Clone)]
pub struct ModelSvc {
    state: Arc<ModelState>,
}

/// Authenticates every call from its headers alone, before the request
/// body is read or decoded (a tower layer in front of the service): a
/// caller without a valid token costs the server no more than its headers
/// and the HTTP/2 flow-control window. The [`access::Caller`] goes to the
/// handler in the request's extensions.
#[derive(Clone)]
pub struct Authenticator {
    state: Arc<ModelState>,
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.state.access.authenticate(req.metadata(), req.remote_addr())?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// `ModelService` as served: authentication in front, the request limit
/// on decoding, and the per-connection limits [`serve`] applies.
pub struct PublicService {
    svc: tonic::service::interceptor::InterceptedService<ModelServiceServer<ModelSvc>, Authenticator>,
    max_streams_per_connection: u32,
}

pub fn service(state: Arc<ModelState>) -> PublicService {
    let max = state.max_request_bytes;
    let max_streams_per_connection = state.settings.max_streams_per_connection;
    let inner = ModelServiceServer::new(ModelSvc { state: state.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let svc = tonic::service::interceptor::InterceptedService::new(inner, Authenticator { state });
    PublicService { svc, max_streams_per_connection }
}

impl ModelSvc {
    /// The model `id` names. The id is checked before anything logs or
    /// echoes it: a client's string goes no further than its length.
    fn lookup(&self, id: &str) -> Result<Arc<Served>, Status> {
        models::check_model_id(id)?;
        let reg = self.state.registry();
        reg.get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("unknown model {id:?}; this server serves: {}", reg.ids())))
    }

    /// Who is calling: the [`Authenticator`] checked the token before the
    /// body was read (UNAUTHENTICATED without a valid one, when tokens are
    /// required) and left the caller in the request.
    fn caller<T>(&self, req: &Request<T>) -> Result<access::Caller, Status> {
        match req.extensions().get::<access::Caller>() {
            Some(c) => Ok(c.clone()),
            // Not behind the Authenticator (a service built some other
            // way): check here rather than let the call in unchecked.
            None => self.state.access.authenticate(req.metadata(), req.remote_addr()),
        }
    }
}

#[tonic::async_trait]
impl ModelService for ModelSvc {
    async fn list_models(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        self.caller(&req)?;
        let reg = self.state.registry();
        Ok(Response::new(pb::ListModelsResponse {
            models: reg.models.values().map(|m| self.state.model_info(m)).collect(),
        }))
    }

    async fn get_model_info(&self, req: Request<pb::GetModelInfoRequest>) -> Result<Response<pb::ModelInfo>, Status> {
        self.caller(&req)?;
        let served = self.lookup(&req.get_ref().model_id)?;
        Ok(Response::new(self.state.model_info(&served)))
    }

    async fn infer(&self, req: Request<pb::InferRequest>) -> Result<Response<pb::InferResponse>, Status> {
        let t0 = Instant::now();
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        let served =
            self.lookup(&req.model_id).inspect_err(|s| info!(client = %caller, "query refused: {}", s.message()))?;
        if !req.ticket_id.is_empty() {
            // Paid for when the ticket was created.
            return self.infer_on_ticket(served, req, &caller, t0).await;
        }
        let state = &self.state;
        let mode = models::resolve_mode(&served, req.mode)
            .inspect_err(|s| info!(model = %served.id, "query refused: {}", s.message()))?;
        let _permit = self.heavy_permit(&caller, mode).await?;
        let mut costs = query::Costs::default();
        let dl = state.settings.deadlines;
        let s2 = state.s2.clone();
        let fut = async {
            match &served.engine {
                Engine::K128(s1) => query::run(s1.clone(), s2, req, mode, dl, &mut costs).await,
                Engine::K256(s1) => query::run(s1.clone(), s2, req, mode, dl, &mut costs).await,
            }
        };
        let result = with_deadline(dl.query, fut).await;
        self.answer(&served, mode, Call { what: "query", caller: &caller, t0 }, costs, result).await.map(|mut r| {
            r.0.stats = Some(r.1);
            Response::new(r.0)
        })
    }

    async fn create_ticket(&self, req: Request<pb::CreateTicketRequest>) -> Result<Response<pb::Ticket>, Status> {
        let t0 = Instant::now();
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        let served =
            self.lookup(&req.model_id).inspect_err(|s| info!(client = %caller, "ticket refused: {}", s.message()))?;
        let mode = models::resolve_mode(&served, req.mode)
            .inspect_err(|s| info!(model = %served.id, "ticket refused: {}", s.message()))?;
        let state = &self.state;
        let _permit = self.heavy_permit(&caller, mode).await?;
        let slot = state.tickets.reserve(&caller.key).inspect_err(|s| {
            // Refused for the store's limits, not the client's budget.
            state.access.refund(&caller, mode, Instant::now());
            warn!("ticket refused: {}", s.message())
        })?;
        let mut costs = query::Costs::default();
        let dl = state.settings.deadlines;
        let s2 = state.s2.clone();
        let fut = async {
            use tickets::AnyPrepared;
            let pk = match &served.engine {
                Engine::K128(s1) => s1.public_key(),
                Engine::K256(s1) => s1.public_key(),
            };
            let seed = tandem_grpc::seed_source_from_proto(
                &req.enc_seed,
                &req.seed_epoch,
                &req.seed_session_id,
                req.seed_counter,
                pk.ciphertext_bytes(),
            )
            .or_status()?;
            Ok(match &served.engine {
                Engine::K128(s1) => AnyPrepared::K128(query::preprocess(s1.clone(), s2, mode, seed, dl, &mut costs).await?),
                Engine::K256(s1) => AnyPrepared::K256(query::preprocess(s1.clone(), s2, mode, seed, dl, &mut costs).await?),
            })
        };
        let result = with_deadline(dl.query, fut).await;
        let (prepared, stats) =
            self.answer(&served, mode, Call { what: "ticket", caller: &caller, t0 }, costs, result).await?;
        let id = match &prepared {
            tickets::AnyPrepared::K128(p) => p.session_id(),
            tickets::AnyPrepared::K256(p) => p.session_id(),
        };
        state.tickets.insert(id, TicketTerms { model_id: served.id.clone(), mode, owner: caller.id() }, prepared, slot);
        Ok(Response::new(pb::Ticket {
            ticket_id: id.to_vec(),
            model_id: served.id.clone(),
            mode: tandem_grpc::mode_to_proto(mode) as i32,
            expires_in_seconds: state.tickets.ttl().as_secs() as u32,
            stats: Some(stats),
        }))
    }

    async fn open_seed_session(
        &self,
        req: Request<pb::OpenSeedSessionRequest>,
    ) -> Result<Response<pb::SeedSession>, Status> {
        let caller = self.caller(&req)?;
        let state = &self.state;
        // One decryption at S2 and one rerandomization here: charged like
        // one label query, so opening sessions in a loop is rate-limited
        // like querying.
        state.access.charge(&caller, tandem_model::OutputMode::Label, Instant::now())?;
        let key = state.registry().key.clone();
        let dl = state.settings.deadlines;
        match query::open_seed_session(&key, state.s2.clone(), req.into_inner(), dl).await {
            Ok(s) => {
                info!(client = %caller, max_queries = s.max_queries, expires_in_seconds = s.expires_in_seconds, "seed session opened");
                Ok(Response::new(s))
            }
            Err(f) => {
                warn!(client = %caller, code = ?f.status.code(), "seed session refused: {}", f.status.message());
                if f.key_changed {
                    state.clone().refresh_key(f.ot_stale).await;
                }
                Err(f.status)
            }
        }
    }
}

/// What kind of call [`ModelSvc::answer`] reports on, for whom, since when.
struct Call<'a> {
    what: &'a str,
    caller: &'a access::Caller,
    t0: Instant,
}

async fn with_deadline<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, query::QueryFailure>>,
) -> Result<T, query::QueryFailure> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the query did not finish within the model server's {} s deadline",
            limit.as_secs()
        ))
        .into()),
    }
}

impl ModelSvc {
    /// Permits for Paillier work (one-shot queries, tickets): the caller's
    /// rate limit, then admission into a bounded line, then a worker slot,
    /// waited for. Backpressure instead of unbounded memory: at most
    /// `workers` preprocessings hold their tables at once, and a full line
    /// is refused at once. Online queries on tickets need none of it: they
    /// are cheap, bounded by the number of tickets, and were charged when
    /// their ticket was made.
    async fn heavy_permit(
        &self,
        caller: &access::Caller,
        mode: tandem_model::OutputMode,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit), Status> {
        let state = &self.state;
        state.access.charge(caller, mode, Instant::now())?;
        let admitted = state.queries.clone().try_acquire_owned().map_err(|_| {
            state.access.refund(caller, mode, Instant::now());
            warn!(max_queries = state.settings.max_queries, "query refused: at the concurrent-query limit");
            Status::resource_exhausted(format!(
                "the model server is at its limit of {} concurrent queries; retry later",
                state.settings.max_queries
            ))
        })?;
        let worker = state
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the model server is shutting down"))?;
        Ok((admitted, worker))
    }

    /// Logs the outcome and turns the costs into `QueryStats`.
    async fn answer<T>(
        &self,
        served: &Served,
        mode: tandem_model::OutputMode,
        call: Call<'_>,
        costs: query::Costs,
        result: Result<T, query::QueryFailure>,
    ) -> Result<(T, pb::QueryStats), Status> {
        let Call { what, caller, t0 } = call;
        let wall = t0.elapsed();
        match result {
            Ok(r) => {
                info!(
                    model = %served.id, %mode, what, client = %caller, rounds = costs.rounds, wall_ms = wall.as_millis() as u64,
                    online_ms = costs.online.as_millis() as u64,
                    s1_compute_ms = costs.s1_compute.as_millis() as u64,
                    to_s2_bytes = costs.to_s2, from_s2_bytes = costs.from_s2, "served"
                );
                let stats = pb::QueryStats {
                    s1_wall_micros: wall.as_micros() as u64,
                    s1_compute_micros: costs.s1_compute.as_micros() as u64,
                    s1_to_s2_bytes: costs.to_s2,
                    s2_to_s1_bytes: costs.from_s2,
                    rounds: costs.rounds,
                    online_micros: costs.online.as_micros() as u64,
                };
                Ok((r, stats))
            }
            Err(f) => {
                warn!(model = %served.id, %mode, what, client = %caller, code = ?f.status.code(), wall_ms = wall.as_millis() as u64, "failed: {}", f.status.message());
                if f.key_changed {
                    self.state.clone().refresh_key(f.ot_stale).await;
                }
                Err(f.status)
            }
        }
    }

    /// The online phase of a query on a ticket: no Paillier work at all.
    async fn infer_on_ticket(
        &self,
        served: Arc<Served>,
        req: pb::InferRequest,
        caller: &access::Caller,
        t0: Instant,
    ) -> Result<Response<pb::InferResponse>, Status> {
        use tickets::AnyPrepared;
        if !req.enc_seed.is_empty() || !req.seed_session_id.is_empty() {
            return Err(Status::invalid_argument(
                "a query on a ticket uses the ticket's seed: send ticket_id without enc_seed or seed_session_id",
            ));
        }
        let asked = tandem_grpc::mode_from_proto(req.mode).or_status()?;
        let d = served.info.input_len();
        // Decode before taking the ticket, so a malformed request does not burn it.
        enum Input {
            K128(Vec<u128>),
            K256(Vec<tandem_paillier::U256>),
        }
        let masking = served.info.masking().or_status()?;
        let input = match &served.engine {
            Engine::K128(_) => {
                Input::K128(tandem_grpc::masked_input_from_proto(&req.masked_input, &masking, d).or_status()?)
            }
            Engine::K256(_) => {
                Input::K256(tandem_grpc::masked_input_from_proto(&req.masked_input, &masking, d).or_status()?)
            }
        };
        let entry = self
            .state
            .tickets
            .take(&req.ticket_id, &served.id, asked, caller.id().as_deref())
            .inspect_err(|s| info!(model = %served.id, "ticket query refused: {}", s.message()))?;
        let mode = entry.terms.mode;
        let mut costs = query::Costs::default();
        let dl = self.state.settings.deadlines;
        let s2 = self.state.s2.clone();
        let fut = async {
            match (entry.prepared, input) {
                (AnyPrepared::K128(p), Input::K128(x)) => query::online(p, s2, x, dl, &mut costs).await,
                (AnyPrepared::K256(p), Input::K256(x)) => query::online(p, s2, x, dl, &mut costs).await,
                _ => Err(Status::failed_precondition(
                    "the ticket was made for an earlier version of this model (the server reloaded it); create a new ticket",
                )
                .into()),
            }
        };
        let result = with_deadline(dl.query, fut).await;
        costs.online = t0.elapsed();
        self.answer(&served, mode, Call { what: "ticket query", caller, t0 }, costs, result).await.map(
            |(mut r, stats)| {
                r.stats = Some(stats);
                Response::new(r)
            },
        )
    }
}

/// Serves `svc` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    svc: PublicService,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Bounds what one connection can make the server hold before any call
    // is authenticated: streams open at once and the header block of each
    // (request bodies are bounded by the flow-control windows and, once
    // read, by the request limit).
    let mut builder = tandem_grpc::server::builder(tls)
        .map_err(anyhow::Error::msg)?
        .max_concurrent_streams(svc.max_streams_per_connection)
        .http2_max_header_list_size(MAX_HEADER_BYTES);
    let incoming = tandem_grpc::server::incoming(listener);
    builder.add_service(svc.svc).serve_with_incoming_shutdown(incoming, shutdown).await.context("gRPC server")?;
    Ok(())
}

/// TLS for clients (server side) and for the activation server (client
/// side, mutual), or neither with `--insecure`.
pub fn tls_from_config(cfg: &Config) -> anyhow::Result<(Option<ServerTlsConfig>, Option<RoleTlsConnector>)> {
    let (url, url_tls) = tandem_grpc::tls::normalize_url(&cfg.activation_server);
    let _ = url;
    let server = match (&cfg.common.tls_cert, &cfg.common.tls_key) {
        (Some(c), Some(k)) => Some(tandem_grpc::tls::server_tls(c, k, None).map_err(anyhow::Error::msg)?),
        _ if cfg.common.insecure => {
            warn!("--insecure: serving clients plaintext gRPC WITHOUT TLS; client traffic is unencrypted (development only)");
            None
        }
        _ => bail!("no TLS configured for clients: pass --tls-cert and --tls-key, or --insecure for unencrypted development use"),
    };
    let client = if url_tls {
        let (cert, key) = match (&cfg.common.tls_cert, &cfg.common.tls_key) {
            (Some(c), Some(k)) => (c.as_path(), k.as_path()),
            _ => bail!("the activation server URL is https: pass --tls-cert and --tls-key (the client certificate for mutual TLS) and --tls-ca"),
        };
        let Some(ca) = &cfg.common.tls_ca else {
            bail!("--tls-ca is required to verify the activation server's certificate");
        };
        let pins = tandem_grpc::peer::parse_pins(&cfg.activation_server_spki_sha256, "--activation-server-spki-sha256")
            .map_err(anyhow::Error::msg)?;
        let peer = tandem_grpc::peer::PeerIdentity::activation_server(pins);
        info!("mutual TLS to the activation server: accepting only {}", peer.describe());
        Some(
            RoleTlsConnector::new(ca, cert, key, cfg.activation_tls_domain.as_deref(), peer)
                .map_err(anyhow::Error::msg)?,
        )
    } else if cfg.common.insecure {
        if !cfg.activation_server_spki_sha256.is_empty() {
            bail!("--activation-server-spki-sha256 needs an https:// activation server URL (mutual TLS)");
        }
        warn!("--insecure: talking to the activation server over plaintext http; traffic between the servers is unencrypted (development only)");
        None
    } else {
        bail!(
            "the activation server URL {:?} is plaintext http: use https:// with mutual TLS, or pass --insecure",
            cfg.activation_server
        )
    };
    Ok((server, client))
}

/// The `model-server` program.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let (server_tls, client_tls) = tls_from_config(&cfg)?;
    let access = access_from_config(&cfg)?;
    let mut settings = Settings::from_config(&cfg);
    let flags = models::AllowedModes::from_flags(&cfg.allow_modes)?;
    let qcfg = QuantConfig { weight_bits: cfg.weight_bits };
    let dir = cfg.models.clone();
    let strict = cfg.strict;
    let loaded = tokio::task::spawn_blocking(move || models::load_dir(&dir, qcfg, strict)).await??;
    let quantized = loaded.models;
    for id in flags.ids() {
        if !quantized.iter().any(|(m, _)| m == id) {
            let msg = format!("--allow-modes names model {id}, which is not loaded");
            if cfg.strict {
                bail!(msg);
            }
            warn!("{msg}");
        }
    }
    settings.allowed_modes = flags.or(loaded.modes);
    if quantized.is_empty() {
        if cfg.strict {
            bail!("no model could be loaded from {}", cfg.models.display());
        }
        warn!(dir = %cfg.models.display(), "no model could be loaded");
    }
    let (url, _) = tandem_grpc::tls::normalize_url(&cfg.activation_server);
    let channel = activation_channel(&url, client_tls, settings.deadlines.step)?;
    let s2 = activation_client(channel, settings.max_internal_message_bytes);
    let state = ModelState::with_access(quantized, s2, settings, cfg.connect_retries, access).await?;
    for m in state.registry().models.values() {
        let modes = models::names(&m.info.modes);
        info!(model = %m.id, allowed_modes = %modes, default_mode = %m.info.default_mode, "serving");
        println!("serving model {} (modes allowed: {modes}; default {})", m.id, m.info.default_mode);
    }
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, tls = server_tls.is_some(), models = state.registry().models.len(), "model server listening");
    println!("listening on {addr}");
    serve(listener, service(state), server_tls, tandem_grpc::server::shutdown_signal()).await
}

