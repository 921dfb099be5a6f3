//! The client's per-query seed, the input-mask PRG (PROTOCOL §4.1) and
//! result sealing (§6).

use crate::crypto_error::CryptoError;
use crate::ring::Ring;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HKDF info for the input-mask PRG key (§4.1).
pub const INPUT_MASK_INFO: &[u8] = b"tandem/v1/input-mask";
/// HKDF info for the result-sealing key (§6).
pub const RESULT_INFO: &[u8] = b"tandem/v1/result";
/// HKDF info for turning a decrypted seed plaintext into the query's seed.
pub const SEED_INFO: &[u8] = b"tandem/v1/seed";
/// HKDF info for turning a decrypted session-secret plaintext into a seed
/// session's key (§4.1a).
pub const SEED_SESSION_INFO: &[u8] = b"tandem/v1/seed-session";
/// HKDF info prefix for one query's seed in a seed session (§4.1a); the
/// query counter follows as 8 bytes big-endian.
pub const QUERY_SEED_INFO: &[u8] = b"tandem/v1/query-seed";
/// Bytes of the random nonce in front of a sealed result.
pub const NONCE_BYTES: usize = 12;
/// Bytes of a seed epoch.
pub const EPOCH_BYTES: usize = 16;

/// The activation server's seed epoch: 16 public random bytes that S2 draws
/// when it starts and again whenever its replay log rotates. Every seed is
/// derived under one epoch, so a `[secret]` recorded before S2 restarted (or
/// before two rotations) can never be turned back into the same seed: S2
/// refuses an epoch it does not hold before it decrypts anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SeedEpoch(pub [u8; EPOCH_BYTES]);

impl SeedEpoch {
    /// Lowercase hex, for logs and messages.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Exactly 16 bytes; `None` otherwise.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(SeedEpoch)
    }
}

/// What the client encrypts to S2: 32 random bytes, fresh per query.
/// Only its derived [`Seed`] keys anything.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SeedSecret([u8; 32]);

impl std::fmt::Debug for SeedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeedSecret(..)")
    }
}

impl SeedSecret {
    /// 32 bytes from the caller's CSPRNG.
    pub fn random<G: RngCore + CryptoRng + ?Sized>(rng: &mut G) -> Self {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        SeedSecret(s)
    }
    /// A fixed secret (test vectors).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        SeedSecret(b)
    }
    /// The plaintext the client encrypts: the 32 bytes read big-endian, an
    /// integer below `2^256`.
    pub fn plaintext_be(&self) -> &[u8; 32] {
        &self.0
    }
    /// The seed S2 will derive from this secret's plaintext under `epoch`.
    pub fn seed(&self, epoch: &SeedEpoch, modulus_bytes: usize) -> Seed {
        Seed::from_plaintext(epoch, &self.0, modulus_bytes)
    }
    /// The seed-session key S2 will derive from this secret's plaintext
    /// under `epoch`, when the secret opens a seed session (§4.1a).
    pub fn session_key(&self, epoch: &SeedEpoch, modulus_bytes: usize) -> SessionKey {
        SessionKey::from_plaintext(epoch, &self.0, modulus_bytes)
    }
}

/// What S2 decrypted from a `[secret]`: the plaintext `m ∈ [0, N)`,
/// big-endian, with the modulus' byte width. An engine returns it; the core
/// turns it into a one-shot [`Seed`] or a [`SessionKey`], never refusing
/// any value (the plaintext is only ever hashed).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DecryptedSecret {
    m_be: Vec<u8>,
    modulus_bytes: usize,
}

impl DecryptedSecret {
    /// `m` big-endian (any width) under a modulus of `modulus_bytes` bytes.
    pub fn new(m_be: Vec<u8>, modulus_bytes: usize) -> Self {
        DecryptedSecret { m_be, modulus_bytes }
    }
    /// The one-shot seed (§4.1).
    pub fn seed(&self, epoch: &SeedEpoch) -> Seed {
        Seed::from_plaintext(epoch, &self.m_be, self.modulus_bytes)
    }
    /// The seed session's key (§4.1a).
    pub fn session_key(&self, epoch: &SeedEpoch) -> SessionKey {
        SessionKey::from_plaintext(epoch, &self.m_be, self.modulus_bytes)
    }
}

