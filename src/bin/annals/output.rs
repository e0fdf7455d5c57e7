//! Output: aligned tables and readable values for people, JSON for scripts.
//!
//! Everything goes through [`Out`], which writes to stdout without panicking: a reader that
//! closes the pipe (`annals tail | head -3`) ends the command quietly.

use std::io::Write;

use annals::Timestamp;
use serde::Serialize;

use crate::error::CliError;

/// Where results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// JSON instead of tables.
    pub json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out { json }
    }

    /// Writes `text` and a newline.
    pub fn line(&self, text: impl AsRef<str>) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_ref().as_bytes())?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        Ok(())
    }

    /// Writes `value` as one pretty JSON document.
    pub fn json_doc(&self, value: &impl Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::failed(format!("cannot encode the output as JSON: {e}")))?;
        self.line(text)
    }

    /// Writes `value` as one line of JSON.
    pub fn json_line(&self, value: &impl Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string(value)
            .map_err(|e| CliError::failed(format!("cannot encode the output as JSON: {e}")))?;
        self.line(text)
    }

    /// Writes rows under `headers`, columns aligned; numeric columns (`right`) right-aligned.
    pub fn table(
        &self,
        headers: &[&str],
        right: &[bool],
        rows: &[Vec<String>],
    ) -> Result<(), CliError> {
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let render = |cells: &mut dyn Iterator<Item = &str>| {
            let mut line = String::new();
            for (i, cell) in cells.enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                if right.get(i).copied().unwrap_or(false) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            line.trim_end().to_owned()
        };
        let mut text = render(&mut headers.iter().copied());
        for row in rows {
            text.push('\n');
            text.push_str(&render(&mut row.iter().map(String::as_str)));
        }
        self.line(text)
    }

    /// Writes `label  value` pairs, labels aligned.
    pub fn fields(&self, pairs: &[(&str, String)]) -> Result<(), CliError> {
        let width = pairs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let text: Vec<String> = pairs
            .iter()
            .map(|(label, value)| format!("{label:width$}  {value}"))
            .collect();
        self.line(text.join("\n"))
    }
}

/// A timestamp for people: `2024-05-01 12:34:56.789 UTC`.
pub fn human_time(t: Timestamp) -> String {
    let iso = t.to_string();
    match iso.strip_suffix('Z') {
        Some(rest) => format!("{} UTC", rest.replacen('T', " ", 1)),
        None => iso,
    }
}

/// A byte count for people: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A JSON value on one line, shortened to `max` characters for a table cell.
pub fn short_json(value: &impl serde::Serialize, max: usize) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|e| format!("<{e}>"));
    if text.chars().count() <= max {
        return text;
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}
