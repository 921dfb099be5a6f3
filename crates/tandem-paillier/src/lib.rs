//! The Paillier preprocessing engine of tandem (docs/PROTOCOL.md §4.2,
//! §4.4–§4.8's homomorphic columns), on kzen-paillier/GMP.
//!
//! It owns S2's Paillier key ([`paillier`]), the homomorphic bit budget
//! ([`plan`]), the fast matrix–vector product ([`matvec`]), packing
//! ([`packing`]), its preprocessing messages ([`messages`]) and the
//! preprocessing halves of S1 ([`model_server`]) and S2
//! ([`activation_server`]). It hands the engine-neutral core
//! (`tandem-core`) a `Prepared` session for S1 and an `ActivationSession`
//! for S2, through [`PaillierEngine`]'s `PreprocessingEngine` impl.
//!
//! Heavy steps run on the rayon pool the engine was built with, never on
//! rayon's global pool; every random choice comes from the caller's CSPRNG.

pub mod activation_server;
pub mod convert;
pub mod engine;
pub mod fixed_base;
pub mod matvec;
pub mod messages;
pub mod model_server;
pub mod packing;
pub mod paillier;
pub mod plan;

pub use activation_server::{ActivationKeys, ActivationPreprocessing};
pub use engine::PaillierEngine;
pub use kzen_paillier::BigInt;
pub use messages::*;
pub use model_server::{ModelServer, Preprocessing};
pub use paillier::{Ciphertext, NoiseSource, PublicKey, SecretKey};
pub use plan::Plan;
pub use tandem_core::{CryptoError, Ring, Seed, SeedEpoch, SeedSecret, U256};

/// Re-exported so dependants can use `BigInt` methods without naming curv.
pub use curv::arithmetic::traits as bigint_traits;

use bigint_traits::Converter;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};

/// `BigInt` from an `i64` (curv only converts from 32-bit signed values).
pub fn bigint_from_i64(v: i64) -> BigInt {
    if v < 0 {
        -BigInt::from(v.unsigned_abs())
    } else {
        BigInt::from(v as u64)
    }
}

/// `BigInt` from an `i128`.
pub fn bigint_from_i128(v: i128) -> BigInt {
    let m = BigInt::from_bytes(&v.unsigned_abs().to_be_bytes());
    if v < 0 {
        -m
    } else {
        m
    }
}

/// `BigInt` from a num-bigint natural number.
pub fn bigint_from_biguint(v: &num_bigint::BigUint) -> BigInt {
    BigInt::from_bytes(&v.to_bytes_be())
}

/// `n` independent CSPRNGs seeded from `rng`, one per parallel task, so a
/// parallel step draws the same values whatever the pool's scheduling.
pub fn split_rng<G: RngCore + CryptoRng + ?Sized>(rng: &mut G, n: usize) -> Vec<ChaCha20Rng> {
    (0..n)
        .map(|_| {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            ChaCha20Rng::from_seed(s)
        })
        .collect()
}

/// A rayon pool for the engine's heavy steps: `threads` workers (0 = one
/// per core).
pub fn thread_pool(threads: usize) -> std::sync::Arc<rayon::ThreadPool> {
    std::sync::Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("paillier-{i}"))
            .build()
            .expect("a rayon pool with default settings builds"),
    )
}
