//! Reading one input vector from CSV or JSON.
//!
//! * CSV: the files `tandem-eval` and `tandem-loadgen --data` take are
//!   accepted as they are: an optional header row, one sample per row
//!   (separators: comma, semicolon or tab; blank lines and `#` comments
//!   skipped). A header column named like the label column (`label` by
//!   default) is not an input: it is set aside and reported. A file with
//!   several data rows needs the row to send ([`InputSpec::row`], `--row N`,
//!   counted from 0 as `tandem-eval` numbers samples).
//! * JSON: an array of numbers (nested arrays are flattened in row-major
//!   order, e.g. `[[[…]]]` for a CHW image), or an object whose `"input"`
//!   field is such an array (a `"label"` field beside it is reported).

use std::path::Path;

/// Which sample of a file to read, and which CSV column is the label.
#[derive(Clone, Debug)]
pub struct InputSpec<'a> {
    /// The data row (0 = the first row after the header); `None` when the
    /// file must hold exactly one.
    pub row: Option<usize>,
    /// The header name of the label column (dropped from the input).
    pub label_column: &'a str,
}

impl Default for InputSpec<'_> {
    fn default() -> Self {
        InputSpec { row: None, label_column: "label" }
    }
}

/// One sample read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The model input, in file order.
    pub values: Vec<f64>,
    /// The file's label for the sample, if it has one (not sent anywhere).
    pub label: Option<f64>,
    /// The data row it came from (0 for a JSON file).
    pub row: usize,
    /// How many data rows the file holds.
    pub rows: usize,
}

/// One input vector from a JSON or CSV file (by extension, else by
/// content): the only sample, with a `label` column or field set aside.
pub fn read_input_file(path: &Path) -> Result<Vec<f64>, String> {
    read_sample(path, &InputSpec::default()).map(|s| s.values)
}

/// One sample from a JSON or CSV file (by extension, else by content).
pub fn read_sample(path: &Path, spec: &InputSpec<'_>) -> Result<Sample, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("csv") | Some("tsv") | Some("txt") => false,
        _ => matches!(text.trim_start().chars().next(), Some('[') | Some('{')),
    };
    let r = if is_json {
        match spec.row {
            Some(r) if r > 0 => Err(format!("--row {r}: a JSON file holds one sample (row 0)")),
            _ => parse_json_sample(&text),
        }
    } else {
        parse_csv_sample(&text, spec)
    };
    r.map_err(|e| format!("{}: {e}", path.display()))
}

/// A JSON array of numbers (nested arrays flattened), or an object whose
/// `"input"` field is one.
pub fn parse_json(text: &str) -> Result<Vec<f64>, String> {
    parse_json_sample(text).map(|s| s.values)
}

/// [`parse_json`], with the object's `"label"` field if it is a number.
pub fn parse_json_sample(text: &str) -> Result<Sample, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let (arr, label) = match &v {
        serde_json::Value::Object(o) => (
            o.get("input").ok_or("a JSON object must have an \"input\" field holding the array of numbers")?,
            o.get("label").and_then(|l| l.as_f64()),
        ),
        other => (other, None),
    };
    let mut values = Vec::new();
    flatten(arr, &mut values)?;
    if values.is_empty() {
        return Err("the input array is empty".into());
    }
    Ok(Sample { values, label, row: 0, rows: 1 })
}

fn flatten(v: &serde_json::Value, out: &mut Vec<f64>) -> Result<(), String> {
    match v {
        serde_json::Value::Array(a) => a.iter().try_for_each(|x| flatten(x, out)),
        serde_json::Value::Number(n) => {
            out.push(n.as_f64().ok_or("a number does not fit an f64")?);
            Ok(())
        }
        other => Err(format!("expected numbers (or arrays of numbers), found {other}")),
    }
}

/// One CSV row of numbers, after an optional header row; a `label` header
/// column is set aside.
pub fn parse_csv(text: &str) -> Result<Vec<f64>, String> {
    parse_csv_sample(text, &InputSpec::default()).map(|s| s.values)
}

