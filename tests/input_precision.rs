//! A model's declared input precision (`input_frac_bits` in its sidecar,
//! docs/MODELS.md): how the sidecar is read, and why the bundled MNIST
//! models declare 8 fraction bits instead of the default 16. Their pixels
//! are `k/255`: at `f_in = 8` distinct pixels still quantize to distinct
//! integers, and the compact masked input is 8 bits narrower per feature
//! (docs/PROTOCOL.md §4.1). The claim checked here is the one that matters
//! for the choice: on the whole bundled test split the integer reference
//! (which private inference equals bit for bit) predicts the same labels
//! at 8 as at 16, and the load-time drift check stays quiet.
//!
//! `cargo test --test input_precision -- --nocapture` prints the table
//! quoted in docs/eval-results.md.

use std::path::{Path, PathBuf};
use tandem_model::{OutputMode, QuantConfig, QuantizedModel};
use tandem_onnx::{parse_input_sidecar, ImportOptions, InputSidecar};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_sidecar_declares_a_range_and_optionally_a_precision() {
    let s = parse_input_sidecar("0,1\n").unwrap();
    assert_eq!(s, InputSidecar { range: (0.0, 1.0), input_frac_bits: None });
    let s = parse_input_sidecar("# pixels k/255\n-5, 5\n\ninput_frac_bits = 8\n").unwrap();
    assert_eq!(s, InputSidecar { range: (-5.0, 5.0), input_frac_bits: Some(8) });
    assert_eq!(parse_input_sidecar("0,1\ninput_frac_bits=0").unwrap().input_frac_bits, Some(0));
    for (text, want) in [
        ("0,1\ninput_frac_bits = 33", "not an integer from 0 to 32"),
        ("0,1\ninput_frac_bits = -1", "not an integer from 0 to 32"),
        ("0,1\ninput_frac_bits = 8\ninput_frac_bits = 9", "declared twice"),
        ("0,1\nf_in = 8", "unknown line \"f_in = 8\""),
        ("input_frac_bits = 8\n0,1", "is not \"lo,hi\""),
        ("", "is not \"lo,hi\""),
    ] {
        let e = parse_input_sidecar(text).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
    }
    // The command line's range wins over the file's; the precision comes
    // from the file unless the options declare one.
    let opts = InputSidecar::fill(
        Some(InputSidecar { range: (0.0, 1.0), input_frac_bits: Some(8) }),
        ImportOptions { input_range: Some((0.0, 2.0)), ..Default::default() },
    );
    assert_eq!((opts.input_range, opts.input_frac_bits), (Some((0.0, 2.0)), Some(8)));
    let opts = InputSidecar::fill(None, ImportOptions::default());
    assert_eq!((opts.input_range, opts.input_frac_bits), (None, None));
}

#[test]
fn the_declared_precision_reaches_the_quantized_model_and_the_model_file() {
    let path = root().join("models/mnist_mlp.onnx");
    let sidecar = tandem_onnx::read_input_sidecar(&path).unwrap();
    assert_eq!(sidecar, Some(InputSidecar { range: (0.0, 1.0), input_frac_bits: Some(8) }));
    let imp = tandem_onnx::import_file_with_report(&path, &InputSidecar::fill(sidecar, Default::default())).unwrap();
    assert_eq!(imp.report.input_frac_bits, (8, "options".to_string()));
    let q = QuantizedModel::new(&imp.model, QuantConfig::default()).unwrap();
    assert_eq!(q.f_in, 8);
    assert_eq!(q.quantize_input(&[1.0; 784]).unwrap()[0], 256);
    // The first layer's scale starts at f_in: its output scale is 8 + f_w.
    let tandem_model::QLayer::Linear(first) = &q.layers[0] else { panic!("a linear first layer") };
    assert_eq!((first.in_scale, first.out_scale), (8, 8 + first.f_w));
    // A .tandem file keeps the precision; one at the default writes none.
    let bytes = tandem_model::format::to_bytes(&imp.model).unwrap();
    assert_eq!(tandem_model::format::from_bytes(&bytes).unwrap().input_frac_bits, 8);
    let default = tandem_model::Model { input_frac_bits: tandem_model::F_IN, ..imp.model.clone() };
    let text = String::from_utf8_lossy(&tandem_model::format::to_bytes(&default).unwrap()).into_owned();
    assert!(!text.contains("input_frac_bits"));
    // Without the sidecar's line the default stays 16; out of range is refused.
    let plain = tandem_onnx::import_file(&path, &ImportOptions { input_range: Some((0.0, 1.0)), ..Default::default() })
        .unwrap();
    assert_eq!(plain.input_frac_bits, tandem_model::F_IN);
    let e = tandem_onnx::import_file(
        &path,
        &ImportOptions { input_range: Some((0.0, 1.0)), input_frac_bits: Some(40), ..Default::default() },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("input precision") && e.contains("0 to 32"), "{e}");
    let e = tandem_model::Model { input_frac_bits: 33, ..plain }.shapes().unwrap_err().to_string();
    assert!(e.contains("33 fraction bits; at most 32"), "{e}");
}