/// `HKDF-SHA256(salt = epoch, ikm = I2OSP(m, modulus_bytes), info)`.
fn hash_plaintext(epoch: &SeedEpoch, m_be: &[u8], modulus_bytes: usize, info: &[u8]) -> [u8; 32] {
    // m < N, so it fits; a wider m (never produced by decryption) keeps its
    // low bytes rather than panicking.
    let mut ikm = vec![0u8; modulus_bytes];
    let take = m_be.len().min(modulus_bytes);
    ikm[modulus_bytes - take..].copy_from_slice(&m_be[m_be.len() - take..]);
    let hk = Hkdf::<Sha256>::new(Some(&epoch.0), &ikm);
    ikm.zeroize();
    let mut okm = [0u8; 32];
    hk.expand(info, &mut okm).expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

/// The key of a seed session (§4.1a): one Paillier-encrypted secret from
/// which the seeds of up to `max_queries` queries derive, one per counter.
/// The client derives it from its [`SeedSecret`]; S2 from the decrypted
/// plaintext, exactly as a one-shot seed but under its own HKDF info, so a
/// secret sent for a session and one sent for a single query never give the
/// same key. Never sent anywhere.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// `HKDF-SHA256(salt = epoch, ikm = I2OSP(m, modulus_bytes), info =
    /// "tandem/v1/seed-session")`; like [`Seed::from_plaintext`], it never
    /// refuses a plaintext.
    pub fn from_plaintext(epoch: &SeedEpoch, m_be: &[u8], modulus_bytes: usize) -> Self {
        SessionKey(hash_plaintext(epoch, m_be, modulus_bytes, SEED_SESSION_INFO))
    }

    /// A key with no secret behind it (tests and benchmarks).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        SessionKey(b)
    }

    /// Query `counter`'s seed: `HKDF-SHA256(salt = none, ikm = key, info =
    /// "tandem/v1/query-seed" ‖ I2OSP(counter, 8))`. Distinct counters give
    /// independent seeds (HKDF is a PRF in its info).
    pub fn query_seed(&self, counter: u64) -> Seed {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let mut okm = [0u8; 32];
        hk.expand_multi_info(&[QUERY_SEED_INFO, &counter.to_be_bytes()], &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Seed(okm)
    }

    /// A replay-detection tag for the session's opening (it shares S2's
    /// replay log with one-shot seeds; the domain keeps the two apart).
    pub fn replay_tag(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tandem/v1/replay-session");
        h.update(self.0);
        h.finalize().into()
    }
}

