//! Runs queries in-process by passing the roles' messages by hand. Tests,
//! benchmarks and the `eval` command use it; the gRPC shells do the same
//! over the network. [`preprocess`] and [`online`] are the two phases of
//! docs/PROTOCOL.md §4.0; [`run_query`] runs both back to back.

use crate::activation_server::{ActivationServer, ActivationSession};
use crate::client::{Client, ModelInfo, PendingTicket};
use crate::error::Result;
use crate::messages::*;
use crate::model_server::{ModelServer, Prepared};
use tandem_crypto::{Ciphertext, Ring, SeedEpoch};
use tandem_model::{Output, OutputMode};

/// Every preprocessing message of one session.
#[derive(Clone, Debug)]
pub struct OfflineTranscript {
    pub session_start: SessionStart,
    pub masks: InputMasks,
    pub to_s2: Vec<OfflineStep>,
    pub from_s2: Vec<RhoMasks>,
}

/// Every online message of one query.
#[derive(Clone, Debug)]
pub struct OnlineTranscript<R> {
    pub to_s2: Vec<OnlineStep<R>>,
    pub from_s2: Vec<ActivationValues<R>>,
    pub output: OutputResponse,
    pub response: QueryResponse<R>,
}

/// Every message of one query, for freshness checks and byte counts.
#[derive(Clone, Debug)]
pub struct Transcript<R> {
    pub query: QueryRequest<R>,
    pub offline: OfflineTranscript,
    pub online: OnlineTranscript<R>,
}

/// The preprocessing phase: S1 and S2 exchange everything homomorphic.
pub fn preprocess<R: Ring>(
    s1: &ModelServer<R>,
    s2: &mut ActivationServer,
    mode: OutputMode,
    enc_seed: &Ciphertext,
    epoch: SeedEpoch,
) -> Result<(Prepared<R>, ActivationSession<R>, OfflineTranscript)> {
    let (mut pre, session_start) = s1.start_preprocessing(mode, enc_seed, epoch)?;
    let (mut session, masks) = s2.start_session::<R>(&session_start)?;
    let mut step = pre.on_input_masks(masks.clone())?;
    let (mut to_s2, mut from_s2) = (Vec::new(), Vec::new());
    loop {
        to_s2.push(step.clone());
        match step {
            OfflineStep::Round(r) => {
                let rho = session.blind_round(&r)?;
                from_s2.push(rho.clone());
                step = pre.on_rho_masks(rho)?;
            }
            OfflineStep::Output(o) => {
                let ready = session.blind_output(&o)?;
                let prepared = pre.on_ready(ready)?;
                return Ok((prepared, session, OfflineTranscript { session_start, masks, to_s2, from_s2 }));
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
pub fn run_query<R: Ring>(
    client: &Client,
    info: &ModelInfo,
    s1: &ModelServer<R>,
    s2: &mut ActivationServer,
    x: &[f64],
    mode: OutputMode,
) -> Result<(Output, Transcript<R>)> {
    let (pending, query) = client.prepare::<R>(info, x, mode)?;
    s1.check_input(&query.masked_input)?;
    let (prepared, session, offline) = preprocess(s1, s2, query.mode, &query.enc_seed, query.epoch)?;
    let online = online(prepared, session, query.masked_input.clone())?;
    let result = pending.finish(online.response.clone())?;
    Ok((result, Transcript { query, offline, online }))
}

/// A ticket issued in-process: the client's secret half, S1's confirmation,
/// and both servers' preprocessed halves.
pub struct IssuedTicket<R: Ring> {
    pub pending: PendingTicket<R>,
    pub ticket: Ticket,
    pub prepared: Prepared<R>,
    pub session: ActivationSession<R>,
}

/// The client asks for a ticket and the servers preprocess it (§4.0).
pub fn issue_ticket<R: Ring>(
    client: &Client,
    info: &ModelInfo,
    s1: &ModelServer<R>,
    s2: &mut ActivationServer,
    mode: OutputMode,
) -> Result<IssuedTicket<R>> {
    let (pending, req) = client.request_ticket::<R>(info, mode)?;
    let (prepared, session, _) = preprocess(s1, s2, req.mode, &req.enc_seed, req.epoch)?;
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
