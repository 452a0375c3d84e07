//! Go's duration notation (`time.ParseDuration`: `300ms`, `-1.5h`, `2h45m`,
//! `1h0m0s`, `0`), the one parser for flags, configuration files and Flyte's
//! duration literals. A leaf: it depends on nothing else in the crate.

/// Nanoseconds in a second.
pub const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// A text that is not a Go duration, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration (e.g. 300ms, -1.5h, 2h45m): {reason}")]
pub struct Error {
    pub text: String,
    pub reason: &'static str,
}

/// Parses a Go duration (`300ms`, `-1.5h`, `2h45m`, `1h0m0s`, `0`).
pub fn parse(text: &str) -> Result<prost_types::Duration, Error> {
    let err = |reason| Error {
        text: text.to_owned(),
        reason,
    };
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(prost_types::Duration::default());
    }
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "h" => 3_600 * NANOS_PER_SECOND,
            "" => return Err(err("missing unit (ns, us, ms, s, m, h)")),
            _ => return Err(err("unknown unit (ns, us, ms, s, m, h)")),
        };
        rest = &rest[unit_len..];
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("number too large"))?
        };
        let mut value = whole.checked_mul(unit).ok_or_else(|| err("too large"))?;
        if !frac_part.is_empty() {
            // Keep 18 digits at most: more can't change a nanosecond count.
            let digits = &frac_part[..frac_part.len().min(18)];
            let numerator: i128 = digits.parse().map_err(|_| err("bad fraction"))?;
            let scale = 10_i128.pow(u32::try_from(digits.len()).unwrap_or(18));
            value += numerator * unit / scale;
        }
        total = total.checked_add(value).ok_or_else(|| err("too large"))?;
    }
    if negative {
        total = -total;
    }
    let seconds = i64::try_from(total / NANOS_PER_SECOND).map_err(|_| err("too large"))?;
    let nanos = i32::try_from(total % NANOS_PER_SECOND).map_err(|_| err("too large"))?;
    Ok(prost_types::Duration { seconds, nanos })
}

/// A duration as a [`std::time::Duration`] (negative ones are refused).
pub fn parse_std(text: &str) -> Result<std::time::Duration, Error> {
    let d = parse(text)?;
    let (Ok(seconds), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(Error {
            text: text.to_owned(),
            reason: "negative",
        });
    };
    Ok(std::time::Duration::new(seconds, nanos))
}

/// [`parse_std`] as a clap value parser.
pub fn flag(text: &str) -> Result<std::time::Duration, String> {
    parse_std(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms_parse_and_negative_std_durations_are_refused() {
        assert_eq!(parse_std("1h"), Ok(std::time::Duration::from_secs(3600)));
        assert_eq!(
            parse_std("1m30.5s"),
            Ok(std::time::Duration::from_millis(90_500))
        );
        assert_eq!(parse("0"), Ok(prost_types::Duration::default()));
        assert_eq!(parse_std("-1s").map_err(|e| e.reason), Err("negative"));
        assert_eq!(
            parse("5").map_err(|e| e.reason),
            Err("missing unit (ns, us, ms, s, m, h)")
        );
        assert!(flag("x").unwrap_err().contains("\"x\" is not a duration"));
    }
}
