//! Exact parsing of Kubernetes resource quantities (`100m`, `1.5`, `512Mi`, `1e3`, ...).
//!
//! Quantities are parsed as an exact decimal mantissa times a power of ten and/or a power of
//! two, then scaled to an integer unit. No floating point is involved, so `0.1 + 0.2` style
//! rounding can never make a pod "not fit" by one byte.

use thiserror::Error;

/// Why a quantity string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// The string was empty (after trimming).
    #[error("empty quantity")]
    Empty,
    /// The number part is malformed (no digits, two dots, stray characters...).
    #[error("invalid quantity {0:?}: malformed number")]
    Malformed(String),
    /// The suffix is not one of the Kubernetes suffixes.
    #[error("invalid quantity {0:?}: unknown suffix {1:?}")]
    UnknownSuffix(String, String),
    /// The value does not fit in 64-bit integer units.
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
}

/// Parses `s` into integer multiples of 10^-3 (milli-units), rounding up any finer remainder.
///
/// Used for `cpu` (millicores).
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    parse_scaled(s, 3)
}

/// Parses `s` into integer base units (bytes, counts), rounding any fraction up, as
/// Kubernetes' `Quantity.Value()` does.
pub fn parse_base(s: &str) -> Result<i64, QuantityError> {
    parse_scaled(s, 0)
}

/// Parses `s` in the unit Kubernetes uses for the named resource in this crate: millicores for
/// `cpu`, base units (bytes, counts) for everything else.
pub fn parse_for_resource(resource: &str, s: &str) -> Result<i64, QuantityError> {
    if resource == crate::resources::CPU {
        parse_milli(s)
    } else {
        parse_base(s)
    }
}

/// Formats a millicore amount the way Kubernetes prints it (`1500m` → `1500m`, `2000` → `2`).
pub fn format_milli(v: i64) -> String {
    if v % 1000 == 0 {
        format!("{}", v / 1000)
    } else {
        format!("{v}m")
    }
}

/// Formats a byte amount with the largest exact binary suffix (`1073741824` → `1Gi`).
pub fn format_bytes(v: i64) -> String {
    const SUFFIXES: [(&str, i64); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, mult) in SUFFIXES {
        if v != 0 && v % mult == 0 {
            return format!("{}{suffix}", v / mult);
        }
    }
    format!("{v}")
}

/// Core parser: returns ceil(value × 10^unit_exp) as i64.
fn parse_scaled(input: &str, unit_exp: i32) -> Result<i64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let malformed = || QuantityError::Malformed(input.to_string());
    let range = || QuantityError::OutOfRange(input.to_string());

    let bytes = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if bytes[0] == b'+' || bytes[0] == b'-' {
        negative = bytes[0] == b'-';
        i = 1;
    }
    // Mantissa digits (integer and fraction), accumulated exactly in i128.
    let mut mantissa: i128 = 0;
    let mut digits = 0usize;
    let mut frac_digits: i32 = 0;
    let mut seen_dot = false;
    // Significant digits beyond what i128 holds only matter if they are non-zero fractions;
    // we reject absurdly long numbers instead of silently losing precision.
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(c - b'0')))
                .ok_or_else(range)?;
            digits += 1;
            if seen_dot {
                frac_digits += 1;
            }
        } else if c == b'.' && !seen_dot {
            seen_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return Err(malformed());
    }
    let suffix = &s[i..];
    let (dec_exp, bin_exp): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other if other.starts_with('e') || other.starts_with('E') => {
            let exp: i32 = other[1..].parse().map_err(|_| malformed())?;
            if !(-40..=40).contains(&exp) {
                return Err(range());
            }
            (exp, 0)
        }
        other => {
            return Err(QuantityError::UnknownSuffix(
                input.to_string(),
                other.to_string(),
            ));
        }
    };
    let mut value = mantissa.checked_shl(bin_exp).ok_or_else(range)?;
    if bin_exp > 0 && (value >> bin_exp) != mantissa {
        return Err(range());
    }
    let exp = dec_exp - frac_digits + unit_exp;
    if exp >= 0 {
        for _ in 0..exp {
            value = value.checked_mul(10).ok_or_else(range)?;
        }
    } else {
        let mut div: i128 = 1;
        for _ in 0..(-exp) {
            div = match div.checked_mul(10) {
                Some(d) => d,
                // The divisor exceeds any representable mantissa: the value is in (0, 1].
                None => {
                    value = i128::from(value != 0);
                    div = 1;
                    break;
                }
            };
        }
        // Round the magnitude up (Kubernetes rounds requests up to the next unit).
        let q = value / div;
        value = if value % div != 0 { q + 1 } else { q };
    }
    if negative {
        value = -value;
    }
    i64::try_from(value).map_err(|_| range())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("2"), Ok(2000));
        assert_eq!(parse_milli("0.0001"), Ok(1)); // rounds up
        assert_eq!(parse_milli("1e3"), Ok(1_000_000));
        assert_eq!(parse_milli("500u"), Ok(1));
    }

    #[test]
    fn parses_memory() {
        assert_eq!(parse_base("512Mi"), Ok(512 << 20));
        assert_eq!(parse_base("1G"), Ok(1_000_000_000));
        assert_eq!(parse_base("2Ki"), Ok(2048));
        assert_eq!(parse_base("0.5Gi"), Ok(1 << 29));
        assert_eq!(parse_base("1.8G"), Ok(1_800_000_000));
        assert_eq!(parse_base("100M"), Ok(100_000_000));
        assert_eq!(parse_base("1E3"), Ok(1000));
        assert_eq!(parse_base("12e-1"), Ok(2));
        assert_eq!(parse_base("-1Ki"), Ok(-1024));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_base(""), Err(QuantityError::Empty));
        assert!(matches!(
            parse_base("abc"),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            parse_base("1.2.3"),
            Err(QuantityError::UnknownSuffix(..))
        ));
        assert!(matches!(
            parse_base("1Xi"),
            Err(QuantityError::UnknownSuffix(..))
        ));
        assert!(matches!(parse_base("1e"), Err(QuantityError::Malformed(_))));
        assert!(matches!(
            parse_base("99999999999Ei"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_base("1e40"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(parse_base("."), Err(QuantityError::Malformed(_))));
    }

    #[test]
    fn formats() {
        assert_eq!(format_milli(1500), "1500m");
        assert_eq!(format_milli(2000), "2");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1000), "1000");
    }
}
