//! S1's Paillier preprocessing (PROTOCOL §4.2, §4.4, §4.5, §4.7, §4.8's
//! homomorphic columns): `W·[D]`, the blinding `C = t·g + μ`, packing, and
//! the new `[D]` from S2's `[ρ]`. None of it depends on the client's input,
//! so it runs ahead of time; it ends in the core's [`Prepared`] session,
//! which holds only S1's blinding secrets in the ring.
//!
//! The blinding secrets are drawn by the core (`HiddenSecrets::draw`,
//! `OutputSecrets::draw`) from a ChaCha20 CSPRNG seeded from the caller's
//! CSPRNG for each session; the integers they blind with never leave this
//! state machine.

use crate::convert::gmp_from_ring;
use crate::matvec::MatvecPlan;
use crate::messages::*;
use crate::packing::pack;
use crate::paillier::{Ciphertext, PublicKey};
use crate::plan::Plan;
use crate::{bigint_from_biguint, bigint_from_i128, bigint_from_i64, BigInt};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use std::sync::Arc;
use tandem_core::online::{HiddenSecrets, OnlineModel, OutputSecrets};
use tandem_core::{EncryptedSeed, Prepared, ProtocolError, Result, Ring, SeedSource, SessionId, SessionStart};
use tandem_model::{ActivationKind, OutputMode, QLayer, QuantizedModel};

struct Shared<R> {
    online: Arc<OnlineModel<R>>,
    pk: PublicKey,
    plan: Plan,
    /// How each linear layer's `W·[D]` is computed, chosen once per model
    /// (`None` for activation layers).
    matvec: Vec<Option<MatvecPlan>>,
    pool: Arc<rayon::ThreadPool>,
}

/// S1 for one model whose ring is `R`, with S2's Paillier key.
pub struct ModelServer<R: Ring> {
    shared: Arc<Shared<R>>,
}

impl<R: Ring> Clone for ModelServer<R> {
    fn clone(&self) -> Self {
        ModelServer { shared: self.shared.clone() }
    }
}

impl<R: Ring> ModelServer<R> {
    /// Checks the ring and the homomorphic bit budget for S2's key; heavy
    /// steps will run on `pool`.
    pub fn new(model: Arc<QuantizedModel>, pk: PublicKey, pool: Arc<rayon::ThreadPool>) -> Result<Self> {
        Self::with_first_product(model, pk, pool, None)
    }

    /// [`ModelServer::new`] for an engine that supplies the first linear
    /// layer's `[g]` itself ([`Preprocessing::on_first_product`]), with
    /// `|g| < 2^{first_g_bits}`; `None` is [`ModelServer::new`].
    pub fn with_first_product(
        model: Arc<QuantizedModel>,
        pk: PublicKey,
        pool: Arc<rayon::ThreadPool>,
        first_g_bits: Option<u32>,
    ) -> Result<Self> {
        let online = Arc::new(OnlineModel::<R>::new(model.clone())?);
        if first_g_bits.is_some() && !matches!(model.layers.first(), Some(QLayer::Linear(_))) {
            return Err(ProtocolError::Malformed("the first layer's product needs a linear first layer".into()));
        }
        let plan = Plan::with_first_product(&model, pk.bits(), first_g_bits)?;
        let matvec = model
            .layers
            .iter()
            .map(|l| match l {
                QLayer::Linear(l) => Some(MatvecPlan::new(&l.rows, l.in_dim, pk.ciphertext_bytes())),
                _ => None,
            })
            .collect();
        Ok(ModelServer { shared: Arc::new(Shared { online, pk, plan, matvec, pool }) })
    }

    /// The quantized model.
    pub fn model(&self) -> &QuantizedModel {
        self.shared.online.model()
    }
    /// The ring form of the model (the online phase's).
    pub fn online_model(&self) -> &Arc<OnlineModel<R>> {
        &self.shared.online
    }
    /// S2's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.shared.pk
    }
    /// The homomorphic bit budget and packing layouts.
    pub fn plan(&self) -> &Plan {
        &self.shared.plan
    }

    /// Checks a client's masked input before any work is spent on it.
    pub fn check_input(&self, masked_input: &[R]) -> Result<()> {
        self.shared.online.check_input(masked_input)
    }

    /// Opens a session with S2 for one future query in `mode` (§4.0, §4.2).
    pub fn start_preprocessing<G: RngCore + CryptoRng + ?Sized>(
        &self,
        mode: OutputMode,
        seed: &SeedSource,
        rng: &mut G,
    ) -> Result<(Preprocessing<R>, SessionStart)> {
        let sh = &self.shared;
        sh.online.model().check_mode(mode)?;
        let enc = match seed {
            SeedSource::Encrypted { enc_seed, .. } => Some(sh.pk.ciphertext_from_bytes(&enc_seed.0)?),
            SeedSource::Session { .. } => None,
        };
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        let mut rng = ChaCha20Rng::from_seed(s);
        let mut session_id = [0u8; 16];
        rng.fill_bytes(&mut session_id);
        let seed = match (enc, seed) {
            // Rerandomized like every ciphertext S1 sends S2, so S2 cannot
            // link the session to the client's ciphertext; full-size noise,
            // as for everything sent toward the key holder.
            (Some(enc), SeedSource::Encrypted { epoch, .. }) => {
                let rerandomized = sh.pk.rerandomize_full(&enc, &mut rng);
                SeedSource::Encrypted { enc_seed: EncryptedSeed(sh.pk.ciphertext_to_bytes(&rerandomized)), epoch: *epoch }
            }
            // A seed session's id and counter are public; nothing to hide.
            (_, other) => other.clone(),
        };
        let start = SessionStart {
            session_id,
            seed,
            input_len: sh.online.model().input_len() as u32,
            ring_bits: R::BITS,
            input_mask_bits: sh.plan.input_masking.mask_bits,
            first_layer_outputs: 0,
            ot_setup: None,
        };
        let p = Preprocessing {
            shared: sh.clone(),
            mode,
            session_id,
            rng,
            next_layer: 0,
            d: Vec::new(),
            rounds: Vec::new(),
            stage: PreprocessingStage::AwaitMasks,
        };
        Ok((p, start))
    }
}

