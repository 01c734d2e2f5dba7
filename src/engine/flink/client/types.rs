//! Flink's logical types as the SQL Gateway describes result columns (`logicalType` JSON), the
//! PostgreSQL type a pgwire client should see for each ([`pg_type`]), and a value's PostgreSQL
//! text form ([`pg_text`]). Also the lossless reading of a row's JSON fields ([`decode_field`]).
//! Pure functions only: no I/O.
//!
//! Numbers: Flink writes DECIMAL values as JSON numbers with every digit (38 digits do not fit an
//! `f64`) but with trailing zeros stripped, in Java's `BigDecimal` notation (`100.00` arrives as
//! `1E+2`, `0.0000001` as `1E-7`). serde_json's `arbitrary_precision` feature would keep such
//! numbers, but it changes serde_json for the whole build (numbers become a map inside untagged and
//! flattened types, `Number` equality follows the text), so it is not used: [`decode_field`] reads
//! each field as raw JSON text (the additive `raw_value` feature) and, guided by the column's
//! type, keeps a DECIMAL (also inside ARRAY, MAP and ROW) as a JSON *string* holding Flink's exact
//! number text. Every other value is an ordinary `serde_json::Value`.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

/// A column's or a nested field's type, as Flink describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalType {
    pub kind: TypeKind,
    pub nullable: bool,
}

/// Flink's logical type roots (the `type` of `logicalType`), with their parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    Boolean,
    TinyInt,
    SmallInt,
    Integer,
    BigInt,
    Float,
    Double,
    Decimal {
        precision: u32,
        scale: u32,
    },
    Char {
        length: u32,
    },
    /// `STRING` is `VARCHAR(2147483647)`.
    VarChar {
        length: u32,
    },
    Binary {
        length: u32,
    },
    /// `BYTES` is `VARBINARY(2147483647)`.
    VarBinary {
        length: u32,
    },
    Date,
    Time {
        precision: u32,
    },
    Timestamp {
        precision: u32,
    },
    TimestampLtz {
        precision: u32,
    },
    TimestampTz {
        precision: u32,
    },
    /// Values are a number of months.
    IntervalYearMonth,
    /// Values are a number of milliseconds.
    IntervalDayTime,
    Array(Box<LogicalType>),
    Multiset(Box<LogicalType>),
    Map {
        key: Box<LogicalType>,
        value: Box<LogicalType>,
    },
    Row(Vec<RowField>),
    Null,
    /// A root this client does not model (RAW, STRUCTURED_TYPE, ...): its name.
    Other(String),
}

/// A field of a ROW type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowField {
    pub name: String,
    pub ty: LogicalType,
}

/// `VARCHAR`'s and `VARBINARY`'s length for `STRING` and `BYTES`.
pub const MAX_LENGTH: u32 = i32::MAX as u32;

