//! Apache Flink's statements: which statements sent to the gateway are Flink's, and what each is.
//!
//! **The rule.** A statement is Flink's when it names an object of the Flink database (by default
//! `flink`, `--flink-database`): a qualified name whose database part is that name, e.g.
//! `CREATE TABLE flink.clicks (...) WITH ('connector' = 'datagen')`, `SELECT * FROM flink.clicks`,
//! `` DROP TABLE `flink`.`clicks` ``. The rule is lexical (string literals and comments do not
//! count) and cheap: texts that do not contain the name at all are not tokenized. The database is
//! one dyngate creates in Flink's in-memory catalog of every session it opens, so the names work in
//! Flink unchanged and nothing is rewritten. A PostgreSQL schema of the same name is hidden behind
//! it (choose another `--flink-database` then).
//!
//! Flink quotes identifiers with backticks; PostgreSQL's double quotes are accepted in names too.
//! Everything here is pure: text in, decision out.

use crate::sql::lex::is_ident_byte;

/// What a Flink statement does, as dyngate treats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlinkKind {
    /// `CREATE [TEMPORARY] TABLE | VIEW | FUNCTION <object>`: run in Flink, kept in the catalog
    /// and replayed into every session dyngate opens.
    Create { object: String, what: ObjectKind },
    /// `ALTER TABLE | VIEW | FUNCTION <object> ...`: run, kept and replayed after the CREATE.
    Alter { object: String, what: ObjectKind },
    /// `DROP [TEMPORARY] TABLE | VIEW | FUNCTION [IF EXISTS] <object>`: run; the object's kept
    /// statements are removed.
    Drop { object: String, what: ObjectKind, if_exists: bool },
    /// SELECT, WITH, VALUES, DESCRIBE, SHOW, EXPLAIN: run in Flink, rows returned.
    Query,
    /// INSERT or EXECUTE STATEMENT SET: submitted as a Flink job; its id is returned.
    Job,
}

/// The kind of object a Flink DDL statement names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Table,
    View,
    Function,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Table => "TABLE",
            ObjectKind::View => "VIEW",
            ObjectKind::Function => "FUNCTION",
        }
    }
}

/// A statement recognised as Flink's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlinkStatement {
    pub kind: FlinkKind,
    /// The text, trimmed, as sent to Flink.
    pub text: String,
}

/// Why a Flink statement is refused (SQLSTATE 0A000 for what dyngate does not take, 42601 for
/// what it cannot read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlinkParseError {
    #[error("{0}")]
    Unsupported(String),
    #[error("syntax error: {0}")]
    Syntax(String),
}

impl FlinkParseError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            FlinkParseError::Unsupported(_) => "0A000",
            FlinkParseError::Syntax(_) => "42601",
        }
    }
}

/// A lexical token of a statement: a word (bare or quoted identifier, or keyword), a string
/// literal, or one punctuation byte.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    /// A bare word, as written.
    Word(&'a str),
    /// A quoted identifier (backticks or double quotes), without its quotes.
    Quoted(String),
    Str,
    Punct(u8),
}

impl Token<'_> {
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    /// The identifier this token is, if any.
    fn ident(&self) -> Option<String> {
        match self {
            Token::Word(w) => Some(w.to_string()),
            Token::Quoted(q) => Some(q.clone()),
            _ => None,
        }
    }

    /// Whether this token is the identifier `name` (a bare word case-insensitively, a quoted one
    /// exactly).
    fn is_name(&self, name: &str) -> bool {
        match self {
            Token::Word(w) => w.eq_ignore_ascii_case(name),
            Token::Quoted(q) => q == name,
            _ => false,
        }
    }
}

