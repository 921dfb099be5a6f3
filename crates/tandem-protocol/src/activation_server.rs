//! S2, the activation server (PROTOCOL §4.2, §4.6, §4.8 "S2" columns, §6).
//!
//! `ActivationServer` holds the key pair and the replay set; each query is an
//! `ActivationSession` that S1 drives, first through preprocessing, then
//! online. `finish` consumes the session, so a session seals at most once.

use crate::convert::{gmp_from_ring, ring_from_gmp, signed_num};
use crate::error::{ProtocolError, Result};
use crate::messages::*;
use crate::replay::ReplayLog;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use std::sync::Arc;
use tandem_crypto::packing::{unpack, PackingParams};
use tandem_crypto::{BigInt, Ciphertext, NoiseSource, PublicKey, Ring, SecretKey, Seed, SeedEpoch};
use tandem_model::activation::{argmax_first, sigmoid_fixed, softmax_fixed, tanh_fixed};
use tandem_model::{ActivationKind, OutputMode, F_ACT};

/// Largest layer / input S2 serves; anything larger is refused before work.
pub const MAX_VALUES_PER_ROUND: usize = 1 << 20;
/// Largest fixed-point scale S2 accepts for sigmoid/tanh/softmax.
pub const MAX_SCALE: u32 = 4096;

/// The key material every session shares.
pub struct ActivationKeys {
    sk: SecretKey,
    noise: NoiseSource,
}

impl ActivationKeys {
    pub fn new(sk: SecretKey) -> Self {
        let noise = sk.noise_source();
        ActivationKeys { sk, noise }
    }
    pub fn public_key(&self) -> &PublicKey {
        self.sk.public()
    }
    pub fn secret_key(&self) -> &SecretKey {
        &self.sk
    }
}

/// S2's long-lived state.
pub struct ActivationServer {
    keys: Arc<ActivationKeys>,
    /// Replay tags of the seeds served, in two bounded epochs.
    replay: ReplayLog,
    rng: ChaCha20Rng,
}

impl ActivationServer {
    pub fn new(sk: SecretKey) -> Self {
        Self::with_replay_bound(sk, crate::replay::DEFAULT_SEEDS_PER_EPOCH)
    }
    /// [`ActivationServer::new`] with `per_epoch` seeds per replay epoch.
    pub fn with_replay_bound(sk: SecretKey, per_epoch: usize) -> Self {
        let mut rng = ChaCha20Rng::from_entropy();
        let replay = ReplayLog::new(per_epoch, &mut rng);
        ActivationServer { keys: Arc::new(ActivationKeys::new(sk)), replay, rng }
    }
    pub fn public_key(&self) -> &PublicKey {
        self.keys.public_key()
    }
    /// The epoch clients must derive their seeds under now.
    pub fn seed_epoch(&self) -> SeedEpoch {
        self.replay.current_epoch()
    }
    pub fn keys(&self) -> &Arc<ActivationKeys> {
        &self.keys
    }
    pub fn seen_seeds(&self) -> usize {
        self.replay.len()
    }

    /// Decrypts the seed, refuses a replay, and returns `[r]` (§4.2).
    pub fn start_session<R: Ring>(&mut self, msg: &SessionStart) -> Result<(ActivationSession<R>, InputMasks)> {
        self.replay.check_epoch(&msg.epoch)?;
        let seed = decrypt_seed::<R>(&self.keys, msg)?;
        self.replay.record(&msg.epoch, seed.replay_tag(), &mut self.rng)?;
        Ok(open_session(self.keys.clone(), msg, seed))
    }
}

/// The part of `start_session` that needs no shared mutable state, so a
/// concurrent server can decrypt outside its lock. Every check here is on
/// S1's public message and comes before the decryption; after it nothing
/// can fail: the seed is a hash of the whole plaintext, whatever it is
/// (PROTOCOL §4.2), so no answer depends on the decrypted value.
pub fn decrypt_seed<R: Ring>(keys: &ActivationKeys, msg: &SessionStart) -> Result<Seed> {
    if msg.ring_bits != R::BITS {
        return Err(ProtocolError::RingMismatch { model: msg.ring_bits, code: R::BITS });
    }
    if msg.input_len == 0 || msg.input_len as usize > MAX_VALUES_PER_ROUND {
        return Err(ProtocolError::BadMessage(format!(
            "input length {} outside 1..={MAX_VALUES_PER_ROUND}",
            msg.input_len
        )));
    }
    let pk = keys.public_key();
    let mut m = keys.sk.decrypt_raw(&msg.enc_seed);
    let seed = Seed::from_plaintext(&msg.epoch, &m, pk.modulus_bytes());
    zeroize::Zeroize::zeroize(&mut m);
    Ok(seed)
}

