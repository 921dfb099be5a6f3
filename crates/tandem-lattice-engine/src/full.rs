//! The lattice engine with no Paillier work between the servers (issue 16;
//! docs/PROTOCOL.md §4.2c, SECURITY.md "The lattice engine, every layer").
//!
//! The mask of every layer's input is **additively shared**: S1 holds `α`
//! (by neuron), S2 holds `β` (in its own order, which S1 knows), and
//! `δ = α + P·β`. Per linear layer, S2 sends `β` RLWE-encrypted under its
//! secret key and S1 answers `Enc(W'·β + μ_a)` with `W'` the layer's weights
//! with rows and columns permuted into S2's orders (re-encoded per query,
//! because the permutations are per query); S2 decrypts `s`, which is
//! uniform. Then `g = W·δ` is shared as `(W·α − μ_a, s)`.
//!
//! Per activation round the products of S1's per-neuron secrets with S2's
//! values are OT multiplications (Gilboa, `tandem-ot`):
//! - `t_j·s_p` (τ + 1 OTs): S2 ends with `c_p = t_j·g_j + μ_j` exactly as
//!   under Paillier, after S1 sends `X_p = x_p + t_j·g¹_j + μ_j`;
//! - `b_j·s_p` (ReLU, 1 OT, `b_j = [σ_j = −1]`): the next mask's `g_j` term;
//! - `m_j·λ_p` (ReLU, τ OTs) with `λ_p` S2's fresh uniform value: S2's
//!   share is its online mask `ρ_p`, S1's share `x_p` is added to `h_p`
//!   before S1 multiplies by `m_j⁻¹`, so the next mask is `λ_p` (plus
//!   `g_j` if `σ_j = −1`) and no 128-bit `m⁻¹` is ever multiplied under
//!   encryption or OT; sigmoid/tanh use `ρ_p = λ_p` and one OT for `σ_j·λ_p`.
//!
//! The output round is one OT multiplication `t·s_p` (none for the modes
//! whose multiplier is 1). What each server sees online is what it sees
//! under Paillier.

use std::sync::Arc;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use tandem_core::online::{HiddenBlinding, HiddenSecrets, OnlineModel, OutputBlinding, OutputSecrets};
use tandem_core::{ActivationSession, Prepared, ProtocolError, Result, Ring, Seed, SessionId, SessionStart};
use tandem_lattice::{Context, EncodedWeights, Layout};
use tandem_model::{ActivationKind, OutputMode, QLayer, QuantizedModel, TAU};
use tandem_ot::{Corrections, OleReceiver, OleRequest, OleSender, OtReceiverKey, OtSenderKey, ScalarBatch};
use zeroize::Zeroizing;

use crate::{lattice_error, u128_of, MAX_MESSAGE_BYTES};

/// OTs per hidden ReLU neuron: `t + 2^τ` (τ + 1 bits), `b` (1), `m` (τ).
pub const OTS_PER_RELU: u32 = 2 * TAU + 2;

/// What follows a linear layer's products (S1 tells S2, so S2 knows what
/// to do with the decrypted `s`; shapes and kinds are public).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Another linear layer with this many outputs: `β ← s`.
    Linear {
        /// Its output count.
        outputs: u32,
    },
    /// A hidden activation round over `s[keep..]`, then a linear layer.
    Round {
        /// The activation.
        kind: ActivationKind,
        /// Its input scale.
        scale: u32,
        /// Values kept across the round (max pooling, §4.9).
        keep: u32,
        /// The output count of the linear layer after the round.
        next_outputs: u32,
    },
    /// The output round.
    Output {
        /// The output mode.
        mode: OutputMode,
        /// The logits' scale.
        scale: u32,
    },
}

/// S1 → S2: one step of a session on the full lattice path.
#[derive(Clone)]
pub struct FullStep {
    /// The session's OT-extension request (the first step only).
    pub ole: Option<OleRequest>,
    /// `X` of the previous round (hidden or output), by position; empty if
    /// none.
    pub x: Vec<u128>,
    /// This linear layer's `W'·β + μ_a` under RLWE (empty in the last step,
    /// which only carries the output round's `X`).
    pub products: Vec<tandem_lattice::Ciphertext>,
    /// What follows the products (`None` in the last step).
    pub next: Option<Next>,
}

