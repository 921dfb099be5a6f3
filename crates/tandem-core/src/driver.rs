//! Runs queries in-process by passing the roles' messages by hand, for any
//! [`PreprocessingEngine`]. Tests, benchmarks and the `eval` command use it;
//! the gRPC shells do the same over the network. [`preprocess`] and
//! [`online`] are the two phases of docs/PROTOCOL.md §4.0; [`run_query`]
//! runs both back to back.
//!
//! Every random choice of every role comes from the one CSPRNG the caller
//! passes, so a query run twice from the same seed produces the same
//! transcript, message for message.

use crate::activation::{ActivationServer, ActivationSession};
use crate::client::{Client, PendingQuery, PendingTicket, SeedSession};
use crate::seed_session::relay_open_session;
use crate::engine::{PreprocessingEngine, S1Step, S2Step};
use crate::error::{ProtocolError, Result};
use crate::messages::*;
use crate::model_info::ModelInfo;
use crate::online::Prepared;
use crate::ring::Ring;
use crate::ring::U256;
use crate::store::{ExpiringStore, StoreError, Taken, TicketTerms};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use std::sync::Arc;
use std::time::Duration;
use tandem_model::{Output, OutputMode, QuantizedModel};

/// Every preprocessing message of one session.
pub struct PreprocessingTranscript<E: PreprocessingEngine> {
    /// S1 → S2, opening the session.
    pub session_start: SessionStart,
    /// S1 → S2, in order.
    pub to_s2: Vec<E::ToS2>,
    /// S2 → S1, in order (the first answers `session_start`).
    pub to_s1: Vec<E::ToS1>,
}

impl<E: PreprocessingEngine> Clone for PreprocessingTranscript<E> {
    fn clone(&self) -> Self {
        PreprocessingTranscript {
            session_start: self.session_start.clone(),
            to_s2: self.to_s2.clone(),
            to_s1: self.to_s1.clone(),
        }
    }
}

/// Every online message of one query.
#[derive(Clone, Debug)]
pub struct OnlineTranscript<R> {
    /// S1 → S2, in order.
    pub to_s2: Vec<OnlineStep<R>>,
    /// S2 → S1, the hidden rounds' answers.
    pub from_s2: Vec<ActivationValues<R>>,
    /// S2 → S1, the sealed result.
    pub output: OutputResponse,
    /// S1 → client.
    pub response: QueryResponse<R>,
}

/// Every message of one query, for freshness checks, byte counts and
/// recorded-transcript tests.
pub struct Transcript<E: PreprocessingEngine, R> {
    /// Client → S1.
    pub query: QueryRequest<R>,
    /// S1 ↔ S2, preprocessing.
    pub preprocessing: PreprocessingTranscript<E>,
    /// S1 ↔ S2 and S1 → client, online.
    pub online: OnlineTranscript<R>,
}

/// The preprocessing phase: S1 and S2 exchange everything homomorphic.
pub fn preprocess<E: PreprocessingEngine, R: Ring, G: RngCore + CryptoRng + ?Sized>(
    s1: &E::S1Model<R>,
    s2: &mut ActivationServer<E>,
    mode: OutputMode,
    seed: &SeedSource,
    now: Duration,
    rng: &mut G,
) -> Result<(Prepared<R>, ActivationSession<R>, PreprocessingTranscript<E>)> {
    let engine = s2.engine().clone();
    let (mut pre, session_start) = engine.s1_start::<R, G>(s1, mode, seed, rng)?;
    let (mut s2_pre, first) = s2.start_session::<R>(&session_start, now)?;
    let (mut to_s2, mut to_s1) = (Vec::new(), vec![first.clone()]);
    let mut reply = first;
    let mut session = None;
    loop {
        match engine.s1_step::<R>(&mut pre, reply)? {
            S1Step::Ready(prepared) => {
                let session = session.ok_or(ProtocolError::OutOfOrder { got: "S1 ready before S2" })?;
                return Ok((prepared, session, PreprocessingTranscript { session_start, to_s2, to_s1 }));
            }
            S1Step::Send(msg) => {
                to_s2.push(msg.clone());
                if session.is_some() {
                    return Err(ProtocolError::OutOfOrder { got: "a preprocessing message after S2 was ready" });
                }
                reply = match engine.s2_step::<R>(&mut s2_pre, msg)? {
                    S2Step::Send(m) => m,
                    S2Step::Ready(m, s) => {
                        session = Some(*s);
                        m
                    }
                };
                to_s1.push(reply.clone());
            }
        }
    }
}

