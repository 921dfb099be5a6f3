//! A fixed test vector, for checking that a cross-compiled build computes
//! exactly what the native one does: encrypt a fixed 32-byte secret under a
//! fixed 2048-bit key with a ChaCha20 RNG from a fixed seed, and print the
//! ciphertext's SHA-256 (and the key's fingerprint).
//!
//! `scripts/cross-check.sh` runs it natively and under `qemu-aarch64` and
//! compares the two outputs.
//!
//! The key is a deterministic odd 2048-bit number (SHA-256 in counter mode,
//! top and bottom bits set), not a real Paillier modulus: encryption only
//! needs `N` odd, and the output is checked against the native build, not
//! decrypted. `tests/vector.rs` pins the same output.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use tandem_paillier_pk::PublicKey;

/// The example's key, secret and seed, shared with `tests/vector.rs`.
pub fn vector() -> (PublicKey, [u8; 32], u64) {
    let mut n = Vec::with_capacity(256);
    for i in 0u32..8 {
        let mut h = Sha256::new();
        h.update(b"tandem-paillier-pk/encrypt_vector/modulus");
        h.update(i.to_be_bytes());
        n.extend_from_slice(&h.finalize());
    }
    n[0] |= 0x80;
    n[255] |= 1;
    let pk = PublicKey::from_bytes(&n).expect("an odd 2048-bit modulus");
    let secret: [u8; 32] = Sha256::digest(b"tandem-paillier-pk/encrypt_vector/secret").into();
    (pk, secret, 20261202)
}

#[allow(dead_code)]
fn main() {
    let (pk, secret, seed) = vector();
    let c = pk.encrypt(&secret, &mut ChaCha20Rng::seed_from_u64(seed)).expect("secret < N");
    println!("key {} bits, fingerprint {}", pk.bits(), pk.fingerprint());
    println!("ciphertext {} bytes, sha256 {}", c.len(), hex::encode(Sha256::digest(&c)));
}
