//! Passthrough fidelity: SQL cases run directly against PostgreSQL and through the gateway must give
//! identical rows, column types and command tags, in the simple and the extended query protocol.
//!
//! A small raw protocol client (below) logs in as a trust-authenticated role and records every
//! backend message of each exchange. Each SQL case file under `tests/sql/passthrough/` runs three
//! times (simple protocol; extended protocol with text results; extended with binary results),
//! each time on two fresh databases with the same statements: one session straight to PostgreSQL,
//! one through a gateway. After every statement the two message streams must be equal message by
//! message: tags in order, RowDescription (names, type OIDs, modifiers, formats), DataRow bytes,
//! CommandComplete tags, every ErrorResponse and NoticeResponse field, ParameterStatus, COPY
//! messages and ReadyForQuery status. Only what legitimately differs between two databases or
//! sessions is normalised: the table OID and column attnum of RowDescription fields, and the
//! BackendKeyData the gateway substitutes. Everything else that could differ (OIDs of user-defined
//! types, backend PIDs, clocks, database and role names) is kept out of the cases instead.
//!
//! Case file format: statements are separated by blank lines (so statements may contain `;` and
//! dollar quotes freely). A block of only `--` lines is a comment. Lines starting with `--!` are
//! directives for the statement of their block:
//!   `--! simple-only`  run in the simple protocol only (the statement sets up state that a
//!                      multi-statement string would not set up in the extended protocol);
//!   `--! verbatim`     send the block even though it consists of comments only;
//!   `--! copy-in`      the block is a `COPY ... FROM STDIN` statement (up to the first line ending
//!                      in `;`), then data lines, then `\.` (send CopyDone) or `\fail MESSAGE`
//!                      (send CopyFail). The raw client sends the data in uneven CopyData chunks.
//!
//! Protocol features that a statement list cannot express (named statements reused with different
//! parameters, row limits and PortalSuspended, Describe statement, pipelining, Close, FunctionCall,
//! COPY FROM STDIN chunking and CopyFail, large client messages) have their own tests at the end,
//! compared the same way.
//!
//! On a mismatch the test prints the case file and line, the statement, the mode and both streams
//! (a window around the first difference when they are long), plus the gateway's log tail. To see
//! what every case statement produces, run with `PASSTHROUGH_SHOW=1` and `-- --nocapture`.

mod common;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::raw::*;
use common::*;
use dyngate::wire::codec::{Message, error_fields, split_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::ReadHalf;

/// How long one exchange may wait for the backend: generous, since a hung relay should fail the
/// test with the stream received so far rather than hang it, yet debug builds are slow.
const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The raw client.

/// Everything one exchange received, and why it stopped early if it did.
#[derive(Default)]
struct Stream {
    msgs: Vec<Message>,
    broken: Option<String>,
}

/// When an exchange is complete.
#[derive(Clone, Copy)]
enum Until {
    /// After this many ReadyForQuery messages.
    Ready(usize),
    /// After the first message with one of these tags.
    Tag(&'static [u8]),
}

struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    /// Connects and logs in (trust: no password exchange); returns the start-up messages.
    async fn connect(addr: &str, user: &str, db: &str) -> (RawConn, Stream) {
        let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        let mut conn = RawConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let mut body = BytesMut::new();
        body.put_u32(196608);
        for (k, v) in [("user", user), ("database", db)] {
            put_cstr(&mut body, k);
            put_cstr(&mut body, v);
        }
        body.put_u8(0);
        let mut packet = BytesMut::new();
        packet.put_u32(body.len() as u32 + 4);
        packet.put_slice(&body);
        let s = conn.exchange(&packet, Until::Ready(1)).await;
        if s.broken.is_some() || s.msgs.iter().any(|m| m.tag() == b'E') {
            panic!(
                "start-up at {addr} failed: {}\n{}",
                s.broken.as_deref().unwrap_or(""),
                render_all(&s)
            );
        }
        (conn, s)
    }

    /// Writes `out` while reading replies until `until`. Writing and reading run concurrently so
    /// that a long pipeline cannot deadlock against a large result.
    async fn exchange(&mut self, out: &[u8], until: Until) -> Stream {
        let (mut r, mut w) = self.stream.split();
        let write = async {
            match tokio::time::timeout(TIMEOUT, w.write_all(out)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("write failed: {e}")),
                Err(_) => Some(format!("write did not finish within {TIMEOUT:?}")),
            }
        };
        let (werr, mut s) = tokio::join!(write, read_until(&mut r, &mut self.buf, until));
        if let Some(e) = werr {
            s.broken.get_or_insert(e);
        }
        s
    }

    async fn send(&mut self, msgs: &[Message], until: Until) -> Stream {
        self.exchange(&concat(msgs), until).await
    }

    /// Sends Terminate and returns whatever still arrives before the server closes the socket
    /// (nothing, when every exchange consumed exactly its replies).
    async fn terminate(&mut self) -> Stream {
        let _ = self.stream.write_all(terminate().raw()).await;
        let mut s = Stream::default();
        loop {
            while let Ok(Some(m)) = split_message(&mut self.buf) {
                s.msgs.push(m);
            }
            match tokio::time::timeout(TIMEOUT, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => {
                    s.broken = Some("the server did not close after Terminate".into());
                    break;
                }
            }
        }
        if !self.buf.is_empty() {
            s.broken = Some(format!("{} trailing bytes", self.buf.len()));
        }
        s
    }
}

