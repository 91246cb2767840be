//! The Kubernetes quantity library (upstream `library/quantity.go`): `quantity('1Gi')`,
//! `isQuantity`, and on a quantity `sign`, `isInteger`, `asInteger`, `asApproximateFloat`,
//! `add`, `sub`, `compareTo`, `isGreaterThan`, `isLessThan`.
//!
//! A quantity is held exactly as a count of nano-units (upstream keeps an arbitrary-precision
//! decimal; nano-units are the finest scale a Kubernetes quantity keeps after canonicalisation,
//! and an i128 of them spans beyond `1E`). Values are stored in canonical form, so `==` between
//! two quantities compares amounts (`quantity('1') == quantity('1000m')`), as upstream.

use cel_interpreter::{ExecutionError, FunctionContext, Value};

use super::opaque;

const TYPE: &str = "kubernetes.Quantity";
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// An exact amount, in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    #[error("quantity is too large")]
    TooLarge,
}

impl Quantity {
    /// Parses upstream's quantity grammar: a signed decimal number and an optional binary-SI
    /// (`Ki`..`Ei`), decimal-SI (`n`..`E`) or exponent (`e3`, `E-2`) suffix.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(QuantityError::Format);
        }
        let mut mantissa: i128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit - b'0')))
                .ok_or(QuantityError::TooLarge)?;
        }
        let fraction_digits = fraction.len() as i32;
        let nanos = match suffix {
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let power = 10
                    * (1 + ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
                        .iter()
                        .position(|s| *s == suffix)
                        .unwrap_or(0) as u32);
                let scaled = mantissa
                    .checked_mul(1i128 << power)
                    .and_then(|m| m.checked_mul(NANOS_PER_UNIT))
                    .ok_or(QuantityError::TooLarge)?;
                scale(scaled, -fraction_digits)?
            }
            _ => {
                let exponent = decimal_exponent(suffix)?;
                scale(mantissa, exponent + 9 - fraction_digits)?
            }
        };
        Ok(Quantity(if negative { -nanos } else { nanos }))
    }

    pub fn sign(self) -> i64 {
        self.0.signum() as i64
    }

    pub fn as_integer(self) -> Option<i64> {
        if self.0 % NANOS_PER_UNIT != 0 {
            return None;
        }
        i64::try_from(self.0 / NANOS_PER_UNIT).ok()
    }

    pub fn as_approximate_float(self) -> f64 {
        self.0 as f64 / NANOS_PER_UNIT as f64
    }

    fn to_value(self) -> Value {
        opaque::object(TYPE, [("nanos", Value::String(self.0.to_string().into()))])
    }

    fn from_value(value: &Value) -> Option<Quantity> {
        match opaque::field(value, TYPE, "nanos")? {
            Value::String(s) => s.parse().ok().map(Quantity),
            _ => None,
        }
    }
}

/// The power of ten a decimal-SI or exponent suffix stands for.
fn decimal_exponent(suffix: &str) -> Result<i32, QuantityError> {
    Ok(match suffix {
        "" => 0,
        "n" => -9,
        "u" => -6,
        "m" => -3,
        "k" => 3,
        "M" => 6,
        "G" => 9,
        "T" => 12,
        "P" => 15,
        "E" => 18,
        _ => {
            let digits = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or(QuantityError::Format)?;
            let unsigned = digits.trim_start_matches(['+', '-']);
            if unsigned.is_empty()
                || digits.len() - unsigned.len() > 1
                || !unsigned.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(QuantityError::Format);
            }
            digits.parse::<i32>().map_err(|_| QuantityError::TooLarge)?
        }
    })
}

/// `value * 10^exponent`, rounded up (away from zero) to whole nano-units as upstream rounds
/// quantities finer than its smallest scale.
fn scale(value: i128, exponent: i32) -> Result<i128, QuantityError> {
    if value == 0 {
        return Ok(0);
    }
    if exponent >= 0 {
        return 10i128
            .checked_pow(exponent as u32)
            .and_then(|p| value.checked_mul(p))
            .ok_or(QuantityError::TooLarge);
    }
    match 10i128.checked_pow(exponent.unsigned_abs()) {
        Some(divisor) => Ok(value / divisor + i128::from(value % divisor != 0)),
        // Smaller than a nano-unit: one nano-unit, as the rounding up gives.
        None => Ok(1),
    }
}

fn receiver(ftx: &FunctionContext) -> Result<Quantity, ExecutionError> {
    ftx.this
        .as_ref()
        .and_then(Quantity::from_value)
        .ok_or_else(|| ftx.error("no such overload: the receiver must be a quantity"))
}

fn argument(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    match ftx.args.first() {
        Some(arg) => ftx.resolve(arg.clone()),
        None => Err(ftx.error("missing argument")),
    }
}

/// A quantity argument; `int` too where upstream accepts one (`add`, `sub`).
fn quantity_argument(ftx: &FunctionContext, ints: bool) -> Result<Quantity, ExecutionError> {
    match argument(ftx)? {
        Value::Int(i) if ints => Ok(Quantity(i128::from(i) * NANOS_PER_UNIT)),
        other => Quantity::from_value(&other)
            .ok_or_else(|| ftx.error("no such overload: the argument must be a quantity")),
    }
}

pub fn quantity(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    match argument(ftx)? {
        Value::String(s) => Quantity::parse(&s)
            .map(Quantity::to_value)
            .map_err(|e| ftx.error(e)),
        _ => Err(ftx.error("no such overload: quantity needs a string")),
    }
}

