//! tandem-eval on the small splits of tests/fixtures/eval (made by
//! tests/fixtures/make_onnx_fixtures.py), with a cached 1024-bit key.

use std::path::PathBuf;
use tandem_eval::Parser;
use tandem_eval::{run_with_key, Args, Report};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tandem-eval-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn args(extra: &[&str]) -> Args {
    let mut v = vec!["tandem-eval", "--no-progress"];
    v.extend_from_slice(extra);
    Args::try_parse_from(v).unwrap()
}

fn eval(extra: &[&str]) -> (Report, String) {
    run_with_key(&args(extra), tandem::test_key_1024_owned()).unwrap()
}

fn path(p: &str) -> String {
    fixtures().join(p).display().to_string()
}

/// (true labels, onnxruntime labels) of a fixture split.
fn labels(name: &str) -> (Vec<usize>, Vec<usize>) {
    let col = |file: String, last: bool| -> Vec<usize> {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let v: Vec<&str> = l.split(',').collect();
                (if last { v[v.len() - 1] } else { v[0] }).parse().unwrap()
            })
            .collect()
    };
    (col(path(&format!("eval/{name}.csv")), true), col(path(&format!("eval/{name}_onnxruntime.csv")), false))
}

#[test]
fn torch_mlp_split_with_onnxruntime_and_json() {
    let json = tmp("torch_mlp.json");
    let (r, table) = eval(&[
        "--model",
        &path("onnx/torch_mlp.onnx"),
        "--data",
        &path("eval/torch_mlp.csv"),
        "--compare-onnxruntime",
        &path("eval/torch_mlp_onnxruntime.csv"),
        "--json",
        json.to_str().unwrap(),
    ]);
    let s = &r.summary;
    println!("{table}");
    assert_eq!((s.rows, s.evaluated, s.input_errors), (12, 12, 0));
    assert_eq!(s.mode, "logits");
    assert_eq!(s.private_reference_bit_exact, 12, "private == reference");
    assert_eq!(s.private_onnxruntime_label_agree, 12);
    assert_eq!(s.private_float_label_agree, 12);
    let (truth, ort) = labels("torch_mlp");
    let want = truth.iter().zip(&ort).filter(|(t, o)| t == o).count();
    assert_eq!((s.float_correct, s.private_correct, s.reference_correct, s.labeled), (want, want, want, 12));
    let d = s.max_abs_diff_private_onnxruntime.expect("logits compare with onnxruntime");
    assert!(d < 1e-2, "max |private - onnxruntime| = {d}");
    assert!(s.max_abs_diff_private_float < 1e-2);
    assert!(s.median_ms > 0.0);
    assert!(table.contains("accuracy: private inference") && table.contains("bit-exact"), "{table}");

    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["summary"]["evaluated"], 12);
    let samples = j["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 12);
    for smp in samples {
        assert_eq!(smp["reference_equal"], true);
        assert_eq!(smp["private"].as_array().unwrap().len(), 3);
        assert_eq!(smp["float"].as_array().unwrap().len(), 3);
        assert!(smp["private_label"].is_u64() && smp["float_label"].is_u64());
    }
}

#[test]
fn skl_binary_sigmoid_pair_compares_as_one_minus_p_p() {
    let (r, _) = eval(&[
        "--model",
        &path("onnx/skl_mlp_binary.onnx"),
        "--data",
        &path("eval/skl_mlp_binary.csv"),
        "--input-range",
        "-1,1",
        "--compare-onnxruntime",
        &path("eval/skl_mlp_binary_onnxruntime.csv"),
    ]);
    let s = &r.summary;
    assert_eq!(s.mode, "sigmoid");
    assert_eq!((s.evaluated, s.private_reference_bit_exact, s.private_onnxruntime_label_agree), (12, 12, 12));
    let d = s.max_abs_diff_private_onnxruntime.expect("[1-p, p] comparable");
    assert!(d < 1e-3, "{d}");

    // In label mode the outputs are not comparable with ONNX's probabilities; labels still are.
    let (r, table) = eval(&[
        "--model",
        &path("onnx/skl_mlp_binary.onnx"),
        "--data",
        &path("eval/skl_mlp_binary.csv"),
        "--input-range=-1,1",
        "--mode",
        "label",
        "--limit",
        "4",
        "--compare-onnxruntime",
        &path("eval/skl_mlp_binary_onnxruntime.csv"),
    ]);
    assert_eq!((r.summary.rows, r.summary.private_onnxruntime_label_agree), (4, 4));
    assert_eq!(r.summary.max_abs_diff_private_onnxruntime, None);
    assert!(table.contains("n/a"), "{table}");
}

