//! Text forms of scalar values, as a program in the task container reads
//! and writes them: the same spellings as `flyte-copilot` (Go's
//! `strconv`/`time` formats) for integers, floats, booleans, datetimes
//! (RFC 3339, UTC) and durations (`1h2m3.5s`), and `google.protobuf.Struct`
//! ↔ JSON.
use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::value::Kind;

/// A value that could not be read from its text form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("{text:?} is not an integer (64-bit, decimal)")]
    Integer { text: String },
    #[error("{text:?} is not a floating-point number")]
    Float { text: String },
    #[error("{text:?} is not a boolean (true/false, 1/0, t/f)")]
    Boolean { text: String },
    #[error("{text:?} is not an RFC 3339 datetime (e.g. 2024-01-02T03:04:05Z): {reason}")]
    Datetime { text: String, reason: String },
    #[error("{text:?} is not a duration (e.g. 300ms, -1.5h, 2h45m): {reason}")]
    Duration { text: String, reason: &'static str },
    #[error("datetime {seconds}s {nanos}ns since the epoch is out of range")]
    DatetimeRange { seconds: i64, nanos: i32 },
    #[error("not a JSON object: {reason}")]
    Json { reason: String },
    #[error("JSON number {number} can't be represented as a double")]
    JsonNumber { number: String },
}

/// A float as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes it: the
/// shortest decimal that reads back to the same value, never an exponent.
pub fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

/// A float as Go's `encoding/json` writes it in `inputs.json`: a whole number
/// without a fraction (`3`, not `3.0`). NaN and infinities, which Go cannot
/// marshal at all, become their text.
pub fn json_float(value: f64) -> serde_json::Value {
    // Below 2^63 a whole f64 converts to i64 exactly.
    const WHOLE_LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if value.is_finite() && value.fract() == 0.0 && value.abs() < WHOLE_LIMIT {
        return serde_json::Value::from(value as i64);
    }
    serde_json::Number::from_f64(value)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(format_float(value)))
}

/// A duration as Go's `encoding/json` writes a `time.Duration` in `inputs.json`:
/// integer nanoseconds, saturating at the `int64` range as Go's conversion does.
pub fn duration_nanos(d: &prost_types::Duration) -> i64 {
    let nanos = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// Parses an integer (surrounding whitespace must already be trimmed).
pub fn parse_integer(text: &str) -> Result<i64, ValueError> {
    text.parse().map_err(|_| ValueError::Integer {
        text: text.to_owned(),
    })
}

/// Parses a float, accepting what Go's `ParseFloat` does (`1e3`, `inf`, `NaN`).
pub fn parse_float(text: &str) -> Result<f64, ValueError> {
    let lower = text.to_ascii_lowercase();
    let normalized = lower.strip_prefix('+').unwrap_or(&lower);
    match normalized {
        "inf" | "infinity" => return Ok(f64::INFINITY),
        _ => {}
    }
    text.parse().map_err(|_| ValueError::Float {
        text: text.to_owned(),
    })
}

/// Parses a boolean the way Go's `strconv.ParseBool` does.
pub fn parse_boolean(text: &str) -> Result<bool, ValueError> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ValueError::Boolean {
            text: text.to_owned(),
        }),
    }
}

/// A timestamp as RFC 3339 in UTC with as many fraction digits as needed
/// (Go's `time.RFC3339Nano`): `2024-01-02T03:04:05.5Z`.
pub fn format_datetime(ts: &prost_types::Timestamp) -> Result<String, ValueError> {
    let out_of_range = || ValueError::DatetimeRange {
        seconds: ts.seconds,
        nanos: ts.nanos,
    };
    let nanos = u32::try_from(ts.nanos).map_err(|_| out_of_range())?;
    let dt = DateTime::<Utc>::from_timestamp(ts.seconds, nanos).ok_or_else(out_of_range)?;
    let mut text = dt.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // "…05.500000000Z" → "…05.5Z"; "…05.000000000Z" → "…05Z".
    if let Some(dot) = text.rfind('.') {
        let fraction_end = text.len() - 1;
        let trimmed = text[dot + 1..fraction_end].trim_end_matches('0').len();
        let keep = if trimmed == 0 { dot } else { dot + 1 + trimmed };
        text.replace_range(keep..fraction_end, "");
    }
    Ok(text)
}