/// The sample `spec.row` of a CSV text (header optional; the header's
/// `spec.label_column` column is the label, not an input).
pub fn parse_csv_sample(text: &str, spec: &InputSpec<'_>) -> Result<Sample, String> {
    // (line number, fields) of every non-blank, non-comment line.
    let rows: Vec<(usize, Vec<&str>)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().trim_start_matches('\u{feff}')))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.split([',', ';', '\t']).map(|f| f.trim().trim_matches('"')).collect()))
        .collect();
    let numeric = |r: &[&str]| r.iter().all(|f| f.parse::<f64>().is_ok());
    let (header, data) = match rows.split_first() {
        None => return Err("the CSV file has no rows".into()),
        Some((first, _)) if numeric(&first.1) => (None, &rows[..]),
        Some((first, rest)) => (Some(&first.1), rest),
    };
    let label_col = header.and_then(|h| h.iter().position(|c| *c == spec.label_column));
    let n = data.len();
    let index = match (spec.row, n) {
        (_, 0) => return Err("the CSV file has a header but no data row".into()),
        (None, 1) => 0,
        (None, n) => {
            return Err(format!(
                "the CSV file has {n} data rows; choose the one to send with --row N (0 to {}, counted after the header as tandem-eval counts samples)",
                n - 1
            ))
        }
        (Some(r), n) if r >= n => return Err(format!("--row {r}: the CSV file has {n} data rows (0 to {})", n - 1)),
        (Some(r), _) => r,
    };
    let (line, fields) = &data[index];
    if let Some(h) = header {
        if h.len() != fields.len() {
            return Err(format!("line {line}: {} values, the header has {} columns", fields.len(), h.len()));
        }
    }
    let mut values = Vec::with_capacity(fields.len());
    let mut label = None;
    for (i, f) in fields.iter().enumerate() {
        let v = f.parse::<f64>().map_err(|_| match header {
            Some(h) => format!("line {line}, column {} ({:?}) is {f:?}, not a number", i + 1, h[i]),
            None => format!("line {line}, column {} is {f:?}, not a number", i + 1),
        })?;
        if Some(i) == label_col {
            label = Some(v);
        } else {
            values.push(v);
        }
    }
    if values.is_empty() {
        return Err("the row has no input values besides its label".into());
    }
    Ok(Sample { values, label, row: index, rows: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_forms() {
        assert_eq!(parse_csv("1, 2.5,-3\n").unwrap(), vec![1.0, 2.5, -3.0]);
        assert_eq!(parse_csv("a,b,c\n1,2,3\n\n").unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(parse_csv("# comment\n0.5\t1e-3\n").unwrap(), vec![0.5, 1e-3]);
        assert!(parse_csv("1,2\n3,4\n").unwrap_err().contains("2 data rows"));
        assert!(parse_csv("a,b\n").unwrap_err().contains("no data row"));
        assert!(parse_csv("a,b\n1,x\n").unwrap_err().contains("column 2 (\"b\")"));
    }

    /// The test splits tandem-eval takes (header `f0,…,label`, many rows)
    /// are read as they are: the label set aside, the row chosen.
    #[test]
    fn tandem_eval_splits_with_label_and_row() {
        let text = "f0,f1,label\n0.5,1,0\n-1,2,1\n3,4,1\n";
        let spec = |row| InputSpec { row, label_column: "label" };
        let s = parse_csv_sample(text, &spec(Some(1))).unwrap();
        assert_eq!(s, Sample { values: vec![-1.0, 2.0], label: Some(1.0), row: 1, rows: 3 });
        let e = parse_csv_sample(text, &spec(None)).unwrap_err();
        assert!(e.contains("3 data rows") && e.contains("--row N (0 to 2"), "{e}");
        let e = parse_csv_sample(text, &spec(Some(3))).unwrap_err();
        assert!(e.contains("--row 3") && e.contains("(0 to 2)"), "{e}");
        // The label column may sit anywhere, under another name.
        let s = parse_csv_sample("y;a;b\n1;2;3\n", &InputSpec { row: None, label_column: "y" }).unwrap();
        assert_eq!((s.values, s.label), (vec![2.0, 3.0], Some(1.0)));
        // One row with its label: the common case of a row cut from a split.
        assert_eq!(parse_csv("f0,f1,label\n0.5,1,0\n").unwrap(), vec![0.5, 1.0]);
        let e = parse_csv_sample("a,b,label\n1,2\n", &spec(None)).unwrap_err();
        assert!(e.contains("line 2: 2 values, the header has 3 columns"), "{e}");
        assert!(parse_csv("label\n1\n").unwrap_err().contains("no input values"));
    }

    #[test]
    fn json_forms() {
        assert_eq!(parse_json("[1, 2.5]").unwrap(), vec![1.0, 2.5]);
        assert_eq!(parse_json(r#"{"input": [[1, 2], [3, 4]], "label": 1}"#).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(parse_json_sample(r#"{"input": [1], "label": 6}"#).unwrap().label, Some(6.0));
        assert!(parse_json(r#"{"x": [1]}"#).unwrap_err().contains("\"input\""));
        assert!(parse_json(r#"[1, "a"]"#).is_err());
        assert!(parse_json("[]").is_err());
    }
}
