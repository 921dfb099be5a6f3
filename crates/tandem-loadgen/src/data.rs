//! Inputs to send, and the integer reference to check the answers against.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use tandem_core::ModelInfo;
use tandem_model::{Model, Output, OutputMode, QuantConfig, QuantizedModel};

/// The rows the workers cycle through.
#[derive(Debug)]
pub struct Inputs {
    pub rows: Vec<Vec<f64>>,
    /// The data set's true labels, when it has a label column.
    pub labels: Option<Vec<usize>>,
    /// Where the rows came from, for the report.
    pub source: String,
}

/// Reads a model file the way the model server does: `.tandem`, or ONNX
/// with its input range from the file's metadata or a sidecar
/// `NAME.onnx.input-range`; `input_range` overrides both.
pub fn load_model(path: &Path, input_range: Option<(f64, f64)>) -> Result<Model, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the model file {}: {e}", path.display()))?;
    if bytes.starts_with(tandem_model::format::MAGIC) {
        let mut m = tandem_model::format::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(r) = input_range {
            m.input_range = r;
        }
        return Ok(m);
    }
    // The sidecar the model server reads (range and input precision),
    // unless --input-range overrides the range.
    let opts = tandem_onnx::InputSidecar::fill(
        tandem_onnx::read_input_sidecar(path)?,
        tandem_onnx::ImportOptions { input_range, ..Default::default() },
    );
    // Only a missing range gets the hint: an unsupported op is not about it.
    tandem_onnx::import_bytes(&bytes, &opts).map_err(|e| match e {
        tandem_onnx::ImportError::MissingInputRange => format!(
            "{}: the ONNX model does not declare its input range: pass --input-range LO,HI, write lo,hi into {}, \
             or add metadata {:?} = \"lo,hi\"",
            path.display(),
            tandem_onnx::input_range_sidecar(path).display(),
            tandem_onnx::INPUT_RANGE_KEY
        ),
        other => format!("{}: {other}", path.display()),
    })
}

/// The integer reference for every row, after checking that the model file
/// describes the model the server serves (same shape, range, ring and
/// fixed-point parameters; the weights themselves can only be checked by
/// the answers).
pub fn references(
    model: &Model,
    weight_bits: u32,
    remote: &ModelInfo,
    rows: &[Vec<f64>],
    mode: OutputMode,
) -> Result<Vec<Output>, String> {
    let q = QuantizedModel::new(model, QuantConfig { weight_bits }).map_err(|e| format!("the model file: {e}"))?;
    let mine = ModelInfo::of(&remote.id, &q);
    let mut diffs = Vec::new();
    if mine.input_shape != remote.input_shape {
        diffs.push(format!("input shape {:?} here, {:?} on the server", mine.input_shape, remote.input_shape));
    }
    if mine.input_range != remote.input_range {
        diffs.push(format!("input range {:?} here, {:?} on the server", mine.input_range, remote.input_range));
    }
    if mine.output_len != remote.output_len {
        diffs.push(format!("{} outputs here, {} on the server", mine.output_len, remote.output_len));
    }
    if (mine.ring_bits, mine.f_in, mine.f_act, mine.output_scale)
        != (remote.ring_bits, remote.f_in, remote.f_act, remote.output_scale)
    {
        diffs.push(format!(
            "ring/fixed point (k, f_in, f_act, output scale) = {:?} here, {:?} on the server",
            (mine.ring_bits, mine.f_in, mine.f_act, mine.output_scale),
            (remote.ring_bits, remote.f_in, remote.f_act, remote.output_scale)
        ));
    }
    if !diffs.is_empty() {
        return Err(format!(
            "the --model-file does not describe the server's model {:?}: {}",
            remote.id,
            diffs.join("; ")
        ));
    }
    rows.iter()
        .enumerate()
        .map(|(i, x)| {
            let xi = q.quantize_input(x).map_err(|e| format!("input row {i}: {e}"))?;
            q.reference(&xi, mode).map_err(|e| format!("the integer reference for row {i}: {e}"))
        })
        .collect()
}

