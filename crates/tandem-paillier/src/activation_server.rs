//! S2's Paillier preprocessing (PROTOCOL §4.2, §4.5, §4.8 "S2" columns):
//! turn the client's `[secret]` into the seed, encrypt the input mask `r`,
//! decrypt S1's packed `C` into `c`, draw `ρ` and encrypt it. The result is
//! the core's [`ActivationSession`], whose online phase needs no Paillier.

use crate::convert::{gmp_from_ring, ring_from_gmp};
use crate::messages::*;
use crate::packing::{unpack, PackingParams};
use crate::paillier::{Ciphertext, NoiseSource, PublicKey, SecretKey};
use crate::BigInt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use std::sync::Arc;
use tandem_core::activation::{check_count, check_scale};
use tandem_core::{ActivationSession, DecryptedSecret, EncryptedSeed, ProtocolError, Result, Ring, Seed, SessionStart};
use tandem_model::OutputMode;

/// The key material every session shares, and the pool S2's heavy steps
/// run on.
pub struct ActivationKeys {
    sk: SecretKey,
    noise: NoiseSource,
    pool: Arc<rayon::ThreadPool>,
}

impl ActivationKeys {
    /// Builds S2's noise tables (on `pool`) with randomness from `rng`.
    pub fn new<G: RngCore + CryptoRng + ?Sized>(sk: SecretKey, pool: Arc<rayon::ThreadPool>, rng: &mut G) -> Self {
        let mut g = crate::split_rng(rng, 1).pop().expect("one");
        let noise = pool.install(|| sk.noise_source(&mut g));
        ActivationKeys { sk, noise, pool }
    }
    /// S2's public key.
    pub fn public_key(&self) -> &PublicKey {
        self.sk.public()
    }
    /// S2's secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.sk
    }
    /// The pool S2's heavy steps run on.
    pub fn pool(&self) -> &Arc<rayon::ThreadPool> {
        &self.pool
    }
}

/// Decrypts a `[secret]` (§4.2, §4.1a). The caller has run the public
/// checks first (the core's `ActivationServer::admit`); the engine's
/// `s2_decrypt_secret` calls this, outside any lock. Nothing after the
/// decryption can fail: the core only hashes the whole plaintext, whatever
/// it is, so no answer depends on the decrypted value.
pub(crate) fn open_secret(keys: &ActivationKeys, enc: &EncryptedSeed) -> Result<DecryptedSecret> {
    let pk = keys.public_key();
    let c = pk.ciphertext_from_bytes(&enc.0)?;
    let mut m = keys.pool.install(|| keys.sk.decrypt_raw(&c));
    let be = crate::bigint_traits::Converter::to_bytes(&m);
    zeroize::Zeroize::zeroize(&mut m);
    Ok(DecryptedSecret::new(be, pk.modulus_bytes()))
}

/// S2's state while a session is preprocessed.
pub struct ActivationPreprocessing<R: Ring> {
    keys: Arc<ActivationKeys>,
    session: Option<ActivationSession<R>>,
    rng: ChaCha20Rng,
}

/// Derives `r` (each below `2^m`, `m` from S1's `SessionStart`, checked
/// by the core before the seed was decrypted) and encrypts it (§4.2).
pub fn open_session<R: Ring, G: RngCore + CryptoRng + ?Sized>(
    keys: Arc<ActivationKeys>,
    msg: &SessionStart,
    seed: Seed,
    rng: &mut G,
) -> (ActivationPreprocessing<R>, InputMasks) {
    let r: Vec<R> = seed.input_mask(msg.input_len as usize, msg.input_mask_bits);
    let pk = keys.public_key();
    let rngs = crate::split_rng(rng, r.len());
    let enc_r = keys.pool.install(|| {
        r.par_iter().zip(rngs).map(|(&ri, mut g)| keys.noise.encrypt(pk, &gmp_from_ring(ri), &mut g)).collect()
    });
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    let mut own = ChaCha20Rng::from_seed(s);
    let session = ActivationSession::new(seed, msg.session_id, &mut own);
    (ActivationPreprocessing { keys, session: Some(session), rng: own }, InputMasks { enc_r })
}