/// Splits a statement into tokens, skipping whitespace and comments.
fn tokens(sql: &str) -> Vec<Token<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = match sql[i + 2..].find("*/") {
                Some(end) => i + 2 + end + 2,
                None => b.len(),
            };
        } else if c == b'\'' {
            i = skip_quote(b, i, b'\'');
            out.push(Token::Str);
        } else if c == b'`' || c == b'"' {
            let end = skip_quote(b, i, c);
            let inner = &sql[i + 1..end.saturating_sub(1).max(i + 1)];
            let q = c as char;
            out.push(Token::Quoted(inner.replace(&format!("{q}{q}"), &q.to_string())));
            i = end;
        } else if is_ident_byte(b, i) {
            let start = i;
            while is_ident_byte(b, i) {
                i += 1;
            }
            out.push(Token::Word(&sql[start..i]));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// Skips a quoted token starting at `i`; a doubled quote stays inside.
fn skip_quote(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == q {
            if i + 1 < b.len() && b[i + 1] == q {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    i
}

/// Whether `sql` (one statement or several) names an object of the Flink database `database`.
pub fn names_database(sql: &str, database: &str) -> bool {
    if !sql
        .as_bytes()
        .windows(database.len())
        .any(|w| w.eq_ignore_ascii_case(database.as_bytes()))
    {
        return false;
    }
    let t = tokens(sql);
    t.windows(3)
        .any(|w| w[0].is_name(database) && w[1] == Token::Punct(b'.') && w[2].ident().is_some())
}

/// Reads a qualified name at `t[i..]`: its parts, and the index after it.
fn qualified_name(t: &[Token<'_>], mut i: usize) -> Option<(Vec<String>, usize)> {
    let mut parts = vec![t.get(i)?.ident()?];
    i += 1;
    while t.get(i) == Some(&Token::Punct(b'.')) {
        parts.push(t.get(i + 1)?.ident()?);
        i += 2;
    }
    Some((parts, i))
}

/// The object a DDL statement names, as `<database>.<name>`; refused unless it is in `database`.
fn object_in(parts: &[String], database: &str) -> Result<String, FlinkParseError> {
    let n = parts.len();
    let in_db = n >= 2 && parts[n - 2].eq_ignore_ascii_case(database);
    if !in_db || n > 3 {
        return Err(FlinkParseError::Unsupported(format!(
            "Flink objects are created in the database \"{database}\" (write {database}.{}); {} is not there",
            parts.last().map(String::as_str).unwrap_or("name"),
            parts.join(".")
        )));
    }
    Ok(format!("{database}.{}", parts[n - 1]))
}

fn object_kind(t: &Token<'_>) -> Option<ObjectKind> {
    if t.is_kw("TABLE") {
        Some(ObjectKind::Table)
    } else if t.is_kw("VIEW") {
        Some(ObjectKind::View)
    } else if t.is_kw("FUNCTION") {
        Some(ObjectKind::Function)
    } else {
        None
    }
}

/// Whether the tokens from `i` on hold `AS` followed by a query at parenthesis depth 0 (CREATE
/// TABLE ... AS SELECT).
fn has_top_level_as_query(t: &[Token<'_>], from: usize) -> bool {
    let mut depth = 0i32;
    for (k, tok) in t.iter().enumerate().skip(from) {
        match tok {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') => depth -= 1,
            _ if depth == 0
                && tok.is_kw("AS")
                && t.get(k + 1)
                    .is_some_and(|n| n.is_kw("SELECT") || n.is_kw("WITH") || n.is_kw("VALUES")) =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// Reads one Flink statement (the classifier said it names `database`).
pub fn parse(sql: &str, database: &str) -> Result<FlinkStatement, FlinkParseError> {
    let text = sql.trim().to_string();
    let t = tokens(&text);
    let first = t.first().ok_or_else(|| FlinkParseError::Syntax("empty statement".into()))?;
    let kw = |i: usize, k: &str| t.get(i).is_some_and(|x| x.is_kw(k));
    let kind = if first.is_kw("CREATE") {
        let mut i = 1;
        if kw(i, "OR") && kw(i + 1, "REPLACE") {
            return Err(FlinkParseError::Unsupported(
                "CREATE OR REPLACE of a Flink object is not supported: DROP it, then CREATE it again".into(),
            ));
        }
        if kw(i, "TEMPORARY") {
            i += 1;
            if kw(i, "SYSTEM") {
                return Err(FlinkParseError::Unsupported(
                    "temporary system functions are not kept by dyngate; create the function in the database instead".into(),
                ));
            }
        }
        let what = t.get(i).and_then(object_kind).ok_or_else(|| {
            FlinkParseError::Unsupported("only CREATE TABLE, CREATE VIEW and CREATE FUNCTION are taken for Flink objects".into())
        })?;
        i += 1;
        if kw(i, "IF") && kw(i + 1, "NOT") && kw(i + 2, "EXISTS") {
            i += 3;
        }
        let (parts, after) =
            qualified_name(&t, i).ok_or_else(|| FlinkParseError::Syntax(format!("a name expected after CREATE {}", what.name())))?;
        if what == ObjectKind::Table && has_top_level_as_query(&t, after) {
            return Err(FlinkParseError::Unsupported(
                "CREATE TABLE ... AS SELECT would run a Flink job each time dyngate replays it: create the table, then INSERT INTO it"
                    .into(),
            ));
        }
        FlinkKind::Create {
            object: object_in(&parts, database)?,
            what,
        }
    } else if first.is_kw("DROP") {
        let mut i = 1;
        if kw(i, "TEMPORARY") {
            i += 1;
        }
        let what = t.get(i).and_then(object_kind).ok_or_else(|| {
            FlinkParseError::Unsupported("only DROP TABLE, DROP VIEW and DROP FUNCTION are taken for Flink objects".into())
        })?;
        i += 1;
        let if_exists = kw(i, "IF") && kw(i + 1, "EXISTS");
        if if_exists {
            i += 2;
        }
        let (parts, _) =
            qualified_name(&t, i).ok_or_else(|| FlinkParseError::Syntax(format!("a name expected after DROP {}", what.name())))?;
        FlinkKind::Drop {
            object: object_in(&parts, database)?,
            what,
            if_exists,
        }
    } else if first.is_kw("ALTER") {
        let what = t.get(1).and_then(object_kind).ok_or_else(|| {
            FlinkParseError::Unsupported("only ALTER TABLE, ALTER VIEW and ALTER FUNCTION are taken for Flink objects".into())
        })?;
        let mut i = 2;
        if kw(i, "IF") && kw(i + 1, "EXISTS") {
            i += 2;
        }
        let (parts, after) =
            qualified_name(&t, i).ok_or_else(|| FlinkParseError::Syntax(format!("a name expected after ALTER {}", what.name())))?;
        if kw(after, "RENAME") {
            return Err(FlinkParseError::Unsupported(
                "renaming a Flink object is not supported: DROP it and CREATE it under the new name".into(),
            ));
        }
        FlinkKind::Alter {
            object: object_in(&parts, database)?,
            what,
        }
    } else if ["SELECT", "WITH", "VALUES", "DESCRIBE", "DESC", "SHOW", "EXPLAIN"]
        .iter()
        .any(|k| first.is_kw(k))
        || *first == Token::Punct(b'(')
    {
        FlinkKind::Query
    } else if first.is_kw("INSERT") || (first.is_kw("EXECUTE") && kw(1, "STATEMENT")) {
        FlinkKind::Job
    } else {
        let word = match first {
            Token::Word(w) => w.to_ascii_uppercase(),
            _ => "this statement".into(),
        };
        return Err(FlinkParseError::Unsupported(format!(
            "{word} is not taken for Flink objects (dyngate takes CREATE, ALTER and DROP of tables, views and functions, queries, and INSERT)"
        )));
    };
    Ok(FlinkStatement { kind, text })
}

/// Masks the values of options whose key names a secret (`'password' = '...'`, `'...secret...'`,
/// `'...token...'`) in Flink DDL text, for everything shown to users (views, SHOW CREATE TABLE).
pub fn mask_secrets(ddl: &str) -> String {
    let b = ddl.as_bytes();
    let mut out = String::with_capacity(ddl.len());
    let mut i = 0;
    // The last string literal seen, and whether it is a secret key awaiting its value.
    let mut pending_secret = false;
    let mut after_eq = false;
    while i < b.len() {
        if b[i] == b'\'' {
            let end = skip_quote(b, i, b'\'');
            let lit = &ddl[i..end];
            if pending_secret && after_eq {
                out.push_str("'***'");
                pending_secret = false;
                after_eq = false;
            } else {
                let key = lit.trim_matches('\'').to_ascii_lowercase();
                pending_secret = key.contains("password") || key.contains("secret") || key.contains("token");
                after_eq = false;
                out.push_str(lit);
            }
            i = end;
            continue;
        }
        let c = b[i];
        if c == b'=' && pending_secret {
            after_eq = true;
        } else if !c.is_ascii_whitespace() {
            pending_secret = pending_secret && after_eq;
        }
        // Copy one character (UTF-8 aware).
        let ch = ddl[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_database_table() {
        let cases: &[(&str, bool)] = &[
            ("SELECT * FROM flink.clicks", true),
            ("select * from FLINK.clicks", true),
            ("select * from `flink`.`clicks`", true),
            ("select * from \"flink\".clicks", true),
            ("select * from default_catalog.flink.clicks", true),
            ("select 'flink.clicks'", false),
            ("select 1 -- flink.clicks", false),
            ("select 1 /* flink.x */", false),
            ("create schema flink", false),
            ("select * from myflink.t", false),
            ("select * from flinks.t", false),
            ("select * from t", false),
            ("select flink . x from t", true),
        ];
        for (sql, want) in cases {
            assert_eq!(names_database(sql, "flink"), *want, "{sql}");
        }
    }

    fn kind(sql: &str) -> Result<FlinkKind, FlinkParseError> {
        parse(sql, "flink").map(|s| s.kind)
    }

    #[test]
    fn parse_table() {
        let table = |o: &str| FlinkKind::Create {
            object: o.into(),
            what: ObjectKind::Table,
        };
        assert_eq!(
            kind("CREATE TABLE flink.clicks (a INT) WITH ('connector' = 'datagen')"),
            Ok(table("flink.clicks"))
        );
        assert_eq!(
            kind("create temporary table if not exists `flink`.`Clicks` (a int)"),
            Ok(table("flink.Clicks"))
        );
        assert_eq!(kind("create table default_catalog.flink.c (a int)"), Ok(table("flink.c")));
        assert_eq!(
            kind("CREATE VIEW flink.v AS SELECT a FROM flink.clicks"),
            Ok(FlinkKind::Create {
                object: "flink.v".into(),
                what: ObjectKind::View
            })
        );
        assert_eq!(
            kind("DROP TABLE IF EXISTS flink.clicks"),
            Ok(FlinkKind::Drop {
                object: "flink.clicks".into(),
                what: ObjectKind::Table,
                if_exists: true
            })
        );
        assert_eq!(
            kind("alter table flink.clicks set ('rows-per-second' = '5')"),
            Ok(FlinkKind::Alter {
                object: "flink.clicks".into(),
                what: ObjectKind::Table
            })
        );
        assert_eq!(kind("SELECT count(*) FROM flink.clicks"), Ok(FlinkKind::Query));
        assert_eq!(kind("with x as (select 1 from flink.c) select * from x"), Ok(FlinkKind::Query));
        assert_eq!(kind("DESCRIBE flink.clicks"), Ok(FlinkKind::Query));
        assert_eq!(kind("INSERT INTO flink.sink SELECT * FROM flink.clicks"), Ok(FlinkKind::Job));
        // Refused, with the reason.
        for (sql, code) in [
            ("CREATE TABLE flink.t WITH ('connector'='x') AS SELECT * FROM flink.c", "0A000"),
            ("CREATE TABLE other.t (a int) WITH ('x'='y') -- flink.c", "0A000"),
            ("CREATE OR REPLACE TABLE flink.t (a int)", "0A000"),
            ("ALTER TABLE flink.t RENAME TO flink.u", "0A000"),
            ("SET 'a' = 'b' -- flink.x", "0A000"),
            ("CREATE TABLE", "42601"),
            ("CREATE TABLE (a int)", "42601"),
        ] {
            let e = kind(sql).expect_err(sql);
            assert_eq!(e.sqlstate(), code, "{sql}: {e}");
        }
    }

    #[test]
    fn masks_secret_options() {
        let ddl = "CREATE TABLE flink.t (a INT) WITH ('connector'='jdbc', 'password' = 'it''s', 'username'='u', 'x.secret'='s', 'url'='password')";
        assert_eq!(
            mask_secrets(ddl),
            "CREATE TABLE flink.t (a INT) WITH ('connector'='jdbc', 'password' = '***', 'username'='u', 'x.secret'='***', 'url'='password')"
        );
        assert_eq!(mask_secrets("no options é"), "no options é");
    }
}
