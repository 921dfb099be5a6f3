//! The conventional pure-Paillier baseline, for comparison only (not product
//! code): the client holds the key pair, the server holds the model.
//!
//! 1. The client quantizes `x_int = round(x·2^{f_in})` and sends a full
//!    Paillier encryption (fresh full-size `r^N`) of every feature.
//! 2. The server computes each linear layer homomorphically —
//!    `tandem_paillier::matvec::MatvecPlan` (the same product, Straus or subset products, tandem's S1
//!    uses) plus the bias by `add_plain` — rerandomizes the results (without
//!    it the client, who knows its own `r`, could solve for the weights) and
//!    returns the encrypted pre-activations.
//! 3. The client decrypts them, applies the activation with the same
//!    fixed-point functions as the integer reference (ReLU = max(v, 0),
//!    `sigmoid_fixed`, `tanh_fixed`), re-encrypts with full encryptions and
//!    sends them back; repeat per hidden layer.
//! 4. The client decrypts the output logits and applies the head
//!    (`tandem_model::quantize::head`).
//!
//! Same key size, same fixed-point model, so the result equals the integer
//! reference bit for bit (the benches assert it). Note the baseline is
//! *weaker* than tandem: the client sees every hidden pre-activation, which
//! leaks the model; it is here only as the cost yardstick.

use super::{on_client, Cost};
use num_bigint::{BigInt as NumBigInt, Sign};
use rayon::prelude::*;
use tandem_model::activation::{sigmoid_fixed, tanh_fixed};
use tandem_model::quantize::head;
use tandem_model::{ActivationKind, Output, OutputMode, QLayer, QuantizedModel};
use tandem_paillier::bigint_traits::*;
use tandem_paillier::matvec::MatvecPlan;
use tandem_paillier::{BigInt, Ciphertext, NoiseSource, PublicKey, SecretKey};

/// num-bigint → GMP (any sign, any size).
pub fn gmp_from_num(v: &NumBigInt) -> BigInt {
    let (sign, mag) = v.to_bytes_be();
    let m = BigInt::from_bytes(&mag);
    if sign == Sign::Minus {
        -m
    } else {
        m
    }
}

/// GMP → num-bigint (any sign, any size).
pub fn num_from_gmp(v: &BigInt) -> NumBigInt {
    let mag = NumBigInt::from_bytes_be(Sign::Plus, &v.abs().to_bytes());
    if v < &BigInt::zero() {
        -mag
    } else {
        mag
    }
}

/// The model owner in the baseline.
pub struct Server<'a> {
    model: &'a QuantizedModel,
    pk: PublicKey,
    noise: NoiseSource,
    /// Per layer: the bias as GMP integers (empty for activations).
    bias: Vec<Vec<BigInt>>,
    /// Per layer: how `W·[x]` is computed, planned once like tandem's S1
    /// (`None` for activations).
    plans: Vec<Option<MatvecPlan>>,
}

impl<'a> Server<'a> {
    pub fn new(model: &'a QuantizedModel, pk: PublicKey) -> Self {
        let bias = model
            .layers
            .iter()
            .map(|l| match l {
                QLayer::Linear(l) => l.bias.iter().map(gmp_from_num).collect(),
                _ => Vec::new(),
            })
            .collect();
        let plans = model
            .layers
            .iter()
            .map(|l| match l {
                QLayer::Linear(l) => Some(MatvecPlan::new(&l.rows, l.in_dim, pk.ciphertext_bytes())),
                _ => None,
            })
            .collect();
        let noise = NoiseSource::new(&pk, &mut rand_core::OsRng);
        Server { model, pk, noise, bias, plans }
    }

    /// Applies the linear layers from index `at` up to the next activation (or
    /// the end); returns the rerandomized encrypted outputs and the index of
    /// the first layer not applied.
    pub fn forward(&self, mut at: usize, input: Vec<Ciphertext>) -> (Vec<Ciphertext>, usize) {
        let mut cts = input;
        while let Some(QLayer::Linear(l)) = self.model.layers.get(at) {
            assert_eq!(cts.len(), l.in_dim, "{}: input length", l.source);
            let g = self.plans[at].as_ref().expect("a plan per linear layer").apply(&self.pk, &cts);
            cts = g.par_iter().zip(&self.bias[at]).map(|(c, b)| self.pk.add_plain(c, b)).collect();
            at += 1;
        }
        let out = cts.par_iter().map(|c| self.noise.rerandomize(&self.pk, c, &mut rand_core::OsRng)).collect();
        (out, at)
    }
}

