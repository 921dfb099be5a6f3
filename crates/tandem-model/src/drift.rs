//! How far the integer reference (what private inference returns, bit for
//! bit) drifts from the float model it was quantized from.
//!
//! [`check_quantization_drift`] evaluates both on random inputs drawn
//! uniformly from the model's declared input range and compares the
//! predicted labels and the logits. The model server runs it at load (a
//! warning, or a refusal with `--strict`); `tandem-eval` prints the same
//! report next to its per-row comparison on real data.

use crate::activation::{argmax_first, binary_label, magnitude_to_f64};
use crate::ir::Layer;
use crate::quantize::{eval_f64, float_label, QuantizedModel};
use num_traits::Signed;
use rand::{Rng, SeedableRng};
use std::fmt;

/// What counts as drift.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftBound {
    /// Largest fraction of samples whose label may differ (0.005 = 0.5%).
    pub max_label_disagreement: f64,
    /// Largest logit error, as a fraction of the largest float logit
    /// magnitude seen over the samples (or of 1, if that is smaller).
    pub max_relative_logit_error: f64,
    /// Largest rounding error of any input column's (or output row's)
    /// weights, relative to that column's (row's) largest weight. Random
    /// inputs over a wide declared range are dominated by the columns with
    /// the largest weights, so they do not see a column rounded to zero; this
    /// does (a folded StandardScaler at one 12-bit scale: 100%).
    pub max_column_error: f64,
}

impl Default for DriftBound {
    fn default() -> Self {
        DriftBound { max_label_disagreement: 0.005, max_relative_logit_error: 0.01, max_column_error: 1.0 / 16.0 }
    }
}

/// The worst-rounded column or row of the model's weights.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnError {
    /// The linear layer (its source).
    pub layer: String,
    /// `"input column i"` or `"output row j"`.
    pub what: String,
    /// `max |w − w_q| / max |w|` over the column (row).
    pub relative_error: f64,
}

/// The result of [`check_quantization_drift`].
#[derive(Clone, Debug, PartialEq)]
pub struct DriftReport {
    pub model: String,
    pub samples: usize,
    /// Samples whose reference label differs from the float model's.
    pub labels_differ: usize,
    /// Of those, the ones the allowed logit error cannot explain: the float
    /// model's margin between its label and the reference's exceeds
    /// `max_relative_logit_error · max(1, max_float_logit)`. Near-ties
    /// (random inputs of an image model produce many) are not drift.
    pub labels_differ_beyond_tie: usize,
    /// `max |z_ref / 2^s − z_float|` over samples and outputs.
    pub max_abs_logit_error: f64,
    /// The largest `|z_float|` over samples and outputs.
    pub max_float_logit: f64,
    /// The worst-rounded input column or output row (dense and conv layers).
    pub worst_column: Option<ColumnError>,
    /// Columns and rows whose relative rounding error exceeds the bound.
    pub columns_beyond_bound: usize,
    /// Columns and rows whose largest weight is below `2^{−27}` of their
    /// layer's largest: no precision tandem takes represents them, and they
    /// are not counted above (typically a feature that is constant in the
    /// training data, its weights decayed to ~0 by L2).
    pub negligible_columns: usize,
    /// Signed weight bits per linear layer.
    pub weight_bits: Vec<(String, u32)>,
    pub ring_bits: u32,
    pub bound: DriftBound,
}

