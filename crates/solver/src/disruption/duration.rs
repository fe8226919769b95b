//! Go-style durations (`1h30m`, `5m`, `1.5h`, `300ms`), as Kubernetes annotations and
//! Karpenter fields write them.

/// Parses a Go duration into whole seconds, rounding a fractional second up (a protection
/// window is never shortened). `None` when malformed or negative.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        nanos += value * scale;
    }
    Some((nanos / 1e9).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("5m"), Some(300));
        assert_eq!(parse_go_duration("1h30m"), Some(5400));
        assert_eq!(parse_go_duration("1.5h"), Some(5400));
        assert_eq!(parse_go_duration("300ms"), Some(1));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("30s"), Some(30));
        for bad in ["", "5", "m", "5x", "-5m", "true"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
