//! One private query at S1, in its two phases: the `Preprocessing` state
//! machine driven over an `ActivationService.Preprocess` stream (every
//! homomorphic step on the blocking pool), and the `OnlineQuery` over an
//! `Evaluate` stream (ring arithmetic, inline). Every wait for S2 has a
//! deadline.

use tandem_grpc::OrStatus;
use rand_core::OsRng;
use std::time::{Duration, Instant};
use tandem_core::{OnlineStep, Prepared, Ring, SeedSource};
use tandem_grpc::v1 as pb;
use tandem_grpc::v1::activation_service_client::ActivationServiceClient;
use tandem_grpc::{status_from_protocol, wire_len};
use tandem_model::OutputMode;
use tandem_core::engine::{PreprocessingEngine, S1Step};
use tandem_lattice_engine::{LatticeEngine, LatticeModel, LatticePreprocessing, LatticeReply, LatticeStep};
use tandem_paillier::{Preprocessing, PreprocessingStep, SessionReady};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tracing::error;

/// Deadlines for one query.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// Longest wait for any one answer from S2.
    pub step: Duration,
    /// The whole query (also sent to S2 as the stream's grpc-timeout).
    pub query: Duration,
}

/// What a query cost S1 (reported to the client in `QueryStats`).
#[derive(Default, Debug, Clone)]
pub struct Costs {
    pub s1_compute: Duration,
    pub to_s2: u64,
    pub from_s2: u64,
    pub rounds: u32,
    /// Wall time of the online phase.
    pub online: Duration,
}

/// A failed query; `key_changed` asks the caller to refetch S2's key.
pub struct QueryFailure {
    pub status: Status,
    pub key_changed: bool,
    /// S2 does not hold the OT setup the session named (§4.2c): the
    /// refresh also runs a new `SetupOt`.
    pub ot_stale: bool,
}

impl From<Status> for QueryFailure {
    fn from(status: Status) -> Self {
        QueryFailure { status, key_changed: false, ot_stale: false }
    }
}

async fn blocking<T: Send + 'static>(
    costs: &mut Costs,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let (r, d) = tandem_grpc::server::blocking("model server", f).await?;
    costs.s1_compute += d;
    Ok(r)
}

/// Maps a status from S2 (or from the transport to S2) to what the client
/// should see. `started`: S2 accepted the session, so an INVALID_ARGUMENT is
/// about S1's messages, not the client's.
fn from_s2(st: Status, started: bool) -> QueryFailure {
    let m = st.message();
    // A connection that breaks mid-stream surfaces as an h2 error (often INTERNAL).
    let transport = st.code() == Code::Internal && m.starts_with("h2 protocol error");
    let status = match st.code() {
        _ if transport => Status::unavailable(format!(
            "the activation server is unavailable or was restarted mid-query ({m}); retry the query (with a fresh seed)"
        )),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => Status::unavailable(format!(
            "the activation server is unavailable or was restarted mid-query ({m}); retry the query (with a fresh seed)"
        )),
        Code::DeadlineExceeded => Status::deadline_exceeded(format!("activation server: {m}")),
        Code::ResourceExhausted => Status::resource_exhausted(format!("the activation server is busy: {m}")),
        Code::AlreadyExists => Status::already_exists(format!("activation server: {m}")),
        Code::InvalidArgument if !started => Status::invalid_argument(format!("activation server: {m}")),
        Code::InvalidArgument | Code::OutOfRange => {
            error!("the activation server rejected one of our messages: {m}");
            Status::internal(format!("the activation server rejected the model server's message: {m}"))
        }
        // The client's seed session is gone: it expired, or S2 restarted.
        // The client opens a new one after fetching the model info again,
        // so S1 refetches S2's epoch first (a restart changed it).
        Code::FailedPrecondition if m.starts_with("unknown seed session") => {
            return QueryFailure {
                status: Status::failed_precondition(format!("activation server: {m}")),
                key_changed: true,
                ot_stale: false,
            }
        }
        // §4.2c: S2 restarted or dropped our OT setup. It refused before
        // touching the seed; S1 runs a new setup (with the keys' refresh)
        // and the client retries.
        Code::FailedPrecondition if m.starts_with("unknown OT setup") => {
            return QueryFailure {
                status: Status::failed_precondition(format!(
                    "the activation server lost the model server's OT setup ({m}); the model server made a new one: retry"
                )),
                key_changed: true,
                ot_stale: true,
            }
        }
        Code::FailedPrecondition => {
            return QueryFailure {
                status: Status::failed_precondition(format!(
                    "the activation server's key or seed epoch changed ({m}); fetch the model info again and retry with a fresh seed"
                )),
                key_changed: true,
                ot_stale: false,
            }
        }
        c => Status::new(c, format!("activation server: {m}")),
    };
    QueryFailure { status, key_changed: false, ot_stale: false }
}

