//! Cryptographic building blocks of tandem (see docs/PROTOCOL.md):
//! Paillier on kzen-paillier/GMP, the ring `Z_{2^k}`, the fast homomorphic
//! matrix–vector product, packing, and the seed-derived PRG and sealing.

pub mod error;
pub mod fixed_base;
pub mod matvec;
pub mod packing;
pub mod paillier;
pub mod ring;
pub mod seed;

pub use error::CryptoError;
pub use kzen_paillier::BigInt;
pub use paillier::{Ciphertext, NoiseSource, PublicKey, SecretKey};
pub use ring::{Ring, U256};
pub use seed::{Seed, SeedEpoch, SeedSecret};

/// Re-exported so dependants can use `BigInt` methods without naming curv.
pub use curv::arithmetic::traits as bigint_traits;

/// `BigInt` from an `i64` (curv only converts from 32-bit signed values).
pub fn bigint_from_i64(v: i64) -> BigInt {
    if v < 0 {
        -BigInt::from(v.unsigned_abs())
    } else {
        BigInt::from(v as u64)
    }
}