/// Derives `r` from the seed and encrypts it.
pub fn open_session<R: Ring>(
    keys: Arc<ActivationKeys>,
    msg: &SessionStart,
    seed: Seed,
) -> (ActivationSession<R>, InputMasks) {
    let r: Vec<R> = seed.input_mask(msg.input_len as usize);
    let pk = keys.public_key();
    let enc_r = r.par_iter().map(|&ri| keys.noise.encrypt(pk, &gmp_from_ring(ri))).collect();
    let session = ActivationSession {
        keys,
        seed,
        session_id: msg.session_id,
        rng: ChaCha20Rng::from_entropy(),
        rounds: Vec::new(),
        output: None,
        next_round: 0,
    };
    (session, InputMasks { enc_r })
}

/// One round S2 has preprocessed: what it needs when `e` arrives.
struct RoundState<R> {
    kind: ActivationKind,
    scale: u32,
    /// `c_p = C_p mod 2^k`, decrypted during preprocessing.
    c: Vec<R>,
    /// `ρ_p`, whose encryptions S1 already has.
    rho: Vec<R>,
}

struct OutputState<R> {
    mode: OutputMode,
    scale: u32,
    count: usize,
    c: Vec<R>,
}

/// One query at S2. Preprocessing (`blind_round`, `blind_output`) decrypts
/// S1's packed `C` and draws `ρ`; the online phase (`activate`, `finish`)
/// only subtracts, applies `F` and adds — no Paillier work.
pub struct ActivationSession<R: Ring> {
    keys: Arc<ActivationKeys>,
    seed: Seed,
    session_id: SessionId,
    rng: ChaCha20Rng,
    rounds: Vec<RoundState<R>>,
    output: Option<OutputState<R>>,
    /// Online rounds answered so far.
    next_round: usize,
}

