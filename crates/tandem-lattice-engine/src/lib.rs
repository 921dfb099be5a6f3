//! # tandem-lattice-engine
//!
//! The lattice preprocessing engine (issue 15, part 1; docs/PROTOCOL.md
//! §4.2b, SECURITY.md "The lattice engine"). It differs from the Paillier
//! engine in one step, the most expensive one: the first linear layer's
//! product `W·r`.
//!
//! 1. S2 derives `r` from the seed as always and sends it **RLWE-encrypted
//!    under its secret key** (`tandem_lattice::encrypt_vector`), instead of
//!    `d` Paillier encryptions.
//! 2. S1 draws `μ'` uniform in `Z_{2^128}^{n_out}`, fresh per query, and
//!    computes `W·r + μ'` under RLWE, rerandomized with a fresh public-key
//!    encryption of zero and flooded (`tandem_lattice::linear_layer`).
//! 3. S2 decrypts `s = (W·r + μ') mod 2^128` — uniform, whatever `W` and
//!    `r` are — and Paillier-encrypts each `s_j` toward S1.
//! 4. S1 sets `[g_j] = [s_j]·[−μ'_j]`: `g_j ≡ (W·r)_j (mod 2^128)` with
//!    `|g_j| < 2^128`, and the Paillier engine carries on from the first
//!    blinded round as before (per-neuron blinding, packing, `[ρ]`, the
//!    output round).
//!
//! A model whose first layer cannot go this way (its ring is `k = 256`, its
//! first layer is not linear, its weights are wider than the lattice
//! parameters allow, or the layout's noise would not decrypt exactly) runs
//! its first layer on Paillier too; [`LatticeModel::first_layer_on_lattice`]
//! says which, and S1 tells S2 in `SessionStart::first_layer_outputs`
//! (0 = Paillier).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use std::fmt;
use std::sync::Arc;
use tandem_core::engine::{PreprocessingEngine, S1Step, S2Start, S2Step};
use tandem_core::online::OnlineModel;
use tandem_core::{
    ActivationSession, DecryptedSecret, EncryptedSeed, ProtocolError, Result, Ring, Seed, SeedSource, SessionStart,
};
use tandem_lattice::{Context, EncodedWeights, Layout, Params};
use tandem_model::{OutputMode, QLayer, QuantizedModel};
use tandem_paillier::activation_server::{open_session_unencrypted, ActivationPreprocessing};
use tandem_paillier::model_server::{ModelServer, Preprocessing};
use tandem_paillier::{ActivationKeys, BigInt, PaillierEngine, PreprocessingReply, PreprocessingStep};
use zeroize::Zeroizing;

mod full;
pub use full::{output_bits, FullReply, FullS1, FullS2, FullStep, Next, OTS_PER_RELU};
pub use tandem_lattice;
pub use tandem_ot;
use std::collections::VecDeque;
use std::sync::Mutex;
use tandem_ot::{OtReceiverKey, OtSenderKey, SetupReply, SetupRequest};

/// How many OT setups S2 keeps (one per model server it serves; the oldest
/// goes first, and a model server whose setup went runs a new one).
pub const MAX_OT_SETUPS: usize = 64;

/// `|g| < 2^FIRST_G_BITS` for `g = s − μ'` with `s, μ' ∈ [0, 2^128)`.
const FIRST_G_BITS: u32 = 128;

/// The lattice engine with its RLWE parameters.
#[derive(Clone, Debug)]
pub struct LatticeEngine {
    ctx: Arc<Context>,
}

impl LatticeEngine {
    /// The production parameters (`Params::production()`: N = 8192, four
    /// 54-bit primes, 128-bit security by the HE standard; docs/LATTICE.md).
    pub fn production() -> Self {
        let params = Params::production();
        // The security argument (SECURITY.md) rests on this; a change to the
        // parameters that broke it must not build a serving engine.
        assert!(params.meets_he_standard_128(), "the production parameters meet the HE standard's 128-bit bound");
        LatticeEngine { ctx: Context::new(params).expect("the production parameters are valid") }
    }

    /// Any parameters (tests use `Params::insecure_test`, which keeps `q` and
    /// the noise analysis at a smaller, **insecure** ring degree).
    pub fn with_params(params: Params) -> Result<Self> {
        Ok(LatticeEngine { ctx: Context::new(params).map_err(lattice_error)? })
    }

    /// The engine for a context already built (S1's shell drives sessions
    /// through the trait with the context its models use).
    pub fn from_context(ctx: Arc<Context>) -> Self {
        LatticeEngine { ctx }
    }

    /// The RLWE context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// S2's keys: its Paillier keys (the client's seed, the per-neuron
    /// steps) and a fresh RLWE secret key with its public key.
    pub fn keys<G: RngCore + CryptoRng>(&self, paillier: ActivationKeys, rng: &mut G) -> LatticeKeys {
        self.keys_sharing(Arc::new(paillier), rng)
    }

