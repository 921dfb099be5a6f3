//! One private query at S1: the `ModelQuery` state machine driven over one
//! `ActivationService.Session` stream. Every protocol step runs on the
//! blocking pool; every wait for S2 has a deadline.

use std::time::{Duration, Instant};
use tandem_crypto::Ring;
use tandem_model::OutputMode;
use tandem_proto::v1 as pb;
use tandem_proto::v1::activation_service_client::ActivationServiceClient;
use tandem_proto::{status_from_protocol, wire_len};
use tandem_protocol::{ModelQuery, ModelServer, ToActivation};
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
    pub s2_compute_micros: u64,
    pub to_s2: u64,
    pub from_s2: u64,
    pub rounds: u32,
}

/// A failed query; `key_changed` asks the caller to refetch S2's key.
pub struct QueryFailure {
    pub status: Status,
    pub key_changed: bool,
}

impl From<Status> for QueryFailure {
    fn from(status: Status) -> Self {
        QueryFailure { status, key_changed: false }
    }
}

async fn blocking<T: Send + 'static>(
    costs: &mut Costs,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let t = Instant::now();
    let r = tokio::task::spawn_blocking(f).await.map_err(|e| {
        error!("a query worker failed: {e}");
        Status::internal("internal error in the model server (worker failed)")
    })?;
    costs.s1_compute += t.elapsed();
    r
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
        Code::FailedPrecondition => {
            return QueryFailure {
                status: Status::failed_precondition(format!(
                    "the activation server's key changed ({m}); fetch the model info again and retry"
                )),
                key_changed: true,
            }
        }
        c => Status::new(c, format!("activation server: {m}")),
    };
    QueryFailure { status, key_changed: false }
}

async fn recv(
    inbound: &mut Streaming<pb::S2ToS1>,
    step: Duration,
    costs: &mut Costs,
    expecting: &str,
) -> Result<pb::s2_to_s1::Msg, QueryFailure> {
    match tokio::time::timeout(step, inbound.message()).await {
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the activation server did not send {expecting} within {} s",
            step.as_secs()
        ))
        .into()),
        Ok(Err(st)) => Err(from_s2(st, true)),
        Ok(Ok(None)) => Err(Status::unavailable(format!(
            "the activation server closed the session before sending {expecting} (restarted?); retry the query"
        ))
        .into()),
        Ok(Ok(Some(m))) => {
            costs.from_s2 += wire_len(&m);
            costs.s2_compute_micros += m.compute_micros;
            m.msg.ok_or_else(|| {
                Status::internal(format!("the activation server sent an empty message instead of {expecting}")).into()
            })
        }
    }
}

/// S2 sent something S1 cannot use: a server-side fault, not the client's.
fn from_s2_data(st: Status) -> Status {
    error!("malformed message from the activation server: {}", st.message());
    Status::internal(format!("the activation server sent a malformed message: {}", st.message()))
}

fn unexpected(expecting: &str) -> QueryFailure {
    error!("protocol violation by the activation server: expected {expecting}");
    Status::internal(format!("the activation server sent a message out of order (expected {expecting})")).into()
}

/// Sends one message; if the stream is gone, S2's status explains why.
async fn send(
    tx: &mpsc::Sender<pb::S1ToS2>,
    inbound: &mut Streaming<pb::S2ToS1>,
    msg: pb::S1ToS2,
    costs: &mut Costs,
) -> Result<(), QueryFailure> {
    costs.to_s2 += wire_len(&msg);
    if tx.send(msg).await.is_err() {
        return match tokio::time::timeout(Duration::from_secs(1), inbound.message()).await {
            Ok(Err(st)) => Err(from_s2(st, true)),
            _ => Err(Status::unavailable("the session with the activation server broke; retry the query").into()),
        };
    }
    Ok(())
}

fn values_in(next: &ToActivation<impl Ring>) -> usize {
    match next {
        ToActivation::Activate(r) => r.e.len(),
        ToActivation::Finish(r) => r.count as usize,
    }
}

