//! The parser of dyngate's own statements (the dynamic-table family). A thin layer over
//! sqlparser's tokenizer and parser helpers in the PostgreSQL dialect: it reads the clauses of
//! each statement and keeps the parts PostgreSQL will interpret (the query, the column list)
//! verbatim, as the user wrote them, so that anything PostgreSQL accepts works.
//!
//! Pure: text in, [`DtStatement`] or [`ParseError`] out. Errors carry the SQLSTATE the client gets.

use sqlparser::ast::Ident;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan};

use crate::core::LogicalMode;
use crate::core::rules::{Freshness, RuleError, parse_freshness};

/// A table name as PostgreSQL resolves it: unquoted parts folded to lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

/// `key = 'value'` pairs of WITH, SET, RESUME WITH and PARTITION clauses.
pub type Options = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateDt {
    pub if_not_exists: bool,
    pub or_replace: bool,
    pub name: TableName,
    /// The column and constraint list between the parentheses, verbatim, if given.
    pub columns: Option<String>,
    pub comment: Option<String>,
    pub partitioned_by: Vec<String>,
    pub options: Options,
    pub freshness: Option<Freshness>,
    pub mode: LogicalMode,
    /// The query after AS, verbatim.
    pub query: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterAction {
    Suspend,
    Resume { options: Options },
    Refresh { partition: Options },
    AsQuery { query: String },
    SetFreshness(Freshness),
    Set(Options),
    Reset(Vec<String>),
}

/// One dyngate statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtStatement {
    Create(CreateDt),
    Alter { name: TableName, action: AlterAction },
    Refresh { name: TableName, partition: Options },
    Drop { if_exists: bool, name: TableName },
    Show { like: Option<String> },
    ShowCreate { name: TableName },
    Describe { name: TableName },
}

/// Why a statement could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// SQLSTATE 42601.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// SQLSTATE 22023 (invalid_parameter_value).
    #[error("{0}")]
    Freshness(#[from] RuleError),
    /// SQLSTATE 42601: the same clause twice.
    #[error("syntax error: {0} given more than once")]
    Duplicate(&'static str),
}

impl ParseError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ParseError::Syntax(_) | ParseError::Duplicate(_) => "42601",
            ParseError::Freshness(_) => "22023",
        }
    }
}

impl From<ParserError> for ParseError {
    fn from(e: ParserError) -> Self {
        let text = e.to_string();
        ParseError::Syntax(text.strip_prefix("sql parser error: ").unwrap_or(&text).to_string())
    }
}

/// Parses one dyngate statement (the classifier has already decided it is one).
pub fn parse(sql: &str) -> Result<DtStatement, ParseError> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(sql)?;
    let mut s = P { p: &mut p, sql };
    let stmt = s.statement()?;
    s.end()?;
    Ok(stmt)
}

/// Parses a table name as SQL would (`a.b`, `"Mixed Case"`), e.g. for the HTTP API.
pub fn parse_table_name(text: &str) -> Result<TableName, ParseError> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(text)?;
    let mut s = P { p: &mut p, sql: text };
    let name = s.table_name()?;
    s.end()?;
    Ok(name)
}

struct P<'a, 'b> {
    p: &'a mut Parser<'b>,
    sql: &'a str,
}