async fn read_until(r: &mut ReadHalf<'_>, buf: &mut BytesMut, until: Until) -> Stream {
    let mut s = Stream::default();
    let mut readies = 0;
    loop {
        loop {
            match split_message(buf) {
                Ok(Some(m)) => {
                    let tag = m.tag();
                    s.msgs.push(m);
                    let done = match until {
                        Until::Ready(n) => {
                            readies += (tag == b'Z') as usize;
                            readies >= n
                        }
                        Until::Tag(tags) => tags.contains(&tag),
                    };
                    if done {
                        return s;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    s.broken = Some(format!("framing error: {e}"));
                    return s;
                }
            }
        }
        match tokio::time::timeout(TIMEOUT, r.read_buf(buf)).await {
            Ok(Ok(0)) => s.broken = Some("the server closed the connection".into()),
            Ok(Err(e)) => s.broken = Some(format!("read failed: {e}")),
            Err(_) => s.broken = Some(format!("no reply within {TIMEOUT:?}")),
            Ok(Ok(_)) => continue,
        }
        return s;
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison and reporting.

/// A message as compared: raw bytes, except where two databases or sessions legitimately differ.
fn normalized(m: &Message) -> Cow<'_, [u8]> {
    match m.tag() {
        // The gateway hands out its own cancel key.
        b'K' => Cow::Owned(vec![b'K']),
        // The same table has a different OID in each database, and attnums are treated alike
        // (they say where a column comes from, not what it holds): both are reduced to whether
        // the column comes from a table at all.
        b'T' => match row_description(m) {
            Some(fields) => {
                let mut b = BytesMut::new();
                b.put_u8(b'T');
                b.put_i16(fields.len() as i16);
                for f in fields {
                    put_cstr(&mut b, &f.name);
                    b.put_u32((f.table != 0) as u32);
                    b.put_i16((f.attnum != 0) as i16);
                    b.put_u32(f.type_oid);
                    b.put_i16(f.typlen);
                    b.put_i32(f.typmod);
                    b.put_i16(f.format);
                }
                Cow::Owned(b.to_vec())
            }
            None => Cow::Borrowed(&m.raw()[..]),
        },
        _ => Cow::Borrowed(&m.raw()[..]),
    }
}

struct Field {
    name: String,
    table: u32,
    attnum: i16,
    type_oid: u32,
    typlen: i16,
    typmod: i32,
    format: i16,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Option<String> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Some(s)
    }
}

fn row_description(m: &Message) -> Option<Vec<Field>> {
    let mut r = Reader(m.body());
    let n = r.i16()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Field {
            name: r.cstr()?,
            table: r.i32()? as u32,
            attnum: r.i16()?,
            type_oid: r.i32()? as u32,
            typlen: r.i16()?,
            typmod: r.i32()?,
            format: r.i16()?,
        });
    }
    r.0.is_empty().then_some(out)
}

fn data_row(m: &Message) -> Option<Vec<Option<&[u8]>>> {
    let mut r = Reader(m.body());
    let n = r.i16()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = r.i32()?;
        out.push(if len < 0 { None } else { Some(r.take(len as usize)?) });
    }
    Some(out)
}

/// A value for humans: quoted text when it is printable UTF-8, hex otherwise; long values cut.
fn show_bytes(b: &[u8]) -> String {
    const MAX: usize = 160;
    let cut = &b[..b.len().min(MAX)];
    let more = if b.len() > MAX {
        format!("...({} bytes)", b.len())
    } else {
        String::new()
    };
    match std::str::from_utf8(cut) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            format!("{:?}{more}", s)
        }
        _ => {
            let mut h = String::from("\\x");
            for x in cut {
                let _ = write!(h, "{x:02x}");
            }
            h + &more
        }
    }
}

fn render(m: &Message) -> String {
    let body = m.body();
    let tag = m.tag() as char;
    match m.tag() {
        b'T' => match row_description(m) {
            Some(fields) => {
                let cols: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        format!(
                            "{}: type={} len={} mod={} fmt={} (table={} col={})",
                            f.name, f.type_oid, f.typlen, f.typmod, f.format, f.table, f.attnum
                        )
                    })
                    .collect();
                format!("T RowDescription [{}]", cols.join(", "))
            }
            None => format!("T malformed RowDescription {}", show_bytes(body)),
        },
        b'D' => match data_row(m) {
            Some(vals) => {
                let vals: Vec<String> = vals.iter().map(|v| v.map(show_bytes).unwrap_or_else(|| "NULL".into())).collect();
                format!("D DataRow [{}]", vals.join(", "))
            }
            None => format!("D malformed DataRow {}", show_bytes(body)),
        },
        b'E' | b'N' => {
            let fields: Vec<String> = error_fields(m).iter().map(|(t, v)| format!("{}={:?}", *t as char, v)).collect();
            let what = if m.tag() == b'E' { "ErrorResponse" } else { "NoticeResponse" };
            format!("{tag} {what} {{{}}}", fields.join(" "))
        }
        b'C' => format!("C CommandComplete {:?}", Reader(body).cstr().unwrap_or_default()),
        b'Z' => format!("Z ReadyForQuery {}", show_bytes(body)),
        b'S' => {
            let mut r = Reader(body);
            let (k, v) = (r.cstr().unwrap_or_default(), r.cstr().unwrap_or_default());
            format!("S ParameterStatus {k}={v:?}")
        }
        b'K' => "K BackendKeyData".into(),
        b'R' => format!("R Authentication {}", show_bytes(body)),
        b'1' => "1 ParseComplete".into(),
        b'2' => "2 BindComplete".into(),
        b'3' => "3 CloseComplete".into(),
        b'n' => "n NoData".into(),
        b'I' => "I EmptyQueryResponse".into(),
        b's' => "s PortalSuspended".into(),
        b'c' => "c CopyDone".into(),
        b't' => {
            let mut r = Reader(body);
            let n = r.i16().unwrap_or(0);
            let oids: Vec<String> = (0..n).filter_map(|_| r.i32().map(|o| (o as u32).to_string())).collect();
            format!("t ParameterDescription [{}]", oids.join(", "))
        }
        b'G' | b'H' | b'W' => format!("{tag} Copy{{In,Out,Both}}Response {}", show_bytes(body)),
        b'd' => format!("d CopyData {}", show_bytes(body)),
        b'V' => format!("V FunctionCallResponse {}", show_bytes(body)),
        _ => format!("{tag} {}", show_bytes(body)),
    }
}