/// S2 → S1: the OT corrections of a round and the next layer's encrypted
/// `β` (empty after the output round's products).
#[derive(Clone)]
pub struct FullReply {
    /// One per OT batch of the round, in order.
    pub corrections: Vec<Corrections>,
    /// `β` RLWE-encrypted for the next linear layer.
    pub inputs: Vec<tandem_lattice::SeededCiphertext>,
}

impl std::fmt::Debug for FullStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FullStep {{ ole: {}, x: {} values, products: {} RLWE ciphertexts, next: {:?} }}",
            self.ole.as_ref().map_or("none".to_string(), |r| format!("{} OTs", r.ots)),
            self.x.len(),
            self.products.len(),
            self.next
        )
    }
}
impl std::fmt::Debug for FullReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ots: usize = self.corrections.iter().map(|c| c.0.len()).sum();
        write!(f, "FullReply {{ corrections: {ots} OTs, inputs: {} RLWE ciphertexts }}", self.inputs.len())
    }
}

/// The bits of the output round's OT multiplier for `mode` and `n`
/// outputs (`a + 2^{L−1} ∈ [0, 2^L)`); 0 when the multiplier is 1.
pub fn output_bits(mode: OutputMode, n: usize) -> u32 {
    match mode {
        OutputMode::Logits | OutputMode::Probabilities => 0,
        // t = m·n with m < 2^τ.
        OutputMode::Label if n > 1 => TAU + (usize::BITS - n.leading_zeros()) + 1,
        // t = ±2m.
        OutputMode::Label => TAU + 2,
        // t = ±1.
        OutputMode::Sigmoid => 2,
    }
}

/// S1's model on the full lattice path: the weights (dense, re-encoded per
/// query under that query's permutations), S2's RLWE key and the OT setup.
pub(crate) struct FullModel {
    pub(crate) ctx: Arc<Context>,
    pub(crate) pk: tandem_lattice::PublicKey,
    pub(crate) ot_id: [u8; 16],
    pub(crate) ot: Arc<OtReceiverKey>,
}

/// Why `model` cannot run every layer on the lattice path (`Ok` if it can).
pub(crate) fn check_model(ctx: &Context, model: &QuantizedModel, ring_bits: u32) -> std::result::Result<(), String> {
    if ring_bits != 128 {
        return Err(format!("its ring is k = {ring_bits}; the RLWE plaintext space is Z_2^128"));
    }
    let layers = &model.layers;
    if !matches!(layers.first(), Some(QLayer::Linear(_))) {
        return Err("its first layer is not linear".into());
    }
    if !matches!(layers.last(), Some(QLayer::Linear(_))) {
        return Err("its last layer is not linear".into());
    }
    let limit = 1i64 << (ctx.params().weight_bits);
    for (i, l) in layers.iter().enumerate() {
        match l {
            QLayer::Activation { .. } => {
                if !matches!(layers.get(i + 1), Some(QLayer::Linear(_))) || !matches!(layers[i - 1], QLayer::Linear(_)) {
                    return Err("an activation is not between two linear layers".into());
                }
            }
            QLayer::Linear(l) => {
                if l.rows.iter().flatten().any(|&(_, w)| w.abs() >= limit) {
                    return Err(format!("layer {} has weights of {} bits or more", l.source, ctx.params().weight_bits));
                }
                let layout = Layout::new(ctx, l.in_dim, l.out_dim).map_err(|e| format!("layer {}: {e}", l.source))?;
                let (up, down) = (layout.bytes_s2_to_s1(ctx), layout.bytes_s1_to_s2(ctx));
                if up.max(down) > MAX_MESSAGE_BYTES {
                    return Err(format!(
                        "its {}×{} layer {} would need {up} B of RLWE ciphertexts to S1 and {down} B back, \
                         above the lattice engine's {MAX_MESSAGE_BYTES}-B bound",
                        l.out_dim, l.in_dim, l.source
                    ));
                }
            }
        }
    }
    Ok(())
}

fn ring_of<R: Ring>(v: u128) -> R {
    R::from_le_truncating(&v.to_le_bytes())
}

fn random_u128<G: RngCore + ?Sized>(rng: &mut G) -> u128 {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    u128::from_le_bytes(b)
}