impl LogicalType {
    /// The type described by a `logicalType` object; never fails (unknown roots become
    /// [`TypeKind::Other`], missing parameters Flink's defaults).
    pub fn from_json(v: &Value) -> LogicalType {
        let num = |key: &str, default: u32| v.get(key).and_then(Value::as_u64).map_or(default, |n| n as u32);
        let sub = |key: &str| Box::new(LogicalType::from_json(v.get(key).unwrap_or(&Value::Null)));
        let name = v.get("type").and_then(Value::as_str).unwrap_or("");
        let kind = match name {
            "BOOLEAN" => TypeKind::Boolean,
            "TINYINT" => TypeKind::TinyInt,
            "SMALLINT" => TypeKind::SmallInt,
            "INTEGER" => TypeKind::Integer,
            "BIGINT" => TypeKind::BigInt,
            "FLOAT" => TypeKind::Float,
            "DOUBLE" => TypeKind::Double,
            "DECIMAL" => TypeKind::Decimal {
                precision: num("precision", 10),
                scale: num("scale", 0),
            },
            "CHAR" => TypeKind::Char { length: num("length", 1) },
            "VARCHAR" => TypeKind::VarChar {
                length: num("length", MAX_LENGTH),
            },
            "BINARY" => TypeKind::Binary { length: num("length", 1) },
            "VARBINARY" => TypeKind::VarBinary {
                length: num("length", MAX_LENGTH),
            },
            "DATE" => TypeKind::Date,
            "TIME_WITHOUT_TIME_ZONE" => TypeKind::Time {
                precision: num("precision", 0),
            },
            "TIMESTAMP_WITHOUT_TIME_ZONE" => TypeKind::Timestamp {
                precision: num("precision", 6),
            },
            "TIMESTAMP_WITH_LOCAL_TIME_ZONE" => TypeKind::TimestampLtz {
                precision: num("precision", 6),
            },
            "TIMESTAMP_WITH_TIME_ZONE" => TypeKind::TimestampTz {
                precision: num("precision", 6),
            },
            "INTERVAL_YEAR_MONTH" => TypeKind::IntervalYearMonth,
            "INTERVAL_DAY_TIME" => TypeKind::IntervalDayTime,
            "ARRAY" => TypeKind::Array(sub("elementType")),
            "MULTISET" => TypeKind::Multiset(sub("elementType")),
            "MAP" => TypeKind::Map {
                key: sub("keyType"),
                value: sub("valueType"),
            },
            "ROW" => TypeKind::Row(
                v.get("fields")
                    .and_then(Value::as_array)
                    .map(|fields| {
                        fields
                            .iter()
                            .map(|f| RowField {
                                name: f.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                                ty: LogicalType::from_json(f.get("fieldType").unwrap_or(&Value::Null)),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            "NULL" => TypeKind::Null,
            other => TypeKind::Other(other.to_string()),
        };
        LogicalType {
            kind,
            nullable: v.get("nullable").and_then(Value::as_bool).unwrap_or(true),
        }
    }
}

impl LogicalType {
    /// The type in Flink's SQL notation, as `DESCRIBE` prints it (`INT`, `STRING`, `DECIMAL(10,
    /// 2)`, `TIMESTAMP(3) *ROWTIME*`, `ARRAY<INT>`, `ROW<`a` INT>`, ... with an optional `NOT
    /// NULL`). Unknown notations become [`TypeKind::Other`].
    pub fn from_sql(text: &str) -> LogicalType {
        let t = text.trim();
        let (mut t, nullable) = match t
            .len()
            .checked_sub(8)
            .filter(|&i| t.is_char_boundary(i) && t[i..].eq_ignore_ascii_case("NOT NULL"))
        {
            Some(i) => (t[..i].trim_end(), false),
            None => (t, true),
        };
        for marker in ["*ROWTIME*", "*PROCTIME*"] {
            t = t.trim_end_matches(marker).trim_end();
        }
        let upper = t.to_ascii_uppercase();
        // The name and its parenthesised or angle-bracketed arguments.
        let (name, args) = match upper.find(['(', '<']) {
            Some(i) => (upper[..i].trim(), Some(&t[i + 1..closing(t, i).unwrap_or(t.len())])),
            None => (upper.as_str(), None),
        };
        let nums: Vec<u32> = args
            .map(|a| a.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_default();
        let n = |i: usize, default: u32| nums.get(i).copied().unwrap_or(default);
        let kind = match name {
            "BOOLEAN" => TypeKind::Boolean,
            "TINYINT" => TypeKind::TinyInt,
            "SMALLINT" => TypeKind::SmallInt,
            "INT" | "INTEGER" => TypeKind::Integer,
            "BIGINT" => TypeKind::BigInt,
            "FLOAT" => TypeKind::Float,
            "DOUBLE" | "DOUBLE PRECISION" => TypeKind::Double,
            "DECIMAL" | "DEC" | "NUMERIC" => TypeKind::Decimal {
                precision: n(0, 10),
                scale: n(1, 0),
            },
            "CHAR" => TypeKind::Char { length: n(0, 1) },
            "VARCHAR" => TypeKind::VarChar { length: n(0, 1) },
            "STRING" => TypeKind::VarChar { length: MAX_LENGTH },
            "BINARY" => TypeKind::Binary { length: n(0, 1) },
            "VARBINARY" => TypeKind::VarBinary { length: n(0, 1) },
            "BYTES" => TypeKind::VarBinary { length: MAX_LENGTH },
            "DATE" => TypeKind::Date,
            "TIME" => TypeKind::Time { precision: n(0, 0) },
            "TIMESTAMP" if upper.contains("WITH LOCAL TIME ZONE") => TypeKind::TimestampLtz { precision: n(0, 6) },
            "TIMESTAMP" if upper.contains("WITH TIME ZONE") => TypeKind::TimestampTz { precision: n(0, 6) },
            "TIMESTAMP" => TypeKind::Timestamp { precision: n(0, 6) },
            "TIMESTAMP_LTZ" => TypeKind::TimestampLtz { precision: n(0, 6) },
            "ARRAY" => TypeKind::Array(Box::new(LogicalType::from_sql(args.unwrap_or("")))),
            "MULTISET" => TypeKind::Multiset(Box::new(LogicalType::from_sql(args.unwrap_or("")))),
            "MAP" | "ROW" => TypeKind::Other(name.to_string()),
            _ if name.starts_with("INTERVAL") && (name.contains("YEAR") || name.contains("MONTH") && !name.contains("DAY")) => {
                TypeKind::IntervalYearMonth
            }
            _ if name.starts_with("INTERVAL") => TypeKind::IntervalDayTime,
            other => TypeKind::Other(other.to_string()),
        };
        // MAP and ROW come out as json in PostgreSQL whatever their arguments.
        let kind = match kind {
            TypeKind::Other(n) if n == "MAP" => TypeKind::Map {
                key: Box::new(LogicalType::from_sql("STRING")),
                value: Box::new(LogicalType::from_sql("STRING")),
            },
            TypeKind::Other(n) if n == "ROW" => TypeKind::Row(Vec::new()),
            k => k,
        };
        LogicalType { kind, nullable }
    }
}

/// The index of the bracket closing the one at `open` (`(` or `<`), nesting counted.
fn closing(t: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in t.char_indices().skip_while(|(i, _)| *i < open) {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The column type to declare in PostgreSQL DDL for values of `ty` (what [`pg_type`] names, with
/// its modifier written out: `numeric(10,2)`, `varchar(20)`, `timestamp(3)`).
pub fn pg_ddl_type(ty: &LogicalType) -> String {
    let t = pg_type(ty);
    match (&ty.kind, t.name) {
        (TypeKind::Decimal { precision, scale }, _) => format!("numeric({precision},{scale})"),
        (TypeKind::Char { length }, _) => format!("char({length})"),
        (_, "varchar") => format!("varchar({})", t.typmod - 4),
        (_, "time" | "timestamp" | "timestamptz") => format!("{}({})", t.name, t.typmod),
        (_, name) => name.to_string(),
    }
}

/// The PostgreSQL type a pgwire client sees for a column: the name, the OID (`pg_type.oid`) and
/// the type modifier of RowDescription (-1 when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgType {
    pub name: &'static str,
    pub oid: u32,
    pub typmod: i32,
}

impl PgType {
    const fn plain(name: &'static str, oid: u32) -> PgType {
        PgType { name, oid, typmod: -1 }
    }
}

/// The PostgreSQL type for values of `ty`. PostgreSQL has no 1-byte integer (TINYINT is int2), its
/// times hold microseconds (precision capped at 6), and ARRAY, MULTISET, MAP and ROW values are
/// given as `json` (see [`pg_text`]); types this client does not model are `text`.
pub fn pg_type(ty: &LogicalType) -> PgType {
    let length_mod = |n: u32| if n >= MAX_LENGTH - 4 { -1 } else { n as i32 + 4 };
    match &ty.kind {
        TypeKind::Boolean => PgType::plain("bool", 16),
        TypeKind::TinyInt | TypeKind::SmallInt => PgType::plain("int2", 21),
        TypeKind::Integer => PgType::plain("int4", 23),
        TypeKind::BigInt => PgType::plain("int8", 20),
        TypeKind::Float => PgType::plain("float4", 700),
        TypeKind::Double => PgType::plain("float8", 701),
        TypeKind::Decimal { precision, scale } => PgType {
            name: "numeric",
            oid: 1700,
            typmod: ((*precision as i32) << 16 | *scale as i32) + 4,
        },
        TypeKind::Char { length } => PgType {
            name: "bpchar",
            oid: 1042,
            typmod: length_mod(*length),
        },
        TypeKind::VarChar { length } if *length >= MAX_LENGTH => PgType::plain("text", 25),
        TypeKind::VarChar { length } => PgType {
            name: "varchar",
            oid: 1043,
            typmod: length_mod(*length),
        },
        TypeKind::Binary { .. } | TypeKind::VarBinary { .. } => PgType::plain("bytea", 17),
        TypeKind::Date => PgType::plain("date", 1082),
        TypeKind::Time { precision } => PgType {
            name: "time",
            oid: 1083,
            typmod: (*precision).min(6) as i32,
        },
        TypeKind::Timestamp { precision } => PgType {
            name: "timestamp",
            oid: 1114,
            typmod: (*precision).min(6) as i32,
        },
        TypeKind::TimestampLtz { precision } | TypeKind::TimestampTz { precision } => PgType {
            name: "timestamptz",
            oid: 1184,
            typmod: (*precision).min(6) as i32,
        },
        TypeKind::IntervalYearMonth | TypeKind::IntervalDayTime => PgType::plain("interval", 1186),
        TypeKind::Array(_) | TypeKind::Multiset(_) | TypeKind::Map { .. } | TypeKind::Row(_) => PgType::plain("json", 114),
        TypeKind::Null | TypeKind::Other(_) => PgType::plain("text", 25),
    }
}

/// A field of a result row, read from its raw JSON text under its column's type: DECIMAL numbers
/// (at any depth) become strings holding the exact number text; everything else is parsed as is.
pub fn decode_field(raw: &RawValue, ty: &LogicalType) -> Result<Value, serde_json::Error> {
    let text = raw.get().trim();
    match &ty.kind {
        TypeKind::Decimal { .. } if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => {
            Ok(Value::String(text.to_string()))
        }
        TypeKind::Array(elem) | TypeKind::Multiset(elem) if text.starts_with('[') => {
            let items: Vec<Box<RawValue>> = serde_json::from_str(text)?;
            Ok(Value::Array(items.iter().map(|i| decode_field(i, elem)).collect::<Result<_, _>>()?))
        }
        TypeKind::Map { value, .. } if text.starts_with('{') => {
            let entries: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text)?;
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                map.insert(k, decode_field(&v, value)?);
            }
            Ok(Value::Object(map))
        }
        TypeKind::Row(fields) if text.starts_with('{') => {
            let entries: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text)?;
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                let value = match fields.iter().find(|f| f.name == k) {
                    Some(f) => decode_field(&v, &f.ty)?,
                    None => serde_json::from_str(v.get())?,
                };
                map.insert(k, value);
            }
            Ok(Value::Object(map))
        }
        _ => serde_json::from_str(text),
    }
}

/// `value` (as [`decode_field`] reads it) in PostgreSQL's text format for [`pg_type`]`(ty)`;
/// `None` for SQL NULL. A value of an unexpected JSON shape is given as its JSON text.
pub fn pg_text(value: &Value, ty: &LogicalType) -> Option<String> {
    if value.is_null() {
        return None;
    }
    let s = value.as_str();
    Some(match (&ty.kind, value) {
        (TypeKind::Boolean, Value::Bool(b)) => if *b { "t" } else { "f" }.to_string(),
        (TypeKind::Float, _) => match float_of(value) {
            Some(x) => float4_text(x as f32),
            None => json_text(value),
        },
        (TypeKind::Double, _) => match float_of(value) {
            Some(x) => float8_text(x),
            None => json_text(value),
        },
        (TypeKind::Decimal { scale, .. }, _) => {
            let text = s.map_or_else(|| value.to_string(), str::to_string);
            decimal_text(&text, *scale).unwrap_or(text)
        }
        (TypeKind::Binary { .. } | TypeKind::VarBinary { .. }, Value::String(b64)) => match base64_decode(b64) {
            Some(bytes) => bytea_text(&bytes),
            None => b64.clone(),
        },
        (TypeKind::Time { .. }, Value::String(t)) => time_text(t),
        (TypeKind::Timestamp { .. }, Value::String(t)) => timestamp_text(t),
        (TypeKind::TimestampLtz { .. } | TypeKind::TimestampTz { .. }, Value::String(t)) => timestamptz_text(t),
        (TypeKind::IntervalYearMonth, Value::Number(n)) if n.as_i64().is_some() => interval_months_text(n.as_i64().unwrap_or_default()),
        (TypeKind::IntervalDayTime, Value::Number(n)) if n.as_i64().is_some() => interval_millis_text(n.as_i64().unwrap_or_default()),
        (TypeKind::Array(_) | TypeKind::Multiset(_) | TypeKind::Map { .. } | TypeKind::Row(_), _) => nested_json(value, ty),
        (_, Value::String(s)) => s.clone(),
        _ => json_text(value),
    })
}

fn json_text(value: &Value) -> String {
    value.to_string()
}

fn float_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// JSON text of a nested value for PostgreSQL's `json`: DECIMALs as numbers padded to their scale,
/// ROW fields in the type's order.
fn nested_json(value: &Value, ty: &LogicalType) -> String {
    match (&ty.kind, value) {
        (_, Value::Null) => "null".to_string(),
        (TypeKind::Decimal { scale, .. }, Value::String(s)) => decimal_text(s, *scale).unwrap_or_else(|| json_text(value)),
        (TypeKind::Array(elem) | TypeKind::Multiset(elem), Value::Array(items)) => {
            let items: Vec<String> = items.iter().map(|i| nested_json(i, elem)).collect();
            format!("[{}]", items.join(","))
        }
        (TypeKind::Map { value: vt, .. }, Value::Object(map)) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", json_text(&Value::String(k.clone())), nested_json(v, vt)))
                .collect();
            format!("{{{}}}", entries.join(","))
        }
        (TypeKind::Row(fields), Value::Object(map)) => {
            let mut entries: Vec<String> = fields
                .iter()
                .filter_map(|f| map.get(&f.name).map(|v| (f, v)))
                .map(|(f, v)| format!("{}:{}", json_text(&Value::String(f.name.clone())), nested_json(v, &f.ty)))
                .collect();
            entries.extend(
                map.iter()
                    .filter(|(k, _)| !fields.iter().any(|f| &f.name == *k))
                    .map(|(k, v)| format!("{}:{}", json_text(&Value::String(k.clone())), json_text(v))),
            );
            format!("{{{}}}", entries.join(","))
        }
        (TypeKind::Double | TypeKind::Float, Value::String(_)) => json_text(value),
        _ => json_text(value),
    }
}

/// A decimal number's text (plain or Java's `BigDecimal` notation such as `1E+2`, `-1.5E-7`) as
/// PostgreSQL prints a `numeric` of `scale`: plain digits, exactly `scale` fraction digits (Flink
/// strips trailing zeros; more digits than `scale` are kept). `None` for text that is no number.
pub fn decimal_text(text: &str, scale: u32) -> Option<String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], unsigned[i + 1..].parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    // The decimal point sits after `point` digits (may be outside the digits).
    let point = int_part.len() as i64 + exponent;
    let (mut int_digits, mut frac_digits) = if point <= 0 {
        ("0".to_string(), format!("{}{digits}", "0".repeat((-point) as usize)))
    } else if point as usize >= digits.len() {
        (format!("{digits}{}", "0".repeat(point as usize - digits.len())), String::new())
    } else {
        (digits[..point as usize].to_string(), digits[point as usize..].to_string())
    };
    let trimmed = int_digits.trim_start_matches('0');
    int_digits = if trimmed.is_empty() { "0".to_string() } else { trimmed.to_string() };
    let scale = scale as usize;
    while frac_digits.len() > scale && frac_digits.ends_with('0') {
        frac_digits.pop();
    }
    while frac_digits.len() < scale {
        frac_digits.push('0');
    }
    let zero = int_digits == "0" && frac_digits.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    Some(if frac_digits.is_empty() {
        format!("{sign}{int_digits}")
    } else {
        format!("{sign}{int_digits}.{frac_digits}")
    })
}

/// A `float8` as PostgreSQL (12 and later) prints it: the shortest text that reads back exactly,
/// positional for decimal exponents from -4 to 14, else `1.5e+300`; `NaN`, `Infinity`.
pub fn float8_text(x: f64) -> String {
    shortest_float_text(x.is_nan(), x.is_infinite(), x.is_sign_negative(), &format!("{x:e}"), 15)
}

/// A `float4` as PostgreSQL prints it (positional for exponents from -4 to 5).
pub fn float4_text(x: f32) -> String {
    shortest_float_text(x.is_nan(), x.is_infinite(), x.is_sign_negative(), &format!("{x:e}"), 6)
}

/// From Rust's shortest scientific form (`-1.5e-7`, `1e300`) to PostgreSQL's layout.
fn shortest_float_text(nan: bool, infinite: bool, negative: bool, sci: &str, fixed_below: i32) -> String {
    if nan {
        return "NaN".into();
    }
    if infinite {
        return if negative { "-Infinity" } else { "Infinity" }.into();
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..fixed_below).contains(&exp) {
        let body = if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if exp as usize + 1 >= digits.len() {
            format!("{digits}{}", "0".repeat(exp as usize + 1 - digits.len()))
        } else {
            format!("{}.{}", &digits[..exp as usize + 1], &digits[exp as usize + 1..])
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// A fraction of seconds as PostgreSQL prints it: at most microseconds (Flink's nanoseconds are
/// cut), trailing zeros dropped.
fn fraction(frac: &str) -> String {
    let f: String = frac.chars().take(6).collect();
    let f = f.trim_end_matches('0');
    if f.is_empty() { String::new() } else { format!(".{f}") }
}

/// `HH:MM[:SS[.fffffffff]]` as PostgreSQL's `time`.
fn time_text(t: &str) -> String {
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let hms = if hms.matches(':').count() == 1 {
        format!("{hms}:00")
    } else {
        hms.to_string()
    };
    format!("{hms}{}", fraction(frac))
}

/// Flink's `2024-01-02T03:04:05.123456789` as PostgreSQL's `timestamp` (`2024-01-02 03:04:05.123456`).
fn timestamp_text(t: &str) -> String {
    match t.split_once(['T', ' ']) {
        Some((date, time)) => format!("{date} {}", time_text(time)),
        None => t.to_string(),
    }
}

/// Flink's `2024-01-02T03:04:05Z` (an instant, in UTC) as PostgreSQL's `timestamptz` in a UTC
/// session (`2024-01-02 03:04:05+00`); an explicit offset is kept (`+05:30`, `+01`).
fn timestamptz_text(t: &str) -> String {
    let (local, offset) = if let Some(l) = t.strip_suffix('Z') {
        (l, "+00".to_string())
    } else {
        match t.rfind(['+', '-']).filter(|&i| t[..i].contains(['T', ' ']) && t[..i].contains(':')) {
            Some(i) => (&t[..i], t[i..].trim_end_matches(":00").to_string()),
            None => (t, String::new()),
        }
    };
    format!("{}{offset}", timestamp_text(local))
}

/// A number of months as PostgreSQL's `interval` (`1 year 2 mons`, `-3 mons`, `00:00:00`).
fn interval_months_text(months: i64) -> String {
    let (years, months) = (months / 12, months % 12);
    let mut parts = Vec::new();
    if years != 0 {
        parts.push(format!("{years} year{}", if years == 1 { "" } else { "s" }));
    }
    if months != 0 {
        parts.push(format!("{months} mon{}", if months == 1 { "" } else { "s" }));
    }
    if parts.is_empty() { "00:00:00".into() } else { parts.join(" ") }
}

/// A number of milliseconds as PostgreSQL's `interval` (`2 days`, `-1 days -02:03:04.5`).
fn interval_millis_text(ms: i64) -> String {
    let days = ms / 86_400_000;
    let rest = ms % 86_400_000;
    let mut parts = Vec::new();
    if days != 0 {
        parts.push(format!("{days} day{}", if days == 1 { "" } else { "s" }));
    }
    if rest != 0 || days == 0 {
        let sign = if rest < 0 { "-" } else { "" };
        let rest = rest.unsigned_abs();
        let (h, m, s, milli) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
        parts.push(format!("{sign}{h:02}:{m:02}:{s:02}{}", fraction(&format!("{milli:03}"))));
    }
    parts.join(" ")
}

/// Bytes as PostgreSQL's `bytea` hex output (`\x0102ff`).
fn bytea_text(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("\\x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Standard base64 (RFC 4648, padding optional); `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sql_notation_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("INT", "int4", true),
            ("BIGINT NOT NULL", "int8", false),
            ("STRING", "text", true),
            ("VARCHAR(20)", "varchar(20)", true),
            ("CHAR(3) NOT NULL", "char(3)", false),
            ("DECIMAL(10, 2)", "numeric(10,2)", true),
            ("DOUBLE", "float8", true),
            ("FLOAT", "float4", true),
            ("BOOLEAN", "bool", true),
            ("DATE", "date", true),
            ("TIME(0)", "time(0)", true),
            ("TIMESTAMP(3) *ROWTIME*", "timestamp(3)", true),
            ("TIMESTAMP(9)", "timestamp(6)", true),
            ("TIMESTAMP_LTZ(3) *PROCTIME* NOT NULL", "timestamptz(3)", false),
            ("TIMESTAMP(3) WITH LOCAL TIME ZONE", "timestamptz(3)", true),
            ("BYTES", "bytea", true),
            ("TINYINT", "int2", true),
            ("ARRAY<INT>", "json", true),
            ("MAP<STRING, INT>", "json", true),
            ("ROW<`a` INT, `b` STRING>", "json", true),
            ("INTERVAL DAY(2) TO SECOND(3)", "interval", true),
            ("INTERVAL YEAR(2) TO MONTH", "interval", true),
            ("RAW('x', '...')", "text", true),
        ];
        for (notation, ddl, nullable) in cases {
            let ty = LogicalType::from_sql(notation);
            assert_eq!(pg_ddl_type(&ty), *ddl, "{notation}");
            assert_eq!(ty.nullable, *nullable, "{notation}");
        }
        assert_eq!(LogicalType::from_sql("INTERVAL MONTH").kind, TypeKind::IntervalYearMonth);
        assert_eq!(LogicalType::from_sql("INTERVAL SECOND(3)").kind, TypeKind::IntervalDayTime);
    }

    use super::*;
    use serde_json::json;

    fn ty(v: Value) -> LogicalType {
        LogicalType::from_json(&v)
    }

    #[test]
    fn logical_types_from_json() {
        // Shapes as the SQL Gateway of Flink 2.3 sent them.
        let cases = [
            (json!({"type":"INTEGER","nullable":false}), TypeKind::Integer, false),
            (
                json!({"type":"VARCHAR","nullable":true,"length":2147483647}),
                TypeKind::VarChar { length: MAX_LENGTH },
                true,
            ),
            (
                json!({"type":"DECIMAL","nullable":false,"precision":38,"scale":10}),
                TypeKind::Decimal { precision: 38, scale: 10 },
                false,
            ),
            (
                json!({"type":"CHAR","nullable":false,"length":3}),
                TypeKind::Char { length: 3 },
                false,
            ),
            (
                json!({"type":"BINARY","nullable":false,"length":3}),
                TypeKind::Binary { length: 3 },
                false,
            ),
            (
                json!({"type":"TIMESTAMP_WITHOUT_TIME_ZONE","nullable":false,"precision":9}),
                TypeKind::Timestamp { precision: 9 },
                false,
            ),
            (
                json!({"type":"TIMESTAMP_WITH_LOCAL_TIME_ZONE","nullable":false,"precision":3}),
                TypeKind::TimestampLtz { precision: 3 },
                false,
            ),
            (
                json!({"type":"TIME_WITHOUT_TIME_ZONE","nullable":false,"precision":0}),
                TypeKind::Time { precision: 0 },
                false,
            ),
            (
                json!({"type":"INTERVAL_YEAR_MONTH","nullable":false,"precision":2,"resolution":"MONTH"}),
                TypeKind::IntervalYearMonth,
                false,
            ),
            (
                json!({"type":"INTERVAL_DAY_TIME","nullable":false,"precision":2,"fractionalPrecision":3,"resolution":"SECOND"}),
                TypeKind::IntervalDayTime,
                false,
            ),
            (
                json!({"type":"ARRAY","nullable":false,"elementType":{"type":"DECIMAL","nullable":false,"precision":5,"scale":2}}),
                TypeKind::Array(Box::new(LogicalType {
                    kind: TypeKind::Decimal { precision: 5, scale: 2 },
                    nullable: false,
                })),
                false,
            ),
            (
                json!({"type":"ROW","nullable":false,"fields":[{"name":"EXPR$0","fieldType":{"type":"INTEGER","nullable":false}}]}),
                TypeKind::Row(vec![RowField {
                    name: "EXPR$0".into(),
                    ty: LogicalType {
                        kind: TypeKind::Integer,
                        nullable: false,
                    },
                }]),
                false,
            ),
            (
                json!({"type":"RAW","nullable":true,"class":"x"}),
                TypeKind::Other("RAW".into()),
                true,
            ),
            (json!({}), TypeKind::Other(String::new()), true),
        ];
        for (json, kind, nullable) in cases {
            assert_eq!(LogicalType::from_json(&json), LogicalType { kind, nullable }, "{json}");
        }
        let map = ty(
            json!({"type":"MAP","nullable":false,"keyType":{"type":"CHAR","nullable":false,"length":1},"valueType":{"type":"BIGINT","nullable":true}}),
        );
        assert!(matches!(map.kind, TypeKind::Map { ref value, .. } if value.kind == TypeKind::BigInt));
    }

    #[test]
    fn postgres_types() {
        let cases = [
            (json!({"type":"BOOLEAN"}), ("bool", 16, -1)),
            (json!({"type":"TINYINT"}), ("int2", 21, -1)),
            (json!({"type":"SMALLINT"}), ("int2", 21, -1)),
            (json!({"type":"INTEGER"}), ("int4", 23, -1)),
            (json!({"type":"BIGINT"}), ("int8", 20, -1)),
            (json!({"type":"FLOAT"}), ("float4", 700, -1)),
            (json!({"type":"DOUBLE"}), ("float8", 701, -1)),
            (
                json!({"type":"DECIMAL","precision":38,"scale":10}),
                ("numeric", 1700, (38 << 16 | 10) + 4),
            ),
            (
                json!({"type":"DECIMAL","precision":5,"scale":2}),
                ("numeric", 1700, (5 << 16 | 2) + 4),
            ),
            (json!({"type":"CHAR","length":3}), ("bpchar", 1042, 7)),
            (json!({"type":"VARCHAR","length":10}), ("varchar", 1043, 14)),
            (json!({"type":"VARCHAR","length":2147483647}), ("text", 25, -1)),
            (json!({"type":"BINARY","length":3}), ("bytea", 17, -1)),
            (json!({"type":"VARBINARY","length":2147483647}), ("bytea", 17, -1)),
            (json!({"type":"DATE"}), ("date", 1082, -1)),
            (json!({"type":"TIME_WITHOUT_TIME_ZONE","precision":3}), ("time", 1083, 3)),
            (json!({"type":"TIMESTAMP_WITHOUT_TIME_ZONE","precision":9}), ("timestamp", 1114, 6)),
            (
                json!({"type":"TIMESTAMP_WITH_LOCAL_TIME_ZONE","precision":3}),
                ("timestamptz", 1184, 3),
            ),
            (json!({"type":"TIMESTAMP_WITH_TIME_ZONE","precision":6}), ("timestamptz", 1184, 6)),
            (json!({"type":"INTERVAL_DAY_TIME"}), ("interval", 1186, -1)),
            (json!({"type":"INTERVAL_YEAR_MONTH"}), ("interval", 1186, -1)),
            (json!({"type":"ARRAY","elementType":{"type":"INTEGER"}}), ("json", 114, -1)),
            (
                json!({"type":"MAP","keyType":{"type":"VARCHAR"},"valueType":{"type":"INTEGER"}}),
                ("json", 114, -1),
            ),
            (json!({"type":"ROW","fields":[]}), ("json", 114, -1)),
            (json!({"type":"MULTISET","elementType":{"type":"INTEGER"}}), ("json", 114, -1)),
            (json!({"type":"NULL"}), ("text", 25, -1)),
            (json!({"type":"RAW"}), ("text", 25, -1)),
        ];
        for (json, (name, oid, typmod)) in cases {
            assert_eq!(pg_type(&ty(json.clone())), PgType { name, oid, typmod }, "{json}");
        }
    }

    /// Reads `raw` (a row field as Flink sent it) under `type_json` and renders it.
    fn render(type_json: Value, raw: &str) -> Option<String> {
        let t = ty(type_json);
        let raw: Box<RawValue> = serde_json::from_str(raw).unwrap();
        pg_text(&decode_field(&raw, &t).unwrap(), &t)
    }

    #[test]
    fn postgres_text() {
        let dec = |p: u32, s: u32| json!({"type":"DECIMAL","precision":p,"scale":s});
        // (type, the field as Flink 2.3 sent it, what PostgreSQL prints for the same value)
        let cases: Vec<(Value, &str, Option<&str>)> = vec![
            (json!({"type":"INTEGER"}), "42", Some("42")),
            (json!({"type":"INTEGER"}), "null", None),
            (json!({"type":"BIGINT"}), "9223372036854775807", Some("9223372036854775807")),
            (json!({"type":"TINYINT"}), "-1", Some("-1")),
            (json!({"type":"BOOLEAN"}), "true", Some("t")),
            (json!({"type":"BOOLEAN"}), "false", Some("f")),
            (
                dec(38, 10),
                "12345678901234567890.0123456789",
                Some("12345678901234567890.0123456789"),
            ),
            (
                dec(38, 10),
                "-12345678901234567890.0123456789",
                Some("-12345678901234567890.0123456789"),
            ),
            (dec(5, 2), "0.1", Some("0.10")),
            (dec(5, 2), "-0.5", Some("-0.50")),
            (dec(5, 2), "0", Some("0.00")),
            (dec(10, 2), "1E+2", Some("100.00")),
            (dec(20, 10), "1E-7", Some("0.0000001000")),
            (dec(10, 0), "1.2E+3", Some("1200")),
            (dec(10, 0), "7", Some("7")),
            (
                dec(38, 0),
                "99999999999999999999999999999999999999",
                Some("99999999999999999999999999999999999999"),
            ),
            (json!({"type":"DOUBLE"}), "1.0E300", Some("1e+300")),
            (json!({"type":"DOUBLE"}), "1.0E-7", Some("1e-07")),
            (json!({"type":"DOUBLE"}), "1.23456789125E8", Some("123456789.125")),
            (json!({"type":"DOUBLE"}), "0.1", Some("0.1")),
            (json!({"type":"DOUBLE"}), "1.5", Some("1.5")),
            (json!({"type":"DOUBLE"}), "100.0", Some("100")),
            (json!({"type":"DOUBLE"}), "1.0E15", Some("1e+15")),
            (json!({"type":"DOUBLE"}), "1.0E14", Some("100000000000000")),
            (json!({"type":"DOUBLE"}), "1.0E-4", Some("0.0001")),
            (json!({"type":"DOUBLE"}), "1.5E-5", Some("1.5e-05")),
            (json!({"type":"DOUBLE"}), "-2.5", Some("-2.5")),
            (json!({"type":"DOUBLE"}), "0.0", Some("0")),
            (json!({"type":"DOUBLE"}), "\"NaN\"", Some("NaN")),
            (json!({"type":"DOUBLE"}), "\"Infinity\"", Some("Infinity")),
            (json!({"type":"DOUBLE"}), "\"-Infinity\"", Some("-Infinity")),
            (json!({"type":"FLOAT"}), "0.1", Some("0.1")),
            (json!({"type":"FLOAT"}), "1234567.0", Some("1.234567e+06")),
            (json!({"type":"FLOAT"}), "123456.0", Some("123456")),
            (json!({"type":"CHAR","length":3}), "\"ab \"", Some("ab ")),
            (json!({"type":"VARCHAR","length":2147483647}), "\"n11\"", Some("n11")),
            (json!({"type":"BINARY","length":3}), "\"AQL/\"", Some("\\x0102ff")),
            (json!({"type":"VARBINARY"}), "\"AQI=\"", Some("\\x0102")),
            (json!({"type":"VARBINARY"}), "\"\"", Some("\\x")),
            (json!({"type":"DATE"}), "\"2024-02-29\"", Some("2024-02-29")),
            (
                json!({"type":"TIME_WITHOUT_TIME_ZONE","precision":0}),
                "\"12:34:56\"",
                Some("12:34:56"),
            ),
            (
                json!({"type":"TIME_WITHOUT_TIME_ZONE","precision":3}),
                "\"12:34:56.780\"",
                Some("12:34:56.78"),
            ),
            (
                json!({"type":"TIME_WITHOUT_TIME_ZONE","precision":0}),
                "\"12:34\"",
                Some("12:34:00"),
            ),
            (
                json!({"type":"TIMESTAMP_WITHOUT_TIME_ZONE","precision":6}),
                "\"2024-01-02T03:04:05.123456\"",
                Some("2024-01-02 03:04:05.123456"),
            ),
            (
                json!({"type":"TIMESTAMP_WITHOUT_TIME_ZONE","precision":9}),
                "\"2024-01-02T03:04:05.123456789\"",
                Some("2024-01-02 03:04:05.123456"),
            ),
            (
                json!({"type":"TIMESTAMP_WITHOUT_TIME_ZONE","precision":0}),
                "\"2024-01-02T03:04:00\"",
                Some("2024-01-02 03:04:00"),
            ),
            (
                json!({"type":"TIMESTAMP_WITHOUT_TIME_ZONE","precision":3}),
                "\"2024-01-02T03:04:05.100\"",
                Some("2024-01-02 03:04:05.1"),
            ),
            (
                json!({"type":"TIMESTAMP_WITH_LOCAL_TIME_ZONE","precision":3}),
                "\"2024-01-02T03:04:05Z\"",
                Some("2024-01-02 03:04:05+00"),
            ),
            (
                json!({"type":"TIMESTAMP_WITH_TIME_ZONE","precision":3}),
                "\"2024-01-02T03:04:05.5+05:30\"",
                Some("2024-01-02 03:04:05.5+05:30"),
            ),
            (json!({"type":"INTERVAL_YEAR_MONTH"}), "14", Some("1 year 2 mons")),
            (json!({"type":"INTERVAL_YEAR_MONTH"}), "36", Some("3 years")),
            (json!({"type":"INTERVAL_YEAR_MONTH"}), "-1", Some("-1 mons")),
            (json!({"type":"INTERVAL_YEAR_MONTH"}), "0", Some("00:00:00")),
            (json!({"type":"INTERVAL_DAY_TIME"}), "172800000", Some("2 days")),
            (json!({"type":"INTERVAL_DAY_TIME"}), "-93784500", Some("-1 days -02:03:04.5")),
            (json!({"type":"INTERVAL_DAY_TIME"}), "86400000", Some("1 day")),
            (json!({"type":"INTERVAL_DAY_TIME"}), "1500", Some("00:00:01.5")),
            (json!({"type":"INTERVAL_DAY_TIME"}), "0", Some("00:00:00")),
            (
                json!({"type":"ARRAY","elementType":{"type":"DECIMAL","precision":5,"scale":2}}),
                "[1.5,null]",
                Some("[1.50,null]"),
            ),
            (
                json!({"type":"MAP","keyType":{"type":"CHAR","length":1},"valueType":{"type":"DECIMAL","precision":5,"scale":2}}),
                "{\"k\":2.5}",
                Some("{\"k\":2.50}"),
            ),
            (
                json!({"type":"ROW","fields":[{"name":"b","fieldType":{"type":"CHAR","length":1}},{"name":"a","fieldType":{"type":"INTEGER"}}]}),
                "{\"a\":1,\"b\":\"x\"}",
                Some("{\"b\":\"x\",\"a\":1}"),
            ),
            (json!({"type":"RAW"}), "\"opaque\"", Some("opaque")),
            (json!({"type":"RAW"}), "[1]", Some("[1]")),
        ];
        for (t, raw, want) in cases {
            assert_eq!(render(t.clone(), raw).as_deref(), want, "{t} {raw}");
        }
    }

    #[test]
    fn decimals_are_read_exactly() {
        let t = ty(json!({"type":"DECIMAL","precision":38,"scale":10}));
        let raw: Box<RawValue> = serde_json::from_str("12345678901234567890.0123456789").unwrap();
        assert_eq!(decode_field(&raw, &t).unwrap(), json!("12345678901234567890.0123456789"));
        let nested = ty(json!({"type":"ARRAY","elementType":{"type":"DECIMAL","precision":38,"scale":10}}));
        let raw: Box<RawValue> = serde_json::from_str("[12345678901234567890.0123456789]").unwrap();
        assert_eq!(decode_field(&raw, &nested).unwrap(), json!(["12345678901234567890.0123456789"]));
        // Other numbers are ordinary JSON numbers.
        let raw: Box<RawValue> = serde_json::from_str("1.0E300").unwrap();
        assert_eq!(decode_field(&raw, &ty(json!({"type":"DOUBLE"}))).unwrap(), json!(1e300));
        for bad in ["", "-", "1.2.3", "abc", "1E", "--1"] {
            assert_eq!(decimal_text(bad, 2), None, "{bad}");
        }
    }

    #[test]
    fn base64() {
        let cases = [
            ("", Some(vec![])),
            ("AQI=", Some(vec![1, 2])),
            ("AQL/", Some(vec![1, 2, 255])),
            ("AQA", Some(vec![1, 0])),
            ("!!", None),
        ];
        for (text, want) in cases {
            assert_eq!(base64_decode(text), want, "{text}");
        }
        for bytes in [vec![], vec![0u8], vec![0, 1], vec![250, 251, 252, 253]] {
            assert_eq!(
                base64_decode(&base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes)),
                Some(bytes)
            );
        }
    }
}
