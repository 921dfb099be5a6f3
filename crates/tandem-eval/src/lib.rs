//! `tandem-eval`: runs every row of a test split through private inference
//! in-process and compares it with the float model, the integer reference
//! and (optionally) onnxruntime's outputs.
//!
//! The binary is a thin shell over [`run`]; tests call [`run_with_key`] with
//! a cached key.

use anyhow::{anyhow, bail, Context, Result};
pub use clap::Parser;
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tandem_core::InProcess;
use tandem_model::quantize::{eval_f64, float_head};
use tandem_model::{Model, ModelError, Output, OutputMode, QuantConfig, QuantizedModel};
use tandem_onnx::{ImportOptions, ImportReport};
use tandem_lattice_engine::LatticeEngine;
use tandem_paillier::{ActivationKeys, PaillierEngine, SecretKey};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tandem-eval",
    about = "Accuracy of private inference on a test split: float model vs integer reference vs the private protocol (run in-process), optionally vs onnxruntime",
    version
)]
pub struct Args {
    /// Model file: ONNX (.onnx) or tandem's native format (.tandem).
    #[arg(long)]
    pub model: PathBuf,
    /// Test split CSV: a header, one sample per row, features in model input
    /// order (images flattened CHW) and a label column.
    #[arg(long)]
    pub data: PathBuf,
    /// Name of the label column (absent column: no accuracy is reported).
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Input range LO,HI of every feature. Default for ONNX: the sidecar
    /// file MODEL.onnx.input-range (as the model server reads it), else the
    /// model's tandem.input_range metadata. Overrides both, and a .tandem file's.
    #[arg(long, value_parser = parse_range, allow_hyphen_values = true)]
    pub input_range: Option<(f64, f64)>,
    /// Output mode: logits, probabilities, label or sigmoid (default: the model's).
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<OutputMode>,
    /// Evaluate at most N rows (after --skip).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip the first N rows (to split a long run; sample indices stay the
    /// row numbers of the whole file).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Paillier key size of the activation server.
    #[arg(long, default_value_t = 2048)]
    pub key_bits: u32,
    /// The preprocessing engine: `lattice` (default, as the servers': every
    /// layer's product over Ring-LWE and the per-neuron products by OT
    /// multiplication, production parameters; docs/PROTOCOL.md §4.2c, or
    /// §4.2b or Paillier where the model cannot take it), or `paillier`.
    #[arg(long, value_parser = ["paillier", "lattice"], default_value = "lattice")]
    pub engine: String,
    /// Write the summary and per-sample records to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// onnxruntime outputs for the same rows (header label,o0,o1,...).
    #[arg(long)]
    pub compare_onnxruntime: Option<PathBuf>,
    /// Clip features outside the input range into it (default: such rows are
    /// reported as errors and skipped).
    #[arg(long)]
    pub clip: bool,
    /// ONNX graph output to follow (default: chosen by the importer).
    #[arg(long)]
    pub output: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Quantize every linear layer with exactly this many signed weight bits
    /// (2..=32; the quantization before adaptive precision used 12). Default:
    /// adaptive, at least 12 bits per layer and more where a layer's weights
    /// span a wide range and the ring's bit budget allows.
    #[arg(long)]
    pub weight_bits: Option<u32>,
    /// Random inputs in the declared range for the quantization drift report
    /// (0: no report; default: 256, fewer for large models).
    #[arg(long)]
    pub drift_samples: Option<usize>,
}

fn parse_range(s: &str) -> std::result::Result<(f64, f64), String> {
    tandem_onnx::parse_range(s)
}

fn parse_mode(s: &str) -> std::result::Result<OutputMode, String> {
    OutputMode::parse(s).ok_or_else(|| format!("unknown mode {s:?}; one of logits, probabilities, label, sigmoid"))
}

/// Private queries against one model, in-process (the same wiring as the
/// workspace's test harness, kept here because a binary must not depend on
/// the root package).
pub struct Runner {
    pub model: Arc<QuantizedModel>,
    inner: Inner,
}

enum Inner {
    Paillier(Box<InProcess<PaillierEngine>>),
    Lattice(Box<InProcess<LatticeEngine>>),
}

impl Runner {
    /// Adaptive weight precision (what the model server does).
    pub fn new(model: &Model, sk: SecretKey) -> tandem_core::Result<Self> {
        Self::with_weight_bits(model, sk, None)
    }