    /// [`LatticeEngine::keys`] for Paillier keys already shared (S2's shell
    /// holds them for its Paillier path too).
    pub fn keys_sharing<G: RngCore + CryptoRng>(&self, paillier: Arc<ActivationKeys>, rng: &mut G) -> LatticeKeys {
        let sk = Arc::new(tandem_lattice::SecretKey::generate(&self.ctx, rng));
        let pk = sk.public_key(rng);
        let mut local_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut local_seed[..]);
        LatticeKeys {
            paillier,
            sk,
            pk,
            ot: Mutex::new(VecDeque::new()),
            local_seed,
            local_ot: Mutex::new(None),
        }
    }
}

/// What S2 publishes of its RLWE key (`GetLatticeKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// The key's bytes (`seed ‖ b`).
    pub key: Vec<u8>,
    /// The parameter set ([`PublicKeyInfo::params_id`]).
    pub params: String,
    /// Lowercase hex SHA-256 over `"tandem/v1/lattice-public-key"`, the
    /// parameter id and the key bytes.
    pub fingerprint: String,
}

impl PublicKeyInfo {
    /// A name for the parameter set that changes with every parameter the
    /// ciphertexts' format or the noise analysis depends on.
    pub fn params_id(ctx: &Context) -> String {
        let p = ctx.params();
        format!(
            "rlwe-n{}-q{}x{}-eta{}-w{}-flood{}-t2^{}",
            p.n(),
            p.num_primes,
            p.prime_bits,
            p.eta,
            p.weight_bits,
            p.flood_bits,
            tandem_lattice::PLAINTEXT_BITS
        )
    }

    /// The published form of `pk`.
    pub fn of(pk: &tandem_lattice::PublicKey) -> Self {
        use sha2::{Digest, Sha256};
        let key = pk.to_bytes();
        let params = Self::params_id(pk.context());
        let mut h = Sha256::new();
        h.update(b"tandem/v1/lattice-public-key");
        h.update(params.as_bytes());
        h.update(&key);
        PublicKeyInfo { key, params, fingerprint: hex::encode(h.finalize()) }
    }
}

fn lattice_error(e: tandem_lattice::LatticeError) -> ProtocolError {
    ProtocolError::Malformed(format!("lattice: {e}"))
}

/// S2's key material under the lattice engine.
pub struct LatticeKeys {
    paillier: Arc<ActivationKeys>,
    sk: Arc<tandem_lattice::SecretKey>,
    pk: tandem_lattice::PublicKey,
    /// S2's halves of the OT setups it holds, oldest first.
    ot: Mutex<VecDeque<Arc<OtSenderKey>>>,
    /// Seeds the in-process S1's OT setup ([`LatticeKeys::local_ot`]).
    local_seed: Zeroizing<[u8; 32]>,
    local_ot: Mutex<Option<LocalOt>>,
}

/// S1's half of an OT setup with its id.
pub type LocalOt = ([u8; 16], Arc<OtReceiverKey>);

impl LatticeKeys {
    /// The RLWE public key S1 rerandomizes with (published to S1).
    pub fn lattice_public_key(&self) -> &tandem_lattice::PublicKey {
        &self.pk
    }
    /// S2's Paillier keys.
    pub fn paillier(&self) -> &Arc<ActivationKeys> {
        &self.paillier
    }
    /// The published form of the RLWE public key.
    pub fn public_key_info(&self) -> PublicKeyInfo {
        PublicKeyInfo::of(&self.pk)
    }

    /// S2's half of a new OT setup (`SetupOt`): answers S1's request and
    /// keeps the result, dropping the oldest beyond [`MAX_OT_SETUPS`].
    pub fn setup_ot<G: RngCore + CryptoRng + ?Sized>(&self, req: &SetupRequest, rng: &mut G) -> Result<SetupReply> {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut g = ChaCha20Rng::from_seed(seed);
        let (key, reply) =
            tandem_ot::s2_setup(req, &mut g).map_err(|e| ProtocolError::Malformed(format!("OT setup: {e}")))?;
        let mut table = self.ot.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= MAX_OT_SETUPS {
            table.pop_front();
        }
        table.push_back(Arc::new(key));
        Ok(reply)
    }

    /// S2's half of the OT setup `id`, if S2 holds it.
    pub fn ot_setup(&self, id: &[u8; 16]) -> Option<Arc<OtSenderKey>> {
        let table = self.ot.lock().unwrap_or_else(|p| p.into_inner());
        table.iter().find(|k| k.id() == *id).cloned()
    }

