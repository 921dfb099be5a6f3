//! Runs a whole query in-process by passing the role's messages by hand.
//! Tests, benchmarks and the `eval` command use it; the gRPC shells do the
//! same over the network.

use crate::activation_server::ActivationServer;
use crate::client::{Client, ModelInfo};
use crate::error::Result;
use crate::messages::*;
use crate::model_server::ModelServer;
use tandem_crypto::Ring;
use tandem_model::{Output, OutputMode};

/// Every message of one query, for freshness checks and byte counts.
#[derive(Clone, Debug)]
pub struct Transcript<R> {
    pub query: QueryRequest<R>,
    pub session_start: SessionStart,
    pub masks: InputMasks,
    pub to_s2: Vec<ToActivation<R>>,
    pub from_s2: Vec<ActivationResponse<R>>,
    pub output: OutputResponse,
    pub response: QueryResponse<R>,
}

pub fn run_query<R: Ring>(
    client: &Client,
    info: &ModelInfo,
    s1: &ModelServer<R>,
    s2: &mut ActivationServer,
    x: &[f64],
    mode: OutputMode,
) -> Result<(Output, Transcript<R>)> {
    let (pending, query) = client.prepare::<R>(info, x, mode)?;
    let (mut q, session_start) = s1.start_query(query.clone())?;
    let (mut session, masks) = s2.start_session::<R>(&session_start)?;
    let mut step = q.on_input_masks(masks.clone())?;
    let mut to_s2 = Vec::new();
    let mut from_s2 = Vec::new();
    let output = loop {
        to_s2.push(step.clone());
        match step {
            ToActivation::Activate(req) => {
                let resp = session.activate(&req)?;
                from_s2.push(resp.clone());
                step = q.on_activation(resp)?;
            }
            ToActivation::Finish(req) => break session.finish(&req)?,
        }
    };
    let response = q.on_output(output.clone())?;
    let result = pending.finish(response.clone())?;
    Ok((result, Transcript { query, session_start, masks, to_s2, from_s2, output, response }))
}