    /// `Some(b)`: every linear layer at exactly `b` signed weight bits.
    pub fn with_weight_bits(model: &Model, sk: SecretKey, weight_bits: Option<u32>) -> tandem_core::Result<Self> {
        Self::with_engine(model, sk, weight_bits, false)
    }

    /// `lattice`: the lattice engine (production parameters) instead of
    /// Paillier.
    pub fn with_engine(model: &Model, sk: SecretKey, weight_bits: Option<u32>, lattice: bool) -> tandem_core::Result<Self> {
        let q = match weight_bits {
            None => QuantizedModel::new(model, QuantConfig::default())?,
            Some(b) => QuantizedModel::with_fixed_bits(model, QuantConfig { weight_bits: b })?,
        };
        let model = Arc::new(q);
        // The shell's randomness: the OS CSPRNG seeds the in-process roles'.
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let keys = ActivationKeys::new(sk, tandem_paillier::thread_pool(0), &mut OsRng);
        let inner = if lattice {
            let engine = LatticeEngine::production();
            let keys = engine.keys(keys, &mut OsRng);
            Inner::Lattice(Box::new(InProcess::new(Arc::new(engine), keys, model.clone(), &model.name, seed)?))
        } else {
            Inner::Paillier(Box::new(InProcess::new(Arc::new(PaillierEngine), keys, model.clone(), &model.name, seed)?))
        };
        Ok(Runner { model, inner })
    }

    pub fn infer(&mut self, x: &[f64], mode: OutputMode) -> tandem_core::Result<Output> {
        match &mut self.inner {
            Inner::Paillier(p) => p.infer(x, mode),
            Inner::Lattice(l) => l.infer(x, mode),
        }
    }

    /// Why the first layer runs on Paillier under the lattice engine
    /// (`None` when it runs on RLWE, or under the Paillier engine).
    pub fn lattice_fallback(&self) -> Option<String> {
        match &self.inner {
            Inner::Paillier(_) => None,
            Inner::Lattice(l) => {
                let why = match (&l.s1_128, &l.s1_256) {
                    (Some(s), _) => s.all_layers_on_lattice().err().map(|why| match s.first_layer_on_lattice() {
                        Ok(()) => format!("only the first layer runs on RLWE, the rest on Paillier, because {why}"),
                        Err(first) => format!("every layer runs on Paillier, because {first}"),
                    }),
                    (_, Some(s)) => Some(format!(
                        "every layer runs on Paillier, because {}",
                        s.first_layer_on_lattice().err().unwrap_or("its ring is k = 256")
                    )),
                    _ => None,
                };
                why
            }
        }
    }

    pub fn reference(&self, x: &[f64], mode: OutputMode) -> std::result::Result<Output, ModelError> {
        let xi = self.model.quantize_input(x)?;
        self.model.reference(&xi, mode)
    }
}

/// A loaded model and, for ONNX, the import report.
pub struct Loaded {
    pub model: Model,
    pub report: Option<ImportReport>,
}

pub fn load_model(path: &Path, input_range: Option<(f64, f64)>, output: Option<String>) -> Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(tandem_model::format::MAGIC) {
        let mut model = tandem_model::format::from_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
        if let Some(r) = input_range {
            model.input_range = r;
        }
        return Ok(Loaded { model, report: None });
    }
    // The sidecar the model server reads, so that both see the same range
    // and input precision; --input-range overrides the range only.
    let opts = tandem_onnx::InputSidecar::fill(
        tandem_onnx::read_input_sidecar(path).map_err(|e| anyhow!(e))?,
        ImportOptions {
            input_range,
            input_frac_bits: None,
            name: path.file_stem().map(|s| s.to_string_lossy().into_owned()),
            output,
            default_mode: None,
        },
    );
    let imp = tandem_onnx::import_bytes_with_report(&bytes, &opts).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Loaded { model: imp.model, report: Some(imp.report) })
}

/// A CSV of numbers with a header.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

pub fn read_csv(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, h) = lines.next().ok_or_else(|| anyhow!("{}: empty file", path.display()))?;
    let clean = |s: &str| s.trim().trim_matches('"').to_string();
    let header: Vec<String> = h.trim_start_matches('\u{feff}').split(',').map(clean).collect();
    let mut rows = Vec::new();
    for (ln, line) in lines {
        let vals: Vec<f64> = line
            .split(',')
            .map(|v| clean(v).parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| anyhow!("{} line {}: {e}", path.display(), ln + 1))?;
        if vals.len() != header.len() {
            bail!("{} line {}: {} values, the header has {}", path.display(), ln + 1, vals.len(), header.len());
        }
        rows.push(vals);
    }
    Ok(Table { header, rows })
}