/// A reply message of S2's streams.
pub trait Reply: Send + 'static {
    type Msg;
    fn into_msg(self) -> Option<Self::Msg>;
}

impl Reply for pb::PreprocessReply {
    type Msg = pb::preprocess_reply::Msg;
    fn into_msg(self) -> Option<Self::Msg> {
        self.msg
    }
}

impl Reply for pb::EvaluateReply {
    type Msg = pb::evaluate_reply::Msg;
    fn into_msg(self) -> Option<Self::Msg> {
        self.msg
    }
}

/// One open stream to S2: S1's messages go into `tx`, S2's come from `inbound`.
struct Link<O, I> {
    tx: mpsc::Sender<O>,
    inbound: Streaming<I>,
}

/// Opens a stream whose first message is `first`. `what` names the phase.
async fn open<O, I, F, Fut>(
    first: O,
    deadlines: Deadlines,
    costs: &mut Costs,
    what: &str,
    call: F,
) -> Result<Link<O, I>, QueryFailure>
where
    O: prost::Message + Send + 'static,
    F: FnOnce(tonic::Request<ReceiverStream<O>>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Streaming<I>>, Status>>,
{
    let (tx, rx) = mpsc::channel::<O>(1);
    costs.to_s2 += wire_len(&first);
    tx.send(first).await.expect("the receiver is alive");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.set_timeout(deadlines.query);
    let inbound = match tokio::time::timeout(deadlines.step, call(request)).await {
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "the activation server did not open a {what} stream within {} s",
                deadlines.step.as_secs()
            ))
            .into())
        }
        Ok(Err(st)) => return Err(from_s2(st, false)),
        Ok(Ok(r)) => r.into_inner(),
    };
    Ok(Link { tx, inbound })
}

impl<O: prost::Message, I: Reply> Link<O, I> {
    /// S2's next message. `started`: S2 accepted the session's first
    /// message, so an INVALID_ARGUMENT is about S1's messages.
    async fn recv(
        &mut self,
        step: Duration,
        costs: &mut Costs,
        expecting: &str,
        started: bool,
    ) -> Result<I::Msg, QueryFailure>
    where
        I: prost::Message,
    {
        match tokio::time::timeout(step, self.inbound.message()).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the activation server did not send {expecting} within {} s",
                step.as_secs()
            ))
            .into()),
            Ok(Err(st)) => Err(from_s2(st, started)),
            Ok(Ok(None)) => Err(Status::unavailable(format!(
                "the activation server closed the session before sending {expecting} (restarted?); retry the query"
            ))
            .into()),
            Ok(Ok(Some(m))) => {
                costs.from_s2 += wire_len(&m);
                m.into_msg().ok_or_else(|| {
                    Status::internal(format!("the activation server sent an empty message instead of {expecting}"))
                        .into()
                })
            }
        }
    }

    /// Sends one message; if the stream is gone, S2's status explains why.
    async fn send(&mut self, msg: O, costs: &mut Costs) -> Result<(), QueryFailure>
    where
        I: prost::Message,
    {
        costs.to_s2 += wire_len(&msg);
        if self.tx.send(msg).await.is_err() {
            return match tokio::time::timeout(Duration::from_secs(1), self.inbound.message()).await {
                Ok(Err(st)) => Err(from_s2(st, true)),
                _ => Err(Status::unavailable("the session with the activation server broke; retry the query").into()),
            };
        }
        Ok(())
    }
}

/// S2 sent something S1 cannot use: a server-side fault, not the client's.
fn from_s2_data(e: tandem_core::ProtocolError) -> Status {
    error!("malformed message from the activation server: {e}");
    Status::internal(format!("the activation server sent a malformed message: {e}"))
}

fn unexpected(expecting: &str) -> QueryFailure {
    error!("protocol violation by the activation server: expected {expecting}");
    Status::internal(format!("the activation server sent a message out of order (expected {expecting})")).into()
}

fn width(step: &PreprocessingStep) -> usize {
    match step {
        PreprocessingStep::Round(r) => r.count as usize,
        PreprocessingStep::Output(o) => o.count as usize,
    }
}

