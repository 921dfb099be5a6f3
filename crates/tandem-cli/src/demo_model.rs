//! The bundled demo model: a small ReLU MLP that recognizes four kinds of
//! strokes in a noisy 5×5 grayscale image (horizontal, vertical, "\" and
//! "/"), trained here with plain SGD from a fixed seed. Regenerate the
//! committed files with `cargo run -p tandem-cli --example make_demo_model`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_model::{ActivationKind, Layer, Model, OutputMode, Shape};

pub const SIDE: usize = 5;
pub const CLASSES: [&str; 4] = ["horizontal", "vertical", "diagonal \\", "diagonal /"];
const DIMS: [usize; 4] = [SIDE * SIDE, 32, 16, 4];

/// One noisy image of class `c` (values in [0, 1], row-major).
pub fn sample(rng: &mut StdRng, c: usize) -> Vec<f64> {
    let mut img: Vec<f64> = (0..SIDE * SIDE).map(|_| rng.gen_range(0.0..0.3)).collect();
    let k = rng.gen_range(0..SIDE) as isize;
    let off = rng.gen_range(-1isize..=1);
    for i in 0..SIDE as isize {
        let (r, col) = match c {
            0 => (k, i),
            1 => (i, k),
            2 => (i, i + off),
            _ => (i, SIDE as isize - 1 - i + off),
        };
        if (0..SIDE as isize).contains(&col) {
            img[(r as usize) * SIDE + col as usize] = rng.gen_range(0.7..1.0);
        }
    }
    img
}

pub fn dataset(rng: &mut StdRng, n: usize) -> Vec<(Vec<f64>, usize)> {
    (0..n)
        .map(|_| {
            let c = rng.gen_range(0..CLASSES.len());
            (sample(rng, c), c)
        })
        .collect()
}

struct Net {
    w: Vec<Vec<f64>>, // layer l: out × in, row-major
    b: Vec<Vec<f64>>,
}

impl Net {
    fn new(rng: &mut StdRng) -> Net {
        let mut w = Vec::new();
        let mut b = Vec::new();
        for win in DIMS.windows(2) {
            let (i, o) = (win[0], win[1]);
            let s = (2.0 / i as f64).sqrt();
            w.push((0..i * o).map(|_| rng.gen_range(-s..s)).collect());
            b.push(vec![0.0; o]);
        }
        Net { w, b }
    }

    /// Activations of every layer (post-ReLU for hidden ones; logits last).
    fn forward(&self, x: &[f64]) -> Vec<Vec<f64>> {
        let mut acts = vec![x.to_vec()];
        for l in 0..self.w.len() {
            let (i, o) = (DIMS[l], DIMS[l + 1]);
            let a = acts.last().expect("input");
            let mut z: Vec<f64> =
                (0..o).map(|j| self.b[l][j] + (0..i).map(|k| self.w[l][j * i + k] * a[k]).sum::<f64>()).collect();
            if l + 1 < self.w.len() {
                z.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            acts.push(z);
        }
        acts
    }

    fn predict(&self, x: &[f64]) -> usize {
        tandem_model::quantize::float_label(self.forward(x).last().expect("logits"))
    }

    /// One SGD step on softmax cross-entropy.
    #[allow(clippy::needless_range_loop)]
    fn step(&mut self, x: &[f64], y: usize, lr: f64) {
        let acts = self.forward(x);
        let z = acts.last().expect("logits");
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let mut delta: Vec<f64> = e.iter().enumerate().map(|(j, v)| v / s - if j == y { 1.0 } else { 0.0 }).collect();
        for l in (0..self.w.len()).rev() {
            let (i, o) = (DIMS[l], DIMS[l + 1]);
            let a = &acts[l];
            let mut prev = vec![0.0; i];
            for j in 0..o {
                for k in 0..i {
                    prev[k] += self.w[l][j * i + k] * delta[j];
                    self.w[l][j * i + k] -= lr * delta[j] * a[k];
                }
                self.b[l][j] -= lr * delta[j];
            }
            if l > 0 {
                // ReLU derivative at the previous layer's output.
                delta = prev.iter().zip(&acts[l]).map(|(d, a)| if *a > 0.0 { *d } else { 0.0 }).collect();
            }
        }
    }
}

/// Trains the demo model; returns it with its accuracy on fresh test data.
pub fn train(seed: u64) -> (Model, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = Net::new(&mut rng);
    let train = dataset(&mut rng, 4000);
    for epoch in 0..8 {
        let lr = 0.05 / (1.0 + epoch as f64);
        for (x, y) in &train {
            net.step(x, *y, lr);
        }
    }
    let test = dataset(&mut rng, 1000);
    let acc = test.iter().filter(|(x, y)| net.predict(x) == *y).count() as f64 / test.len() as f64;
    let mut layers = Vec::new();
    for l in 0..net.w.len() {
        layers.push(Layer::Dense {
            inputs: DIMS[l],
            outputs: DIMS[l + 1],
            weights: net.w[l].iter().map(|&v| v as f32).collect(),
            bias: net.b[l].iter().map(|&v| v as f32).collect(),
        });
        if l + 1 < net.w.len() {
            layers.push(Layer::Activation(ActivationKind::Relu));
        }
    }
    let model = Model {
        name: "strokes-5x5-mlp".into(),
        input_shape: Shape::Vector(SIDE * SIDE),
        input_range: (0.0, 1.0),
        input_frac_bits: tandem_model::F_IN,
        default_mode: OutputMode::Label,
        layers,
    };
    (model, acc)
}

/// The image as text, one row per line.
pub fn render(x: &[f64], side: usize) -> Vec<String> {
    x.chunks(side)
        .map(|row| {
            row.iter()
                .map(|&v| match v {
                    v if v >= 0.75 => "██",
                    v if v >= 0.5 => "▓▓",
                    v if v >= 0.25 => "░░",
                    _ => "··",
                })
                .collect()
        })
        .collect()
}
