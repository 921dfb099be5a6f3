//! The load generator against the real servers: `tandem-loadgen` runs a
//! handful of queries at concurrency 1 and 2, one-shot and on tickets, with
//! every answer checked against the integer reference, and writes JSON and
//! a PNG. 1024-bit keys and a small random model keep it to seconds.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, Model, OutputMode};

fn model(seed: u64) -> Model {
    let mut m =
        random_mlp(&mut StdRng::seed_from_u64(seed), &[6, 8, 5], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    m.name = "loadgen test model".into();
    m
}

fn loadgen(args: &[String]) -> Output {
    Command::new(bin("tandem-loadgen")).args(args).output().expect("running tandem-loadgen")
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).expect("the JSON report parses")
}

fn assert_png(p: &Path) {
    let bytes = std::fs::read(p).expect("the plot exists");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", p.display());
    assert!(bytes.len() > 10_000, "a suspiciously small plot: {} bytes", bytes.len());
    // 1500 × 1050 (the IHDR chunk, big-endian width and height).
    assert_eq!((&bytes[16..20], &bytes[20..24]), (&1500u32.to_be_bytes()[..], &1050u32.to_be_bytes()[..]));
}

/// Every level of a clean run: the right counts, no errors, every answer
/// checked, and the figures present.
fn assert_clean_levels(j: &Value, queries: u64, tickets: bool) {
    let levels = j["levels"].as_array().unwrap();
    let conc: Vec<u64> = levels.iter().map(|l| l["concurrency"].as_u64().unwrap()).collect();
    assert_eq!(conc, [1, 2]);
    for l in levels {
        let c = l["concurrency"].as_u64().unwrap();
        assert_eq!(l["queries"], queries, "c = {c}: {l}");
        assert_eq!(l["ok"], queries, "c = {c}");
        assert_eq!(l["errors"], 0, "c = {c}: {}", l["error_examples"]);
        assert_eq!(l["errors_by_kind"], serde_json::json!({}));
        assert_eq!(l["reference_checked"], queries, "every answer is checked against the reference");
        assert_eq!(l["reference_mismatches"], 0);
        assert_eq!(l["interrupted"], false);
        assert!(l["predictions_per_hour"].as_f64().unwrap() > 0.0);
        let lat = &l["latency_ms"];
        assert_eq!(lat["count"], queries);
        let (p50, p95, p99, max) = (
            lat["p50"].as_f64().unwrap(),
            lat["p95"].as_f64().unwrap(),
            lat["p99"].as_f64().unwrap(),
            lat["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{lat}");
        assert_eq!(l["latencies_ms"].as_array().unwrap().len() as u64, queries);
        // Both servers were measured through /proc: CPU and memory.
        for s in ["s1", "s2"] {
            assert!(l["cpu_s_per_query"][s].as_f64().unwrap() >= 0.0, "{s}: {}", l["cpu_s_per_query"]);
            assert!(l[s]["rss_max_kib"].as_u64().unwrap() > 0 && l[s]["peak_rss_kib"].as_u64().unwrap() > 0);
        }
        // Bytes on every link, from the TCP counters and from the payload accounts.
        let b = &l["bytes_per_query"];
        for link in ["client_to_s1", "s1_to_client", "s1_to_s2", "s2_to_s1"] {
            let tcp = b[link]["tcp"].as_f64().unwrap_or_else(|| panic!("{link}: {b}"));
            let payload = b[link]["payload"].as_f64().unwrap();
            assert!(tcp > 0.0 && payload > 0.0, "{link}: {b}");
            // TCP payload includes HTTP/2 framing, so it is at least the
            // protobuf payload (minus a little slack for HTTP/2 header
            // compression of the gRPC metadata in the payload accounts).
            assert!(tcp > 0.8 * payload, "{link}: {b}");
        }
        if tickets {
            assert_eq!(l["ticket_latency_ms"]["count"], queries, "with --queries every ticket is measured");
            assert_eq!(l["tickets_created"], queries);
            assert!(l["server_reported_per_ticket"]["s2_to_s1_bytes"].as_f64().unwrap() > 0.0);
        } else {
            assert!(l["ticket_latency_ms"].is_null() && l["tickets_created"].is_null());
        }
    }
}

#[test]
fn loadgen_measures_real_servers_and_checks_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let m = model(11);
    let model_file = models.join("mlp.tandem");
    tandem_model::format::save(&m, &model_file).unwrap();
    // Same shape, other weights: its reference disagrees with the server.
    let wrong = dir.path().join("wrong.tandem");
    tandem_model::format::save(&model(12), &wrong).unwrap();
    // A data set with a header and a label column.
    let data = dir.path().join("data.csv");
    let mut csv = String::from("a,b,c,d,e,f,label\n");
    for i in 0..5 {
        let x = random_input(&mut StdRng::seed_from_u64(100 + i), &m);
        let row: Vec<String> = x.iter().map(|v| v.to_string()).collect();
        csv.push_str(&format!("{},{}\n", row.join(","), i % 5));
    }
    std::fs::write(&data, csv).unwrap();

    // On Paillier, so that the servers' non-default engine keeps a test
    // through the real binaries (the spawn test below runs the default).
    let s2 = activation_server(dir.path(), &dir.path().join("key.json"), &["--engine", "paillier"], "127.0.0.1:0");
    // The owner allows logits as well (label only otherwise): one run below uses it.
    let s1 = model_server(dir.path(), &models, &s2.url(), &["--engine", "paillier", "--allow-modes", "mlp=label,logits"]);
    let fp = s2
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("activation key fingerprint: "))
        .expect("fingerprint")
        .trim()
        .to_string();
    let p = |name: &str| dir.path().join(name).display().to_string();
    // --concurrency 1,2 --queries 6 unless `extra` sets them.
    let base = |json: &str, extra: &[&str]| {
        let mut a = s(&["--server", &s1.url(), "--insecure", "--model", "mlp", "--activation-key-fingerprint", &fp]);
        a.extend(s(&["--model-file", model_file.to_str().unwrap()]));
        if !extra.contains(&"--queries") {
            a.extend(s(&["--concurrency", "1,2", "--queries", "6"]));
        }
        a.extend(s(&["--s1-pid", &s1.child.id().to_string(), "--s2-pid", &s2.child.id().to_string()]));
        a.extend(s(&["--json", &p(json), "--plot", &p(&json.replace(".json", ".png"))]));
        a.extend(s(extra));
        a
    };

    // One-shot, random inputs.
    let out = loadgen(&base("oneshot.json", &[]));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("answers checked against the integer reference: yes"), "{stdout}");
    assert!(stdout.contains("conc") && stdout.contains("pred/h") && stdout.contains("p99 ms"), "{stdout}");
    let j = read_json(&dir.path().join("oneshot.json"));
    assert_eq!((j["tickets"].as_bool(), j["mode"].as_str()), (Some(false), Some("label")));
    assert_eq!(j["clean"], true);
    assert_eq!(j["reference_check"]["enabled"], true);
    assert_eq!(j["reference_check"]["checked"], 12);
    assert_eq!(j["activation_key_fingerprint"], fp.as_str());
    assert_eq!(j["pinned"], true);
    assert!(j["command_line"].as_array().unwrap().iter().any(|a| a == "--queries"));
    assert!(j["started_at"].as_str().unwrap().ends_with('Z') && j["finished_at"].is_string());
    assert_clean_levels(&j, 6, false);
    assert_png(&dir.path().join("oneshot.png"));
    // The plot again from the report alone.
    let out = loadgen(&s(&["--replot", &p("oneshot.json"), "--plot", &p("replot.png")]));
    assert!(out.status.success(), "{}", text(&out));
    assert_png(&dir.path().join("replot.png"));

    // Tickets, rows from the CSV, another mode.
    let out = loadgen(&base("tickets.json", &["--tickets", "--data", &data.display().to_string(), "--mode", "logits"]));
    assert!(out.status.success(), "{}", text(&out));
    let j = read_json(&dir.path().join("tickets.json"));
    assert_eq!((j["tickets"].as_bool(), j["mode"].as_str()), (Some(true), Some("logits")));
    assert_eq!(j["input_rows"], 5);
    assert_clean_levels(&j, 6, true);
    // Labels from the data set give an accuracy figure.
    assert!(j["levels"][0]["true_label_accuracy"].is_f64());
    assert_png(&dir.path().join("tickets.png"));

    // A model file with other weights: every answer is a mismatch, and the
    // exit status says so (3: ran, but not clean).
    let mut args = base("wrong.json", &["--concurrency", "1", "--queries", "3", "--warmup", "0"]);
    let i = args.iter().position(|a| a == "--model-file").unwrap();
    args[i + 1] = wrong.display().to_string();
    let out = loadgen(&args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let j = read_json(&dir.path().join("wrong.json"));
    let l = &j["levels"][0];
    assert_eq!(
        (l["ok"].as_u64(), l["errors"].as_u64(), l["reference_mismatches"].as_u64()),
        (Some(0), Some(3), Some(3))
    );
    assert_eq!(l["errors_by_kind"]["mismatch"], 3);
    assert!(l["error_examples"][0].as_str().unwrap().contains("the integer reference is"), "{l}");
    assert_eq!(j["clean"], false);

    // Clear errors, no panics: a wrong pin, an unreachable server, bad flags.
    let mut args = base("x.json", &[]);
    let i = args.iter().position(|a| a == "--activation-key-fingerprint").unwrap();
    args[i + 1] = "ab".repeat(32);
    let out = loadgen(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("refusing to encrypt"), "{}", text(&out));
    let out = loadgen(&s(&["--server", "http://127.0.0.1:9", "--insecure", "--model", "mlp", "--queries", "1"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("cannot connect"), "{}", text(&out));
    for bad in [&["--concurrency", "0"][..], &["--duration", "-1"], &["--queries", "1", "--duration", "2"]] {
        let mut a = s(&["--server", &s1.url(), "--model", "mlp"]);
        a.extend(s(bad));
        let out = loadgen(&a);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
        assert!(!text(&out).contains("panicked"), "{}", text(&out));
    }
    assert!(!s1.log_text().contains("panicked") && !s2.log_text().contains("panicked"));
}

/// `--spawn`: the loadgen starts both binaries itself (fresh 1024-bit key,
/// the model file as the only model) and knows their pids.
#[test]
fn loadgen_spawns_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let model_file = dir.path().join("tiny.tandem");
    tandem_model::format::save(&model(21), &model_file).unwrap();
    let json = dir.path().join("spawn.json");
    let bin_dir = bin("model-server").parent().unwrap().display().to_string();
    let out = loadgen(&s(&[
        "--spawn",
        "--bin-dir",
        &bin_dir,
        "--key-bits",
        "1024",
        "--model-file",
        model_file.to_str().unwrap(),
        "--concurrency",
        "2",
        "--queries",
        "4",
        "--tickets",
        "--max-rss-growth-mib",
        "512",
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let j = read_json(&json);
    assert_eq!(j["model"], "tiny");
    assert_eq!(j["activation_key_bits"], 1024);
    assert_eq!(j["pinned"], true, "the spawned server's key is pinned");
    assert!(j["spawned"]["model_server"]["pid"].as_u64().is_some());
    assert_eq!(j["rss_growth_exceeded"], serde_json::json!([]));
    let l = &j["levels"][0];
    assert_eq!((l["ok"].as_u64(), l["errors"].as_u64(), l["reference_checked"].as_u64()), (Some(4), Some(0), Some(4)));
    assert!(l["s1"]["pid"].as_u64().is_some() && l["bytes_per_query"]["s2_to_s1"]["tcp"].as_f64().unwrap() > 0.0);
}