/// The preprocessing phase (docs/PROTOCOL.md §4.0) over one `Preprocess`
/// stream: every homomorphic step, on the blocking pool.
pub async fn preprocess<R: Ring>(
    s1: LatticeModel<R>,
    mut s2: ActivationServiceClient<Channel>,
    mode: OutputMode,
    seed: SeedSource,
    deadlines: Deadlines,
    costs: &mut Costs,
) -> Result<Prepared<R>, QueryFailure> {
    let pk = s1.public_key().clone();
    let d = s1.model().input_len();
    let lattice = s1.lattice_context().cloned().zip(s1.lattice_key_fingerprint().map(str::to_string));
    let (pre, start) = {
        let pk = pk.clone();
        let fingerprint = lattice.as_ref().map(|l| l.1.clone()).unwrap_or_default();
        blocking(costs, move || {
            // The shell's randomness: the OS CSPRNG seeds the session's own.
            let (pre, start) =
                s1.start_preprocessing(mode, &seed, &mut OsRng).map_err(|e| status_from_protocol(&e))?;
            let mut start = tandem_grpc::session_start_to_proto(&pk.fingerprint(), &start);
            start.lattice_key_fingerprint = fingerprint;
            Ok((pre, start))
        })
        .await?
    };
    let first = pb::PreprocessMsg { msg: Some(pb::preprocess_msg::Msg::Start(start)) };
    let mut link = open(first, deadlines, costs, "preprocessing", |r| s2.preprocess(r)).await?;
    if pre.uses_full_lattice() {
        let Some((ctx, _)) = lattice else {
            return Err(Status::internal("a full-lattice session without an RLWE context").into());
        };
        return preprocess_full(pre, ctx, link, deadlines, costs).await;
    }
    // The first answer may still be S2 refusing the session start.
    let expecting = if pre.uses_lattice() { "LatticeInputs" } else { "InputMasks" };
    let (pre, mut next, mut n) = match (link.recv(deadlines.step, costs, expecting, false).await?, lattice) {
        (pb::preprocess_reply::Msg::Masks(masks), None) => {
            costs.rounds += 1;
            let pk = pk.clone();
            let mut pre: Preprocessing<R> = pre.into_paillier();
            blocking(costs, move || {
                let masks = tandem_grpc::input_masks_from_proto(&pk, &masks, d).map_err(from_s2_data)?;
                let next = pre.on_input_masks(masks).map_err(from_s2_data)?;
                let n = width(&next);
                Ok((pre, tandem_grpc::preprocessing_step_to_proto(&pk, &next), n))
            })
            .await?
        }
        // §4.2b: the first layer's product over RLWE, then [s] under Paillier.
        (pb::preprocess_reply::Msg::LatticeInputs(inputs), Some((ctx, _))) => {
            costs.rounds += 1;
            let mut pre: LatticePreprocessing<R> = pre;
            let c = ctx.clone();
            let (p, products) = blocking(costs, move || {
                let layout = *pre.layout().expect("a lattice session has a layout");
                let cts = tandem_grpc::lattice_inputs_from_proto(&c, &layout, &inputs).map_err(from_s2_data)?;
                let out = pre.on_inputs(&cts).map_err(from_s2_data)?;
                Ok((pre, tandem_grpc::lattice_products_to_proto(&c, &out)))
            })
            .await?;
            pre = p;
            link.send(pb::PreprocessMsg { msg: Some(pb::preprocess_msg::Msg::LatticeProducts(products)) }, costs).await?;
            costs.rounds += 1;
            let enc_s = match link.recv(deadlines.step, costs, "FirstLayerProducts", true).await? {
                pb::preprocess_reply::Msg::FirstProducts(p) => p,
                _ => return Err(unexpected("FirstLayerProducts")),
            };
            let pk = pk.clone();
            blocking(costs, move || {
                let n_out = pre.layout().expect("a lattice session has a layout").n_out;
                let enc_s = tandem_grpc::first_products_from_proto(&pk, &enc_s, n_out).map_err(from_s2_data)?;
                let next = pre.on_products(enc_s).map_err(from_s2_data)?;
                let n = width(&next);
                Ok((pre.into_paillier(), tandem_grpc::preprocessing_step_to_proto(&pk, &next), n))
            })
            .await?
        }
        _ => return Err(unexpected(expecting)),
    };
    let mut pre = pre;
    loop {
        let finishing = matches!(next.msg, Some(pb::preprocess_msg::Msg::Output(_)));
        link.send(next, costs).await?;
        costs.rounds += 1;
        if finishing {
            match link.recv(deadlines.step, costs, "SessionReady", true).await? {
                pb::preprocess_reply::Msg::Ready(_) => {}
                _ => return Err(unexpected("SessionReady")),
            }
            return pre.on_ready(SessionReady).map_err(|e| status_from_protocol(&e).into());
        }
        let rho = match link.recv(deadlines.step, costs, "RhoMasks", true).await? {
            pb::preprocess_reply::Msg::Rho(r) => r,
            _ => return Err(unexpected("RhoMasks")),
        };
        let pk = pk.clone();
        (pre, next, n) = blocking(costs, move || {
            let rho = tandem_grpc::rho_masks_from_proto(&pk, &rho, n).map_err(from_s2_data)?;
            let next = pre.on_rho_masks(rho).map_err(from_s2_data)?;
            let n = width(&next);
            Ok((pre, tandem_grpc::preprocessing_step_to_proto(&pk, &next), n))
        })
        .await?;
    }
}

