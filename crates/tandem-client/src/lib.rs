//! The thin tandem client over gRPC.
//!
//! Per query the client does one PRG expansion (the input mask) and one
//! AEAD open; the one Paillier encryption is per seed session (PROTOCOL
//! §4.1a), which the connection opens, renews and re-opens after a server
//! restart by itself (or per query, with sessions turned off) — all inside
//! [`tandem_core::Client`] / [`tandem_core::PendingQuery`]; this
//! crate only moves their messages over the network, checks the activation
//! server's key against a pinned fingerprint, and measures costs.

use rand_core::OsRng;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem_core::paillier_pk::{NoiseTable, PublicKey};
use std::sync::Arc;
use tandem_core::{Client, ModelInfo, PendingQuery, PendingTicket, ProtocolError, SeedSession, Ticket};
use tandem_core::{Ring, SeedEpoch, U256};
use tandem_grpc::v1 as pb;
use tandem_grpc::v1::model_service_client::ModelServiceClient;
use tandem_grpc::wire_len;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

pub mod cpu;
pub mod input;

// What an application needs to use this crate's API without depending on
// tandem-model or tonic itself (docs/CLIENT.md).
pub use tandem_model::{Output, OutputMode};
pub use tonic::{Code, Status};

/// Everything that can go wrong in a query, from the client's side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused or failed the request.
    #[error("server: {} ({})", .0.message(), code_name(.0.code()))]
    Status(#[from] Status),
    /// Local validation (input length or range, mode) or a bad response.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// The activation server's key is not the pinned one.
    #[error("the activation server's key has fingerprint {got}, but {pinned} is pinned: refusing to encrypt to any other key")]
    KeyMismatch {
        /// The pinned fingerprint.
        pinned: String,
        /// The server's key's fingerprint.
        got: String,
    },
    /// The model server cannot be reached.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The server URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A bad option (URL, token, fingerprint).
    #[error("{0}")]
    Config(String),
    /// The model info does not describe a model this client can query.
    #[error("the server's model info is unusable: {0}")]
    BadModelInfo(String),
}

impl ClientError {
    /// The gRPC status, when the error came from the server.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Status(s) => Some(s),
            _ => None,
        }
    }
}

/// `UNAVAILABLE` etc. as gRPC spells them.
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// How to reach the model server.
#[derive(Clone)]
pub struct ClientOptions {
    /// `https://host:port`, or `http://host:port` with `insecure`.
    pub server: String,
    /// CA certificate to verify the server with (default: the web PKI roots).
    pub tls_ca: Option<PathBuf>,
    /// Name to verify in the server's certificate (default: the URL's host).
    pub tls_domain: Option<String>,
    /// Allow plaintext `http://` URLs.
    pub insecure: bool,
    /// Hex fingerprint of the activation server's key; any other key is refused.
    pub pinned_fingerprint: Option<String>,
    /// Deadline of each call.
    pub timeout: Duration,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
    /// Largest response accepted.
    pub max_response_bytes: usize,
    /// API token for servers that require one (`--api-tokens`), sent with
    /// every call as `authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Seed sessions (PROTOCOL §4.1a, default on): one Paillier encryption
    /// per session instead of per query. Off: every query encrypts its own
    /// seed (a session of length 1), which costs less for a single query.
    pub seed_sessions: bool,
    /// Short-exponent (DJN) noise for the one-shot encryptions (default
    /// off): the first encryption under a key builds a 2 MiB table (about
    /// two encryptions' work), each later one costs about a tenth of a
    /// full-size encryption. For a client that sends many one-shot queries
    /// (`seed_sessions` off, or many session openings); S1 rerandomizes
    /// with full-size noise before S2 sees the ciphertext (SECURITY.md).
    pub noise_table: bool,
}

// By hand, so that the token never ends up in a log line.
impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("server", &self.server)
            .field("tls_ca", &self.tls_ca)
            .field("tls_domain", &self.tls_domain)
            .field("insecure", &self.insecure)
            .field("pinned_fingerprint", &self.pinned_fingerprint)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("seed_sessions", &self.seed_sessions)
            .field("noise_table", &self.noise_table)
            .finish()
    }
}