fn render_all(s: &Stream) -> String {
    render_window(s, 0, s.msgs.len())
}

fn render_window(s: &Stream, from: usize, to: usize) -> String {
    let mut out = String::new();
    if from > 0 {
        let _ = writeln!(out, "    ... {from} earlier messages");
    }
    for (i, m) in s.msgs.iter().enumerate().take(to).skip(from) {
        let _ = writeln!(out, "    {i:>6} {}", render(m));
    }
    if to < s.msgs.len() {
        let _ = writeln!(out, "    ... {} later messages", s.msgs.len() - to);
    }
    if let Some(b) = &s.broken {
        let _ = writeln!(out, "    !! {b}");
    }
    out
}

/// `None` when the two streams are equal, else a report with both.
fn compare(direct: &Stream, gateway: &Stream) -> Option<String> {
    let first_diff = direct
        .msgs
        .iter()
        .zip(&gateway.msgs)
        .position(|(a, b)| normalized(a) != normalized(b))
        .or_else(|| (direct.msgs.len() != gateway.msgs.len()).then(|| direct.msgs.len().min(gateway.msgs.len())));
    let broken = direct.broken.is_some() || gateway.broken.is_some();
    if first_diff.is_none() && !broken {
        return None;
    }
    let d = first_diff.unwrap_or(direct.msgs.len().min(gateway.msgs.len()));
    // Short streams are shown whole; long ones (100k rows) around the first difference.
    let (from, to) = if direct.msgs.len().max(gateway.msgs.len()) <= 80 {
        (0, usize::MAX)
    } else {
        (d.saturating_sub(10), d + 20)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "first difference at message {d}; direct: {} messages, gateway: {} messages",
        direct.msgs.len(),
        gateway.msgs.len()
    );
    let _ = write!(
        out,
        "  direct:\n{}  gateway:\n{}",
        render_window(direct, from, to.min(direct.msgs.len())),
        render_window(gateway, from, to.min(gateway.msgs.len()))
    );
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Two sessions in lockstep.

/// One session straight to PostgreSQL and one through the gateway, each on a fresh database of its
/// own, driven with the same messages.
struct Pair {
    context: String,
    direct: RawConn,
    gateway: RawConn,
    mismatches: Vec<String>,
    /// Set when a stream broke: later exchanges would only repeat the failure.
    dead: bool,
}

impl Pair {
    async fn open(pg: &Pg, gw: &Dyngate, role: &str, context: impl Into<String>) -> Pair {
        let (db_direct, db_gateway) = (pg.fresh_db().await, pg.fresh_db().await);
        let (direct, s_direct) = RawConn::connect(&format!("{}:{}", pg.host, pg.port), role, &db_direct).await;
        let (gateway, s_gateway) = RawConn::connect(&gw.addr(), role, &db_gateway).await;
        let mut pair = Pair {
            context: context.into(),
            direct,
            gateway,
            mismatches: Vec::new(),
            dead: false,
        };
        pair.check("start-up (AuthenticationOk .. ReadyForQuery)", &s_direct, &s_gateway);
        pair
    }

    fn check(&mut self, what: &str, direct: &Stream, gateway: &Stream) -> bool {
        if direct.broken.is_some() || gateway.broken.is_some() {
            self.dead = true;
        }
        match compare(direct, gateway) {
            None => true,
            Some(report) => {
                self.mismatches.push(format!("--- {}\n{what}\n{report}", self.context));
                false
            }
        }
    }

    /// Sends `msgs` to both sessions and compares what comes back.
    async fn exchange(&mut self, what: &str, msgs: &[Message], until: Until) -> bool {
        if self.dead {
            return false;
        }
        let a = self.direct.send(msgs, until).await;
        let b = self.gateway.send(msgs, until).await;
        self.check(what, &a, &b)
    }

    /// Runs one case statement on both sessions and compares.
    async fn statement(&mut self, file: &str, case: &Case, mode: Mode) -> bool {
        if self.dead {
            return false;
        }
        let a = run_statement(&mut self.direct, case, mode).await;
        let b = run_statement(&mut self.gateway, case, mode).await;
        let mut sql = case.sql.clone();
        if sql.len() > 2000 {
            let mut cut = 2000;
            while !sql.is_char_boundary(cut) {
                cut -= 1;
            }
            sql.truncate(cut);
            sql.push_str(" ...");
        }
        let what = format!("{file}:{} [{}]\n{sql}", case.line, mode.name());
        // For writing cases: `PASSTHROUGH_SHOW=1 scripts/test --test passthrough -- --nocapture`
        // prints what every statement produced.
        if std::env::var_os("PASSTHROUGH_SHOW").is_some() {
            let long = a.msgs.len() > 40;
            println!("=== {what}\n{}", render_window(&a, 0, if long { 20 } else { a.msgs.len() }));
        }
        self.check(&what, &a, &b)
    }

    /// Ends both sessions; nothing may arrive after the last expected reply. Returns the
    /// mismatches found.
    async fn finish(mut self) -> Vec<String> {
        if !self.dead {
            let a = self.direct.terminate().await;
            let b = self.gateway.terminate().await;
            self.check("after Terminate (no further messages)", &a, &b);
        }
        self.mismatches
    }
}

fn fail_with(gw: &Dyngate, mismatches: &[String]) {
    if mismatches.is_empty() {
        return;
    }
    let log = gw.log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "{} exchange(s) differ between PostgreSQL and the gateway:\n\n{}\n--- gateway log tail:\n{}",
        mismatches.len(),
        mismatches.join("\n"),
        tail.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// SQL case files.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Simple,
    /// Parse / Bind (text results) / Describe portal / Execute / Sync.
    Extended,
    /// The same with every result column in binary.
    ExtendedBinary,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Simple, Mode::Extended, Mode::ExtendedBinary];

    fn name(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Extended => "extended, text results",
            Mode::ExtendedBinary => "extended, binary results",
        }
    }
}

