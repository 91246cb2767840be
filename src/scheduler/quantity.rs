//! Resource quantities (`100m`, `1.5`, `128Mi`, `1e3`) as integers in milli-units, so cpu and
//! memory are compared exactly; enough of upstream's `resource.Quantity` for scheduling.

/// A quantity in thousandths of its unit (millicores for cpu, millibytes for memory), rounded
/// up as upstream rounds requests; None if it does not parse.
pub fn parse_milli(text: &str) -> Option<i128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let (mantissa_scale, exponent): (i128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        s if s.starts_with(['e', 'E']) => (1, s[1..].parse().ok()?),
        _ => return None,
    };
    let negative = number.starts_with('-');
    let digits = number.trim_start_matches(['+', '-']);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    // value = digits × 10^(exponent - fraction digits) × scale, in milli-units: exponent + 3.
    let all_digits = format!("{whole}{fraction}");
    let mut value: i128 = if all_digits.is_empty() {
        0
    } else {
        all_digits.parse().ok()?
    };
    value = value.checked_mul(mantissa_scale)?;
    // The exponent and the digits come from the client: every step is checked, so an absurd
    // quantity is no quantity rather than an overflow.
    let frac_len = i32::try_from(fraction.len()).ok()?;
    let power = exponent.checked_add(3)?.checked_sub(frac_len)?;
    if power >= 0 {
        value = value.checked_mul(10i128.checked_pow(power.unsigned_abs())?)?;
    } else {
        // Rounded up, as upstream rounds a fraction of a milli-unit.
        let divisor = 10i128.checked_pow(power.unsigned_abs())?;
        value = value / divisor + i128::from(value % divisor != 0);
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_millicores() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("0.1"), Some(100));
        assert_eq!(parse_milli("250u"), Some(1));
    }

    #[test]
    fn memory_quantities_honour_binary_decimal_and_exponent_suffixes() {
        assert_eq!(parse_milli("128Mi"), Some(128 * 1024 * 1024 * 1000));
        assert_eq!(parse_milli("1G"), Some(1_000_000_000_000));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("1.5Gi"), Some(1_610_612_736_000));
    }

    #[test]
    fn quantities_beyond_the_range_are_none_not_an_overflow() {
        assert_eq!(parse_milli("1e2147483647"), None);
        assert_eq!(parse_milli("1.0000e-2147483648"), None);
        // i128::MAX nano-units: rounding up must not overflow either.
        assert_eq!(
            parse_milli("170141183460469231731687303715884105727n"),
            Some(170141183460469231731687303715885)
        );
        assert_eq!(parse_milli("170141183460469231731687303715884105727"), None);
    }

    #[test]
    fn garbage_does_not_parse() {
        assert_eq!(parse_milli(""), None);
        assert_eq!(parse_milli("Mi"), None);
        assert_eq!(parse_milli("12XB"), None);
    }
}
