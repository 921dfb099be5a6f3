//! S1, the model server (PROTOCOL §4.3–§4.5, §4.7, §4.8) as a state machine.
//!
//! `ModelServer::start_query` turns a client's request into a `ModelQuery`
//! that is fed S2's messages and returns the next message to send. All
//! per-query secrets (`t`, `π`, `μ`, `β`) live only inside the `ModelQuery`
//! and are drawn from a ChaCha20 CSPRNG seeded from the OS for each query.

use crate::convert::{gmp_from_ring, ring_from_gmp, ring_from_num};
use crate::error::{ProtocolError, Result};
use crate::messages::*;
use crate::plan::Plan;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use std::sync::Arc;
use tandem_crypto::bigint_traits::*;
use tandem_crypto::matvec::matvec;
use tandem_crypto::packing::{pack, PackingParams};
use tandem_crypto::{bigint_from_i64, BigInt, Ciphertext, NoiseSource, PublicKey, Ring};
use tandem_model::{ActivationKind, ModelError, OutputMode, QLayer, QuantizedModel, F_ACT, TAU};

struct Shared<R> {
    model: Arc<QuantizedModel>,
    pk: PublicKey,
    noise: Arc<NoiseSource>,
    plan: Plan,
    /// Biases reduced into the ring once, per linear layer.
    bias: Vec<Vec<R>>,
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
    pub fn new(model: Arc<QuantizedModel>, pk: PublicKey, noise: Arc<NoiseSource>) -> Result<Self> {
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
        Ok(ModelServer { shared: Arc::new(Shared { model, pk, noise, plan, bias }) })
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

    /// Validates the client's request and opens a session with S2.
    pub fn start_query(&self, req: QueryRequest<R>) -> Result<(ModelQuery<R>, SessionStart)> {
        let sh = &self.shared;
        sh.model.check_mode(req.mode)?;
        let d = sh.model.input_len();
        if req.masked_input.len() != d {
            return Err(ModelError::InputLength { expected: d, got: req.masked_input.len() }.into());
        }
        let mut rng = ChaCha20Rng::from_entropy();
        let mut session_id = [0u8; 16];
        rng.fill_bytes(&mut session_id);
        let start = SessionStart {
            session_id,
            // Rerandomized like every ciphertext S1 sends S2, so S2 cannot
            // link the session to the client's ciphertext.
            enc_seed: sh.noise.rerandomize(&sh.pk, &req.enc_seed),
            input_len: d as u32,
            ring_bits: R::BITS,
        };
        let q = ModelQuery {
            shared: sh.clone(),
            mode: req.mode,
            session_id,
            rng,
            next_layer: 0,
            round: 0,
            y: req.masked_input,
            d: Vec::new(),
            stage: Stage::AwaitMasks,
        };
        Ok((q, start))
    }
}

enum Stage<R> {
    AwaitMasks,
    AwaitActivation(HiddenSecrets<R>),
    AwaitOutput(OutputAux<R>),
    Done,
}

/// S1's blinding of one hidden round, indexed by neuron `j`.
struct HiddenSecrets<R> {
    kind: ActivationKind,
    u: Vec<R>,
    g: Vec<Ciphertext>,
    /// Position `p` carries neuron `perm[p]`.
    perm: Vec<u32>,
    negative: Vec<bool>,
    /// `m_j` (odd; 1 for sigmoid/tanh).
    m: Vec<u64>,
}

/// One query in progress at S1.
pub struct ModelQuery<R: Ring> {
    shared: Arc<Shared<R>>,
    mode: OutputMode,
    session_id: SessionId,
    rng: ChaCha20Rng,
    next_layer: usize,
    round: usize,
    /// `y = a + δ (mod 2^k)` (§4.3).
    y: Vec<R>,
    /// `[D]`, `D ≡ δ (mod 2^k)`.
    d: Vec<Ciphertext>,
    stage: Stage<R>,
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
    let e = rng.gen_range(1..=TAU);
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

fn ring_i64<R: Ring>(v: i64) -> R {
    R::from_i64(v)
}

impl<R: Ring> ModelQuery<R> {
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// §4.2 → first round: S2's `[r]`.
    pub fn on_input_masks(&mut self, msg: InputMasks) -> Result<ToActivation<R>> {
        if !matches!(self.stage, Stage::AwaitMasks) {
            return Err(ProtocolError::BadMessage("input masks arrived out of order".into()));
        }
        if msg.enc_r.len() != self.y.len() {
            return Err(ProtocolError::BadMessage(format!(
                "{} input-mask ciphertexts for {} inputs",
                msg.enc_r.len(),
                self.y.len()
            )));
        }
        self.d = msg.enc_r;
        self.advance()
    }

