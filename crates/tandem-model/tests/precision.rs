//! Adaptive weight precision, permute layers, asymmetric padding and the
//! drift check (issue 18 items 2 and 4), on the IR alone.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use tandem_model::quantize::eval_f64;
use tandem_model::{
    check_quantization_drift, format, ActivationKind, DriftBound, Layer, Model, OutputMode, QuantConfig,
    QuantizedModel, Shape,
};

/// A dense layer whose input columns are divided by standard deviations
/// spanning `0.003 .. 600`, like a folded StandardScaler.
fn folded_scaler_model(seed: u64) -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (d, h) = (8, 6);
    let sigma: Vec<f64> = (0..d).map(|i| 0.003 * (200_000f64).powf(i as f64 / (d - 1) as f64)).collect();
    let mut w1 = Vec::new();
    for _ in 0..h {
        for s in &sigma {
            w1.push((rng.gen_range(-1.0..1.0) / s) as f32);
        }
    }
    Model {
        name: "folded".into(),
        input_shape: Shape::Vector(d),
        input_range: (0.0, 1000.0),
        input_frac_bits: tandem_model::F_IN,
        default_mode: OutputMode::Label,
        layers: vec![
            Layer::Dense { inputs: d, outputs: h, weights: w1, bias: vec![0.1; h] },
            Layer::Activation(ActivationKind::Relu),
            Layer::Dense {
                inputs: h,
                outputs: 3,
                weights: (0..3 * h).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                bias: vec![0.0; 3],
            },
        ],
    }
}

#[test]
fn adaptive_precision_takes_bits_only_where_needed_and_keeps_the_ring() {
    let m = folded_scaler_model(1);
    let fixed = QuantizedModel::with_fixed_bits(&m, QuantConfig::default()).unwrap();
    let adaptive = QuantizedModel::new(&m, QuantConfig::default()).unwrap();
    let bits: Vec<u32> = adaptive.weight_bits().iter().map(|b| b.1).collect();
    assert!(bits[0] > 12, "the folded layer gets more bits: {bits:?}");
    assert_eq!(bits[1], 12, "the ordinary layer keeps 12: {bits:?}");
    assert_eq!(adaptive.ring_bits, fixed.ring_bits);
    let bound = DriftBound::default();
    let d12 = check_quantization_drift(&fixed, 64, 1, bound);
    let d = check_quantization_drift(&adaptive, 64, 1, bound);
    assert!(!d12.within_bound(), "{d12}");
    assert!(d.within_bound(), "{d}");
    assert!(d.to_string().contains("within the bound") && d12.to_string().contains("BEYOND"));

    // A model without a wide spread quantizes exactly as before.
    let plain = tandem_model::testing::random_mlp(
        &mut rand::rngs::StdRng::seed_from_u64(2),
        &[5, 4, 3],
        &[ActivationKind::Relu],
        1.0,
        OutputMode::Label,
    );
    assert_eq!(
        QuantizedModel::new(&plain, QuantConfig::default()).unwrap(),
        QuantizedModel::with_fixed_bits(&plain, QuantConfig::default()).unwrap()
    );
    // Bad precision is refused with the accepted range.
    let e = QuantizedModel::with_fixed_bits(&plain, QuantConfig { weight_bits: 40 }).unwrap_err().to_string();
    assert!(e.contains("2..=32"), "{e}");
}

#[test]
fn adaptive_precision_never_grows_the_ring_when_the_budget_is_tight() {
    // The same spread with a huge input range: the budget, not the wish,
    // limits the extra bits, and the ring stays at what 12 bits need.
    let mut m = folded_scaler_model(3);
    m.input_range = (0.0, 1e12);
    let fixed = QuantizedModel::with_fixed_bits(&m, QuantConfig::default()).unwrap();
    let adaptive = QuantizedModel::new(&m, QuantConfig::default()).unwrap();
    assert_eq!(adaptive.ring_bits, fixed.ring_bits);
    let needed = adaptive.budget.iter().map(|b| b.needed_bits).max().unwrap();
    assert!(needed <= adaptive.ring_bits);
}

