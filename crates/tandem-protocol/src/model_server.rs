//! S1, the model server (PROTOCOL §4.3–§4.5, §4.7, §4.8) as state machines.
//!
//! A query runs in two phases (docs/PROTOCOL.md §4.0):
//! - [`ModelServer::start_preprocessing`] → [`Preprocessing`]: every
//!   homomorphic step — `W·[D]`, the blinding `C = t·g + μ`, packing, and the
//!   new `[D]` from S2's `[ρ]`. None of it depends on the client's input, so
//!   it can run ahead of time; the result is a [`Prepared`] session holding
//!   only S1's blinding secrets (`t`, `π`, `μ`, `β`, `m⁻¹`).
//! - [`Prepared::start`] → [`OnlineQuery`]: the ring half — `u = W·y + b`,
//!   `e = t·u + μ`, and unblinding `h` — cheap arithmetic mod `2^k`.
//!
//! The per-query secrets are drawn from a ChaCha20 CSPRNG seeded from the OS
//! for each session and never leave these structs.

use crate::convert::{gmp_from_ring, ring_from_gmp, ring_from_num};
use crate::error::{ProtocolError, Result};
use crate::messages::*;
use crate::plan::Plan;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use std::sync::Arc;
use tandem_crypto::bigint_traits::*;
use tandem_crypto::matvec::MatvecPlan;
use tandem_crypto::packing::{pack, PackingParams};
use tandem_crypto::{bigint_from_i64, BigInt, Ciphertext, PublicKey, Ring, SeedEpoch};
use tandem_model::{ActivationKind, ModelError, OutputMode, QLayer, QuantizedModel, F_ACT, TAU};

struct Shared<R> {
    model: Arc<QuantizedModel>,
    pk: PublicKey,
    plan: Plan,
    /// Biases reduced into the ring once, per linear layer.
    bias: Vec<Vec<R>>,
    /// Weights reduced into the ring once, per linear layer (the online
    /// phase's only real work is `W·y` with these).
    ring_rows: Vec<Vec<Vec<(u32, R)>>>,
    /// How each linear layer's `W·[D]` is computed, chosen once per model
    /// (`None` for activation layers).
    matvec: Vec<Option<MatvecPlan>>,
}

/// S1 for one model whose ring is `R`.
pub struct ModelServer<R: Ring> {
    shared: Arc<Shared<R>>,
}

impl<R: Ring> Clone for ModelServer<R> {
    fn clone(&self) -> Self {
        ModelServer { shared: self.shared.clone() }
    }
}

