//! S1's online half (PROTOCOL §4.3–§4.8, the ring columns) and the blinding
//! secrets every preprocessing engine draws the same way.
//!
//! A preprocessing engine (the trait in [`crate::engine`]) runs everything
//! homomorphic and ends with a [`Prepared`] session: S1's blinding secrets
//! (`t`, `π`, `μ`, `β`, `m⁻¹`) reduced into the ring, and nothing of the
//! engine. [`Prepared::start`] → [`OnlineQuery`] is then ring arithmetic
//! mod `2^k` only, identical for every engine.

use crate::convert::ring_from_num;
use crate::error::{ProtocolError, Result};
use crate::messages::*;
use crate::ring::Ring;
use num_bigint::BigUint;
use rand::Rng;
use rand_core::{CryptoRng, RngCore};
use std::sync::Arc;
use tandem_model::{ActivationKind, ModelError, OutputMode, QLayer, QuantizedModel, F_ACT, TAU};

/// The ring form of a model: what the online phase multiplies with. Built
/// once per model; engines keep it beside their own per-model state.
pub struct OnlineModel<R> {
    model: Arc<QuantizedModel>,
    /// Biases reduced into the ring once, per linear layer.
    bias: Vec<Vec<R>>,
    /// Weights reduced into the ring once, per linear layer (the online
    /// phase's only real work is `W·y` with these).
    ring_rows: Vec<Vec<Vec<(u32, R)>>>,
}

impl<R: Ring> OnlineModel<R> {
    /// Checks the ring and reduces the weights and biases into it.
    pub fn new(model: Arc<QuantizedModel>) -> Result<Self> {
        if model.ring_bits != R::BITS {
            return Err(ProtocolError::RingMismatch { model: model.ring_bits, code: R::BITS });
        }
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
        Ok(OnlineModel { model, bias, ring_rows })
    }

    /// The quantized model.
    pub fn model(&self) -> &Arc<QuantizedModel> {
        &self.model
    }

    /// Checks a client's masked input before any work is spent on it.
    pub fn check_input(&self, masked_input: &[R]) -> Result<()> {
        let d = self.model.input_len();
        if masked_input.len() != d {
            return Err(ModelError::InputLength { expected: d, got: masked_input.len() }.into());
        }
        Ok(())
    }
}

/// S1's blinding of one hidden round, indexed by neuron `j` (position `p`
/// carries neuron `perm[p]`).
pub struct HiddenSecrets<R> {
    kind: ActivationKind,
    perm: Vec<u32>,
    negative: Vec<bool>,
    /// `t_j = σ_j·m_j` in the ring.
    t: Vec<R>,
    /// `m_j⁻¹ mod 2^k` (`m_j` odd; 1 for sigmoid/tanh).
    m_inv: Vec<R>,
    /// `μ_j mod 2^k`.
    mu: Vec<R>,
    /// By position: what S1 adds to `h_p` before it multiplies by `m⁻¹`.
    /// Zero under Paillier; the lattice engine's OT multiplication leaves
    /// S1 its share `x_p` of `m_j·λ_p` here (PROTOCOL §4.2c), so that
    /// `m⁻¹·(h_p + x_p) = a_j + λ_p`.
    offset: Option<Vec<R>>,
}

/// A freshly drawn hidden round: the secrets S1 keeps, plus the integers
/// the engine blinds with (`C_j = t_j·g_j + μ_j`, §4.5), which it must not
/// keep after preprocessing.
pub struct HiddenBlinding<R> {
    /// What the online phase needs.
    pub secrets: HiddenSecrets<R>,
    /// `t_j = σ_j·m_j`, by neuron.
    pub t: Vec<i64>,
    /// `μ_j` uniform in `[0, 2^{mu_bits})`, by neuron.
    pub mu: Vec<BigUint>,
}