fn to_u128_big(v: &num_bigint::BigUint) -> u128 {
    let b = v.to_bytes_le();
    let mut le = [0u8; 16];
    let n = b.len().min(16);
    le[..n].copy_from_slice(&b[..n]);
    u128::from_le_bytes(le)
}

enum S1Stage {
    /// Waiting for `Enc(β)` of the next linear layer.
    AwaitInputs,
    /// Waiting for a hidden round's corrections (and the next `Enc(β)`):
    /// `g1` is S1's share of `g` by neuron, `order` S2's order of `s`.
    AwaitRound { g1: Vec<u128>, order: Vec<u32> },
    /// Waiting for the output round's corrections.
    AwaitOutput { g1: Vec<u128> },
    /// Waiting for S2's confirmation.
    AwaitReady,
    Done,
}

/// S1's half of one session on the full lattice path.
pub struct FullS1<R: Ring> {
    model: Arc<FullModel>,
    online: Arc<OnlineModel<R>>,
    mode: OutputMode,
    session_id: SessionId,
    rng: ChaCha20Rng,
    hidden: Vec<HiddenBlinding<R>>,
    output: Option<OutputBlinding<R>>,
    ole: OleReceiver,
    /// Sent with the first step.
    ole_request: Option<OleRequest>,
    next_layer: usize,
    next_round: usize,
    /// S1's share of the current layer input's mask, by neuron.
    alpha: Zeroizing<Vec<u128>>,
    /// S2's order of its share: S2's index `q` holds neuron `order[q]`.
    order: Vec<u32>,
    /// `X` of the round just completed, sent with the next step.
    pending_x: Vec<u128>,
    stage: S1Stage,
}

impl<R: Ring> FullS1<R> {
    /// Draws every round's blinding (the same distributions as the
    /// Paillier engine, `μ` uniform in the whole ring) and the session's
    /// OT-extension request.
    pub(crate) fn start<G: RngCore + CryptoRng + ?Sized>(
        model: Arc<FullModel>,
        online: Arc<OnlineModel<R>>,
        mode: OutputMode,
        session_id: SessionId,
        rng: &mut G,
    ) -> Result<Self> {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        let mut rng = ChaCha20Rng::from_seed(s);
        let layers = &online.model().layers;
        let mut hidden = Vec::new();
        let mut width = online.model().input_len();
        let mut batches = Vec::new();
        for l in layers.iter() {
            match l {
                QLayer::Linear(l) => width = l.out_dim,
                QLayer::Activation { kind, keep, .. } => {
                    let n = width - keep;
                    let b = HiddenSecrets::<R>::draw(*kind, n, R::BITS, &mut rng);
                    let perm = b.secrets.perm();
                    let t: Vec<u128> = perm.iter().map(|&j| (b.t[j as usize] + (1i64 << TAU)) as u128).collect();
                    let neg: Vec<u128> = perm.iter().map(|&j| b.secrets.negative(j as usize) as u128).collect();
                    batches.push(ScalarBatch { bits: TAU + 1, scalars: t });
                    match kind {
                        ActivationKind::Relu => {
                            let m: Vec<u128> = perm.iter().map(|&j| b.t[j as usize].unsigned_abs() as u128).collect();
                            batches.push(ScalarBatch { bits: 1, scalars: neg });
                            batches.push(ScalarBatch { bits: TAU, scalars: m });
                        }
                        _ => batches.push(ScalarBatch { bits: 1, scalars: neg }),
                    }
                    hidden.push(b);
                }
            }
        }
        let n_out = width;
        let output = OutputSecrets::<R>::draw(mode, n_out, R::BITS, &mut rng);
        let bits = output_bits(mode, n_out);
        if bits > 0 {
            let a = (output.t + (1i128 << (bits - 1))) as u128;
            batches.push(ScalarBatch { bits, scalars: vec![a; n_out] });
        }
        let (ole, req) = tandem_ot::receiver_extend(&model.ot, &session_id, &batches)
            .map_err(|e| ProtocolError::Malformed(format!("OT extension: {e}")))?;
        let d = online.model().input_len();
        Ok(FullS1 {
            model,
            online,
            mode,
            session_id,
            rng,
            hidden,
            output: Some(output),
            ole,
            ole_request: Some(req),
            next_layer: 0,
            next_round: 0,
            alpha: Zeroizing::new(vec![0u128; d]),
            order: (0..d as u32).collect(),
            pending_x: Vec::new(),
            stage: S1Stage::AwaitInputs,
        })
    }

