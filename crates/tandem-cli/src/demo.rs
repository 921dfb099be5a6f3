//! `tandem demo`: both servers in this process on loopback, one private
//! inference per output mode through the real gRPC path with the thin client
//! library, compared with the plaintext (float) model and the integer
//! reference, plus what each party paid.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem_client::{describe_output, ClientOptions, TandemClient};
use tandem_model::{Model, Output, OutputMode, QuantConfig, QuantizedModel};
use tandem_paillier::SecretKey;

use crate::{demo_model, dev_certs, local};

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Paillier modulus size of the fresh key.
    pub key_bits: u32,
    /// A `.tandem` model instead of the bundled one (needs `input`).
    pub model: Option<PathBuf>,
    /// Input file (CSV or JSON, as `tandem-client` reads it).
    pub input: Option<PathBuf>,
    /// Only this mode (default: every mode the model offers, default first).
    pub mode: Option<OutputMode>,
    /// TLS to the model server and mutual TLS between the servers, with
    /// throw-away development certificates.
    pub tls: bool,
}

/// The bundled model and sample, as `include_bytes!`-ed by the binary.
pub struct Bundled<'a> {
    pub model: &'a [u8],
    pub sample: &'a [u8],
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(v: u64) -> String {
    ms(Duration::from_micros(v))
}