    /// An OT setup run with this S2 in process (the in-process driver's
    /// and the tests' S1; the servers run [`LatticeKeys::setup_ot`] over
    /// `SetupOt`). Made once, from randomness drawn when the keys were.
    pub fn local_ot(&self) -> Result<LocalOt> {
        let mut local = self.local_ot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &*local {
            if self.ot_setup(&l.0).is_some() {
                return Ok(l.clone());
            }
        }
        let mut g = ChaCha20Rng::from_seed(*self.local_seed);
        let mut fresh = [0u8; 32];
        g.fill_bytes(&mut fresh);
        let mut g = ChaCha20Rng::from_seed(fresh);
        let (pending, req) = tandem_ot::s1_setup_request(&mut g);
        let reply = self.setup_ot(&req, &mut g)?;
        let key = tandem_ot::s1_setup_finish(pending, &reply)
            .map_err(|e| ProtocolError::Malformed(format!("OT setup: {e}")))?;
        let l = (key.id(), Arc::new(key));
        *local = Some(l.clone());
        Ok(l)
    }
}

/// S1's first layer in RLWE form.
struct FirstLayer {
    ctx: Arc<Context>,
    pk: tandem_lattice::PublicKey,
    /// Of `pk` ([`PublicKeyInfo::fingerprint`]), sent in every
    /// `SessionStart` so S2 refuses a stale key.
    fingerprint: String,
    weights: EncodedWeights,
}

/// S1's per-model state under the lattice engine.
pub struct LatticeModel<R: Ring> {
    paillier: ModelServer<R>,
    first: Option<Arc<FirstLayer>>,
    fallback: Option<String>,
    /// Every layer on RLWE and OT (§4.2c), when the model and S2 allow it.
    full: Option<Arc<full::FullModel>>,
    full_fallback: Option<String>,
    /// Of the RLWE key on the full path (sent in `SessionStart`).
    full_fingerprint: Option<String>,
}

impl<R: Ring> Clone for LatticeModel<R> {
    fn clone(&self) -> Self {
        LatticeModel {
            paillier: self.paillier.clone(),
            first: self.first.clone(),
            fallback: self.fallback.clone(),
            full: self.full.clone(),
            full_fallback: self.full_fallback.clone(),
            full_fingerprint: self.full_fingerprint.clone(),
        }
    }
}

// S1's shell reaches the Paillier half's plan, key and checks through it.
impl<R: Ring> std::ops::Deref for LatticeModel<R> {
    type Target = ModelServer<R>;
    fn deref(&self) -> &ModelServer<R> {
        &self.paillier
    }
}

impl<R: Ring> LatticeModel<R> {
    /// Builds S1's state for `model` with S2's Paillier and RLWE public keys.
    pub fn new(
        ctx: &Arc<Context>,
        model: Arc<QuantizedModel>,
        paillier_pk: tandem_paillier::PublicKey,
        lattice_pk: tandem_lattice::PublicKey,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        Self::with_ot(ctx, model, paillier_pk, lattice_pk, None, pool)
    }

    /// [`LatticeModel::new`] with S1's half of an OT setup: then every
    /// layer runs on RLWE and OT (§4.2c) when the model allows it
    /// ([`LatticeModel::all_layers_on_lattice`] says why not otherwise).
    pub fn with_ot(
        ctx: &Arc<Context>,
        model: Arc<QuantizedModel>,
        paillier_pk: tandem_paillier::PublicKey,
        lattice_pk: tandem_lattice::PublicKey,
        ot: Option<LocalOt>,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        let (full, full_fallback) = match (ot, full::check_model(ctx, &model, R::BITS)) {
            (Some((ot_id, ot)), Ok(())) => {
                (Some(Arc::new(full::FullModel { ctx: ctx.clone(), pk: lattice_pk.clone(), ot_id, ot })), None)
            }
            (None, _) => (None, Some("no OT setup with the activation server".to_string())),
            (_, Err(why)) => (None, Some(why)),
        };
        let fingerprint = full.as_ref().map(|_| PublicKeyInfo::of(&lattice_pk).fingerprint);
        let mut m = Self::first_only(ctx, model, paillier_pk, lattice_pk, pool)?;
        m.full_fingerprint = fingerprint;
        m.full = full;
        m.full_fallback = full_fallback;
        Ok(m)
    }

    fn first_only(
        ctx: &Arc<Context>,
        model: Arc<QuantizedModel>,
        paillier_pk: tandem_paillier::PublicKey,
        lattice_pk: tandem_lattice::PublicKey,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        match first_layer(ctx, &model, R::BITS) {
            Ok(weights) => Ok(LatticeModel {
                paillier: ModelServer::with_first_product(model, paillier_pk, pool, Some(FIRST_G_BITS))?,
                first: Some(Arc::new(FirstLayer {
                    ctx: ctx.clone(),
                    fingerprint: PublicKeyInfo::of(&lattice_pk).fingerprint,
                    pk: lattice_pk,
                    weights,
                })),
                fallback: None,
                full: None,
                full_fallback: None,
                full_fingerprint: None,
            }),
            Err(why) => Ok(LatticeModel {
                paillier: ModelServer::new(model, paillier_pk, pool)?,
                first: None,
                fallback: Some(why.clone()),
                full: None,
                full_fallback: Some(why),
                full_fingerprint: None,
            }),
        }
    }