impl<R: Ring> ActivationSession<R> {
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    /// Whether preprocessing is complete (the output round is stored).
    pub fn is_ready(&self) -> bool {
        self.output.is_some()
    }
    /// Hidden rounds preprocessed.
    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    /// Decrypts the packed `C_p` and returns `c_p = C_p mod 2^k`.
    fn open_packed(&self, packing: &PackingParams, packed: &[Ciphertext], count: usize) -> Result<Vec<R>> {
        let key_bits = self.keys.public_key().bits();
        packing.validate(key_bits)?;
        if count == 0 || count > MAX_VALUES_PER_ROUND {
            return Err(ProtocolError::BadMessage(format!("{count} values; accepted 1..={MAX_VALUES_PER_ROUND}")));
        }
        let n = packing.slots_per_ciphertext as usize;
        if packed.len() != packing.ciphertexts_for(count) {
            return Err(ProtocolError::BadMessage(format!(
                "{} packed ciphertexts for {count} values at {n} per ciphertext",
                packed.len()
            )));
        }
        let chunks: Vec<Vec<BigInt>> = packed
            .par_iter()
            .enumerate()
            .map(|(i, ct)| {
                let in_this = (count - i * n).min(n);
                unpack(packing, &self.keys.sk.decrypt_raw(ct), in_this)
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(chunks.iter().flatten().map(ring_from_gmp::<R>).collect())
    }

    fn check_scale(scale: u32) -> Result<()> {
        if scale > MAX_SCALE {
            return Err(ProtocolError::BadMessage(format!("scale {scale} above {MAX_SCALE}")));
        }
        Ok(())
    }

    /// Preprocessing of one hidden layer: keep `c`, draw fresh `ρ`, return `[ρ]`.
    pub fn blind_round(&mut self, req: &BlindedRound) -> Result<RhoMasks> {
        if self.output.is_some() {
            return Err(ProtocolError::BadMessage("a hidden round arrived after the output round".into()));
        }
        Self::check_scale(req.scale)?;
        let c = self.open_packed(&req.packing, &req.packed, req.count as usize)?;
        let rho: Vec<R> = (0..c.len()).map(|_| R::random(&mut self.rng)).collect();
        let pk = self.keys.public_key();
        let enc_rho = rho.par_iter().map(|&r| self.keys.noise.encrypt(pk, &gmp_from_ring(r))).collect();
        self.rounds.push(RoundState { kind: req.kind, scale: req.scale, c, rho });
        Ok(RhoMasks { enc_rho })
    }

    /// Preprocessing of the output layer; after it the session is ready.
    pub fn blind_output(&mut self, req: &BlindedOutput) -> Result<SessionReady> {
        if self.output.is_some() {
            return Err(ProtocolError::BadMessage("the output round arrived twice".into()));
        }
        Self::check_scale(req.scale)?;
        let count = req.count as usize;
        if req.mode == OutputMode::Sigmoid && count != 1 {
            return Err(ProtocolError::BadMessage("sigmoid mode needs exactly one output".into()));
        }
        let c = self.open_packed(&req.packing, &req.packed, count)?;
        self.output = Some(OutputState { mode: req.mode, scale: req.scale, count, c });
        Ok(SessionReady)
    }

    fn check_online(&self) -> Result<()> {
        if self.output.is_none() {
            return Err(ProtocolError::BadMessage("online message before preprocessing finished".into()));
        }
        Ok(())
    }

    /// §4.6: `h_p = F(v_p) + ρ_p` with `v_p = e_p − c_p = t_j·z_j`.
    pub fn activate(&mut self, req: &MaskedRound<R>) -> Result<ActivationValues<R>> {
        self.check_online()?;
        let Some(round) = self.rounds.get(self.next_round) else {
            return Err(ProtocolError::BadMessage(format!(
                "activation round {} of a session preprocessed with {} hidden rounds",
                self.next_round + 1,
                self.rounds.len()
            )));
        };
        if req.e.len() != round.c.len() {
            return Err(ProtocolError::BadMessage(format!(
                "{} e values for a round of {}",
                req.e.len(),
                round.c.len()
            )));
        }
        let (kind, scale) = (round.kind, round.scale);
        let h = req
            .e
            .iter()
            .zip(&round.c)
            .zip(&round.rho)
            .map(|((e, c), rho)| {
                let v = e.sub(*c);
                let w = match kind {
                    ActivationKind::Relu => {
                        if v.is_negative() {
                            R::zero()
                        } else {
                            v
                        }
                    }
                    ActivationKind::Sigmoid => {
                        crate::convert::ring_from_num(&sigmoid_fixed(&signed_num(v), scale, F_ACT))
                    }
                    ActivationKind::Tanh => crate::convert::ring_from_num(&tanh_fixed(&signed_num(v), scale, F_ACT)),
                };
                w.add(*rho)
            })
            .collect();
        self.next_round += 1;
        Ok(ActivationValues { h })
    }

    /// §4.8 and §6: the mode's result, sealed for the client. Consumes the
    /// session: one seal per seed.
    pub fn finish(self, req: &MaskedOutput<R>) -> Result<OutputResponse> {
        self.check_online()?;
        if self.next_round != self.rounds.len() {
            return Err(ProtocolError::BadMessage(format!(
                "the output round arrived after {} of {} hidden rounds",
                self.next_round,
                self.rounds.len()
            )));
        }
        let out = self.output.as_ref().expect("checked");
        let n = out.count;
        let plaintext = match out.mode {
            OutputMode::Logits => {
                if !req.e.is_empty() {
                    return Err(ProtocolError::BadMessage("logits mode carries no e values".into()));
                }
                tandem_crypto::ring::encode_vec(&out.c)
            }
            mode => {
                if req.e.len() != n {
                    return Err(ProtocolError::BadMessage(format!("{} e values for {n} outputs", req.e.len())));
                }
                // v_p = e_p − c_p (a ring value; read signed below).
                let v: Vec<R> = req.e.iter().zip(&out.c).map(|(e, c)| e.sub(*c)).collect();
                let vs: Vec<_> = v.iter().map(|&x| signed_num(x)).collect();
                match mode {
                    OutputMode::Probabilities => {
                        softmax_fixed(&vs, out.scale, F_ACT).iter().flat_map(|p| p.to_le_bytes()).collect()
                    }
                    OutputMode::Label if n == 1 => vec![u8::from(!v[0].is_negative() && v[0] != R::zero())],
                    OutputMode::Label => (argmax_first(&vs) as u32).to_le_bytes().to_vec(),
                    OutputMode::Sigmoid => {
                        let s: u64 = sigmoid_fixed(&vs[0], out.scale, F_ACT).try_into().expect("in [0, 2^f_act]");
                        s.to_le_bytes().to_vec()
                    }
                    OutputMode::Logits => unreachable!(),
                }
            }
        };
        Ok(OutputResponse { sealed: self.seed.seal(&self.session_id, &plaintext) })
    }
}