/// The online phase: ring arithmetic at S1 and S2, ending in the sealed result.
pub fn online<R: Ring>(
    prepared: Prepared<R>,
    mut session: ActivationSession<R>,
    masked_input: Vec<R>,
) -> Result<OnlineTranscript<R>> {
    let (mut q, mut step) = prepared.start(masked_input)?;
    let (mut to_s2, mut from_s2) = (Vec::new(), Vec::new());
    loop {
        to_s2.push(step.clone());
        match step {
            OnlineStep::Round(r) => {
                let values = session.activate(&r)?;
                from_s2.push(values.clone());
                step = q.on_values(values)?;
            }
            OnlineStep::Output(o) => {
                let output = session.finish(&o)?;
                let response = q.on_output(output.clone())?;
                return Ok(OnlineTranscript { to_s2, from_s2, output, response });
            }
        }
    }
}

/// One whole query: the client prepares, the servers preprocess, then run
/// the online phase, and the client opens the result.
#[allow(clippy::too_many_arguments)]
pub fn run_query<E: PreprocessingEngine, R: Ring, G: RngCore + CryptoRng + ?Sized>(
    client: &Client,
    info: &ModelInfo,
    s1: &E::S1Model<R>,
    s2: &mut ActivationServer<E>,
    x: &[f64],
    mode: OutputMode,
    rng: &mut G,
) -> Result<(Output, Transcript<E, R>)> {
    let (pending, query) = client.prepare::<R, G>(info, x, mode, rng)?;
    serve_query(s1, s2, pending, query, Duration::ZERO, rng)
}

/// S1 and S2 serve a prepared query; the client opens the result.
fn serve_query<E: PreprocessingEngine, R: Ring, G: RngCore + CryptoRng + ?Sized>(
    s1: &E::S1Model<R>,
    s2: &mut ActivationServer<E>,
    pending: PendingQuery<R>,
    query: QueryRequest<R>,
    now: Duration,
    rng: &mut G,
) -> Result<(Output, Transcript<E, R>)> {
    s2.engine().online_model(s1).check_input(&query.masked_input)?;
    let (prepared, session, preprocessing) = preprocess(s1, s2, query.mode, &query.seed, now, rng)?;
    let online = online(prepared, session, query.masked_input.clone())?;
    let result = pending.finish(online.response.clone())?;
    Ok((result, Transcript { query, preprocessing, online }))
}

/// One whole query with the next seed of a seed session (§4.1a): the
/// client's work is a PRG expansion, additions and one AEAD open.
#[allow(clippy::too_many_arguments)]
pub fn run_query_in_session<E: PreprocessingEngine, R: Ring, G: RngCore + CryptoRng + ?Sized>(
    client: &Client,
    session: &mut SeedSession,
    info: &ModelInfo,
    s1: &E::S1Model<R>,
    s2: &mut ActivationServer<E>,
    x: &[f64],
    mode: OutputMode,
    now: Duration,
    rng: &mut G,
) -> Result<(Output, Transcript<E, R>)> {
    let (pending, query) = client
        .prepare_in_session::<R>(session, info, x, mode)?
        .ok_or(ProtocolError::OutOfRange {
            field: "seed session counter",
            got: session.remaining(),
            accepted: "a session with queries left (open a new seed session)".into(),
        })?;
    serve_query(s1, s2, pending, query, now, rng)
}