#[derive(Debug)]
struct Case {
    /// 1-based line of the statement in its file.
    line: usize,
    sql: String,
    simple_only: bool,
    copy_in: Option<CopyInput>,
}

#[derive(Debug)]
struct CopyInput {
    data: Vec<u8>,
    /// Send CopyFail with this message instead of CopyDone.
    fail: Option<String>,
}

fn parse_case_file(text: &str) -> Result<Vec<Case>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        if let Some(case) = parse_block(start, &lines[start..i])? {
            out.push(case);
        }
    }
    Ok(out)
}

fn parse_block(start: usize, block: &[&str]) -> Result<Option<Case>, String> {
    let mut simple_only = false;
    let mut verbatim = false;
    let mut copy_in = false;
    let mut body: Vec<(usize, &str)> = Vec::new();
    for (k, line) in block.iter().enumerate() {
        let lineno = start + k + 1;
        match line.trim().strip_prefix("--!") {
            Some(d) => match d.trim() {
                "simple-only" => simple_only = true,
                "verbatim" => verbatim = true,
                "copy-in" => copy_in = true,
                other => return Err(format!("line {lineno}: unknown directive {other:?}")),
            },
            None => body.push((lineno, line)),
        }
    }
    if body.is_empty() {
        return Err(format!("line {}: directive without a statement", start + 1));
    }
    let line = body[0].0;
    if !copy_in {
        if !verbatim && body.iter().all(|(_, l)| l.trim_start().starts_with("--")) {
            return Ok(None);
        }
        let sql: Vec<&str> = body.iter().map(|(_, l)| *l).collect();
        return Ok(Some(Case {
            line,
            sql: sql.join("\n"),
            simple_only,
            copy_in: None,
        }));
    }
    let end = body
        .iter()
        .position(|(_, l)| l.trim_end().ends_with(';'))
        .ok_or_else(|| format!("line {line}: copy-in statement does not end with ';'"))?;
    let sql: Vec<&str> = body[..=end].iter().map(|(_, l)| *l).collect();
    let mut data = Vec::new();
    let mut fail = None;
    let mut terminated = false;
    for (n, l) in &body[end + 1..] {
        if terminated {
            return Err(format!("line {n}: data after the end of the COPY data"));
        }
        if *l == "\\." {
            terminated = true;
        } else if let Some(msg) = l.strip_prefix("\\fail ") {
            fail = Some(msg.to_string());
            terminated = true;
        } else {
            data.extend_from_slice(l.as_bytes());
            data.push(b'\n');
        }
    }
    if !terminated {
        return Err(format!("line {line}: COPY data must end with \\. or \\fail"));
    }
    Ok(Some(Case {
        line,
        sql: sql.join("\n"),
        simple_only,
        copy_in: Some(CopyInput { data, fail }),
    }))
}

/// The Parse / Bind / Describe portal / Execute messages of one statement in the extended protocol.
fn extended_messages(sql: &str, mode: Mode) -> Vec<Message> {
    let results: &[i16] = if mode == Mode::ExtendedBinary { &[1] } else { &[] };
    vec![
        parse("", sql, &[]),
        bind("", "", &[], &[], results),
        describe(b'P', ""),
        execute("", 0),
    ]
}

async fn run_statement(conn: &mut RawConn, case: &Case, mode: Mode) -> Stream {
    let Some(copy) = &case.copy_in else {
        let msgs = match mode {
            Mode::Simple => vec![query(&case.sql)],
            _ => {
                let mut m = extended_messages(&case.sql, mode);
                m.push(sync());
                m
            }
        };
        return conn.send(&msgs, Until::Ready(1)).await;
    };
    // COPY FROM STDIN: like a real client, wait for CopyInResponse before sending data (Flush
    // makes the backend answer the extended messages without a Sync).
    let (first, stop): (Vec<Message>, &'static [u8]) = match mode {
        Mode::Simple => (vec![query(&case.sql)], b"GZ"),
        _ => {
            let mut m = extended_messages(&case.sql, mode);
            m.push(flush());
            (m, b"GE")
        }
    };
    let mut s = conn.send(&first, Until::Tag(stop)).await;
    if s.broken.is_some() {
        return s;
    }
    let mut rest = Vec::new();
    match s.msgs.last().map(Message::tag) {
        Some(b'G') => {
            rest.extend(copy_chunks(&copy.data));
            rest.push(match &copy.fail {
                Some(reason) => copy_fail(reason),
                None => copy_done(),
            });
            if mode != Mode::Simple {
                rest.push(sync());
            }
        }
        // The COPY failed before it started: in the extended protocol the error still needs a
        // Sync; in the simple protocol ReadyForQuery has arrived.
        Some(b'E') => rest.push(sync()),
        _ => return s,
    }
    let more = conn.send(&rest, Until::Ready(1)).await;
    s.msgs.extend(more.msgs);
    s.broken = more.broken;
    s
}

fn case_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sql/passthrough")
}