    /// The order S2 will hold the outputs of linear layer `l` in.
    fn out_order(&self, l: usize, out_dim: usize) -> Vec<u32> {
        match self.online.model().layers.get(l + 1) {
            Some(QLayer::Activation { keep, .. }) => {
                let perm = self.hidden[self.next_round].secrets.perm();
                (0..*keep as u32).chain(perm.iter().map(|&j| *keep as u32 + j)).collect()
            }
            Some(QLayer::Linear(_)) => (0..out_dim as u32).collect(),
            None => self.output.as_ref().expect("drawn at start").secrets.perm().to_vec(),
        }
    }

    /// `Enc(β)` of the next linear layer → its products.
    pub(crate) fn on_inputs(&mut self, cts: &[tandem_lattice::SeededCiphertext]) -> Result<FullStep> {
        let S1Stage::AwaitInputs = self.stage else {
            return Err(ProtocolError::OutOfOrder { got: "RLWE input masks" });
        };
        let online = self.online.clone();
        let layers = &online.model().layers;
        let Some(QLayer::Linear(l)) = layers.get(self.next_layer) else {
            return Err(ProtocolError::OutOfOrder { got: "RLWE input masks where no linear layer follows" });
        };
        let out_order = self.out_order(self.next_layer, l.out_dim);
        let mut pos_of = vec![0usize; l.out_dim];
        for (q, &j) in out_order.iter().enumerate() {
            pos_of[j as usize] = q;
        }
        let mut col_of = vec![0usize; l.in_dim];
        for (c, &i) in self.order.iter().enumerate() {
            col_of[i as usize] = c;
        }
        // W' = P_out·W·P_in: row q is neuron out_order[q], column c holds
        // S2's β_c, the mask of neuron order[c].
        let mut dense = Zeroizing::new(vec![0i64; l.out_dim * l.in_dim]);
        for (j, row) in l.rows.iter().enumerate() {
            let q = pos_of[j];
            for &(i, w) in row {
                dense[q * l.in_dim + col_of[i as usize]] = w;
            }
        }
        let ctx = &self.model.ctx;
        let weights = EncodedWeights::new(ctx, &dense, l.out_dim, l.in_dim).map_err(lattice_error)?;
        drop(dense);
        let mu_a: Zeroizing<Vec<u128>> = Zeroizing::new((0..l.out_dim).map(|_| random_u128(&mut self.rng)).collect());
        let products =
            tandem_lattice::linear_layer(&self.model.pk, &weights, cts, &mu_a, &mut self.rng).map_err(lattice_error)?;
        // S1's share of g = W·δ: W·α − μ_a (by neuron).
        let g1: Vec<u128> = l
            .rows
            .iter()
            .enumerate()
            .map(|(j, row)| {
                let wa = row.iter().fold(0u128, |acc, &(i, w)| acc.wrapping_add((w as i128 as u128).wrapping_mul(self.alpha[i as usize])));
                wa.wrapping_sub(mu_a[pos_of[j]])
            })
            .collect();
        self.next_layer += 1;
        let next = match layers.get(self.next_layer) {
            Some(QLayer::Linear(next)) => {
                self.alpha = Zeroizing::new(g1);
                self.order = out_order;
                self.stage = S1Stage::AwaitInputs;
                Next::Linear { outputs: next.out_dim as u32 }
            }
            Some(QLayer::Activation { kind, scale, keep, .. }) => {
                let Some(QLayer::Linear(after)) = layers.get(self.next_layer + 1) else {
                    return Err(ProtocolError::Malformed("an activation not followed by a linear layer".into()));
                };
                self.stage = S1Stage::AwaitRound { g1, order: out_order };
                Next::Round { kind: *kind, scale: *scale, keep: *keep as u32, next_outputs: after.out_dim as u32 }
            }
            None => {
                self.stage = S1Stage::AwaitOutput { g1 };
                Next::Output { mode: self.mode, scale: online.model().output_scale() }
            }
        };
        Ok(FullStep {
            ole: self.ole_request.take(),
            x: std::mem::take(&mut self.pending_x),
            products,
            next: Some(next),
        })
    }