impl<R: Ring> HiddenSecrets<R> {
    /// Draws one hidden round's blinding for `n` neurons (§4.5): `π`
    /// uniform, `σ_j` uniform, `m_j` odd log-uniform (ReLU; 1 otherwise),
    /// `μ_j` uniform in `[0, 2^{mu_bits})`.
    pub fn draw<G: RngCore + CryptoRng + ?Sized>(
        kind: ActivationKind,
        n: usize,
        mu_bits: u32,
        rng: &mut G,
    ) -> HiddenBlinding<R> {
        let perm = random_perm(rng, n);
        let negative: Vec<bool> = (0..n).map(|_| rng.gen()).collect();
        let m: Vec<u64> = (0..n).map(|_| if kind == ActivationKind::Relu { log_uniform_odd(rng) } else { 1 }).collect();
        let t: Vec<i64> = (0..n).map(|j| if negative[j] { -(m[j] as i64) } else { m[j] as i64 }).collect();
        let mu: Vec<BigUint> = (0..n).map(|_| random_bits(rng, mu_bits)).collect();
        let secrets = HiddenSecrets {
            kind,
            perm,
            negative,
            t: t.iter().map(|&t| R::from_i64(t)).collect(),
            m_inv: m.iter().map(|&m| R::from_u64(m).inv_odd().expect("m is odd")).collect(),
            mu: mu.iter().map(ring_from_biguint::<R>).collect(),
            offset: None,
        };
        HiddenBlinding { secrets, t, mu }
    }
    /// The activation of the round.
    pub fn kind(&self) -> ActivationKind {
        self.kind
    }
    /// `π`: position `p` carries neuron `perm()[p]`.
    pub fn perm(&self) -> &[u32] {
        &self.perm
    }
    /// Whether `σ_j = −1`.
    pub fn negative(&self, j: usize) -> bool {
        self.negative[j]
    }
    /// `m_j⁻¹ mod 2^k`.
    pub fn m_inv(&self, j: usize) -> R {
        self.m_inv[j]
    }
    /// Sets the per-position offsets S1 adds to `h` before unblinding (the
    /// lattice engine's OT shares; PROTOCOL §4.2c).
    pub fn set_offset(&mut self, offset: Vec<R>) -> Result<()> {
        if offset.len() != self.perm.len() {
            return Err(ProtocolError::LengthMismatch { field: "offsets", expected: self.perm.len(), got: offset.len() });
        }
        self.offset = Some(offset);
        Ok(())
    }
    /// Number of neurons.
    pub fn len(&self) -> usize {
        self.perm.len()
    }
    /// Whether the round has no neurons (never, for a valid model).
    pub fn is_empty(&self) -> bool {
        self.perm.is_empty()
    }
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

/// S1's blinding of the output round (§4.8).
pub struct OutputSecrets<R> {
    perm: Vec<u32>,
    mu: Vec<R>,
    map: OutputMap<R>,
    /// `σ = −1` for the modes that report it.
    negated: bool,
}

/// A freshly drawn output round: the secrets S1 keeps and the integers the
/// engine blinds with (`C_p = t·g_{π(p)} + μ_{π(p)}`).
pub struct OutputBlinding<R> {
    /// What the online phase needs.
    pub secrets: OutputSecrets<R>,
    /// The common multiplier `t` of the mode.
    pub t: i128,
    /// `μ_j` uniform in `[0, 2^{mu_bits})`, by neuron.
    pub mu: Vec<BigUint>,
}

/// The multi-class `label` round draws `m` with `e ∈ [LABEL_M_MIN_BITS, τ]`,
/// so `m > 2^8` and its noise `η ∈ [0, m)` has at least 8 bits.
pub const LABEL_M_MIN_BITS: u32 = 9;

impl<R: Ring> OutputSecrets<R> {
    /// Draws the output round's blinding for `mode` and `n` logits (§4.8).
    pub fn draw<G: RngCore + CryptoRng + ?Sized>(
        mode: OutputMode,
        n: usize,
        mu_bits: u32,
        rng: &mut G,
    ) -> OutputBlinding<R> {
        let mu: Vec<BigUint> = (0..n).map(|_| random_bits(rng, mu_bits)).collect();
        let ident: Vec<u32> = (0..n as u32).collect();
        let (perm, map, t, negated) = match mode {
            OutputMode::Logits => (ident, OutputMap::Logits, 1i128, false),
            OutputMode::Probabilities => {
                let perm = random_perm(rng, n);
                let beta: R = random_beta(rng);
                (perm, OutputMap::Shift(beta), 1, false)
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
                let perm = random_perm(rng, n);
                let beta: R = random_beta(rng);
                let m = log_uniform_odd_from(rng, LABEL_M_MIN_BITS);
                let eta = (0..n).map(|_| R::from_u64(rng.gen_range(0..m))).collect();
                let t = m as i128 * n as i128;
                (perm, OutputMap::TieBreak { m: R::from_u64(m), n: n as u64, beta, eta }, t, false)
            }
            OutputMode::Label => {
                // One output: v = σ·m·(2z − 1) is never 0, and v > 0 ⇔ σ·(z > 0).
                let neg: bool = rng.gen();
                let m = log_uniform_odd(rng) as i64;
                let t = if neg { -2 * m } else { 2 * m };
                (ident, OutputMap::Affine { t: R::from_i64(t), off: R::from_i64(t / 2) }, t as i128, neg)
            }
            OutputMode::Sigmoid => {
                let neg: bool = rng.gen();
                let t = if neg { -1 } else { 1 };
                (ident, OutputMap::Affine { t: R::from_i64(t), off: R::zero() }, t as i128, neg)
            }
        };
        let secrets = OutputSecrets { perm, mu: mu.iter().map(ring_from_biguint::<R>).collect(), map, negated };
        OutputBlinding { secrets, t, mu }
    }
    /// `π` of the output round (the identity where the mode has none).
    pub fn perm(&self) -> &[u32] {
        &self.perm
    }
}

/// How many leading values an activation layer keeps across its round
/// (PROTOCOL §4.9; 0 for every layer but a lowered max pool's). The round's
/// neurons are the values after them.
pub fn round_keep(layer: &QLayer) -> usize {
    match layer {
        QLayer::Activation { keep, .. } => *keep,
        QLayer::Linear(_) => 0,
    }
}

fn random_perm<G: RngCore + ?Sized>(rng: &mut G, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.gen_range(0..=i);
        p.swap(i, j);
    }
    p
}