/// The client opens a seed session: S1 relays the request (rerandomized,
/// [`relay_open_session`]) and S2 decrypts the secret once.
pub fn open_seed_session<E: PreprocessingEngine, G: RngCore + CryptoRng + ?Sized>(
    client: &Client,
    s2: &mut ActivationServer<E>,
    now: Duration,
    rng: &mut G,
) -> Result<SeedSession> {
    let (pending, req) = client.open_session(rng)?;
    let relayed = relay_open_session(client.public_key(), &req, rng)?;
    let opened = s2.open_session_in_process(&relayed, now)?;
    Ok(pending.opened(&opened))
}

/// A ticket issued in-process: the client's secret half, S1's confirmation,
/// and both servers' preprocessed halves.
pub struct IssuedTicket<R: Ring> {
    /// The client's seed, waiting for an input.
    pub pending: PendingTicket<R>,
    /// What S1 told the client.
    pub ticket: Ticket,
    /// S1's half.
    pub prepared: Prepared<R>,
    /// S2's half.
    pub session: ActivationSession<R>,
}

/// The client asks for a ticket and the servers preprocess it (§4.0).
pub fn issue_ticket<E: PreprocessingEngine, R: Ring, G: RngCore + CryptoRng + ?Sized>(
    client: &Client,
    info: &ModelInfo,
    s1: &E::S1Model<R>,
    s2: &mut ActivationServer<E>,
    mode: OutputMode,
    rng: &mut G,
) -> Result<IssuedTicket<R>> {
    let (pending, req) = client.request_ticket::<R, G>(info, mode, rng)?;
    let (prepared, session, _) = preprocess(s1, s2, req.mode, &req.seed, Duration::ZERO, rng)?;
    let ticket = Ticket { session_id: prepared.session_id(), model_id: req.model_id, mode: req.mode };
    Ok(IssuedTicket { pending, ticket, prepared, session })
}

impl<R: Ring> IssuedTicket<R> {
    /// The input arrives: the online phase, and the client opens the result.
    pub fn query(self, x: &[f64]) -> Result<Output> {
        let (pending, query) = self.pending.query(&self.ticket, x)?;
        let online = online(self.prepared, self.session, query.masked_input)?;
        pending.finish(online.response)
    }
}

fn store_error<H>(e: StoreError<H>) -> ProtocolError {
    match e {
        StoreError::Full { limit } | StoreError::HolderFull { limit, .. } => ProtocolError::StoreFull { limit },
        StoreError::Unknown => ProtocolError::UnknownSession,
    }
}

fn taken<H>(e: Taken<H, ProtocolError>) -> ProtocolError {
    match e {
        Taken::Store(e) => store_error(e),
        Taken::Refused(e) => e,
    }
}

/// Both servers' stores of sessions preprocessed ahead of their input, kept
/// by the same [`ExpiringStore`] and checked by the same
/// [`TicketTerms::admits`] as the gRPC shells, so in-process tests take the
/// network's ticket path: reserve before preprocessing, file, and spend once.
pub struct TicketDesk<R: Ring> {
    /// S1's tickets: what each was issued for and S1's half.
    pub s1: ExpiringStore<(TicketTerms, Prepared<R>), Option<Arc<str>>>,
    /// S2's preprocessed sessions.
    pub s2: ExpiringStore<ActivationSession<R>>,
}

impl<R: Ring> TicketDesk<R> {
    /// At most `max` tickets (`per_client` per owner), each living `ttl`.
    pub fn new(max: usize, per_client: usize, ttl: Duration) -> Self {
        TicketDesk { s1: ExpiringStore::new(max, per_client, ttl), s2: ExpiringStore::new(max, max, ttl) }
    }

    fn in_process() -> Self {
        Self::new(IN_PROCESS_TICKETS, IN_PROCESS_TICKETS_PER_CLIENT, IN_PROCESS_TICKET_TTL)
    }