/// The bundled MNIST test split: rows of 784 pixels and the true label.
fn mnist_rows() -> Vec<(Vec<f64>, usize)> {
    let text = std::fs::read_to_string(root().join("data/mnist/test.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let label = header.iter().position(|h| *h == "label").expect("a label column");
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|c| c.trim().parse().unwrap()).collect();
            (v[..784].to_vec(), v[label] as usize)
        })
        .collect()
}

fn quantized(path: &Path, f_in: Option<u32>) -> QuantizedModel {
    let opts = ImportOptions { input_range: Some((0.0, 1.0)), input_frac_bits: f_in, ..Default::default() };
    QuantizedModel::new(&tandem_onnx::import_file(path, &opts).unwrap(), QuantConfig::default()).unwrap()
}

#[test]
fn mnist_at_8_fraction_bits_predicts_the_same_labels_as_at_16() {
    let rows = mnist_rows();
    assert_eq!(rows.len(), 1000);
    println!("| model | rows | reference acc. f_in = 16 | reference acc. f_in = 8 | labels differ | max logit diff (8 vs 16) | drift check at 8 |");
    println!("|---|---|---|---|---|---|---|");
    for name in ["mnist_mlp", "mnist_cnn"] {
        let path = root().join(format!("models/{name}.onnx"));
        let declared = tandem_onnx::read_input_sidecar(&path).unwrap().unwrap().input_frac_bits;
        assert_eq!(declared, Some(8), "{name}: the sidecar declares 8 fraction bits");
        let (q16, q8) = (quantized(&path, None), quantized(&path, declared));
        assert_eq!((q16.f_in, q8.f_in), (16, 8));
        let (mut right16, mut right8, mut differ) = (0, 0, Vec::new());
        let mut max_diff = 0f64;
        for (i, (x, truth)) in rows.iter().enumerate() {
            let out = |q: &QuantizedModel| q.reference(&q.quantize_input(x).unwrap(), OutputMode::Logits).unwrap();
            let (o16, o8) = (out(&q16), out(&q8));
            right16 += usize::from(o16.label() == *truth);
            right8 += usize::from(o8.label() == *truth);
            if o16.label() != o8.label() {
                differ.push(i);
            }
            let (l16, l8) = (o16.to_f64(), o8.to_f64());
            max_diff = l16.iter().zip(&l8).map(|(a, b)| (a - b).abs()).fold(max_diff, f64::max);
        }
        let drift = tandem_model::check_quantization_drift(
            &q8,
            tandem_model::drift::default_samples(&q8),
            0,
            Default::default(),
        );
        println!(
            "| {name} | {} | {:.2}% ({right16}/{}) | {:.2}% ({right8}/{}) | {} {differ:?} | {max_diff:.3e} | {} |",
            rows.len(),
            100.0 * right16 as f64 / rows.len() as f64,
            rows.len(),
            100.0 * right8 as f64 / rows.len() as f64,
            rows.len(),
            differ.len(),
            if drift.within_bound() { "within the bound" } else { "BEYOND the bound" }
        );
        println!("{drift}");
        assert!(differ.is_empty(), "{name}: f_in = 8 changes the reference label of rows {differ:?}");
        assert!(drift.within_bound(), "{name}: {drift}");
    }
}
