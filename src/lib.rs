//! Shared helpers for the workspace-level tests and benchmarks.

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore};
use std::sync::{Arc, OnceLock};
use tandem_core::{
    issue_ticket, run_query, ActivationServer, Client, InProcess, ModelInfo, PreprocessingEngine, Result, Ring,
    Transcript, U256,
};
use tandem_model::{Model, Output, OutputMode, QuantConfig, QuantizedModel};
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
pub struct Harness<E: PreprocessingEngine = PaillierEngine> {
    pub model: Arc<QuantizedModel>,
    pub info: ModelInfo,
    pub s2: ActivationServer<E>,
    pub client: Client,
    pub s1_128: Option<E::S1Model<u128>>,
    pub s1_256: Option<E::S1Model<U256>>,
    /// The one CSPRNG every role draws from.
    pub rng: ChaCha20Rng,
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
        let p = InProcess::new(engine, keys, Arc::new(q), "test", seed)?;
        Ok(Harness {
            model: p.model,
            info: p.info,
            s2: p.s2,
            client: p.client,
            s1_128: p.s1_128,
            s1_256: p.s1_256,
            rng: p.rng,
        })
    }

    /// One private query.
    pub fn infer(&mut self, x: &[f64], mode: OutputMode) -> Result<Output> {
        let Harness { info, s2, client, s1_128, s1_256, rng, .. } = self;
        match (s1_128.as_ref(), s1_256.as_ref()) {
            (Some(s1), _) => run_query(client, info, s1, s2, x, mode, rng).map(|r| r.0),
            (_, Some(s1)) => run_query(client, info, s1, s2, x, mode, rng).map(|r| r.0),
            _ => unreachable!("one ring is set"),
        }
    }

    /// One query on a ticket: the seed is sent and preprocessed first, the
    /// input arrives afterwards (docs/PROTOCOL.md §4.0).
    pub fn infer_with_ticket(&mut self, x: &[f64], mode: OutputMode) -> Result<Output> {
        let Harness { info, s2, client, s1_128, s1_256, rng, .. } = self;
        match (s1_128.as_ref(), s1_256.as_ref()) {
            (Some(s1), _) => issue_ticket(client, info, s1, s2, mode, rng)?.query(x),
            (_, Some(s1)) => issue_ticket(client, info, s1, s2, mode, rng)?.query(x),
            _ => unreachable!("one ring is set"),
        }
    }

    /// Every message of one private query on a k = 128 model.
    pub fn transcript_128(&mut self, x: &[f64], mode: OutputMode) -> Result<Transcript<E, u128>> {
        let Harness { info, s2, client, s1_128, rng, .. } = self;
        let s1 = s1_128.as_ref().expect("k = 128 model");
        run_query(client, info, s1, s2, x, mode, rng).map(|r| r.1)
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
