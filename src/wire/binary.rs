//! PostgreSQL's binary format for the values of the gateway's own results (SHOW, DESCRIBE, a Flink
//! query's rows), which the handlers produce as text: a client that asks for binary results (the
//! extended protocol's Bind) gets each value as PostgreSQL's `*_send` function would write it.
//! Pure functions; the expected bytes in the tests were read from PostgreSQL 15's own send
//! functions (`numeric_send(123.45)`, `date_send('2024-02-29')`, ...).

pub const BOOL: u32 = 16;
pub const BYTEA: u32 = 17;
pub const NAME: u32 = 19;
pub const INT8: u32 = 20;
pub const INT2: u32 = 21;
pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const JSON: u32 = 114;
pub const FLOAT4: u32 = 700;
pub const FLOAT8: u32 = 701;
pub const BPCHAR: u32 = 1042;
pub const VARCHAR: u32 = 1043;
pub const DATE: u32 = 1082;
pub const TIME: u32 = 1083;
pub const TIMESTAMP: u32 = 1114;
pub const TIMESTAMPTZ: u32 = 1184;
pub const NUMERIC: u32 = 1700;

/// Whether values of type `oid` can be sent in binary (others are described as `text`).
pub fn can_encode(oid: u32) -> bool {
    matches!(
        oid,
        BOOL | BYTEA
            | NAME
            | INT8
            | INT2
            | INT4
            | TEXT
            | JSON
            | FLOAT4
            | FLOAT8
            | BPCHAR
            | VARCHAR
            | DATE
            | TIME
            | TIMESTAMP
            | TIMESTAMPTZ
            | NUMERIC
    )
}

/// The binary form of a value given in PostgreSQL's text form; None when the text does not read
/// as the type (the caller then sends the text).
pub fn encode(oid: u32, text: &str) -> Option<Vec<u8>> {
    Some(match oid {
        BOOL => vec![u8::from(matches!(text, "t" | "true"))],
        INT2 => text.parse::<i16>().ok()?.to_be_bytes().to_vec(),
        INT4 => text.parse::<i32>().ok()?.to_be_bytes().to_vec(),
        INT8 => text.parse::<i64>().ok()?.to_be_bytes().to_vec(),
        FLOAT4 => text.parse::<f32>().ok()?.to_be_bytes().to_vec(),
        FLOAT8 => text.parse::<f64>().ok()?.to_be_bytes().to_vec(),
        BYTEA => hex_bytes(text.strip_prefix("\\x")?)?,
        DATE => days(text)?.to_be_bytes().to_vec(),
        TIME => micros_of_day(text)?.to_be_bytes().to_vec(),
        TIMESTAMP => timestamp(text)?.to_be_bytes().to_vec(),
        TIMESTAMPTZ => timestamptz(text)?.to_be_bytes().to_vec(),
        NUMERIC => numeric(text)?,
        _ => text.as_bytes().to_vec(),
    })
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Days since 2000-01-01 of `YYYY-MM-DD` (the proleptic Gregorian calendar).
fn days(text: &str) -> Option<i32> {
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil, shifted from 1970-01-01 to 2000-01-01.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468 - 10_957).ok()
}

/// Microseconds since midnight of `HH:MM:SS[.ffffff]`.
fn micros_of_day(text: &str) -> Option<i64> {
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = hms.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let s: i64 = parts.next().unwrap_or("0").parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().ok()? };
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + f)
}

/// Microseconds since 2000-01-01 00:00:00 of `YYYY-MM-DD HH:MM:SS[.ffffff]`.
fn timestamp(text: &str) -> Option<i64> {
    let (date, time) = text.split_once([' ', 'T'])?;
    Some(days(date)? as i64 * 86_400_000_000 + micros_of_day(time)?)
}

/// A `timestamptz` as PostgreSQL prints it (`2024-01-02 03:04:05+05:30`), in UTC microseconds
/// since 2000-01-01.
fn timestamptz(text: &str) -> Option<i64> {
    let i = text.rfind(['+', '-']).filter(|&i| text[..i].contains(':'))?;
    let (local, offset) = text.split_at(i);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next().unwrap_or("0").parse().ok()?;
    let s: i64 = parts.next().unwrap_or("0").parse().ok()?;
    Some(timestamp(local)? - sign * ((h * 60 + m) * 60 + s) * 1_000_000)
}