impl P<'_, '_> {
    fn word(&mut self, w: &str) -> bool {
        match &self.p.peek_token().token {
            Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w) => {
                self.p.next_token();
                true
            }
            _ => false,
        }
    }

    fn words(&mut self, ws: &[&str]) -> bool {
        for (matched, w) in ws.iter().enumerate() {
            if !self.word(w) {
                // prev_token steps back over one non-whitespace token, as next_token advanced.
                for _ in 0..matched {
                    self.p.prev_token();
                }
                return false;
            }
        }
        true
    }

    fn expect_word(&mut self, w: &str) -> Result<(), ParseError> {
        if self.word(w) { Ok(()) } else { self.unexpected(w) }
    }

    fn unexpected<T>(&mut self, expected: &str) -> Result<T, ParseError> {
        let found = self.p.peek_token();
        Err(ParseError::Syntax(format!(
            "expected {expected}, found {}{}",
            describe(&found.token),
            at(&found)
        )))
    }

    fn expect(&mut self, t: Token) -> Result<(), ParseError> {
        if self.p.peek_token().token == t {
            self.p.next_token();
            Ok(())
        } else {
            self.unexpected(&t.to_string())
        }
    }

    fn end(&mut self) -> Result<(), ParseError> {
        while self.p.peek_token().token == Token::SemiColon {
            self.p.next_token();
        }
        if self.p.peek_token().token != Token::EOF {
            return self.unexpected("end of statement");
        }
        Ok(())
    }

    fn statement(&mut self) -> Result<DtStatement, ParseError> {
        if self.word("CREATE") {
            let or_replace = self.words(&["OR", "REPLACE"]);
            self.expect_word("DYNAMIC")?;
            self.expect_word("TABLE")?;
            return self.create(or_replace).map(DtStatement::Create);
        }
        if self.words(&["ALTER", "DYNAMIC", "TABLE"]) {
            let name = self.table_name()?;
            let action = self.alter_action()?;
            return Ok(DtStatement::Alter { name, action });
        }
        if self.words(&["REFRESH", "DYNAMIC", "TABLE"]) {
            let name = self.table_name()?;
            let partition = self.partition_spec()?;
            return Ok(DtStatement::Refresh { name, partition });
        }
        if self.words(&["DROP", "DYNAMIC", "TABLE"]) {
            let if_exists = self.words(&["IF", "EXISTS"]);
            let name = self.table_name()?;
            return Ok(DtStatement::Drop { if_exists, name });
        }
        if self.words(&["SHOW", "DYNAMIC", "TABLES"]) {
            let like = if self.word("LIKE") { Some(self.string()?) } else { None };
            return Ok(DtStatement::Show { like });
        }
        if self.words(&["SHOW", "CREATE", "DYNAMIC", "TABLE"]) {
            return Ok(DtStatement::ShowCreate { name: self.table_name()? });
        }
        if self.words(&["DESCRIBE", "DYNAMIC", "TABLE"]) || self.words(&["DESC", "DYNAMIC", "TABLE"]) {
            return Ok(DtStatement::Describe { name: self.table_name()? });
        }
        self.unexpected("a DYNAMIC TABLE statement")
    }

    fn create(&mut self, or_replace: bool) -> Result<CreateDt, ParseError> {
        let if_not_exists = self.words(&["IF", "NOT", "EXISTS"]);
        let name = self.table_name()?;
        let columns = if self.p.peek_token().token == Token::LParen {
            Some(self.parenthesized_verbatim()?)
        } else {
            None
        };
        let (mut comment, mut partitioned_by, mut options, mut freshness, mut mode) = (None, None, None, None, None);
        loop {
            if self.word("COMMENT") {
                once(&mut comment, "COMMENT", self.string()?)?;
            } else if self.words(&["PARTITIONED", "BY"]) {
                self.expect(Token::LParen)?;
                let mut cols = Vec::new();
                loop {
                    cols.push(resolve(&self.p.parse_identifier()?));
                    if self.p.peek_token().token == Token::Comma {
                        self.p.next_token();
                    } else {
                        break;
                    }
                }
                self.expect(Token::RParen)?;
                once(&mut partitioned_by, "PARTITIONED BY", cols)?;
            } else if self.word("WITH") {
                let o = self.options()?;
                once(&mut options, "WITH", o)?;
            } else if self.word("FRESHNESS") {
                self.expect(Token::Eq)?;
                let f = self.interval()?;
                once(&mut freshness, "FRESHNESS", f)?;
            } else if self.word("REFRESH_MODE") {
                self.expect(Token::Eq)?;
                let m = if self.word("CONTINUOUS") {
                    LogicalMode::Continuous
                } else if self.word("FULL") {
                    LogicalMode::Full
                } else {
                    return self.unexpected("CONTINUOUS or FULL");
                };
                once(&mut mode, "REFRESH_MODE", m)?;
            } else if self.word("AS") {
                let query = self.rest()?;
                return Ok(CreateDt {
                    if_not_exists,
                    or_replace,
                    name,
                    columns,
                    comment,
                    partitioned_by: partitioned_by.unwrap_or_default(),
                    options: options.unwrap_or_default(),
                    freshness,
                    mode: mode.unwrap_or(LogicalMode::Automatic),
                    query,
                });
            } else {
                return self.unexpected("COMMENT, PARTITIONED BY, WITH, FRESHNESS, REFRESH_MODE or AS");
            }
        }
    }

    fn alter_action(&mut self) -> Result<AlterAction, ParseError> {
        if self.word("SUSPEND") {
            Ok(AlterAction::Suspend)
        } else if self.word("RESUME") {
            let options = if self.word("WITH") { self.options()? } else { Vec::new() };
            Ok(AlterAction::Resume { options })
        } else if self.word("REFRESH") {
            Ok(AlterAction::Refresh {
                partition: self.partition_spec()?,
            })
        } else if self.word("AS") {
            Ok(AlterAction::AsQuery { query: self.rest()? })
        } else if self.words(&["SET", "FRESHNESS"]) {
            self.expect(Token::Eq)?;
            Ok(AlterAction::SetFreshness(self.interval()?))
        } else if self.word("SET") {
            Ok(AlterAction::Set(self.options()?))
        } else if self.word("RESET") {
            self.expect(Token::LParen)?;
            let mut keys = Vec::new();
            loop {
                keys.push(self.option_key()?);
                if self.p.peek_token().token == Token::Comma {
                    self.p.next_token();
                } else {
                    break;
                }
            }
            self.expect(Token::RParen)?;
            Ok(AlterAction::Reset(keys))
        } else {
            self.unexpected("SUSPEND, RESUME, REFRESH, AS, SET or RESET")
        }
    }

    fn table_name(&mut self) -> Result<TableName, ParseError> {
        let name = self.p.parse_object_name(false)?;
        let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident()).map(resolve).collect();
        match parts.as_slice() {
            [n] => Ok(TableName {
                schema: None,
                name: n.clone(),
            }),
            [s, n] => Ok(TableName {
                schema: Some(s.clone()),
                name: n.clone(),
            }),
            _ => Err(ParseError::Syntax(format!(
                "improper dynamic table name (too many dotted names): {name}"
            ))),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.p.peek_token().token {
            Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => {
                self.p.next_token();
                Ok(s)
            }
            _ => self.unexpected("a string literal"),
        }
    }

    /// An option key: a quoted string (Flink style, `'engine'`) or a dotted identifier.
    fn option_key(&mut self) -> Result<String, ParseError> {
        if let Ok(s) = self.string() {
            return Ok(s);
        }
        let name = self.p.parse_object_name(false)?;
        Ok(name
            .0
            .iter()
            .filter_map(|p| p.as_ident())
            .map(|i| i.value.clone())
            .collect::<Vec<_>>()
            .join("."))
    }

    /// `(key = value, ...)`; values are strings, numbers or bare words (TRUE, ...).
    fn options(&mut self) -> Result<Options, ParseError> {
        self.expect(Token::LParen)?;
        let mut out: Options = Vec::new();
        loop {
            let key = self.option_key()?;
            self.expect(Token::Eq)?;
            let value = match self.p.peek_token().token {
                Token::Number(n, _) => {
                    self.p.next_token();
                    n
                }
                Token::Word(w) => {
                    self.p.next_token();
                    w.value
                }
                _ => self.string()?,
            };
            if out.iter().any(|(k, _)| *k == key) {
                return Err(ParseError::Syntax(format!("option '{key}' given more than once")));
            }
            out.push((key, value));
            if self.p.peek_token().token == Token::Comma {
                self.p.next_token();
            } else {
                break;
            }
        }
        self.expect(Token::RParen)?;
        Ok(out)
    }

    fn partition_spec(&mut self) -> Result<Options, ParseError> {
        if self.word("PARTITION") { self.options() } else { Ok(Vec::new()) }
    }

    /// `INTERVAL '3' MINUTE`, also `INTERVAL '3 minutes'`.
    fn interval(&mut self) -> Result<Freshness, ParseError> {
        self.expect_word("INTERVAL")?;
        let literal = match self.p.peek_token().token {
            Token::Number(n, _) => {
                self.p.next_token();
                n
            }
            Token::Minus => {
                return Err(RuleError::Negative.into());
            }
            _ => self.string()?,
        };
        let unit = match self.p.peek_token().token {
            Token::Word(w) if w.quote_style.is_none() && w.keyword != sqlparser::keywords::Keyword::AS => {
                self.p.next_token();
                Some(w.value)
            }
            _ => None,
        };
        match unit {
            Some(unit) => Ok(parse_freshness(&literal, &unit)?),
            None => {
                let mut parts = literal.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(n), Some(unit), None) => Ok(parse_freshness(n, unit)?),
                    _ => Err(RuleError::BadUnit.into()),
                }
            }
        }
    }

    /// The balanced parenthesized text starting at the current `(`, without the outer parentheses.
    fn parenthesized_verbatim(&mut self) -> Result<String, ParseError> {
        let open = self.p.next_token();
        let mut depth = 1;
        loop {
            let t = self.p.next_token();
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        let a = offset(self.sql, open.span.start) + 1;
                        let b = offset(self.sql, t.span.start);
                        return Ok(self.sql[a..b].trim().to_string());
                    }
                }
                Token::EOF => return Err(ParseError::Syntax("unterminated column list: expected )".into())),
                _ => {}
            }
        }
    }

    /// Everything from the current token to the end, verbatim (the query of AS).
    fn rest(&mut self) -> Result<String, ParseError> {
        let start = self.p.peek_token();
        if start.token == Token::EOF {
            return self.unexpected("a query");
        }
        let text = self.sql[offset(self.sql, start.span.start)..].trim_end();
        let text = text.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        while self.p.peek_token().token != Token::EOF {
            self.p.next_token();
        }
        Ok(text.to_string())
    }
}