    /// A hidden round's corrections and the next layer's `Enc(β)` → `X`
    /// of the round and the next layer's products.
    pub(crate) fn on_round(&mut self, reply: FullReply) -> Result<FullStep> {
        let S1Stage::AwaitRound { .. } = self.stage else {
            return Err(ProtocolError::OutOfOrder { got: "a round's OT corrections" });
        };
        let S1Stage::AwaitRound { g1, order } = std::mem::replace(&mut self.stage, S1Stage::Done) else {
            unreachable!("checked above")
        };
        let QLayer::Activation { kind, keep, .. } = &self.online.model().layers[self.next_layer] else {
            return Err(ProtocolError::OutOfOrder { got: "a round's OT corrections" });
        };
        let (kind, keep) = (*kind, *keep);
        let expected = if kind == ActivationKind::Relu { 3 } else { 2 };
        if reply.corrections.len() != expected {
            return Err(ProtocolError::LengthMismatch {
                field: "OT correction batches",
                expected,
                got: reply.corrections.len(),
            });
        }
        let ot = |e: tandem_ot::Error| ProtocolError::Malformed(format!("OT corrections: {e}"));
        let x1 = Zeroizing::new(self.ole.receive(&reply.corrections[0]).map_err(ot)?);
        let x2 = Zeroizing::new(self.ole.receive(&reply.corrections[1]).map_err(ot)?);
        let x3 = if kind == ActivationKind::Relu {
            Some(Zeroizing::new(self.ole.receive(&reply.corrections[2]).map_err(ot)?))
        } else {
            None
        };
        let b = &mut self.hidden[self.next_round];
        let perm = b.secrets.perm().to_vec();
        let n = perm.len();
        let mut alpha = vec![0u128; keep + n];
        alpha[..keep].copy_from_slice(&g1[..keep]);
        let mut x = Vec::with_capacity(n);
        for (p, &j) in perm.iter().enumerate() {
            let j = j as usize;
            let gj = g1[keep + j];
            let t = b.t[j] as i128 as u128;
            let mu = to_u128_big(&b.mu[j]);
            x.push(x1[p].wrapping_add(t.wrapping_mul(gj)).wrapping_add(mu));
            let neg = b.secrets.negative(j);
            alpha[keep + j] = match &x3 {
                // δ_j = λ_p + [σ_j = −1]·g_j: S1's part of g_j and of b_j·s_p.
                Some(_) => x2[p].wrapping_add(if neg { gj } else { 0 }),
                // δ_j = σ_j·λ_p = λ_p − 2[σ_j = −1]·λ_p.
                None => x2[p].wrapping_neg(),
            };
        }
        if let Some(x3) = &x3 {
            b.secrets.set_offset(x3.iter().map(|&v| ring_of::<R>(v)).collect())?;
        }
        self.alpha = Zeroizing::new(alpha);
        self.order = order;
        self.pending_x = x;
        self.next_layer += 1;
        self.next_round += 1;
        self.stage = S1Stage::AwaitInputs;
        self.on_inputs(&reply.inputs)
    }

    /// The output round's corrections → its `X` (the last step).
    pub(crate) fn on_output(&mut self, reply: FullReply) -> Result<FullStep> {
        let S1Stage::AwaitOutput { .. } = self.stage else {
            return Err(ProtocolError::OutOfOrder { got: "the output round's OT corrections" });
        };
        let S1Stage::AwaitOutput { g1 } = std::mem::replace(&mut self.stage, S1Stage::AwaitReady) else {
            unreachable!("checked above")
        };
        let out = self.output.as_ref().expect("drawn at start");
        let n = g1.len();
        let bits = output_bits(self.mode, n);
        let expected = usize::from(bits > 0);
        if reply.corrections.len() != expected || !reply.inputs.is_empty() {
            return Err(ProtocolError::LengthMismatch {
                field: "output-round OT correction batches",
                expected,
                got: reply.corrections.len(),
            });
        }
        let xs = match reply.corrections.first() {
            Some(c) => Zeroizing::new(
                self.ole.receive(c).map_err(|e| ProtocolError::Malformed(format!("OT corrections: {e}")))?,
            ),
            None => Zeroizing::new(vec![0u128; n]),
        };
        if !self.ole.is_done() {
            return Err(ProtocolError::Malformed("OT corrections missing for some multiplications".into()));
        }
        let t = out.t as u128;
        let x = out
            .secrets
            .perm()
            .iter()
            .enumerate()
            .map(|(p, &j)| {
                let j = j as usize;
                xs[p].wrapping_add(t.wrapping_mul(g1[j])).wrapping_add(to_u128_big(&out.mu[j]))
            })
            .collect();
        Ok(FullStep { ole: None, x, products: Vec::new(), next: None })
    }

