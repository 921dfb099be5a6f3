//! # tandem-lattice
//!
//! Ring-LWE arithmetic for the lattice engine's linear layers (issue 15,
//! part 1): S2 encrypts its mask vector `r ∈ Z_{2^128}^{n_in}` under its
//! secret key; S1 computes `W·r + μ` under encryption, rerandomizes with a
//! fresh public-key encryption of zero and floods the noise; S2 decrypts
//! `(W·r + μ) mod 2^128` **exactly**, row by row.
//!
//! BFV-style symmetric/public-key RLWE over `R_q = Z_q[X]/(X^N + 1)`,
//! `q` a product of NTT-friendly primes (RNS, one `tfhe-ntt` plan per
//! prime), plaintext modulus `t = 2^128` with coefficient encoding and the
//! exact scaling `round(q·m/t)`. Parameters, the noise analysis and the
//! security argument: `docs/LATTICE.md`.
//!
//! Every function that draws randomness takes the caller's
//! `RngCore + CryptoRng`; the crate never seeds one itself (seeded `a`
//! polynomials are expanded from seeds the caller's RNG drew).
//!
//! ```
//! use rand::SeedableRng;
//! use tandem_lattice::*;
//! let ctx = Context::new(Params::insecure_test(10)).unwrap(); // production: Params::production()
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
//! let sk = SecretKey::generate(&ctx, &mut rng);          // S2
//! let pk = sk.public_key(&mut rng);                      // S2 → S1, once
//! let (n_out, n_in) = (3, 5);
//! let w: Vec<i64> = vec![1, -2, 3, -4, 5, 0, 0, 0, 0, 1, -65535, 65535, 7, 8, 9];
//! let r: Vec<u128> = vec![u128::MAX, 1, 2, 3, 4];
//! let mu: Vec<u128> = vec![10, 20, u128::MAX];
//! let layout = Layout::new(&ctx, n_in, n_out).unwrap();   // both servers
//! let cts = encrypt_vector(&sk, &layout, &r, &mut rng).unwrap();              // S2
//! let wts = EncodedWeights::new(&ctx, &w, n_out, n_in).unwrap();             // S1, once
//! let out = linear_layer(&pk, &wts, &cts, &mu, &mut rng).unwrap();            // S1
//! let got = decrypt_outputs(&sk, &layout, &out).unwrap();                    // S2
//! assert_eq!(got, reference_product(&w, n_out, n_in, &r, &mu));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod arith;
mod keys;
mod layer;
mod params;
mod wire;

pub use arith::{is_prime_u64, ntt_primes};
pub use keys::{PublicKey, SecretKey};
pub use layer::{
    decrypt_outputs, decrypt_outputs_with_noise, encrypt_vector, linear_layer, linear_layer_plain, reference_product,
    Ciphertext, EncodedWeights, Layout, SeededCiphertext,
};
pub use params::{Context, Params, HE_STANDARD_128, MAX_DIM, PLAINTEXT_BITS};

/// Everything that can go wrong, typed. Parsing hostile bytes returns one of
/// these and never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LatticeError {
    /// Parameters failed validation.
    #[error("invalid lattice parameters: {0}")]
    InvalidParams(String),
    /// A byte string of the wrong size.
    #[error("{what}: expected {expected} bytes, got {got}")]
    WrongLength {
        /// What was being parsed.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A residue not below its prime.
    #[error("{what}: residue {index} of limb {limb} out of range")]
    CoefficientOutOfRange {
        /// What was being parsed.
        what: &'static str,
        /// Which prime.
        limb: usize,
        /// Which coefficient.
        index: usize,
    },
    /// Non-zero padding bits (one value, one encoding).
    #[error("{what}: non-zero padding")]
    NonZeroPadding {
        /// What was being parsed.
        what: &'static str,
    },
    /// A count that does not match the layout.
    #[error("{what}: expected {expected}, got {got}")]
    WrongCount {
        /// What was counted.
        what: &'static str,
        /// Required count.
        expected: usize,
        /// Actual count.
        got: usize,
    },
    /// A shape the engine refuses.
    #[error("layer {n_out}x{n_in} refused: {reason}")]
    InvalidShape {
        /// Inputs.
        n_in: usize,
        /// Outputs.
        n_out: usize,
        /// Why.
        reason: &'static str,
    },
    /// A weight outside `(−2^bits, 2^bits)`.
    #[error("weight at row {row}, column {col} does not fit in {bits} signed bits")]
    WeightOutOfRange {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The bound's bits.
        bits: u32,
    },
    /// Objects from different parameter sets, or a layout not computed by
    /// [`Layout::new`] for this context.
    #[error("objects from different lattice contexts or layouts")]
    ContextMismatch,
}
