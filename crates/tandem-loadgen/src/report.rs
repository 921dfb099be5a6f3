//! The figures of one level and of a whole run, as written to JSON and
//! printed as a table.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Nearest-rank percentiles of a latency sample, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatencyStats {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// The value at rank ⌈p/100 · n⌉ of a sorted sample (`p` in (0, 100]).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

impl LatencyStats {
    pub fn of(sample: &[f64]) -> Option<LatencyStats> {
        if sample.is_empty() {
            return None;
        }
        let mut s = sample.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        Some(LatencyStats {
            count: s.len(),
            mean: s.iter().sum::<f64>() / s.len() as f64,
            min: s[0],
            p50: percentile(&s, 50.0),
            p95: percentile(&s, 95.0),
            p99: percentile(&s, 99.0),
            max: s[s.len() - 1],
        })
    }
}

/// One server's figures over a level (from `/proc/PID/…`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerFigures {
    pub pid: u32,
    /// utime + stime over the level.
    pub cpu_s: f64,
    pub cpu_s_per_query: Option<f64>,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    /// Largest VmRSS seen (start, end and a sample about every second).
    pub rss_max_kib: u64,
    /// VmHWM at the end: peak RSS since the process started.
    pub peak_rss_kib: u64,
}

/// Bytes per answered query on one link, measured two ways.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LinkBytes {
    /// TCP payload bytes from the kernel's per-socket counters (what the
    /// processes wrote into the sockets: TLS records, HTTP/2 and gRPC
    /// framing included). Client link: this process's sockets; server
    /// link: S2's sockets (needs S2's pid, on this machine).
    pub tcp: Option<f64>,
    /// Protobuf messages with gRPC's 5-byte framing, as the client library
    /// (client link) or the model server (server link) counts them: no
    /// HTTP/2 or TLS.
    pub payload: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BytesPerQuery {
    pub client_to_s1: LinkBytes,
    pub s1_to_client: LinkBytes,
    pub s1_to_s2: LinkBytes,
    pub s2_to_s1: LinkBytes,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CpuPerQuery {
    pub s1: Option<f64>,
    pub s2: Option<f64>,
    /// The whole loadgen process (all its concurrent clients, the async
    /// runtime, TLS) divided by the queries.
    pub client_process: f64,
    /// The client library's protocol work alone (quantize, mask, the seed's
    /// Paillier encryption, decode, AEAD open): thread CPU time.
    pub client_protocol: f64,
}

/// Means of the servers' own per-query accounts (`QueryStats`), seconds and bytes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerReported {
    pub queries: u64,
    pub s1_wall_s: f64,
    pub s1_compute_s: f64,
    pub online_s: f64,
    pub s1_to_s2_bytes: f64,
    pub s2_to_s1_bytes: f64,
}

/// Memory seen about every second during a level, KiB.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RssPoint {
    pub t_s: f64,
    pub s1_kib: Option<u64>,
    pub s2_kib: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelResult {
    pub concurrency: usize,
    pub started_at: String,
    pub finished_at: String,
    /// Wall time of the measured window (after connecting; in ticket mode
    /// with --duration, after filling the ticket reserves).
    pub elapsed_s: f64,
    /// Stopped by Ctrl-C / SIGTERM: the figures cover the queries finished until then.
    pub interrupted: bool,
    /// Queries finished (answered or failed) in the window.
    pub queries: u64,
    /// Answered and, with --model-file, equal to the integer reference.
    pub ok: u64,
    pub errors: u64,
    /// gRPC status code names, `mismatch` (answer differs from the integer
    /// reference), `ticket:<code>` (CreateTicket failed), …
    pub errors_by_kind: BTreeMap<String, u64>,
    pub error_examples: Vec<String>,
    pub reference_checked: u64,
    pub reference_mismatches: u64,
    /// Share of answered queries whose label equals the data set's label.
    pub true_label_accuracy: Option<f64>,
    pub predictions_per_hour: f64,
    pub queries_per_second: f64,
    /// One-shot mode: the whole query (prepare, Infer round trip, open).
    /// Ticket mode: the online query on a ticket (`infer_on_ticket`).
    pub latency_ms: Option<LatencyStats>,
    /// Ticket mode: `create_ticket` (the seed's encryption and all the
    /// servers' preprocessing), measured in the prefetchers.
    pub ticket_latency_ms: Option<LatencyStats>,
    /// Ticket mode: how long a worker waited for a ticket from its reserve.
    pub ticket_wait_ms: Option<LatencyStats>,
    /// Ticket mode: tickets created in the window (with --duration the
    /// prefill before it is not counted; with --queries it is), and their
    /// rate: the sustainable rate of ticket queries.
    pub tickets_created: Option<u64>,
    pub tickets_per_hour: Option<f64>,
    pub cpu_s_per_query: CpuPerQuery,
    pub bytes_per_query: BytesPerQuery,
    /// One-shot: per query. Ticket mode: the online query on the ticket.
    pub server_reported_per_query: ServerReported,
    /// Ticket mode: per ticket (the preprocessing).
    pub server_reported_per_ticket: Option<ServerReported>,
    pub s1: Option<ServerFigures>,
    pub s2: Option<ServerFigures>,
    pub loadavg_start: Option<[f64; 3]>,
    pub loadavg_end: Option<[f64; 3]>,
    pub rss_samples: Vec<RssPoint>,
    /// Every latency of the window, ms, in completion order.
    pub latencies_ms: Vec<f64>,
    pub ticket_latencies_ms: Vec<f64>,
}