    /// S2 stored its half: S1's half is ready.
    pub(crate) fn on_ready(&mut self) -> Result<Prepared<R>> {
        let S1Stage::AwaitReady = self.stage else {
            return Err(ProtocolError::OutOfOrder { got: "session-ready" });
        };
        self.stage = S1Stage::Done;
        let rounds = std::mem::take(&mut self.hidden).into_iter().map(|b| b.secrets).collect();
        let output = self.output.take().expect("drawn at start").secrets;
        Ok(Prepared::new(self.online.clone(), self.mode, self.session_id, rounds, output))
    }

    /// Whether S1 waits for the next layer's `Enc(β)`.
    pub(crate) fn awaits_inputs(&self) -> bool {
        matches!(self.stage, S1Stage::AwaitInputs)
    }
    /// Whether S1 waits for a hidden round's corrections.
    pub(crate) fn awaits_round(&self) -> bool {
        matches!(self.stage, S1Stage::AwaitRound { .. })
    }
    /// Whether S1 waits for the output round's corrections.
    pub(crate) fn awaits_output(&self) -> bool {
        matches!(self.stage, S1Stage::AwaitOutput { .. })
    }
}

enum S2Stage {
    /// Waiting for the products of a layer with this layout.
    AwaitProducts(Layout),
    Done,
}

/// What S2 keeps of a round until S1's `X` arrives.
enum PendingRound<R: Ring> {
    Hidden { kind: ActivationKind, scale: u32, y1: Zeroizing<Vec<u128>>, s: Zeroizing<Vec<u128>>, rho: Vec<R> },
    Output { mode: OutputMode, scale: u32, bits: u32, y: Zeroizing<Vec<u128>>, s: Zeroizing<Vec<u128>> },
}

/// S2's half of one session on the full lattice path.
pub struct FullS2<R: Ring> {
    sk: Arc<LatticeSecret>,
    ot: Arc<OtSenderKey>,
    ole: Option<OleSender>,
    session: Option<ActivationSession<R>>,
    rng: ChaCha20Rng,
    stage: S2Stage,
    pending: Option<PendingRound<R>>,
}

/// S2's RLWE secret key, shared by its sessions.
pub(crate) type LatticeSecret = tandem_lattice::SecretKey;

/// S2 opens a session: the public checks, then `r` from the seed,
/// RLWE-encrypted for the first layer.
pub(crate) fn s2_open<R: Ring, G: RngCore + CryptoRng + ?Sized>(
    sk: Arc<LatticeSecret>,
    ot: Arc<OtSenderKey>,
    msg: &SessionStart,
    seed: Seed,
    rng: &mut G,
) -> Result<(FullS2<R>, Vec<tandem_lattice::SeededCiphertext>)> {
    let ctx = sk.context().clone();
    if R::BITS != 128 {
        return Err(ProtocolError::Malformed(format!("the lattice engine needs the ring k = 128, not {}", R::BITS)));
    }
    let layout = checked_layout(&ctx, msg.input_len as usize, msg.first_layer_outputs as usize)?;
    let r: Zeroizing<Vec<u128>> =
        Zeroizing::new(seed.input_mask::<R>(msg.input_len as usize, msg.input_mask_bits).into_iter().map(u128_of).collect());
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    let mut own = ChaCha20Rng::from_seed(s);
    let session = ActivationSession::new(seed, msg.session_id, &mut own);
    let cts = tandem_lattice::encrypt_vector(&sk, &layout, &r, &mut own).map_err(lattice_error)?;
    Ok((
        FullS2 { sk, ot, ole: None, session: Some(session), rng: own, stage: S2Stage::AwaitProducts(layout), pending: None },
        cts,
    ))
}