#[derive(Serialize, Debug, Clone)]
pub struct Sample {
    pub index: usize,
    pub true_label: Option<usize>,
    /// Why the sample was not evaluated.
    pub error: Option<String>,
    /// Features clipped into the input range (with --clip).
    pub clipped: usize,
    /// Private output, as reals, in the evaluated mode.
    pub private: Option<Vec<f64>>,
    /// Float model output in the same mode.
    pub float: Option<Vec<f64>>,
    pub private_label: Option<usize>,
    pub float_label: Option<usize>,
    pub reference_label: Option<usize>,
    /// Private output == integer reference, bit for bit.
    pub reference_equal: Option<bool>,
    pub onnxruntime_label: Option<usize>,
    pub onnxruntime_max_abs_diff: Option<f64>,
    pub millis: Option<f64>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Summary {
    pub model: String,
    pub data: String,
    pub mode: String,
    pub key_bits: u32,
    pub ring_bits: u32,
    /// `paillier` or `lattice`.
    pub engine: String,
    pub input_range: (f64, f64),
    pub rows: usize,
    pub evaluated: usize,
    pub input_errors: usize,
    pub clipped_rows: usize,
    pub labeled: usize,
    pub float_correct: usize,
    pub reference_correct: usize,
    pub private_correct: usize,
    pub private_float_label_agree: usize,
    pub private_reference_bit_exact: usize,
    pub max_abs_diff_private_float: f64,
    pub onnxruntime_compared: usize,
    pub private_onnxruntime_label_agree: usize,
    pub float_onnxruntime_label_agree: usize,
    /// None when the mode's outputs are not comparable to the ONNX output.
    pub max_abs_diff_private_onnxruntime: Option<f64>,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub total_seconds: f64,
    pub keygen_seconds: f64,
    /// `adaptive` or `fixed N`.
    pub quantization: String,
    /// Signed weight bits per linear layer.
    pub weight_bits: Vec<u32>,
    /// The load-time drift check (float model vs integer reference on random
    /// inputs in the declared range), as the model server logs it.
    pub drift: Option<DriftSummary>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct DriftSummary {
    pub samples: usize,
    pub labels_differ: usize,
    pub labels_differ_beyond_tie: usize,
    pub max_abs_logit_error: f64,
    pub max_float_logit: f64,
    pub within_bound: bool,
    pub text: String,
}

#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub summary: Summary,
    pub samples: Vec<Sample>,
}

/// Runs with a fresh `--key-bits` key (generated after the model and data
/// load, so their errors come first); returns the report and the table.
pub fn run(args: &Args) -> Result<(Report, String)> {
    run_keyed(args, || {
        SecretKey::generate(args.key_bits).map_err(|e| anyhow!("key generation ({} bits): {e}", args.key_bits))
    })
}

/// Runs the evaluation with a given activation-server key.
pub fn run_with_key(args: &Args, sk: SecretKey) -> Result<(Report, String)> {
    run_keyed(args, || Ok(sk))
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "n/a".into()
    } else {
        format!("{:.2}% ({a}/{b})", 100.0 * a as f64 / b as f64)
    }
}

pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let line = |o: &mut String, k: &str, v: String| o.push_str(&format!("{k:<36} {v}\n"));
    o.push_str(&format!("tandem-eval: {} on {}\n", s.model, s.data));
    line(&mut o, "mode / key / ring", format!("{} / {}-bit Paillier / Z_2^{}", s.mode, s.key_bits, s.ring_bits));
    line(&mut o, "engine", s.engine.clone());
    line(&mut o, "input range", format!("[{}, {}]", s.input_range.0, s.input_range.1));
    line(
        &mut o,
        "weight bits per linear layer",
        format!("{} ({})", s.weight_bits.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "), s.quantization),
    );
    if let Some(d) = &s.drift {
        line(
            &mut o,
            "drift check (random inputs in range)",
            if d.within_bound { "within the bound".into() } else { "BEYOND the bound (details below)".into() },
        );
    }
    line(
        &mut o,
        "rows evaluated",
        format!("{} of {} ({} input errors, {} rows clipped)", s.evaluated, s.rows, s.input_errors, s.clipped_rows),
    );
    line(&mut o, "accuracy: float model", pct(s.float_correct, s.labeled));
    line(&mut o, "accuracy: integer reference", pct(s.reference_correct, s.labeled));
    line(&mut o, "accuracy: private inference", pct(s.private_correct, s.labeled));
    line(&mut o, "labels: private = float", pct(s.private_float_label_agree, s.evaluated));
    line(&mut o, "private == reference (bit-exact)", pct(s.private_reference_bit_exact, s.evaluated));
    line(&mut o, "max |private - float| (output)", format!("{:.3e}", s.max_abs_diff_private_float));
    if s.onnxruntime_compared > 0 {
        line(&mut o, "labels: private = onnxruntime", pct(s.private_onnxruntime_label_agree, s.onnxruntime_compared));
        line(&mut o, "labels: float = onnxruntime", pct(s.float_onnxruntime_label_agree, s.onnxruntime_compared));
        line(
            &mut o,
            "max |private - onnxruntime| (output)",
            s.max_abs_diff_private_onnxruntime
                .map(|d| format!("{d:.3e}"))
                .unwrap_or_else(|| "n/a (mode differs from the ONNX output)".into()),
        );
    }
    line(&mut o, "time per query (median / p90)", format!("{:.1} ms / {:.1} ms", s.median_ms, s.p90_ms));
    line(&mut o, "total time", format!("{:.1} s (+ {:.1} s key generation)", s.total_seconds, s.keygen_seconds));
    if let Some(d) = &s.drift {
        o.push_str(&d.text);
        o.push('\n');
    }
    o
}

fn float_label(z: &[f64]) -> usize {
    float_head(z, OutputMode::Label)[0] as usize
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> Option<f64> {
    (a.len() == b.len()).then(|| a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())))
}

