//! Both servers in this process on loopback, through the same library code
//! the `activation-server` and `model-server` binaries run.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tandem_model::{Model, OutputMode, QuantConfig};
use tandem_paillier::SecretKey;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Running servers; dropping this shuts them down.
pub struct LocalServers {
    pub activation_addr: SocketAddr,
    pub model_addr: SocketAddr,
    /// The URL a client uses (`http://` or `https://`).
    pub model_url: String,
    pub fingerprint: String,
    stops: Vec<oneshot::Sender<()>>,
    handles: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl LocalServers {
    pub async fn shutdown(mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for h in self.handles.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    }
}

impl Drop for LocalServers {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

/// Starts S2 with `sk` and S1 with `models` on 127.0.0.1 (ephemeral ports).
/// With `tls_dir` (files from `tandem dev-certs`), clients get TLS and S1↔S2
/// mutual TLS; without it everything is plaintext on loopback.
pub async fn start(
    sk: SecretKey,
    models: Vec<(String, Model)>,
    tls_dir: Option<&Path>,
) -> anyhow::Result<LocalServers> {
    let fingerprint = sk.public().fingerprint();
    let mut stops = Vec::new();
    let mut handles = Vec::new();

    // S2
    let limits = tandem_activation_server::Limits { max_sessions: 16, ..Default::default() };
    let state = tandem_activation_server::ActivationState::new(sk, limits);
    let svc = tandem_activation_server::service(state, tandem_grpc::DEFAULT_MAX_INTERNAL_MESSAGE_BYTES);
    let l2 = TcpListener::bind("127.0.0.1:0").await.context("binding the activation server")?;
    let activation_addr = l2.local_addr()?;
    let s2_tls = match tls_dir {
        Some(d) => Some(tandem_grpc::peer::MutualTls {
            config: tandem_grpc::tls::server_tls(
                &d.join("activation-server.pem"),
                &d.join("activation-server-key.pem"),
                Some(&d.join("ca.pem")),
            )
            .map_err(anyhow::Error::msg)?,
            peer: tandem_grpc::peer::PeerIdentity::model_server(Vec::new()),
        }),
        None => None,
    };
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    handles.push(tokio::spawn(tandem_activation_server::serve(l2, svc, s2_tls, async {
        let _ = rx.await;
    })));

    // S1
    let (s1_server_tls, s1_client_tls, scheme) = match tls_dir {
        Some(d) => (
            Some(
                tandem_grpc::tls::server_tls(&d.join("model-server.pem"), &d.join("model-server-key.pem"), None)
                    .map_err(anyhow::Error::msg)?,
            ),
            Some(
                tandem_grpc::peer::RoleTlsConnector::new(
                    &d.join("ca.pem"),
                    &d.join("model-server.pem"),
                    &d.join("model-server-key.pem"),
                    Some("localhost"),
                    tandem_grpc::peer::PeerIdentity::activation_server(Vec::new()),
                )
                .map_err(anyhow::Error::msg)?,
            ),
            "https",
        ),
        None => (None, None, "http"),
    };
    let mut settings = tandem_model_server::Settings::default();
    let quantized = tandem_model_server::models::quantize_all(models, QuantConfig::default(), true)?;
    // Here the model's owner is whoever runs the demo, and the demo shows
    // every mode: allow them all, label (the served default) first.
    for (id, q) in &quantized {
        let mut modes = vec![OutputMode::Label];
        modes.extend(q.modes().into_iter().filter(|m| *m != OutputMode::Label));
        settings.allowed_modes.set(id, modes);
    }
    let channel = tandem_model_server::activation_channel(
        &format!("{scheme}://{activation_addr}"),
        s1_client_tls,
        settings.deadlines.step,
    )?;
    let s2 = tandem_model_server::activation_client(channel, settings.max_internal_message_bytes);
    let state = tandem_model_server::ModelState::new(quantized, s2, settings, 10).await?;
    let l1 = TcpListener::bind("127.0.0.1:0").await.context("binding the model server")?;
    let model_addr = l1.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    handles.push(tokio::spawn(tandem_model_server::serve(
        l1,
        tandem_model_server::service(state),
        s1_server_tls,
        async {
            let _ = rx.await;
        },
    )));
    let model_url = match tls_dir {
        Some(_) => format!("https://{model_addr}"),
        None => format!("http://{model_addr}"),
    };
    Ok(LocalServers { activation_addr, model_addr, model_url, fingerprint, stops, handles })
}
