//! MaxPool (issue 18 item 1) on the IR alone: the lowering to
//! `a + ReLU(b − a)` rounds computes exactly the integer max of every window
//! (with a folded ReLU, the max with 0), the float evaluation takes the same
//! windows, and the model file round-trips.

use num_bigint::BigInt;
use proptest::prelude::*;
use rand::SeedableRng;
use tandem_model::quantize::{eval_f64, QLayer};
use tandem_model::testing::{random_input, random_maxpool_cnn, PoolAct};
use tandem_model::{format, ActivationKind, Layer, Model, OutputMode, QuantConfig, QuantizedModel, Shape};

fn act_of(i: u8) -> PoolAct {
    match i % 5 {
        0 => PoolAct::Before(ActivationKind::Relu),
        1 => PoolAct::After(ActivationKind::Relu),
        2 => PoolAct::None,
        3 => PoolAct::Before(ActivationKind::Sigmoid),
        _ => PoolAct::After(ActivationKind::Tanh),
    }
}

/// The integer reference of `conv → act → pool → dense`, computed directly:
/// the first and last linear layers of the quantized model, and between
/// them the activation and the window maxima written out.
fn direct(q: &QuantizedModel, m: &Model, act: PoolAct, x: &[i64]) -> Vec<BigInt> {
    let QLayer::Linear(conv) = &q.layers[0] else { panic!("conv first") };
    let QLayer::Linear(dense) = q.layers.last().unwrap() else { panic!("dense last") };
    let shapes = m.shapes().unwrap();
    let pool = m.layers.iter().find(|l| matches!(l, Layer::MaxPool2d { .. })).unwrap();
    let z = conv.apply(&x.iter().map(|&v| BigInt::from(v)).collect::<Vec<_>>());
    // The same activation the reference applies to a conv output.
    let act_on = |kind: ActivationKind, z: Vec<BigInt>| -> Vec<BigInt> {
        let one = QuantizedModel {
            layers: vec![QLayer::Activation { kind, scale: conv.out_scale, source: String::new(), keep: 0 }],
            ..q.clone()
        };
        one.reference_logits_from(z)
    };
    let z = match act {
        PoolAct::Before(k) => act_on(k, z),
        _ => z,
    };
    let pooled: Vec<BigInt> =
        pool.max_windows(shapes[0]).iter().map(|w| w.iter().map(|&i| z[i].clone()).max().unwrap()).collect();
    let pooled = match act {
        PoolAct::After(k) => act_on(k, pooled),
        _ => pooled,
    };
    dense.apply(&pooled)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn lowered_max_pool_is_the_integer_max(seed in any::<u64>(), act in any::<u8>()) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let act = act_of(act);
        let m = random_maxpool_cnn(&mut rng, act, 3, OutputMode::Label);
        let q = QuantizedModel::new(&m, QuantConfig::default()).unwrap();
        for _ in 0..4 {
            let x = q.quantize_input(&random_input(&mut rng, &m)).unwrap();
            prop_assert_eq!(q.reference_logits(&x), direct(&q, &m, act, &x));
        }
        // A ReLU beside the pool is folded into its tree: no separate round.
        let rounds = q.layers.iter().filter(|l| matches!(l, QLayer::Activation { keep: 0, .. })).count();
        let relu_beside = matches!(act, PoolAct::Before(ActivationKind::Relu) | PoolAct::After(ActivationKind::Relu));
        prop_assert_eq!(rounds, usize::from(!relu_beside && act != PoolAct::None));
    }
}

/// Rounds: ⌈log2(window)⌉, plus the folded ReLU's 0 as one more operand.
#[test]
fn rounds_are_log2_of_the_window() {
    for (kernel, relu, want) in [(2, false, 2), (2, true, 3), (3, false, 4), (3, true, 4)] {
        let mut layers = vec![Layer::Conv2d {
            in_channels: 1,
            out_channels: 1,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            padding_end: [0, 0],
            weights: vec![1.0],
            bias: vec![0.0],
        }];
        if relu {
            layers.push(Layer::Activation(ActivationKind::Relu));
        }
        layers.push(Layer::MaxPool2d {
            kernel: [kernel, kernel],
            stride: [kernel, kernel],
            padding: [0, 0],
            padding_end: [0, 0],
        });
        layers.push(Layer::Flatten);
        layers.push(Layer::Dense { inputs: 4, outputs: 2, weights: vec![0.5; 8], bias: vec![0.0; 2] });
        let side = 2 * kernel;
        let m = Model {
            name: "p".into(),
            input_shape: Shape::Image(1, side, side),
            input_range: (-1.0, 1.0),
            input_frac_bits: tandem_model::F_IN,
            default_mode: OutputMode::Label,
            layers,
        };
        let q = QuantizedModel::new(&m, QuantConfig::default()).unwrap();
        let rounds = q.layers.iter().filter(|l| matches!(l, QLayer::Activation { .. })).count();
        assert_eq!(rounds, want, "kernel {kernel}, relu {relu}");
        // Per round, the activated values are the window's pairs.
        let first = q.layers.iter().find_map(|l| match l {
            QLayer::Activation { keep, .. } => Some(*keep),
            _ => None,
        });
        assert!(first.unwrap() > 0, "the first round keeps operands");
    }
}

#[test]
fn float_max_pool_takes_in_image_cells_only() {
    // 1×2×3 image, 2×2 kernel, stride 2, padding 1 (−∞): windows
    // {0}, {1,2}, {3}, {4,5}.
    let m = Model {
        name: "p".into(),
        input_shape: Shape::Image(1, 2, 3),
        input_range: (-1.0, 1.0),
        input_frac_bits: tandem_model::F_IN,
        default_mode: OutputMode::Label,
        layers: vec![
            Layer::MaxPool2d { kernel: [2, 2], stride: [2, 2], padding: [1, 1], padding_end: [1, 1] },
            Layer::Flatten,
            Layer::Dense { inputs: 4, outputs: 4, weights: identity(4), bias: vec![0.0; 4] },
        ],
    };
    let x = [-0.5, -0.25, -0.75, -1.0, 0.5, 0.25];
    assert_eq!(eval_f64(&m, &x), vec![-0.5, -0.25, -1.0, 0.5]);
    let q = QuantizedModel::new(&m, QuantConfig::default()).unwrap();
    let xi = q.quantize_input(&x).unwrap();
    let got: Vec<f64> = q.reference_logits(&xi).iter().map(|v| v.to_string().parse::<f64>().unwrap()).collect();
    let s = (q.output_scale() as f64).exp2();
    assert_eq!(got.iter().map(|v| v / s).collect::<Vec<_>>(), vec![-0.5, -0.25, -1.0, 0.5]);
    // Round trip through the model file keeps the layer.
    let back = format::from_bytes(&format::to_bytes(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}

#[test]
fn max_pool_refuses_bad_shapes_with_reasons() {
    let pool =
        |k: usize, p: usize| Layer::MaxPool2d { kernel: [k, k], stride: [1, 1], padding: [p, p], padding_end: [p, p] };
    assert!(pool(2, 2).output_shape(Shape::Image(1, 4, 4)).unwrap_err().contains("padding must be smaller"));
    assert!(pool(5, 0).output_shape(Shape::Image(1, 4, 4)).unwrap_err().contains("kernel larger"));
    assert!(pool(2, 0).output_shape(Shape::Vector(4)).unwrap_err().contains("image"));
    assert!(pool(0, 0).output_shape(Shape::Image(1, 4, 4)).unwrap_err().contains("positive"));
}

fn identity(n: usize) -> Vec<f32> {
    (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect()
}