fn checked_layout(ctx: &Context, n_in: usize, n_out: usize) -> Result<Layout> {
    let layout = Layout::new(ctx, n_in, n_out).map_err(lattice_error)?;
    if layout.bytes_s2_to_s1(ctx).max(layout.bytes_s1_to_s2(ctx)) > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::Malformed(format!(
            "a {n_out}×{n_in} layer is above the lattice engine's {MAX_MESSAGE_BYTES}-B bound per message"
        )));
    }
    Ok(layout)
}

/// What S2 answers a step with.
pub(crate) enum S2Answer<R: Ring> {
    /// Corrections and/or the next layer's `Enc(β)`.
    Reply(FullReply),
    /// The session is complete.
    Ready(Box<ActivationSession<R>>),
}

impl<R: Ring> FullS2<R> {
    /// The layout of the products S2 waits for, if it waits for some.
    pub(crate) fn awaiting_layout(&self) -> Option<Layout> {
        match &self.stage {
            S2Stage::AwaitProducts(l) => Some(*l),
            S2Stage::Done => None,
        }
    }

    /// One step of S1's.
    pub(crate) fn on_step(&mut self, step: FullStep, sid: &SessionId) -> Result<S2Answer<R>> {
        let ot_err = |e: tandem_ot::Error| ProtocolError::Malformed(format!("OT: {e}"));
        match (step.ole, &self.ole) {
            (Some(req), None) => self.ole = Some(tandem_ot::sender_extend(&self.ot, sid, &req).map_err(ot_err)?),
            (None, Some(_)) => {}
            (Some(_), Some(_)) => return Err(ProtocolError::OutOfOrder { got: "a second OT-extension request" }),
            (None, None) => return Err(ProtocolError::OutOfOrder { got: "a step before the OT-extension request" }),
        }
        // 1. The previous round's X → c.
        match self.pending.take() {
            Some(PendingRound::Hidden { kind, scale, y1, s, rho }) => {
                if step.x.len() != s.len() {
                    return Err(ProtocolError::LengthMismatch { field: "X values", expected: s.len(), got: step.x.len() });
                }
                let off = 1u128 << TAU;
                let c = step
                    .x
                    .iter()
                    .zip(y1.iter())
                    .zip(s.iter())
                    .map(|((&x, &y), &s)| ring_of::<R>(x.wrapping_add(y).wrapping_sub(off.wrapping_mul(s))))
                    .collect();
                self.session()?.push_round(kind, scale, c, rho)?;
            }
            Some(PendingRound::Output { mode, scale, bits, y, s }) => {
                if step.x.len() != s.len() {
                    return Err(ProtocolError::LengthMismatch { field: "X values", expected: s.len(), got: step.x.len() });
                }
                let c = step
                    .x
                    .iter()
                    .zip(y.iter())
                    .zip(s.iter())
                    .map(|((&x, &y), &s)| {
                        let v = if bits == 0 {
                            x.wrapping_add(s)
                        } else {
                            x.wrapping_add(y).wrapping_sub((1u128 << (bits - 1)).wrapping_mul(s))
                        };
                        ring_of::<R>(v)
                    })
                    .collect();
                if !step.products.is_empty() || step.next.is_some() {
                    return Err(ProtocolError::OutOfOrder { got: "products after the output round" });
                }
                let remaining = self.ole.as_ref().map_or(0, |o| o.remaining_ots());
                if remaining != 0 {
                    return Err(ProtocolError::Malformed(format!("{remaining} OTs of the session were never used")));
                }
                let mut session = self.session.take().ok_or(ProtocolError::OutOfOrder { got: "a step after the output" })?;
                session.set_output(mode, scale, c)?;
                self.stage = S2Stage::Done;
                return Ok(S2Answer::Ready(Box::new(session)));
            }
            None if !step.x.is_empty() => {
                return Err(ProtocolError::LengthMismatch { field: "X values", expected: 0, got: step.x.len() })
            }
            None => {}
        }
        // 2. The products → s.
        let S2Stage::AwaitProducts(layout) = std::mem::replace(&mut self.stage, S2Stage::Done) else {
            return Err(ProtocolError::OutOfOrder { got: "RLWE products" });
        };
        let s: Zeroizing<Vec<u128>> =
            Zeroizing::new(tandem_lattice::decrypt_outputs(&self.sk, &layout, &step.products).map_err(lattice_error)?);
        let ctx = self.sk.context().clone();
        let Some(next) = step.next else {
            return Err(ProtocolError::OutOfOrder { got: "products with nothing after them" });
        };
        let ole = self.ole.as_mut().expect("checked above");
        match next {
            Next::Linear { outputs } => {
                let layout = checked_layout(&ctx, s.len(), outputs as usize)?;
                let inputs = tandem_lattice::encrypt_vector(&self.sk, &layout, &s, &mut self.rng).map_err(lattice_error)?;
                self.stage = S2Stage::AwaitProducts(layout);
                Ok(S2Answer::Reply(FullReply { corrections: Vec::new(), inputs }))
            }
            Next::Round { kind, scale, keep, next_outputs } => {
                let keep = keep as usize;
                if keep >= s.len() {
                    return Err(ProtocolError::Malformed(format!("keep {keep} leaves no values of {} for the round", s.len())));
                }
                let sp: Zeroizing<Vec<u128>> = Zeroizing::new(s[keep..].to_vec());
                let n = sp.len();
                let lambda: Zeroizing<Vec<u128>> = Zeroizing::new((0..n).map(|_| random_u128(&mut self.rng)).collect());
                let (y1, c1) = ole.respond(TAU + 1, &sp).map_err(ot_err)?;
                let mut beta: Zeroizing<Vec<u128>> = Zeroizing::new(s[..keep].to_vec());
                let (rho, corrections): (Vec<R>, _) = if kind == ActivationKind::Relu {
                    // β_p = λ_p + (S2's share of [σ_j = −1]·s_p); ρ_p is
                    // S2's share of m_j·λ_p.
                    let (y2, c2) = ole.respond(1, &sp).map_err(ot_err)?;
                    let (y3, c3) = ole.respond(TAU, &lambda).map_err(ot_err)?;
                    beta.extend(lambda.iter().zip(&y2).map(|(&l, &y)| l.wrapping_add(y)));
                    (y3.iter().map(|&v| ring_of::<R>(v)).collect(), vec![c1, c2, c3])
                } else {
                    // ρ_p = λ_p; δ_j = σ_j·λ_p = λ_p − 2[σ_j = −1]·λ_p, S2's
                    // share λ_p − y with x + y = [σ_j = −1]·2λ_p.
                    let two: Zeroizing<Vec<u128>> = Zeroizing::new(lambda.iter().map(|&l| l.wrapping_mul(2)).collect());
                    let (y2, c2) = ole.respond(1, &two).map_err(ot_err)?;
                    beta.extend(lambda.iter().zip(&y2).map(|(&l, &y)| l.wrapping_sub(y)));
                    (lambda.iter().map(|&v| ring_of::<R>(v)).collect(), vec![c1, c2])
                };
                let layout = checked_layout(&ctx, beta.len(), next_outputs as usize)?;
                let inputs = tandem_lattice::encrypt_vector(&self.sk, &layout, &beta, &mut self.rng).map_err(lattice_error)?;
                self.stage = S2Stage::AwaitProducts(layout);
                self.pending = Some(PendingRound::Hidden { kind, scale, y1: Zeroizing::new(y1), s: sp, rho });
                Ok(S2Answer::Reply(FullReply { corrections, inputs }))
            }
            Next::Output { mode, scale } => {
                let bits = output_bits(mode, s.len());
                let (y, corrections) = if bits > 0 {
                    let (y, c) = ole.respond(bits, &s).map_err(ot_err)?;
                    (y, vec![c])
                } else {
                    (vec![0u128; s.len()], Vec::new())
                };
                self.pending = Some(PendingRound::Output { mode, scale, bits, y: Zeroizing::new(y), s });
                Ok(S2Answer::Reply(FullReply { corrections, inputs: Vec::new() }))
            }
        }
    }

    fn session(&mut self) -> Result<&mut ActivationSession<R>> {
        self.session.as_mut().ok_or(ProtocolError::OutOfOrder { got: "a step after the output round" })
    }
}
