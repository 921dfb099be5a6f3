//! The fixed vector of `examples/encrypt_vector.rs`, pinned: a change in the
//! draw of `r`, the arithmetic or the encoding changes this ciphertext
//! (and breaks recorded transcripts). `scripts/cross-check.sh` compares the
//! example's output on aarch64 (under qemu) with the native one.

#[path = "../examples/encrypt_vector.rs"]
mod example;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

#[test]
fn the_encrypt_vector_is_pinned() {
    let (pk, secret, seed) = example::vector();
    let c = pk.encrypt(&secret, &mut ChaCha20Rng::seed_from_u64(seed)).unwrap();
    assert_eq!(c.len(), 512);
    assert_eq!(hex::encode(Sha256::digest(&c)), PINNED_SHA256);
}

const PINNED_SHA256: &str = "1648268aeb67acd987c11159cba3e6514fe62bc5e3890975177fc28495adbbd5";