    /// `Ok` if every layer runs on RLWE and OT (§4.2c, no Paillier between
    /// the servers); otherwise why not (the session then takes §4.2b).
    pub fn all_layers_on_lattice(&self) -> std::result::Result<(), &str> {
        match (&self.full, &self.full_fallback) {
            (Some(_), _) => Ok(()),
            (None, Some(why)) => Err(why),
            (None, None) => Err("no OT setup with the activation server"),
        }
    }

    /// The OT setup this model's sessions name, on the full lattice path.
    pub fn ot_setup_id(&self) -> Option<[u8; 16]> {
        self.full.as_ref().map(|f| f.ot_id)
    }

    /// `None` if the first linear layer's product runs on RLWE; otherwise
    /// why it runs on Paillier.
    pub fn first_layer_on_lattice(&self) -> std::result::Result<(), &str> {
        match &self.fallback {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// The Paillier half (plan, packing, per-neuron steps).
    pub fn paillier(&self) -> &ModelServer<R> {
        &self.paillier
    }

    /// The RLWE context, when the first layer (or every layer) runs on
    /// RLWE.
    pub fn lattice_context(&self) -> Option<&Arc<Context>> {
        self.first.as_ref().map(|f| &f.ctx).or(self.full.as_ref().map(|f| &f.ctx))
    }

    /// The fingerprint of S2's RLWE key this model rerandomizes with.
    pub fn lattice_key_fingerprint(&self) -> Option<&str> {
        self.first.as_ref().map(|f| f.fingerprint.as_str()).or(self.full_fingerprint.as_deref())
    }

    /// S1 under the Paillier engine, wrapped: every session takes §4.2's
    /// `[r]` path (what `model-server --engine paillier` serves).
    pub fn paillier_only(paillier: ModelServer<R>) -> Self {
        LatticeModel {
            paillier,
            first: None,
            fallback: Some("the engine is paillier".into()),
            full: None,
            full_fallback: Some("the engine is paillier".into()),
            full_fingerprint: None,
        }
    }

    /// Opens a session (the trait's `s1_start`): the Paillier session start
    /// with `first_layer_outputs` set when the first layer runs on RLWE.
    pub fn start_preprocessing<G: RngCore + CryptoRng + ?Sized>(
        &self,
        mode: OutputMode,
        seed: &SeedSource,
        rng: &mut G,
    ) -> Result<(LatticePreprocessing<R>, SessionStart)> {
        let (paillier, mut start) = self.paillier.start_preprocessing(mode, seed, rng)?;
        if let Some(f) = &self.full {
            let QLayer::Linear(l) = &self.paillier.model().layers[0] else {
                unreachable!("check_model requires a linear first layer")
            };
            start.first_layer_outputs = l.out_dim as u32;
            start.ot_setup = Some(f.ot_id);
            let full = FullS1::start(f.clone(), self.paillier.online_model().clone(), mode, start.session_id, rng)?;
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            let prep =
                LatticePreprocessing { paillier, first: None, mu: None, rng: ChaCha20Rng::from_seed(s), full: Some(full) };
            return Ok((prep, start));
        }
        if let Some(first) = &self.first {
            start.first_layer_outputs = first.weights.layout().n_out as u32;
        }
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        let prep =
            LatticePreprocessing { paillier, first: self.first.clone(), mu: None, rng: ChaCha20Rng::from_seed(s), full: None };
        Ok((prep, start))
    }
}

impl<R: Ring> LatticePreprocessing<R> {
    /// Whether this session's first layer runs on RLWE (S2 then answers the
    /// start with [`LatticeReply::Inputs`], else with Paillier's `[r]`).
    pub fn uses_lattice(&self) -> bool {
        self.first.is_some()
    }

    /// Whether every layer of this session runs on RLWE and OT (§4.2c).
    pub fn uses_full_lattice(&self) -> bool {
        self.full.is_some()
    }

    /// The full-lattice state machine, when the session runs on it.
    pub fn full(&mut self) -> Option<&mut FullS1<R>> {
        self.full.as_mut()
    }

    /// The RLWE layout of the first layer, if it runs on RLWE.
    pub fn layout(&self) -> Option<&Layout> {
        self.first.as_ref().map(|f| f.weights.layout())
    }

    /// Step 3 of §4.2b: S2's RLWE `r` → `W·r + μ'` under RLWE, rerandomized
    /// and flooded, for S2.
    pub fn on_inputs(&mut self, cts: &[tandem_lattice::SeededCiphertext]) -> Result<Vec<tandem_lattice::Ciphertext>> {
        let first = match (&self.first, &self.mu) {
            (Some(first), None) => first.clone(),
            _ => return Err(ProtocolError::OutOfOrder { got: "RLWE input masks" }),
        };
        let n_out = first.weights.layout().n_out;
        // Uniform over the whole plaintext space: S2 decrypts a uniform s
        // whatever W and r are.
        let mu: Zeroizing<Vec<u128>> = Zeroizing::new(
            (0..n_out)
                .map(|_| {
                    let mut b = [0u8; 16];
                    self.rng.fill_bytes(&mut b);
                    u128::from_le_bytes(b)
                })
                .collect(),
        );
        let out = tandem_lattice::linear_layer(&first.pk, &first.weights, cts, &mu, &mut self.rng).map_err(lattice_error)?;
        self.mu = Some(mu);
        Ok(out)
    }

    /// Step 5 of §4.2b: S2's `[s]` → `[g] = [s]·[−μ']`, then the first
    /// Paillier round, as the Paillier engine continues.
    pub fn on_products(&mut self, enc_s: Vec<tandem_paillier::Ciphertext>) -> Result<PreprocessingStep> {
        let Some(mu) = self.mu.take() else {
            return Err(ProtocolError::OutOfOrder { got: "first-layer products" });
        };
        let neg_mu: Vec<BigInt> = mu.iter().map(|&m| BigInt::from(0) - bigint_of(m)).collect();
        self.paillier.on_first_product(enc_s, &neg_mu)
    }

    /// The Paillier state machine, for the rounds after the first layer
    /// (or for the whole session when the first layer is not on RLWE).
    pub fn paillier(&mut self) -> &mut Preprocessing<R> {
        &mut self.paillier
    }

    /// [`LatticePreprocessing::paillier`], by value.
    pub fn into_paillier(self) -> Preprocessing<R> {
        self.paillier
    }
}

/// The first layer's weights in RLWE form, or why the model cannot use it.
fn first_layer(ctx: &Arc<Context>, model: &QuantizedModel, ring_bits: u32) -> std::result::Result<EncodedWeights, String> {
    if ring_bits != 128 {
        return Err(format!("its ring is k = {ring_bits}; the RLWE plaintext space is Z_2^128"));
    }
    let Some(QLayer::Linear(l)) = model.layers.first() else {
        return Err("its first layer is not linear".into());
    };
    let mut dense = vec![0i64; l.out_dim * l.in_dim];
    for (j, row) in l.rows.iter().enumerate() {
        for &(i, w) in row {
            dense[j * l.in_dim + i as usize] = w;
        }
    }
    let w = EncodedWeights::new(ctx, &dense, l.out_dim, l.in_dim).map_err(|e| format!("{e}"));
    zeroize::Zeroize::zeroize(&mut dense);
    let w = w?;
    let layout = w.layout();
    let (up, down) = (layout.bytes_s2_to_s1(ctx), layout.bytes_s1_to_s2(ctx));
    if up.max(down) > MAX_MESSAGE_BYTES {
        return Err(format!(
            "its {}×{} first layer would need {up} B of RLWE ciphertexts to S1 and {down} B back, above the \
             lattice engine's {MAX_MESSAGE_BYTES}-B bound (a wide convolution: Paillier's sparse product suits it better)",
            l.out_dim, l.in_dim
        ));
    }
    Ok(w)
}

/// The most RLWE bytes one way per query the engine accepts for a first
/// layer: a bandwidth guard (the MNIST MLP's 784×128 layer needs 1.55 MB
/// to S1 and 0.45 MB back); a wide convolution beyond it stays on
/// Paillier's sparse product.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;


/// S1 → S2 under the lattice engine.
#[derive(Clone)]
pub enum LatticeStep {
    /// `W·r + μ'` under RLWE, rerandomized and flooded (step 2).
    Products(Vec<tandem_lattice::Ciphertext>),
    /// The Paillier engine's rounds, unchanged.
    Paillier(PreprocessingStep),
    /// A step of the full lattice path (§4.2c).
    Full(FullStep),
}

/// S2 → S1 under the lattice engine.
#[derive(Clone)]
pub enum LatticeReply {
    /// `r` RLWE-encrypted under S2's secret key, one seeded ciphertext per
    /// input block (step 1).
    Inputs(Vec<tandem_lattice::SeededCiphertext>),
    /// `[s_j]` under Paillier, `s = (W·r + μ') mod 2^128` (step 3).
    Products(Vec<tandem_paillier::Ciphertext>),
    /// The Paillier engine's replies, unchanged.
    Paillier(PreprocessingReply),
    /// A reply on the full lattice path (§4.2c).
    Full(FullReply),
    /// S2 stored its half of a full-lattice session.
    FullReady,
}

// Counts only: the ciphertexts are large and say nothing to a reader.
impl fmt::Debug for LatticeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LatticeStep::Products(c) => write!(f, "LatticeStep::Products({} RLWE ciphertexts)", c.len()),
            LatticeStep::Paillier(p) => write!(f, "LatticeStep::Paillier({p:?})"),
            LatticeStep::Full(p) => write!(f, "LatticeStep::Full({p:?})"),
        }
    }
}
impl fmt::Debug for LatticeReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LatticeReply::Inputs(c) => write!(f, "LatticeReply::Inputs({} seeded RLWE ciphertexts)", c.len()),
            LatticeReply::Products(c) => write!(f, "LatticeReply::Products({} Paillier ciphertexts)", c.len()),
            LatticeReply::Paillier(p) => write!(f, "LatticeReply::Paillier({p:?})"),
            LatticeReply::Full(p) => write!(f, "LatticeReply::Full({p:?})"),
            LatticeReply::FullReady => write!(f, "LatticeReply::FullReady"),
        }
    }
}