async fn run_case_file(name: &str) {
    let rel = format!("tests/sql/passthrough/{name}.sql");
    let path = case_dir().join(format!("{name}.sql"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let cases = parse_case_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(!cases.is_empty(), "{rel} has no statements");
    let pg = pg();
    let gw = Dyngate::with_backend(&pg, &[]);
    let role = pg.fresh_trusted_role("SUPERUSER").await;
    let mut mismatches = Vec::new();
    for mode in Mode::ALL {
        let mut pair = Pair::open(&pg, &gw, &role, format!("{rel} [{}]", mode.name())).await;
        for case in &cases {
            if case.simple_only && mode != Mode::Simple {
                continue;
            }
            pair.statement(&rel, case, mode).await;
        }
        mismatches.extend(pair.finish().await);
    }
    fail_with(&gw, &mismatches);
}

macro_rules! sql_cases {
    ($($name:ident),* $(,)?) => {
        /// Every case file, by stem; `every_case_file_has_a_test` keeps it in step with the
        /// directory.
        const CASE_FILES: &[&str] = &[$(stringify!($name)),*];

        /// One test per case file, so they run in parallel and fail separately.
        mod sql {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run_case_file(stringify!($name)).await;
                }
            )*
        }
    };
}

sql_cases!(
    ddl_dml,
    types_numeric,
    types_text,
    types_datetime,
    types_other,
    empty_and_multi,
    errors,
    transactions,
    notices,
    settings,
    cursors,
    copy_out,
    copy_in,
    large,
    dynamic_word,
);

#[test]
fn every_case_file_has_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(case_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASE_FILES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "tests/sql/passthrough/*.sql and the sql_cases! list in tests/passthrough.rs differ"
    );
    for name in CASE_FILES {
        let text = std::fs::read_to_string(case_dir().join(format!("{name}.sql"))).unwrap();
        parse_case_file(&text).unwrap_or_else(|e| panic!("{name}.sql: {e}"));
    }
}

#[test]
fn case_file_parser() {
    let text = "-- a comment block\n-- more\n\nSELECT 1;\n\n--! simple-only\n-- why\nSELECT 2; SELECT 3;\n\n--! verbatim\n-- only a comment\n\n--! copy-in\nCOPY t FROM STDIN;\n1\n2\n\\.\n\n--! copy-in\nCOPY t\n  FROM STDIN;\nx\n\\fail gave up\n";
    let cases = parse_case_file(text).unwrap();
    assert_eq!(cases.len(), 5);
    assert_eq!((cases[0].line, cases[0].sql.as_str()), (4, "SELECT 1;"));
    assert!(cases[1].simple_only && cases[1].sql == "-- why\nSELECT 2; SELECT 3;");
    assert_eq!(cases[2].sql, "-- only a comment");
    let c = cases[3].copy_in.as_ref().unwrap();
    assert_eq!((c.data.as_slice(), c.fail.as_deref()), (&b"1\n2\n"[..], None));
    assert_eq!(cases[4].sql, "COPY t\n  FROM STDIN;");
    let c = cases[4].copy_in.as_ref().unwrap();
    assert_eq!((c.data.as_slice(), c.fail.as_deref()), (&b"x\n"[..], Some("gave up")));
    assert!(parse_case_file("--! copy-in\nCOPY t FROM STDIN;\n1\n").is_err());
    assert!(parse_case_file("--! bogus\nSELECT 1;\n").is_err());
    let chunks = copy_chunks(&[7u8; 2000]);
    assert_eq!(chunks.iter().map(|m| m.body().len()).sum::<usize>(), 2000);
    assert_eq!(chunks[0].body().len(), 1);
}

#[test]
fn comparison_masks_only_what_may_differ() {
    fn row_desc(table: u32, attnum: i16, type_oid: u32) -> Message {
        let mut b = BytesMut::new();
        b.put_i16(1);
        put_cstr(&mut b, "c");
        b.put_u32(table);
        b.put_i16(attnum);
        b.put_u32(type_oid);
        b.put_i16(4);
        b.put_i32(-1);
        b.put_i16(0);
        Message::new(b'T', &b)
    }
    fn row(v: &[u8]) -> Message {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(v.len() as i32);
        b.put_slice(v);
        Message::new(b'D', &b)
    }
    fn error(line: &str) -> Message {
        Message::new(b'E', format!("SERROR\0C22012\0Mdivision by zero\0L{line}\0\0").as_bytes())
    }
    let stream = |msgs: Vec<Message>| Stream { msgs, broken: None };
    let base = || vec![row_desc(16400, 1, 23), row(b"1"), error("869")];
    // The table OID and attnum, and the cancel key, are allowed to differ.
    let same = stream(vec![row_desc(16999, 2, 23), row(b"1"), error("869")]);
    assert!(compare(&stream(base()), &same).is_none());
    let key = |k: &[u8]| stream(vec![Message::new(b'K', k)]);
    assert!(compare(&key(b"\0\0\0\x01abcd"), &key(b"\0\0\0\x02wxyz")).is_none());
    // A column from no table is not the same as one from a table.
    let untabled = stream(vec![row_desc(0, 0, 23), row(b"1"), error("869")]);
    assert!(compare(&stream(base()), &untabled).is_some());
    // Type OIDs, row bytes, error fields (even the source line), message counts all count.
    for other in [
        vec![row_desc(16400, 1, 20), row(b"1"), error("869")],
        vec![row_desc(16400, 1, 23), row(b"2"), error("869")],
        vec![row_desc(16400, 1, 23), row(b"1"), error("870")],
        vec![row_desc(16400, 1, 23), row(b"1")],
        vec![row_desc(16400, 1, 23), row(b"1"), error("869"), ready_for_query()],
    ] {
        let report = compare(&stream(base()), &stream(other)).expect("a difference");
        assert!(report.contains("direct:") && report.contains("gateway:"), "{report}");
    }
    // A stream that broke off is a failure even when what arrived matches.
    let broken = Stream {
        msgs: base(),
        broken: Some("the server closed the connection".into()),
    };
    assert!(compare(&stream(base()), &broken).is_some());
}

