//! Issue 18 item 2: Keras-/tf2onnx- and PyTorch-shaped graphs. NHWC inputs
//! with the Transposes tf2onnx puts around convolutions (folded exactly into
//! the adjacent linear layer), `padding='same'` (SAME_UPPER/SAME_LOWER,
//! asymmetric for stride 2) and explicit asymmetric pads, strides, Dropout
//! and Identity, Reshape/Flatten in NHWC order, MatMul + Add heads,
//! BatchNormalization as Mul/Add in NHWC layout, GlobalAveragePool.
//!
//! The fixtures (tests/fixtures/keras/, keras_expected.json with
//! onnxruntime's outputs) are made by tests/fixtures/make_keras_fixtures.py.
//! Property tests build the same forms as random IR models: private ==
//! integer reference bit for bit.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::PathBuf;
use tandem::{test_key_1024, Harness};
use tandem_model::quantize::{eval_f64, float_head};
use tandem_model::{ActivationKind, Layer, Model, OutputMode, QuantConfig, QuantizedModel, Shape};
use tandem_onnx::{import_file_with_report, ImportOptions, Imported};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("keras_expected.json")).expect("keras_expected.json");
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn import(e: &Value) -> Imported {
    let file = e["file"].as_str().unwrap();
    import_file_with_report(fixtures().join(file), &ImportOptions::default())
        .unwrap_or_else(|err| panic!("{file}: {err}"))
}

/// The ONNX output's view of a real-valued output vector.
fn view(imp: &Imported, out: &[f64]) -> Vec<f64> {
    imp.report.onnx_view(imp.model.default_mode, out).expect("default mode matches the ONNX head")
}

#[test]
fn keras_shaped_fixtures_import_and_match_onnxruntime() {
    let exp = expected();
    let cases = exp["import"].as_array().unwrap();
    assert!(cases.len() >= 4, "fixtures missing");
    for e in cases {
        let file = e["file"].as_str().unwrap();
        let imp = import(e);
        let layers: Vec<String> = imp.model.layers.iter().map(|l| l.describe()).collect();
        for want in e["layers_contain"].as_array().unwrap() {
            assert!(
                layers.iter().any(|l| l.contains(want.as_str().unwrap())),
                "{file}: no layer mentions {want}: {layers:?}"
            );
        }
        let q = QuantizedModel::new(&imp.model, QuantConfig::default()).unwrap();
        let mode = imp.model.default_mode;
        let mut max_q = 0f64;
        for (x, y) in e["inputs"].as_array().unwrap().iter().zip(e["outputs"].as_array().unwrap()) {
            let (x, y) = (floats(x), floats(y));
            let got = view(&imp, &float_head(&eval_f64(&imp.model, &x), mode));
            for (a, b) in got.iter().zip(&y) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{file}: float {got:?} vs onnxruntime {y:?}");
            }
            // The integer reference tracks onnxruntime within the
            // quantization bound (outputs of size ~1: 2^-8).
            let r = q.reference(&q.quantize_input(&x).unwrap(), mode).unwrap();
            let rv = view(&imp, &r.to_f64());
            for (a, b) in rv.iter().zip(&y) {
                max_q = max_q.max((a - b).abs());
            }
        }
        eprintln!("{file}: layers {layers:?}; max |reference - onnxruntime| {max_q:.2e}");
        assert!(max_q < 1.0 / 256.0, "{file}: reference vs onnxruntime {max_q}");
        // The native format keeps the imported model (permute, asymmetric pads) exactly.
        let back = tandem_model::format::from_bytes(&tandem_model::format::to_bytes(&imp.model).unwrap()).unwrap();
        assert_eq!(back, imp.model, "{file}: .tandem round trip");
    }
}

#[test]
fn keras_shaped_fixtures_private_equals_reference() {
    let exp = expected();
    for e in exp["import"].as_array().unwrap() {
        let file = e["file"].as_str().unwrap();
        let imp = import(e);
        let mut h = Harness::new(&imp.model, test_key_1024()).unwrap_or_else(|err| panic!("{file}: {err}"));
        for (i, x) in e["inputs"].as_array().unwrap().iter().take(2).enumerate() {
            let x = floats(x);
            let modes = if i == 0 { OutputMode::available(h.model.output_len) } else { vec![imp.model.default_mode] };
            for mode in modes {
                let got = h.infer(&x, mode).unwrap_or_else(|err| panic!("{file} {mode}: {err}"));
                assert_eq!(got, h.reference(&x, mode), "{file}: sample {i}, mode {mode}");
            }
        }
    }
}

