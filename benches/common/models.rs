//! Benchmark models: the trained ONNX models shipped in models/ (with their
//! test rows from data/) when `tandem-onnx` imports them, else random weights
//! with the same architecture.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, Model, OutputMode, QLayer, QuantConfig, QuantizedModel};

pub fn model_for(
    dims: &[usize],
    acts: &[ActivationKind],
    scale: f32,
    mode: OutputMode,
    seed: u64,
) -> (Model, Arc<QuantizedModel>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let m = random_mlp(&mut rng, dims, acts, scale, mode);
    let q = Arc::new(QuantizedModel::new(&m, QuantConfig::default()).expect("fits the bit budget"));
    (m, q)
}

/// A benchmark model: the trained one with test rows, or random weights.
pub struct Loaded {
    pub m: Model,
    pub q: Arc<QuantizedModel>,
    /// Test rows; empty: random inputs in the declared range.
    pub rows: Vec<Vec<f64>>,
    pub source: String,
}

impl Loaded {
    pub fn input(&self, rng: &mut StdRng) -> Vec<f64> {
        if self.rows.is_empty() {
            random_input(rng, &self.m)
        } else {
            self.rows[rng.gen_range(0..self.rows.len())].clone()
        }
    }
}

/// `[in, out_1, …, out_L]` of a model made only of dense layers and ReLUs.
pub fn relu_mlp_dims(q: &QuantizedModel) -> Option<Vec<usize>> {
    let mut dims = vec![q.input_len()];
    for l in &q.layers {
        match l {
            QLayer::Linear(l) => dims.push(l.out_dim),
            QLayer::Activation { kind: ActivationKind::Relu, .. } => {}
            QLayer::Activation { .. } => return None,
        }
    }
    Some(dims)
}

fn load_onnx(meta_path: &str, dims: &[usize], mode: OutputMode) -> Result<Loaded, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let meta: serde_json::Value = std::fs::read_to_string(root.join(meta_path))
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", meta_path))?;
    let field = |k: &str| meta[k].as_str().map(str::to_owned).ok_or_else(|| format!("{}: no {k:?}", meta_path));
    let (onnx, test_csv) = (field("model")?, field("test_csv")?);
    let range = match meta["input_range"].as_array().map(|a| a.iter().map(|v| v.as_f64()).collect::<Vec<_>>()) {
        Some(v) if v.len() == 2 && v.iter().all(Option::is_some) => (v[0].unwrap(), v[1].unwrap()),
        _ => return Err(format!("{}: no input_range [lo, hi]", meta_path)),
    };
    // The input precision the model server would serve it with: the
    // model's sidecar (the range is the meta file's).
    let sidecar = tandem_onnx::read_input_sidecar(&root.join(&onnx))?;
    let opts = tandem_onnx::InputSidecar::fill(
        sidecar,
        tandem_onnx::ImportOptions { input_range: Some(range), ..Default::default() },
    );
    let m = tandem_onnx::import_file(root.join(&onnx), &opts).map_err(|e| format!("import {onnx}: {e}"))?;
    let q = QuantizedModel::new(&m, QuantConfig::default()).map_err(|e| format!("quantize {onnx}: {e}"))?;
    if relu_mlp_dims(&q).as_deref() != Some(dims) {
        return Err(format!("{onnx} is not a {:?} ReLU MLP", dims));
    }
    q.check_mode(mode).map_err(|e| e.to_string())?;
    let csv = std::fs::read_to_string(root.join(&test_csv)).map_err(|e| format!("{test_csv}: {e}"))?;
    let d = q.input_len();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').take(d).map(|v| v.trim().parse::<f64>()).collect::<Result<Vec<_>, _>>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{test_csv}: {e}"))?;
    if rows.is_empty() || rows.iter().any(|r| r.len() != d || q.quantize_input(r).is_err()) {
        return Err(format!("{test_csv}: rows do not fit the model's input"));
    }
    let source = format!(
        "trained weights ({onnx}), {} test rows ({test_csv}), input range {range:?}, f_in = {}",
        rows.len(),
        q.f_in
    );
    Ok(Loaded { m, q: Arc::new(q), rows, source })
}

/// The trained model described by `meta_path` (a data/*/meta.json: model
/// path, test rows, input range) if it imports as a ReLU MLP with these
/// dims and offers `mode`; else random weights with the same architecture.
pub fn load(meta_path: &str, dims: &[usize], mode: OutputMode, seed: u64) -> Loaded {
    match load_onnx(meta_path, dims, mode) {
        Ok(l) => l,
        Err(e) => {
            println!("{meta_path}: {e}; using random weights with the same architecture");
            let (m, q) = model_for(dims, &[ActivationKind::Relu], 0.1, mode, seed);
            Loaded { m, q, rows: Vec::new(), source: "random weights (uniform ±0.1), random inputs".into() }
        }
    }
}
