//! Shared helpers for the workspace-level tests and benchmarks.

use std::sync::{Arc, OnceLock};
use tandem_crypto::{PublicKey, Ring, SecretKey, U256};
use tandem_model::{Model, Output, OutputMode, QuantConfig, QuantizedModel};
use tandem_protocol::{issue_ticket, run_query, ActivationServer, Client, ModelInfo, ModelServer, Result, Transcript};

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

/// Everything needed to run private queries against one model in-process.
pub struct Harness {
    pub model: Arc<QuantizedModel>,
    pub info: ModelInfo,
    pub s2: ActivationServer,
    pub client: Client,
    s1_128: Option<ModelServer<u128>>,
    s1_256: Option<ModelServer<U256>>,
}

impl Harness {
    pub fn new(model: &Model, sk: &SecretKey) -> Result<Self> {
        Self::with_config(model, sk, QuantConfig::default(), None)
    }

    /// `force_ring` runs a model that fits k = 128 in the k = 256 ring.
    pub fn with_config(model: &Model, sk: &SecretKey, cfg: QuantConfig, force_ring: Option<u32>) -> Result<Self> {
        let mut q = QuantizedModel::new(model, cfg)?;
        if let Some(k) = force_ring {
            assert!(k >= q.ring_bits, "cannot shrink the ring below the budget");
            q.ring_bits = k;
        }
        let model = Arc::new(q);
        // The key is not Clone (it is wiped on drop): a harness gets its own copy
        // the way a server gets one, from the key's file form.
        let s2 = ActivationServer::new(SecretKey::from_file(&sk.to_file()).expect("a valid key round-trips"));
        let pk: PublicKey = s2.public_key().clone();
        let epoch = s2.seed_epoch();
        let (mut s1_128, mut s1_256) = (None, None);
        match model.ring_bits {
            128 => s1_128 = Some(ModelServer::new(model.clone(), pk.clone())?),
            _ => s1_256 = Some(ModelServer::new(model.clone(), pk.clone())?),
        }
        let info = ModelInfo::of("test", &model);
        Ok(Harness { model, info, s2, client: Client::new(pk, epoch), s1_128, s1_256 })
    }

    /// One private query; the transcript's ring is erased to byte sizes.
    pub fn infer(&mut self, x: &[f64], mode: OutputMode) -> Result<Output> {
        match (&self.s1_128, &self.s1_256) {
            (Some(s1), _) => run_query(&self.client, &self.info, s1, &mut self.s2, x, mode).map(|r| r.0),
            (_, Some(s1)) => run_query(&self.client, &self.info, s1, &mut self.s2, x, mode).map(|r| r.0),
            _ => unreachable!(),
        }
    }

    /// S1 for a k = 128 model, for tests that drive the phases by hand.
    pub fn s1_128(&self) -> ModelServer<u128> {
        self.s1_128.clone().expect("k = 128 model")
    }

    /// One query on a ticket: the seed is sent and preprocessed first, the
    /// input arrives afterwards (docs/PROTOCOL.md §4.0).
    pub fn infer_with_ticket(&mut self, x: &[f64], mode: OutputMode) -> Result<Output> {
        match (&self.s1_128, &self.s1_256) {
            (Some(s1), _) => issue_ticket(&self.client, &self.info, s1, &mut self.s2, mode)?.query(x),
            (_, Some(s1)) => issue_ticket(&self.client, &self.info, s1, &mut self.s2, mode)?.query(x),
            _ => unreachable!(),
        }
    }

    pub fn transcript_128(&mut self, x: &[f64], mode: OutputMode) -> Result<Transcript<u128>> {
        let s1 = self.s1_128.as_ref().expect("k = 128 model");
        run_query(&self.client, &self.info, s1, &mut self.s2, x, mode).map(|r| r.1)
    }

    pub fn reference(&self, x: &[f64], mode: OutputMode) -> Output {
        let xi = self.model.quantize_input(x).expect("valid input");
        self.model.reference(&xi, mode).expect("valid mode")
    }
}

/// The ring type name, for messages.
pub fn ring_name<R: Ring>() -> String {
    format!("Z_2^{}", R::BITS)
}
