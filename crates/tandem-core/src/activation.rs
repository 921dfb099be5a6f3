//! S2's online half (PROTOCOL §4.6, §4.8 "S2" columns, §6) and its
//! long-lived state (§4.2: keys, epochs, the replay log).
//!
//! A preprocessing engine fills an [`ActivationSession`] with each round's
//! `c` (decrypted from S1's blinded values) and `ρ` (whose encryptions S1
//! received); the online phase then only subtracts, applies `F` and adds —
//! identical for every engine. `finish` consumes the session, so a session
//! seals at most once.

use crate::convert::{ring_from_num, signed_num};
use crate::engine::{PreprocessingEngine, S2Start};
use crate::error::{ProtocolError, Result};
use crate::messages::*;
use crate::replay::{BoundedReplayLog, ReplayLog};
use crate::ring::Ring;
use crate::seed::{Seed, SeedEpoch, SessionKey};
use crate::seed_session::{SeedSessionLimits, SeedSessions};
use std::time::Duration;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use std::sync::Arc;
use tandem_model::activation::{argmax_first, sigmoid_fixed, softmax_fixed, tanh_fixed};
use tandem_model::{ActivationKind, OutputMode, F_ACT};

/// Largest layer / input S2 serves; anything larger is refused before work.
pub const MAX_VALUES_PER_ROUND: usize = 1 << 20;
/// Largest fixed-point scale S2 accepts for sigmoid/tanh/softmax.
pub const MAX_SCALE: u32 = 4096;

/// Refuses a count outside `1..=MAX_VALUES_PER_ROUND` before it sizes anything.
pub fn check_count(field: &'static str, count: usize) -> Result<()> {
    if count == 0 || count > MAX_VALUES_PER_ROUND {
        return Err(ProtocolError::OutOfRange {
            field,
            got: count as u64,
            accepted: format!("1..={MAX_VALUES_PER_ROUND}"),
        });
    }
    Ok(())
}

/// Refuses a fixed-point scale above [`MAX_SCALE`].
pub fn check_scale(scale: u32) -> Result<()> {
    if scale > MAX_SCALE {
        return Err(ProtocolError::OutOfRange {
            field: "scale",
            got: scale as u64,
            accepted: format!("0..={MAX_SCALE}"),
        });
    }
    Ok(())
}

