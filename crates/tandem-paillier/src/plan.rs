//! Public, per-model bookkeeping S1 does once at load time: the bit bound of
//! every homomorphic integer (§7: "track bit bounds rather than trusting
//! luck") and the packing layout of every round, for each output mode.
//!
//! All bounds are *layer-wide* (the max over neurons), never per neuron: the
//! width of `μ_j` is visible to S2 in the decrypted `C_p`, so a per-neuron
//! width would leak `|t_j|` (hence `|z_j|`) and the norm of row `j` of `W`.

use crate::packing::PackingParams;
use tandem_core::{InputMasking, ProtocolError, Result};
use tandem_model::{ActivationKind, OutputMode, QLayer, QuantizedModel, KAPPA, TAU};

/// `bits(v)` for `v ≥ 0`.
pub fn bits_u64(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// One round with S2.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundPlan {
    /// Index into `QuantizedModel::layers` of the activation (or `None` for the output round).
    pub layer: Option<usize>,
    pub source: String,
    /// `2^{g_bits}` bounds `|g_j|` for every neuron of the layer.
    pub g_bits: u32,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// The input mask (§4.1): `[r]` holds integers below `2^{mask_bits}`.
    pub input_masking: InputMasking,
    pub rounds: Vec<RoundPlan>,
    /// Packing of each hidden round.
    pub hidden_packing: Vec<PackingParams>,
    /// Bits `|t|` can take in each output mode, and the resulting packing.
    pub output_packing: Vec<(OutputMode, PackingParams)>,
}

/// `|t·g| < 2^{b_tg}` in the output round of `mode`.
pub fn output_t_bits(mode: OutputMode, outputs: usize) -> u32 {
    match mode {
        OutputMode::Logits | OutputMode::Probabilities | OutputMode::Sigmoid => 0,
        // t = 2σm (one output) or m·n (tie-break encoding, n outputs)
        OutputMode::Label if outputs == 1 => TAU + 1,
        OutputMode::Label => TAU + bits_u64(outputs as u64),
    }
}

impl Plan {
    pub fn new(model: &QuantizedModel, key_bits: u32) -> Result<Plan> {
        Self::with_first_product(model, key_bits, None)
    }

    /// [`Plan::new`] for an engine that computes the first linear layer's
    /// `g` itself and hands S1 `[g]` with `|g| < 2^{first_g_bits}` (the
    /// lattice engine: `g = s − μ'` with `s, μ' ∈ [0, 2^128)`), instead of
    /// `W·[r]` bounded by the compact mask's width.
    pub fn with_first_product(model: &QuantizedModel, key_bits: u32, first_g_bits: Option<u32>) -> Result<Plan> {
        let k = model.ring_bits;
        let input_masking = InputMasking::of_model(model);
        // D = r ∈ [0, 2^m): the compact mask's width, not k, bounds the
        // first layer's [D], so its slots are k − m bits narrower.
        let mut d_bits = input_masking.mask_bits;
        let mut rounds = Vec::new();
        let mut hidden_packing = Vec::new();
        let mut g_bits = d_bits;
        for (idx, layer) in model.layers.iter().enumerate() {
            match layer {
                QLayer::Linear(l) => {
                    g_bits = match first_g_bits {
                        Some(b) if idx == 0 => b,
                        _ => d_bits + bits_u64(l.max_row_l1),
                    };
                    d_bits = g_bits;
                }
                QLayer::Activation { kind, source, .. } => {
                    let t_bits = if *kind == ActivationKind::Relu { TAU } else { 0 };
                    let packing = PackingParams::new(g_bits + t_bits, KAPPA, key_bits).map_err(|_| {
                        ProtocolError::KeyTooSmall {
                            layer: source.clone(),
                            needed: g_bits + t_bits + KAPPA + 2,
                            key_bits,
                        }
                    })?;
                    hidden_packing.push(packing);
                    rounds.push(RoundPlan { layer: Some(idx), source: source.clone(), g_bits });
                    // New D: m⁻¹·ρ < 2^{2k} (σ = +1) or g + m⁻¹·ρ (σ = −1) for ReLU;
                    // ±ρ with ρ < 2^k for sigmoid/tanh. Values a max pool keeps
                    // across the round (§4.9, ReLU only) keep D = g < 2^{g_bits}.
                    d_bits = match kind {
                        ActivationKind::Relu => g_bits.max(2 * k) + 1,
                        _ => k,
                    };
                }
            }
        }
        let source = "the output layer".to_string();
        rounds.push(RoundPlan { layer: None, source: source.clone(), g_bits });
        let mut output_packing = Vec::new();
        for mode in model.modes() {
            let b_tg = g_bits + output_t_bits(mode, model.output_len);
            let p = PackingParams::new(b_tg, KAPPA, key_bits).map_err(|_| ProtocolError::KeyTooSmall {
                layer: format!("{source} in {mode} mode"),
                needed: b_tg + KAPPA + 2,
                key_bits,
            })?;
            output_packing.push((mode, p));
        }
        Ok(Plan { input_masking, rounds, hidden_packing, output_packing })
    }

    pub fn output_packing(&self, mode: OutputMode) -> Option<PackingParams> {
        self.output_packing.iter().find(|(m, _)| *m == mode).map(|(_, p)| *p)
    }
}
