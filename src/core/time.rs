//! Schedule times as schedulers send them: `yyyy-MM-dd HH:mm:ss` and DolphinScheduler's
//! `${system.datetime}` (`yyyyMMddHHmmss`), which carry no zone and are read in the table's
//! schedule time zone (a scheduler of that table writes its wall clock); ISO-8601 with `Z` or an
//! offset (Airflow), and Java's `Date.toString()` in UTC (`Tue Jan 02 00:00:00 UTC 2024`), which
//! are instants. Fractions of a second are dropped. Pure functions; the zone is applied by the
//! manager (PostgreSQL knows the time zone database).

/// A schedule time as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleTime {
    /// An instant: seconds since the epoch.
    At(i64),
    /// A wall-clock time without a zone, as seconds since the epoch were it UTC: read in the
    /// table's schedule time zone.
    Local(i64),
}

/// Parses a schedule time; the error names what is wrong.
pub fn parse_schedule_time(s: &str) -> Result<ScheduleTime, String> {
    let s = s.trim();
    if s.contains("$[") || s.contains("${") {
        return Err(format!("scheduleTime '{s}' holds an unresolved scheduler placeholder"));
    }
    if let Some(t) = java_date(s) {
        return Ok(ScheduleTime::At(t));
    }
    if let Some(t) = compact(s) {
        return Ok(ScheduleTime::Local(t));
    }
    let bad = || format!("scheduleTime '{s}' is not a time (expected yyyy-MM-dd HH:mm:ss or ISO-8601, e.g. 2024-01-02T00:00:00+00:00)");
    if s.len() < 19 {
        return Err(bad());
    }
    let (date, rest) = s.split_at(10);
    let sep = rest.as_bytes()[0];
    if sep != b' ' && sep != b'T' {
        return Err(bad());
    }
    let time = &rest[1..9];
    let mut tail = &rest[9..];
    if let Some(frac) = tail.strip_prefix('.') {
        tail = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let (y, mo, d) = ymd(date).ok_or_else(bad)?;
    let (h, mi, se) = hms(time).ok_or_else(bad)?;
    let wall = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    Ok(match tail.trim() {
        "" => ScheduleTime::Local(wall),
        "Z" | "z" | "UTC" | "+00" => ScheduleTime::At(wall),
        o => ScheduleTime::At(wall - offset_seconds(o).ok_or_else(bad)?),
    })
}

/// An instant in an ISO-8601 text with `Z` or an offset (what Airflow's API answers).
pub fn parse_instant(s: &str) -> Option<i64> {
    match parse_schedule_time(s) {
        Ok(ScheduleTime::At(t)) => Some(t),
        _ => None,
    }
}

fn num(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn ymd(d: &str) -> Option<(i64, i64, i64)> {
    let mut p = d.split('-');
    let (y, m, dd) = (num(p.next()?)?, num(p.next()?)?, num(p.next()?)?);
    ((1..=12).contains(&m) && (1..=31).contains(&dd) && p.next().is_none()).then_some((y, m, dd))
}

fn hms(t: &str) -> Option<(i64, i64, i64)> {
    let mut p = t.split(':');
    let (h, m, s) = (num(p.next()?)?, num(p.next()?)?, num(p.next()?)?);
    (h < 24 && m < 60 && s < 61 && p.next().is_none()).then_some((h, m, s))
}

/// `+08:00`, `-0530`, `+08`: seconds east of UTC.
fn offset_seconds(o: &str) -> Option<i64> {
    let sign = match o.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = o[1..].chars().filter(|c| *c != ':').collect();
    let (h, m) = match digits.len() {
        2 => (num(&digits)?, 0),
        4 => (num(&digits[..2])?, num(&digits[2..])?),
        _ => return None,
    };
    Some(sign * (h * 3600 + m * 60))
}

/// `yyyyMMddHHmmss`: DolphinScheduler's `${system.datetime}` (the schedule time, wall clock).
fn compact(s: &str) -> Option<i64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, mo, d) = ymd(&format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..8]))?;
    let (h, mi, se) = hms(&format!("{}:{}:{}", &s[8..10], &s[10..12], &s[12..]))?;
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// `EEE MMM dd HH:mm:ss zzz yyyy` with zone UTC or GMT.
fn java_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, mon, day, time, zone, year] = parts.as_slice() else {
        return None;
    };
    if !matches!(*zone, "UTC" | "GMT") {
        return None;
    }
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = MONTHS.iter().position(|x| x == mon)? as i64 + 1;
    let (h, mi, se) = hms(time)?;
    Some(days_from_civil(num(year)?, m, num(day)?) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch as ISO 8601 in UTC with an explicit offset
/// (`2026-11-24T08:09:00+00:00`), the form Airflow's DAG files take.
pub fn iso_utc(t: i64) -> String {
    format!("{}+00:00", wall_clock_utc(t).replacen(' ', "T", 1))
}

/// Seconds since the epoch as `yyyy-MM-dd HH:mm:ss` in UTC.
pub fn wall_clock_utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The inverse of [`days_from_civil`] (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trips() {
        for t in [0, 951_782_400, 1_709_164_800, 1_795_000_000, 4_102_444_799, -86_400] {
            assert_eq!(parse_instant(&iso_utc(t)), Some(t), "{}", iso_utc(t));
        }
        assert_eq!(iso_utc(1_795_509_740), "2026-11-24T08:42:20+00:00");
    }

    #[test]
    fn shapes() {
        // 2024-01-02 00:00:00 UTC.
        let t = 1_704_153_600;
        use ScheduleTime::{At, Local};
        let ok = [
            ("2024-01-02 00:00:00", Local(t)),
            ("2024-01-02T00:00:00", Local(t)),
            ("2024-01-02T00:00:00Z", At(t)),
            ("2024-01-02T00:00:00.123456+00:00", At(t)),
            ("2024-01-02T08:00:00+08:00", At(t)),
            ("2024-01-01T19:00:00-0500", At(t)),
            ("2024-01-02 00:00:00 UTC", At(t)),
            ("Tue Jan 02 00:00:00 UTC 2024", At(t)),
            ("20240102000000", Local(t)),
            ("20240229123015", Local(1_709_209_815)),
            ("1970-01-01 00:00:00", Local(0)),
            ("2024-02-29 12:30:15", Local(1_709_209_815)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_schedule_time(s), Ok(want), "{s}");
        }
        assert_eq!(parse_instant("2024-01-02T08:00:00+08:00"), Some(t));
        assert_eq!(parse_instant("2024-01-02 00:00:00"), None, "no zone: not an instant");
        let bad = [
            "",
            "yesterday",
            "2024-13-01 00:00:00",
            "2024-01-02 25:00:00",
            "2024/01/02 00:00:00",
            "2024-01-02T00:00:00+8",
            "20241301000000",
            "20240102250000",
            "2024010200000",
            "202401020000000",
        ];
        for s in bad {
            assert!(parse_schedule_time(s).is_err(), "{s}");
        }
        let e = parse_schedule_time("$[yyyy-MM-dd HH:mm:ss]").unwrap_err();
        assert!(e.contains("placeholder"), "{e}");
        assert!(
            parse_schedule_time("Tue Jan 02 00:00:00 CST 2024").is_err(),
            "only UTC/GMT zones are unambiguous"
        );
    }
}