#[test]
fn keras_refusals_name_op_node_and_what_is_accepted() {
    let exp = expected();
    for e in exp["refuse"].as_array().unwrap() {
        let file = e["file"].as_str().unwrap();
        let opts = ImportOptions { input_range: Some((0.0, 1.0)), ..Default::default() };
        let err = match import_file_with_report(fixtures().join(file), &opts) {
            Ok(_) => panic!("{file} imported but must be refused"),
            Err(err) => err.to_string(),
        };
        for word in e["must_contain"].as_array().unwrap() {
            assert!(err.contains(word.as_str().unwrap()), "{file}: {err:?} does not mention {word}");
        }
    }
}

// ---------------------------------------------------------------------------
// Property tests on random models of the new forms.
// ---------------------------------------------------------------------------

/// `out[k] = in[perm[k]]` for NHWC (h, w, c) -> NCHW (c, h, w).
fn nhwc_to_nchw(h: usize, w: usize, c: usize) -> Vec<usize> {
    let mut p = Vec::with_capacity(h * w * c);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                p.push((y * w + x) * c + ch);
            }
        }
    }
    p
}

fn nchw_to_nhwc(c: usize, h: usize, w: usize) -> Vec<usize> {
    let mut p = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                p.push((ch * h + y) * w + x);
            }
        }
    }
    p
}

/// NHWC input -> permute -> conv (random stride, asymmetric padding) ->
/// activation -> [permute back to NHWC] -> flatten -> dense -> [permute of
/// the outputs].
fn random_keras_model(seed: u64, act: ActivationKind, outputs: usize, mode: OutputMode) -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (h, w, c) = (rng.gen_range(3..6), rng.gen_range(3..6), rng.gen_range(1..3));
    let oc = rng.gen_range(1..3);
    let k = rng.gen_range(2..4);
    let stride = [rng.gen_range(1..3), rng.gen_range(1..3)];
    let padding = [rng.gen_range(0..k), rng.gen_range(0..k)];
    let padding_end = [rng.gen_range(0..k), rng.gen_range(0..k)];
    let mut u = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let conv = Layer::Conv2d {
        in_channels: c,
        out_channels: oc,
        kernel: [k, k],
        stride,
        padding,
        padding_end,
        weights: u(oc * c * k * k),
        bias: u(oc),
    };
    let Shape::Image(_, oh, ow) = conv.output_shape(Shape::Image(c, h, w)).unwrap() else { unreachable!() };
    let n = oc * oh * ow;
    let mut layers = vec![
        Layer::Permute { perm: nhwc_to_nchw(h, w, c), out: Shape::Image(c, h, w) },
        conv,
        Layer::Activation(act),
        Layer::Permute { perm: nchw_to_nhwc(oc, oh, ow), out: Shape::Image(oh, ow, oc) },
        Layer::Flatten,
        Layer::Dense { inputs: n, outputs, weights: u(n * outputs), bias: u(outputs) },
    ];
    if seed.is_multiple_of(2) && outputs > 1 {
        layers.push(Layer::Permute { perm: (0..outputs).rev().collect(), out: Shape::Vector(outputs) });
    }
    Model {
        name: "keras-like".into(),
        input_shape: Shape::Image(h, w, c),
        input_range: (-1.0, 1.0),
        input_frac_bits: tandem_model::F_IN,
        default_mode: mode,
        layers,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    /// Private == integer reference for permuted (NHWC) inputs, asymmetric
    /// padding and strides, permutes before flatten and of the outputs; the
    /// integer reference tracks the float model (which evaluates the
    /// permutes and padding literally).
    #[test]
    fn private_equals_reference_on_keras_forms(
        seed in 0u64..1_000_000,
        act in prop::sample::select(vec![ActivationKind::Relu, ActivationKind::Tanh, ActivationKind::Sigmoid]),
        outputs in 1usize..4,
        xs in 0u64..1000,
    ) {
        let mode = if outputs == 1 { OutputMode::Sigmoid } else { OutputMode::Probabilities };
        let m = random_keras_model(seed, act, outputs, mode);
        let mut h = Harness::new(&m, test_key_1024()).unwrap();
        let x = tandem_model::testing::random_input(&mut rand::rngs::StdRng::seed_from_u64(xs), &m);
        for mode in OutputMode::available(outputs) {
            let got = h.infer(&x, mode).unwrap();
            prop_assert_eq!(&got, &h.reference(&x, mode));
        }
        let z = eval_f64(&m, &x);
        let r = h.reference(&x, OutputMode::Logits).to_f64();
        for (a, b) in r.iter().zip(&z) {
            prop_assert!((a - b).abs() < 1e-2 * (1.0 + b.abs()), "reference {r:?} vs float {z:?}");
        }
    }
}