/// S1's preprocessing of one session.
pub struct LatticePreprocessing<R: Ring> {
    paillier: Preprocessing<R>,
    first: Option<Arc<FirstLayer>>,
    /// `μ'`, drawn when S2's `[r]` arrives, used once when `[s]` does.
    mu: Option<Zeroizing<Vec<u128>>>,
    rng: ChaCha20Rng,
    full: Option<FullS1<R>>,
}

/// S2's preprocessing of one session.
pub struct LatticeActivationPreprocessing<R: Ring> {
    paillier: Option<ActivationPreprocessing<R>>,
    keys: Arc<LatticeKeys>,
    /// The first layer's layout while S2 waits for its products.
    awaiting: Option<Layout>,
    full: Option<(FullS2<R>, tandem_core::SessionId)>,
}

/// S2 opens a session on the full lattice path (§4.2c): the public checks
/// (`k = 128`, the OT setup held, a layout for the first layer), then `r`
/// from the seed, RLWE-encrypted under S2's secret key.
pub fn s2_open_full<R: Ring, G: RngCore + CryptoRng + ?Sized>(
    keys: &Arc<LatticeKeys>,
    msg: &SessionStart,
    seed: Seed,
    rng: &mut G,
) -> Result<(LatticeActivationPreprocessing<R>, Vec<tandem_lattice::SeededCiphertext>)> {
    let Some(id) = msg.ot_setup else {
        return Err(ProtocolError::Malformed("a full-lattice session needs an OT setup id".into()));
    };
    let ot = keys.ot_setup(&id).ok_or(ProtocolError::UnknownOtSetup)?;
    let (full, cts) = full::s2_open::<R, G>(keys.sk.clone(), ot, msg, seed, rng)?;
    Ok((
        LatticeActivationPreprocessing { paillier: None, keys: keys.clone(), awaiting: None, full: Some((full, msg.session_id)) },
        cts,
    ))
}