/// S2's messages on the full lattice path, as received.
enum FullIncoming {
    Inputs(pb::LatticeInputs),
    Reply(pb::FullReply),
    Ready,
}

/// §4.2c over the stream: S2's `LatticeInputs`, then `FullStep` ⇄
/// `FullReply` until S2's `SessionReady`; each of S1's steps is the
/// engine's `s1_step`, on the blocking pool.
async fn preprocess_full<R: Ring>(
    mut pre: LatticePreprocessing<R>,
    ctx: std::sync::Arc<tandem_lattice_engine::tandem_lattice::Context>,
    mut link: Link<pb::PreprocessMsg, pb::PreprocessReply>,
    deadlines: Deadlines,
    costs: &mut Costs,
) -> Result<Prepared<R>, QueryFailure> {
    let engine = LatticeEngine::from_context(ctx.clone());
    // The first answer may still be S2 refusing the session start.
    let mut incoming = match link.recv(deadlines.step, costs, "LatticeInputs", false).await? {
        pb::preprocess_reply::Msg::LatticeInputs(i) => FullIncoming::Inputs(i),
        _ => return Err(unexpected("LatticeInputs")),
    };
    costs.rounds += 1;
    loop {
        let (engine, ctx) = (engine.clone(), ctx.clone());
        let (p, out) = blocking(costs, move || {
            let msg = match incoming {
                FullIncoming::Inputs(i) => {
                    let r = pb::FullReply { corrections: Vec::new(), inputs: i.ciphertexts };
                    LatticeReply::Inputs(tandem_grpc::full_reply_from_proto(&ctx, &r).map_err(from_s2_data)?.inputs)
                }
                FullIncoming::Reply(r) => {
                    LatticeReply::Full(tandem_grpc::full_reply_from_proto(&ctx, &r).map_err(from_s2_data)?)
                }
                FullIncoming::Ready => LatticeReply::FullReady,
            };
            let out = match engine.s1_step(&mut pre, msg).map_err(from_s2_data)? {
                S1Step::Send(LatticeStep::Full(step)) => Ok(tandem_grpc::full_step_to_proto(&ctx, &step)),
                S1Step::Send(other) => {
                    return Err(Status::internal(format!("the full lattice path produced {other:?}")));
                }
                S1Step::Ready(prepared) => Err(prepared),
            };
            Ok((pre, out))
        })
        .await?;
        pre = p;
        let step = match out {
            Ok(step) => step,
            Err(prepared) => return Ok(prepared),
        };
        link.send(pb::PreprocessMsg { msg: Some(pb::preprocess_msg::Msg::FullStep(step)) }, costs).await?;
        costs.rounds += 1;
        incoming = match link.recv(deadlines.step, costs, "FullReply or SessionReady", true).await? {
            pb::preprocess_reply::Msg::FullReply(r) => FullIncoming::Reply(r),
            pb::preprocess_reply::Msg::Ready(_) => FullIncoming::Ready,
            _ => return Err(unexpected("FullReply or SessionReady")),
        };
    }
}

