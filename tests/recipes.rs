//! The "Bring your own model" recipes of docs/MODELS.md, on the models the
//! repository ships (trained and exported by scripts/make_models.py; no
//! Python here). The other recipes' checks live where the models are
//! tested already: the folded scikit-learn scaler in
//! tests/quantization_drift.rs, PyTorch exports in tests/onnx_import.rs,
//! Keras/tf2onnx in tests/keras_import.rs (docs/MODELS.md names them).

mod common;
use common::{read_csv, root};
use prost::Message;
use serde_json::Value;
use tandem::{test_key_1024, Harness};
use tandem_onnx::proto as onnx;
use tandem_onnx::ImportOptions;

/// scikit-learn, scaler on the client: the model is the MLP alone
/// (`models/breast_cancer_mlp.onnx`, trained on standardized features), and
/// the client standardizes raw features with the training mean and std
/// (shipped in `data/breast_cancer_mlp/meta.json`), then clips them to the
/// range in the model's sidecar. The raw rows are the same test split
/// `data/breast_cancer_pipeline/test.csv` holds unscaled.
#[test]
fn sklearn_scaler_on_the_client_with_clipping() {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("data/breast_cancer_mlp/meta.json")).unwrap())
            .unwrap();
    let floats = |k: &str| -> Vec<f64> { meta[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    let (mean, std) = (floats("standardize_mean"), floats("standardize_std"));
    let model_path = root().join("models/breast_cancer_mlp.onnx");
    let (lo, hi) = tandem_onnx::read_input_sidecar(&model_path).unwrap().expect("the sidecar").range;
    assert_eq!((lo, hi), (-5.0, 5.0));
    let (raw_header, raw) = read_csv(&root().join("data/breast_cancer_pipeline/test.csv"));
    let (_, scaled) = read_csv(&root().join("data/breast_cancer_mlp/test.csv"));
    let (_, ort) = read_csv(&root().join("data/breast_cancer_mlp/onnxruntime.csv"));
    let label = raw_header.iter().position(|h| h == "label").unwrap();
    assert_eq!((raw.len(), mean.len()), (scaled.len(), label));

    // The recipe's client-side step, as an app would write it.
    let standardize = |row: &[f64]| -> (Vec<f64>, usize) {
        let mut clipped = 0;
        let x = row[..label]
            .iter()
            .zip(mean.iter().zip(&std))
            .map(|(v, (m, s))| {
                let z = (v - m) / s;
                clipped += usize::from(!(lo..=hi).contains(&z));
                z.clamp(lo, hi)
            })
            .collect();
        (x, clipped)
    };
    let mut clipped_rows = Vec::new();
    for (i, (r, s)) in raw.iter().zip(&scaled).enumerate() {
        let (x, clipped) = standardize(r);
        // What the model was trained and exported on, to float32 rounding.
        let d = x.iter().zip(&s[..label]).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
        assert!(d < 1e-5, "row {i}: client-side scaling differs from the training pipeline's by {d}");
        if clipped > 0 {
            clipped_rows.push(i);
        }
    }
    // The test split has outliers beyond 5 sigma: without the clip the
    // client refuses them (the bit budget is sized for the declared range).
    assert!(!clipped_rows.is_empty(), "the split has no row beyond the range; the clipping step is untested");

    let opts = ImportOptions { input_range: Some((lo, hi)), ..Default::default() };
    let model = tandem_onnx::import_file(&model_path, &opts).unwrap();
    let mut h = Harness::new(&model, test_key_1024()).unwrap();
    let mode = model.default_mode;
    let unclipped: Vec<f64> =
        raw[clipped_rows[0]][..label].iter().zip(mean.iter().zip(&std)).map(|(v, (m, s))| (v - m) / s).collect();
    let e = h.infer(&unclipped, mode).unwrap_err().to_string();
    assert!(e.contains("range"), "an unclipped outlier must be refused, naming the range: {e}");
    for &i in clipped_rows.iter().take(2).chain(&[0, 1, 2]) {
        let (x, _) = standardize(&raw[i]);
        let got = h.infer(&x, mode).unwrap();
        assert_eq!(got, h.reference(&x, mode), "row {i}: private != integer reference");
        assert_eq!(got.label(), ort[i][0] as usize, "row {i}: label differs from onnxruntime's");
    }
}

/// PyTorch: why the recipe says `dynamo=False` (or inline the weights).
/// torch's dynamo exporter may keep weights in a separate `NAME.onnx.data`
/// file (ONNX external data); tandem serves one self-contained file, and an
/// external tensor is refused with the fix. The same graph with its
/// weights inline (what `dynamo=False` writes) imports.
#[test]
fn pytorch_external_weights_are_refused_with_the_fix() {
    let path = root().join("models/pima_mlp.onnx");
    let bytes = std::fs::read(&path).unwrap();
    let opts =
        tandem_onnx::InputSidecar::fill(tandem_onnx::read_input_sidecar(&path).unwrap(), ImportOptions::default());
    tandem_onnx::import_bytes(&bytes, &opts).expect("the bundled dynamo=False export imports");
    let mut m = onnx::ModelProto::decode(&bytes[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    let w = g.initializer.iter_mut().find(|t| t.dims.len() == 2).expect("a weight matrix");
    let name = w.name.clone().expect("a named initializer");
    w.raw_data = None;
    w.float_data.clear();
    w.data_location = Some(1); // EXTERNAL
    w.external_data =
        vec![onnx::StringStringEntryProto { key: Some("location".into()), value: Some("pima_mlp.onnx.data".into()) }];
    let e = tandem_onnx::import_bytes(&m.encode_to_vec(), &opts).unwrap_err().to_string();
    assert!(e.contains(&name) && e.contains("external file") && e.contains("save_as_external_data=False"), "{e}");
}