    /// `owner` asks for a ticket at `now`: both servers reserve room, then
    /// preprocess, then file their halves. Returns the client's half.
    #[allow(clippy::too_many_arguments)]
    pub fn issue<E: PreprocessingEngine, G: RngCore + CryptoRng + ?Sized>(
        &mut self,
        client: &Client,
        info: &ModelInfo,
        s1: &E::S1Model<R>,
        s2: &mut ActivationServer<E>,
        mode: OutputMode,
        owner: Option<Arc<str>>,
        now: Duration,
        rng: &mut G,
    ) -> Result<(PendingTicket<R>, Ticket)> {
        let r1 = self.s1.reserve(owner.clone(), now).map_err(store_error)?;
        let r2 = match self.s2.reserve((), now) {
            Ok(r) => r,
            Err(e) => {
                self.s1.cancel(r1);
                return Err(store_error(e));
            }
        };
        match issue_ticket(client, info, s1, s2, mode, rng) {
            Ok(t) => {
                let id = t.ticket.session_id;
                let terms = TicketTerms { model_id: t.ticket.model_id.clone(), mode: t.ticket.mode, owner };
                self.s2.insert(id, t.session, r2, now);
                self.s1.insert(id, (terms, t.prepared), r1, now);
                Ok((t.pending, t.ticket))
            }
            Err(e) => {
                self.s1.cancel(r1);
                self.s2.cancel(r2);
                Err(e)
            }
        }
    }

    /// `caller` spends a ticket at `now` with input `x`: S1 takes its half
    /// if the ticket admits the query, S2 takes its own, the online phase
    /// runs and the client opens the result.
    #[allow(clippy::too_many_arguments)]
    pub fn query<E: PreprocessingEngine>(
        &mut self,
        engine: &E,
        s1: &E::S1Model<R>,
        pending: PendingTicket<R>,
        ticket: &Ticket,
        x: &[f64],
        caller: Option<&str>,
        now: Duration,
    ) -> Result<Output> {
        let (pending, q) = pending.query(ticket, x)?;
        engine.online_model(s1).check_input(&q.masked_input)?;
        let (_, prepared) = self
            .s1
            .take(&q.ticket, now, |(terms, _)| terms.admits(&q.model_id, Some(q.mode), caller).map_err(Into::into))
            .map_err(taken)?;
        let session = self.s2.take(&q.ticket, now, |_| Ok(())).map_err(taken)?;
        let online = online(prepared, session, q.masked_input)?;
        pending.finish(online.response)
    }
}

/// Everything needed to run private queries against one model in-process,
/// for any engine: S2, S1 for the model's ring, a client, and the one
/// CSPRNG every role draws from (seeded by the caller, so runs replay).
pub struct InProcess<E: PreprocessingEngine> {
    /// The quantized model.
    pub model: Arc<QuantizedModel>,
    /// What S1 publishes about it.
    pub info: ModelInfo,
    /// S2.
    pub s2: ActivationServer<E>,
    /// The client, bound to S2's key and epoch.
    pub client: Client,
    /// S1, when the model's ring is k = 128.
    pub s1_128: Option<E::S1Model<u128>>,
    /// S1, when the model's ring is k = 256.
    pub s1_256: Option<E::S1Model<U256>>,
    /// The CSPRNG the roles draw from.
    pub rng: ChaCha20Rng,
    /// Tickets, when the model's ring is k = 128.
    pub tickets_128: TicketDesk<u128>,
    /// Tickets, when the model's ring is k = 256.
    pub tickets_256: TicketDesk<U256>,
    /// The in-process clock the ticket stores read: tests move it by hand.
    pub now: Duration,
}

/// In-process ticket limits: the model server's defaults.
const IN_PROCESS_TICKETS: usize = 1024;
const IN_PROCESS_TICKETS_PER_CLIENT: usize = 64;
const IN_PROCESS_TICKET_TTL: Duration = Duration::from_secs(600);

