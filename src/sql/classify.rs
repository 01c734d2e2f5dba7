//! The classifier: which statements belong to dyngate.
//!
//! The relay calls [`classify`] on every simple Query and every Parse, so the common case (no
//! dynamic-table statement) must cost one scan of the text: a statement can only be dyngate's if the
//! word `DYNAMIC` occurs in it, and texts without it are forwarded without tokenizing. Texts that
//! do contain it are split into statements with PostgreSQL's lexical rules (quotes, dollar quotes,
//! nested comments) and their leading keywords compared.

use crate::sql::lex::is_ident_byte;

/// The dynamic-table statement kinds dyngate intercepts. Each has one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    CreateDynamicTable,
    AlterDynamicTable,
    /// A statement that names the Flink database (`sql::flink`): it runs in Flink.
    Flink,
    DropDynamicTable,
    RefreshDynamicTable,
    ShowDynamicTables,
    ShowCreateDynamicTable,
    DescribeDynamicTable,
}

/// Where a statement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the backing PostgreSQL, unchanged.
    Forward,
    /// To dyngate's own handler for this kind.
    Intercept(StatementKind),
}

/// Classifies one SQL text (possibly several statements, as a simple Query may carry). The text is
/// intercepted if any of its statements is dyngate's; the first such statement names the kind.
/// `standard_strings` is the session's `standard_conforming_strings`: when off, a backslash
/// escapes the next character in every string literal, not only in `E''` ones.
/// `flink` is the Flink database when the gateway has a Flink engine: a statement naming it is
/// Flink's (see `sql::flink`; a dynamic-table statement stays dyngate's even when its query reads
/// Flink tables).
pub fn classify(sql: &str, standard_strings: bool, flink: Option<&str>) -> Route {
    let dynamic = contains_ascii_ci(sql.as_bytes(), b"dynamic");
    let flink = flink.filter(|db| contains_ascii_ci(sql.as_bytes(), db.as_bytes()));
    if !dynamic && flink.is_none() {
        return Route::Forward;
    }
    split_statements(sql, standard_strings)
        .into_iter()
        .find_map(|s| {
            let kind = if dynamic { classify_one(s) } else { None };
            kind.or_else(|| {
                flink
                    .filter(|db| crate::sql::flink::names_database(s, db))
                    .map(|_| StatementKind::Flink)
            })
            .map(Route::Intercept)
        })
        .unwrap_or(Route::Forward)
}

fn classify_one(stmt: &str) -> Option<StatementKind> {
    let words = leading_words(stmt, 5);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    use StatementKind::*;
    match w.as_slice() {
        ["CREATE", "DYNAMIC", "TABLE", ..] => Some(CreateDynamicTable),
        ["CREATE", "OR", "REPLACE", "DYNAMIC", "TABLE"] => Some(CreateDynamicTable),
        ["ALTER", "DYNAMIC", "TABLE", ..] => Some(AlterDynamicTable),
        ["DROP", "DYNAMIC", "TABLE", ..] => Some(DropDynamicTable),
        ["REFRESH", "DYNAMIC", "TABLE", ..] => Some(RefreshDynamicTable),
        ["SHOW", "DYNAMIC", "TABLES", ..] => Some(ShowDynamicTables),
        ["SHOW", "CREATE", "DYNAMIC", "TABLE", ..] => Some(ShowCreateDynamicTable),
        ["DESCRIBE" | "DESC", "DYNAMIC", "TABLE", ..] => Some(DescribeDynamicTable),
        _ => None,
    }
}

fn contains_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// The first `n` words of a statement, upper-cased, skipping whitespace and comments. Stops at the
/// first character that is not part of a bare word.
fn leading_words(stmt: &str, n: usize) -> Vec<String> {
    let b = stmt.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while out.len() < n {
        i = skip_space_and_comments(b, i);
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if start == i {
            break;
        }
        out.push(stmt[start..i].to_ascii_uppercase());
    }
    out
}

fn skip_space_and_comments(b: &[u8], mut i: usize) -> usize {
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
        } else {
            return i;
        }
    }
}