/// The online phase over one `Evaluate` stream: ring arithmetic only, done
/// inline (microseconds to a millisecond per layer) so it never queues
/// behind other sessions' preprocessing on the blocking pool.
pub async fn online<R: Ring>(
    prepared: Prepared<R>,
    mut s2: ActivationServiceClient<Channel>,
    masked_input: Vec<R>,
    deadlines: Deadlines,
    costs: &mut Costs,
) -> Result<pb::InferResponse, QueryFailure> {
    let session_id = prepared.session_id();
    let t = Instant::now();
    let (mut q, mut next) = prepared.start(masked_input).map_err(|e| status_from_protocol(&e))?;
    costs.s1_compute += t.elapsed();
    let first =
        pb::EvaluateMsg { msg: Some(pb::evaluate_msg::Msg::Resume(pb::Resume { session_id: session_id.to_vec() })) };
    let mut link = open(first, deadlines, costs, "evaluation", |r| s2.evaluate(r)).await?;
    loop {
        let (n, finishing) = match &next {
            OnlineStep::Round(r) => (r.e.len(), false),
            OnlineStep::Output(_) => (0, true),
        };
        link.send(tandem_grpc::online_step_to_proto(&next), costs).await?;
        costs.rounds += 1;
        if finishing {
            let out = match link.recv(deadlines.step, costs, "OutputResponse", true).await? {
                pb::evaluate_reply::Msg::Output(o) => o,
                _ => return Err(unexpected("OutputResponse")),
            };
            let mode = q.mode();
            let resp = q
                .on_output(tandem_core::OutputResponse { sealed: out.sealed })
                .map_err(|e| status_from_protocol(&e))?;
            let mut resp = tandem_grpc::query_response_to_proto(&resp, None);
            // Say which mode was used: a request may leave it to the model's
            // default or the ticket's.
            resp.mode = tandem_grpc::mode_to_proto(mode) as i32;
            return Ok(resp);
        }
        let values = match link.recv(deadlines.step, costs, "ActivationValues", true).await? {
            pb::evaluate_reply::Msg::Values(v) => v,
            _ => return Err(unexpected("ActivationValues")),
        };
        let t = Instant::now();
        let values = tandem_grpc::activation_values_from_proto::<R>(&values, n).map_err(from_s2_data)?;
        next = q.on_values(values).map_err(from_s2_data)?;
        costs.s1_compute += t.elapsed();
    }
}

/// S1's part in opening a seed session (§4.1a): decode, rerandomize the
/// client's `[secret]` toward S2, relay, check S2's answer.
pub async fn open_seed_session(
    key: &tandem_paillier::PublicKey,
    mut s2: ActivationServiceClient<Channel>,
    req: pb::OpenSeedSessionRequest,
    deadlines: Deadlines,
) -> Result<pb::SeedSession, QueryFailure> {
    let pure = tandem_core::paillier_pk::PublicKey::from_bytes(&key.to_bytes())
        .map_err(|e| Status::internal(format!("the activation server's key: {e}")))?;
    let msg = tandem_grpc::open_seed_session_from_proto(key.ciphertext_bytes(), &req).or_status()?;
    let relayed = tandem_grpc::server::blocking("model server", move || {
        tandem_core::seed_session::relay_open_session(&pure, &msg, &mut OsRng).or_status()
    })
    .await?
    .0;
    let r = tonic::Request::new(tandem_grpc::open_seed_session_to_proto(&relayed));
    let t0 = Instant::now();
    let answer = match tokio::time::timeout(deadlines.step, s2.open_seed_session(r)).await {
        Ok(Ok(a)) => a.into_inner(),
        // The channel's own timeout (the same deadline) ends the call as
        // CANCELLED, which would read as an outage.
        Ok(Err(st)) if st.code() != Code::Cancelled || t0.elapsed() < deadlines.step => return Err(from_s2(st, false)),
        _ => {
            return Err(Status::deadline_exceeded(format!(
                "the activation server did not open the seed session within {} s",
                deadlines.step.as_secs()
            ))
            .into())
        }
    };
    let opened = tandem_grpc::seed_session_from_proto(&answer).map_err(|e| {
        error!("the activation server's seed session: {e}");
        Status::internal(format!("the activation server's answer: {e}"))
    })?;
    Ok(tandem_grpc::seed_session_to_proto(&opened))
}

/// A one-shot query: decode and check the client's request, preprocess,
/// then run the online phase.
pub async fn run<R: Ring>(
    s1: LatticeModel<R>,
    s2: ActivationServiceClient<Channel>,
    req: pb::InferRequest,
    mode: OutputMode,
    deadlines: Deadlines,
    costs: &mut Costs,
) -> Result<pb::InferResponse, QueryFailure> {
    let pk = s1.public_key().clone();
    let d = s1.model().input_len();
    let masking = s1.plan().input_masking;
    let qr = {
        let s1 = s1.clone();
        blocking(costs, move || {
            let qr = tandem_grpc::query_request_from_proto::<R>(pk.ciphertext_bytes(), &req, mode, &masking, d)
                .or_status()?;
            s1.check_input(&qr.masked_input).map_err(|e| status_from_protocol(&e))?;
            Ok(qr)
        })
        .await?
    };
    let prepared = preprocess(s1, s2.clone(), mode, qr.seed, deadlines, costs).await?;
    let t = Instant::now();
    let r = online(prepared, s2, qr.masked_input, deadlines, costs).await;
    costs.online = t.elapsed();
    r
}