impl DriftReport {
    /// The fraction of samples whose labels differ beyond a near-tie.
    pub fn label_disagreement(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.labels_differ_beyond_tie as f64 / self.samples as f64
        }
    }

    pub fn relative_logit_error(&self) -> f64 {
        self.max_abs_logit_error / self.max_float_logit.max(1.0)
    }

    /// Within [`DriftBound`] on all three counts.
    pub fn within_bound(&self) -> bool {
        self.label_disagreement() <= self.bound.max_label_disagreement
            && self.relative_logit_error() <= self.bound.max_relative_logit_error
            && self.columns_beyond_bound == 0
    }

    /// One line per fact, for logs and `tandem-eval`.
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for DriftReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits: Vec<String> = self.weight_bits.iter().map(|(_, b)| b.to_string()).collect();
        let worst = match &self.worst_column {
            Some(c) => format!(
                "worst-rounded weights: {} of {} ({:.2}% error; {} columns/rows beyond the {:.2}% bound)",
                c.what,
                c.layer,
                100.0 * c.relative_error,
                self.columns_beyond_bound,
                100.0 * self.bound.max_column_error
            ),
            None => "no dense or conv weights".into(),
        };
        let worst = if self.negligible_columns > 0 {
            format!(
                "{worst}; {} columns/rows below 2^-27 of their layer's largest weight ignored",
                self.negligible_columns
            )
        } else {
            worst
        };
        write!(
            f,
            "quantization drift of {:?} on {} random inputs in the declared range: labels differ on {} ({} beyond a near-tie: {:.2}%, bound {:.2}%), \
             max logit error {:.3e} = {:.3}% of the largest float logit {:.3e} (bound {:.2}%); {worst}; \
             weight bits per linear layer [{}], ring {} bits: {}",
            self.model,
            self.samples,
            self.labels_differ,
            self.labels_differ_beyond_tie,
            100.0 * self.label_disagreement(),
            100.0 * self.bound.max_label_disagreement,
            self.max_abs_logit_error,
            100.0 * self.relative_logit_error(),
            self.max_float_logit,
            100.0 * self.bound.max_relative_logit_error,
            bits.join(", "),
            self.ring_bits,
            if self.within_bound() { "within the bound" } else { "BEYOND the bound" }
        )
    }
}

/// Multiply-adds of one reference evaluation (to size the sample).
fn macs(q: &QuantizedModel) -> usize {
    q.layers
        .iter()
        .map(|l| match l {
            crate::quantize::QLayer::Linear(l) => l.rows.iter().map(Vec::len).sum::<usize>(),
            crate::quantize::QLayer::Activation { .. } => 0,
        })
        .sum::<usize>()
        .max(1)
}

/// Default sample count: 256 for small models, fewer for large ones (at
/// least 16), so the check costs about 2^24 multiply-adds at most.
pub fn default_samples(q: &QuantizedModel) -> usize {
    ((1usize << 24) / macs(q)).clamp(16, 256)
}

/// Compares the float model with the integer reference on `samples` inputs
/// drawn uniformly from the declared input range (seeded: the same model and
/// seed give the same report).
pub fn check_quantization_drift(q: &QuantizedModel, samples: usize, seed: u64, bound: DriftBound) -> DriftReport {
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    let (lo, hi) = q.input_range;
    let scale = q.output_scale();
    let (mut labels_differ, mut max_err, mut max_logit) = (0usize, 0f64, 0f64);
    // The float margins of the samples whose labels differ.
    let mut margins = Vec::new();
    for _ in 0..samples {
        let x: Vec<f64> = (0..q.input_len()).map(|_| if lo < hi { rng.gen_range(lo..=hi) } else { lo }).collect();
        let Ok(xi) = q.quantize_input(&x) else { continue };
        // The float model sees the quantized input too, so only the weights'
        // rounding (and the fixed-point activations) count as drift.
        let xq: Vec<f64> = xi.iter().map(|&v| libm::scalbn(v as f64, -(q.f_in as i32))).collect();
        let zf = eval_f64(&q.float, &xq);
        let zi = q.reference_logits(&xi);
        let z_ref: Vec<f64> = zi
            .iter()
            .map(|v| {
                let m = libm::scalbn(magnitude_to_f64(v.magnitude()), -(scale as i32));
                if v.is_negative() {
                    -m
                } else {
                    m
                }
            })
            .collect();
        for (a, b) in z_ref.iter().zip(&zf) {
            max_err = max_err.max((a - b).abs());
            max_logit = max_logit.max(b.abs());
        }
        let ref_label = if zi.len() == 1 { binary_label(&zi[0]) } else { argmax_first(&zi) };
        let fl = float_label(&zf);
        if ref_label != fl {
            labels_differ += 1;
            margins.push(if zf.len() == 1 { zf[0].abs() } else { zf[fl] - zf[ref_label] });
        }
    }
    let tie = bound.max_relative_logit_error * max_logit.max(1.0);
    let labels_differ_beyond_tie = margins.iter().filter(|&&m| m > tie).count();
    let (worst_column, columns_beyond_bound, negligible_columns) = column_errors(q, bound.max_column_error);
    DriftReport {
        model: q.name.clone(),
        worst_column,
        columns_beyond_bound,
        negligible_columns,
        samples,
        labels_differ,
        labels_differ_beyond_tie,
        max_abs_logit_error: max_err,
        max_float_logit: max_logit,
        weight_bits: q.weight_bits(),
        ring_bits: q.ring_bits,
        bound,
    }
}

