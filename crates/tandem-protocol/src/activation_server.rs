//! S2, the activation server (PROTOCOL §4.2, §4.6, §4.8 "S2" columns, §6).
//!
//! `ActivationServer` holds the key pair and the replay set; each query is an
//! `ActivationSession` that S1 drives. `finish` consumes the session, so a
//! session seals at most once — the sealing key is single-use with nonce 0.

use crate::convert::{gmp_from_ring, ring_from_gmp, signed_num};
use crate::error::{ProtocolError, Result};
use crate::messages::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;
use tandem_crypto::packing::{unpack, PackingParams};
use tandem_crypto::{BigInt, Ciphertext, NoiseSource, PublicKey, Ring, SecretKey, Seed};
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
    /// Replay tags (a hash of each seed) seen so far.
    seen: HashSet<[u8; 32]>,
}

impl ActivationServer {
    pub fn new(sk: SecretKey) -> Self {
        ActivationServer { keys: Arc::new(ActivationKeys::new(sk)), seen: HashSet::new() }
    }
    pub fn public_key(&self) -> &PublicKey {
        self.keys.public_key()
    }
    pub fn keys(&self) -> &Arc<ActivationKeys> {
        &self.keys
    }
    pub fn seen_seeds(&self) -> usize {
        self.seen.len()
    }

    /// Decrypts the seed, refuses a replay, and returns `[r]` (§4.2).
    pub fn start_session<R: Ring>(&mut self, msg: &SessionStart) -> Result<(ActivationSession<R>, InputMasks)> {
        let (seed, tag) = decrypt_seed::<R>(&self.keys, msg)?;
        if !self.seen.insert(tag) {
            return Err(ProtocolError::ReplayedSeed);
        }
        Ok(open_session(self.keys.clone(), msg, seed))
    }
}

/// The part of `start_session` that needs no shared mutable state, so a
/// concurrent server can decrypt outside its lock: check, decrypt, tag.
pub fn decrypt_seed<R: Ring>(keys: &ActivationKeys, msg: &SessionStart) -> Result<(Seed, [u8; 32])> {
    if msg.ring_bits != R::BITS {
        return Err(ProtocolError::RingMismatch { model: msg.ring_bits, code: R::BITS });
    }
    if msg.input_len == 0 || msg.input_len as usize > MAX_VALUES_PER_ROUND {
        return Err(ProtocolError::BadMessage(format!(
            "input length {} outside 1..={MAX_VALUES_PER_ROUND}",
            msg.input_len
        )));
    }
    let seed = Seed::from_bigint(&keys.sk.decrypt(&msg.enc_seed))?;
    let tag = seed.replay_tag();
    Ok((seed, tag))
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
    let session =
        ActivationSession { keys, seed, session_id: msg.session_id, rng: ChaCha20Rng::from_entropy(), _r: PhantomData };
    (session, InputMasks { enc_r })
}

/// One query at S2.
pub struct ActivationSession<R: Ring> {
    keys: Arc<ActivationKeys>,
    seed: Seed,
    session_id: SessionId,
    rng: ChaCha20Rng,
    _r: PhantomData<R>,
}

impl<R: Ring> ActivationSession<R> {
    pub fn session_id(&self) -> SessionId {
        self.session_id
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

    fn blinded_values(&self, e: &[R], packing: &PackingParams, packed: &[Ciphertext], scale: u32) -> Result<Vec<R>> {
        if scale > MAX_SCALE {
            return Err(ProtocolError::BadMessage(format!("scale {scale} above {MAX_SCALE}")));
        }
        let c = self.open_packed(packing, packed, e.len())?;
        // v_p = e_p − c_p = t_j·z_j (as a ring value; read signed below).
        Ok(e.iter().zip(&c).map(|(e, c)| e.sub(*c)).collect())
    }

    /// §4.6: `h_p = F(v_p) + ρ_p` and `[ρ_p]`, fresh `ρ` per value.
    pub fn activate(&mut self, req: &ActivationRequest<R>) -> Result<ActivationResponse<R>> {
        let v = self.blinded_values(&req.e, &req.packing, &req.packed, req.scale)?;
        let w: Vec<R> = v
            .par_iter()
            .map(|&v| match req.kind {
                ActivationKind::Relu => {
                    if v.is_negative() {
                        R::zero()
                    } else {
                        v
                    }
                }
                ActivationKind::Sigmoid => {
                    crate::convert::ring_from_num(&sigmoid_fixed(&signed_num(v), req.scale, F_ACT))
                }
                ActivationKind::Tanh => crate::convert::ring_from_num(&tanh_fixed(&signed_num(v), req.scale, F_ACT)),
            })
            .collect();
        let rho: Vec<R> = (0..w.len()).map(|_| R::random(&mut self.rng)).collect();
        let h = w.iter().zip(&rho).map(|(w, r)| w.add(*r)).collect();
        let pk = self.keys.public_key();
        let enc_rho = rho.par_iter().map(|&r| self.keys.noise.encrypt(pk, &gmp_from_ring(r))).collect();
        Ok(ActivationResponse { h, enc_rho })
    }

    /// §4.8 and §6: the mode's result, sealed for the client. Consumes the
    /// session: one seal per seed.
    pub fn finish(self, req: &OutputRequest<R>) -> Result<OutputResponse> {
        let n = req.count as usize;
        let plaintext = match req.mode {
            OutputMode::Logits => {
                if !req.e.is_empty() {
                    return Err(ProtocolError::BadMessage("logits mode carries no e values".into()));
                }
                let c = self.open_packed(&req.packing, &req.packed, n)?;
                tandem_crypto::ring::encode_vec(&c)
            }
            _ => {
                if req.e.len() != n {
                    return Err(ProtocolError::BadMessage(format!("{} e values for {n} outputs", req.e.len())));
                }
                let v = self.blinded_values(&req.e, &req.packing, &req.packed, req.scale)?;
                let vs: Vec<_> = v.iter().map(|&x| signed_num(x)).collect();
                match req.mode {
                    OutputMode::Probabilities => {
                        softmax_fixed(&vs, req.scale, F_ACT).iter().flat_map(|p| p.to_le_bytes()).collect()
                    }
                    OutputMode::Label if n == 1 => vec![u8::from(!v[0].is_negative() && v[0] != R::zero())],
                    OutputMode::Label => (argmax_first(&vs) as u32).to_le_bytes().to_vec(),
                    OutputMode::Sigmoid => {
                        if n != 1 {
                            return Err(ProtocolError::BadMessage("sigmoid mode needs exactly one output".into()));
                        }
                        let s: u64 = sigmoid_fixed(&vs[0], req.scale, F_ACT).try_into().expect("in [0, 2^f_act]");
                        s.to_le_bytes().to_vec()
                    }
                    OutputMode::Logits => unreachable!(),
                }
            }
        };
        Ok(OutputResponse { sealed: self.seed.seal(&self.session_id, &plaintext) })
    }
}