fn ready_for_query() -> Message {
    Message::new(b'Z', b"I")
}

// ---------------------------------------------------------------------------------------------
// Protocol features beyond one statement at a time.

async fn setup(what: &str) -> (Dyngate, Pair) {
    let pg = pg();
    let gw = Dyngate::with_backend(&pg, &[]);
    let role = pg.fresh_trusted_role("SUPERUSER").await;
    let pair = Pair::open(&pg, &gw, &role, what).await;
    (gw, pair)
}

async fn done(gw: Dyngate, pair: Pair) {
    let mismatches = pair.finish().await;
    fail_with(&gw, &mismatches);
}

#[tokio::test]
async fn extended_named_statement_reused_with_parameters() {
    let (gw, mut p) = setup("named statement").await;
    let sql = "SELECT $1::int4 + 1 AS next, upper($2) AS up, $3::numeric * 2 AS dbl, $2 IS NULL AS missing";
    // Parameter types: int4, text, and one left for the server to infer (numeric).
    p.exchange(
        "Parse s1 + Describe statement (ParameterDescription, RowDescription)",
        &[parse("s1", sql, &[23, 25, 0]), describe(b'S', "s1"), sync()],
        Until::Ready(1),
    )
    .await;
    let int4 = 7i32.to_be_bytes();
    p.exchange(
        "s1 bound three times: text, text with NULL, binary parameters and results",
        &[
            bind_text("", "s1", &[Some("41"), Some("abc"), Some("1.5")]),
            execute("", 0),
            bind_text("", "s1", &[Some("-1"), None, Some("-0.25")]),
            describe(b'P', ""),
            execute("", 0),
            bind("", "s1", &[1, 0, 0], &[Some(&int4), Some("ünïcödé".as_bytes()), Some(b"1e3")], &[1]),
            describe(b'P', ""),
            execute("", 0),
            sync(),
        ],
        Until::Ready(1),
    )
    .await;
    p.exchange(
        "s1 into a named portal, mixed result formats",
        &[
            bind("p1", "s1", &[], &[Some(b"1"), Some(b"x"), Some(b"2")], &[0, 1, 0, 1]),
            describe(b'P', "p1"),
            execute("p1", 0),
            sync(),
        ],
        Until::Ready(1),
    )
    .await;
    p.exchange(
        "wrong parameter count, bad parameter value",
        &[
            bind_text("", "s1", &[Some("1")]),
            execute("", 0),
            sync(),
            bind_text("", "s1", &[Some("one"), Some("x"), Some("1")]),
            execute("", 0),
            sync(),
        ],
        Until::Ready(2),
    )
    .await;
    p.exchange(
        "Parse of an existing name is 42P05",
        &[parse("s1", "SELECT 1", &[]), sync()],
        Until::Ready(1),
    )
    .await;
    p.exchange(
        "Close s1, then Bind to it is 26000; closing a missing statement is no error",
        &[
            close(b'S', "s1"),
            close(b'S', "never_existed"),
            sync(),
            bind_text("", "s1", &[Some("1"), Some("x"), Some("1")]),
            execute("", 0),
            sync(),
        ],
        Until::Ready(2),
    )
    .await;
    p.exchange(
        "s1 redefined after Close",
        &[
            parse("s1", "SELECT $1::text || '!' AS shout", &[]),
            bind_text("", "s1", &[Some("again")]),
            execute("", 0),
            sync(),
        ],
        Until::Ready(1),
    )
    .await;
    done(gw, p).await;
}

#[tokio::test]
async fn extended_row_limit_suspends_portal() {
    let (gw, mut p) = setup("row limit").await;
    let sql = "SELECT g, repeat('r', g) AS pad FROM generate_series(1, 10) g";
    p.exchange(
        "Execute 3, 3, then the rest, in one batch",
        &[
            parse("", sql, &[]),
            bind("", "", &[], &[], &[]),
            describe(b'P', ""),
            execute("", 3),
            execute("", 3),
            execute("", 0),
            sync(),
        ],
        Until::Ready(1),
    )
    .await;
    // Interactive: the client waits for PortalSuspended (after a Flush, without a Sync) before
    // asking for more, so the relay must pass replies on without waiting for ReadyForQuery.
    p.exchange(
        "Execute 4 + Flush, until PortalSuspended",
        &[parse("", sql, &[]), bind("", "", &[], &[], &[1]), execute("", 4), flush()],
        Until::Tag(b"s"),
    )
    .await;
    p.exchange("second Execute 4 + Flush", &[execute("", 4), flush()], Until::Tag(b"s"))
        .await;
    p.exchange("last Execute + Sync", &[execute("", 4), sync()], Until::Ready(1)).await;
    // A named portal survives Sync inside a transaction block.
    p.exchange(
        "named portal in a transaction, across Syncs",
        &[
            query("BEGIN"),
            parse("", sql, &[]),
            bind("cur", "", &[], &[], &[]),
            execute("cur", 2),
            sync(),
            execute("cur", 5),
            sync(),
            execute("cur", 0),
            execute("cur", 0),
            sync(),
            query("COMMIT"),
        ],
        Until::Ready(5),
    )
    .await;
    done(gw, p).await;
}