impl<R: Ring> LatticeActivationPreprocessing<R> {
    /// Whether the session runs on the full lattice path.
    pub fn uses_full_lattice(&self) -> bool {
        self.full.is_some()
    }

    /// One step of S1's on the full lattice path: `Ok(Err(session))` when
    /// S2's half is complete.
    pub fn on_full_step(&mut self, step: FullStep) -> Result<std::result::Result<FullReply, Box<ActivationSession<R>>>> {
        let Some((full, sid)) = self.full.as_mut() else {
            return Err(ProtocolError::OutOfOrder { got: "a full-lattice step in a session that is not one" });
        };
        let sid = *sid;
        Ok(match full.on_step(step, &sid)? {
            full::S2Answer::Reply(r) => Ok(r),
            full::S2Answer::Ready(s) => Err(s),
        })
    }

    /// The layout S2 expects the next products for (full lattice path).
    pub fn full_awaiting(&self) -> Option<Layout> {
        self.full.as_ref().and_then(|(f, _)| f.awaiting_layout())
    }
}

/// S2 opens a session whose first layer runs on RLWE (steps 1–2 of
/// §4.2b): the public checks (`k = 128`, a layout for `(d, n)`), then `r`
/// from the seed, RLWE-encrypted under S2's secret key.
pub fn s2_open<R: Ring, G: RngCore + CryptoRng + ?Sized>(
    ctx: &Arc<Context>,
    keys: &Arc<LatticeKeys>,
    msg: &SessionStart,
    seed: Seed,
    rng: &mut G,
) -> Result<(LatticeActivationPreprocessing<R>, Vec<tandem_lattice::SeededCiphertext>)> {
    // Public checks only, before any use of the seed.
    if R::BITS != 128 {
        return Err(ProtocolError::Malformed(format!(
            "the lattice engine's first layer needs the ring k = 128, not {}",
            R::BITS
        )));
    }
    let layout = Layout::new(ctx, msg.input_len as usize, msg.first_layer_outputs as usize).map_err(lattice_error)?;
    if layout.bytes_s2_to_s1(ctx).max(layout.bytes_s1_to_s2(ctx)) > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::Malformed(format!(
            "a {}×{} first layer is above the lattice engine's {MAX_MESSAGE_BYTES}-B bound per message",
            layout.n_out, layout.n_in
        )));
    }
    let (paillier, r) = open_session_unencrypted::<R, G>(keys.paillier.clone(), msg, seed, rng);
    let paillier = Some(paillier);
    let r: Zeroizing<Vec<u128>> = Zeroizing::new(r.into_iter().map(u128_of).collect());
    let mut g = {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        ChaCha20Rng::from_seed(s)
    };
    let cts = tandem_lattice::encrypt_vector(&keys.sk, &layout, &r, &mut g).map_err(lattice_error)?;
    Ok((LatticeActivationPreprocessing { paillier, keys: keys.clone(), awaiting: Some(layout), full: None }, cts))
}