impl<E: PreprocessingEngine> InProcess<E> {
    /// Wires S2 (with `keys`), S1 for `model` and a client; `seed` seeds the
    /// CSPRNG all three draw from.
    pub fn new(engine: Arc<E>, keys: E::S2Keys, model: Arc<QuantizedModel>, id: &str, seed: [u8; 32]) -> Result<Self> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let (mut s1_128, mut s1_256) = (None, None);
        match model.ring_bits {
            128 => s1_128 = Some(engine.s1_model::<u128>(&keys, model.clone())?),
            256 => s1_256 = Some(engine.s1_model::<U256>(&keys, model.clone())?),
            k => return Err(ProtocolError::RingMismatch { model: k, code: 128 }),
        }
        let pk = engine.seed_key(&keys);
        let s2 = ActivationServer::new(engine, keys, &mut rng);
        let client = Client::new(pk, s2.seed_epoch());
        let info = ModelInfo::of(id, &model);
        Ok(InProcess {
            model,
            info,
            s2,
            client,
            s1_128,
            s1_256,
            rng,
            tickets_128: TicketDesk::in_process(),
            tickets_256: TicketDesk::in_process(),
            now: Duration::ZERO,
        })
    }

    /// One private query.
    pub fn infer(&mut self, x: &[f64], mode: OutputMode) -> Result<Output> {
        let InProcess { info, s2, client, s1_128, s1_256, rng, .. } = self;
        match (s1_128.as_ref(), s1_256.as_ref()) {
            (Some(s1), _) => run_query(client, info, s1, s2, x, mode, rng).map(|r| r.0),
            (_, Some(s1)) => run_query(client, info, s1, s2, x, mode, rng).map(|r| r.0),
            _ => unreachable!("one ring is set"),
        }
    }

    /// Opens a seed session at the in-process clock's `now`.
    pub fn open_seed_session(&mut self) -> Result<SeedSession> {
        open_seed_session(&self.client, &mut self.s2, self.now, &mut self.rng)
    }

    /// One private query with the next seed of `session`.
    pub fn infer_in_session(&mut self, session: &mut SeedSession, x: &[f64], mode: OutputMode) -> Result<Output> {
        let InProcess { info, s2, client, s1_128, s1_256, rng, now, .. } = self;
        match (s1_128.as_ref(), s1_256.as_ref()) {
            (Some(s1), _) => run_query_in_session(client, session, info, s1, s2, x, mode, *now, rng).map(|r| r.0),
            (_, Some(s1)) => run_query_in_session(client, session, info, s1, s2, x, mode, *now, rng).map(|r| r.0),
            _ => unreachable!("one ring is set"),
        }
    }

    /// One private query on a k = 128 model, with every message.
    pub fn infer_128(&mut self, x: &[f64], mode: OutputMode) -> Result<(Output, Transcript<E, u128>)> {
        let InProcess { info, s2, client, s1_128, rng, .. } = self;
        let s1 = s1_128.as_ref().ok_or(ProtocolError::RingMismatch { model: 256, code: 128 })?;
        run_query(client, info, s1, s2, x, mode, rng)
    }

    /// One query on a ticket: the seed is sent and preprocessed first, the
    /// input arrives afterwards (docs/PROTOCOL.md §4.0), through the same
    /// stores and checks as the gRPC shells.
    pub fn infer_with_ticket(&mut self, x: &[f64], mode: OutputMode) -> Result<Output> {
        let InProcess { info, s2, client, s1_128, s1_256, rng, tickets_128, tickets_256, now, .. } = self;
        let engine = s2.engine().clone();
        match (s1_128.as_ref(), s1_256.as_ref()) {
            (Some(s1), _) => {
                let (p, t) = tickets_128.issue(client, info, s1, s2, mode, None, *now, rng)?;
                tickets_128.query(&*engine, s1, p, &t, x, None, *now)
            }
            (_, Some(s1)) => {
                let (p, t) = tickets_256.issue(client, info, s1, s2, mode, None, *now, rng)?;
                tickets_256.query(&*engine, s1, p, &t, x, None, *now)
            }
            _ => unreachable!("one ring is set"),
        }
    }
}