/// PostgreSQL's binary `numeric`: digit count, weight (of the first base-10000 digit), sign,
/// display scale, then the base-10000 digits without leading or trailing zero digits.
fn numeric(text: &str) -> Option<Vec<u8>> {
    let head = |n: i16, weight: i16, sign: u16, dscale: i16| {
        let mut v = Vec::with_capacity(8 + 2 * n.max(0) as usize);
        v.extend_from_slice(&n.to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        v
    };
    if text.eq_ignore_ascii_case("nan") {
        return Some(head(0, 0, 0xC000, 0));
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let dscale = i16::try_from(frac.len()).ok()?;
    let int = int.trim_start_matches('0');
    let pad_int = (4 - int.len() % 4) % 4;
    let pad_frac = (4 - frac.len() % 4) % 4;
    let all = format!("{}{int}{frac}{}", "0".repeat(pad_int), "0".repeat(pad_frac));
    let groups: Vec<i16> = (0..all.len()).step_by(4).map(|i| all[i..i + 4].parse().unwrap_or(0)).collect();
    let mut weight = ((int.len() + pad_int) / 4) as i16 - 1;
    // Leading zero digits move the weight; trailing ones go.
    let first = groups.iter().position(|&g| g != 0);
    let Some(first) = first else {
        return Some(head(0, 0, 0, dscale));
    };
    weight -= first as i16;
    let last = groups.iter().rposition(|&g| g != 0).unwrap_or(first);
    let kept = &groups[first..=last];
    let mut v = head(kept.len() as i16, weight, if negative { 0x4000 } else { 0 }, dscale);
    for g in kept {
        v.extend_from_slice(&g.to_be_bytes());
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(v: &[u8]) -> String {
        v.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn as_postgresql_sends_them() {
        // (type, text, what PostgreSQL 15's send function gives for it)
        let cases: &[(u32, &str, &str)] = &[
            (NUMERIC, "123.45", "0002000000000002007b1194"),
            (NUMERIC, "-0.0012", "0001ffff40000004000c"),
            (NUMERIC, "0", "0000000000000000"),
            (NUMERIC, "10000", "00010001000000000001"),
            (NUMERIC, "1.0", "00010000000000010001"),
            (NUMERIC, "NaN", "00000000c0000000"),
            (NUMERIC, "100.00", "00010000000000020064"),
            (
                NUMERIC,
                "12345678901234567890.0123456789",
                "000800040000000a04d2162e23340d801ed2007b11d722c4",
            ),
            (DATE, "2024-02-29", "00002279"),
            (DATE, "1999-12-31", "ffffffff"),
            (DATE, "2000-01-01", "00000000"),
            (TIME, "12:34:56.789", "0000000a8be62608"),
            (TIMESTAMP, "2024-01-02 03:04:05.123456", "0002b0ec8517d580"),
            (TIMESTAMP, "1970-01-01 00:00:00", "fffca2fec4c82000"),
            (TIMESTAMPTZ, "2024-01-02 03:04:05+05:30", "0002b0e7e8e9ed40"),
            (TIMESTAMPTZ, "2024-01-02 03:04:05+00", "0002b0ec8515f340"),
            (INT4, "-7", "fffffff9"),
            (INT2, "3", "0003"),
            (FLOAT8, "0.5", "3fe0000000000000"),
            (BOOL, "t", "01"),
            (BYTEA, "\\x01ff", "01ff"),
            (TEXT, "ab", "6162"),
        ];
        for (oid, text, want) in cases {
            assert_eq!(encode(*oid, text).map(|v| hex(&v)).as_deref(), Some(*want), "{oid} {text}");
        }
        for (oid, text) in [
            (NUMERIC, "1e5"),
            (DATE, "2024-13-01"),
            (INT4, "x"),
            (BYTEA, "01"),
            (TIME, "1:2:3.1234567"),
        ] {
            assert_eq!(encode(oid, text), None, "{oid} {text}");
        }
        assert!(can_encode(NUMERIC) && !can_encode(1186));
    }
}