impl<R: Ring> ModelServer<R> {
    /// Checks the ring and the homomorphic bit budget for S2's key.
    pub fn new(model: Arc<QuantizedModel>, pk: PublicKey) -> Result<Self> {
        if model.ring_bits != R::BITS {
            return Err(ProtocolError::RingMismatch { model: model.ring_bits, code: R::BITS });
        }
        let plan = Plan::new(&model, pk.bits())?;
        let bias = model
            .layers
            .iter()
            .map(|l| match l {
                QLayer::Linear(l) => l.bias.iter().map(ring_from_num::<R>).collect(),
                _ => Vec::new(),
            })
            .collect();
        let ring_rows = model
            .layers
            .iter()
            .map(|l| match l {
                QLayer::Linear(l) => {
                    l.rows.iter().map(|row| row.iter().map(|&(i, w)| (i, R::from_i64(w))).collect()).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let matvec = model
            .layers
            .iter()
            .map(|l| match l {
                QLayer::Linear(l) => Some(MatvecPlan::new(&l.rows, l.in_dim, pk.ciphertext_bytes())),
                _ => None,
            })
            .collect();
        Ok(ModelServer { shared: Arc::new(Shared { model, pk, plan, bias, ring_rows, matvec }) })
    }

    pub fn model(&self) -> &QuantizedModel {
        &self.shared.model
    }
    pub fn public_key(&self) -> &PublicKey {
        &self.shared.pk
    }
    pub fn plan(&self) -> &Plan {
        &self.shared.plan
    }

    /// Checks a client's masked input before any work is spent on it.
    pub fn check_input(&self, masked_input: &[R]) -> Result<()> {
        let d = self.shared.model.input_len();
        if masked_input.len() != d {
            return Err(ModelError::InputLength { expected: d, got: masked_input.len() }.into());
        }
        Ok(())
    }

    /// Opens a session with S2 for one future query in `mode` (§4.0, §4.2).
    pub fn start_preprocessing(
        &self,
        mode: OutputMode,
        enc_seed: &Ciphertext,
        epoch: SeedEpoch,
    ) -> Result<(Preprocessing<R>, SessionStart)> {
        let sh = &self.shared;
        sh.model.check_mode(mode)?;
        let mut rng = ChaCha20Rng::from_entropy();
        let mut session_id = [0u8; 16];
        rng.fill_bytes(&mut session_id);
        let start = SessionStart {
            session_id,
            // Rerandomized like every ciphertext S1 sends S2, so S2 cannot
            // link the session to the client's ciphertext; full-size noise,
            // as for everything sent toward the key holder.
            enc_seed: sh.pk.rerandomize_full(enc_seed),
            epoch,
            input_len: sh.model.input_len() as u32,
            ring_bits: R::BITS,
        };
        let p = Preprocessing {
            shared: sh.clone(),
            mode,
            session_id,
            rng,
            next_layer: 0,
            d: Vec::new(),
            rounds: Vec::new(),
            stage: OfflineStage::AwaitMasks,
        };
        Ok((p, start))
    }
}

/// S1's blinding of one hidden round, indexed by neuron `j` (position `p`
/// carries neuron `perm[p]`).
struct HiddenSecrets<R> {
    kind: ActivationKind,
    perm: Vec<u32>,
    negative: Vec<bool>,
    /// `t_j = σ_j·m_j` in the ring.
    t: Vec<R>,
    /// `m_j⁻¹ mod 2^k` (`m_j` odd; 1 for sigmoid/tanh).
    m_inv: Vec<R>,
    /// `μ_j mod 2^k`.
    mu: Vec<R>,
}

/// How the output round maps `u_j` to `e_p − μ_j` (§4.8, per mode).
#[derive(Clone)]
enum OutputMap<R> {
    /// `logits`: S2 gets no `e`; S1 returns `u + μ`.
    Logits,
    /// `probabilities`: `u_j + β`.
    Shift(R),
    /// Multi-class `label`: `m·(n·u_j + n−1−j) + η_p + β` (the tie-break
    /// encoding, with `η_p ∈ [0, m)` fresh per position, indexed by position).
    TieBreak { m: R, n: u64, beta: R, eta: Vec<R> },
    /// `sigmoid` (`t = σ`, `off = 0`) and one-output `label` (`t = 2σm`, `off = m·σ`).
    Affine { t: R, off: R },
}

struct OutputSecrets<R> {
    perm: Vec<u32>,
    mu: Vec<R>,
    map: OutputMap<R>,
    /// `σ = −1` for the modes that report it.
    negated: bool,
}

enum OfflineStage<R> {
    AwaitMasks,
    /// Waiting for `[ρ]`: S1 keeps `[g]` for the σ = −1 neurons' new `[D]`.
    AwaitRho {
        g: Vec<Ciphertext>,
    },
    /// Waiting for S2 to confirm it stored its half.
    AwaitReady(OutputSecrets<R>),
    Done,
}

/// S1's preprocessing of one session: the homomorphic part of a query.
pub struct Preprocessing<R: Ring> {
    shared: Arc<Shared<R>>,
    mode: OutputMode,
    session_id: SessionId,
    rng: ChaCha20Rng,
    next_layer: usize,
    /// `[D]`, `D ≡ δ (mod 2^k)`, of the current layer's input.
    d: Vec<Ciphertext>,
    rounds: Vec<HiddenSecrets<R>>,
    stage: OfflineStage<R>,
}

/// A preprocessed session waiting for its client's input: S1's secrets only.
pub struct Prepared<R: Ring> {
    shared: Arc<Shared<R>>,
    mode: OutputMode,
    session_id: SessionId,
    rounds: Vec<HiddenSecrets<R>>,
    output: OutputSecrets<R>,
}

enum OnlineStage<R> {
    AwaitValues { u: Vec<R> },
    AwaitOutput(OutputAux<R>),
    Done,
}

/// One query's online phase at S1.
pub struct OnlineQuery<R: Ring> {
    shared: Arc<Shared<R>>,
    mode: OutputMode,
    session_id: SessionId,
    rounds: Vec<HiddenSecrets<R>>,
    output: OutputSecrets<R>,
    next_layer: usize,
    round: usize,
    /// `y = a + δ (mod 2^k)` (§4.3).
    y: Vec<R>,
    stage: OnlineStage<R>,
}

fn random_perm(rng: &mut ChaCha20Rng, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.gen_range(0..=i);
        p.swap(i, j);
    }
    p
}

/// Odd `m`, log-uniform: `e ∈ [1, τ]`, then `m` odd uniform in `[2^{e−1}, 2^e)`.
fn log_uniform_odd(rng: &mut ChaCha20Rng) -> u64 {
    log_uniform_odd_from(rng, 1)
}

/// The multi-class `label` round draws `m` with `e ∈ [LABEL_M_MIN_BITS, τ]`,
/// so `m > 2^8` and its noise `η ∈ [0, m)` has at least 8 bits.
pub const LABEL_M_MIN_BITS: u32 = 9;

/// [`log_uniform_odd`] with `e ∈ [min_e, τ]`.
fn log_uniform_odd_from(rng: &mut ChaCha20Rng, min_e: u32) -> u64 {
    let e = rng.gen_range(min_e..=TAU);
    if e == 1 {
        return 1;
    }
    (1u64 << (e - 1)) + 2 * rng.gen_range(0..(1u64 << (e - 2))) + 1
}

/// Uniform integer in `[0, 2^bits)`.
fn random_bits(rng: &mut ChaCha20Rng, bits: u32) -> BigInt {
    let mut buf = vec![0u8; (bits as usize).div_ceil(8)];
    rng.fill_bytes(&mut buf);
    let extra = buf.len() * 8 - bits as usize;
    if extra > 0 {
        buf[0] &= 0xff >> extra; // big-endian: the first byte is the top
    }
    BigInt::from_bytes(&buf)
}

/// `β` uniform in `[−2^{k−3}, 2^{k−3})`.
fn random_beta<R: Ring>(rng: &mut ChaCha20Rng) -> R {
    let b = random_bits(rng, R::BITS - 2);
    ring_from_gmp::<R>(&b).sub(ring_from_gmp::<R>(&(BigInt::one() << (R::BITS as usize - 3))))
}

impl<R: Ring> Preprocessing<R> {
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// §4.2 → first round: S2's `[r]`.
    pub fn on_input_masks(&mut self, msg: InputMasks) -> Result<OfflineStep> {
        if !matches!(self.stage, OfflineStage::AwaitMasks) {
            return Err(ProtocolError::BadMessage("input masks arrived out of order".into()));
        }
        let d = self.shared.model.input_len();
        if msg.enc_r.len() != d {
            return Err(ProtocolError::BadMessage(format!(
                "{} input-mask ciphertexts for {d} inputs",
                msg.enc_r.len()
            )));
        }
        self.d = msg.enc_r;
        self.advance()
    }

    /// S2's `[ρ]` for the last hidden round → the next layer's `[D]` (§4.7).
    pub fn on_rho_masks(&mut self, msg: RhoMasks) -> Result<OfflineStep> {
        if !matches!(self.stage, OfflineStage::AwaitRho { .. }) {
            return Err(ProtocolError::BadMessage("ρ masks arrived out of order".into()));
        }
        let sec = self.rounds.last().expect("a round is pending");
        let n = sec.perm.len();
        if msg.enc_rho.len() != n {
            return Err(ProtocolError::BadMessage(format!("{} ρ ciphertexts for a layer of {n}", msg.enc_rho.len())));
        }
        let OfflineStage::AwaitRho { g } = std::mem::replace(&mut self.stage, OfflineStage::Done) else {
            unreachable!("checked above")
        };
        let pk = &self.shared.pk;
        let new_d: Vec<(usize, Ciphertext)> = (0..n)
            .into_par_iter()
            .map(|p| {
                let j = sec.perm[p] as usize;
                let rho = &msg.enc_rho[p];
                let d = match (sec.kind, sec.negative[j]) {
                    (ActivationKind::Relu, neg) => {
                        let scaled = if sec.m_inv[j] == R::one() {
                            rho.clone()
                        } else {
                            pk.scalar_mul(rho, &gmp_from_ring(sec.m_inv[j]))
                        };
                        // σ = −1 uses ReLU(z) = z + ReLU(−z): add back [g_j].
                        if neg {
                            pk.add(&g[j], &scaled)
                        } else {
                            scaled
                        }
                    }
                    (_, false) => rho.clone(),
                    (_, true) => pk.neg(rho),
                };
                (j, d)
            })
            .collect();
        let mut d = vec![Ciphertext::clone(&msg.enc_rho[0]); n];
        for (j, c) in new_d {
            d[j] = c;
        }
        self.d = d;
        self.next_layer += 1;
        self.advance()
    }

    /// S2 has stored its half of the session: S1's half is ready too.
    pub fn on_ready(self, _: SessionReady) -> Result<Prepared<R>> {
        let OfflineStage::AwaitReady(output) = self.stage else {
            return Err(ProtocolError::BadMessage("session-ready arrived out of order".into()));
        };
        Ok(Prepared { shared: self.shared, mode: self.mode, session_id: self.session_id, rounds: self.rounds, output })
    }

    /// Applies linear layers homomorphically (§4.4) until an activation or the end.
    fn advance(&mut self) -> Result<OfflineStep> {
        let sh = self.shared.clone();
        while self.next_layer < sh.model.layers.len() {
            match &sh.model.layers[self.next_layer] {
                QLayer::Linear(_) => {
                    // [g] = W·[D]: the expensive part of a query.
                    let plan = sh.matvec[self.next_layer].as_ref().expect("a plan per linear layer");
                    self.d = plan.apply(&sh.pk, &self.d);
                    self.next_layer += 1;
                }
                QLayer::Activation { kind, scale, .. } => {
                    return Ok(OfflineStep::Round(self.hidden_round(*kind, *scale)));
                }
            }
        }
        Ok(OfflineStep::Output(self.output_round()))
    }

    /// §4.5: draw one hidden layer's blinding and send `C` to S2.
    fn hidden_round(&mut self, kind: ActivationKind, scale: u32) -> BlindedRound {
        let sh = self.shared.clone();
        let packing = sh.plan.hidden_packing[self.rounds.len()];
        let n = self.d.len();
        let perm = random_perm(&mut self.rng, n);
        let negative: Vec<bool> = (0..n).map(|_| self.rng.gen()).collect();
        let m: Vec<u64> =
            (0..n).map(|_| if kind == ActivationKind::Relu { log_uniform_odd(&mut self.rng) } else { 1 }).collect();
        let t: Vec<i64> = (0..n).map(|j| if negative[j] { -(m[j] as i64) } else { m[j] as i64 }).collect();
        let mu: Vec<BigInt> =
            (0..n).map(|_| random_bits(&mut self.rng, packing.offset_bits + tandem_model::KAPPA)).collect();
        let packed = self.blind(&perm, &mu, &packing, |j| bigint_from_i64(t[j]));
        let g = std::mem::take(&mut self.d);
        self.rounds.push(HiddenSecrets {
            kind,
            perm,
            negative,
            t: t.iter().map(|&t| R::from_i64(t)).collect(),
            m_inv: m.iter().map(|&m| R::from_u64(m).inv_odd().expect("m is odd")).collect(),
            mu: mu.iter().map(ring_from_gmp::<R>).collect(),
        });
        self.stage = OfflineStage::AwaitRho { g };
        BlindedRound { kind, scale, count: n as u32, packing, packed }
    }

    /// For position `p` (neuron `j = perm[p]`): `C_p = [g_j]^{t(j)}·g^{μ_j}`,
    /// packed and rerandomized.
    fn blind(
        &self,
        perm: &[u32],
        mu: &[BigInt],
        packing: &PackingParams,
        t_of: impl Fn(usize) -> BigInt + Sync,
    ) -> Vec<Ciphertext> {
        let sh = &self.shared;
        let c: Vec<Ciphertext> = perm
            .par_iter()
            .map(|&j| {
                let j = j as usize;
                let tg = sh.pk.scalar_mul(&self.d[j], &t_of(j));
                sh.pk.add_plain(&tg, &mu[j])
            })
            .collect();
        pack(&sh.pk, packing, &c)
    }

    /// §4.8: the output round's blinding for this session's mode.
    fn output_round(&mut self) -> BlindedOutput {
        let sh = self.shared.clone();
        let n = self.d.len();
        let packing = sh.plan.output_packing(self.mode).expect("mode checked at start");
        let scale = sh.model.output_scale();
        let mu: Vec<BigInt> =
            (0..n).map(|_| random_bits(&mut self.rng, packing.offset_bits + tandem_model::KAPPA)).collect();
        let ident: Vec<u32> = (0..n as u32).collect();
        let (perm, map, t, negated) = match self.mode {
            OutputMode::Logits => (ident, OutputMap::Logits, BigInt::one(), false),
            OutputMode::Probabilities => {
                let perm = random_perm(&mut self.rng, n);
                let beta: R = random_beta(&mut self.rng);
                (perm, OutputMap::Shift(beta), BigInt::one(), false)
            }
            OutputMode::Label if n > 1 => {
                // v_p = m·(n·z_j + (n−1−j)) + β: the (n−1−j) term makes every
                // value distinct and lets the lowest index win ties, exactly
                // like the reference's arg-max, whatever π is.
                //
                // η_p ∈ [0, m), fresh per position, keeps S2 from learning m
                // (and with it n·(z_a − z_b) + (b − a), i.e. every position's
                // class up to a cyclic shift) from the gcd of its values'
                // differences. Order and distinctness survive: the encoded
                // values are distinct multiples of m and η_p < m. m is at
                // least 2^{LABEL_M_MIN_BITS − 1} so that η_p is never nearly
                // constant (with m = 1 it would be 0).
                let perm = random_perm(&mut self.rng, n);
                let beta: R = random_beta(&mut self.rng);
                let m = log_uniform_odd_from(&mut self.rng, LABEL_M_MIN_BITS);
                let eta = (0..n).map(|_| R::from_u64(self.rng.gen_range(0..m))).collect();
                let t = BigInt::from(m) * BigInt::from(n as u64);
                (perm, OutputMap::TieBreak { m: R::from_u64(m), n: n as u64, beta, eta }, t, false)
            }
            OutputMode::Label => {
                // One output: v = σ·m·(2z − 1) is never 0, and v > 0 ⇔ σ·(z > 0).
                let neg: bool = self.rng.gen();
                let m = log_uniform_odd(&mut self.rng) as i64;
                let t = if neg { -2 * m } else { 2 * m };
                (ident, OutputMap::Affine { t: R::from_i64(t), off: R::from_i64(t / 2) }, bigint_from_i64(t), neg)
            }
            OutputMode::Sigmoid => {
                let neg: bool = self.rng.gen();
                let t = if neg { -1 } else { 1 };
                (ident, OutputMap::Affine { t: R::from_i64(t), off: R::zero() }, bigint_from_i64(t), neg)
            }
        };
        let packed = self.blind(&perm, &mu, &packing, |_| t.clone());
        let mu = mu.iter().map(ring_from_gmp::<R>).collect();
        self.stage = OfflineStage::AwaitReady(OutputSecrets { perm, mu, map, negated });
        BlindedOutput { mode: self.mode, scale, count: n as u32, packing, packed }
    }
}

impl<R: Ring> Prepared<R> {
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// The client's masked input arrives: start the online phase (§4.3).
    pub fn start(self, masked_input: Vec<R>) -> Result<(OnlineQuery<R>, OnlineStep<R>)> {
        ModelServer { shared: self.shared.clone() }.check_input(&masked_input)?;
        let mut q = OnlineQuery {
            shared: self.shared,
            mode: self.mode,
            session_id: self.session_id,
            rounds: self.rounds,
            output: self.output,
            next_layer: 0,
            round: 0,
            y: masked_input,
            stage: OnlineStage::Done,
        };
        let step = q.advance();
        Ok((q, step))
    }
}

impl<R: Ring> OnlineQuery<R> {
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// §4.6 → §4.7: unblind S2's `h`, then run the linear layers up to the
    /// next round. Ring arithmetic only.
    pub fn on_values(&mut self, msg: ActivationValues<R>) -> Result<OnlineStep<R>> {
        if !matches!(self.stage, OnlineStage::AwaitValues { .. }) {
            return Err(ProtocolError::BadMessage("activation values arrived out of order".into()));
        }
        let sec = &self.rounds[self.round];
        let n = sec.perm.len();
        if msg.h.len() != n {
            return Err(ProtocolError::BadMessage(format!(
                "activation response has {} values; expected {n}",
                msg.h.len()
            )));
        }
        let OnlineStage::AwaitValues { u } = std::mem::replace(&mut self.stage, OnlineStage::Done) else {
            unreachable!("checked above")
        };
        let mut y = vec![R::zero(); n];
        for (p, &h) in msg.h.iter().enumerate() {
            let j = sec.perm[p] as usize;
            y[j] = match (sec.kind, sec.negative[j]) {
                (ActivationKind::Relu, false) => sec.m_inv[j].mul(h),
                (ActivationKind::Relu, true) => u[j].add(sec.m_inv[j].mul(h)),
                (ActivationKind::Sigmoid, true) => R::from_u64(1 << F_ACT).sub(h),
                (ActivationKind::Tanh, true) => h.neg(),
                (_, false) => h,
            };
        }
        self.y = y;
        self.next_layer += 1;
        self.round += 1;
        Ok(self.advance())
    }

    /// S2's sealed result → the client's response.
    pub fn on_output(self, msg: OutputResponse) -> Result<QueryResponse<R>> {
        let OnlineStage::AwaitOutput(aux) = self.stage else {
            return Err(ProtocolError::BadMessage("output response arrived out of order".into()));
        };
        Ok(QueryResponse { session_id: self.session_id, sealed: msg.sealed, aux })
    }

    /// Applies linear layers in the ring (§4.4) until an activation or the end.
    fn advance(&mut self) -> OnlineStep<R> {
        let sh = self.shared.clone();
        while self.next_layer < sh.model.layers.len() {
            match &sh.model.layers[self.next_layer] {
                QLayer::Linear(_) => {
                    // u = W·y + b (mod 2^k). Deliberately sequential: it is
                    // ~10⁵ word multiplications for MNIST, and keeping it off
                    // the thread pool keeps it out of the queue behind other
                    // sessions' preprocessing.
                    let rows = &sh.ring_rows[self.next_layer];
                    let bias = &sh.bias[self.next_layer];
                    self.y = rows
                        .iter()
                        .zip(bias)
                        .map(|(row, b)| row.iter().fold(*b, |acc, &(i, w)| acc.add(w.mul(self.y[i as usize]))))
                        .collect();
                    self.next_layer += 1;
                }
                QLayer::Activation { .. } => {
                    let sec = &self.rounds[self.round];
                    let u = std::mem::take(&mut self.y);
                    let e = sec
                        .perm
                        .iter()
                        .map(|&j| sec.t[j as usize].mul(u[j as usize]).add(sec.mu[j as usize]))
                        .collect();
                    self.stage = OnlineStage::AwaitValues { u };
                    return OnlineStep::Round(MaskedRound { e });
                }
            }
        }
        let out = &self.output;
        let u = &self.y;
        let n = u.len();
        let e_at = |f: &dyn Fn(usize, usize, R) -> R| -> Vec<R> {
            out.perm.iter().enumerate().map(|(p, &j)| f(p, j as usize, u[j as usize]).add(out.mu[j as usize])).collect()
        };
        let (e, aux) = match &out.map {
            OutputMap::Logits => (Vec::new(), OutputAux::Logits((0..n).map(|j| u[j].add(out.mu[j])).collect())),
            OutputMap::Shift(beta) => (e_at(&|_, _, u| u.add(*beta)), OutputAux::Permutation(out.perm.clone())),
            OutputMap::TieBreak { m, n, beta, eta } => (
                e_at(&|p, j, u| {
                    m.mul(R::from_u64(*n).mul(u).add(R::from_u64(*n - 1 - j as u64))).add(eta[p]).add(*beta)
                }),
                OutputAux::Permutation(out.perm.clone()),
            ),
            OutputMap::Affine { t, off } => (e_at(&|_, _, u| t.mul(u).sub(*off)), OutputAux::Negated(out.negated)),
        };
        self.stage = OnlineStage::AwaitOutput(aux);
        OnlineStep::Output(MaskedOutput { e })
    }
}