/// One input vector from a file (`tandem-client`'s formats).
pub fn from_input_file(path: &Path) -> Result<Inputs, String> {
    let x = tandem_client::input::read_input_file(path)?;
    Ok(Inputs { rows: vec![x], labels: None, source: path.display().to_string() })
}

/// Many rows from a CSV file: an optional header row; a column named
/// `label_column` (when there is a header) holds the true label and is not
/// an input. At most `limit` rows are used.
pub fn from_csv(path: &Path, label_column: &str, limit: Option<usize>) -> Result<Inputs, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim().trim_start_matches('\u{feff}')))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .peekable();
    let split = |l: &str| l.split([',', ';', '\t']).map(|f| f.trim().trim_matches('"').to_string()).collect::<Vec<_>>();
    let first = lines.peek().map(|(_, l)| split(l)).ok_or_else(|| format!("{}: no rows", path.display()))?;
    let has_header = first.iter().any(|f| f.parse::<f64>().is_err());
    let label_idx = if has_header {
        lines.next();
        first.iter().position(|h| h == label_column)
    } else {
        None
    };
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (n, l) in lines {
        if limit.is_some_and(|k| rows.len() >= k) {
            break;
        }
        let fields = split(l);
        if has_header && fields.len() != first.len() {
            return Err(format!(
                "{} line {n}: {} fields, the header has {}",
                path.display(),
                fields.len(),
                first.len()
            ));
        }
        let mut row = Vec::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            let v: f64 = f
                .parse()
                .map_err(|_| format!("{} line {n}, column {}: {f:?} is not a number", path.display(), i + 1))?;
            if Some(i) == label_idx {
                if v < 0.0 || v.fract() != 0.0 {
                    return Err(format!("{} line {n}: label {f:?} is not a class index", path.display()));
                }
                labels.push(v as usize);
            } else {
                row.push(v);
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(format!("{}: no data rows", path.display()));
    }
    Ok(Inputs { labels: label_idx.map(|_| labels), source: format!("{} ({} rows)", path.display(), rows.len()), rows })
}

/// `n` rows drawn uniformly from the model's input range.
pub fn random(info: &ModelInfo, n: usize, seed: u64) -> Inputs {
    let mut rng = StdRng::seed_from_u64(seed);
    let (lo, hi) = info.input_range;
    let rows = (0..n).map(|_| (0..info.input_len()).map(|_| rng.gen_range(lo..=hi)).collect()).collect();
    Inputs { rows, labels: None, source: format!("{n} random rows in [{lo}, {hi}] (seed {seed})") }
}

/// Every row has the model's input length and lies in its range (the client
/// library would refuse it query by query otherwise).
pub fn check_rows(inputs: &Inputs, info: &ModelInfo) -> Result<(), String> {
    let (lo, hi) = info.input_range;
    for (i, r) in inputs.rows.iter().enumerate() {
        if r.len() != info.input_len() {
            return Err(format!(
                "{}: row {i} has {} values; model {:?} takes {} (shape {:?})",
                inputs.source,
                r.len(),
                info.id,
                info.input_len(),
                info.input_shape
            ));
        }
        if let Some((j, v)) = r.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= lo && **v <= hi)) {
            return Err(format!(
                "{}: row {i}, value {j} is {v}, outside the model's input range [{lo}, {hi}]",
                inputs.source
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_and_without_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "f0,f1,label\n0.5,1,3\n\n0,0.25,7\n").unwrap();
        let d = from_csv(&p, "label", None).unwrap();
        assert_eq!(d.rows, vec![vec![0.5, 1.0], vec![0.0, 0.25]]);
        assert_eq!(d.labels, Some(vec![3, 7]));
        assert_eq!(from_csv(&p, "label", Some(1)).unwrap().rows.len(), 1);
        std::fs::write(&p, "1,2\n3,4\n").unwrap();
        let d = from_csv(&p, "label", None).unwrap();
        assert_eq!((d.rows.len(), d.labels), (2, None));
        std::fs::write(&p, "a,b\n1,x\n").unwrap();
        assert!(from_csv(&p, "label", None).unwrap_err().contains("line 2, column 2"));
        std::fs::write(&p, "a,b\n").unwrap();
        assert!(from_csv(&p, "label", None).unwrap_err().contains("no data rows"));
    }
}