/// Runs one query for a decoded-but-unchecked client request.
pub async fn run<R: Ring>(
    s1: ModelServer<R>,
    mut s2: ActivationServiceClient<Channel>,
    req: pb::InferRequest,
    mode: OutputMode,
    deadlines: Deadlines,
    costs: &mut Costs,
) -> Result<pb::InferResponse, QueryFailure> {
    let pk = s1.public_key().clone();
    let d = s1.model().input_len();
    // Client request → session start (§4.1, §4.2).
    let (q, start) = {
        let pk = pk.clone();
        blocking(costs, move || {
            let qr = tandem_proto::query_request_from_proto::<R>(&pk, &req, mode, d)?;
            let (q, start) = s1.start_query(qr).map_err(|e| status_from_protocol(&e))?;
            Ok((q, tandem_proto::session_start_to_proto(&pk, &start)))
        })
        .await?
    };
    let (tx, rx) = mpsc::channel::<pb::S1ToS2>(1);
    let start_msg = pb::S1ToS2 { msg: Some(pb::s1_to_s2::Msg::Start(start)) };
    costs.to_s2 += wire_len(&start_msg);
    tx.send(start_msg).await.expect("the receiver is alive");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.set_timeout(deadlines.query);
    let mut inbound = match tokio::time::timeout(deadlines.step, s2.session(request)).await {
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "the activation server did not open a session within {} s",
                deadlines.step.as_secs()
            ))
            .into())
        }
        Ok(Err(st)) => return Err(from_s2(st, false)),
        Ok(Ok(r)) => r.into_inner(),
    };
    // The first answer may still be S2 refusing the session start.
    let masks = match tokio::time::timeout(deadlines.step, inbound.message()).await {
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "the activation server did not send the input masks within {} s",
                deadlines.step.as_secs()
            ))
            .into())
        }
        Ok(Err(st)) => return Err(from_s2(st, false)),
        Ok(Ok(None)) => {
            return Err(Status::unavailable("the activation server closed the session at its start; retry").into())
        }
        Ok(Ok(Some(m))) => {
            costs.from_s2 += wire_len(&m);
            costs.s2_compute_micros += m.compute_micros;
            match m.msg {
                Some(pb::s2_to_s1::Msg::Masks(masks)) => masks,
                _ => return Err(unexpected("InputMasks")),
            }
        }
    };
    costs.rounds += 1;
    let (mut q, mut next, mut n) = {
        let pk = pk.clone();
        let mut q: ModelQuery<R> = q;
        blocking(costs, move || {
            let masks = tandem_proto::input_masks_from_proto(&pk, &masks, d).map_err(from_s2_data)?;
            let next = q.on_input_masks(masks).map_err(|e| from_s2_data(status_from_protocol(&e)))?;
            let n = values_in(&next);
            Ok((q, tandem_proto::to_activation_to_proto(&pk, &next), n))
        })
        .await?
    };
    loop {
        let finishing = matches!(next.msg, Some(pb::s1_to_s2::Msg::Finish(_)));
        send(&tx, &mut inbound, next, costs).await?;
        costs.rounds += 1;
        if finishing {
            let out = match recv(&mut inbound, deadlines.step, costs, "OutputResponse").await? {
                pb::s2_to_s1::Msg::Output(o) => o,
                _ => return Err(unexpected("OutputResponse")),
            };
            drop(tx); // half-close: S2 has finished the session
            let resp = q
                .on_output(tandem_protocol::OutputResponse { sealed: out.sealed })
                .map_err(|e| status_from_protocol(&e))?;
            return Ok(tandem_proto::query_response_to_proto(&resp, None));
        }
        let act = match recv(&mut inbound, deadlines.step, costs, "ActivationResponse").await? {
            pb::s2_to_s1::Msg::Activation(a) => a,
            _ => return Err(unexpected("ActivationResponse")),
        };
        let pk = pk.clone();
        (q, next, n) = blocking(costs, move || {
            let resp = tandem_proto::activation_response_from_proto::<R>(&pk, &act, n).map_err(from_s2_data)?;
            let next = q.on_activation(resp).map_err(|e| from_s2_data(status_from_protocol(&e)))?;
            let n = values_in(&next);
            Ok((q, tandem_proto::to_activation_to_proto(&pk, &next), n))
        })
        .await?;
    }
}