#[test]
fn out_of_range_rows_are_errors_unless_clipped() {
    let csv = tmp("oor.csv");
    let text = std::fs::read_to_string(path("eval/torch_mlp.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().take(4).map(str::to_string).collect();
    lines[2] = lines[2].replacen(|c: char| c == '-' || c.is_ascii_digit(), "7", 1); // first feature → 7...
    let first: f64 = lines[2].split(',').next().unwrap().parse().unwrap();
    assert!(first > 1.0, "{first}");
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let (r, _) = eval(&["--model", &path("onnx/torch_mlp.onnx"), "--data", csv.to_str().unwrap()]);
    assert_eq!((r.summary.rows, r.summary.evaluated, r.summary.input_errors), (3, 2, 1));
    let err = r.samples[1].error.as_deref().unwrap();
    assert!(err.contains("outside") && err.contains("range"), "{err}");
    let (r, table) = eval(&["--model", &path("onnx/torch_mlp.onnx"), "--data", csv.to_str().unwrap(), "--clip"]);
    assert_eq!((r.summary.evaluated, r.summary.input_errors, r.summary.clipped_rows), (3, 0, 1));
    assert_eq!(r.samples[1].clipped, 1);
    assert_eq!(r.summary.private_reference_bit_exact, 3);
    assert!(table.contains("1 rows clipped"), "{table}");
}

#[test]
fn native_tandem_model_and_errors() {
    let m = tandem_onnx::import_file(path("onnx/torch_mlp.onnx"), &Default::default()).unwrap();
    let native = tmp("torch_mlp.tandem");
    tandem_model::format::save(&m, &native).unwrap();
    let (r, _) = eval(&[
        "--model",
        native.to_str().unwrap(),
        "--data",
        &path("eval/torch_mlp.csv"),
        "--limit",
        "3",
        "--compare-onnxruntime",
        &path("eval/torch_mlp_onnxruntime.csv"),
    ]);
    assert_eq!(
        (r.summary.evaluated, r.summary.private_reference_bit_exact, r.summary.private_onnxruntime_label_agree),
        (3, 3, 3)
    );
    assert!(r.summary.max_abs_diff_private_onnxruntime.unwrap() < 1e-2);

    let sk = || tandem::test_key_1024_owned();
    // No input range anywhere.
    let e = run_with_key(
        &args(&["--model", &path("onnx/skl_mlp_binary.onnx"), "--data", &path("eval/skl_mlp_binary.csv")]),
        sk(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--input-range"), "{e}");
    // Feature count mismatch.
    let e = run_with_key(
        &args(&["--model", &path("onnx/torch_mlp.onnx"), "--data", &path("eval/skl_mlp_binary.csv")]),
        sk(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("6 feature columns") && e.contains("10 inputs"), "{e}");
    // Unknown label column named explicitly.
    let e = run_with_key(
        &args(&["--model", &path("onnx/torch_mlp.onnx"), "--data", &path("eval/torch_mlp.csv"), "--label-column", "y"]),
        sk(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("\"y\""), "{e}");
    // Mode not offered by the model.
    let e = run_with_key(
        &args(&["--model", &path("onnx/torch_mlp.onnx"), "--data", &path("eval/torch_mlp.csv"), "--mode", "sigmoid"]),
        sk(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("sigmoid") && e.contains("available"), "{e}");
    // Argument parsing.
    assert!(Args::try_parse_from(["tandem-eval", "--model", "m", "--data", "d", "--input-range", "1"]).is_err());
    assert!(Args::try_parse_from(["tandem-eval", "--model", "m", "--data", "d", "--mode", "softmax"]).is_err());
    let a = Args::try_parse_from(["tandem-eval", "--model", "m", "--data", "d", "--input-range", "-5,5"]).unwrap();
    assert_eq!((a.input_range, a.key_bits, a.label_column.as_str()), (Some((-5.0, 5.0)), 2048, "label"));
}

#[test]
fn skip_and_limit_select_rows_and_keep_indices() {
    let (r, _) = eval(&[
        "--model",
        &path("onnx/torch_mlp.onnx"),
        "--data",
        &path("eval/torch_mlp.csv"),
        "--skip",
        "9",
        "--limit",
        "2",
        "--compare-onnxruntime",
        &path("eval/torch_mlp_onnxruntime.csv"),
    ]);
    assert_eq!((r.summary.rows, r.summary.evaluated, r.summary.private_onnxruntime_label_agree), (2, 2, 2));
    let idx: Vec<usize> = r.samples.iter().map(|s| s.index).collect();
    assert_eq!(idx, vec![9, 10]);
    let (_, ort) = labels("torch_mlp");
    assert_eq!(r.samples[1].onnxruntime_label, Some(ort[10]));
    let (r, _) =
        eval(&["--model", &path("onnx/torch_mlp.onnx"), "--data", &path("eval/torch_mlp.csv"), "--skip", "11"]);
    assert_eq!((r.summary.rows, r.samples[0].index), (1, 11));
}

/// tandem-eval reads the `NAME.onnx.input-range` sidecar the model server
/// reads, so the README's "drop the file and its sidecar in --models" model
/// evaluates with the range it is served with; the flag still wins.
#[test]
fn input_range_sidecar_is_honoured_and_the_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("binary.onnx");
    std::fs::copy(path("onnx/skl_mlp_binary.onnx"), &model).unwrap();
    let data = path("eval/skl_mlp_binary.csv");
    let m = model.to_str().unwrap();
    std::fs::write(dir.path().join("binary.onnx.input-range"), "-1,1\n").unwrap();
    let (r, _) = eval(&["--model", m, "--data", &data, "--limit", "2"]);
    assert_eq!(r.summary.input_range, (-1.0, 1.0));
    assert_eq!((r.summary.evaluated, r.summary.private_reference_bit_exact), (2, 2));
    let (r, _) = eval(&["--model", m, "--data", &data, "--limit", "1", "--input-range=-2,2"]);
    assert_eq!(r.summary.input_range, (-2.0, 2.0));
    // A sidecar that is not a range is an error naming the file and the form.
    std::fs::write(dir.path().join("binary.onnx.input-range"), "zero to one\n").unwrap();
    let e = run_with_key(&args(&["--model", m, "--data", &data]), tandem::test_key_1024_owned()).err().unwrap();
    let e = format!("{e:#}");
    assert!(e.contains("binary.onnx.input-range") && e.contains("\"lo,hi\""), "{e}");
}
