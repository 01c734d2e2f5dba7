//! The dynamic-table statements as sqllogictest scripts (`tests/slt/*.slt`, one per statement
//! kind), each run twice through the gateway: once in the simple query protocol and once in the
//! extended protocol (Parse / Bind / Describe / Execute / Sync, text results), each time in a
//! database of its own as a role that owns it (not a superuser). Errors are pinned by SQLSTATE.
//!
//! The format is sqllogictest's, with SQLSTATEs for errors:
//!
//! ```text
//! # a comment
//! statement ok
//! CREATE TABLE t (v int)
//!
//! statement error 42P01 [text the message must contain]
//! DROP DYNAMIC TABLE nope
//!
//! query IT [rowsort | contains]
//! SELECT v, 'x' FROM t
//! ----
//! 1 x
//! ```
//!
//! A record's SQL runs to the first blank line (or `----`). Query results are one line per row,
//! values separated by single spaces, NULL as `NULL` and the empty string as `(empty)`;
//! `rowsort` sorts the rows before comparing, `contains` only asks that the expected rows be
//! among those returned (for output that also holds timestamps). Run one file with
//! `SLT=create cargo test --test slt`.

mod common;

use std::path::{Path, PathBuf};

use common::raw::*;
use common::*;
use dyngate::wire::codec::{Message, error_fields};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Simple,
    Extended,
}

#[derive(Debug)]
enum Expect {
    Ok,
    Error { sqlstate: String, contains: Option<String> },
    Rows { columns: usize, sort: Sort, rows: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    None,
    Rows,
    Contains,
}

#[derive(Debug)]
struct Record {
    line: usize,
    sql: String,
    expect: Expect,
}

fn parse_file(text: &str) -> Result<Vec<Record>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let head = lines[i].trim();
        if head.is_empty() || head.starts_with('#') {
            i += 1;
            continue;
        }
        let line = i + 1;
        let words: Vec<&str> = head.split_whitespace().collect();
        i += 1;
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        if sql.is_empty() {
            return Err(format!("line {line}: a record needs SQL"));
        }
        let expect = match words.as_slice() {
            ["statement", "ok"] => Expect::Ok,
            ["statement" | "query", "error", code, rest @ ..] => Expect::Error {
                sqlstate: code.to_string(),
                contains: (!rest.is_empty()).then(|| rest.join(" ")),
            },
            ["query", types, opts @ ..] => {
                let sort = match opts {
                    [] => Sort::None,
                    ["rowsort"] => Sort::Rows,
                    ["contains"] => Sort::Contains,
                    _ => return Err(format!("line {line}: unknown query options {opts:?}")),
                };
                if lines.get(i).map(|l| l.trim()) != Some("----") {
                    return Err(format!("line {line}: a query needs ---- and its results"));
                }
                i += 1;
                let mut rows = Vec::new();
                while i < lines.len() && !lines[i].trim().is_empty() {
                    rows.push(lines[i].trim_end().to_string());
                    i += 1;
                }
                Expect::Rows {
                    columns: types.len(),
                    sort,
                    rows,
                }
            }
            _ => return Err(format!("line {line}: cannot read record header {head:?}")),
        };
        out.push(Record {
            line,
            sql: sql.join("\n"),
            expect,
        });
    }
    Ok(out)
}