pub fn is_quantity(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    match argument(ftx)? {
        Value::String(s) => Ok(Value::Bool(Quantity::parse(&s).is_ok())),
        _ => Err(ftx.error("no such overload: isQuantity needs a string")),
    }
}

pub fn sign(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Int(receiver(ftx)?.sign()))
}

pub fn is_integer(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(receiver(ftx)?.as_integer().is_some()))
}

pub fn as_integer(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    receiver(ftx)?
        .as_integer()
        .map(Value::Int)
        .ok_or_else(|| ftx.error("cannot convert value to integer"))
}

pub fn as_approximate_float(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Float(receiver(ftx)?.as_approximate_float()))
}

pub fn add(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = (receiver(ftx)?, quantity_argument(ftx, true)?);
    a.0.checked_add(b.0)
        .map(|n| Quantity(n).to_value())
        .ok_or_else(|| ftx.error(QuantityError::TooLarge))
}

pub fn sub(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = (receiver(ftx)?, quantity_argument(ftx, true)?);
    a.0.checked_sub(b.0)
        .map(|n| Quantity(n).to_value())
        .ok_or_else(|| ftx.error(QuantityError::TooLarge))
}

pub fn compare_to(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = (receiver(ftx)?, quantity_argument(ftx, false)?);
    Ok(Value::Int(a.cmp(&b) as i64))
}

pub fn is_greater_than(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(receiver(ftx)? > quantity_argument(ftx, false)?))
}

pub fn is_less_than(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(receiver(ftx)? < quantity_argument(ftx, false)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel::test_support::{eval, holds};

    #[test]
    fn quantities_parse_every_suffix_exactly() {
        let nanos = |s: &str| Quantity::parse(s).map(|q| q.0);
        assert_eq!(nanos("1"), Ok(1_000_000_000));
        assert_eq!(nanos("500m"), Ok(500_000_000));
        assert_eq!(nanos("1.5"), Ok(1_500_000_000));
        assert_eq!(nanos(".5"), Ok(500_000_000));
        assert_eq!(nanos("1Ki"), Ok(1024 * NANOS_PER_UNIT));
        assert_eq!(nanos("1.5Gi"), Ok(1_610_612_736 * NANOS_PER_UNIT));
        assert_eq!(nanos("2k"), Ok(2000 * NANOS_PER_UNIT));
        assert_eq!(nanos("1e3"), Ok(1000 * NANOS_PER_UNIT));
        assert_eq!(nanos("1E-3"), Ok(1_000_000));
        assert_eq!(nanos("-20M"), Ok(-20_000_000 * NANOS_PER_UNIT));
        assert_eq!(nanos("1Ei"), Ok((1i128 << 60) * NANOS_PER_UNIT));
        assert_eq!(nanos("1n"), Ok(1));
        // Finer than a nano-unit rounds up, as upstream.
        assert_eq!(nanos("0.1n"), Ok(1));
        for bad in ["", "Gi", "1.2.3", "1Gb", "1e", "1e--3", "abc", "1 Gi", "."] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError::Format), "{bad}");
        }
    }

    #[test]
    fn the_quantity_library_works_as_upstream_documents_it() {
        // Upstream's examples from library/quantity.go.
        holds("isQuantity('1.3G')");
        holds("!isQuantity('1.3Gi.0')");
        holds("quantity('50k').sign() == 1");
        holds("quantity('-50k').sign() == -1");
        holds("quantity('0').sign() == 0");
        holds("quantity('50k').isInteger()");
        holds("!quantity('99999999999999G').isInteger()");
        holds("!quantity('50m').isInteger()");
        holds("quantity('50k').asInteger() == 50000");
        holds("quantity('50k').asApproximateFloat() == 50000.0");
        holds("quantity('1.1').asApproximateFloat() == 1.1");
        holds("quantity('50M').add(quantity('100k')) == quantity('50100k')");
        holds("quantity('50k').add(20) == quantity('50020')");
        holds("quantity('50k').sub(quantity('100k')) == quantity('-50k')");
        holds("quantity('50k').sub(20) == quantity('49980')");
        holds("quantity('50k').isGreaterThan(quantity('100'))");
        holds("!quantity('100').isGreaterThan(quantity('50k'))");
        holds("quantity('50M').isLessThan(quantity('100M'))");
        holds("quantity('200M').compareTo(quantity('0.2G')) == 0");
        holds("quantity('50M').compareTo(quantity('50Mi')) == -1");
        holds("quantity('50Mi').compareTo(quantity('50M')) == 1");
        holds("quantity('1') == quantity('1000m')");
        holds("quantity('2Gi').isLessThan(quantity('4Gi')) && quantity('512Mi').asInteger() == 536870912");
    }

    #[test]
    fn bad_quantities_and_non_integers_are_errors() {
        let err = eval("quantity('1.3Gi.0')").unwrap_err();
        assert!(err.contains("quantities must match"), "{err}");
        let err = eval("quantity('50m').asInteger()").unwrap_err();
        assert!(err.contains("cannot convert value to integer"), "{err}");
        let err = eval("quantity('99999999999999G').asInteger()").unwrap_err();
        assert!(err.contains("cannot convert value to integer"), "{err}");
        let err = eval("'1Gi'.isGreaterThan(quantity('1'))").unwrap_err();
        assert!(err.contains("no such overload"), "{err}");
    }
}
