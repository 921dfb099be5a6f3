//! Helpers shared by the bench targets (each bench file does `mod common;`).
//!
//! - [`pure_he`]: the conventional Paillier baseline (bench-only code).
//! - [`models`]: the trained models (or random stand-ins) the benches use.
//! - [`on_client`]: runs client work on one dedicated thread and returns its
//!   CPU time (`CLOCK_THREAD_CPUTIME_ID`), so a noisy shared machine and the
//!   in-process servers do not inflate the client's numbers.
//! - [`Samples`]: per-iteration values recorded during the criterion run, so
//!   the summary printed at the end uses the same run as criterion's report.
//! - [`serve_tandem`]: S1 and S2 in-process for one query (untimed).

#![allow(dead_code)]

pub mod models;
pub mod pure_he;

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tandem_core::{online, preprocess, ActivationServer, OutputAux, QueryRequest, QueryResponse, Ring};
use tandem_paillier::{ModelServer, PaillierEngine};

/// CPU time consumed so far by the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A one-thread rayon pool standing in for a thin, single-core client. Work
/// installed here that calls `rayon::join` (e.g. `SecretKey::decrypt_raw`)
/// runs both halves on this one thread, so its thread CPU time is the
/// client's whole CPU time.
pub fn client_pool() -> &'static rayon::ThreadPool {
    static P: OnceLock<rayon::ThreadPool> = OnceLock::new();
    P.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "bench-client".into())
            .build()
            .expect("one-thread pool")
    })
}

/// Client-side cost of one step: CPU time of the client thread, and wall time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    pub cpu: Duration,
    pub wall: Duration,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.cpu += o.cpu;
        self.wall += o.wall;
    }
}

/// Runs `f` on the client thread; returns its result and cost.
pub fn on_client<T: Send>(f: impl FnOnce() -> T + Send) -> (T, Cost) {
    client_pool().install(|| {
        let (w0, c0) = (Instant::now(), thread_cpu());
        let r = f();
        let cpu = thread_cpu() - c0;
        (r, Cost { cpu, wall: w0.elapsed() })
    })
}

/// Values recorded per measured iteration, by name.
pub struct Samples(Mutex<BTreeMap<String, Vec<Duration>>>);

impl Samples {
    pub const fn new() -> Self {
        Samples(Mutex::new(BTreeMap::new()))
    }
    pub fn record(&self, key: &str, d: Duration) {
        self.0.lock().unwrap().entry(key.to_string()).or_default().push(d);
    }
    pub fn get(&self, key: &str) -> Vec<Duration> {
        self.0.lock().unwrap().get(key).cloned().unwrap_or_default()
    }
    /// `(median, count)` of the last `n` values recorded under `key` — the
    /// `n` criterion samples, which follow the warm-up calls. The upper
    /// median for an even count.
    pub fn median_last(&self, key: &str, n: usize) -> Option<(Duration, usize)> {
        let all = self.get(key);
        let mut v = all[all.len().saturating_sub(n)..].to_vec();
        if v.is_empty() {
            return None;
        }
        v.sort();
        Some((v[v.len() / 2], v.len()))
    }
}

/// Human-readable duration with 3 significant-ish digits.
pub fn fmt_d(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Bytes the client sends in a tandem query: the masked input as encoded
/// on the wire (`d` values of `m + 1` bits packed, `⌈d(m+1)/8⌉` bytes, with
/// the compact mask, docs/PROTOCOL.md §4.1) and the seed: `[seed]` (one ciphertext, 2|N|/8
/// bytes) with its 16-byte epoch, or a seed session's 16-byte id and 8-byte
/// counter. The model id and the mode are not counted (the baseline needs
/// them too), nor any framing.
pub fn tandem_request_bytes<R: Ring>(
    req: &QueryRequest<R>,
    masking: &tandem_core::InputMasking,
    ciphertext_bytes: usize,
) -> usize {
    let seed = match req.seed {
        tandem_core::SeedSource::Encrypted { .. } => ciphertext_bytes + 16,
        tandem_core::SeedSource::Session { .. } => 16 + 8,
    };
    masking.encode(&req.masked_input).expect("the client's own masked input fits its encoding").len() + seed
}

/// Bytes the client receives: session id (16), S2's sealed result (payload +
/// 16-byte tag) and S1's aux (ring values, a u32 permutation, or one byte).
pub fn tandem_response_bytes<R: Ring>(resp: &QueryResponse<R>) -> usize {
    let aux = match &resp.aux {
        OutputAux::Logits(v) => v.len() * R::BYTES,
        OutputAux::Permutation(p) => p.len() * 4,
        OutputAux::Negated(_) => 1,
    };
    resp.session_id.len() + resp.sealed.len() + aux
}

/// Runs S1 and S2 in-process on a client request and returns S1's response
/// to the client (everything `run_query` does between `prepare` and `finish`).
pub fn serve_tandem<R: Ring>(
    s1: &ModelServer<R>,
    s2: &mut ActivationServer<PaillierEngine>,
    req: QueryRequest<R>,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> QueryResponse<R> {
    let (prepared, session, _) = preprocess(s1, s2, req.mode, &req.seed, std::time::Duration::ZERO, rng).expect("preprocessing");
    online(prepared, session, req.masked_input).expect("online phase").response
}