#[test]
fn permute_and_asymmetric_padding_round_trip_and_validate() {
    let m = Model {
        name: "p".into(),
        input_shape: Shape::Image(3, 2, 2), // read as NHWC h=3, w=2, c=2
        input_range: (-1.0, 1.0),
        input_frac_bits: tandem_model::F_IN,
        default_mode: OutputMode::Logits,
        layers: vec![
            Layer::Permute { perm: vec![0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11], out: Shape::Image(2, 3, 2) },
            Layer::Conv2d {
                in_channels: 2,
                out_channels: 1,
                kernel: [2, 2],
                stride: [2, 1],
                padding: [0, 1],
                padding_end: [1, 0],
                weights: vec![0.5; 8],
                bias: vec![0.25],
            },
            Layer::Flatten,
            Layer::Dense {
                inputs: 4,
                outputs: 2,
                weights: vec![1.0, -1.0, 0.5, 0.5, 0.25, 0.0, 1.0, 2.0],
                bias: vec![0.0; 2],
            },
            Layer::Permute { perm: vec![1, 0], out: Shape::Vector(2) },
        ],
    };
    let shapes = m.shapes().unwrap();
    assert_eq!(shapes[1], Shape::Image(1, 2, 2));
    assert!(m.layers[1].describe().contains("bottom/right 1x0"), "{}", m.layers[1].describe());
    let back = format::from_bytes(&format::to_bytes(&m).unwrap()).unwrap();
    assert_eq!(back, m);

    let mut bad = m.clone();
    bad.layers[0] = Layer::Permute { perm: vec![0; 12], out: Shape::Image(2, 3, 2) };
    let e = bad.shapes().unwrap_err().to_string();
    assert!(e.contains("not a permutation"), "{e}");
    let mut bad = m.clone();
    bad.layers[0] = Layer::Permute { perm: (0..11).collect(), out: Shape::Image(2, 3, 2) };
    assert!(bad.shapes().unwrap_err().to_string().contains("receives 12"));
}

fn random_permuted_model(seed: u64) -> (Model, Vec<f64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (c, h, w) = (rng.gen_range(1..3), rng.gen_range(2..5), rng.gen_range(2..5));
    let n = c * h * w;
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.gen_range(0..=i));
    }
    let k = rng.gen_range(1..3).min(h).min(w);
    let conv = Layer::Conv2d {
        in_channels: c,
        out_channels: 2,
        kernel: [k, k],
        stride: [rng.gen_range(1..3), rng.gen_range(1..3)],
        padding: [rng.gen_range(0..k), rng.gen_range(0..k)],
        padding_end: [rng.gen_range(0..k), rng.gen_range(0..k)],
        weights: (0..2 * c * k * k).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        bias: vec![0.1, -0.1],
    };
    let s = conv.output_shape(Shape::Image(c, h, w)).unwrap();
    let mut p2: Vec<usize> = (0..s.len()).collect();
    p2.reverse();
    let m = Model {
        name: "perm".into(),
        input_shape: Shape::Vector(n),
        input_range: (-1.0, 1.0),
        input_frac_bits: tandem_model::F_IN,
        default_mode: OutputMode::Logits,
        layers: vec![
            Layer::Permute { perm, out: Shape::Image(c, h, w) },
            conv,
            Layer::Activation(ActivationKind::Relu),
            Layer::Permute { perm: p2, out: Shape::Vector(s.len()) },
            Layer::Dense {
                inputs: s.len(),
                outputs: 2,
                weights: (0..2 * s.len()).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                bias: vec![0.0; 2],
            },
        ],
    };
    let x = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    (m, x)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// Permutes fold exactly: the integer reference of a model with permutes
    /// equals the reference of the same model with the permutes applied to
    /// the weights by hand (same quantization), and tracks the float model.
    #[test]
    fn permutes_fold_exactly(seed in 0u64..1_000_000) {
        let (m, x) = random_permuted_model(seed);
        let q = QuantizedModel::new(&m, QuantConfig::default()).unwrap();
        prop_assert!(q.layers.len() == 3, "permutes leave no layer of their own");
        let xi = q.quantize_input(&x).unwrap();
        let z = q.reference_logits(&xi);
        let s = q.output_scale();
        let zf = eval_f64(&m, &x);
        for (a, b) in z.iter().zip(&zf) {
            let a: f64 = a.to_string().parse::<f64>().unwrap() / 2f64.powi(s as i32);
            prop_assert!((a - b).abs() < 1e-2 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