fn once<T>(slot: &mut Option<T>, what: &'static str, v: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::Duplicate(what));
    }
    *slot = Some(v);
    Ok(())
}

/// PostgreSQL's identifier folding: unquoted names are lower-cased, quoted ones kept.
fn resolve(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The byte offset of a 1-based (line, column-in-chars) location.
fn offset(sql: &str, loc: Location) -> usize {
    let mut line = 1;
    let mut col = 1;
    for (i, c) in sql.char_indices() {
        if line == loc.line && col == loc.column {
            return i;
        }
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    sql.len()
}

fn describe(t: &Token) -> String {
    match t {
        Token::EOF => "end of input".to_string(),
        t => format!("\"{t}\""),
    }
}

fn at(t: &TokenWithSpan) -> String {
    if t.span.start.line == 0 {
        String::new()
    } else {
        format!(" at line {}, column {}", t.span.start.line, t.span.start.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rules::Unit;

    fn name(n: &str) -> TableName {
        TableName {
            schema: None,
            name: n.into(),
        }
    }

    #[test]
    fn create_full_form() {
        let sql = "CREATE DYNAMIC TABLE IF NOT EXISTS Sales.\"Daily\" (day date, total numeric, CONSTRAINT pk PRIMARY KEY (day))
            COMMENT 'revenue per day' PARTITIONED BY (day) WITH ('engine' = 'postgres', 'partition.fields.day.date-formatter' = 'yyyy-MM-dd', fill.rate = 2)
            FRESHNESS = INTERVAL '3' MINUTE REFRESH_MODE = FULL
            AS SELECT day, sum(amount) FROM orders GROUP BY day;";
        let DtStatement::Create(c) = parse(sql).unwrap() else { panic!() };
        assert!(c.if_not_exists && !c.or_replace);
        assert_eq!(
            c.name,
            TableName {
                schema: Some("sales".into()),
                name: "Daily".into()
            }
        );
        assert_eq!(
            c.columns.as_deref(),
            Some("day date, total numeric, CONSTRAINT pk PRIMARY KEY (day)")
        );
        assert_eq!(c.comment.as_deref(), Some("revenue per day"));
        assert_eq!(c.partitioned_by, ["day"]);
        assert_eq!(
            c.options,
            [
                ("engine".into(), "postgres".into()),
                ("partition.fields.day.date-formatter".into(), "yyyy-MM-dd".into()),
                ("fill.rate".into(), "2".into())
            ]
        );
        assert_eq!(c.freshness, Some(Freshness { n: 3, unit: Unit::Minute }));
        assert_eq!(c.mode, LogicalMode::Full);
        assert_eq!(c.query, "SELECT day, sum(amount) FROM orders GROUP BY day");
    }

    #[test]
    fn create_minimal_and_variants() {
        let DtStatement::Create(c) = parse("create dynamic table t as select 1").unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.name, c.freshness, c.mode, c.query.as_str()),
            (name("t"), None, LogicalMode::Automatic, "select 1")
        );
        let DtStatement::Create(c) =
            parse("CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '2 hours' AS\n  WITH x AS (SELECT 1) SELECT * FROM x").unwrap()
        else {
            panic!()
        };
        assert_eq!(c.freshness, Some(Freshness { n: 2, unit: Unit::Hour }));
        assert_eq!(c.query, "WITH x AS (SELECT 1) SELECT * FROM x");
        let DtStatement::Create(c) = parse("CREATE OR REPLACE DYNAMIC TABLE t AS SELECT 'é;' AS \"x y\"").unwrap() else {
            panic!()
        };
        assert!(c.or_replace);
        assert_eq!(c.query, "SELECT 'é;' AS \"x y\"");
    }

    #[test]
    fn other_statements() {
        let cases: Vec<(&str, DtStatement)> = vec![
            (
                "ALTER DYNAMIC TABLE t SUSPEND",
                DtStatement::Alter {
                    name: name("t"),
                    action: AlterAction::Suspend,
                },
            ),
            (
                "alter dynamic table t resume with ('sink.parallelism' = '2')",
                DtStatement::Alter {
                    name: name("t"),
                    action: AlterAction::Resume {
                        options: vec![("sink.parallelism".into(), "2".into())],
                    },
                },
            ),
            (
                "ALTER DYNAMIC TABLE t RESUME",
                DtStatement::Alter {
                    name: name("t"),
                    action: AlterAction::Resume { options: vec![] },
                },
            ),
            (
                "ALTER DYNAMIC TABLE t REFRESH PARTITION (ds = '2024-01-01')",
                DtStatement::Alter {
                    name: name("t"),
                    action: AlterAction::Refresh {
                        partition: vec![("ds".into(), "2024-01-01".into())],
                    },
                },
            ),
            (
                "ALTER DYNAMIC TABLE t AS SELECT a, b FROM s",
                DtStatement::Alter {
                    name: name("t"),
                    action: AlterAction::AsQuery {
                        query: "SELECT a, b FROM s".into(),
                    },
                },
            ),
            (
                "ALTER DYNAMIC TABLE t SET FRESHNESS = INTERVAL '1' DAY",
                DtStatement::Alter {
                    name: name("t"),
                    action: AlterAction::SetFreshness(Freshness { n: 1, unit: Unit::Day }),
                },
            ),
            (
                "ALTER DYNAMIC TABLE t SET ('scheduler' = 'airflow')",
                DtStatement::Alter {
                    name: name("t"),
                    action: AlterAction::Set(vec![("scheduler".into(), "airflow".into())]),
                },
            ),
            (
                "ALTER DYNAMIC TABLE t RESET ('scheduler', foo.bar)",
                DtStatement::Alter {
                    name: name("t"),
                    action: AlterAction::Reset(vec!["scheduler".into(), "foo.bar".into()]),
                },
            ),
            (
                "REFRESH DYNAMIC TABLE s.t",
                DtStatement::Refresh {
                    name: TableName {
                        schema: Some("s".into()),
                        name: "t".into(),
                    },
                    partition: vec![],
                },
            ),
            (
                "DROP DYNAMIC TABLE IF EXISTS t;",
                DtStatement::Drop {
                    if_exists: true,
                    name: name("t"),
                },
            ),
            (
                "DROP DYNAMIC TABLE T",
                DtStatement::Drop {
                    if_exists: false,
                    name: name("t"),
                },
            ),
            ("SHOW DYNAMIC TABLES", DtStatement::Show { like: None }),
            (
                "SHOW DYNAMIC TABLES LIKE 'daily%'",
                DtStatement::Show {
                    like: Some("daily%".into()),
                },
            ),
            ("SHOW CREATE DYNAMIC TABLE t", DtStatement::ShowCreate { name: name("t") }),
            ("DESCRIBE DYNAMIC TABLE t", DtStatement::Describe { name: name("t") }),
            ("DESC DYNAMIC TABLE t", DtStatement::Describe { name: name("t") }),
        ];
        for (sql, want) in cases {
            assert_eq!(parse(sql), Ok(want), "{sql}");
        }
    }

    #[test]
    fn errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '3' MONTH AS SELECT 1",
                "22023",
                "only support SECOND, MINUTE, HOUR, DAY",
            ),
            (
                "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '-3' MINUTE AS SELECT 1",
                "22023",
                "negative",
            ),
            (
                "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL -3 MINUTE AS SELECT 1",
                "22023",
                "negative",
            ),
            (
                "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '0' MINUTE AS SELECT 1",
                "22023",
                "positive whole number",
            ),
            ("CREATE DYNAMIC TABLE t FRESHNESS = 3 AS SELECT 1", "42601", "expected INTERVAL"),
            (
                "CREATE DYNAMIC TABLE t",
                "42601",
                "expected COMMENT, PARTITIONED BY, WITH, FRESHNESS, REFRESH_MODE or AS, found end of input",
            ),
            ("CREATE DYNAMIC TABLE t AS", "42601", "expected a query"),
            (
                "CREATE DYNAMIC TABLE t REFRESH_MODE = SOMETIMES AS SELECT 1",
                "42601",
                "expected CONTINUOUS or FULL",
            ),
            (
                "CREATE DYNAMIC TABLE t COMMENT 'a' COMMENT 'b' AS SELECT 1",
                "42601",
                "COMMENT given more than once",
            ),
            (
                "CREATE DYNAMIC TABLE t WITH ('a' = '1', 'a' = '2') AS SELECT 1",
                "42601",
                "option 'a' given more than once",
            ),
            ("CREATE DYNAMIC TABLE t (a int AS SELECT 1", "42601", "unterminated column list"),
            (
                "ALTER DYNAMIC TABLE t EXPLODE",
                "42601",
                "expected SUSPEND, RESUME, REFRESH, AS, SET or RESET",
            ),
            ("DROP DYNAMIC TABLE a.b.c.d", "42601", "too many dotted names"),
            ("SHOW DYNAMIC TABLES LIKE x", "42601", "expected a string literal"),
            (
                "DROP DYNAMIC TABLE t CASCADE",
                "42601",
                "expected end of statement, found \"CASCADE\" at line 1, column 22",
            ),
        ];
        for (sql, state, text) in cases {
            let e = parse(sql).expect_err(sql);
            assert_eq!(e.sqlstate(), *state, "{sql}: {e}");
            assert!(e.to_string().contains(text), "{sql}: {e}");
        }
    }

    #[test]
    fn offsets_count_characters() {
        let sql = "é\nab";
        assert_eq!(offset(sql, Location { line: 2, column: 2 }), 4);
        assert_eq!(offset(sql, Location { line: 1, column: 2 }), 2);
    }
}