impl<R: Ring> LatticeActivationPreprocessing<R> {
    /// Step 4 of §4.2b: decrypt `s = (W·r + μ') mod 2^128` and return
    /// `[s]` under Paillier. Fails only on the ciphertexts' shape (count,
    /// rows), never on a decrypted value.
    pub fn on_products(&mut self, cts: &[tandem_lattice::Ciphertext]) -> Result<Vec<tandem_paillier::Ciphertext>> {
        let Some(layout) = self.awaiting.take() else {
            return Err(ProtocolError::OutOfOrder { got: "RLWE products" });
        };
        let s: Zeroizing<Vec<u128>> =
            Zeroizing::new(tandem_lattice::decrypt_outputs(&self.keys.sk, &layout, cts).map_err(lattice_error)?);
        let values: Vec<BigInt> = s.iter().map(|&v| bigint_of(v)).collect();
        let paillier = self.paillier.as_mut().ok_or(ProtocolError::OutOfOrder { got: "RLWE first-layer products" })?;
        Ok(paillier.encrypt_toward_s1(&values))
    }

    /// The layout S2 expects products for, while it waits for them.
    pub fn awaiting(&self) -> Option<&Layout> {
        self.awaiting.as_ref()
    }

    /// The Paillier state machine, for the rounds after the first layer.
    pub fn into_paillier(self) -> ActivationPreprocessing<R> {
        self.paillier.expect("a session opened by s2_open")
    }
}

pub(crate) fn u128_of<R: Ring>(v: R) -> u128 {
    let b = v.to_le_bytes();
    let mut le = [0u8; 16];
    le.copy_from_slice(&b[..16]);
    u128::from_le_bytes(le)
}

fn bigint_of(v: u128) -> BigInt {
    tandem_paillier::convert::gmp_from_ring(v)
}

impl PreprocessingEngine for LatticeEngine {
    const NAME: &'static str = "lattice";
    type S1Model<R: Ring> = LatticeModel<R>;
    type S2Keys = LatticeKeys;
    type ToS2 = LatticeStep;
    type ToS1 = LatticeReply;
    type S1Prep<R: Ring> = LatticePreprocessing<R>;
    type S2Prep<R: Ring> = LatticeActivationPreprocessing<R>;

    fn s1_model<R: Ring>(&self, keys: &LatticeKeys, model: Arc<QuantizedModel>) -> Result<LatticeModel<R>> {
        let p = &keys.paillier;
        let ot = if R::BITS == 128 { Some(keys.local_ot()?) } else { None };
        LatticeModel::with_ot(&self.ctx, model, p.public_key().clone(), keys.pk.clone(), ot, p.pool().clone())
    }

    fn seed_key(&self, keys: &LatticeKeys) -> tandem_core::paillier_pk::PublicKey {
        keys.paillier.public_key().to_pure()
    }

    fn online_model<R: Ring>(&self, model: &LatticeModel<R>) -> Arc<OnlineModel<R>> {
        model.paillier.online_model().clone()
    }

    fn s1_start<R: Ring, G: RngCore + CryptoRng + ?Sized>(
        &self,
        model: &LatticeModel<R>,
        mode: OutputMode,
        seed: &SeedSource,
        rng: &mut G,
    ) -> Result<(LatticePreprocessing<R>, SessionStart)> {
        model.start_preprocessing(mode, seed, rng)
    }

