//! The pure rules of dynamic tables, as Flink's FLIP-435 fixes them and users expect them:
//! freshness validation, refresh-mode derivation, the freshness-to-Quartz-cron table, schedule
//! slots, partition formatters and specs, and which column changes ALTER ... AS may make. No I/O
//! here; every rule has a table of tests.

use std::fmt;
use std::time::Duration;

use super::kinds::{LogicalMode, RefreshMode};

/// A freshness unit. MONTH and YEAR are not: their length varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "SECOND",
            Unit::Minute => "MINUTE",
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
        }
    }
}

/// How fresh a dynamic table must be: a positive whole number of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub n: u32,
    pub unit: Unit,
}

impl Freshness {
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.n as u64 * self.unit.seconds())
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INTERVAL '{}' {}", self.n, self.unit.name())
    }
}

/// A rule broken by a freshness or mode; the texts follow Flink's, worded for dynamic tables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("Dynamic table freshness doesn't support negative value.")]
    Negative,
    #[error("Dynamic table freshness must be a positive whole number, got '{0}'.")]
    NotPositiveInteger(String),
    #[error("Dynamic table freshness only support SECOND, MINUTE, HOUR, DAY as the time unit.")]
    BadUnit,
    #[error("In full refresh mode, freshness must be less than {limit} when the time unit is {unit}.")]
    FullTooLarge { limit: u32, unit: &'static str },
    #[error("In full refresh mode, only freshness that are factors of {limit} are currently supported when the time unit is {unit}.")]
    FullNotFactor { limit: u32, unit: &'static str },
    #[error("In full refresh mode, freshness must be 1 when the time unit is DAY.")]
    FullDayNotOne,
}

/// Validates `INTERVAL '<value>' <unit>` as written by the user.
pub fn parse_freshness(value: &str, unit: &str) -> Result<Freshness, RuleError> {
    let unit = match unit.trim().to_ascii_uppercase().trim_end_matches('S') {
        "SECOND" => Unit::Second,
        "MINUTE" => Unit::Minute,
        "HOUR" => Unit::Hour,
        "DAY" => Unit::Day,
        _ => return Err(RuleError::BadUnit),
    };
    let v = value.trim();
    if v.starts_with('-') {
        return Err(RuleError::Negative);
    }
    match v.strip_prefix('+').unwrap_or(v).parse::<u32>() {
        Ok(n) if n > 0 => Ok(Freshness { n, unit }),
        _ => Err(RuleError::NotPositiveInteger(v.to_string())),
    }
}

/// Flink's default threshold (`materialized-table.refresh-mode.freshness-threshold`).
pub const DEFAULT_THRESHOLD: Duration = Duration::from_secs(30 * 60);

/// An explicit mode wins; otherwise CONTINUOUS when the freshness is strictly below the threshold.
pub fn derive_mode(freshness: Freshness, logical: LogicalMode, threshold: Duration) -> RefreshMode {
    match logical {
        LogicalMode::Continuous => RefreshMode::Continuous,
        LogicalMode::Full => RefreshMode::Full,
        LogicalMode::Automatic if freshness.duration() < threshold => RefreshMode::Continuous,
        LogicalMode::Automatic => RefreshMode::Full,
    }
}

/// Flink 2.2's default freshness when the clause is missing: 3 minutes for continuous, 1 hour for full.
pub fn default_freshness(logical: LogicalMode) -> Freshness {
    match logical {
        LogicalMode::Full => Freshness { n: 1, unit: Unit::Hour },
        _ => Freshness { n: 3, unit: Unit::Minute },
    }
}

/// The Quartz cron (seconds first, 7 fields) that fires a FULL-mode table at its freshness.
pub fn full_mode_cron(f: Freshness) -> Result<String, RuleError> {
    let check = |limit: u32, unit: Unit| {
        if f.n >= limit {
            Err(RuleError::FullTooLarge { limit, unit: unit.name() })
        } else if !limit.is_multiple_of(f.n) {
            Err(RuleError::FullNotFactor { limit, unit: unit.name() })
        } else {
            Ok(())
        }
    };
    match f.unit {
        Unit::Second => check(60, Unit::Second).map(|_| format!("0/{} * * * * ? *", f.n)),
        Unit::Minute => check(60, Unit::Minute).map(|_| format!("0 0/{} * * * ? *", f.n)),
        Unit::Hour => check(24, Unit::Hour).map(|_| format!("0 0 0/{} * * ? *", f.n)),
        Unit::Day if f.n == 1 => Ok("0 0 0 * * ? *".to_string()),
        Unit::Day => Err(RuleError::FullDayNotOne),
    }
}

/// The schedule slot `now` falls in, as seconds since the Unix epoch: the latest fire time at or
/// before `now`, for a schedule laid out in a time zone that is `utc_offset` seconds ahead of UTC
/// at `now`. FULL mode fires on its Quartz cron (derived from the freshness), whose fire times are
/// multiples of the period counted from local midnight (every cron in the table divides its unit's
/// range evenly, so midnight-aligned multiples are aligned on the local epoch too); CONTINUOUS
/// refreshes every freshness period, on the same grid.
pub fn slot(now: i64, f: Freshness, utc_offset: i64) -> i64 {
    let period = f.duration().as_secs() as i64;
    let local = now + utc_offset;
    local - local.rem_euclid(period) - utc_offset
}

/// Translates a Java date pattern (Flink's `partition.fields.<col>.date-formatter`, e.g.
/// `yyyy-MM-dd`) into a PostgreSQL `to_char` pattern. Letters other than the year, month, day,
/// hour, minute and second fields are refused; text in single quotes is literal.
pub fn date_pattern_to_char(java: &str) -> Result<String, String> {
    let chars: Vec<char> = java.chars().collect();
    let mut out = String::new();
    let mut literal = String::new();
    let flush = |literal: &mut String, out: &mut String| {
        if !literal.is_empty() {
            out.push('"');
            out.push_str(&literal.replace('\\', "\\\\").replace('"', "\\\""));
            out.push('"');
            literal.clear();
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // 'text' is literal; '' is a quote.
            if chars.get(i + 1) == Some(&'\'') {
                literal.push('\'');
                i += 2;
                continue;
            }
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(format!("unterminated quote in date pattern '{java}'")),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        literal.push('\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some(&ch) => {
                        literal.push(ch);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            literal.push(c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let field = match (c, run) {
            ('y', 2) => "YY",
            ('y', _) | ('u', _) => "YYYY",
            ('M', 1) => "FMMM",
            ('M', 2) => "MM",
            ('d', 1) => "FMDD",
            ('d', 2) => "DD",
            ('H', 1) => "FMHH24",
            ('H', 2) => "HH24",
            ('m', 1) => "FMMI",
            ('m', 2) => "MI",
            ('s', 1) => "FMSS",
            ('s', 2) => "SS",
            _ => {
                return Err(format!(
                    "date pattern '{java}': '{}' is not supported (use y, M, d, H, m and s)",
                    c.to_string().repeat(run)
                ));
            }
        };
        flush(&mut literal, &mut out);
        out.push_str(field);
        i += run;
    }
    flush(&mut literal, &mut out);
    Ok(out)
}

/// The date-formatted partition columns of a table: `(column, to_char pattern)` for each
/// `partition.fields.<col>.date-formatter` option, each column being one of `partitioned_by`.
pub fn partition_formatters(options: &[(String, String)], partitioned_by: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (key, value) in options {
        let Some(col) = key
            .strip_prefix("partition.fields.")
            .and_then(|k| k.strip_suffix(".date-formatter"))
        else {
            continue;
        };
        if !partitioned_by.iter().any(|p| p == col) {
            return Err(format!("option '{key}' names \"{col}\", which is not a partition column"));
        }
        out.push((col.to_string(), date_pattern_to_char(value)?));
    }
    Ok(out)
}

/// Checks a REFRESH ... PARTITION spec: every key a partition column, each at most once.
pub fn check_partition_spec(spec: &[(String, String)], partitioned_by: &[String], table: &str) -> Result<(), String> {
    if partitioned_by.is_empty() {
        return Err(format!("dynamic table {table} is not partitioned"));
    }
    for (i, (key, _)) in spec.iter().enumerate() {
        if !partitioned_by.iter().any(|p| p == key) {
            return Err(format!(
                "\"{key}\" is not a partition column of dynamic table {table} (partitioned by {})",
                partitioned_by.join(", ")
            ));
        }
        if spec[..i].iter().any(|(k, _)| k == key) {
            return Err(format!("partition column \"{key}\" is given twice"));
        }
    }
    Ok(())
}

/// A result column: name and type as PostgreSQL prints it (`format_type`).
pub type Column = (String, String);

/// ALTER DYNAMIC TABLE ... AS may only append columns: the new query must give the current
/// columns first, in order, with the same names and types, and may add more at the end (added to
/// the table as nullable columns). Returns the columns to add, or why the new query cannot
/// replace the current one.
pub fn appended_columns(current: &[Column], new: &[Column]) -> Result<Vec<Column>, String> {
    for (i, (name, ty)) in current.iter().enumerate() {
        let Some((new_name, new_ty)) = new.get(i) else {
            return Err(format!(
                "the new query has no column \"{name}\" (position {}); ALTER DYNAMIC TABLE ... AS may only append columns",
                i + 1
            ));
        };
        if new_name != name {
            return Err(format!(
                "column {} would be renamed from \"{name}\" to \"{new_name}\"; ALTER DYNAMIC TABLE ... AS may only append columns",
                i + 1
            ));
        }
        if new_ty != ty {
            return Err(format!(
                "column \"{name}\" would change type from {ty} to {new_ty}; ALTER DYNAMIC TABLE ... AS may only append columns"
            ));
        }
    }
    Ok(new[current.len()..].to_vec())
}

/// The name of the view holding a dynamic table's query in schema dyngate: `schema.table`, so
/// that PostgreSQL's "view dyngate.\"public.t\" depends on table orders" names the dynamic table;
/// `dt_<id>` when that would not fit PostgreSQL's 63-byte identifiers.
pub fn query_view_name(schema: &str, table: &str, id: i64) -> String {
    let name = format!("{schema}.{table}");
    if name.len() <= 63 { name } else { format!("dt_{id}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Unit::*;

    fn f(n: u32, unit: Unit) -> Freshness {
        Freshness { n, unit }
    }

    #[test]
    fn freshness_parsing() {
        let cases: &[(&str, &str, Result<Freshness, RuleError>)] = &[
            ("3", "MINUTE", Ok(f(3, Minute))),
            ("3", "minutes", Ok(f(3, Minute))),
            ("1", "DAY", Ok(f(1, Day))),
            ("45", "second", Ok(f(45, Second))),
            ("-1", "MINUTE", Err(RuleError::Negative)),
            ("0", "MINUTE", Err(RuleError::NotPositiveInteger("0".into()))),
            ("1.5", "HOUR", Err(RuleError::NotPositiveInteger("1.5".into()))),
            ("1", "MONTH", Err(RuleError::BadUnit)),
            ("1", "YEAR", Err(RuleError::BadUnit)),
        ];
        for (v, u, want) in cases {
            assert_eq!(&parse_freshness(v, u), want, "{v} {u}");
        }
    }

    #[test]
    fn mode_derivation() {
        let t = DEFAULT_THRESHOLD;
        let cases = [
            (f(3, Minute), LogicalMode::Automatic, RefreshMode::Continuous),
            (f(29, Minute), LogicalMode::Automatic, RefreshMode::Continuous),
            (f(30, Minute), LogicalMode::Automatic, RefreshMode::Full), // strictly less-than
            (f(1, Hour), LogicalMode::Automatic, RefreshMode::Full),
            (f(1, Hour), LogicalMode::Continuous, RefreshMode::Continuous),
            (f(1, Second), LogicalMode::Full, RefreshMode::Full),
            (f(1799, Second), LogicalMode::Automatic, RefreshMode::Continuous),
        ];
        for (fr, logical, want) in cases {
            assert_eq!(derive_mode(fr, logical, t), want, "{fr} {logical:?}");
        }
        assert_eq!(
            derive_mode(f(10, Minute), LogicalMode::Automatic, Duration::from_secs(300)),
            RefreshMode::Full
        );
    }

    #[test]
    fn cron_table() {
        let ok = [
            (f(1, Second), "0/1 * * * * ? *"),
            (f(30, Second), "0/30 * * * * ? *"),
            (f(1, Minute), "0 0/1 * * * ? *"),
            (f(15, Minute), "0 0/15 * * * ? *"),
            (f(1, Hour), "0 0 0/1 * * ? *"),
            (f(8, Hour), "0 0 0/8 * * ? *"),
            (f(12, Hour), "0 0 0/12 * * ? *"),
            (f(1, Day), "0 0 0 * * ? *"),
        ];
        for (fr, cron) in ok {
            assert_eq!(full_mode_cron(fr).as_deref(), Ok(cron), "{fr}");
        }
        for n in [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30] {
            assert!(full_mode_cron(f(n, Minute)).is_ok(), "{n} minutes");
        }
        let bad = [
            (f(60, Second), RuleError::FullTooLarge { limit: 60, unit: "SECOND" }),
            (f(7, Minute), RuleError::FullNotFactor { limit: 60, unit: "MINUTE" }),
            (f(45, Minute), RuleError::FullNotFactor { limit: 60, unit: "MINUTE" }),
            (f(24, Hour), RuleError::FullTooLarge { limit: 24, unit: "HOUR" }),
            (f(5, Hour), RuleError::FullNotFactor { limit: 24, unit: "HOUR" }),
            (f(2, Day), RuleError::FullDayNotOne),
        ];
        for (fr, err) in bad {
            assert_eq!(full_mode_cron(fr), Err(err), "{fr}");
        }
        assert_eq!(
            RuleError::FullNotFactor { limit: 60, unit: "MINUTE" }.to_string(),
            "In full refresh mode, only freshness that are factors of 60 are currently supported when the time unit is MINUTE."
        );
    }

    #[test]
    fn slots() {
        // 2024-01-02 00:00:00 UTC = 1704153600.
        let midnight = 1_704_153_600;
        let cases = [
            (midnight + 7, f(5, Second), midnight + 5),
            (midnight + 59, f(30, Second), midnight + 30),
            (midnight + 14 * 60 + 59, f(15, Minute), midnight),
            (midnight + 15 * 60, f(15, Minute), midnight + 15 * 60),
            (midnight + 5 * 3600 + 1, f(4, Hour), midnight + 4 * 3600),
            (midnight + 23 * 3600, f(1, Day), midnight),
            (midnight + 100, f(7, Minute), midnight - (midnight % 420)),
        ];
        for (now, fr, want) in cases {
            assert_eq!(slot(now, fr, 0), want, "{fr} at {now}");
        }
        // Laid out in a time zone: a daily table in UTC+1 fires at 23:00 UTC, one in UTC-5 at
        // 05:00 UTC; 8-hourly in UTC+5:30 at 18:30, 02:30 and 10:30 UTC.
        let zoned = [
            (midnight + 3600, f(1, Day), 3600, midnight - 3600),
            (midnight - 3599, f(1, Day), 3600, midnight - 3600),
            (midnight - 3601, f(1, Day), 3600, midnight - 3600 - 86_400),
            (midnight + 6 * 3600, f(1, Day), -5 * 3600, midnight + 5 * 3600),
            (midnight + 3 * 3600, f(8, Hour), 19_800, midnight + 9000),
            (midnight + 2 * 3600, f(8, Hour), 19_800, midnight - 5 * 3600 - 1800),
            (midnight + 61, f(1, Minute), 19_800, midnight + 60),
        ];
        for (now, fr, off, want) in zoned {
            assert_eq!(slot(now, fr, off), want, "{fr} at {now} offset {off}");
        }
    }

    #[test]
    fn appending_columns() {
        fn cols(list: &[(&str, &str)]) -> Vec<Column> {
            list.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
        }
        let cur = cols(&[("day", "date"), ("total", "numeric")]);
        type Case = (Vec<Column>, Result<Vec<Column>, &'static str>);
        let cases: Vec<Case> = vec![
            (cur.clone(), Ok(vec![])),
            (
                cols(&[("day", "date"), ("total", "numeric"), ("n", "bigint")]),
                Ok(cols(&[("n", "bigint")])),
            ),
            (cols(&[("day", "date")]), Err("the new query has no column \"total\" (position 2)")),
            (
                cols(&[("day", "date"), ("sum", "numeric")]),
                Err("column 2 would be renamed from \"total\" to \"sum\""),
            ),
            (
                cols(&[("day", "date"), ("total", "bigint"), ("n", "bigint")]),
                Err("column \"total\" would change type from numeric to bigint"),
            ),
            (
                cols(&[("total", "numeric"), ("day", "date")]),
                Err("column 1 would be renamed from \"day\" to \"total\""),
            ),
        ];
        for (new, want) in cases {
            match (appended_columns(&cur, &new), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.starts_with(want), "{got}"),
                (got, want) => panic!("{new:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn date_patterns() {
        let ok = [
            ("yyyy-MM-dd", r#"YYYY"-"MM"-"DD"#),
            ("yyyyMMdd", "YYYYMMDD"),
            ("yyyy-MM-dd HH:mm:ss", r#"YYYY"-"MM"-"DD" "HH24":"MI":"SS"#),
            ("yyyy/M/d", r#"YYYY"/"FMMM"/"FMDD"#),
            ("yy'T'HH", r#"YY"T"HH24"#),
            ("yyyy''ss", r#"YYYY"'"SS"#),
            ("yyyy'''s'", r#"YYYY"'s""#),
            (r#"'a"b'dd"#, r#""a\"b"DD"#),
        ];
        for (java, pg) in ok {
            assert_eq!(date_pattern_to_char(java).as_deref(), Ok(pg), "{java}");
        }
        for bad in ["yyyy-MM-dd EEE", "yyyy-MM-dd'T", "yyyy-MMM", "hh"] {
            assert!(date_pattern_to_char(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partition_options() {
        let parts = ["ds".to_string(), "region".to_string()];
        let opt = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            partition_formatters(&[opt("partition.fields.ds.date-formatter", "yyyy-MM-dd"), opt("x", "y")], &parts),
            Ok(vec![("ds".to_string(), r#"YYYY"-"MM"-"DD"#.to_string())])
        );
        assert!(partition_formatters(&[opt("partition.fields.day.date-formatter", "yyyy")], &parts).is_err());
        assert!(partition_formatters(&[opt("partition.fields.ds.date-formatter", "EEE")], &parts).is_err());

        let spec = |list: &[(&str, &str)]| list.iter().map(|(k, v)| opt(k, v)).collect::<Vec<_>>();
        assert_eq!(check_partition_spec(&spec(&[("ds", "2024-01-01")]), &parts, "t"), Ok(()));
        assert_eq!(check_partition_spec(&spec(&[("region", "eu"), ("ds", "x")]), &parts, "t"), Ok(()));
        let bad = [
            (
                spec(&[("day", "x")]),
                &parts[..],
                "\"day\" is not a partition column of dynamic table t (partitioned by ds, region)",
            ),
            (
                spec(&[("ds", "a"), ("ds", "b")]),
                &parts[..],
                "partition column \"ds\" is given twice",
            ),
            (spec(&[("ds", "a")]), &[][..], "dynamic table t is not partitioned"),
        ];
        for (s, p, want) in bad {
            assert_eq!(check_partition_spec(&s, p, "t"), Err(want.to_string()));
        }
    }

    #[test]
    fn query_view_names() {
        let long = "x".repeat(70);
        let cases = [
            ("public", "daily", 7, "public.daily".to_string()),
            ("s", &long[..61], 8, format!("s.{}", &long[..61])),
            ("s", &long[..], 9, "dt_9".to_string()),
            ("a\"b", "c", 1, "a\"b.c".to_string()),
        ];
        for (schema, table, id, want) in cases {
            assert_eq!(query_view_name(schema, table, id), want);
        }
    }
}
