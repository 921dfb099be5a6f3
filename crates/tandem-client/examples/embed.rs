//! Embedding the tandem client in an application (docs/CLIENT.md walks
//! through it): connect with the model server's CA and the activation
//! server's pinned key fingerprint, keep a ticket ready while idle, answer
//! a prediction on it, and recover from an expired ticket or a restarted
//! activation server without the caller noticing.
//!
//! ```text
//! cargo run --release -p tandem-client --example embed -- \
//!     https://127.0.0.1:50051 certs/ca.pem FINGERPRINT MODEL-ID INPUT.json
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem_client::{input, ClientError, ClientOptions, Code, Output, RemoteModel, RemoteTicket, TandemClient};

/// One model's predictions for an app, with one ticket kept in reserve.
struct Predictor {
    client: TandemClient,
    model: RemoteModel,
    ticket: Option<RemoteTicket>,
}

/// A ticket this close to its expiry is not worth the risk: the query on
/// it could arrive after the server dropped it.
const TICKET_MARGIN: Duration = Duration::from_secs(30);

impl Predictor {
    /// Connects and fetches the model's public description. `fingerprint`
    /// is the activation server's key fingerprint, obtained from its
    /// operator out of band (`tandem fingerprint KEY-FILE`); the client
    /// refuses to encrypt to any other key, so a dishonest model server
    /// cannot substitute its own.
    async fn connect(server: &str, ca: PathBuf, fingerprint: &str, model_id: &str) -> Result<Self, ClientError> {
        let mut opts = ClientOptions::new(server);
        opts.tls_ca = Some(ca);
        opts.pinned_fingerprint = Some(fingerprint.to_string());
        opts.timeout = Duration::from_secs(60);
        // opts.api_token = Some(token) for a server started with --api-tokens.
        let mut client = TandemClient::connect(&opts).await?;
        let model = client.model(model_id).await?;
        Ok(Predictor { client, model, ticket: None })
    }

    /// The expensive, input-independent part of a query (the client's one
    /// Paillier encryption and all the servers' homomorphic work): call it
    /// when the app is idle, so that `predict` is one fast round trip.
    async fn prepare(&mut self) -> Result<(), ClientError> {
        if self.ticket.as_ref().is_some_and(|t| t.expires_at > Instant::now() + TICKET_MARGIN) {
            return Ok(());
        }
        let ticket = match self.client.create_ticket(&self.model, None).await {
            // The activation server restarted (new key epoch): fetch the
            // model info again and retry once.
            Err(e) if self.client.refetch_if_stale(&mut self.model, &e).await? => {
                self.client.create_ticket(&self.model, None).await?
            }
            other => other?,
        };
        self.ticket = Some(ticket);
        Ok(())
    }

    /// One private prediction: on the reserved ticket when there is a fresh
    /// one, else a whole query.
    async fn predict(&mut self, x: &[f64]) -> Result<Output, ClientError> {
        if let Some(ticket) = self.ticket.take().filter(|t| t.expires_at > Instant::now() + TICKET_MARGIN) {
            match self.client.infer_on_ticket(ticket, x).await {
                Ok(r) => return Ok(r.output),
                // Used, expired or forgotten by a restarted model server: the
                // input was not revealed (it is masked with the ticket's
                // seed), so the whole query below is safe.
                Err(e) if e.status().is_some_and(|s| s.code() == Code::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let r = match self.client.infer_with(&self.model, x, None).await {
            Err(e) if self.client.refetch_if_stale(&mut self.model, &e).await? => {
                self.client.infer_with(&self.model, x, None).await?
            }
            other => other?,
        };
        Ok(r.output)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, ca, fingerprint, model_id, input_file] = &args[..] else {
        return Err("usage: embed SERVER-URL CA.pem FINGERPRINT MODEL-ID INPUT.json".into());
    };
    let x = input::read_input_file(input_file.as_ref())?;
    let mut p = Predictor::connect(server, ca.into(), fingerprint, model_id).await?;
    let info = &p.model.info;
    println!(
        "model {}: {} inputs in [{}, {}], modes {:?} (default {})",
        info.id,
        info.input_shape.iter().product::<usize>(),
        info.input_range.0,
        info.input_range.1,
        info.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
        info.default_mode
    );
    let t = Instant::now();
    p.prepare().await?;
    println!("ticket ready in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let out = p.predict(&x).await?;
    println!("{} (on the ticket, {:.0} ms)", tandem_client::describe_output(&out), t.elapsed().as_secs_f64() * 1e3);
    // No ticket in reserve now: the next prediction runs the whole query.
    let t = Instant::now();
    let again = p.predict(&x).await?;
    println!("{} (whole query, {:.0} ms)", tandem_client::describe_output(&again), t.elapsed().as_secs_f64() * 1e3);
    if again != out {
        return Err("the two predictions of the same input differ".into());
    }
    Ok(())
}
