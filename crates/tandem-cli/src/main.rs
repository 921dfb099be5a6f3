//! `tandem`: the one-command demo, development certificates and key tools.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tandem_cli::{demo, dev_certs};

/// The bundled demo model and sample (see `tandem_cli::demo_model`), embedded
/// so `tandem demo` works from any directory.
static DEMO_MODEL: &[u8] = include_bytes!("../../../models/demo/demo.tandem");
static DEMO_SAMPLE: &[u8] = include_bytes!("../../../models/demo/sample.json");

#[derive(Parser)]
#[command(name = "tandem", version, about = "tandem: private neural-network inference with two non-colluding servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start both servers in this process on loopback and run private inferences
    /// through the real gRPC path, compared with the plaintext model.
    Demo {
        /// Paillier key size for the fresh activation-server key (2048 or 3072).
        #[arg(long, default_value_t = 2048)]
        key_bits: u32,
        /// A .tandem model instead of the bundled one (with --input).
        #[arg(long, requires = "input")]
        model: Option<PathBuf>,
        /// Input for --model: CSV or JSON.
        #[arg(long, requires = "model")]
        input: Option<PathBuf>,
        /// Run only this output mode (default: every mode of the model).
        #[arg(long, value_parser = tandem_client::parse_mode)]
        mode: Option<tandem_model::OutputMode>,
        /// Use TLS and mutual TLS with throw-away certificates.
        #[arg(long)]
        tls: bool,
        /// Show the servers' logs.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Generate an activation-server Paillier key file (mode 0600) and print its fingerprint.
    Keygen {
        /// Output file (must not exist).
        #[arg(long, default_value = "activation-key.json")]
        out: PathBuf,
        /// Modulus size: 2048 or 3072.
        #[arg(long, default_value_t = 2048)]
        key_bits: u32,
    },
    /// Print the fingerprint of an activation-server key file (public: the
    /// value clients pin with --activation-key-fingerprint; the activation
    /// server also logs it at start).
    Fingerprint {
        /// The activation server's key file (its --key-file).
        key_file: PathBuf,
    },
    /// Write a development CA and certificates for both servers and a client
    /// (keys 0600). Each server certificate carries its role
    /// (urn:tandem:role:activation-server / urn:tandem:role:model-server),
    /// which the other server requires; the client certificate has none.
    DevCerts {
        /// Output directory (the CA's certificate and key, and every party's
        /// files not sent elsewhere by the --*-out options).
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Directory for the activation server's certificate, key and ca.pem
        /// only (what its host mounts: no CA key, no other party's key).
        #[arg(long)]
        activation_server_out: Option<PathBuf>,
        /// Directory for the model server's certificate, key and ca.pem only.
        #[arg(long)]
        model_server_out: Option<PathBuf>,
        /// Directory for the client certificate, key and ca.pem only.
        #[arg(long)]
        client_out: Option<PathBuf>,
        /// DNS names / IP addresses both server certificates are valid for
        /// (default, when no --name, --activation-name or --model-name is
        /// given: localhost, 127.0.0.1, ::1).
        #[arg(long = "name")]
        names: Vec<String>,
        /// Extra names only the activation server's certificate is valid for.
        #[arg(long = "activation-name")]
        activation_names: Vec<String>,
        /// Extra names only the model server's certificate is valid for.
        #[arg(long = "model-name")]
        model_names: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print the SHA-256 of a certificate's SubjectPublicKeyInfo: the value
    /// for activation-server --model-server-spki-sha256 (of the model
    /// server's certificate) or model-server --activation-server-spki-sha256
    /// (of the activation server's).
    Spki {
        /// PEM certificate.
        cert: PathBuf,
    },
}

fn init_logging(verbose: bool) {
    let default = if verbose { "info,h2=warn,tower=warn,hyper=warn" } else { "error" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Demo { key_bits, model, input, mode, tls, verbose } => {
            init_logging(verbose);
            if ![2048, 3072, 1024].contains(&key_bits) {
                anyhow::bail!("--key-bits {key_bits}: accepted 2048 or 3072");
            }
            let opts = demo::DemoOptions { key_bits, model, input, mode, tls };
            demo::run(opts, demo::Bundled { model: DEMO_MODEL, sample: DEMO_SAMPLE }).await
        }
        Cmd::Keygen { out, key_bits } => {
            init_logging(false);
            if ![2048, 3072].contains(&key_bits) {
                anyhow::bail!("--key-bits {key_bits}: accepted 2048 or 3072");
            }
            if out.exists() {
                anyhow::bail!("{} already exists; refusing to overwrite a key", out.display());
            }
            let sk = tokio::task::spawn_blocking(move || tandem_paillier::SecretKey::generate(key_bits))
                .await?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tandem_activation_server::keyfile::write_new(&out, &sk)?;
            println!("wrote {} (mode 0600)", out.display());
            println!("activation key fingerprint: {}", sk.public().fingerprint());
            Ok(())
        }
        Cmd::Fingerprint { key_file } => {
            let sk = tandem_activation_server::keyfile::load(&key_file)?;
            println!("{}", sk.public().fingerprint());
            Ok(())
        }
        Cmd::DevCerts {
            out,
            activation_server_out,
            model_server_out,
            client_out,
            names,
            activation_names,
            model_names,
            days,
            force,
        } => {
            init_logging(false);
            let names = if names.is_empty() && activation_names.is_empty() && model_names.is_empty() {
                vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()]
            } else {
                names
            };
            let certs = dev_certs::generate_for_roles(&names, &activation_names, &model_names, days)?;
            let s2 = activation_server_out.unwrap_or_else(|| out.clone());
            let s1 = model_server_out.unwrap_or_else(|| out.clone());
            let cl = client_out.unwrap_or_else(|| out.clone());
            let dirs = dev_certs::Dirs { ca: &out, activation_server: &s2, model_server: &s1, client: &cl };
            let files = dev_certs::write_split(&dirs, &certs, force)?;
            for f in &files {
                println!("wrote {}", f.display());
            }
            let pin = |pem: &str| tandem_grpc::peer::spki_sha256_of_pem(pem.as_bytes()).map(hex::encode);
            let (s2_pin, s1_pin) = (
                pin(&certs.activation_server.cert_pem).map_err(anyhow::Error::msg)?,
                pin(&certs.model_server.cert_pem).map_err(anyhow::Error::msg)?,
            );
            let list = |extra: &[String]| {
                let mut v = names.clone();
                v.extend(extra.iter().cloned());
                v.join(", ")
            };
            println!("development certificates valid {days} days; NOT for production.");
            println!(
                "activation server: {}; role {}",
                list(&activation_names),
                tandem_grpc::peer::ACTIVATION_SERVER_ROLE
            );
            println!("model server: {}; role {}", list(&model_names), tandem_grpc::peer::MODEL_SERVER_ROLE);
            println!("activation server SPKI SHA-256: {s2_pin}");
            println!("model server SPKI SHA-256: {s1_pin}");
            println!(
                "activation-server --tls-cert {0}/activation-server.pem --tls-key {0}/activation-server-key.pem \
                 --tls-ca {0}/ca.pem --model-server-spki-sha256 {s1_pin}",
                s2.display()
            );
            println!(
                "model-server --tls-cert {0}/model-server.pem --tls-key {0}/model-server-key.pem --tls-ca {0}/ca.pem \
                 --activation-server-spki-sha256 {s2_pin}",
                s1.display()
            );
            println!("tandem-client ... --tls-ca {0}/ca.pem", out.display());
            println!("keep {} (the CA key) away from both servers", out.join("ca-key.pem").display());
            Ok(())
        }
        Cmd::Spki { cert } => {
            let pem = std::fs::read(&cert).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.display()))?;
            let pin =
                tandem_grpc::peer::spki_sha256_of_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
            println!("{}", hex::encode(pin));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {e:#}");
            ExitCode::FAILURE
        }
    }
}