/// Odd `m`, log-uniform: `e ∈ [1, τ]`, then `m` odd uniform in `[2^{e−1}, 2^e)`.
fn log_uniform_odd<G: RngCore + ?Sized>(rng: &mut G) -> u64 {
    log_uniform_odd_from(rng, 1)
}

/// [`log_uniform_odd`] with `e ∈ [min_e, τ]`.
fn log_uniform_odd_from<G: RngCore + ?Sized>(rng: &mut G, min_e: u32) -> u64 {
    let e = rng.gen_range(min_e..=TAU);
    if e == 1 {
        return 1;
    }
    (1u64 << (e - 1)) + 2 * rng.gen_range(0..(1u64 << (e - 2))) + 1
}

/// Uniform integer in `[0, 2^bits)`.
pub fn random_bits<G: RngCore + ?Sized>(rng: &mut G, bits: u32) -> BigUint {
    let mut buf = vec![0u8; (bits as usize).div_ceil(8)];
    rng.fill_bytes(&mut buf);
    let extra = buf.len() * 8 - bits as usize;
    if extra > 0 {
        buf[0] &= 0xff >> extra; // big-endian: the first byte is the top
    }
    BigUint::from_bytes_be(&buf)
}

fn ring_from_biguint<R: Ring>(v: &BigUint) -> R {
    R::from_le_truncating(&v.to_bytes_le())
}

/// `β` uniform in `[−2^{k−3}, 2^{k−3})`.
fn random_beta<R: Ring, G: RngCore + ?Sized>(rng: &mut G) -> R {
    let b = random_bits(rng, R::BITS - 2);
    ring_from_biguint::<R>(&b).sub(ring_from_biguint::<R>(&(BigUint::from(1u8) << (R::BITS as usize - 3))))
}

/// A preprocessed session waiting for its client's input: S1's secrets only.
pub struct Prepared<R: Ring> {
    model: Arc<OnlineModel<R>>,
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
    model: Arc<OnlineModel<R>>,
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

impl<R: Ring> Prepared<R> {
    /// What an engine hands over when S2 confirmed its half: the secrets of
    /// every hidden round, in order, and of the output round.
    pub fn new(
        model: Arc<OnlineModel<R>>,
        mode: OutputMode,
        session_id: SessionId,
        rounds: Vec<HiddenSecrets<R>>,
        output: OutputSecrets<R>,
    ) -> Self {
        Prepared { model, mode, session_id, rounds, output }
    }
    /// The session (and ticket) id.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    /// The output mode the session was preprocessed for.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// The client's masked input arrives: start the online phase (§4.3).
    pub fn start(self, masked_input: Vec<R>) -> Result<(OnlineQuery<R>, OnlineStep<R>)> {
        self.model.check_input(&masked_input)?;
        let mut q = OnlineQuery {
            model: self.model,
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
    /// The session id.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    /// The output mode.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// §4.6 → §4.7: unblind S2's `h`, then run the linear layers up to the
    /// next round. Ring arithmetic only.
    pub fn on_values(&mut self, msg: ActivationValues<R>) -> Result<OnlineStep<R>> {
        if !matches!(self.stage, OnlineStage::AwaitValues { .. }) {
            return Err(ProtocolError::OutOfOrder { got: "activation values" });
        }
        let sec = &self.rounds[self.round];
        let n = sec.perm.len();
        if msg.h.len() != n {
            return Err(ProtocolError::LengthMismatch { field: "activation values h", expected: n, got: msg.h.len() });
        }
        let OnlineStage::AwaitValues { u } = std::mem::replace(&mut self.stage, OnlineStage::Done) else {
            unreachable!("checked above")
        };
        // Kept values (§4.9) pass through: y_j = u_j for j < keep.
        let keep = round_keep(&self.model.model.layers[self.next_layer]);
        let (kept, u) = u.split_at(keep);
        let mut y = kept.to_vec();
        y.resize(keep + n, R::zero());
        let y_act = &mut y[keep..];
        for (p, &h) in msg.h.iter().enumerate() {
            let j = sec.perm[p] as usize;
            let h = match &sec.offset {
                Some(off) => h.add(off[p]),
                None => h,
            };
            y_act[j] = match (sec.kind, sec.negative[j]) {
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
            return Err(ProtocolError::OutOfOrder { got: "output response" });
        };
        Ok(QueryResponse { session_id: self.session_id, sealed: msg.sealed, aux })
    }

    /// Applies linear layers in the ring (§4.4) until an activation or the end.
    fn advance(&mut self) -> OnlineStep<R> {
        let sh = self.model.clone();
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
                layer @ QLayer::Activation { .. } => {
                    let sec = &self.rounds[self.round];
                    let u = std::mem::take(&mut self.y);
                    // Only the activated values go to S2; kept ones stay (§4.9).
                    let act = &u[round_keep(layer)..];
                    let e = sec
                        .perm
                        .iter()
                        .map(|&j| sec.t[j as usize].mul(act[j as usize]).add(sec.mu[j as usize]))
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