    fn s1_step<R: Ring>(
        &self,
        prep: &mut LatticePreprocessing<R>,
        msg: LatticeReply,
    ) -> Result<S1Step<LatticeStep, R>> {
        if let Some(full) = prep.full.as_mut() {
            return match msg {
                LatticeReply::Inputs(cts) => Ok(S1Step::Send(LatticeStep::Full(full.on_inputs(&cts)?))),
                LatticeReply::Full(r) if full.awaits_inputs() && r.corrections.is_empty() => {
                    Ok(S1Step::Send(LatticeStep::Full(full.on_inputs(&r.inputs)?)))
                }
                LatticeReply::Full(r) if full.awaits_round() => Ok(S1Step::Send(LatticeStep::Full(full.on_round(r)?))),
                LatticeReply::Full(r) if full.awaits_output() => Ok(S1Step::Send(LatticeStep::Full(full.on_output(r)?))),
                LatticeReply::FullReady => Ok(S1Step::Ready(full.on_ready()?)),
                _ => Err(ProtocolError::OutOfOrder { got: "a reply that does not fit the full-lattice session's state" }),
            };
        }
        match msg {
            LatticeReply::Inputs(cts) => Ok(S1Step::Send(LatticeStep::Products(prep.on_inputs(&cts)?))),
            LatticeReply::Products(enc_s) => Ok(S1Step::Send(LatticeStep::Paillier(prep.on_products(enc_s)?))),
            LatticeReply::Paillier(PreprocessingReply::InputMasks(_)) if prep.first.is_some() => {
                Err(ProtocolError::OutOfOrder { got: "Paillier input masks where RLWE ones were expected" })
            }
            LatticeReply::Full(_) | LatticeReply::FullReady => {
                Err(ProtocolError::OutOfOrder { got: "a full-lattice reply in a session that is not one" })
            }
            LatticeReply::Paillier(reply) => Ok(match PaillierEngine.s1_step(&mut prep.paillier, reply)? {
                S1Step::Send(m) => S1Step::Send(LatticeStep::Paillier(m)),
                S1Step::Ready(p) => S1Step::Ready(p),
            }),
        }
    }

    fn s2_decrypt_secret(&self, keys: &LatticeKeys, enc: &EncryptedSeed) -> Result<DecryptedSecret> {
        PaillierEngine.s2_decrypt_secret(&keys.paillier, enc)
    }

    fn s2_start<R: Ring, G: RngCore + CryptoRng + ?Sized>(
        &self,
        keys: &Arc<LatticeKeys>,
        msg: &SessionStart,
        seed: Seed,
        rng: &mut G,
    ) -> Result<S2Start<Self, R>> {
        if msg.ot_setup.is_some() {
            let (prep, cts) = s2_open_full::<R, G>(keys, msg, seed, rng)?;
            return Ok((prep, LatticeReply::Inputs(cts)));
        }
        if msg.first_layer_outputs == 0 {
            let (paillier, reply) = PaillierEngine.s2_start::<R, G>(&keys.paillier, msg, seed, rng)?;
            let prep = LatticeActivationPreprocessing { paillier: Some(paillier), keys: keys.clone(), awaiting: None, full: None };
            return Ok((prep, LatticeReply::Paillier(reply)));
        }
        let (prep, cts) = s2_open::<R, G>(&self.ctx, keys, msg, seed, rng)?;
        Ok((prep, LatticeReply::Inputs(cts)))
    }

    fn s2_step<R: Ring>(
        &self,
        prep: &mut LatticeActivationPreprocessing<R>,
        msg: LatticeStep,
    ) -> Result<S2Step<LatticeReply, R>> {
        if prep.full.is_some() {
            let LatticeStep::Full(step) = msg else {
                return Err(ProtocolError::OutOfOrder { got: "a step that is not a full-lattice one in a full-lattice session" });
            };
            return Ok(match prep.on_full_step(step)? {
                Ok(reply) => S2Step::Send(LatticeReply::Full(reply)),
                Err(session) => S2Step::Ready(LatticeReply::FullReady, session),
            });
        }
        match msg {
            LatticeStep::Products(cts) => Ok(S2Step::Send(LatticeReply::Products(prep.on_products(&cts)?))),
            LatticeStep::Paillier(_) if prep.awaiting.is_some() => {
                Err(ProtocolError::OutOfOrder { got: "a Paillier round before the RLWE products" })
            }
            LatticeStep::Full(_) => Err(ProtocolError::OutOfOrder { got: "a full-lattice step in a session that is not one" }),
            LatticeStep::Paillier(step) => Ok(match PaillierEngine
                .s2_step(prep.paillier.as_mut().ok_or(ProtocolError::OutOfOrder { got: "a Paillier round" })?, step)?
            {
                S2Step::Send(m) => S2Step::Send(LatticeReply::Paillier(m)),
                S2Step::Ready(m, s) => S2Step::Ready(LatticeReply::Paillier(m), s),
            }),
        }
    }
}