#[tokio::test]
async fn extended_pipeline() {
    let (gw, mut p) = setup("pipeline").await;
    p.exchange("setup", &[query("CREATE TABLE pipe (id int PRIMARY KEY, v text)")], Until::Ready(1))
        .await;
    // Several statements before one Sync, the third failing: the rest up to Sync is skipped and
    // the implicit transaction (with the INSERT) rolled back; the next Sync starts afresh.
    p.exchange(
        "pipeline with an error in the middle",
        &[
            parse("", "INSERT INTO pipe VALUES (1, 'one'), (2, 'two')", &[]),
            bind("", "", &[], &[], &[]),
            execute("", 0),
            parse("", "SELECT count(*) FROM pipe", &[]),
            bind("", "", &[], &[], &[]),
            execute("", 0),
            parse("", "SELECT 1/0", &[]),
            bind("", "", &[], &[], &[]),
            execute("", 0),
            parse("", "SELECT 'skipped'", &[]),
            bind("", "", &[], &[], &[]),
            execute("", 0),
            sync(),
            parse("", "SELECT count(*) FROM pipe", &[]),
            bind("", "", &[], &[], &[]),
            describe(b'P', ""),
            execute("", 0),
            sync(),
        ],
        Until::Ready(2),
    )
    .await;
    p.exchange(
        "pipeline of a named statement with several Syncs",
        &[
            parse("ins", "INSERT INTO pipe VALUES ($1, $2) RETURNING id, v", &[]),
            sync(),
            bind_text("", "ins", &[Some("10"), Some("ten")]),
            execute("", 0),
            bind_text("", "ins", &[Some("11"), Some("eleven")]),
            execute("", 0),
            sync(),
            bind_text("", "ins", &[Some("10"), Some("dup")]),
            execute("", 0),
            sync(),
            parse("", "SELECT * FROM pipe ORDER BY id", &[]),
            bind("", "", &[], &[], &[]),
            execute("", 0),
            sync(),
        ],
        Until::Ready(4),
    )
    .await;
    // A long pipeline whose replies (about 2 MB) flow back while the client is still sending.
    let mut msgs = vec![parse("wide", "SELECT $1::int AS n, repeat(md5($1), 32) AS pad", &[])];
    let nums: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
    for n in &nums {
        msgs.push(bind_text("", "wide", &[Some(n)]));
        msgs.push(execute("", 0));
    }
    msgs.push(sync());
    p.exchange("2000 Bind/Execute before one Sync", &msgs, Until::Ready(1)).await;
    done(gw, p).await;
}

#[tokio::test]
async fn extended_describe_and_close() {
    let (gw, mut p) = setup("describe and close").await;
    p.exchange("setup", &[query("CREATE TABLE d (id int, note text)")], Until::Ready(1))
        .await;
    p.exchange(
        "Describe statement and portal, Close portal, Execute of the closed portal",
        &[
            parse("s", "SELECT $1::text AS a, $2::int8 AS b, $2 > 0 AS pos", &[]),
            describe(b'S', "s"),
            bind_text("p", "s", &[Some("x"), Some("5")]),
            describe(b'P', "p"),
            close(b'P', "p"),
            execute("p", 0),
            sync(),
        ],
        Until::Ready(1),
    )
    .await;
    p.exchange(
        "Describe of a statement without result columns (NoData), of a missing statement and portal",
        &[
            parse("ins", "INSERT INTO d VALUES ($1, $2)", &[]),
            describe(b'S', "ins"),
            sync(),
            describe(b'S', "missing"),
            sync(),
            describe(b'P', "missing"),
            sync(),
        ],
        Until::Ready(3),
    )
    .await;
    p.exchange(
        "Describe of a parameterless statement, Close both, reuse of the names",
        &[
            parse("u", "SELECT 1 AS one", &[]),
            describe(b'S', "u"),
            bind("q", "u", &[], &[], &[]),
            close(b'P', "q"),
            close(b'S', "u"),
            close(b'S', "s"),
            parse("u", "SELECT 2 AS two", &[]),
            bind("q", "u", &[], &[], &[]),
            describe(b'P', "q"),
            execute("q", 0),
            sync(),
        ],
        Until::Ready(1),
    )
    .await;
    done(gw, p).await;
}

#[tokio::test]
async fn simple_queries_pipelined_without_waiting() {
    let (gw, mut p) = setup("simple pipeline").await;
    p.exchange(
        "six Query messages in one write",
        &[
            query("CREATE TABLE sp (x int)"),
            query("BEGIN"),
            query("INSERT INTO sp SELECT generate_series(1, 1000)"),
            query("SELECT x FROM sp WHERE x % 100 = 0 ORDER BY x"),
            query("SELECT x / 0 FROM sp"),
            query("ROLLBACK; SELECT count(*) FROM sp"),
        ],
        Until::Ready(6),
    )
    .await;
    done(gw, p).await;
}