/// The checks on S1's public `SessionStart` that come before any decryption.
pub fn check_session_start<R: Ring>(msg: &SessionStart) -> Result<()> {
    if msg.ring_bits != R::BITS {
        return Err(ProtocolError::RingMismatch { model: msg.ring_bits, code: R::BITS });
    }
    // S2 derives `r` from this width: 0 would mask nothing, and more than
    // k is not a ring value.
    if msg.input_mask_bits == 0 || msg.input_mask_bits > R::BITS {
        return Err(ProtocolError::OutOfRange {
            field: "input_mask_bits",
            got: msg.input_mask_bits as u64,
            accepted: format!("1..={} (k of the session's ring)", R::BITS),
        });
    }
    check_count("input length", msg.input_len as usize)
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

/// One query at S2, from its seed to its sealed result.
pub struct ActivationSession<R: Ring> {
    seed: Seed,
    session_id: SessionId,
    /// Only for the sealing nonce.
    rng: ChaCha20Rng,
    rounds: Vec<RoundState<R>>,
    output: Option<OutputState<R>>,
    /// Online rounds answered so far.
    next_round: usize,
}

impl<R: Ring> ActivationSession<R> {
    /// A session whose preprocessing starts; `rng` seeds its own CSPRNG.
    pub fn new<G: RngCore + CryptoRng + ?Sized>(seed: Seed, session_id: SessionId, rng: &mut G) -> Self {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        ActivationSession {
            seed,
            session_id,
            rng: ChaCha20Rng::from_seed(s),
            rounds: Vec::new(),
            output: None,
            next_round: 0,
        }
    }
    /// The session id S1 chose.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    /// The query's seed (the engine derives `r` from it).
    pub fn seed(&self) -> &Seed {
        &self.seed
    }
    /// Whether preprocessing is complete (the output round is stored).
    pub fn is_ready(&self) -> bool {
        self.output.is_some()
    }
    /// Hidden rounds preprocessed.
    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    /// The engine opened one hidden round: keeps `c` and `ρ` (same length).
    pub fn push_round(&mut self, kind: ActivationKind, scale: u32, c: Vec<R>, rho: Vec<R>) -> Result<()> {
        if self.output.is_some() {
            return Err(ProtocolError::OutOfOrder { got: "a hidden round after the output round" });
        }
        check_scale(scale)?;
        if c.len() != rho.len() {
            return Err(ProtocolError::LengthMismatch { field: "ρ", expected: c.len(), got: rho.len() });
        }
        self.rounds.push(RoundState { kind, scale, c, rho });
        Ok(())
    }

    /// The engine opened the output round; after it the session is ready.
    pub fn set_output(&mut self, mode: OutputMode, scale: u32, c: Vec<R>) -> Result<()> {
        if self.output.is_some() {
            return Err(ProtocolError::OutOfOrder { got: "a second output round" });
        }
        check_scale(scale)?;
        if mode == OutputMode::Sigmoid && c.len() != 1 {
            return Err(ProtocolError::LengthMismatch { field: "sigmoid outputs", expected: 1, got: c.len() });
        }
        self.output = Some(OutputState { mode, scale, count: c.len(), c });
        Ok(())
    }

    fn check_online(&self) -> Result<()> {
        if self.output.is_none() {
            return Err(ProtocolError::OutOfOrder { got: "an online message before preprocessing finished" });
        }
        Ok(())
    }

    /// §4.6: `h_p = F(v_p) + ρ_p` with `v_p = e_p − c_p = t_j·z_j`.
    pub fn activate(&mut self, req: &MaskedRound<R>) -> Result<ActivationValues<R>> {
        self.check_online()?;
        let Some(round) = self.rounds.get(self.next_round) else {
            return Err(ProtocolError::OutOfOrder { got: "an activation round beyond the preprocessed ones" });
        };
        if req.e.len() != round.c.len() {
            return Err(ProtocolError::LengthMismatch { field: "e values", expected: round.c.len(), got: req.e.len() });
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
                    ActivationKind::Sigmoid => ring_from_num(&sigmoid_fixed(&signed_num(v), scale, F_ACT)),
                    ActivationKind::Tanh => ring_from_num(&tanh_fixed(&signed_num(v), scale, F_ACT)),
                };
                w.add(*rho)
            })
            .collect();
        self.next_round += 1;
        Ok(ActivationValues { h })
    }

    /// §4.8 and §6: the mode's result, sealed for the client. Consumes the
    /// session: one seal per seed.
    pub fn finish(mut self, req: &MaskedOutput<R>) -> Result<OutputResponse> {
        self.check_online()?;
        if self.next_round != self.rounds.len() {
            return Err(ProtocolError::OutOfOrder { got: "the output round before every hidden round" });
        }
        let out = self.output.as_ref().expect("checked");
        let n = out.count;
        let plaintext = match out.mode {
            OutputMode::Logits => {
                if !req.e.is_empty() {
                    return Err(ProtocolError::LengthMismatch {
                        field: "logits-mode e values",
                        expected: 0,
                        got: req.e.len(),
                    });
                }
                crate::ring::encode_vec(&out.c)
            }
            mode => {
                if req.e.len() != n {
                    return Err(ProtocolError::LengthMismatch {
                        field: "output e values",
                        expected: n,
                        got: req.e.len(),
                    });
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
        let sealed = self.seed.seal(&self.session_id, &plaintext, &mut self.rng);
        Ok(OutputResponse { sealed })
    }
}

/// S2's long-lived state for one engine: the engine's keys, the replay log,
/// the seed sessions, and the CSPRNG its epochs and session ids (and,
/// in-process, every session's randomness) are drawn from. The gRPC shell
/// keeps one behind a lock and runs [`admit`](Self::admit), the decryption
/// (outside the lock) and [`record_seed`](Self::record_seed) as separate
/// steps (and [`admit_open`](Self::admit_open), the decryption,
/// [`open_seed_session`](Self::open_seed_session) for a seed session);
/// [`start_session`](Self::start_session) and
/// [`open_session_in_process`](Self::open_session_in_process) run them back
/// to back, so both take the same checks in the same order.
pub struct ActivationServer<E: PreprocessingEngine, L: ReplayLog = BoundedReplayLog> {
    engine: Arc<E>,
    keys: Arc<E::S2Keys>,
    replay: L,
    sessions: SeedSessions,
    rng: ChaCha20Rng,
}

/// What [`ActivationServer::admit`] found the query's seed to be.
pub enum Admitted<'a> {
    /// A seed session's query: the seed, already derived and its counter
    /// recorded.
    Seed(Seed),
    /// A one-shot `[secret]` under a held epoch: decrypt it, derive the
    /// seed under `epoch`, then [`ActivationServer::record_seed`].
    Decrypt {
        /// The ciphertext.
        enc_seed: &'a EncryptedSeed,
        /// Its epoch.
        epoch: SeedEpoch,
    },
}

impl<E: PreprocessingEngine> ActivationServer<E> {
    /// S2 with the default replay bound; `rng` seeds its CSPRNG.
    pub fn new<G: RngCore + CryptoRng + ?Sized>(engine: Arc<E>, keys: E::S2Keys, rng: &mut G) -> Self {
        Self::with_replay_bound(engine, keys, crate::replay::DEFAULT_SEEDS_PER_EPOCH, rng)
    }
    /// S2 with `per_epoch` seeds per replay epoch.
    pub fn with_replay_bound<G: RngCore + CryptoRng + ?Sized>(
        engine: Arc<E>,
        keys: E::S2Keys,
        per_epoch: usize,
        rng: &mut G,
    ) -> Self {
        let mut rng = own_rng(rng);
        let replay = BoundedReplayLog::new(per_epoch, &mut rng);
        ActivationServer {
            engine,
            keys: Arc::new(keys),
            replay,
            sessions: SeedSessions::new(SeedSessionLimits::default()),
            rng,
        }
    }
}

fn own_rng<G: RngCore + CryptoRng + ?Sized>(rng: &mut G) -> ChaCha20Rng {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    ChaCha20Rng::from_seed(s)
}

impl<E: PreprocessingEngine, L: ReplayLog> ActivationServer<E, L> {
    /// S2 with a replay log of the caller's choosing.
    pub fn with_replay_log<G: RngCore + CryptoRng + ?Sized>(
        engine: Arc<E>,
        keys: E::S2Keys,
        replay: L,
        rng: &mut G,
    ) -> Self {
        ActivationServer {
            engine,
            keys: Arc::new(keys),
            replay,
            sessions: SeedSessions::new(SeedSessionLimits::default()),
            rng: own_rng(rng),
        }
    }
    /// Replaces the seed-session limits (and forgets every seed session).
    pub fn with_seed_session_limits(mut self, limits: SeedSessionLimits) -> Self {
        self.sessions = SeedSessions::new(limits);
        self
    }
    /// The engine.
    pub fn engine(&self) -> &Arc<E> {
        &self.engine
    }
    /// The engine's key material.
    pub fn keys(&self) -> &Arc<E::S2Keys> {
        &self.keys
    }
    /// The epoch clients must derive their seeds under now.
    pub fn seed_epoch(&self) -> SeedEpoch {
        self.replay.current_epoch()
    }
    /// Seeds in the replay log.
    pub fn seen_seeds(&self) -> usize {
        self.replay.len()
    }
    /// The seed sessions.
    pub fn seed_sessions(&mut self) -> &mut SeedSessions {
        &mut self.sessions
    }

    /// §4.2, before any decryption: S1's public message, then the epoch it
    /// names or the seed session and counter. Nothing here depends on a
    /// secret. A seed session's query is recorded here (its counter is
    /// public), so the caller gets its seed at once.
    pub fn admit<'m, R: Ring>(&mut self, msg: &'m SessionStart, now: Duration) -> Result<Admitted<'m>> {
        check_session_start::<R>(msg)?;
        match &msg.seed {
            SeedSource::Encrypted { enc_seed, epoch } => {
                self.replay.check_epoch(epoch)?;
                Ok(Admitted::Decrypt { enc_seed, epoch: *epoch })
            }
            SeedSource::Session { id, counter } => Ok(Admitted::Seed(self.sessions.query_seed(id, *counter, now)?)),
        }
    }

    /// §4.2, after the decryption: refuses a seed already served under
    /// `epoch`, else records it.
    pub fn record_seed(&mut self, epoch: &SeedEpoch, seed: &Seed) -> Result<()> {
        self.replay.record(epoch, seed.replay_tag(), &mut self.rng)
    }

    /// §4.1a, before any decryption: the epoch is held and a session could
    /// be stored.
    pub fn admit_open(&mut self, msg: &OpenSeedSession, now: Duration) -> Result<()> {
        self.replay.check_epoch(&msg.epoch)?;
        self.sessions.check_room(now)
    }

    /// §4.1a, after the decryption: refuses a session secret already
    /// opened under `epoch` (one replay log for seeds and sessions), else
    /// stores the session under a fresh random id.
    pub fn open_seed_session(&mut self, epoch: &SeedEpoch, key: SessionKey, now: Duration) -> Result<SeedSessionOpened> {
        self.replay.record(epoch, key.replay_tag(), &mut self.rng)?;
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        self.sessions.open(id, key, now)
    }

    /// §4.1a back to back: admit, decrypt, open.
    pub fn open_session_in_process(&mut self, msg: &OpenSeedSession, now: Duration) -> Result<SeedSessionOpened> {
        self.admit_open(msg, now)?;
        let key = self.engine.s2_decrypt_secret(&self.keys, &msg.enc_secret)?.session_key(&msg.epoch);
        self.open_seed_session(&msg.epoch, key, now)
    }

    /// §4.2: checks S1's public message and the seed's source, decrypts a
    /// one-shot seed and refuses its replay, and opens the engine's
    /// preprocessing.
    pub fn start_session<R: Ring>(&mut self, msg: &SessionStart, now: Duration) -> Result<S2Start<E, R>> {
        let seed = match self.admit::<R>(msg, now)? {
            Admitted::Seed(seed) => seed,
            Admitted::Decrypt { enc_seed, epoch } => {
                let seed = self.engine.s2_decrypt_secret(&self.keys, enc_seed)?.seed(&epoch);
                self.record_seed(&epoch, &seed)?;
                seed
            }
        };
        self.engine.s2_start::<R, _>(&self.keys, msg, seed, &mut self.rng)
    }
}