/// Parses an RFC 3339 datetime with any offset into a UTC timestamp.
pub fn parse_datetime(text: &str) -> Result<prost_types::Timestamp, ValueError> {
    let dt = DateTime::parse_from_rfc3339(text).map_err(|e| ValueError::Datetime {
        text: text.to_owned(),
        reason: e.to_string(),
    })?;
    let utc = dt.with_timezone(&Utc);
    Ok(prost_types::Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

use crate::duration::NANOS_PER_SECOND;

/// A duration as Go's `time.Duration.String()` writes it: `1h2m3.5s`,
/// `300ms`, `1.5µs`, `0s`.
pub fn format_duration(d: &prost_types::Duration) -> String {
    let total = i128::from(d.seconds) * NANOS_PER_SECOND + i128::from(d.nanos);
    if total == 0 {
        return "0s".to_owned();
    }
    let sign = if total < 0 { "-" } else { "" };
    let abs = total.unsigned_abs();
    if abs < 1_000 {
        return format!("{sign}{abs}ns");
    }
    if abs < 1_000_000 {
        return format!("{sign}{}µs", fraction(abs, 1_000));
    }
    if abs < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(abs, 1_000_000));
    }
    let hours = abs / 3_600_000_000_000;
    let rest = abs % 3_600_000_000_000;
    let minutes = rest / 60_000_000_000;
    let seconds = fraction(rest % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

/// `value / unit` with the fraction's trailing zeros trimmed.
fn fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a Go duration (`300ms`, `-1.5h`, `2h45m`, `1h0m0s`, `0`).
pub fn parse_duration(text: &str) -> Result<prost_types::Duration, ValueError> {
    crate::duration::parse(text).map_err(|e| ValueError::Duration {
        text: e.text,
        reason: e.reason,
    })
}

/// A `google.protobuf.Struct` as the JSON object it stands for.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        // Integral doubles print as integers (`1`, not `1.0`), as protobuf's JSON does.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
            J::Number(serde_json::Number::from(*n as i64))
        }
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(J::Number)
            // JSON has no NaN/Infinity; protobuf's JSON mapping spells them as strings.
            .unwrap_or_else(|| {
                J::String(
                    format_float(*n)
                        .replace("+Inf", "Infinity")
                        .replace("-Inf", "-Infinity"),
                )
            }),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// Parses a JSON object into a `google.protobuf.Struct`.
pub fn json_to_struct(text: &str) -> Result<prost_types::Struct, ValueError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ValueError::Json {
        reason: e.to_string(),
    })?;
    match value {
        serde_json::Value::Object(map) => object_to_struct(map),
        other => Err(ValueError::Json {
            reason: format!("found {}", json_kind(&other)),
        }),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn object_to_struct(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<prost_types::Struct, ValueError> {
    let fields = map
        .into_iter()
        .map(|(k, v)| Ok((k, json_to_value(v)?)))
        .collect::<Result<_, ValueError>>()?;
    Ok(prost_types::Struct { fields })
}

fn json_to_value(v: serde_json::Value) -> Result<prost_types::Value, ValueError> {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().ok_or_else(|| ValueError::JsonNumber {
            number: n.to_string(),
        })?),
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items
                .into_iter()
                .map(json_to_value)
                .collect::<Result<_, _>>()?,
        }),
        J::Object(map) => Kind::StructValue(object_to_struct(map)?),
    };
    Ok(prost_types::Value { kind: Some(kind) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn floats_are_written_like_go() {
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(parse_float("+Inf"), Ok(f64::INFINITY));
        assert_eq!(parse_float("1e3"), Ok(1000.0));
        assert!(parse_float("1,5").is_err());
    }

    #[test]
    fn booleans_follow_go_parse_bool() {
        assert_eq!(parse_boolean("True"), Ok(true));
        assert_eq!(parse_boolean("0"), Ok(false));
        assert!(matches!(
            parse_boolean("yes"),
            Err(ValueError::Boolean { .. })
        ));
    }

    #[test]
    fn durations_are_written_like_go() {
        assert_eq!(duration_nanos(&dur(3723, 500_000_000)), 3_723_500_000_000);
        assert_eq!(duration_nanos(&dur(-1, 0)), -1_000_000_000);
        assert_eq!(duration_nanos(&dur(i64::MAX, 0)), i64::MAX);
        assert_eq!(json_float(3.0).to_string(), "3");
        assert_eq!(json_float(-2.0).to_string(), "-2");
        assert_eq!(json_float(2.5).to_string(), "2.5");
        assert_eq!(json_float(f64::NAN), serde_json::json!("NaN"));
        assert_eq!(format_duration(&dur(0, 0)), "0s");
        assert_eq!(format_duration(&dur(3723, 500_000_000)), "1h2m3.5s");
        assert_eq!(format_duration(&dur(3600, 0)), "1h0m0s");
        assert_eq!(format_duration(&dur(90, 0)), "1m30s");
        assert_eq!(format_duration(&dur(0, 300_000_000)), "300ms");
        assert_eq!(format_duration(&dur(0, 1_500)), "1.5µs");
        assert_eq!(format_duration(&dur(0, 12)), "12ns");
        assert_eq!(format_duration(&dur(-1, -500_000_000)), "-1.5s");
    }

    #[test]
    fn durations_parse_like_go_and_round_trip() {
        assert_eq!(parse_duration("300ms"), Ok(dur(0, 300_000_000)));
        assert_eq!(parse_duration("-1.5h"), Ok(dur(-5400, 0)));
        assert_eq!(parse_duration("2h45m"), Ok(dur(9900, 0)));
        assert_eq!(parse_duration("1h0m0s"), Ok(dur(3600, 0)));
        assert_eq!(parse_duration("0"), Ok(dur(0, 0)));
        assert_eq!(parse_duration("1.5µs"), Ok(dur(0, 1500)));
        for bad in ["", "5", "1x", "h", "1.h2", "--1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        for d in [
            dur(3723, 500_000_000),
            dur(0, 7),
            dur(-90, 0),
            dur(86_400 * 400, 1),
        ] {
            assert_eq!(parse_duration(&format_duration(&d)), Ok(d));
        }
    }

    #[test]
    fn datetimes_are_rfc3339_utc_with_trimmed_fraction() {
        let ts = prost_types::Timestamp {
            seconds: 1_704_164_645,
            nanos: 500_000_000,
        };
        assert_eq!(
            format_datetime(&ts).as_deref(),
            Ok("2024-01-02T03:04:05.5Z")
        );
        let whole = prost_types::Timestamp {
            seconds: 1_704_164_645,
            nanos: 0,
        };
        assert_eq!(
            format_datetime(&whole).as_deref(),
            Ok("2024-01-02T03:04:05Z")
        );
        assert_eq!(parse_datetime("2024-01-02T05:04:05.5+02:00"), Ok(ts));
        assert!(matches!(
            parse_datetime("yesterday"),
            Err(ValueError::Datetime { .. })
        ));
        let bad = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(format_datetime(&bad).is_err());
    }

    #[test]
    fn structs_round_trip_through_json() {
        let text = r#"{"a": 1, "b": [true, null, "x"], "c": {"d": 2.5}}"#;
        let s = json_to_struct(text).expect("valid JSON object");
        let back = struct_to_json(&s);
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(text).expect("json")
        );
        assert!(matches!(
            json_to_struct("[1]"),
            Err(ValueError::Json { .. })
        ));
        assert!(matches!(json_to_struct("{"), Err(ValueError::Json { .. })));
    }
}