/// `(max |w|, max |w − w_q|)` of a column or row.
type MaxErr = (f64, f64);

/// Per input column and output row of every dense and conv layer: the
/// largest rounding error relative to the column's (row's) largest weight.
/// Returns the worst, how many exceed `limit`, and how many are negligible.
fn column_errors(q: &QuantizedModel, limit: f64) -> (Option<ColumnError>, usize, usize) {
    let mut worst: Option<ColumnError> = None;
    let (mut beyond, mut negligible) = (0, 0);
    let linear = q.layers.iter().filter_map(|l| match l {
        // A max pool's steps have no float weights to compare.
        crate::quantize::QLayer::Linear(l) if !l.max_pool_step => Some(l),
        _ => None,
    });
    let mut floats = q.float.layers.iter().enumerate().filter(|(_, l)| l.is_linear());
    for ql in linear {
        let Some((idx, fl)) = floats.next() else { break };
        // (max |w|, max |w − w_q|) per column and per row.
        let (cols, rows): (Vec<MaxErr>, Vec<MaxErr>) = match fl {
            Layer::Dense { inputs, outputs, weights, .. } => {
                let mut c = vec![(0f64, 0f64); *inputs];
                let mut r = vec![(0f64, 0f64); *outputs];
                for (j, row) in weights.chunks(*inputs).enumerate() {
                    for (i, &w) in row.iter().enumerate() {
                        let w = w as f64;
                        let e = (w - libm::scalbn(quantize_weight_at(w, ql.f_w) as f64, -(ql.f_w as i32))).abs();
                        for slot in [&mut c[i], &mut r[j]] {
                            slot.0 = slot.0.max(w.abs());
                            slot.1 = slot.1.max(e);
                        }
                    }
                }
                (c, r)
            }
            Layer::Conv2d { in_channels, out_channels, kernel, weights, .. } => {
                let k = kernel[0] * kernel[1];
                let mut c = vec![(0f64, 0f64); *in_channels];
                let mut r = vec![(0f64, 0f64); *out_channels];
                for (b, block) in weights.chunks(k).enumerate() {
                    let (o, ch) = (b / in_channels, b % in_channels);
                    for &w in block {
                        let w = w as f64;
                        let e = (w - libm::scalbn(quantize_weight_at(w, ql.f_w) as f64, -(ql.f_w as i32))).abs();
                        for slot in [&mut c[ch], &mut r[o]] {
                            slot.0 = slot.0.max(w.abs());
                            slot.1 = slot.1.max(e);
                        }
                    }
                }
                (c, r)
            }
            _ => continue,
        };
        let layer = format!("layer {idx} ({})", fl.describe());
        let layer_max = cols.iter().fold(0f64, |a, c| a.max(c.0));
        let floor = libm::scalbn(layer_max, -(crate::MAX_ADAPTIVE_WEIGHT_BITS as i32 - 1));
        for (what, v) in [("input column", &cols), ("output row", &rows)] {
            for (i, &(m, e)) in v.iter().enumerate() {
                if m == 0.0 {
                    continue;
                }
                if m < floor {
                    negligible += 1;
                    continue;
                }
                let rel = e / m;
                beyond += usize::from(rel > limit);
                if worst.as_ref().is_none_or(|w| rel > w.relative_error) {
                    worst =
                        Some(ColumnError { layer: layer.clone(), what: format!("{what} {i}"), relative_error: rel });
                }
            }
        }
    }
    (worst, beyond, negligible)
}

fn quantize_weight_at(w: f64, f_w: u32) -> i64 {
    crate::activation::round_half_away(libm::scalbn(w, f_w as i32)) as i64
}