/// RFC 3339 UTC with seconds, e.g. `2026-11-21T12:27:03Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Three significant figures or so: whole numbers from 100 up, else one or
/// two decimals (table cells and the plot's value labels).
pub fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_bytes(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(b) if b >= 10_000.0 => format!("{:.1}K", b / 1000.0),
        Some(b) => format!("{b:.0}"),
    }
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// The human summary: one row per level.
pub fn table(levels: &[LevelResult], tickets: bool) -> String {
    let mut head = vec!["conc", "queries", "ok", "errors", "pred/h", "p50 ms", "p95 ms", "p99 ms", "max ms"];
    if tickets {
        head.extend(["ticket p50", "ticket p95"]);
    }
    head.extend(["S1 cpu/q", "S2 cpu/q", "C->S1 B", "S1->C B", "S1->S2 B", "S2->S1 B", "RSS S1/S2 MiB", "load"]);
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for l in levels {
        let lat = l.latency_ms.as_ref();
        let mut r = vec![
            format!("{}{}", l.concurrency, if l.interrupted { "*" } else { "" }),
            l.queries.to_string(),
            l.ok.to_string(),
            l.errors.to_string(),
            format!("{:.0}", l.predictions_per_hour),
            fmt_opt(lat.map(|s| s.p50), fmt_ms),
            fmt_opt(lat.map(|s| s.p95), fmt_ms),
            fmt_opt(lat.map(|s| s.p99), fmt_ms),
            fmt_opt(lat.map(|s| s.max), fmt_ms),
        ];
        if tickets {
            let t = l.ticket_latency_ms.as_ref();
            r.push(fmt_opt(t.map(|s| s.p50), fmt_ms));
            r.push(fmt_opt(t.map(|s| s.p95), fmt_ms));
        }
        let b = &l.bytes_per_query;
        let best = |x: &LinkBytes| x.tcp.or(x.payload);
        r.extend([
            fmt_opt(l.cpu_s_per_query.s1, |v| format!("{v:.3} s")),
            fmt_opt(l.cpu_s_per_query.s2, |v| format!("{v:.3} s")),
            fmt_bytes(best(&b.client_to_s1)),
            fmt_bytes(best(&b.s1_to_client)),
            fmt_bytes(best(&b.s1_to_s2)),
            fmt_bytes(best(&b.s2_to_s1)),
            match (&l.s1, &l.s2) {
                (None, None) => "-".into(),
                (a, b) => format!(
                    "{}/{}",
                    fmt_opt(a.as_ref().map(|s| s.rss_max_kib as f64 / 1024.0), |v| format!("{v:.0}")),
                    fmt_opt(b.as_ref().map(|s| s.rss_max_kib as f64 / 1024.0), |v| format!("{v:.0}"))
                ),
            },
            fmt_opt(l.loadavg_end.map(|a| a[0]), |v| format!("{v:.2}")),
        ]);
        rows.push(r);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap()).collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_dates() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = LatencyStats::of(&v).unwrap();
        assert_eq!((s.p50, s.p95, s.p99, s.max, s.min), (50.0, 95.0, 99.0, 100.0, 1.0));
        assert_eq!(LatencyStats::of(&[7.0]).unwrap().p99, 7.0);
        assert!(LatencyStats::of(&[]).is_none());
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_264_023);
        assert_eq!(rfc3339(t), "2026-11-21T12:27:03Z");
    }
}