/// What one statement produced.
#[derive(Debug)]
enum Outcome {
    Rows { columns: usize, rows: Vec<String> },
    Error { sqlstate: String, message: String },
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

async fn run(raw: &mut Raw, sql: &str, mode: Mode) -> Outcome {
    let replies = match mode {
        Mode::Simple => raw.query(sql).await,
        Mode::Extended => {
            for m in [
                parse("", sql, &[]),
                bind_text("", "", &[]),
                describe(b'P', ""),
                execute("", 0),
                sync(),
            ] {
                raw.send(&m).await;
            }
            raw.until_ready().await
        }
    };
    let mut rows = Vec::new();
    let mut columns = 0;
    for m in &replies {
        match m.tag() {
            b'E' => {
                let f = error_fields(m);
                let get = |t: u8| f.iter().find(|(k, _)| *k == t).map(|(_, v)| v.clone()).unwrap_or_default();
                return Outcome::Error {
                    sqlstate: get(b'C'),
                    message: get(b'M'),
                };
            }
            b'T' => columns = u16::from_be_bytes([m.body()[0], m.body()[1]]) as usize,
            b'D' => rows.push(data_row(m).join(" ")),
            _ => {}
        }
    }
    Outcome::Rows { columns, rows }
}

fn check(r: &Record, got: Outcome) -> Result<(), String> {
    match (&r.expect, got) {
        (Expect::Ok, Outcome::Rows { .. }) => Ok(()),
        (Expect::Error { sqlstate, contains }, Outcome::Error { sqlstate: code, message }) => {
            if &code != sqlstate {
                return Err(format!("expected SQLSTATE {sqlstate}, got {code}: {message}"));
            }
            match contains {
                Some(text) if !message.contains(text.as_str()) => Err(format!("expected a message containing {text:?}, got {message:?}")),
                _ => Ok(()),
            }
        }
        (Expect::Rows { columns, sort, rows }, Outcome::Rows { columns: n, rows: mut got }) => {
            if n != *columns {
                return Err(format!("expected {columns} columns, got {n}:\n{}", got.join("\n")));
            }
            let mut want = rows.clone();
            match sort {
                Sort::None => {}
                Sort::Rows => {
                    want.sort();
                    got.sort();
                }
                Sort::Contains => {
                    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
                    return if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("rows missing: {missing:?}\ngot:\n{}", got.join("\n")))
                    };
                }
            }
            if want == got {
                Ok(())
            } else {
                Err(format!("expected:\n{}\ngot:\n{}", want.join("\n"), got.join("\n")))
            }
        }
        (want, got) => Err(format!("expected {want:?}, got {got:?}")),
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

async fn run_file(pg: &Pg, path: &Path, mode: Mode) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let records = parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let db = pg.fresh_db().await;
    let role = pg.fresh_trusted_role("").await;
    pg.admin()
        .await
        .batch_execute(&format!("ALTER DATABASE {db} OWNER TO {role}"))
        .await
        .unwrap();
    let gw = Dyngate::for_db(pg, &db, &[]);
    let mut raw = Raw::login(&gw.addr(), &role, &db).await;
    let mut failures = Vec::new();
    for r in &records {
        let got = run(&mut raw, &r.sql, mode).await;
        if let Err(e) = check(r, got) {
            failures.push(format!("{}:{} ({mode:?})\n{}\n{e}", path.display(), r.line, r.sql));
        }
    }
    failures
}

#[tokio::test]
async fn statement_scripts_in_both_protocols() {
    let pg = pg();
    let mut failures = Vec::new();
    for path in files() {
        for mode in [Mode::Simple, Mode::Extended] {
            failures.extend(run_file(&pg, &path, mode).await);
        }
    }
    assert!(
        failures.is_empty(),
        "{} record(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_script_format() {
    let recs = parse_file(
        "# c\nstatement ok\nSELECT 1\n\nstatement error 42P01 does not exist\nDROP x\n\nquery IT rowsort\nSELECT\n 1\n----\n1 a\n2 b\n",
    )
    .unwrap();
    assert_eq!(recs.len(), 3);
    assert!(matches!(recs[0].expect, Expect::Ok));
    assert!(matches!(&recs[1].expect, Expect::Error { sqlstate, contains: Some(c) } if sqlstate == "42P01" && c == "does not exist"));
    assert_eq!(recs[2].sql, "SELECT\n 1");
    assert!(matches!(&recs[2].expect, Expect::Rows { columns: 2, sort: Sort::Rows, rows } if rows.len() == 2));
    assert!(parse_file("query I\nSELECT 1\n").is_err());
    assert!(parse_file("statement maybe\nSELECT 1\n").is_err());
}