    /// §4.6 → §4.7: unblind, then run the linear layers up to the next round.
    pub fn on_activation(&mut self, msg: ActivationResponse<R>) -> Result<ToActivation<R>> {
        let Stage::AwaitActivation(sec) = std::mem::replace(&mut self.stage, Stage::Done) else {
            return Err(ProtocolError::BadMessage("activation response arrived out of order".into()));
        };
        let n = sec.perm.len();
        if msg.h.len() != n || msg.enc_rho.len() != n {
            return Err(ProtocolError::BadMessage(format!(
                "activation response has {} values and {} ciphertexts; expected {n} of each",
                msg.h.len(),
                msg.enc_rho.len()
            )));
        }
        let pk = &self.shared.pk;
        let mut y = vec![R::zero(); n];
        // Per position: (neuron, new [D_j]).
        let new_d: Vec<(usize, Ciphertext)> = (0..n)
            .into_par_iter()
            .map(|p| {
                let j = sec.perm[p] as usize;
                let rho = &msg.enc_rho[p];
                let d = match (sec.kind, sec.negative[j]) {
                    (ActivationKind::Relu, neg) => {
                        let m_inv = R::from_u64(sec.m[j]).inv_odd().expect("m is odd");
                        let scaled =
                            if sec.m[j] == 1 { rho.clone() } else { pk.scalar_mul(rho, &gmp_from_ring(m_inv)) };
                        // σ = −1 uses ReLU(z) = z + ReLU(−z): add back [g_j].
                        if neg {
                            pk.add(&sec.g[j], &scaled)
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
        for p in 0..n {
            let j = sec.perm[p] as usize;
            let h = msg.h[p];
            y[j] = match (sec.kind, sec.negative[j]) {
                (ActivationKind::Relu, neg) => {
                    let m_inv = R::from_u64(sec.m[j]).inv_odd().expect("m is odd");
                    let v = m_inv.mul(h);
                    if neg {
                        sec.u[j].add(v)
                    } else {
                        v
                    }
                }
                (ActivationKind::Sigmoid, true) => R::from_u64(1 << F_ACT).sub(h),
                (ActivationKind::Tanh, true) => h.neg(),
                (_, false) => h,
            };
        }
        let mut d = vec![Ciphertext::clone(&msg.enc_rho[0]); n];
        for (j, c) in new_d {
            d[j] = c;
        }
        self.y = y;
        self.d = d;
        self.next_layer += 1;
        self.round += 1;
        self.advance()
    }

    /// S2's sealed result → the client's response.
    pub fn on_output(&mut self, msg: OutputResponse) -> Result<QueryResponse<R>> {
        let Stage::AwaitOutput(aux) = std::mem::replace(&mut self.stage, Stage::Done) else {
            return Err(ProtocolError::BadMessage("output response arrived out of order".into()));
        };
        Ok(QueryResponse { session_id: self.session_id, sealed: msg.sealed, aux })
    }

    /// Applies linear layers (§4.4) until an activation or the end.
    fn advance(&mut self) -> Result<ToActivation<R>> {
        let sh = self.shared.clone();
        while self.next_layer < sh.model.layers.len() {
            match &sh.model.layers[self.next_layer] {
                QLayer::Linear(l) => {
                    let bias = &sh.bias[self.next_layer];
                    // u = W·y + b (mod 2^k): cheap ring arithmetic.
                    let u: Vec<R> = l
                        .rows
                        .par_iter()
                        .zip(bias.par_iter())
                        .map(|(row, b)| {
                            row.iter().fold(*b, |acc, &(i, w)| acc.add(ring_i64::<R>(w).mul(self.y[i as usize])))
                        })
                        .collect();
                    // [g] = W·[D]: the expensive part.
                    let g = matvec(&sh.pk, &l.rows, &self.d);
                    self.y = u;
                    self.d = g;
                    self.next_layer += 1;
                }
                QLayer::Activation { kind, scale, .. } => {
                    return Ok(ToActivation::Activate(self.hidden_round(*kind, *scale)));
                }
            }
        }
        Ok(ToActivation::Finish(self.output_round()))
    }

    /// §4.5: blind one hidden layer.
    fn hidden_round(&mut self, kind: ActivationKind, scale: u32) -> ActivationRequest<R> {
        let sh = self.shared.clone();
        let packing = sh.plan.hidden_packing[self.round];
        let n = self.y.len();
        let perm = random_perm(&mut self.rng, n);
        let negative: Vec<bool> = (0..n).map(|_| self.rng.gen()).collect();
        let m: Vec<u64> =
            (0..n).map(|_| if kind == ActivationKind::Relu { log_uniform_odd(&mut self.rng) } else { 1 }).collect();
        let t: Vec<i64> = (0..n).map(|j| if negative[j] { -(m[j] as i64) } else { m[j] as i64 }).collect();
        let mu: Vec<BigInt> =
            (0..n).map(|_| random_bits(&mut self.rng, packing.offset_bits + tandem_model::KAPPA)).collect();
        let (e, c) = self.blind(&perm, &mu, &packing, |j, u| ring_i64::<R>(t[j]).mul(u), |j| bigint_from_i64(t[j]));
        let u = std::mem::take(&mut self.y);
        let g = std::mem::take(&mut self.d);
        self.stage = Stage::AwaitActivation(HiddenSecrets { kind, u, g, perm, negative, m });
        ActivationRequest { kind, scale, e, packing, packed: c }
    }

    /// For position `p` (neuron `j = perm[p]`): `e_p = ẽ(j, u_j) + μ_j` and
    /// `C_p = [g_j]^{t(j)}·g^{μ_j}`, packed and rerandomized.
    fn blind(
        &self,
        perm: &[u32],
        mu: &[BigInt],
        packing: &PackingParams,
        e_of: impl Fn(usize, R) -> R + Sync,
        t_of: impl Fn(usize) -> BigInt + Sync,
    ) -> (Vec<R>, Vec<Ciphertext>) {
        let sh = &self.shared;
        let e: Vec<R> = perm
            .iter()
            .map(|&j| {
                let j = j as usize;
                e_of(j, self.y[j]).add(ring_from_gmp::<R>(&mu[j]))
            })
            .collect();
        let c: Vec<Ciphertext> = perm
            .par_iter()
            .map(|&j| {
                let j = j as usize;
                let tg = sh.pk.scalar_mul(&self.d[j], &t_of(j));
                sh.pk.add_plain(&tg, &mu[j])
            })
            .collect();
        (e, pack(&sh.pk, packing, &c, &sh.noise))
    }

    /// §4.8: the output round for this query's mode.
    fn output_round(&mut self) -> OutputRequest<R> {
        let sh = self.shared.clone();
        let n = self.y.len();
        let packing = sh.plan.output_packing(self.mode).expect("mode checked at start");
        let scale = sh.model.output_scale();
        let mu: Vec<BigInt> =
            (0..n).map(|_| random_bits(&mut self.rng, packing.offset_bits + tandem_model::KAPPA)).collect();
        let one = BigInt::one();
        let (e, packed, aux) = match self.mode {
            OutputMode::Logits => {
                let ident: Vec<u32> = (0..n as u32).collect();
                let (_, c) = self.blind(&ident, &mu, &packing, |_, u| u, |_| one.clone());
                let aux = (0..n).map(|j| self.y[j].add(ring_from_gmp::<R>(&mu[j]))).collect();
                (Vec::new(), c, OutputAux::Logits(aux))
            }
            OutputMode::Probabilities => {
                let perm = random_perm(&mut self.rng, n);
                let beta: R = random_beta(&mut self.rng);
                let (e, c) = self.blind(&perm, &mu, &packing, |_, u| u.add(beta), |_| one.clone());
                (e, c, OutputAux::Permutation(perm))
            }
            OutputMode::Label if n > 1 => {
                // v_p = m·(n·z_j + (n−1−j)) + β: the (n−1−j) term makes every
                // value distinct and lets the lowest index win ties, exactly
                // like the reference's arg-max, whatever π is.
                let perm = random_perm(&mut self.rng, n);
                let beta: R = random_beta(&mut self.rng);
                let m = log_uniform_odd(&mut self.rng);
                let (rm, rn) = (R::from_u64(m), R::from_u64(n as u64));
                let t = BigInt::from(m) * BigInt::from(n as u64);
                let (e, c) = self.blind(
                    &perm,
                    &mu,
                    &packing,
                    |j, u| rm.mul(rn.mul(u).add(R::from_u64((n - 1 - j) as u64))).add(beta),
                    |_| t.clone(),
                );
                (e, c, OutputAux::Permutation(perm))
            }
            OutputMode::Label => {
                // One output: v = σ·m·(2z − 1) is never 0, and v > 0 ⇔ σ·(z > 0).
                let neg: bool = self.rng.gen();
                let m = log_uniform_odd(&mut self.rng) as i64;
                let t = if neg { -2 * m } else { 2 * m };
                let (e, c) = self.blind(
                    &[0],
                    &mu,
                    &packing,
                    |_, u| ring_i64::<R>(t).mul(u).sub(ring_i64::<R>(t / 2)),
                    |_| bigint_from_i64(t),
                );
                (e, c, OutputAux::Negated(neg))
            }
            OutputMode::Sigmoid => {
                let neg: bool = self.rng.gen();
                let t = if neg { -1 } else { 1 };
                let (e, c) = self.blind(&[0], &mu, &packing, |_, u| ring_i64::<R>(t).mul(u), |_| bigint_from_i64(t));
                (e, c, OutputAux::Negated(neg))
            }
        };
        self.stage = Stage::AwaitOutput(aux);
        OutputRequest { mode: self.mode, scale, count: n as u32, e, packing, packed }
    }
}
