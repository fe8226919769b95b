//! NodeOverlay price changes: `price` (replace) and `priceAdjustment` (signed amount or
//! percentage), parsed once and applied to offering prices.

use super::OverlayError;

/// How an overlay changes the price of the offerings it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PriceChange {
    /// `price: "0.25"`: the offering costs exactly this.
    Set(f64),
    /// `priceAdjustment: "+0.1"` / `"-0.05"`: added to the provider's price.
    Add(f64),
    /// `priceAdjustment: "-10%"` / `"+5%"`: percent of the provider's price added.
    Percent(f64),
}

/// Digits with at most one decimal point and at least one digit (no exponent, no `inf`/`nan`,
/// which `f64::from_str` would take).
fn is_decimal(s: &str) -> bool {
    let mut dots = 0;
    let mut digits = 0;
    for c in s.chars() {
        match c {
            '0'..='9' => digits += 1,
            '.' => dots += 1,
            _ => return false,
        }
    }
    digits > 0 && dots <= 1 && !s.ends_with('.')
}

impl PriceChange {
    /// Parses `spec.price`: a non-negative decimal such as `"0.25"`.
    pub fn price(value: &str) -> Result<Self, OverlayError> {
        let bad = || OverlayError::Price {
            field: "spec.price",
            value: value.to_owned(),
        };
        if !is_decimal(value) || value.starts_with('.') {
            return Err(bad());
        }
        value.parse().map(Self::Set).map_err(|_| bad())
    }

    /// Parses `spec.priceAdjustment`: `"+0.1"`, `"-0.05"`, `"+5%"` or `"-10%"` (not below
    /// `-100%`).
    pub fn adjustment(value: &str) -> Result<Self, OverlayError> {
        let bad = || OverlayError::Price {
            field: "spec.priceAdjustment",
            value: value.to_owned(),
        };
        let (negative, rest) = match value.split_at_checked(1) {
            Some(("+", rest)) => (false, rest),
            Some(("-", rest)) => (true, rest),
            _ => return Err(bad()),
        };
        let (number, percent) = match rest.strip_suffix('%') {
            Some(n) => (n, true),
            None => (rest, false),
        };
        if !is_decimal(number) {
            return Err(bad());
        }
        let magnitude: f64 = number.parse().map_err(|_| bad())?;
        let amount = if negative { -magnitude } else { magnitude };
        if percent {
            // Below -100% every price would be clamped to 0 anyway; upstream rejects it.
            if amount < -100.0 {
                return Err(bad());
            }
            Ok(Self::Percent(amount))
        } else {
            Ok(Self::Add(amount))
        }
    }

    /// The new price of an offering that cost `price`; never below 0.
    pub fn apply(self, price: f64) -> f64 {
        let changed = match self {
            Self::Set(p) => p,
            Self::Add(a) => price + a,
            Self::Percent(p) => price * (1.0 + p / 100.0),
        };
        changed.max(0.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn adjustments_by_hand() {
        // -10% of 0.2 = 0.2 - 0.02 = 0.18.
        assert!(close(
            PriceChange::adjustment("-10%").unwrap().apply(0.2),
            0.18
        ));
        // +5% of 0.2 = 0.2 + 0.01 = 0.21.
        assert!(close(
            PriceChange::adjustment("+5%").unwrap().apply(0.2),
            0.21
        ));
        // +0.1 on 0.2 = 0.3; -0.05 on 0.2 = 0.15.
        assert!(close(
            PriceChange::adjustment("+0.1").unwrap().apply(0.2),
            0.3
        ));
        assert!(close(
            PriceChange::adjustment("-0.05").unwrap().apply(0.2),
            0.15
        ));
        // -0.5 on 0.2 would be -0.3: clamped to 0. -100% of anything is 0.
        assert_eq!(PriceChange::adjustment("-0.5").unwrap().apply(0.2), 0.0);
        assert_eq!(PriceChange::adjustment("-100%").unwrap().apply(3.0), 0.0);
        // `.5` without a leading digit is an amount too (upstream's pattern allows it).
        assert!(close(
            PriceChange::adjustment("+.5").unwrap().apply(1.0),
            1.5
        ));
    }

    #[test]
    fn price_replaces() {
        assert!(close(PriceChange::price("0.5").unwrap().apply(0.2), 0.5));
        assert_eq!(PriceChange::price("0").unwrap().apply(0.2), 0.0);
    }

    #[test]
    fn malformed_values_name_the_field() {
        for bad in ["", "abc", "1e3", "inf", "-1", "+1", "1.", ".5", "1.2.3"] {
            let e = PriceChange::price(bad).unwrap_err();
            assert!(e.to_string().contains("spec.price"), "{bad}: {e}");
        }
        for bad in [
            "", "10%", "0.1", "+", "-%", "-101%", "+1e2", "+nan", "--1", "+1%%",
        ] {
            let e = PriceChange::adjustment(bad).unwrap_err();
            assert!(e.to_string().contains("spec.priceAdjustment"), "{bad}: {e}");
        }
    }
}