#[tokio::test]
async fn copy_from_stdin_driven_by_the_client() {
    let (gw, mut p) = setup("copy from stdin").await;
    p.exchange(
        "setup",
        &[query(
            "CREATE TABLE cp (id int PRIMARY KEY, name text, amount numeric); CREATE TABLE cp2 (LIKE cp)",
        )],
        Until::Ready(1),
    )
    .await;
    // 20k rows in uneven chunks (rows split across CopyData messages, many rows in one).
    let mut data = Vec::new();
    for i in 0..20_000 {
        let _ = writeln!(WriteBytes(&mut data), "{i}\tname {i} ünï\t{}.{}", i * 3, i % 100);
    }
    p.exchange(
        "COPY FROM STDIN, until CopyInResponse",
        &[query("COPY cp FROM STDIN")],
        Until::Tag(b"G"),
    )
    .await;
    let mut msgs = copy_chunks(&data);
    msgs.push(copy_done());
    p.exchange("CopyData chunks + CopyDone", &msgs, Until::Ready(1)).await;
    p.exchange(
        "what arrived",
        &[query(
            "SELECT count(*), sum(amount), md5(string_agg(name, ',' ORDER BY id)) FROM cp",
        )],
        Until::Ready(1),
    )
    .await;
    p.exchange(
        "COPY FROM STDIN (csv) then CopyFail",
        &[query("COPY cp FROM STDIN (FORMAT csv)")],
        Until::Tag(b"G"),
    )
    .await;
    p.exchange(
        "CopyData + CopyFail",
        &[copy_data(b"900000,abc,1\n900001,de"), copy_fail("client gave up")],
        Until::Ready(1),
    )
    .await;
    p.exchange(
        "a bad row mid-stream",
        &[
            query("COPY cp FROM STDIN (FORMAT csv)"),
            copy_data(b"800000,ok,1\n800001,bad,not_a_number\n"),
            copy_data(b"800002,never,3\n"),
            copy_done(),
        ],
        Until::Ready(1),
    )
    .await;
    // Everything in one write, without waiting for CopyInResponse.
    p.exchange(
        "Query + CopyData + CopyDone in one write",
        &[
            query("COPY cp (id, name) FROM STDIN (FORMAT csv, HEADER)"),
            copy_data(b"id,name\n700000,\"quoted, with comma\"\n700001,"),
            copy_data(b"\n"),
            copy_done(),
            query("SELECT * FROM cp WHERE id >= 700000 ORDER BY id"),
        ],
        Until::Ready(2),
    )
    .await;
    // A COPY that fails before it starts: the backend ignores the copy messages that follow.
    p.exchange(
        "COPY into a missing table with data sent anyway",
        &[
            query("COPY missing FROM STDIN"),
            copy_data(b"1\n"),
            copy_done(),
            query("SELECT 'still in sync'"),
        ],
        Until::Ready(2),
    )
    .await;
    // Binary COPY round trip: the bytes PostgreSQL produced, fed back.
    let mut binary = Vec::new();
    let out = p
        .direct
        .send(
            &[query("COPY (SELECT * FROM cp ORDER BY id LIMIT 500) TO STDOUT (FORMAT binary)")],
            Until::Ready(1),
        )
        .await;
    let out_gw = p
        .gateway
        .send(
            &[query("COPY (SELECT * FROM cp ORDER BY id LIMIT 500) TO STDOUT (FORMAT binary)")],
            Until::Ready(1),
        )
        .await;
    p.check("COPY TO STDOUT (FORMAT binary)", &out, &out_gw);
    for m in out.msgs.iter().filter(|m| m.tag() == b'd') {
        binary.extend_from_slice(m.body());
    }
    assert!(!binary.is_empty(), "binary COPY produced data");
    let mut msgs = vec![query("COPY cp2 FROM STDIN (FORMAT binary)")];
    msgs.extend(copy_chunks(&binary));
    msgs.push(copy_done());
    msgs.push(query("SELECT count(*), sum(amount) FROM cp2"));
    p.exchange("binary COPY FROM STDIN", &msgs, Until::Ready(2)).await;
    // The extended protocol: Execute starts the COPY; Sync after CopyDone.
    p.exchange(
        "extended COPY FROM STDIN until CopyInResponse",
        &[
            parse("", "COPY cp2 (id) FROM STDIN", &[]),
            bind("", "", &[], &[], &[]),
            execute("", 0),
            flush(),
        ],
        Until::Tag(b"G"),
    )
    .await;
    p.exchange(
        "extended CopyData + CopyFail + Sync",
        &[copy_data(b"1\n2\n"), copy_fail("changed my mind"), sync()],
        Until::Ready(1),
    )
    .await;
    // libpq's way: Parse/Bind/Describe/Execute/Sync in one write, not knowing the statement is a
    // COPY. PostgreSQL ignores a Sync that arrives during COPY IN, so of the two Syncs only the one
    // after CopyDone is answered.
    p.exchange(
        "extended COPY FROM STDIN with the Sync sent up front (as libpq does)",
        &[
            parse("", "COPY cp2 (id) FROM STDIN", &[]),
            bind("", "", &[], &[], &[]),
            describe(b'P', ""),
            execute("", 0),
            sync(),
        ],
        Until::Tag(b"G"),
    )
    .await;
    p.exchange(
        "CopyData + CopyDone + Sync: one ReadyForQuery for the two Syncs",
        &[copy_data(b"1000001\n1000002\n"), copy_done(), sync()],
        Until::Ready(1),
    )
    .await;
    p.exchange(
        "after the COPY",
        &[query("SELECT count(*) FROM cp2 WHERE id > 1000000")],
        Until::Ready(1),
    )
    .await;
    done(gw, p).await;
}

/// `write!` into a byte vector.
struct WriteBytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for WriteBytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[tokio::test]
async fn large_client_messages() {
    let (gw, mut p) = setup("large client messages").await;
    // Messages far larger than any read buffer, from the client to the backend.
    let big: String = (0..4 * 1024 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    p.exchange(
        "4 MB Query",
        &[query(&format!("SELECT length('{big}') AS len, md5('{big}') AS sum"))],
        Until::Ready(1),
    )
    .await;
    p.exchange(
        "4 MB Bind parameter, echoed back",
        &[
            parse("", "SELECT length($1) AS len, md5($1) AS sum, $1 AS echo", &[]),
            bind_text("", "", &[Some(&big)]),
            execute("", 0),
            sync(),
        ],
        Until::Ready(1),
    )
    .await;
    done(gw, p).await;
}

#[tokio::test]
async fn function_call_message() {
    let (gw, mut p) = setup("function call").await;
    // A built-in function's OID is the same in every database.
    let oid: u32 = pg()
        .admin()
        .await
        .query_one_scalar("SELECT 'int4pl(int4,int4)'::regprocedure::oid", &[])
        .await
        .unwrap();
    p.exchange(
        "FunctionCall int4pl(40, 2), then one that overflows",
        &[function_call(oid, &[40, 2]), function_call(oid, &[i32::MAX, 1])],
        Until::Ready(2),
    )
    .await;
    done(gw, p).await;
}