/// The 32-byte key of one query: it keys the input mask `r` and the sealed
/// result. Never sent anywhere.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Seed([u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Seed {
    /// A seed with no secret behind it (tests and benchmarks of the PRG and
    /// sealing; the protocol always derives seeds with [`Seed::from_plaintext`]).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Seed(b)
    }
    /// From the caller's CSPRNG (tests and benchmarks, as [`Seed::from_bytes`]).
    pub fn random<G: RngCore + CryptoRng + ?Sized>(rng: &mut G) -> Self {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Seed(s)
    }

    /// `seed = HKDF-SHA256(salt = epoch, ikm = I2OSP(m, modulus_bytes),
    /// info = "tandem/v1/seed")`: the whole plaintext `m ∈ [0, N)`, written
    /// big-endian at the modulus' fixed width, is hashed, whatever it is.
    ///
    /// This is what closes the decryption oracle (SECURITY.md): S2 never
    /// refuses a plaintext. A ciphertext that was tampered with (`[s]·Enc(−t)`)
    /// decrypts to some other `m`, which silently yields an unrelated seed;
    /// the query then runs to the end and its result opens for nobody, and
    /// the answer looks the same as for any other ciphertext.
    ///
    /// `m_be` is the decrypted plaintext, big-endian, any width (leading
    /// zeros or not).
    pub fn from_plaintext(epoch: &SeedEpoch, m_be: &[u8], modulus_bytes: usize) -> Self {
        Seed(hash_plaintext(epoch, m_be, modulus_bytes, SEED_INFO))
    }

    /// A replay-detection tag that does not reveal the seed.
    pub fn replay_tag(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tandem/v1/replay");
        h.update(self.0);
        h.finalize().into()
    }

    fn derive(&self, info: &[u8]) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let mut okm = [0u8; 32];
        hk.expand(info, &mut okm).expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }

    /// `r ∈ R^d`, each `r_i` uniform in `[0, 2^m)` (`m = mask_bits`, §4.1):
    /// HKDF-SHA256(seed, "tandem/v1/input-mask") keys a ChaCha20 stream;
    /// element `i` is the next `⌈m/8⌉` stream bytes, little-endian, reduced
    /// to its low `m` bits. `2^m` is a power of two, so the reduction keeps
    /// `r_i` uniform and needs no rejection. With `m = k` (the full-ring
    /// mask) this is `k/8` bytes per element, as before compact masks.
    ///
    /// The client and S2 both call this, so both hold the same `r`. The
    /// stream is drawn in one piece: `rand_core` fills a request from whole
    /// 32-bit words, so per-element requests of ⌈m/8⌉ bytes would skip
    /// stream bytes whenever ⌈m/8⌉ is not a multiple of 4, and the
    /// documented stream (§6a, test vectors) would not be what is used.
    /// The caller has checked `1 ≤ m ≤ k` (S2: before decrypting); a wider
    /// `m` is treated as `k`.
    pub fn input_mask<R: Ring>(&self, d: usize, mask_bits: u32) -> Vec<R> {
        let m = mask_bits.min(R::BITS);
        let width = m.div_ceil(8) as usize;
        let mut key = self.derive(INPUT_MASK_INFO);
        let mut rng = ChaCha20Rng::from_seed(key);
        key.zeroize();
        let mut stream = vec![0u8; d * width];
        rng.fill_bytes(&mut stream);
        let excess = 8 * width as u32 - m;
        let r = stream
            .chunks_exact_mut(width)
            .map(|c| {
                c[width - 1] &= 0xff >> excess;
                R::from_le_truncating(c)
            })
            .collect();
        stream.zeroize();
        r
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        let mut key = self.derive(RESULT_INFO);
        let c = ChaCha20Poly1305::new(Key::from_slice(&key));
        key.zeroize();
        c
    }

    /// ChaCha20-Poly1305 under the key HKDF(seed, "tandem/v1/result"),
    /// associated data = session id, output `nonce ‖ ciphertext`.
    ///
    /// The nonce is random rather than 0: S2's replay set does not survive a
    /// restart, so a seed may be presented twice, and two results sealed
    /// under one key and nonce would leak their XOR to whoever relays them.
    pub fn seal<G: RngCore + CryptoRng + ?Sized>(&self, session_id: &[u8], plaintext: &[u8], rng: &mut G) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: session_id })
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend(ct);
        out
    }

    /// Opens what [`Seed::seal`] sealed for `session_id`; any change is refused.
    pub fn open(&self, session_id: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_BYTES {
            return Err(CryptoError::SealedResultRejected);
        }
        let (nonce, ct) = sealed.split_at(NONCE_BYTES);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: session_id })
            .map_err(|_| CryptoError::SealedResultRejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plaintext_gives_a_seed_and_only_the_same_one_the_same_seed() {
        let e = SeedEpoch([3; 16]);
        let secret = SeedSecret::from_bytes([9; 32]);
        let a = secret.seed(&e, 256);
        assert_eq!(a, Seed::from_plaintext(&e, secret.plaintext_be(), 256));
        // Other plaintexts, including ones far above 2^256, are not refused:
        // they give other seeds.
        let mut plus_one = *secret.plaintext_be();
        plus_one[31] += 1;
        let mut big = vec![0u8; 40];
        big[0] = 1;
        for m in [vec![0u8], big, plus_one.to_vec()] {
            assert_ne!(Seed::from_plaintext(&e, &m, 256), a);
        }
        // Another epoch, another seed.
        assert_ne!(secret.seed(&SeedEpoch([4; 16]), 256), a);
        // The width is part of the input: a 3072-bit key derives differently.
        assert_ne!(secret.seed(&e, 384), a);
    }

    #[test]
    fn seed_derivation_follows_the_spec_byte_for_byte() {
        let e = SeedEpoch([0xab; 16]);
        let secret = SeedSecret::from_bytes([0x11; 32]);
        let mut ikm = vec![0u8; 256];
        ikm[224..].copy_from_slice(&[0x11; 32]);
        let hk = Hkdf::<Sha256>::new(Some(&[0xab; 16]), &ikm);
        let mut okm = [0u8; 32];
        hk.expand(b"tandem/v1/seed", &mut okm).unwrap();
        assert_eq!(secret.seed(&e, 256), Seed::from_bytes(okm));
    }

    #[test]
    fn session_keys_and_query_seeds_follow_the_spec_and_stay_apart() {
        let e = SeedEpoch([0xab; 16]);
        let secret = SeedSecret::from_bytes([0x11; 32]);
        let key = secret.session_key(&e, 256);
        let mut ikm = vec![0u8; 256];
        ikm[224..].copy_from_slice(&[0x11; 32]);
        let mut k = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&[0xab; 16]), &ikm).expand(b"tandem/v1/seed-session", &mut k).unwrap();
        assert_eq!(key, SessionKey::from_bytes(k));
        // The same secret as a one-shot seed gives another value.
        assert_ne!(secret.seed(&e, 256).0, k);
        let mut q = [0u8; 32];
        Hkdf::<Sha256>::new(None, &k).expand(b"tandem/v1/query-seed\0\0\0\0\0\0\x01\x02", &mut q).unwrap();
        assert_eq!(key.query_seed(0x0102), Seed::from_bytes(q));
        assert_ne!(key.query_seed(0), key.query_seed(1));
        assert_ne!(key.replay_tag(), secret.seed(&e, 256).replay_tag());
    }

    #[test]
    fn mask_is_deterministic_and_prefix_stable() {
        let s = Seed::from_bytes([7; 32]);
        for m in [1, 60, 68, 128] {
            let a: Vec<u128> = s.input_mask(10, m);
            let b: Vec<u128> = s.input_mask(4, m);
            assert_eq!(&a[..4], &b[..]);
            assert!(a.iter().all(|&r| m == 128 || r < 1 << m), "m = {m}");
            let other: Vec<u128> = Seed::from_bytes([8; 32]).input_mask(10, m);
            assert_ne!(a, other);
        }
    }

    #[test]
    fn mask_follows_the_spec_byte_for_byte() {
        // Re-derive by hand: HKDF → ChaCha20Rng → little-endian words.
        let s = Seed::from_bytes([1; 32]);
        let hk = Hkdf::<Sha256>::new(None, &[1u8; 32]);
        let mut key = [0u8; 32];
        hk.expand(b"tandem/v1/input-mask", &mut key).unwrap();
        let mut rng = ChaCha20Rng::from_seed(key);
        let mut buf = [0u8; 32];
        rng.fill_bytes(&mut buf);
        let m: Vec<crate::ring::U256> = s.input_mask(1, 256);
        assert_eq!(m[0].to_le_bytes_vec(), buf.to_vec());
        // A compact mask, m = 68: 9 stream bytes per element, contiguous
        // (no word skipped), the top 4 bits of each 9th byte cleared.
        let mut rng = ChaCha20Rng::from_seed(key);
        let mut stream = [0u8; 27];
        rng.fill_bytes(&mut stream);
        let r: Vec<u128> = s.input_mask(3, 68);
        for (i, c) in stream.chunks(9).enumerate() {
            let mut le = [0u8; 16];
            le[..9].copy_from_slice(c);
            le[8] &= 0x0f;
            assert_eq!(r[i], u128::from_le_bytes(le), "r_{i}");
        }
    }

    #[test]
    fn seal_open_and_tamper() {
        let rng = &mut ChaCha20Rng::seed_from_u64(1);
        let s = Seed::random(rng);
        let sealed = s.seal(b"session-1", b"hello", rng);
        assert_eq!(s.open(b"session-1", &sealed).unwrap(), b"hello");
        assert!(s.open(b"session-2", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(matches!(s.open(b"session-1", &bad), Err(CryptoError::SealedResultRejected)));
        assert!(Seed::random(rng).open(b"session-1", &sealed).is_err());
        assert!(s.open(b"session-1", &sealed[..5]).is_err());
        // Sealing twice under one seed never repeats a nonce.
        let again = s.seal(b"session-1", b"hello", rng);
        assert_ne!(sealed[..NONCE_BYTES], again[..NONCE_BYTES]);
    }
}