/// The data owner in the baseline: holds the Paillier secret key.
pub struct Client<'a> {
    sk: &'a SecretKey,
}

impl<'a> Client<'a> {
    pub fn new(sk: &'a SecretKey) -> Self {
        Client { sk }
    }

    /// Quantizes and encrypts every feature (full encryption each).
    pub fn encrypt_input(&self, model: &QuantizedModel, x: &[f64]) -> Vec<Ciphertext> {
        let x_int = model.quantize_input(x).expect("valid input");
        let pk = self.sk.public();
        x_int.iter().map(|&v| pk.encrypt(&tandem_paillier::bigint_from_i64(v), &mut rand_core::OsRng)).collect()
    }

    fn decrypt_all(&self, cts: &[Ciphertext]) -> Vec<NumBigInt> {
        cts.iter().map(|c| num_from_gmp(&self.sk.decrypt(c))).collect()
    }

    /// Decrypts pre-activations at `scale`, applies `kind`, re-encrypts.
    pub fn activate(&self, kind: ActivationKind, scale: u32, f_act: u32, cts: &[Ciphertext]) -> Vec<Ciphertext> {
        let pk = self.sk.public();
        self.decrypt_all(cts)
            .iter()
            .map(|z| {
                let a = match kind {
                    ActivationKind::Relu => {
                        if z.sign() == Sign::Minus {
                            NumBigInt::from(0)
                        } else {
                            z.clone()
                        }
                    }
                    ActivationKind::Sigmoid => sigmoid_fixed(z, scale, f_act),
                    ActivationKind::Tanh => tanh_fixed(z, scale, f_act),
                };
                pk.encrypt(&gmp_from_num(&a), &mut rand_core::OsRng)
            })
            .collect()
    }

    /// Decrypts the logits and applies the output head.
    pub fn finish(&self, cts: &[Ciphertext], scale: u32, f_act: u32, mode: OutputMode) -> Output {
        head(&self.decrypt_all(cts), scale, f_act, mode)
    }
}

/// What one baseline query cost the client.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Quantize + encrypt every input feature.
    pub encrypt_input: Cost,
    /// Per hidden activation layer: decrypt, activate, re-encrypt.
    pub hidden: Cost,
    /// Decrypt the logits and apply the head.
    pub output: Cost,
    /// Server wall time (not client cost; reported for context).
    pub server_wall: std::time::Duration,
    /// Ciphertexts the client sends / receives.
    pub ciphertexts_sent: usize,
    pub ciphertexts_received: usize,
    /// Client ↔ server round trips.
    pub rounds: usize,
}

impl Stats {
    pub fn client(&self) -> Cost {
        let mut c = self.encrypt_input;
        c += self.hidden;
        c += self.output;
        c
    }
}

/// One baseline query. Client steps run on the one-thread client pool (their
/// CPU time is measured); server steps run on the global pool, untimed.
pub fn run_query(
    client: &Client,
    server: &Server,
    model: &QuantizedModel,
    x: &[f64],
    mode: OutputMode,
) -> (Output, Stats) {
    let mut st = Stats::default();
    let (mut cts, c) = on_client(|| client.encrypt_input(model, x));
    st.encrypt_input = c;
    st.ciphertexts_sent += cts.len();
    let mut at = 0;
    loop {
        let t = std::time::Instant::now();
        let (out, next) = server.forward(at, cts);
        st.server_wall += t.elapsed();
        st.ciphertexts_received += out.len();
        st.rounds += 1;
        at = next;
        match model.layers.get(at) {
            Some(QLayer::Activation { kind, scale, .. }) => {
                let (kind, scale) = (*kind, *scale);
                let (next_in, c) = on_client(|| client.activate(kind, scale, model.f_act, &out));
                st.hidden += c;
                st.ciphertexts_sent += next_in.len();
                cts = next_in;
                at += 1;
            }
            None => {
                let (result, c) = on_client(|| client.finish(&out, model.output_scale(), model.f_act, mode));
                st.output = c;
                return (result, st);
            }
            Some(QLayer::Linear(_)) => unreachable!("forward stops only at an activation or the end"),
        }
    }
}