impl ClientOptions {
    /// Default options for `server` (an `https://` URL, or `http://` with `insecure`).
    pub fn new(server: impl Into<String>) -> Self {
        ClientOptions {
            server: server.into(),
            tls_ca: None,
            tls_domain: None,
            insecure: false,
            pinned_fingerprint: None,
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 64 << 20,
            api_token: None,
            seed_sessions: true,
            noise_table: false,
        }
    }
}

/// A model as the server describes it, with the key to encrypt to.
#[derive(Clone, Debug)]
pub struct RemoteModel {
    /// What S1 publishes about the model.
    pub info: ModelInfo,
    /// The model id.
    pub name: String,
    /// The activation server's key (pin its fingerprint).
    pub key: PublicKey,
    /// S2's seed epoch when the model info was fetched (public). A query
    /// under a stale epoch gets FAILED_PRECONDITION: fetch the model again.
    pub epoch: SeedEpoch,
    /// Recomputed from the key itself, never taken from the server's word.
    pub fingerprint: String,
    /// Whether the fingerprint was checked against a pinned one.
    pub pinned: bool,
    /// The largest request the server accepts for this model.
    pub max_request_bytes: u64,
}

/// What one query cost the client.
#[derive(Clone, Debug, Default)]
pub struct Cost {
    /// Thread CPU time of quantizing, masking, encrypting the seed and encoding.
    pub prepare_cpu: Duration,
    /// Thread CPU time of decoding, opening the sealed result and finishing.
    pub finish_cpu: Duration,
    /// Protobuf bytes of the `Infer` request and response, with gRPC framing
    /// (TLS and HTTP/2 overhead not included).
    pub bytes_sent: u64,
    /// Bytes received (protobuf + gRPC framing).
    pub bytes_received: u64,
    /// Wall time of the `Infer` call (request sent → response received).
    pub round_trip: Duration,
    /// Wall time of the whole query at the client.
    pub wall: Duration,
    /// The model server's own account of the query.
    pub server: Option<pb::QueryStats>,
}

impl Cost {
    /// The client's own CPU time for the query.
    pub fn client_cpu(&self) -> Duration {
        self.prepare_cpu + self.finish_cpu
    }
}

/// The result of a private inference.
#[derive(Clone, Debug)]
pub struct Inference {
    /// The answer.
    pub output: Output,
    /// The mode it was computed in.
    pub mode: OutputMode,
    /// What it cost.
    pub cost: Cost,
}

/// A connection to one model server.
#[derive(Clone)]
pub struct TandemClient {
    svc: ModelServiceClient<Channel>,
    pinned: Option<String>,
    timeout: Duration,
    authorization: Option<MetadataValue<Ascii>>,
    /// The seed session this connection (and its clones) draws seeds from;
    /// `None` with sessions off.
    session: Option<Arc<std::sync::Mutex<Option<HeldSession>>>>,
    /// The noise table (and the fingerprint of the key it was built for)
    /// shared by this connection's clones; `None` with `noise_table` off.
    noise: Option<Arc<std::sync::Mutex<Option<KeyedNoiseTable>>>>,
}

/// A noise table and the fingerprint of the key it was built for.
type KeyedNoiseTable = (String, Arc<NoiseTable>);

/// An open seed session and what it was opened under.
struct HeldSession {
    session: SeedSession,
    /// Renewed before this, with a margin, so S2 never forgets it under a
    /// query in flight.
    renew_at: Instant,
    fingerprint: String,
    epoch: SeedEpoch,
}

/// A session is renewed when less than this share of its lifetime is left.
const RENEW_MARGIN: f64 = 0.1;

fn normalize_fp(s: &str) -> String {
    s.trim().trim_start_matches("sha256:").replace(':', "").to_ascii_lowercase()
}

