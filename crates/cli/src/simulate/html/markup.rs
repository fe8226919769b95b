//! Small helpers for writing HTML by hand: escaping, and numbers marked with the JSON pointer
//! of the value they show, so a test can check every figure of the page against `-o json`.

use std::fmt::{self, Display, Write as _};

/// Text escaped for HTML element content and double- or single-quoted attribute values.
/// Everything taken from the input (pod names, reasons, labels) goes through this.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// A number as the JSON document would read it back: Rust's shortest round-trip form, so the
/// page shows exactly the value `-o json` has (never a re-rounded one).
pub fn num(x: f64) -> String {
    format!("{x}")
}

/// `<span data-json="PTR">value</span>`: a figure of the report, at JSON pointer `ptr`.
pub fn field(ptr: &str, value: impl Display) -> String {
    format!(
        "<span data-json=\"{}\">{}</span>",
        Esc(ptr),
        Esc(&value.to_string())
    )
}

/// A percentage with one decimal (derived figures only: never compared with the JSON).
pub fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// An HTML table: header cells, then rows of already-escaped cells; `numeric` columns are
/// right-aligned.
pub fn table(out: &mut String, headers: &[&str], numeric: &[usize], rows: &[Vec<String>]) {
    out.push_str("<table><thead><tr>");
    for (i, h) in headers.iter().enumerate() {
        let class = if numeric.contains(&i) {
            " class=\"n\""
        } else {
            ""
        };
        let _ = write!(out, "<th{class}>{}</th>", Esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if numeric.contains(&i) {
                " class=\"n\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            Esc("<script>alert(\"x&y\")</script> 'q'").to_string(),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt; &#39;q&#39;"
        );
        assert_eq!(Esc("plain/pod-0").to_string(), "plain/pod-0");
        assert_eq!(Esc("ünïcode→").to_string(), "ünïcode→");
    }

    #[test]
    fn numbers_read_back_exactly() {
        for x in [0.0, 1.0, 0.094124, 1.7455, 1e-6, 123456.789012] {
            assert_eq!(num(x).parse::<f64>(), Ok(x));
        }
        assert_eq!(
            field("/summary/pricePerHour", num(0.5)),
            "<span data-json=\"/summary/pricePerHour\">0.5</span>"
        );
    }
}
