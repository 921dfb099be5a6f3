//! The client's per-query seed, the input-mask PRG (PROTOCOL §4.1) and
//! result sealing (§6).

use crate::error::CryptoError;
use crate::ring::Ring;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curv::arithmetic::traits::*;
use hkdf::Hkdf;
use kzen_paillier::BigInt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const INPUT_MASK_INFO: &[u8] = b"tandem/v1/input-mask";
pub const RESULT_INFO: &[u8] = b"tandem/v1/result";
/// Bytes of the random nonce in front of a sealed result.
pub const NONCE_BYTES: usize = 12;

/// 32 random bytes, fresh per query, never reused.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Seed([u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Seed {
    /// From the OS CSPRNG.
    pub fn random() -> Self {
        let mut s = [0u8; 32];
        OsRng.fill_bytes(&mut s);
        Seed(s)
    }
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Seed(b)
    }
    /// The seed as the integer `< 2^256` that the client encrypts: its 32
    /// bytes read big-endian.
    pub fn to_bigint(&self) -> BigInt {
        BigInt::from_bytes(&self.0)
    }
    /// Inverse of [`Seed::to_bigint`]; rejects anything outside `[0, 2^256)`.
    pub fn from_bigint(v: &BigInt) -> Result<Self, CryptoError> {
        if v < &BigInt::zero() || v.bit_length() > 256 {
            return Err(CryptoError::BadSeed);
        }
        let b = v.to_bytes();
        let mut s = [0u8; 32];
        s[32 - b.len()..].copy_from_slice(&b);
        Ok(Seed(s))
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

    /// `r ∈ R^d`: HKDF-SHA256(seed, "tandem/v1/input-mask") keys a ChaCha20
    /// stream; element `i` is the next `k/8` bytes, little-endian.
    pub fn input_mask<R: Ring>(&self, d: usize) -> Vec<R> {
        let mut key = self.derive(INPUT_MASK_INFO);
        let mut rng = ChaCha20Rng::from_seed(key);
        key.zeroize();
        (0..d).map(|_| R::random(&mut rng)).collect()
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
    pub fn seal(&self, session_id: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: session_id })
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend(ct);
        out
    }

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
    fn bigint_round_trip() {
        for b in [[0u8; 32], [0xff; 32], {
            let mut x = [0u8; 32];
            x[31] = 7;
            x
        }] {
            let s = Seed::from_bytes(b);
            assert_eq!(Seed::from_bigint(&s.to_bigint()).unwrap(), s);
        }
        assert!(Seed::from_bigint(&(BigInt::one() << 256)).is_err());
        assert!(Seed::from_bigint(&BigInt::from(-1)).is_err());
    }

    #[test]
    fn mask_is_deterministic_and_prefix_stable() {
        let s = Seed::from_bytes([7; 32]);
        let a: Vec<u128> = s.input_mask(10);
        let b: Vec<u128> = s.input_mask(4);
        assert_eq!(&a[..4], &b[..]);
        let other: Vec<u128> = Seed::from_bytes([8; 32]).input_mask(10);
        assert_ne!(a, other);
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
        let m: Vec<crate::ring::U256> = s.input_mask(1);
        assert_eq!(m[0].to_le_bytes_vec(), buf.to_vec());
    }

    #[test]
    fn seal_open_and_tamper() {
        let s = Seed::random();
        let sealed = s.seal(b"session-1", b"hello");
        assert_eq!(s.open(b"session-1", &sealed).unwrap(), b"hello");
        assert!(s.open(b"session-2", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(matches!(s.open(b"session-1", &bad), Err(CryptoError::SealedResultRejected)));
        assert!(Seed::random().open(b"session-1", &sealed).is_err());
        assert!(s.open(b"session-1", &sealed[..5]).is_err());
        // Sealing twice under one seed never repeats a nonce.
        let again = s.seal(b"session-1", b"hello");
        assert_ne!(sealed[..NONCE_BYTES], again[..NONCE_BYTES]);
    }
}