enum PreprocessingStage<R: Ring> {
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
    stage: PreprocessingStage<R>,
}

impl<R: Ring> Preprocessing<R> {
    /// The session id S1 chose.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    /// The output mode being preprocessed.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// §4.2 → first round: S2's `[r]`.
    pub fn on_input_masks(&mut self, msg: InputMasks) -> Result<PreprocessingStep> {
        if !matches!(self.stage, PreprocessingStage::AwaitMasks) {
            return Err(ProtocolError::OutOfOrder { got: "input masks" });
        }
        let d = self.shared.online.model().input_len();
        if msg.enc_r.len() != d {
            return Err(ProtocolError::LengthMismatch {
                field: "input-mask ciphertexts",
                expected: d,
                got: msg.enc_r.len(),
            });
        }
        self.d = msg.enc_r;
        let pool = self.shared.pool.clone();
        pool.install(|| self.advance())
    }

    /// The first linear layer's `[g]` computed by another engine (the
    /// lattice engine's `W·r + μ'`, decrypted by S2 and re-encrypted under
    /// Paillier as `[s_j]`): `[g_j] = [s_j]·[−μ'_j]`, so `g_j ≡ (W·r)_j
    /// (mod 2^k)`. Replaces [`Preprocessing::on_input_masks`]; the
    /// [`ModelServer`] must have been built with
    /// [`ModelServer::with_first_product`].
    pub fn on_first_product(&mut self, enc_s: Vec<Ciphertext>, neg_mu: &[BigInt]) -> Result<PreprocessingStep> {
        if !matches!(self.stage, PreprocessingStage::AwaitMasks) {
            return Err(ProtocolError::OutOfOrder { got: "first-layer products" });
        }
        let n = match self.shared.online.model().layers.first() {
            Some(QLayer::Linear(l)) => l.out_dim,
            _ => return Err(ProtocolError::OutOfOrder { got: "first-layer products for a model without one" }),
        };
        for (field, got) in [("first-layer product ciphertexts", enc_s.len()), ("first-layer masks", neg_mu.len())] {
            if got != n {
                return Err(ProtocolError::LengthMismatch { field, expected: n, got });
            }
        }
        let pk = &self.shared.pk;
        self.d = self.shared.pool.install(|| enc_s.par_iter().zip(neg_mu).map(|(c, m)| pk.add_plain(c, m)).collect());
        self.next_layer = 1;
        let pool = self.shared.pool.clone();
        pool.install(|| self.advance())
    }