/// Like [`open_session`], for an engine that sends `r` to S1 in its own
/// encryption (the lattice engine): returns `r` instead of `[r]`.
pub fn open_session_unencrypted<R: Ring, G: RngCore + CryptoRng + ?Sized>(
    keys: Arc<ActivationKeys>,
    msg: &SessionStart,
    seed: Seed,
    rng: &mut G,
) -> (ActivationPreprocessing<R>, Vec<R>) {
    let r: Vec<R> = seed.input_mask(msg.input_len as usize, msg.input_mask_bits);
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    let mut own = ChaCha20Rng::from_seed(s);
    let session = ActivationSession::new(seed, msg.session_id, &mut own);
    (ActivationPreprocessing { keys, session: Some(session), rng: own }, r)
}

impl<R: Ring> ActivationPreprocessing<R> {
    /// Paillier-encrypts `values` toward S1 with S2's DJN noise (sound
    /// toward S1, which does not know the factors), on S2's pool.
    pub fn encrypt_toward_s1(&mut self, values: &[BigInt]) -> Vec<Ciphertext> {
        let pk = self.keys.public_key();
        let rngs = crate::split_rng(&mut self.rng, values.len());
        let keys = &self.keys;
        keys.pool.install(|| values.par_iter().zip(rngs).map(|(v, mut g)| keys.noise.encrypt(pk, v, &mut g)).collect())
    }

    fn session(&mut self) -> Result<&mut ActivationSession<R>> {
        self.session.as_mut().ok_or(ProtocolError::OutOfOrder { got: "a preprocessing message after the output round" })
    }

    /// Decrypts the packed `C_p` and returns `c_p = C_p mod 2^k`.
    fn open_packed(&self, packing: &PackingParams, packed: &[Ciphertext], count: usize) -> Result<Vec<R>> {
        let key_bits = self.keys.public_key().bits();
        packing.validate(key_bits)?;
        check_count("values per round", count)?;
        let n = packing.slots_per_ciphertext as usize;
        if packed.len() != packing.ciphertexts_for(count) {
            return Err(ProtocolError::LengthMismatch {
                field: "packed ciphertexts",
                expected: packing.ciphertexts_for(count),
                got: packed.len(),
            });
        }
        let chunks: Vec<Vec<BigInt>> = self.keys.pool.install(|| {
            packed
                .par_iter()
                .enumerate()
                .map(|(i, ct)| {
                    let in_this = (count - i * n).min(n);
                    unpack(packing, &self.keys.sk.decrypt_raw(ct), in_this)
                })
                .collect::<std::result::Result<_, _>>()
        })?;
        Ok(chunks.iter().flatten().map(ring_from_gmp::<R>).collect())
    }

    /// Preprocessing of one hidden layer: keep `c`, draw fresh `ρ`, return `[ρ]`.
    pub fn on_blinded_round(&mut self, req: &BlindedRound) -> Result<RhoMasks> {
        self.session()?;
        check_scale(req.scale)?;
        let c = self.open_packed(&req.packing, &req.packed, req.count as usize)?;
        let rho: Vec<R> = (0..c.len()).map(|_| R::random(&mut self.rng)).collect();
        let pk = self.keys.public_key();
        let rngs = crate::split_rng(&mut self.rng, rho.len());
        let keys = &self.keys;
        let enc_rho = keys.pool.install(|| {
            rho.par_iter().zip(rngs).map(|(&r, mut g)| keys.noise.encrypt(pk, &gmp_from_ring(r), &mut g)).collect()
        });
        self.session()?.push_round(req.kind, req.scale, c, rho)?;
        Ok(RhoMasks { enc_rho })
    }

    /// Preprocessing of the output layer: S2's half is complete.
    pub fn on_blinded_output(&mut self, req: &BlindedOutput) -> Result<(SessionReady, ActivationSession<R>)> {
        self.session()?;
        check_scale(req.scale)?;
        let count = req.count as usize;
        if req.mode == OutputMode::Sigmoid && count != 1 {
            return Err(ProtocolError::LengthMismatch { field: "sigmoid outputs", expected: 1, got: count });
        }
        let c = self.open_packed(&req.packing, &req.packed, count)?;
        let mut session = self.session.take().expect("checked above");
        session.set_output(req.mode, req.scale, c)?;
        Ok((SessionReady, session))
    }

    /// Hidden rounds preprocessed so far.
    pub fn rounds(&self) -> usize {
        self.session.as_ref().map_or(0, |s| s.rounds())
    }
}
