//! The final summary: an ordered list of fields printed either as
//! `name: value` lines (stdout, one per line, grep-friendly) or as one JSON
//! object (`--json`), with the same names.

use serde_json::Value;

pub struct Report {
    fields: Vec<(String, Value, String)>,
}

impl Report {
    pub fn new() -> Report {
        Report { fields: Vec::new() }
    }

    /// A field whose text form is derived from its JSON value.
    pub fn add(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        let text = match &value {
            Value::Null => "-".to_owned(),
            Value::Bool(true) => "yes".to_owned(),
            Value::Bool(false) => "no".to_owned(),
            Value::String(s) => s.clone(),
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => format_float(f),
                _ => n.to_string(),
            },
            other => other.to_string(),
        };
        self.fields.push((key.to_owned(), value, text));
    }

    /// A field with its own text form (e.g. a per-core table).
    pub fn add_with_text(&mut self, key: &str, value: Value, text: String) {
        self.fields.push((key.to_owned(), value, text));
    }

    pub fn to_text(&self) -> String {
        let width = self
            .fields
            .iter()
            .map(|(k, _, _)| k.len() + 1)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (key, _, text) in &self.fields {
            let label = key.replace('_', " ");
            out.push_str(&format!("{:width$}  {text}\n", format!("{label}:")));
        }
        out
    }

    pub fn to_json(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v, _)| format!("{}:{}", Value::String(k.clone()), v))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

/// Rounds to 3 decimals for JSON (enough for ms and ratios; keeps output short).
pub fn round3(f: f64) -> f64 {
    (f * 1000.0).round() / 1000.0
}

fn format_float(f: f64) -> String {
    if f.abs() >= 1000.0 {
        format!("{f:.0}")
    } else {
        format!("{f:.3}")
    }
}

/// A plain text table: a header row, a rule, then the rows, columns padded
/// to their widest cell (numbers and text alike left-aligned).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_agree() {
        let mut r = Report::new();
        r.add("members", 1000);
        r.add("latency_ms_p99", 1.25);
        r.add("generator_saturated", false);
        r.add("relay_pid", Value::Null);
        let text = r.to_text();
        assert!(text.contains("generator saturated:"));
        assert!(text.contains("  no\n"));
        let json: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["members"], 1000);
        assert_eq!(json["generator_saturated"], false);
    }

    #[test]
    fn tables_line_up() {
        let t = table(&["a", "bb"], &[vec!["100".into(), "x".into()]]);
        assert_eq!(t, "a    bb\n---  --\n100  x\n");
    }
}