    /// S2's `[ρ]` for the last hidden round → the next layer's `[D]` (§4.7).
    pub fn on_rho_masks(&mut self, msg: RhoMasks) -> Result<PreprocessingStep> {
        if !matches!(self.stage, PreprocessingStage::AwaitRho { .. }) {
            return Err(ProtocolError::OutOfOrder { got: "ρ masks" });
        }
        let sec = self.rounds.last().expect("a round is pending");
        let n = sec.len();
        if msg.enc_rho.len() != n {
            return Err(ProtocolError::LengthMismatch { field: "ρ ciphertexts", expected: n, got: msg.enc_rho.len() });
        }
        let PreprocessingStage::AwaitRho { g } = std::mem::replace(&mut self.stage, PreprocessingStage::Done) else {
            unreachable!("checked above")
        };
        let pk = &self.shared.pk;
        let new_d: Vec<(usize, Ciphertext)> = self.shared.pool.install(|| {
            (0..n)
                .into_par_iter()
                .map(|p| {
                    let j = sec.perm()[p] as usize;
                    let rho = &msg.enc_rho[p];
                    let d = match (sec.kind(), sec.negative(j)) {
                        (ActivationKind::Relu, neg) => {
                            let scaled = if sec.m_inv(j) == R::one() {
                                rho.clone()
                            } else {
                                pk.scalar_mul(rho, &gmp_from_ring(sec.m_inv(j)))
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
                .collect()
        });
        // self.d holds the kept values' [D_j] = [g_j] (§4.9); the
        // activated ones follow them.
        let keep = self.d.len();
        self.d.resize(keep + n, Ciphertext::clone(&msg.enc_rho[0]));
        for (j, c) in new_d {
            self.d[keep + j] = c;
        }
        self.next_layer += 1;
        let pool = self.shared.pool.clone();
        pool.install(|| self.advance())
    }

    /// S2 has stored its half of the session: S1's half is ready too.
    pub fn on_ready(mut self, msg: SessionReady) -> Result<Prepared<R>> {
        self.take_ready(msg)
    }

    /// [`Preprocessing::on_ready`] for a state machine held by reference.
    pub(crate) fn take_ready(&mut self, _: SessionReady) -> Result<Prepared<R>> {
        if !matches!(self.stage, PreprocessingStage::AwaitReady(_)) {
            return Err(ProtocolError::OutOfOrder { got: "session-ready" });
        }
        let PreprocessingStage::AwaitReady(output) = std::mem::replace(&mut self.stage, PreprocessingStage::Done)
        else {
            unreachable!("checked above")
        };
        let rounds = std::mem::take(&mut self.rounds);
        Ok(Prepared::new(self.shared.online.clone(), self.mode, self.session_id, rounds, output))
    }

    /// Applies linear layers homomorphically (§4.4) until an activation or the end.
    fn advance(&mut self) -> Result<PreprocessingStep> {
        let sh = self.shared.clone();
        let layers = &sh.online.model().layers;
        while self.next_layer < layers.len() {
            match &layers[self.next_layer] {
                QLayer::Linear(_) => {
                    // [g] = W·[D]: the expensive part of a query.
                    let plan = sh.matvec[self.next_layer].as_ref().expect("a plan per linear layer");
                    self.d = plan.apply(&sh.pk, &self.d);
                    self.next_layer += 1;
                }
                layer @ QLayer::Activation { kind, scale, .. } => {
                    let keep = tandem_core::online::round_keep(layer);
                    return Ok(PreprocessingStep::Round(self.hidden_round(*kind, *scale, keep)));
                }
            }
        }
        Ok(PreprocessingStep::Output(self.output_round()))
    }

    /// §4.5: draw one hidden layer's blinding and send `C` to S2.
    /// The first `keep` values skip the round (§4.9): their `[D]` stays in
    /// `self.d` until S2's `[ρ]` arrive.
    fn hidden_round(&mut self, kind: ActivationKind, scale: u32, keep: usize) -> BlindedRound {
        let sh = self.shared.clone();
        let packing = sh.plan.hidden_packing[self.rounds.len()];
        let g = self.d.split_off(keep);
        let kept = std::mem::replace(&mut self.d, g);
        let n = self.d.len();
        let b = HiddenSecrets::<R>::draw(kind, n, packing.offset_bits + tandem_model::KAPPA, &mut self.rng);
        let mu: Vec<BigInt> = b.mu.iter().map(bigint_from_biguint).collect();
        let t = b.t;
        let packed = self.blind(b.secrets.perm(), &mu, &packing, |j| bigint_from_i64(t[j]));
        let g = std::mem::replace(&mut self.d, kept);
        self.rounds.push(b.secrets);
        self.stage = PreprocessingStage::AwaitRho { g };
        BlindedRound { kind, scale, count: n as u32, packing, packed }
    }

    /// For position `p` (neuron `j = perm[p]`): `C_p = [g_j]^{t(j)}·g^{μ_j}`,
    /// packed and rerandomized.
    fn blind(
        &mut self,
        perm: &[u32],
        mu: &[BigInt],
        packing: &crate::packing::PackingParams,
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
        pack(&sh.pk, packing, &c, &mut self.rng)
    }

    /// §4.8: the output round's blinding for this session's mode.
    fn output_round(&mut self) -> BlindedOutput {
        let sh = self.shared.clone();
        let n = self.d.len();
        let packing = sh.plan.output_packing(self.mode).expect("mode checked at start");
        let scale = sh.online.model().output_scale();
        let b = OutputSecrets::<R>::draw(self.mode, n, packing.offset_bits + tandem_model::KAPPA, &mut self.rng);
        let mu: Vec<BigInt> = b.mu.iter().map(bigint_from_biguint).collect();
        let t = bigint_from_i128(b.t);
        let packed = self.blind(b.secrets.perm(), &mu, &packing, |_| t.clone());
        self.stage = PreprocessingStage::AwaitReady(b.secrets);
        BlindedOutput { mode: self.mode, scale, count: n as u32, packing, packed }
    }
}
