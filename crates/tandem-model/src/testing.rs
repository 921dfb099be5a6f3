//! Random models for property tests and benchmarks.

use crate::ir::{ActivationKind, Layer, Model, OutputMode, Shape};
use rand::Rng;

/// A random dense network `dims[0] → … → dims[last]` with the given hidden
/// activation(s) (cycled), weights uniform in ±`scale`.
pub fn random_mlp<R: Rng>(
    rng: &mut R,
    dims: &[usize],
    acts: &[ActivationKind],
    scale: f32,
    default_mode: OutputMode,
) -> Model {
    let mut layers = Vec::new();
    for (li, w) in dims.windows(2).enumerate() {
        let (i, o) = (w[0], w[1]);
        layers.push(Layer::Dense {
            inputs: i,
            outputs: o,
            weights: (0..i * o).map(|_| rng.gen_range(-scale..scale)).collect(),
            bias: (0..o).map(|_| rng.gen_range(-scale..scale)).collect(),
        });
        if li + 2 < dims.len() {
            layers.push(Layer::Activation(acts[li % acts.len()]));
        }
    }
    Model {
        name: "random-mlp".into(),
        input_shape: Shape::Vector(dims[0]),
        input_range: (-1.0, 1.0),
        input_frac_bits: crate::F_IN,
        default_mode,
        layers,
    }
}

/// A small random CNN: conv → act → avgpool → flatten → dense.
pub fn random_cnn<R: Rng>(rng: &mut R, act: ActivationKind, outputs: usize, default_mode: OutputMode) -> Model {
    let (c, h, w) = (1 + rng.gen_range(0..2), 6 + rng.gen_range(0..3), 6 + rng.gen_range(0..3));
    let oc = 1 + rng.gen_range(0..3);
    let k = 2 + rng.gen_range(0..2);
    let stride = 1 + rng.gen_range(0..2);
    let pad = rng.gen_range(0..2);
    let conv = Layer::Conv2d {
        in_channels: c,
        out_channels: oc,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [pad, pad],
        padding_end: [pad, pad],
        weights: (0..oc * c * k * k).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        bias: (0..oc).map(|_| rng.gen_range(-1.0..1.0)).collect(),
    };
    let s1 = conv.output_shape(Shape::Image(c, h, w)).expect("valid conv");
    let pool = Layer::AvgPool2d { kernel: [2, 2], stride: [2, 2] };
    let s2 = pool.output_shape(s1).expect("valid pool");
    Model {
        name: "random-cnn".into(),
        input_shape: Shape::Image(c, h, w),
        input_range: (0.0, 1.0),
        input_frac_bits: crate::F_IN,
        default_mode,
        layers: vec![
            conv,
            Layer::Activation(act),
            pool,
            Layer::Flatten,
            Layer::Dense {
                inputs: s2.len(),
                outputs,
                weights: (0..s2.len() * outputs).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                bias: (0..outputs).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            },
        ],
    }
}

/// A random input inside the model's declared range.
pub fn random_input<R: Rng>(rng: &mut R, model: &Model) -> Vec<f64> {
    let (lo, hi) = model.input_range;
    (0..model.input_shape.len()).map(|_| rng.gen_range(lo..=hi)).collect()
}

/// Where a random max-pool CNN puts its activation relative to the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolAct {
    /// conv → act → maxpool (Keras and the usual PyTorch order).
    Before(ActivationKind),
    /// conv → maxpool → act (`relu(max_pool2d(conv(x)))`, PyTorch's MNIST example).
    After(ActivationKind),
    /// conv → maxpool, no activation.
    None,
}

/// A small random CNN with a max pool: conv → (act) → maxpool (kernel 2 or
/// 3, stride 1..=kernel, padding below the kernel, possibly asymmetric) →
/// (act) → flatten → dense.
pub fn random_maxpool_cnn<R: Rng>(rng: &mut R, act: PoolAct, outputs: usize, default_mode: OutputMode) -> Model {
    let (c, h, w) = (1 + rng.gen_range(0..2), 5 + rng.gen_range(0..3), 5 + rng.gen_range(0..3));
    let oc = 1 + rng.gen_range(0..2);
    let k = 1 + rng.gen_range(0..3);
    let conv = Layer::Conv2d {
        in_channels: c,
        out_channels: oc,
        kernel: [k, k],
        stride: [1, 1],
        padding: [0, 0],
        padding_end: [0, 0],
        weights: (0..oc * c * k * k).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        bias: (0..oc).map(|_| rng.gen_range(-1.0..1.0)).collect(),
    };
    let s1 = conv.output_shape(Shape::Image(c, h, w)).expect("valid conv");
    let pk = [2 + rng.gen_range(0..2), 2 + rng.gen_range(0..2)];
    let pool = Layer::MaxPool2d {
        kernel: pk,
        stride: [1 + rng.gen_range(0..pk[0]), 1 + rng.gen_range(0..pk[1])],
        padding: [rng.gen_range(0..pk[0]), rng.gen_range(0..pk[1])],
        padding_end: [rng.gen_range(0..pk[0]), rng.gen_range(0..pk[1])],
    };
    let s2 = pool.output_shape(s1).expect("valid pool");
    let mut layers = vec![conv];
    match act {
        PoolAct::Before(a) => layers.extend([Layer::Activation(a), pool]),
        PoolAct::After(a) => layers.extend([pool, Layer::Activation(a)]),
        PoolAct::None => layers.push(pool),
    }
    layers.push(Layer::Flatten);
    layers.push(Layer::Dense {
        inputs: s2.len(),
        outputs,
        weights: (0..s2.len() * outputs).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        bias: (0..outputs).map(|_| rng.gen_range(-1.0..1.0)).collect(),
    });
    Model {
        name: "random-maxpool-cnn".into(),
        input_shape: Shape::Image(c, h, w),
        input_range: (0.0, 1.0),
        input_frac_bits: crate::F_IN,
        default_mode,
        layers,
    }
}
