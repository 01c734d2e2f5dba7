//! The dynamic-table statements as sqllogictest scripts (`tests/slt/*.slt`, one per statement
//! kind), run by the `sqllogictest` crate, each twice through the gateway: once in the simple
//! query protocol and once in the extended protocol (Parse / Bind / Describe / Execute / Sync,
//! text results), each time in a database of its own as a role that owns it (not a superuser).
//!
//! The scripts are in sqllogictest's standard format. Every expected error pins its SQLSTATE:
//! `statement error (42P01)`, or, where the message matters too, a regular expression over the
//! error as this runner prints it, `<SQLSTATE>: <message>` (as psql does with VERBOSITY verbose),
//! anchored at its start:
//!
//! ```text
//! # a comment
//! statement ok
//! CREATE TABLE t (v int)
//!
//! statement error (42P01)
//! DROP DYNAMIC TABLE nope
//!
//! statement error ^42P01: .*text the message must contain
//! DROP DYNAMIC TABLE nope
//!
//! query IT rowsort
//! SELECT v, 'x' FROM t
//! ----
//! 1 x
//! ```
//!
//! A record's SQL runs to the first blank line (or `----`). Query results are one line per row,
//! values in PostgreSQL's text form separated by single spaces, NULL as `NULL`, the empty string
//! as `(empty)` and a newline in a value as `\n`, compared exactly (white space is not folded);
//! the type string counts the columns (`T`, `I` and the others are not told apart).
//! `rowsort` sorts the rows before comparing (write them sorted); a `<slt:ignore>` line stands
//! for one or more rows not compared (output that also holds timestamps). Every record runs, and
//! the failures of all files are reported together. Run one file with
//! `SLT=create cargo test --test slt`.

mod common;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::raw::*;
use common::*;
use dyngate::wire::codec::{Message, error_fields};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, ExpectedError, QueryExpect, Record, Runner, StatementExpect};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Simple,
    Extended,
}

/// A session through the gateway that runs each record's SQL in one protocol.
struct Session {
    raw: Raw,
    protocol: Protocol,
}

/// An ErrorResponse: its SQLSTATE and primary message.
#[derive(Debug)]
struct SqlError {
    sqlstate: String,
    message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.sqlstate, self.message)
    }
}

impl std::error::Error for SqlError {}

impl SqlError {
    fn from_response(m: &Message) -> SqlError {
        let fields = error_fields(m);
        let get = |t: u8| fields.iter().find(|(k, _)| *k == t).map(|(_, v)| v.clone()).unwrap_or_default();
        SqlError {
            sqlstate: get(b'C'),
            message: get(b'M'),
        }
    }
}

fn render(v: Option<&[u8]>) -> String {
    match v {
        None => "NULL".into(),
        Some([]) => "(empty)".into(),
        Some(b) => String::from_utf8_lossy(b).replace('\n', "\\n"),
    }
}

fn data_row(m: &Message) -> Vec<String> {
    let b = m.body();
    let n = u16::from_be_bytes([b[0], b[1]]) as usize;
    let mut p = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
        p += 4;
        if len < 0 {
            out.push(render(None));
        } else {
            out.push(render(Some(&b[p..p + len as usize])));
            p += len as usize;
        }
    }
    out
}

#[async_trait::async_trait]
impl AsyncDB for Session {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let replies = match self.protocol {
            Protocol::Simple => self.raw.query(sql).await,
            Protocol::Extended => {
                for m in [
                    parse("", sql, &[]),
                    bind_text("", "", &[]),
                    describe(b'P', ""),
                    execute("", 0),
                    sync(),
                ] {
                    self.raw.send(&m).await;
                }
                self.raw.until_ready().await
            }
        };
        let mut columns = None;
        let mut rows = Vec::new();
        for m in &replies {
            match m.tag() {
                b'E' => return Err(SqlError::from_response(m)),
                b'T' => columns = Some(u16::from_be_bytes([m.body()[0], m.body()[1]]) as usize),
                b'D' => rows.push(data_row(m)),
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(0),
        })
    }

    async fn shutdown(&mut self) {}

    fn error_sql_state(e: &SqlError) -> Option<String> {
        Some(e.sqlstate.clone())
    }

    async fn sleep(d: Duration) {
        tokio::time::sleep(d).await
    }
}

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let only = std::env::var("SLT").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| only.as_deref().is_none_or(|o| p.file_stem().is_some_and(|s| s == o)))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// Runs every record of one script in a database of its own, as a role that owns it; returns the
/// failures.
async fn run_file(pg: &Pg, path: &Path, protocol: Protocol) -> Vec<String> {
    let records = sqllogictest::parse_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let db = pg.fresh_db().await;
    let role = pg.fresh_trusted_role("").await;
    pg.admin()
        .await
        .batch_execute(&format!("ALTER DATABASE {db} OWNER TO {role}"))
        .await
        .unwrap();
    let gw = Dyngate::for_db(pg, &db, &[]);
    let addr = gw.addr();
    let mut runner = Runner::new(move || {
        let (addr, role, db) = (addr.clone(), role.clone(), db.clone());
        async move {
            Ok(Session {
                raw: Raw::login(&addr, &role, &db).await,
                protocol,
            })
        }
    });
    // Values exactly as sent; of the types, only their number.
    runner.with_normalizer(|v| v.clone());
    runner.with_column_validator(|got, want| got.len() == want.len());
    let mut failures = Vec::new();
    for record in records {
        if let Err(e) = runner.run_async(record).await {
            failures.push(format!("({protocol:?}) {}", e.display(false)));
        }
    }
    failures
}

#[tokio::test]
async fn statement_scripts_in_both_protocols() {
    let pg = pg();
    let mut failures = Vec::new();
    for path in files() {
        for protocol in [Protocol::Simple, Protocol::Extended] {
            failures.extend(run_file(&pg, &path, protocol).await);
        }
    }
    assert!(
        failures.is_empty(),
        "{} record(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Every expected error pins a SQLSTATE: `(<SQLSTATE>)`, or a pattern that starts with
/// `^<SQLSTATE>: `.
#[test]
fn every_expected_error_pins_a_sqlstate() {
    fn pins_a_sqlstate(e: &ExpectedError) -> bool {
        match e {
            ExpectedError::SqlState(_) => true,
            ExpectedError::Inline(pattern) => {
                let p = pattern.as_str().as_bytes();
                p.len() > 8 && p[0] == b'^' && p[1..6].iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) && &p[6..8] == b": "
            }
            _ => false,
        }
    }
    for path in files() {
        for record in sqllogictest::parse_file::<DefaultColumnType>(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
            let (loc, expected) = match &record {
                Record::Statement {
                    loc,
                    expected: StatementExpect::Error(e),
                    ..
                }
                | Record::Query {
                    loc,
                    expected: QueryExpect::Error(e),
                    ..
                } => (loc, e),
                _ => continue,
            };
            assert!(pins_a_sqlstate(expected), "{loc}: the error {expected} pins no SQLSTATE");
        }
    }
}
