//! Shared helpers for the workspace-level tests and benchmarks.

use rand_core::{OsRng, RngCore};
use std::sync::{Arc, OnceLock};
use tandem_core::{InProcess, PreprocessingEngine, Result, Ring, Transcript};
use tandem_model::{Model, Output, OutputMode, QuantConfig, QuantizedModel};
use tandem_lattice_engine::LatticeEngine;
use tandem_paillier::{ActivationKeys, PaillierEngine, SecretKey};

/// One 1024-bit key per test binary: key generation dominates small tests.
pub fn test_key_1024() -> &'static SecretKey {
    static K: OnceLock<SecretKey> = OnceLock::new();
    K.get_or_init(|| SecretKey::generate(1024).expect("1024 is an accepted size"))
}

/// An owned copy of [`test_key_1024`] (the key type is not `Clone`; a copy
/// comes from its file form, as a server's does).
pub fn test_key_1024_owned() -> SecretKey {
    SecretKey::from_file(&test_key_1024().to_file()).expect("a valid key round-trips")
}

/// One rayon pool per test binary for the Paillier engine (two workers:
/// the machines have two cores).
pub fn test_pool() -> Arc<rayon::ThreadPool> {
    static P: OnceLock<Arc<rayon::ThreadPool>> = OnceLock::new();
    P.get_or_init(|| tandem_paillier::thread_pool(2)).clone()
}

/// S2's Paillier keys for `sk`, on the test pool.
pub fn paillier_keys(sk: &SecretKey, rng: &mut (impl RngCore + rand_core::CryptoRng)) -> ActivationKeys {
    // The key is not Clone (it is wiped on drop): a harness gets its own
    // copy the way a server gets one, from the key's file form.
    let own = SecretKey::from_file(&sk.to_file()).expect("a valid key round-trips");
    ActivationKeys::new(own, test_pool(), rng)
}

/// Everything needed to run private queries against one model in-process,
/// for one engine (the conformance tests run every engine through it). The
/// fields are public so a test can drive the roles by hand.
pub struct Harness<E: PreprocessingEngine = PaillierEngine>(pub InProcess<E>);

impl<E: PreprocessingEngine> std::ops::Deref for Harness<E> {
    type Target = InProcess<E>;
    fn deref(&self) -> &InProcess<E> {
        &self.0
    }
}

impl<E: PreprocessingEngine> std::ops::DerefMut for Harness<E> {
    fn deref_mut(&mut self) -> &mut InProcess<E> {
        &mut self.0
    }
}

/// A fresh 32-byte seed from the OS: tests that do not replay a transcript
/// get different randomness on every run.
pub fn os_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    s
}

impl Harness<PaillierEngine> {
    /// The Paillier engine with S2's key `sk`.
    pub fn new(model: &Model, sk: &SecretKey) -> Result<Self> {
        Self::with_config(model, sk, QuantConfig::default(), None)
    }

    /// `force_ring` runs a model that fits k = 128 in the k = 256 ring.
    pub fn with_config(model: &Model, sk: &SecretKey, cfg: QuantConfig, force_ring: Option<u32>) -> Result<Self> {
        Self::seeded(model, sk, cfg, force_ring, os_seed())
    }

    /// Every role's randomness from `seed` (replayable transcripts).
    pub fn seeded(
        model: &Model,
        sk: &SecretKey,
        cfg: QuantConfig,
        force_ring: Option<u32>,
        seed: [u8; 32],
    ) -> Result<Self> {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed);
        let keys = paillier_keys(sk, &mut rng);
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Harness::with_engine(Arc::new(PaillierEngine), keys, model, cfg, force_ring, s)
    }

    /// S1 for a k = 128 model (a cheap clone), for tests that drive the
    /// phases by hand.
    pub fn s1(&self) -> tandem_paillier::ModelServer<u128> {
        self.s1_128.clone().expect("k = 128 model")
    }
}

/// The lattice engine at the insecure test size (N = 1024, the production
/// `q` and noise analysis), shared by a test binary: parameter set-up
/// computes NTT plans.
pub fn test_lattice_engine() -> Arc<LatticeEngine> {
    static E: OnceLock<Arc<LatticeEngine>> = OnceLock::new();
    E.get_or_init(|| {
        Arc::new(LatticeEngine::with_params(tandem_lattice_engine::tandem_lattice::Params::insecure_test(10)).expect("valid"))
    })
    .clone()
}

impl Harness<LatticeEngine> {
    /// The lattice engine (test parameters) with S2's Paillier key `sk` and
    /// a fresh RLWE key.
    pub fn lattice(model: &Model, sk: &SecretKey) -> Result<Self> {
        Self::lattice_with_config(model, sk, QuantConfig::default(), None)
    }

    /// [`Harness::lattice`] with a quantization config and ring.
    pub fn lattice_with_config(model: &Model, sk: &SecretKey, cfg: QuantConfig, force_ring: Option<u32>) -> Result<Self> {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(os_seed());
        let engine = test_lattice_engine();
        let keys = engine.keys(paillier_keys(sk, &mut rng), &mut rng);
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Harness::with_engine(engine, keys, model, cfg, force_ring, s)
    }
}

impl<E: PreprocessingEngine> Harness<E> {
    /// Any engine, with its S2 keys.
    pub fn with_engine(
        engine: Arc<E>,
        keys: E::S2Keys,
        model: &Model,
        cfg: QuantConfig,
        force_ring: Option<u32>,
        seed: [u8; 32],
    ) -> Result<Self> {
        let mut q = QuantizedModel::new(model, cfg)?;
        if let Some(k) = force_ring {
            assert!(k >= q.ring_bits, "cannot shrink the ring below the budget");
            q.ring_bits = k;
        }
        Ok(Harness(InProcess::new(engine, keys, Arc::new(q), "test", seed)?))
    }

    pub fn transcript_128(&mut self, x: &[f64], mode: OutputMode) -> Result<Transcript<E, u128>> {
        self.0.infer_128(x, mode).map(|r| r.1)
    }

    /// The integer reference's answer.
    pub fn reference(&self, x: &[f64], mode: OutputMode) -> Output {
        let xi = self.model.quantize_input(x).expect("valid input");
        self.model.reference(&xi, mode).expect("valid mode")
    }
}

/// The ring type name, for messages.
pub fn ring_name<R: Ring>() -> String {
    format!("Z_2^{}", R::BITS)
}
