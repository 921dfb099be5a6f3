//! Reading one input vector from CSV or JSON.
//!
//! * CSV: one row of numbers, or a header row and one row of numbers
//!   (separators: comma, semicolon or tab; blank lines and `#` comments skipped).
//! * JSON: an array of numbers (nested arrays are flattened in row-major
//!   order, e.g. `[[[…]]]` for a CHW image), or an object whose `"input"`
//!   field is such an array.

use std::path::Path;

/// One input vector from a JSON or CSV file (by extension, else by content).
pub fn read_input_file(path: &Path) -> Result<Vec<f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("csv") | Some("tsv") | Some("txt") => false,
        _ => matches!(text.trim_start().chars().next(), Some('[') | Some('{')),
    };
    let r = if is_json { parse_json(&text) } else { parse_csv(&text) };
    r.map_err(|e| format!("{}: {e}", path.display()))
}

/// A JSON array of numbers (nested arrays flattened), or an object whose
/// `"input"` field is one.
pub fn parse_json(text: &str) -> Result<Vec<f64>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let arr = match &v {
        serde_json::Value::Object(o) => {
            o.get("input").ok_or("a JSON object must have an \"input\" field holding the array of numbers")?
        }
        other => other,
    };
    let mut out = Vec::new();
    flatten(arr, &mut out)?;
    if out.is_empty() {
        return Err("the input array is empty".into());
    }
    Ok(out)
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

/// One CSV row of numbers, after an optional header row.
pub fn parse_csv(text: &str) -> Result<Vec<f64>, String> {
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split([',', ';', '\t']).map(str::trim).collect())
        .collect();
    let numeric = |r: &Vec<&str>| r.iter().all(|f| f.parse::<f64>().is_ok());
    let data: Vec<&Vec<&str>> = match rows.first() {
        None => return Err("the CSV file has no rows".into()),
        Some(first) if numeric(first) => rows.iter().collect(),
        Some(_) => rows[1..].iter().collect(),
    };
    match data.as_slice() {
        [row] => row
            .iter()
            .enumerate()
            .map(|(i, f)| f.parse::<f64>().map_err(|_| format!("column {} is {f:?}, not a number", i + 1)))
            .collect(),
        [] => Err("the CSV file has a header but no data row".into()),
        more => Err(format!("the CSV file has {} data rows; expected exactly one input row", more.len())),
    }
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
        assert!(parse_csv("a,b\n1,x\n").unwrap_err().contains("column 2"));
    }

    #[test]
    fn json_forms() {
        assert_eq!(parse_json("[1, 2.5]").unwrap(), vec![1.0, 2.5]);
        assert_eq!(parse_json(r#"{"input": [[1, 2], [3, 4]], "label": 1}"#).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert!(parse_json(r#"{"x": [1]}"#).unwrap_err().contains("\"input\""));
        assert!(parse_json(r#"[1, "a"]"#).is_err());
        assert!(parse_json("[]").is_err());
    }
}
