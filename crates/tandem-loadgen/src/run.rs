//! The load itself: N concurrent clients per level, each on its own
//! connection, in one-shot or ticket mode, and the measurements around them.

use crate::procfs::{self, ProcSample};
use crate::report::*;
use crate::tcpbytes::{self, Counters};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tandem_client::{code_name, ClientError, ClientOptions, Cost, Inference, RemoteModel, RemoteTicket, TandemClient};
use tandem_grpc::v1::QueryStats;
use tandem_model::{Output, OutputMode};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// When a level ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// No query starts after this long (queries in flight then finish; in
    /// ticket mode, workers stop waiting for tickets and the prefetchers
    /// are cancelled).
    Duration(Duration),
    /// Exactly this many queries per level.
    Queries(u64),
}

/// Everything a run needs besides the inputs.
pub struct Plan {
    pub client: ClientOptions,
    pub model_id: String,
    pub mode: Option<OutputMode>,
    pub levels: Vec<usize>,
    pub stop: Stop,
    pub warmup: u64,
    pub tickets: bool,
    /// Tickets each worker keeps ready (ticket mode).
    pub reserve: usize,
    /// Pause of each worker between its queries.
    pub think: Duration,
    pub s1_pid: Option<u32>,
    pub s2_pid: Option<u32>,
    pub progress_every: Duration,
}

/// The rows to send and, with a model file, what each must answer.
pub struct Work {
    pub rows: Vec<Vec<f64>>,
    pub labels: Option<Vec<usize>>,
    pub references: Option<Vec<Output>>,
}

