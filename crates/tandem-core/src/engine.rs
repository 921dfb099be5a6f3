//! The preprocessing-engine trait: what S1 and S2 do homomorphically so that
//! the online phase (ring arithmetic, [`mod@crate::online`] and
//! [`crate::activation`]) can run.
//!
//! An engine owns everything between the core's [`SessionStart`] and the
//! two halves it hands back — S1's [`Prepared`] (blinding secrets in the
//! ring) and S2's [`ActivationSession`] (`c`, `ρ`, the seed). Its messages
//! are its own (`ToS2`, `ToS1`); the in-process driver and the conformance
//! tests run every engine through this trait, the way rustls runs every
//! crypto provider through `CryptoProvider`. Paillier (`tandem-paillier`)
//! is the first engine; a lattice engine implements the same trait.
//!
//! Every method that draws randomness takes the caller's CSPRNG, and an
//! engine that parallelizes does so on a pool its constructor was given.

use crate::activation::ActivationSession;
use crate::error::Result;
use crate::messages::{EncryptedSeed, SeedSource, SessionStart};
use crate::online::{OnlineModel, Prepared};
use crate::ring::Ring;
use crate::seed::{DecryptedSecret, Seed};
use rand_core::{CryptoRng, RngCore};
use std::fmt::Debug;
use std::sync::Arc;
use tandem_model::{OutputMode, QuantizedModel};
use tandem_paillier_pk::PublicKey;

/// S1's next preprocessing move.
pub enum S1Step<M, R: Ring> {
    /// Send this to S2 and wait for its answer.
    Send(M),
    /// Preprocessing is complete; the session waits for its input.
    Ready(Prepared<R>),
}

/// S2's next preprocessing move.
pub enum S2Step<M, R: Ring> {
    /// Send this to S1 and wait for the next message.
    Send(M),
    /// Send this to S1; S2's half of the session is complete.
    Ready(M, Box<ActivationSession<R>>),
}

/// What opening a session at S2 yields: the engine's preprocessing state
/// and its first message to S1.
pub type S2Start<E, R> = (<E as PreprocessingEngine>::S2Prep<R>, <E as PreprocessingEngine>::ToS1);

/// A preprocessing engine.
pub trait PreprocessingEngine: Send + Sync + Sized + 'static {
    /// Name for logs and benchmarks.
    const NAME: &'static str;
    /// S1's per-model state (plans, weights in the engine's form, S2's
    /// public key), built by the engine's own constructor.
    type S1Model<R: Ring>: Send + Sync;
    /// S2's key material (including the key the client's seed is
    /// encrypted under).
    type S2Keys: Send + Sync + 'static;
    /// S1 → S2 preprocessing message.
    type ToS2: Clone + Debug + Send;
    /// S2 → S1 preprocessing message.
    type ToS1: Clone + Debug + Send;
    /// S1's state during preprocessing.
    type S1Prep<R: Ring>: Send;
    /// S2's state during preprocessing.
    type S2Prep<R: Ring>: Send;

    /// What S1 builds for `model` from S2's published key material (the
    /// in-process driver's wiring; the servers do the same over the network).
    fn s1_model<R: Ring>(&self, keys: &Self::S2Keys, model: Arc<QuantizedModel>) -> Result<Self::S1Model<R>>;

    /// The key clients encrypt their seed secret under (S2's Paillier key,
    /// in its pure-Rust form), whatever the engine.
    fn seed_key(&self, keys: &Self::S2Keys) -> PublicKey;

    /// The ring form of S1's model (the online phase's input).
    fn online_model<R: Ring>(&self, model: &Self::S1Model<R>) -> Arc<OnlineModel<R>>;

    /// S1 opens a session for one future query in `mode` (§4.0, §4.2):
    /// chooses the session id and rerandomizes the client's `[secret]`, if
    /// the seed is one (a seed session's id and counter pass as they are).
    fn s1_start<R: Ring, G: RngCore + CryptoRng + ?Sized>(
        &self,
        model: &Self::S1Model<R>,
        mode: OutputMode,
        seed: &SeedSource,
        rng: &mut G,
    ) -> Result<(Self::S1Prep<R>, SessionStart)>;

    /// S1 handles S2's next message.
    fn s1_step<R: Ring>(&self, prep: &mut Self::S1Prep<R>, msg: Self::ToS1) -> Result<S1Step<Self::ToS2, R>>;

    /// S2 decrypts a client's `[secret]` (a one-shot seed's or a seed
    /// session's). Called only after the public checks passed; may refuse
    /// only a malformed ciphertext, never a plaintext (PROTOCOL §4.2: no
    /// answer depends on the decrypted value).
    fn s2_decrypt_secret(&self, keys: &Self::S2Keys, enc: &EncryptedSeed) -> Result<DecryptedSecret>;

    /// S2 opens its half of the session from the seed.
    fn s2_start<R: Ring, G: RngCore + CryptoRng + ?Sized>(
        &self,
        keys: &Arc<Self::S2Keys>,
        msg: &SessionStart,
        seed: Seed,
        rng: &mut G,
    ) -> Result<S2Start<Self, R>>;

    /// S2 handles S1's next message.
    fn s2_step<R: Ring>(&self, prep: &mut Self::S2Prep<R>, msg: Self::ToS2) -> Result<S2Step<Self::ToS1, R>>;
}