/// Skips a (nestable) block comment starting at `i`; returns the index after it.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Splits SQL text at top-level semicolons, honouring quoted identifiers, string literals
/// (standard, `E''` escapes), dollar quotes and comments. Empty statements are dropped; each piece
/// is returned without its semicolon.
pub fn split_statements(sql: &str, standard_strings: bool) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut depth = 0i32; // parentheses: CREATE RULE ... (a; b) keeps inner semicolons
    while i < b.len() {
        match b[i] {
            b'\'' => {
                let e_string = i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e') && !is_ident_byte(b, i.wrapping_sub(2));
                let escapes = e_string || !standard_strings;
                i = skip_quoted(b, i, b'\'', escapes);
            }
            b'"' => i = skip_quoted(b, i, b'"', false),
            b'-' if b[i..].starts_with(b"--") => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b[i..].starts_with(b"/*") => i = skip_block_comment(b, i),
            b'$' if !is_ident_byte(b, i.wrapping_sub(1)) => i = skip_dollar(b, i),
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth -= 1;
                i += 1;
            }
            b';' if depth <= 0 => {
                push_nonempty(&mut out, &sql[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push_nonempty(&mut out, &sql[start..]);
    out
}

fn push_nonempty<'a>(out: &mut Vec<&'a str>, s: &'a str) {
    let b = s.as_bytes();
    if skip_space_and_comments(b, 0) < b.len() {
        out.push(s);
    }
}

/// Skips a quoted token starting at `i` (the opening quote); doubled quotes stay inside, and with
/// `escapes` a backslash escapes the next byte.
fn skip_quoted(b: &[u8], mut i: usize, q: u8, escapes: bool) -> usize {
    i += 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == q {
            if i + 1 < b.len() && b[i + 1] == q {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Skips a dollar-quoted string (`$tag$ ... $tag$`) starting at `i`, or a lone `$` (a parameter
/// such as `$1`).
fn skip_dollar(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        if j == i + 1 && b[j].is_ascii_digit() {
            return i + 1; // $1: a parameter, not a quote
        }
        j += 1;
    }
    if j >= b.len() || b[j] != b'$' {
        return i + 1;
    }
    let tag = &b[i..=j];
    let mut k = j + 1;
    while k + tag.len() <= b.len() {
        if &b[k..k + tag.len()] == tag {
            return k + tag.len();
        }
        k += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementKind::*;

    #[test]
    fn classify_table() {
        let cases: &[(&str, Route)] = &[
            ("select 1", Route::Forward),
            ("SELECT 'create dynamic table x'", Route::Forward),
            ("create table dynamic (a int)", Route::Forward),
            ("CREATE DYNAMIC TABLE t AS SELECT 1", Route::Intercept(CreateDynamicTable)),
            (
                "  /* hi */ create\n dynamic -- c\n table t as select 1",
                Route::Intercept(CreateDynamicTable),
            ),
            (
                "create or replace dynamic table t as select 1",
                Route::Intercept(CreateDynamicTable),
            ),
            ("ALTER DYNAMIC TABLE t SUSPEND", Route::Intercept(AlterDynamicTable)),
            ("drop dynamic table if exists t", Route::Intercept(DropDynamicTable)),
            ("REFRESH DYNAMIC TABLE t", Route::Intercept(RefreshDynamicTable)),
            ("show dynamic tables like 'a%'", Route::Intercept(ShowDynamicTables)),
            ("SHOW CREATE DYNAMIC TABLE t", Route::Intercept(ShowCreateDynamicTable)),
            ("describe dynamic table t", Route::Intercept(DescribeDynamicTable)),
            ("DESC DYNAMIC TABLE t", Route::Intercept(DescribeDynamicTable)),
            ("select 1; drop dynamic table t", Route::Intercept(DropDynamicTable)),
            ("select $$; drop dynamic table t$$", Route::Forward),
            ("select 'a;'; select \"dynamic;\"", Route::Forward),
            ("SHOW dynamic_something", Route::Forward),
            ("", Route::Forward),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql, true, None), *want, "{sql:?}");
        }
    }

    #[test]
    fn split_table() {
        let cases: &[(&str, &[&str])] = &[
            ("select 1", &["select 1"]),
            ("select 1; select 2;", &["select 1", " select 2"]),
            (";;  ; -- nothing\n", &[]),
            ("select ';' ; select 2", &["select ';' ", " select 2"]),
            ("select E'\\';' ; x", &["select E'\\';' ", " x"]),
            ("select 'it''s;' ; x", &["select 'it''s;' ", " x"]),
            ("do $f$ begin; end $f$; x", &["do $f$ begin; end $f$", " x"]),
            ("select $1; x", &["select $1", " x"]),
            ("select 1 /* ; /* ; */ ; */ ; x", &["select 1 /* ; /* ; */ ; */ ", " x"]),
            (
                "create rule r as on insert to t do (select 1; select 2); x",
                &["create rule r as on insert to t do (select 1; select 2)", " x"],
            ),
            ("select 'unterminated; x", &["select 'unterminated; x"]),
        ];
        for (sql, want) in cases {
            assert_eq!(split_statements(sql, true), *want, "{sql:?}");
        }
    }

    #[test]
    fn backslashes_follow_standard_conforming_strings() {
        // One string literal when standard_conforming_strings is off; three statements when on.
        let sql = "SELECT 'a\\'; CREATE DYNAMIC TABLE x AS SELECT 1; SELECT \\'b'";
        assert_eq!(split_statements(sql, false), [sql]);
        assert_eq!(classify(sql, false, None), Route::Forward);
        assert_eq!(split_statements(sql, true).len(), 3);
        assert_eq!(classify(sql, true, None), Route::Intercept(CreateDynamicTable));
    }

    #[test]
    fn flink_statements_need_a_flink_engine() {
        let f = Some("flink");
        assert_eq!(classify("SELECT * FROM flink.clicks", true, f), Route::Intercept(Flink));
        assert_eq!(classify("SELECT * FROM flink.clicks", true, None), Route::Forward);
        assert_eq!(classify("SELECT 'flink.clicks'", true, f), Route::Forward);
        assert_eq!(classify("select 1; drop table flink.t", true, f), Route::Intercept(Flink));
        assert_eq!(
            classify("CREATE DYNAMIC TABLE d AS SELECT * FROM flink.clicks", true, f),
            Route::Intercept(CreateDynamicTable)
        );
        assert_eq!(classify("SELECT * FROM other.clicks", true, Some("other")), Route::Intercept(Flink));
    }
}