/// What kind of failure, for `errors_by_kind`.
pub fn error_kind(e: &ClientError) -> String {
    #[allow(unreachable_patterns)] // the client library may grow variants
    match e {
        ClientError::Status(s) => code_name(s.code()).to_string(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::KeyMismatch { .. } => "key_mismatch".into(),
        ClientError::Connect { .. } => "connect".into(),
        ClientError::Config(_) => "config".into(),
        ClientError::BadModelInfo(_) => "bad_model_info".into(),
        _ => "other".into(),
    }
}

#[derive(Default, Clone, Copy)]
struct StatsSum {
    n: u64,
    s1_wall: u64,
    s1_compute: u64,
    online: u64,
    s1_to_s2: u64,
    s2_to_s1: u64,
}

impl StatsSum {
    fn add(&mut self, s: &QueryStats) {
        self.n += 1;
        self.s1_wall += s.s1_wall_micros;
        self.s1_compute += s.s1_compute_micros;
        self.online += s.online_micros;
        self.s1_to_s2 += s.s1_to_s2_bytes;
        self.s2_to_s1 += s.s2_to_s1_bytes;
    }
    fn means(&self) -> ServerReported {
        let n = self.n.max(1) as f64;
        let s = |v: u64| v as f64 / n / 1e6;
        ServerReported {
            queries: self.n,
            s1_wall_s: s(self.s1_wall),
            s1_compute_s: s(self.s1_compute),
            online_s: s(self.online),
            s1_to_s2_bytes: self.s1_to_s2 as f64 / n,
            s2_to_s1_bytes: self.s2_to_s1 as f64 / n,
        }
    }
}

/// Everything recorded during a level.
#[derive(Default)]
struct Acc {
    latencies: Vec<f64>,
    ticket_latencies: Vec<f64>,
    ticket_waits: Vec<f64>,
    answered: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    examples: Vec<String>,
    checked: u64,
    mismatches: u64,
    labeled: u64,
    label_correct: u64,
    tickets_created: u64,
    client_cpu: Duration,
    sent: u64,
    received: u64,
    stats: StatsSum,
    ticket_stats: StatsSum,
}

impl Acc {
    fn error(&mut self, kind: String, msg: String) {
        *self.errors.entry(kind.clone()).or_default() += 1;
        let ex = format!("{kind}: {msg}");
        if self.examples.len() < 8 && !self.examples.contains(&ex) {
            self.examples.push(ex);
        }
    }
    fn n_errors(&self) -> u64 {
        self.errors.values().sum()
    }
    fn add_cost(&mut self, c: &Cost, ticket: bool) {
        self.client_cpu += c.client_cpu();
        self.sent += c.bytes_sent;
        self.received += c.bytes_received;
        if let Some(s) = &c.server {
            if ticket {
                self.ticket_stats.add(s)
            } else {
                self.stats.add(s)
            }
        }
    }
}

/// Shared by the tasks of one level.
struct Level {
    mode: OutputMode,
    think: Duration,
    work: Arc<Work>,
    /// `Stop::Queries`: how many queries (one-shot) or tickets may still be
    /// started, as a counter of those claimed.
    budget: Option<u64>,
    claimed: AtomicU64,
    next_row: AtomicU64,
    duration: Option<Duration>,
    /// Set when the measured window starts.
    deadline: OnceLock<Instant>,
    measuring: AtomicBool,
    acc: Mutex<Acc>,
}

impl Level {
    fn claim(&self) -> bool {
        match self.budget {
            None => true,
            Some(b) => self.claimed.fetch_add(1, Ordering::Relaxed) < b,
        }
    }
    fn past_deadline(&self) -> bool {
        self.deadline.get().is_some_and(|d| Instant::now() >= *d)
    }
    fn row(&self) -> usize {
        (self.next_row.fetch_add(1, Ordering::Relaxed) % self.work.rows.len() as u64) as usize
    }
    fn acc(&self) -> std::sync::MutexGuard<'_, Acc> {
        self.acc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one finished query.
    fn record(&self, row: usize, r: Result<Inference, ClientError>, latency: Duration, wait: Option<Duration>) {
        let mut a = self.acc();
        match r {
            Err(e) => a.error(error_kind(&e), e.to_string()),
            Ok(inf) => {
                a.answered += 1;
                a.latencies.push(latency.as_secs_f64() * 1e3);
                if let Some(w) = wait {
                    a.ticket_waits.push(w.as_secs_f64() * 1e3);
                }
                a.add_cost(&inf.cost, false);
                if let Some(labels) = &self.work.labels {
                    a.labeled += 1;
                    a.label_correct += u64::from(inf.output.label() == labels[row]);
                }
                match &self.work.references {
                    Some(refs) => {
                        a.checked += 1;
                        if inf.output == refs[row] {
                            a.ok += 1;
                        } else {
                            a.mismatches += 1;
                            a.error(
                                "mismatch".into(),
                                format!(
                                    "row {row}: got {}, the integer reference is {}",
                                    tandem_client::describe_output(&inf.output),
                                    tandem_client::describe_output(&refs[row])
                                ),
                            );
                        }
                    }
                    None => a.ok += 1,
                }
            }
        }
    }
}

/// After a failure, a short pause: an unreachable server must not turn a
/// worker into a busy loop of instant errors.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// After a failure, fetch the model info again if the server said it is
/// stale (as the client library's `infer` does); keep the old info if that
/// fails too.
async fn refetch_on_stale<T>(client: &mut TandemClient, model: &mut RemoteModel, r: &Result<T, ClientError>) {
    if let Err(e) = r {
        let _ = client.refetch_if_stale(model, e).await;
    }
}

async fn oneshot_worker(mut client: TandemClient, mut model: RemoteModel, lv: Arc<Level>) {
    loop {
        if lv.past_deadline() || !lv.claim() {
            break;
        }
        let row = lv.row();
        let t0 = Instant::now();
        let r = client.infer_with(&model, &lv.work.rows[row], Some(lv.mode)).await;
        refetch_on_stale(&mut client, &mut model, &r).await;
        let failed = r.is_err();
        lv.record(row, r, t0.elapsed(), None);
        if failed {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
        if !lv.think.is_zero() {
            tokio::time::sleep(lv.think).await;
        }
    }
}

type TicketItem = Result<RemoteTicket, ClientError>;

/// Keeps up to `reserve` tickets ready for one worker, creating the next one
/// as soon as a slot frees up (so ticket creation runs while the worker does
/// its online queries, off their critical path).
async fn prefetcher(
    mut client: TandemClient,
    mut model: RemoteModel,
    tx: mpsc::Sender<TicketItem>,
    lv: Arc<Level>,
    reserve: usize,
    prefilled: oneshot::Sender<()>,
) {
    let mut prefilled = Some(prefilled);
    let mut made = 0usize;
    loop {
        // A slot first, then the ticket: at most `reserve` wait unused.
        let Ok(permit) = tx.reserve().await else { break };
        if lv.past_deadline() || !lv.claim() {
            break;
        }
        let t0 = Instant::now();
        let r = client.create_ticket(&model, Some(lv.mode)).await;
        let lat = t0.elapsed();
        refetch_on_stale(&mut client, &mut model, &r).await;
        let failed = r.is_err();
        if lv.measuring.load(Ordering::Relaxed) {
            let mut a = lv.acc();
            if let Ok(t) = &r {
                a.tickets_created += 1;
                a.ticket_latencies.push(lat.as_secs_f64() * 1e3);
                a.add_cost(&t.cost, true);
            }
        }
        permit.send(r);
        made += 1;
        if made >= reserve {
            if let Some(p) = prefilled.take() {
                let _ = p.send(());
            }
        }
        if failed {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

async fn ticket_worker(mut client: TandemClient, mut rx: mpsc::Receiver<TicketItem>, lv: Arc<Level>) {
    loop {
        if lv.past_deadline() {
            break;
        }
        let t_wait = Instant::now();
        let item = match lv.deadline.get() {
            Some(d) if lv.duration.is_some() => tokio::select! {
                it = rx.recv() => it,
                _ = tokio::time::sleep_until((*d).into()) => break,
            },
            _ => rx.recv().await,
        };
        let Some(item) = item else { break };
        let wait = t_wait.elapsed();
        match item {
            Err(e) => {
                lv.acc().error(format!("ticket:{}", error_kind(&e)), e.to_string());
            }
            Ok(ticket) => {
                let row = lv.row();
                let t0 = Instant::now();
                let r = client.infer_on_ticket(ticket, &lv.work.rows[row]).await;
                lv.record(row, r, t0.elapsed(), Some(wait));
            }
        }
        if !lv.think.is_zero() {
            tokio::time::sleep(lv.think).await;
        }
    }
}

struct Snap {
    at: Instant,
    wall: SystemTime,
    s1: Option<ProcSample>,
    s2: Option<ProcSample>,
    /// TCP counters of this process's sockets (all of them connections to S1).
    client_sockets: Option<Sockets>,
    /// TCP counters of S2's sockets (all of them connections from S1).
    s2_sockets: Option<Sockets>,
    self_cpu: Duration,
    loadavg: Option<[f64; 3]>,
}

/// TCP counters of one process's sockets, by inode.
type Sockets = HashMap<u64, Counters>;

/// This process's sockets and S2's.
fn sockets(plan: &Plan) -> (Option<Sockets>, Option<Sockets>) {
    match tcpbytes::all_sockets() {
        Ok(all) => (
            tcpbytes::of_process("self", &all).ok(),
            plan.s2_pid.and_then(|p| tcpbytes::of_process(&p.to_string(), &all).ok()),
        ),
        Err(_) => (None, None),
    }
}

fn snap(plan: &Plan) -> Result<Snap, String> {
    let pid = |p: Option<u32>, who: &str| {
        p.map(|p| procfs::sample(&p.to_string()).map_err(|e| format!("{who} (pid {p}): {e}"))).transpose()
    };
    Ok(snap_with(plan, pid(plan.s1_pid, "the model server")?, pid(plan.s2_pid, "the activation server")?))
}

/// The servers' samples, taken by the caller, plus everything else a snapshot holds.
fn snap_with(plan: &Plan, s1: Option<ProcSample>, s2: Option<ProcSample>) -> Snap {
    let (client_sockets, s2_sockets) = sockets(plan);
    Snap {
        s1,
        s2,
        client_sockets,
        s2_sockets,
        // The whole loadgen process: its async runtime, TLS and every worker's client.
        self_cpu: tandem_client::cpu::process_cpu_time(),
        loadavg: procfs::loadavg(),
        at: Instant::now(),
        wall: SystemTime::now(),
    }
}

async fn connect(plan: &Plan) -> Result<(TandemClient, RemoteModel), String> {
    let mut c = TandemClient::connect(&plan.client).await.map_err(|e| e.to_string())?;
    let m = c.model(&plan.model_id).await.map_err(|e| format!("model {:?}: {e}", plan.model_id))?;
    Ok((c, m))
}

/// Resolves when the abort flag is set (Ctrl-C or SIGTERM).
async fn aborted(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Runs `warmup` queries on one connection; they are not measured. Returns
/// a warning per failure.
pub async fn warmup(plan: &Plan, work: Arc<Work>, mode: OutputMode, mut abort: watch::Receiver<bool>) -> Vec<String> {
    if plan.warmup == 0 {
        return Vec::new();
    }
    let lv = Arc::new(Level {
        mode,
        think: Duration::ZERO,
        work,
        budget: Some(plan.warmup),
        claimed: AtomicU64::new(0),
        next_row: AtomicU64::new(0),
        duration: None,
        deadline: OnceLock::new(),
        measuring: AtomicBool::new(false),
        acc: Mutex::new(Acc::default()),
    });
    let (client, model) = match connect(plan).await {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let run = async {
        if plan.tickets {
            let (tx, rx) = mpsc::channel(1);
            let (ptx, _prx) = oneshot::channel();
            let p = tokio::spawn(prefetcher(client.clone(), model, tx, lv.clone(), 1, ptx));
            ticket_worker(client, rx, lv.clone()).await;
            let _ = p.await;
        } else {
            oneshot_worker(client, model, lv.clone()).await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = aborted(&mut abort) => return vec!["interrupted during the warm-up".into()],
    }
    let a = lv.acc();
    a.examples.iter().map(|e| format!("warm-up query failed: {e}")).collect()
}

/// One level: `c` workers (and, in ticket mode, `c` prefetchers).
pub async fn level(
    plan: &Plan,
    work: Arc<Work>,
    mode: OutputMode,
    c: usize,
    mut abort: watch::Receiver<bool>,
) -> Result<LevelResult, String> {
    let (budget, duration) = match plan.stop {
        Stop::Queries(q) => (Some(q), None),
        Stop::Duration(d) => (None, Some(d)),
    };
    let lv = Arc::new(Level {
        mode,
        think: plan.think,
        work,
        budget,
        claimed: AtomicU64::new(0),
        next_row: AtomicU64::new(0),
        duration,
        deadline: OnceLock::new(),
        measuring: AtomicBool::new(false),
        acc: Mutex::new(Acc::default()),
    });
    let mut interrupted = false;

    // Connections first, off the clock: each worker is its own client.
    let mut clients = Vec::with_capacity(c);
    for _ in 0..c {
        tokio::select! {
            r = connect(plan) => clients.push(r?),
            _ = aborted(&mut abort) => return Err("interrupted while connecting".into()),
        }
    }

    // Ticket mode: fill every worker's reserve before the clock starts, as
    // a ticketing client would have done while idle. Over a duration, the
    // prefill is balanced by the reserves refilled (and left unused) at the
    // end. With a fixed number of queries there is no such refill (exactly
    // that many tickets are made), so the prefill is measured too: the
    // figures are then those of Q queries from a cold start, and CPU and
    // bytes per query cover every ticket.
    let early = if plan.tickets && budget.is_some() {
        lv.measuring.store(true, Ordering::Relaxed);
        Some(snap(plan)?)
    } else {
        None
    };
    let mut prefetchers = JoinSet::new();
    let mut receivers = Vec::new();
    if plan.tickets {
        let mut ready = Vec::new();
        for (client, model) in &clients {
            let (tx, rx) = mpsc::channel(plan.reserve.max(1));
            let (ptx, prx) = oneshot::channel();
            prefetchers.spawn(prefetcher(client.clone(), model.clone(), tx, lv.clone(), plan.reserve.max(1), ptx));
            receivers.push(rx);
            ready.push(prx);
        }
        for r in ready {
            tokio::select! {
                // Err: the prefetcher stopped early (the query budget is smaller than the reserves).
                _ = r => {}
                _ = aborted(&mut abort) => {
                    prefetchers.abort_all();
                    return Err("interrupted while filling the ticket reserves".into());
                }
            }
        }
    }

    let start = match early {
        Some(s) => s,
        None => snap(plan)?,
    };
    lv.measuring.store(true, Ordering::Relaxed);
    if let Some(d) = duration {
        let _ = lv.deadline.set(start.at + d);
    }
    // Held until the end snapshot: a finished worker would otherwise close
    // its connection, and a closed socket's TCP counters are gone.
    let _keep_open: Vec<TandemClient> = clients.iter().map(|(c, _)| c.clone()).collect();
    let mut workers = JoinSet::new();
    let mut receivers = receivers.into_iter();
    for (client, model) in clients {
        match receivers.next() {
            Some(rx) => workers.spawn(ticket_worker(client, rx, lv.clone())),
            None => workers.spawn(oneshot_worker(client, model, lv.clone())),
        };
    }

    // Memory about every second, and a progress line now and then.
    let (stop_sampler, mut sampler_stopped) = oneshot::channel::<()>();
    let sampler = {
        let (s1, s2, lv, every) = (plan.s1_pid, plan.s2_pid, lv.clone(), plan.progress_every);
        let t0 = start.at;
        tokio::spawn(async move {
            let mut points = Vec::new();
            let mut last_progress = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut sampler_stopped => return points,
                }
                let rss = |p: Option<u32>| p.and_then(|p| procfs::sample(&p.to_string()).ok()).map(|s| s.rss_kib);
                if s1.is_some() || s2.is_some() {
                    points.push(RssPoint { t_s: t0.elapsed().as_secs_f64(), s1_kib: rss(s1), s2_kib: rss(s2) });
                }
                if !every.is_zero() && last_progress.elapsed() >= every {
                    last_progress = Instant::now();
                    let (ok, errs) = {
                        let a = lv.acc();
                        (a.ok, a.n_errors())
                    };
                    eprintln!("  c={c}: {:.0} s, {ok} ok, {errs} errors", t0.elapsed().as_secs_f64());
                }
            }
        })
    };

    tokio::select! {
        _ = async { while workers.join_next().await.is_some() {} } => {}
        _ = aborted(&mut abort) => interrupted = true,
    }
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    // Tickets still being made are for queries that will not happen: cancel.
    prefetchers.abort_all();
    while prefetchers.join_next().await.is_some() {}
    lv.measuring.store(false, Ordering::Relaxed);
    let end = snap_end(plan);
    let _ = stop_sampler.send(());
    let mut rss_samples = sampler.await.unwrap_or_default();
    rss_samples.push(RssPoint {
        t_s: end.at.duration_since(start.at).as_secs_f64(),
        s1_kib: end.s1.map(|s| s.rss_kib),
        s2_kib: end.s2.map(|s| s.rss_kib),
    });

    drop(_keep_open);
    let a = std::mem::take(&mut *lv.acc());
    Ok(summarize(plan, c, a, &start, &end, interrupted, rss_samples))
}

/// Like [`snap`], but a server that died during the level only loses its figures.
fn snap_end(plan: &Plan) -> Snap {
    let pid = |p: Option<u32>| p.and_then(|p| procfs::sample(&p.to_string()).ok());
    snap_with(plan, pid(plan.s1_pid), pid(plan.s2_pid))
}

fn server_figures(
    pid: Option<u32>,
    a: Option<ProcSample>,
    b: Option<ProcSample>,
    which: impl Fn(&RssPoint) -> Option<u64>,
    points: &[RssPoint],
    answered: u64,
) -> Option<ServerFigures> {
    let (a, b) = (a?, b?);
    let cpu_s = b.cpu.saturating_sub(a.cpu).as_secs_f64();
    let sampled = points.iter().filter_map(&which).max().unwrap_or(0);
    Some(ServerFigures {
        pid: pid?,
        cpu_s,
        cpu_s_per_query: (answered > 0).then(|| cpu_s / answered as f64),
        rss_start_kib: a.rss_kib,
        rss_end_kib: b.rss_kib,
        rss_max_kib: sampled.max(a.rss_kib).max(b.rss_kib),
        peak_rss_kib: b.hwm_kib,
    })
}

fn summarize(
    plan: &Plan,
    c: usize,
    a: Acc,
    start: &Snap,
    end: &Snap,
    interrupted: bool,
    rss: Vec<RssPoint>,
) -> LevelResult {
    let elapsed = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    let n = a.answered;
    let per = |v: f64| (n > 0).then(|| v / n as f64);
    let s1 = server_figures(plan.s1_pid, start.s1, end.s1, |p| p.s1_kib, &rss, n);
    let s2 = server_figures(plan.s2_pid, start.s2, end.s2, |p| p.s2_kib, &rss, n);

    // Bytes on each link, from the TCP counters: every socket of this
    // process is a connection to S1, and S2 talks only to S1.
    let mut b = BytesPerQuery::default();
    if let (Some(x), Some(y)) = (&start.client_sockets, &end.client_sockets) {
        let d = tcpbytes::delta(x, y);
        b.client_to_s1.tcp = per(d.sent as f64);
        b.s1_to_client.tcp = per(d.received as f64);
    }
    if let (Some(x), Some(y)) = (&start.s2_sockets, &end.s2_sockets) {
        let d = tcpbytes::delta(x, y);
        b.s1_to_s2.tcp = per(d.received as f64);
        b.s2_to_s1.tcp = per(d.sent as f64);
    }
    b.client_to_s1.payload = per(a.sent as f64);
    b.s1_to_client.payload = per(a.received as f64);
    let (st, tst) = (a.stats, a.ticket_stats);
    if st.n + tst.n > 0 {
        b.s1_to_s2.payload = per((st.s1_to_s2 + tst.s1_to_s2) as f64);
        b.s2_to_s1.payload = per((st.s2_to_s1 + tst.s2_to_s1) as f64);
    }

    let client_process = end.self_cpu.saturating_sub(start.self_cpu).as_secs_f64();
    LevelResult {
        concurrency: c,
        started_at: rfc3339(start.wall),
        finished_at: rfc3339(end.wall),
        elapsed_s: elapsed,
        interrupted,
        queries: n + a.n_errors() - a.mismatches,
        ok: a.ok,
        errors: a.n_errors(),
        errors_by_kind: a.errors.clone(),
        error_examples: a.examples.clone(),
        reference_checked: a.checked,
        reference_mismatches: a.mismatches,
        true_label_accuracy: (a.labeled > 0).then(|| a.label_correct as f64 / a.labeled as f64),
        predictions_per_hour: a.ok as f64 / elapsed * 3600.0,
        queries_per_second: a.ok as f64 / elapsed,
        latency_ms: LatencyStats::of(&a.latencies),
        ticket_latency_ms: LatencyStats::of(&a.ticket_latencies),
        ticket_wait_ms: LatencyStats::of(&a.ticket_waits),
        tickets_created: plan.tickets.then_some(a.tickets_created),
        tickets_per_hour: plan.tickets.then(|| a.tickets_created as f64 / elapsed * 3600.0),
        cpu_s_per_query: CpuPerQuery {
            s1: s1.as_ref().and_then(|s| s.cpu_s_per_query),
            s2: s2.as_ref().and_then(|s| s.cpu_s_per_query),
            client_process: per(client_process).unwrap_or(0.0),
            client_protocol: per(a.client_cpu.as_secs_f64()).unwrap_or(0.0),
        },
        bytes_per_query: b,
        server_reported_per_query: st.means(),
        server_reported_per_ticket: plan.tickets.then(|| tst.means()),
        s1,
        s2,
        loadavg_start: start.loadavg,
        loadavg_end: end.loadavg,
        rss_samples: rss,
        latencies_ms: a.latencies,
        ticket_latencies_ms: a.ticket_latencies,
    }
}