/// Checks and normalizes a pinned activation-key fingerprint: 64
/// hexadecimal digits (a SHA-256), in any case, optionally with a
/// `sha256:` prefix and colons between bytes. The error says what was
/// wrong and what is accepted, so a placeholder such as `HEX` or a
/// truncated copy is refused before anything is sent.
pub fn parse_fingerprint(s: &str) -> Result<String, String> {
    let digits = s.trim().trim_start_matches("sha256:").replace(':', "");
    let shown: String = s.chars().take(80).collect();
    if let Some(c) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "{shown:?} is not a key fingerprint: {c:?} is not a hexadecimal digit; expected the 64 hex digits \
             (a SHA-256) the activation server logs as \"activation key fingerprint: …\" and `tandem fingerprint KEY-FILE` prints"
        ));
    }
    if digits.len() != 64 {
        return Err(format!(
            "{shown:?} is not a key fingerprint: {} hex digits, expected 64 (a SHA-256; `sha256:` prefix and colons allowed)",
            digits.len()
        ));
    }
    Ok(digits.to_ascii_lowercase())
}

impl TandemClient {
    /// Connects to the model server (TLS unless `insecure`).
    pub async fn connect(opts: &ClientOptions) -> Result<Self, ClientError> {
        let (url, tls) = tandem_grpc::tls::normalize_url(&opts.server);
        if !tls && !opts.insecure {
            return Err(ClientError::Config(format!(
                "{url} is plaintext http: use an https:// URL, or pass --insecure to send unencrypted traffic"
            )));
        }
        let authorization = match &opts.api_token {
            None => None,
            Some(t) => {
                let mut v = MetadataValue::try_from(format!("Bearer {}", t.trim())).map_err(|_| {
                    ClientError::Config("the API token must be printable ASCII (it is sent as gRPC metadata)".into())
                })?;
                // Kept out of HTTP/2 header compression tables.
                v.set_sensitive(true);
                Some(v)
            }
        };
        let pinned = match opts.pinned_fingerprint.as_deref() {
            None => None,
            Some(p) => {
                Some(parse_fingerprint(p).map_err(|e| ClientError::Config(format!("pinned fingerprint: {e}")))?)
            }
        };
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::Config(format!("bad server URL {url:?}: {e}")))?
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .tcp_nodelay(true);
        if tls {
            let mut cfg = tandem_grpc::tls::client_tls(opts.tls_ca.as_deref(), None, opts.tls_domain.as_deref())
                .map_err(ClientError::Config)?;
            if opts.tls_ca.is_none() {
                cfg = cfg.with_webpki_roots();
            }
            ep = ep.tls_config(cfg).map_err(|e| ClientError::Config(format!("TLS: {e}")))?;
        }
        let channel =
            ep.connect().await.map_err(|e| ClientError::Connect { url: url.clone(), reason: error_chain(&e) })?;
        Ok(TandemClient {
            svc: ModelServiceClient::new(channel).max_decoding_message_size(opts.max_response_bytes),
            pinned,
            timeout: opts.timeout,
            authorization,
            session: opts.seed_sessions.then(|| Arc::new(std::sync::Mutex::new(None))),
            noise: opts.noise_table.then(|| Arc::new(std::sync::Mutex::new(None))),
        })
    }

    /// The core client for `model`'s key, with this connection's noise
    /// table when `noise_table` is on (built at the first use of a key).
    fn core_client(&self, model: &RemoteModel) -> Result<Client, ClientError> {
        let client = Client::new(model.key.clone(), model.epoch);
        let Some(noise) = &self.noise else { return Ok(client) };
        let mut held = noise.lock().unwrap_or_else(|e| e.into_inner());
        let table = match &*held {
            Some((fp, t)) if *fp == model.fingerprint => t.clone(),
            _ => {
                let t = Arc::new(
                    NoiseTable::new(&model.key, &mut OsRng)
                        .map_err(|e| ClientError::Config(format!("building the noise table: {e}")))?,
                );
                *held = Some((model.fingerprint.clone(), t.clone()));
                t
            }
        };
        Ok(client.with_noise_table(table))
    }

    /// The generated gRPC client, for callers that need raw access. Its
    /// calls carry no API token: build them with [`TandemClient::request`].
    pub fn raw(&self) -> ModelServiceClient<Channel> {
        self.svc.clone()
    }

    /// A request with this client's deadline and API token.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(self.timeout);
        if let Some(v) = &self.authorization {
            r.metadata_mut().insert("authorization", v.clone());
        }
        r
    }

    /// Every model the server offers (keys are parsed but not checked
    /// against the pin; [`TandemClient::model`] does that).
    pub async fn list_models(&mut self) -> Result<Vec<RemoteModel>, ClientError> {
        let r = self.svc.list_models(self.request(pb::ListModelsRequest {})).await?.into_inner();
        r.models.iter().map(|m| remote_model(m, None)).collect()
    }

    /// One model's metadata; refuses a key other than the pinned one.
    pub async fn model(&mut self, id: &str) -> Result<RemoteModel, ClientError> {
        let r =
            self.svc.get_model_info(self.request(pb::GetModelInfoRequest { model_id: id.into() })).await?.into_inner();
        remote_model(&r, self.pinned.as_deref())
    }

    /// Fetches the model's metadata, then runs one private inference.
    /// `mode = None` uses the model's default mode.
    ///
    /// If the activation server restarted (or started a new seed epoch)
    /// since the metadata was fetched, the query is refused with
    /// FAILED_PRECONDITION before anything is decrypted; this method then
    /// fetches the metadata again and retries once with a fresh seed, so
    /// the caller does not notice.
    pub async fn infer(
        &mut self,
        model_id: &str,
        x: &[f64],
        mode: Option<OutputMode>,
    ) -> Result<Inference, ClientError> {
        let mut model = self.model(model_id).await?;
        match self.infer_with(&model, x, mode).await {
            Err(e) if self.refetch_if_stale(&mut model, &e).await? => self.infer_with(&model, x, mode).await,
            r => r,
        }
    }

    /// After a query failed with `err`: if the server said the model info
    /// is stale (FAILED_PRECONDITION: S2 restarted, started a new seed epoch
    /// or changed its key), fetches it again into `model` and returns
    /// whether a retry with a fresh seed makes sense. For callers that keep
    /// a [`RemoteModel`] across queries (`infer_with`, `create_ticket`).
    pub async fn refetch_if_stale(&mut self, model: &mut RemoteModel, err: &ClientError) -> Result<bool, ClientError> {
        if err.status().is_some_and(|s| s.code() == Code::FailedPrecondition) {
            // The seed session went with S2's restart (or expired early):
            // the retry opens a new one.
            self.forget_session();
            *model = self.model(&model.info.id).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// One private inference for a model whose metadata is already known.
    pub async fn infer_with(
        &mut self,
        model: &RemoteModel,
        x: &[f64],
        mode: Option<OutputMode>,
    ) -> Result<Inference, ClientError> {
        self.check_pin(model)?;
        let mode = mode.unwrap_or(model.info.default_mode);
        model.info.check_mode(mode)?;
        match model.info.ring_bits {
            128 => self.run::<u128>(model, x, mode).await,
            256 => self.run::<U256>(model, x, mode).await,
            k => Err(ClientError::BadModelInfo(format!("ring size k = {k}; this client supports 128 and 256"))),
        }
    }

    async fn run<R: Ring>(
        &mut self,
        model: &RemoteModel,
        x: &[f64],
        mode: OutputMode,
    ) -> Result<Inference, ClientError> {
        let t0 = Instant::now();
        let client = self.core_client(model)?;
        let info = model.info.clone();
        let x = x.to_vec();
        let (opened, mut seed) = self.session_seed(model).await?;
        let ((pending, req), mut prepare_cpu) = on_worker(move || {
            let (pending, q) = match seed.as_mut() {
                Some(session) => client
                    .prepare_in_session::<R>(session, &info, &x, mode)?
                    .ok_or(ProtocolError::PeerMisbehaved("a seed session with no query left".into()))?,
                None => client.prepare::<R, _>(&info, &x, mode, &mut OsRng)?,
            };
            Ok((pending, tandem_grpc::query_request_to_proto(&q, &info.masking()?)?))
        })
        .await?;
        let mut inference = self.exchange(pending, req, prepare_cpu, mode, t0).await;
        // The query that opened the session pays for it, honestly counted.
        if let (Some(open), Ok(inf)) = (opened, inference.as_mut()) {
            prepare_cpu += open.prepare_cpu;
            inf.cost.prepare_cpu = prepare_cpu;
            inf.cost.bytes_sent += open.bytes_sent;
            inf.cost.bytes_received += open.bytes_received;
        }
        inference
    }

    /// A one-counter slice of the connection's seed session for `model`'s
    /// key and epoch, opening or renewing the session when needed. `None`
    /// (with the session left alone) when S2 cannot open one now: the query
    /// then encrypts its own seed. The first value is the opening's cost.
    async fn session_seed(&mut self, model: &RemoteModel) -> Result<(Option<Cost>, Option<SeedSession>), ClientError> {
        let Some(held) = self.session.clone() else {
            return Ok((None, None));
        };
        if let Some(one) = take_counter(&held, model) {
            return Ok((None, Some(one)));
        }
        match self.open_seed_session(model).await {
            Ok((session, expires_in, cost)) => {
                let lifetime = Duration::from_secs(expires_in.into());
                let mut h = held.lock().map_err(|_| ClientError::Config("seed session lock poisoned".into()))?;
                *h = Some(HeldSession {
                    session,
                    renew_at: Instant::now() + lifetime.mul_f64(1.0 - RENEW_MARGIN),
                    fingerprint: model.fingerprint.clone(),
                    epoch: model.epoch,
                });
                drop(h);
                Ok((Some(cost), take_counter(&held, model)))
            }
            // S2 holds its limit of sessions, or the server predates them:
            // this query carries its own encrypted seed.
            Err(ClientError::Status(s)) if matches!(s.code(), Code::ResourceExhausted | Code::Unimplemented) => {
                Ok((None, None))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a seed session under `model`'s key and epoch: the client's one
    /// Paillier encryption for many queries.
    async fn open_seed_session(&mut self, model: &RemoteModel) -> Result<(SeedSession, u32, Cost), ClientError> {
        self.check_pin(model)?;
        let t0 = Instant::now();
        let client = self.core_client(model)?;
        let ((pending, req), prepare_cpu) = on_worker(move || {
            let (pending, req) = client.open_session(&mut OsRng)?;
            Ok((pending, tandem_grpc::open_seed_session_to_proto(&req)))
        })
        .await?;
        let bytes_sent = wire_len(&req);
        let t_rpc = Instant::now();
        let resp = self.svc.open_seed_session(self.request(req)).await?.into_inner();
        let round_trip = t_rpc.elapsed();
        let opened = tandem_grpc::seed_session_from_proto(&resp)
            .map_err(|e| ProtocolError::PeerMisbehaved(format!("the server's seed session: {e}")))?;
        let cost = Cost {
            prepare_cpu,
            bytes_sent,
            bytes_received: wire_len(&resp),
            round_trip,
            wall: t0.elapsed(),
            ..Cost::default()
        };
        Ok((pending.opened(&opened), opened.expires_in_seconds, cost))
    }

    /// Drops the connection's seed session (the next query opens a new one).
    pub fn forget_session(&self) {
        if let Some(held) = &self.session {
            if let Ok(mut h) = held.lock() {
                *h = None;
            }
        }
    }

    /// Sends the query, opens the answer, and accounts for both.
    async fn exchange<R: Ring>(
        &mut self,
        pending: PendingQuery<R>,
        req: pb::InferRequest,
        prepare_cpu: Duration,
        mode: OutputMode,
        t0: Instant,
    ) -> Result<Inference, ClientError> {
        let bytes_sent = wire_len(&req);
        let t_rpc = Instant::now();
        let resp = self.svc.infer(self.request(req)).await?.into_inner();
        let round_trip = t_rpc.elapsed();
        let bytes_received = wire_len(&resp);
        let server = resp.stats;
        let (output, finish_cpu) = on_worker(move || {
            let r = tandem_grpc::query_response_from_proto::<R>(&resp)
                .map_err(|e| ProtocolError::PeerMisbehaved(format!("the server's response: {e}")))?;
            pending.finish(r)
        })
        .await?;
        Ok(Inference {
            output,
            mode,
            cost: Cost { prepare_cpu, finish_cpu, bytes_sent, bytes_received, round_trip, wall: t0.elapsed(), server },
        })
    }

    /// Asks the server to preprocess a session for a later query (a ticket,
    /// docs/PROTOCOL.md §4.0). This is where all the servers' homomorphic
    /// work happens (and the client's Paillier encryption, without seed
    /// sessions), ahead of the input; [`TandemClient::infer_on_ticket`] is then only the fast online
    /// phase. `mode = None` uses the model's default mode.
    pub async fn create_ticket(
        &mut self,
        model: &RemoteModel,
        mode: Option<OutputMode>,
    ) -> Result<RemoteTicket, ClientError> {
        self.check_pin(model)?;
        let mode = mode.unwrap_or(model.info.default_mode);
        model.info.check_mode(mode)?;
        let t0 = Instant::now();
        let client = self.core_client(model)?;
        let info = model.info.clone();
        if !matches!(model.info.ring_bits, 128 | 256) {
            let k = model.info.ring_bits;
            return Err(ClientError::BadModelInfo(format!("ring size k = {k}; this client supports 128 and 256")));
        }
        let (opened, mut session) = self.session_seed(model).await?;
        let ((seed, req), mut prepare_cpu) = on_worker(move || {
            fn one<R: Ring>(
                client: &Client,
                session: Option<&mut SeedSession>,
                info: &ModelInfo,
                mode: OutputMode,
            ) -> Result<(PendingTicket<R>, pb::CreateTicketRequest), ProtocolError> {
                let (p, r) = match session {
                    Some(s) => client
                        .request_ticket_in_session::<R>(s, info, mode)?
                        .ok_or(ProtocolError::PeerMisbehaved("a seed session with no query left".into()))?,
                    None => client.request_ticket::<R, _>(info, mode, &mut OsRng)?,
                };
                Ok((p, tandem_grpc::ticket_request_to_proto(&r)))
            }
            Ok(match info.ring_bits {
                128 => one::<u128>(&client, session.as_mut(), &info, mode).map(|(p, r)| (TicketSeed::K128(p), r))?,
                _ => one::<U256>(&client, session.as_mut(), &info, mode).map(|(p, r)| (TicketSeed::K256(p), r))?,
            })
        })
        .await?;
        let mut bytes_sent = wire_len(&req);
        let mut open_received = 0;
        if let Some(open) = opened {
            prepare_cpu += open.prepare_cpu;
            bytes_sent += open.bytes_sent;
            open_received = open.bytes_received;
        }
        let t_rpc = Instant::now();
        let resp = self.svc.create_ticket(self.request(req)).await?.into_inner();
        let round_trip = t_rpc.elapsed();
        let ticket = tandem_grpc::ticket_from_proto(&resp).map_err(|s| {
            ClientError::Protocol(ProtocolError::PeerMisbehaved(format!("the server's ticket: {s}")))
        })?;
        Ok(RemoteTicket {
            seed,
            ticket,
            expires_at: Instant::now() + Duration::from_secs(resp.expires_in_seconds.into()),
            cost: Cost {
                prepare_cpu,
                finish_cpu: Duration::ZERO,
                bytes_sent,
                bytes_received: wire_len(&resp) + open_received,
                round_trip,
                wall: t0.elapsed(),
                server: resp.stats,
            },
        })
    }

    /// The online query on a ticket: mask the input with the ticket's seed
    /// (a PRG, no Paillier), one round trip, one AEAD open.
    pub async fn infer_on_ticket(&mut self, ticket: RemoteTicket, x: &[f64]) -> Result<Inference, ClientError> {
        let t0 = Instant::now();
        let x = x.to_vec();
        let RemoteTicket { seed, ticket, .. } = ticket;
        let mode = ticket.mode;
        match seed {
            TicketSeed::K128(p) => {
                let ((pending, req), cpu) = on_worker(move || {
                    let masking = p.masking()?;
                    let (pending, q) = p.query(&ticket, &x)?;
                    Ok((pending, tandem_grpc::ticket_query_to_proto(&q, &masking)?))
                })
                .await?;
                self.exchange(pending, req, cpu, mode, t0).await
            }
            TicketSeed::K256(p) => {
                let ((pending, req), cpu) = on_worker(move || {
                    let masking = p.masking()?;
                    let (pending, q) = p.query(&ticket, &x)?;
                    Ok((pending, tandem_grpc::ticket_query_to_proto(&q, &masking)?))
                })
                .await?;
                self.exchange(pending, req, cpu, mode, t0).await
            }
        }
    }

    fn check_pin(&self, model: &RemoteModel) -> Result<(), ClientError> {
        match &self.pinned {
            Some(pin) if *pin != model.fingerprint => {
                Err(ClientError::KeyMismatch { pinned: pin.clone(), got: model.fingerprint.clone() })
            }
            _ => Ok(()),
        }
    }
}

/// One counter of the held session, if it is for `model`'s key and epoch,
/// not due for renewal, and not used up. The counter is taken under the
/// lock, so concurrent queries on clones of one connection never share one.
fn take_counter(held: &std::sync::Mutex<Option<HeldSession>>, model: &RemoteModel) -> Option<SeedSession> {
    let mut h = held.lock().ok()?;
    let s = h.as_mut()?;
    if s.fingerprint != model.fingerprint || s.epoch != model.epoch || Instant::now() >= s.renew_at {
        return None;
    }
    s.session.split_one()
}

/// Runs client-side protocol work on the blocking pool and measures its
/// thread CPU time.
async fn on_worker<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProtocolError> + Send + 'static,
) -> Result<(T, Duration), ClientError> {
    let (r, cpu) = tokio::task::spawn_blocking(move || {
        let c0 = cpu::thread_cpu_time();
        let r = f();
        (r, cpu::thread_cpu_time().saturating_sub(c0))
    })
    .await
    .map_err(|e| ClientError::Config(format!("client worker failed: {e}")))?;
    Ok((r?, cpu))
}

enum TicketSeed {
    K128(PendingTicket<u128>),
    K256(PendingTicket<U256>),
}

/// A ticket: a session the servers have preprocessed for one query of this
/// client, with the seed only this client knows. Use it once, before
/// `expires_at`.
pub struct RemoteTicket {
    seed: TicketSeed,
    ticket: Ticket,
    /// When the model server forgets the ticket.
    pub expires_at: Instant,
    /// What creating the ticket cost (the client's Paillier encryption is
    /// `prepare_cpu`; the servers' preprocessing is in `server`).
    pub cost: Cost,
}

impl RemoteTicket {
    /// The mode the ticket was preprocessed in.
    pub fn mode(&self) -> OutputMode {
        self.ticket.mode
    }
    /// The model the ticket is for.
    pub fn model_id(&self) -> &str {
        &self.ticket.model_id
    }
    /// The ticket id (also the session id of its answer).
    pub fn id(&self) -> [u8; 16] {
        self.ticket.session_id
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Converts and checks the server's description of a model.
pub fn remote_model(m: &pb::ModelInfo, pinned: Option<&str>) -> Result<RemoteModel, ClientError> {
    let bad = |s: String| ClientError::BadModelInfo(format!("model {:?}: {s}", m.id));
    let key_pb = m.activation_key.as_ref().ok_or_else(|| bad("no activation key".into()))?;
    let key = tandem_grpc::public_key_from_proto(key_pb).map_err(|e| bad(e.to_string()))?;
    let epoch = tandem_grpc::epoch_from_proto(&key_pb.seed_epoch, "activation_key.seed_epoch")
        .map_err(|e| bad(e.to_string()))?;
    let fingerprint = key.fingerprint();
    if let Some(pin) = pinned {
        let pin = normalize_fp(pin);
        if pin != fingerprint {
            return Err(ClientError::KeyMismatch { pinned: pin, got: fingerprint });
        }
    }
    let mode = |v: i32| tandem_grpc::mode_from_proto(v).map_err(|e| bad(e.to_string()));
    let modes = m
        .modes
        .iter()
        .map(|&v| mode(v)?.ok_or_else(|| bad("unspecified mode in the mode list".into())))
        .collect::<Result<Vec<_>, _>>()?;
    let default_mode = mode(m.default_mode)?.ok_or_else(|| bad("no default mode".into()))?;
    // The server's numbers size the client's buffers: bound them as the
    // model format bounds a model. Before, a model info with 2^32 − 1
    // outputs (found by tests/hostile_formats.rs) or a shape whose feature
    // count overflows was accepted here.
    let max = tandem_model::ir::MAX_VALUES;
    let features = m.input_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d as usize));
    if m.input_shape.is_empty() || m.input_shape.len() > 3 || !matches!(features, Some(1..) if features <= Some(max)) {
        return Err(bad(format!("input shape {:?} (accepted: 1 to {max} features)", m.input_shape)));
    }
    if m.output_len as usize > max {
        return Err(bad(format!("{} outputs (accepted: at most {max})", m.output_len)));
    }
    if !(m.input_min.is_finite() && m.input_max.is_finite() && m.input_min <= m.input_max) {
        return Err(bad(format!("input range [{}, {}]", m.input_min, m.input_max)));
    }
    if m.f_in > 62 || m.f_act > 62 || m.output_len == 0 {
        return Err(bad("fixed-point parameters out of range".into()));
    }
    let info = ModelInfo {
            id: m.id.clone(),
            input_shape: m.input_shape.iter().map(|&d| d as usize).collect(),
            input_range: (m.input_min, m.input_max),
            f_in: m.f_in,
            f_act: m.f_act,
            ring_bits: m.ring_bits,
            output_len: m.output_len as usize,
            output_scale: m.output_scale,
            modes,
            default_mode,
            input_offset: m.input_offset,
            input_mask_bits: m.input_mask_bits,
    };
    // The mask parameters must be the ones the public range implies: a
    // server publishing a smaller m would have the client hide its input
    // less than SECURITY.md states.
    info.masking().map_err(|e| bad(e.to_string()))?;
    Ok(RemoteModel {
        info,
        name: m.name.clone(),
        key,
        epoch,
        fingerprint,
        pinned: pinned.is_some(),
        max_request_bytes: m.max_request_bytes,
    })
}

/// A person-readable rendering of a result.
pub fn describe_output(out: &Output) -> String {
    let reals = out.to_f64();
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>().join(", ");
    match out {
        Output::Label(l) => format!("label: {l}"),
        Output::Probabilities { .. } => format!("probabilities: [{}] (label {})", list(&reals), out.label()),
        Output::Logits { .. } => format!("logits: [{}] (label {})", list(&reals), out.label()),
        Output::Sigmoid { .. } => format!("sigmoid: {:.6} (label {})", reals[0], out.label()),
    }
}

/// `label`, `probabilities`, `logits` or `sigmoid`.
pub fn parse_mode(s: &str) -> Result<OutputMode, String> {
    OutputMode::parse(s).ok_or_else(|| format!("unknown mode {s:?}; accepted: label, probabilities, logits, sigmoid"))
}

#[cfg(test)]
mod fingerprint_tests {
    use super::parse_fingerprint;

    #[test]
    fn pins_are_64_hex_digits_in_any_accepted_spelling() {
        let fp = "ab".repeat(32);
        let colons = fp.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
        for ok in [fp.clone(), fp.to_uppercase(), format!("sha256:{fp}"), format!(" {colons} ")] {
            assert_eq!(parse_fingerprint(&ok).as_deref(), Ok(fp.as_str()), "{ok}");
        }
        let e = parse_fingerprint("HEX").unwrap_err();
        assert!(e.contains("'H' is not a hexadecimal digit") && e.contains("64 hex digits"), "{e}");
        let e = parse_fingerprint(&fp[..62]).unwrap_err();
        assert!(e.contains("62 hex digits, expected 64"), "{e}");
    }
}