fn kib(b: u64) -> String {
    if b < 10 * 1024 {
        format!("{b} B")
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn describe_float(v: &[f64], mode: OutputMode) -> String {
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>().join(", ");
    match mode {
        OutputMode::Label => format!("label: {}", v[0] as usize),
        OutputMode::Probabilities => {
            format!("probabilities: [{}] (label {})", list(v), tandem_model::quantize::float_label(v))
        }
        OutputMode::Logits => format!("logits: [{}] (label {})", list(v), tandem_model::quantize::float_label(v)),
        OutputMode::Sigmoid => format!("sigmoid: {:.6} (label {})", v[0], usize::from(v[0] > 0.5)),
    }
}

fn summary(m: &Model) -> String {
    let mut dims = vec![format!("{:?}", m.input_shape.dims())];
    for l in &m.layers {
        dims.push(l.describe());
    }
    dims.join(" → ")
}

fn class_name(bundled: bool, label: usize) -> String {
    match (bundled, demo_model::CLASSES.get(label)) {
        (true, Some(n)) => format!(" = {n}"),
        _ => String::new(),
    }
}

pub async fn run(opts: DemoOptions, bundled: Bundled<'_>) -> anyhow::Result<()> {
    let is_bundled = opts.model.is_none();
    let (model, x) = match (&opts.model, &opts.input) {
        (None, None) => {
            let model = tandem_model::format::from_bytes(bundled.model).context("the bundled demo model")?;
            let x =
                tandem_client::input::parse_json(std::str::from_utf8(bundled.sample)?).map_err(anyhow::Error::msg)?;
            (model, x)
        }
        (Some(m), Some(i)) => {
            (tandem_model::format::load(m)?, tandem_client::input::read_input_file(i).map_err(anyhow::Error::msg)?)
        }
        (None, Some(_)) | (Some(_), None) => bail!("--model and --input go together"),
    };
    let true_label: Option<usize> = if is_bundled {
        serde_json::from_slice::<serde_json::Value>(bundled.sample)?
            .get("label")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
    } else {
        None
    };
    let q = QuantizedModel::new(&model, QuantConfig::default())?;
    let x_int = q.quantize_input(&x)?;

    println!("tandem demo: private inference with two non-colluding servers, both running in this process");
    println!();
    println!("model \"{}\": {}", model.name, summary(&model));
    println!(
        "  ring Z_2^{}, inputs in [{}, {}] at f_in = {}; the demo allows every mode (default label)",
        q.ring_bits, q.input_range.0, q.input_range.1, q.f_in
    );
    if is_bundled {
        println!(
            "  classes: {}",
            demo_model::CLASSES.iter().enumerate().map(|(i, c)| format!("{i} = {c}")).collect::<Vec<_>>().join(", ")
        );
        println!(
            "input (5x5 image{}):",
            true_label.map(|l| format!(", drawn as class {l}{}", class_name(true, l))).unwrap_or_default()
        );
        for row in demo_model::render(&x, demo_model::SIDE) {
            println!("    {row}");
        }
    } else {
        let head: Vec<String> = x.iter().take(8).map(|v| format!("{v}")).collect();
        println!("input: {} values [{}{}]", x.len(), head.join(", "), if x.len() > 8 { ", …" } else { "" });
    }
    println!();

    print!("activation server: generating a fresh {}-bit Paillier key … ", opts.key_bits);
    std::io::stdout().flush().ok();
    let t = Instant::now();
    let bits = opts.key_bits;
    let sk =
        tokio::task::spawn_blocking(move || SecretKey::generate(bits)).await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{:.1} s", t.elapsed().as_secs_f64());

    let tmp = tempfile::tempdir()?;
    let tls_dir = if opts.tls {
        let certs = dev_certs::generate(&["localhost".into(), "127.0.0.1".into()], 1)?;
        dev_certs::write(tmp.path(), &certs, false)?;
        println!("TLS: clients ↔ model server over TLS, model server ↔ activation server over mutual TLS (throw-away dev CA)");
        Some(tmp.path().to_path_buf())
    } else {
        println!(
            "note: plaintext gRPC on loopback (127.0.0.1) for this demo: fine on one machine, never across a network."
        );
        println!("      `tandem demo --tls` uses TLS + mutual TLS; `tandem dev-certs` makes certificates for the real servers.");
        None
    };
    let servers = local::start(sk, vec![("demo".into(), model.clone())], tls_dir.as_deref()).await?;
    println!("activation server (S2) on {}  key fingerprint {}", servers.activation_addr, servers.fingerprint);
    println!("model server      (S1) on {}  serving model \"demo\"", servers.model_addr);

    let mut copts = ClientOptions::new(servers.model_url.clone());
    copts.insecure = !opts.tls;
    copts.tls_ca = tls_dir.as_ref().map(|d| d.join("ca.pem"));
    // The demo knows the real key, so it pins it like a deployed client would.
    copts.pinned_fingerprint = Some(servers.fingerprint.clone());
    let mut client = TandemClient::connect(&copts).await?;
    let remote = client.model("demo").await?;
    println!("client: connected to {}; activation key pinned ({}…)", servers.model_url, &remote.fingerprint[..16]);
    println!();

    let modes: Vec<OutputMode> = match opts.mode {
        Some(m) => vec![m],
        None => {
            let mut v = vec![remote.info.default_mode];
            v.extend(remote.info.modes.iter().copied().filter(|m| *m != remote.info.default_mode));
            v
        }
    };
    let mut all_equal = true;
    let mut first_cost = None;
    for mode in &modes {
        let r = client.infer_with(&remote, &x, Some(*mode)).await?;
        let reference: Output = q.reference(&x_int, *mode)?;
        let float = q.float_output(&x, *mode);
        let equal = r.output == reference;
        all_equal &= equal;
        println!("mode {mode}:");
        println!("  private inference : {}{}", describe_output(&r.output), class_name(is_bundled, r.output.label()));
        println!(
            "  integer reference : {}  ({})",
            describe_output(&reference),
            if equal { "bit-for-bit equal" } else { "MISMATCH" }
        );
        println!("  plaintext float   : {}", describe_float(&float, *mode));
        let c = &r.cost;
        println!(
            "  latency {} | client CPU {} | client sent {}, received {}",
            ms(c.wall),
            ms(c.client_cpu()),
            kib(c.bytes_sent),
            kib(c.bytes_received)
        );
        if first_cost.is_none() {
            first_cost = Some((*mode, r.cost.clone()));
        }
    }
    println!();
    if let Some((mode, c)) = first_cost {
        println!("per-party costs of the {mode} query:");
        println!(
            "  client             : CPU {} (prepare {}: quantize, mask, encrypt the seed; finish {}: open the sealed result)",
            ms(c.client_cpu()),
            ms(c.prepare_cpu),
            ms(c.finish_cpu)
        );
        println!(
            "                       sent {}, received {} (protobuf + gRPC framing)",
            kib(c.bytes_sent),
            kib(c.bytes_received)
        );
        if let Some(s) = &c.server {
            println!(
                "  model server (S1)  : wall {}, compute {}; sent S2 {}, received {} in {} rounds",
                us(s.s1_wall_micros),
                us(s.s1_compute_micros),
                kib(s.s1_to_s2_bytes),
                kib(s.s2_to_s1_bytes),
                s.rounds
            );
        }
        println!("  end to end         : {} at the client", ms(c.wall));
    }
    // The same query with the Paillier work done ahead of the input.
    let mode = modes[0];
    let ticket = client.create_ticket(&remote, Some(mode)).await?;
    let pre = ticket.cost.clone();
    let r = client.infer_on_ticket(ticket, &x).await?;
    let reference: Output = q.reference(&x_int, mode)?;
    let equal = r.output == reference;
    all_equal &= equal;
    println!();
    println!("with a ticket (docs/PROTOCOL.md §4.0), {mode} mode:");
    println!(
        "  ticket             : {} (client CPU {}: encrypt the seed; servers preprocess before the input exists)",
        ms(pre.wall),
        ms(pre.prepare_cpu)
    );
    println!(
        "  online query       : {} at the client{}; result {} ({})",
        ms(r.cost.wall),
        r.cost.server.as_ref().map(|s| format!(", model server {}", us(s.s1_wall_micros))).unwrap_or_default(),
        describe_output(&r.output),
        if equal { "bit-for-bit equal to the reference" } else { "MISMATCH" }
    );
    servers.shutdown().await;
    if !all_equal {
        bail!("a private result differed from the integer reference");
    }
    Ok(())
}