fn run_keyed(args: &Args, key: impl FnOnce() -> Result<SecretKey>) -> Result<(Report, String)> {
    let loaded = load_model(&args.model, args.input_range, args.output.clone())?;
    let model = loaded.model;
    let mode = args.mode.unwrap_or(model.default_mode);
    let data = read_csv(&args.data)?;
    let label_col = data.header.iter().position(|h| *h == args.label_column);
    if label_col.is_none() && args.label_column != "label" {
        bail!("{}: no column {:?} (header: {:?})", args.data.display(), args.label_column, data.header);
    }
    let n_features = data.header.len() - usize::from(label_col.is_some());
    let input_len = model.input_shape.len();
    if n_features != input_len {
        bail!(
            "{} has {n_features} feature columns but the model takes {input_len} inputs{}",
            args.data.display(),
            if label_col.is_none() { format!(" (no {:?} column found)", args.label_column) } else { String::new() }
        );
    }
    let ort = match &args.compare_onnxruntime {
        Some(p) => {
            let t = read_csv(p)?;
            if t.header.first().map(String::as_str) != Some("label") {
                bail!("{}: the header must be label,o0,o1,...", p.display());
            }
            if t.rows.len() < data.rows.len() {
                bail!("{} has {} rows but {} has {}", p.display(), t.rows.len(), args.data.display(), data.rows.len());
            }
            Some(t.rows)
        }
        None => None,
    };
    let t = Instant::now();
    let sk = key()?;
    let keygen_seconds = t.elapsed().as_secs_f64();
    let key_bits = sk.public().bits();
    let mut runner =
        Runner::with_engine(&model, sk, args.weight_bits, args.engine == "lattice").map_err(|e| anyhow!("{e}"))?;
    if let Some(why) = runner.lattice_fallback() {
        eprintln!("lattice engine: {why}");
    }
    let drift_samples = args.drift_samples.unwrap_or_else(|| tandem_model::drift::default_samples(&runner.model));
    let drift = (drift_samples > 0).then(|| {
        let d = tandem_model::check_quantization_drift(&runner.model, drift_samples, 0, Default::default());
        DriftSummary {
            samples: d.samples,
            labels_differ: d.labels_differ,
            labels_differ_beyond_tie: d.labels_differ_beyond_tie,
            max_abs_logit_error: d.max_abs_logit_error,
            max_float_logit: d.max_float_logit,
            within_bound: d.within_bound(),
            text: d.to_string(),
        }
    });
    runner.model.check_mode(mode).map_err(|e| anyhow!("{e}"))?;
    let (lo, hi) = model.input_range;
    let rows: Vec<(usize, &Vec<f64>)> =
        data.rows.iter().enumerate().skip(args.skip).take(args.limit.unwrap_or(usize::MAX)).collect();
    let bar = if args.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(rows.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} ({per_sec}, eta {eta}) {msg}",
            )
            .expect("valid template"),
        );
        b
    };
    let mut s = Summary {
        model: args.model.display().to_string(),
        data: args.data.display().to_string(),
        mode: mode.name().into(),
        key_bits,
        ring_bits: runner.model.ring_bits,
        engine: args.engine.clone(),
        input_range: model.input_range,
        rows: rows.len(),
        keygen_seconds,
        quantization: match args.weight_bits {
            None => "adaptive".into(),
            Some(b) => format!("fixed {b}"),
        },
        weight_bits: runner.model.weight_bits().into_iter().map(|(_, b)| b).collect(),
        drift,
        ..Default::default()
    };
    let mut samples = Vec::with_capacity(rows.len());
    let mut times = Vec::new();
    let mut ort_diff: Option<f64> = Some(0.0);
    let start = Instant::now();
    for &(index, row) in &rows {
        bar.inc(1);
        let true_label = label_col.map(|c| row[c] as usize);
        let mut x: Vec<f64> = row.iter().enumerate().filter(|(i, _)| Some(*i) != label_col).map(|(_, v)| *v).collect();
        let mut sample = Sample {
            index,
            true_label,
            error: None,
            clipped: 0,
            private: None,
            float: None,
            private_label: None,
            float_label: None,
            reference_label: None,
            reference_equal: None,
            onnxruntime_label: None,
            onnxruntime_max_abs_diff: None,
            millis: None,
        };
        if args.clip {
            for v in x.iter_mut() {
                let c = v.clamp(lo, hi);
                if c != *v {
                    sample.clipped += 1;
                    *v = c;
                }
            }
            s.clipped_rows += usize::from(sample.clipped > 0);
        }
        let reference = match runner.reference(&x, mode) {
            Ok(r) => r,
            Err(e) => {
                sample.error = Some(e.to_string());
                s.input_errors += 1;
                samples.push(sample);
                continue;
            }
        };
        let t = Instant::now();
        let private = match runner.infer(&x, mode) {
            Ok(p) => p,
            Err(e) => {
                sample.error = Some(format!("private inference failed: {e}"));
                s.input_errors += 1;
                samples.push(sample);
                continue;
            }
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        times.push(ms);
        let z = eval_f64(&model, &x);
        let fout = float_head(&z, mode);
        let pout = private.to_f64();
        let (pl, fl, rl) = (private.label(), float_label(&z), reference.label());
        s.evaluated += 1;
        s.private_reference_bit_exact += usize::from(private == reference);
        s.private_float_label_agree += usize::from(pl == fl);
        if let Some(d) = max_abs_diff(&pout, &fout) {
            s.max_abs_diff_private_float = s.max_abs_diff_private_float.max(d);
        }
        if let Some(t) = true_label {
            s.labeled += 1;
            s.float_correct += usize::from(fl == t);
            s.reference_correct += usize::from(rl == t);
            s.private_correct += usize::from(pl == t);
        }
        if let Some(ort) = &ort {
            let r = &ort[index];
            let ol = r[0] as usize;
            s.onnxruntime_compared += 1;
            s.private_onnxruntime_label_agree += usize::from(pl == ol);
            s.float_onnxruntime_label_agree += usize::from(fl == ol);
            let view = match &loaded.report {
                Some(rep) => rep.onnx_view(mode, &pout),
                None => Some(pout.clone()),
            };
            let d = view.and_then(|v| max_abs_diff(&v, &r[1..]));
            sample.onnxruntime_label = Some(ol);
            sample.onnxruntime_max_abs_diff = d;
            ort_diff = match (ort_diff, d) {
                (Some(m), Some(d)) => Some(m.max(d)),
                _ => None,
            };
        }
        sample.private = Some(pout);
        sample.float = Some(fout);
        sample.private_label = Some(pl);
        sample.float_label = Some(fl);
        sample.reference_label = Some(rl);
        sample.reference_equal = Some(private == reference);
        sample.millis = Some(ms);
        samples.push(sample);
    }
    bar.finish_and_clear();
    s.total_seconds = start.elapsed().as_secs_f64();
    if s.onnxruntime_compared > 0 {
        s.max_abs_diff_private_onnxruntime = ort_diff;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    if !times.is_empty() {
        let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        s.median_ms = if times.len() % 2 == 1 {
            times[times.len() / 2]
        } else {
            (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
        };
        s.p90_ms = q(0.9);
    }
    let report = Report { summary: s, samples };
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let table = render(&report.summary);
    Ok((report, table))
}
