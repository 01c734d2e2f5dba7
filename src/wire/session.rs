//! One client session after start-up: two relay directions over one dedicated backend connection.
//!
//! Client to backend: whole messages are forwarded as they arrived, batched into one write per
//! read. Simple Query and Parse texts are classified first, once ([`Statements::classify`]). A
//! statement dyngate owns is answered by the gateway's [`Statements`] in either protocol: in the extended
//! one, its Parse, Bind, Describe, Execute and Close are kept and answered here (a prepared
//! statement of dyngate's lives in the gateway, not in PostgreSQL). Each of dyngate's own replies
//! is written only once the backend has answered everything forwarded before it (a Flush is sent
//! to make it do so), and an error in a batch makes the rest of the batch skipped up to Sync, on
//! both sides, as PostgreSQL does.
//!
//! Backend to client: bytes are relayed unchanged; only message tags are read, to account for the
//! replies owed ([`Pending`]), the transaction status, COPY, and standard_conforming_strings.
//!
//! The two directions run concurrently so that neither side can stall the other (a client that
//! pipelines many queries while the backend writes large results would otherwise deadlock).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, Notify, watch};

use crate::sql::{Route, StatementKind, split_statements};
use crate::wire::cancel::{BackendKey, send_cancel};
use crate::wire::codec::{
    FrameError, Message, PgError, command_complete, data_row, message_len, names, no_parameters, notice, parameter_value, parse_text,
    query_text, ready_for_query, row_description, take_message,
};
use crate::wire::conn::Framed;
use crate::wire::pending::Pending;
use crate::wire::startup::ClientStream;
use crate::wire::statements::{Column, Reply, SessionInfo, Shape, Statements, TEXT};
use crate::wire::{Gateway, Phase};

/// What both directions know of the session.
struct State {
    /// The replies the backend still owes.
    pending: std::sync::Mutex<Pending>,
    /// `pending.unanswered()`, readable without the lock.
    unanswered: AtomicU32,
    /// The transaction status of the last ReadyForQuery: `I`, `T` or `E`.
    tx_status: AtomicU8,
    /// The backend is in COPY FROM STDIN.
    copy_in: AtomicBool,
    /// The session's standard_conforming_strings, as the backend last reported it.
    standard_strings: AtomicBool,
    /// The session's TimeZone, as the backend last reported it (the default time zone of the
    /// schedules of dynamic tables created in this session).
    time_zone: std::sync::Mutex<String>,
    /// Signalled when `unanswered` drops to zero.
    idle: Notify,
}

impl State {
    /// Nothing forwarded is still unanswered.
    fn is_idle(&self) -> bool {
        self.unanswered.load(Ordering::Acquire) == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the reply accounting; returns the number of messages unanswered afterwards.
    fn track(&self, f: impl FnOnce(&mut Pending)) -> u32 {
        let mut p = self.lock();
        f(&mut p);
        let n = p.unanswered();
        self.unanswered.store(n, Ordering::Release);
        n
    }

    async fn wait_idle(&self) {
        loop {
            let n = self.idle.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_idle() {
                return;
            }
            n.await;
        }
    }
}

type ClientWriter = Arc<Mutex<WriteHalf<ClientStream>>>;

/// How the client direction ended.
enum ClientEnd {
    /// The client sent Terminate or closed its socket.
    Closed,
    /// The client broke the protocol; it has been sent a FATAL error.
    Violation,
    /// Shutdown closed the idle session.
    Shutdown,
}

/// Runs the relay until either side ends, then releases the backend session.
pub async fn run<S: Statements>(
    gw: Arc<Gateway<S>>,
    client: Framed<ClientStream>,
    backend: Framed<TcpStream>,
    key: Option<(u32, BackendKey)>,
    info: SessionInfo,
    (standard_strings, time_zone): (bool, String),
    shutdown: watch::Receiver<Phase>,
) {
    let Framed { stream: cs, rbuf: crbuf } = client;
    let (cr, cw) = tokio::io::split(cs);
    let cw: ClientWriter = Arc::new(Mutex::new(cw));
    let Framed { stream: bs, rbuf: brbuf } = backend;
    let (br, bw) = bs.into_split();
    let state = Arc::new(State {
        pending: std::sync::Mutex::new(Pending::default()),
        unanswered: AtomicU32::new(0),
        tx_status: AtomicU8::new(b'I'),
        copy_in: AtomicBool::new(false),
        standard_strings: AtomicBool::new(standard_strings),
        time_zone: std::sync::Mutex::new(time_zone),
        idle: Notify::new(),
    });

    let up = Up {
        gw: &gw,
        state: &state,
        info: &info,
        cw: cw.clone(),
        bw,
        out: BytesMut::with_capacity(8192),
        sent: Vec::new(),
        statements: HashMap::new(),
        portals: HashMap::new(),
        described: HashMap::new(),
        batch_forwarded: false,
        batch_local: false,
        skipping: false,
        kind: None,
    };
    let down = backend_to_client(br, brbuf, cw.clone(), &state);
    tokio::select! {
        end = up.run(cr, crbuf, shutdown) => match end {
            ClientEnd::Closed => tracing::debug!("client closed the session"),
            ClientEnd::Violation => tracing::info!("client broke the protocol; session closed"),
            ClientEnd::Shutdown => tracing::debug!("idle session closed for shutdown"),
        },
        r = down => match r {
            Ok(()) => tracing::debug!("backend closed the session"),
            Err(e) => tracing::debug!(error = %e, "relay to the client failed"),
        },
    }
    // A statement still running would go on until it next writes to its closed socket: cancel it,
    // so a vanished client leaves no work (and no session) behind.
    if let Some((pid, bkey)) = &key {
        if !state.is_idle() || state.copy_in.load(Ordering::Acquire) {
            send_cancel(&gw.backend, bkey).await;
        }
        gw.cancels.unregister(*pid);
    }
    let _ = cw.lock().await.shutdown().await;
}

/// A Flush message: makes the backend send what it has buffered for the extended protocol.
const FLUSH: &[u8] = &[b'H', 0, 0, 0, 4];

/// The client-to-backend direction.
struct Up<'a, S: Statements> {
    gw: &'a Gateway<S>,
    state: &'a State,
    info: &'a SessionInfo,
    cw: ClientWriter,
    bw: OwnedWriteHalf,
    /// Messages to forward that are no longer in the read buffer (they came before one of
    /// dyngate's own), and Flushes; written before the read buffer's run.
    out: BytesMut,
    /// The tags of the messages forwarded in place since the replies were last recorded.
    sent: Vec<u8>,
    /// dyngate's own prepared statements and portals, by name.
    statements: HashMap<String, S::Prepared>,
    portals: HashMap<String, (S::Prepared, Vec<i16>)>,
    /// The replies of Flink queries run when their portal was described (a Flink query's shape is
    /// only known by running it), for the Execute that follows.
    described: HashMap<String, Reply>,
    /// Something of the current extended batch went to the backend: its Sync must too.
    batch_forwarded: bool,
    /// The current extended batch has messages of dyngate's own. A Sync is answered by the
    /// gateway only for a batch that has some and nothing forwarded (a Sync after CopyDone, for
    /// one, belongs to the backend).
    batch_local: bool,
    /// One of dyngate's own messages failed: skip to the next Sync, as PostgreSQL does.
    skipping: bool,
    /// What `route` found the Query or Parse it kept for dyngate to be (classified once).
    kind: Option<StatementKind>,
}

impl<S: Statements> Up<'_, S> {
    /// Reads client messages until the session ends.
    ///
    /// Messages bound for the backend are forwarded straight from the read buffer: a run of them
    /// goes in one write per read, their replies recorded under one lock, without splitting or
    /// copying them (an extended-protocol transaction is five messages). A message dyngate answers
    /// itself ends the run: the run is queued first, then the message is handled on its own. While
    /// the session drains or skips a failed batch, every message takes that slower path.
    async fn run(mut self, mut cr: ReadHalf<ClientStream>, mut buf: BytesMut, mut shutdown: watch::Receiver<Phase>) -> ClientEnd {
        let mut draining = *shutdown.borrow() != Phase::Running;
        let changed = shutdown.changed();
        tokio::pin!(changed);
        loop {
            // buf[..pos] holds whole messages to forward as they are.
            let mut pos = 0;
            loop {
                let total = match message_len(&buf[pos..]) {
                    Ok(Some(t)) => t,
                    Ok(None) => break,
                    Err(e) => return violation(&self.cw, e).await,
                };
                let end = pos + total;
                if buf.len() < end {
                    buf.reserve(end - buf.len());
                    break;
                }
                let tag = buf[pos];
                let plain = !draining && !self.skipping;
                if plain && self.route(tag, &buf[pos + 5..end]) {
                    self.sent.push(tag);
                    pos = end;
                    continue;
                }
                self.queue_forwarded(&mut buf, pos);
                pos = 0;
                let msg = take_message(&mut buf, total);
                // Once draining, an idle session is closed rather than given new work.
                if draining && tag != b'X' && self.out.is_empty() && self.state.is_idle() && !self.state.copy_in.load(Ordering::Acquire) {
                    return close_for_shutdown(&self.cw).await;
                }
                let handled = if plain { self.local(msg).await } else { self.message(msg).await };
                match handled {
                    Ok(None) => {}
                    Ok(Some(end)) => return end,
                    Err(_) => return ClientEnd::Closed,
                }
            }
            if self.write_forwarded(&mut buf, pos).await.is_err() {
                return ClientEnd::Closed;
            }
            let read = cr.read_buf(&mut buf);
            if draining {
                // While draining, close as soon as the running statement has finished.
                match tokio::time::timeout(Duration::from_millis(50), read).await {
                    Ok(Ok(0) | Err(_)) => return ClientEnd::Closed,
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        if self.state.is_idle() && !self.state.copy_in.load(Ordering::Acquire) {
                            return close_for_shutdown(&self.cw).await;
                        }
                    }
                }
            } else {
                tokio::select! {
                    r = read => match r {
                        Ok(0) | Err(_) => return ClientEnd::Closed,
                        Ok(_) => {}
                    },
                    _ = &mut changed => {
                        draining = true;
                        if self.state.is_idle() && !self.state.copy_in.load(Ordering::Acquire) {
                            return close_for_shutdown(&self.cw).await;
                        }
                    }
                }
            }
        }
    }

    /// Records the replies earned by the messages forwarded in place (`self.sent`).
    fn record_sent(&mut self) {
        if !self.sent.is_empty() {
            let sent = &self.sent;
            self.state.track(|p| sent.iter().for_each(|&t| p.sent(t)));
            self.sent.clear();
        }
    }

    /// Moves the messages forwarded in place (`buf[..pos]`) to the output, behind what is there.
    fn queue_forwarded(&mut self, buf: &mut BytesMut, pos: usize) {
        self.record_sent();
        self.out.extend_from_slice(&buf[..pos]);
        buf.advance(pos);
    }

    /// Writes the output and the messages forwarded in place (`buf[..pos]`) to the backend: from
    /// the read buffer itself when nothing else is queued, which is the common case.
    async fn write_forwarded(&mut self, buf: &mut BytesMut, pos: usize) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.queue_forwarded(buf, pos);
            return flush(&mut self.bw, &mut self.out).await;
        }
        self.record_sent();
        if pos > 0 {
            self.bw.write_all(&buf[..pos]).await?;
            buf.advance(pos);
        }
        Ok(())
    }

    /// The session is inside an explicit transaction block (as of the last ReadyForQuery).
    fn in_transaction(&self) -> bool {
        self.state.tx_status.load(Ordering::Acquire) != b'I'
    }

    fn time_zone(&self) -> String {
        self.state.time_zone.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues a message for the backend, with the reply it earns.
    fn forward(&mut self, msg: &Message) {
        self.state.track(|p| p.sent(msg.tag()));
        self.out.extend_from_slice(msg.raw());
    }

    /// Whether a client message goes to the backend (true) or is dyngate's to answer (false).
    /// For a message that goes, forgets the statement or portal of dyngate's it replaces, and
    /// notes that the batch has forwarded messages; a Close of dyngate's statement or portal
    /// removes it here. Must not be called for a message skipped in a failed batch.
    fn route(&mut self, tag: u8, body: &[u8]) -> bool {
        let standard = || self.state.standard_strings.load(Ordering::Acquire);
        let forward = match tag {
            b'Q' => {
                let sql = query_text(body).unwrap_or_default();
                return self.classify(sql, standard());
            }
            b'P' => match parse_text(body) {
                None => true,
                Some((name, sql)) => {
                    let forward = self.classify(sql, standard());
                    if forward && !self.statements.is_empty() {
                        self.statements.remove(name);
                    }
                    forward
                }
            },
            b'B' => match names(body, 0) {
                None => true,
                Some((portal, rest)) => {
                    let stmt = names(rest, 0).map(|(s, _)| s).unwrap_or_default();
                    let forward = !has(&self.statements, stmt);
                    if forward && !self.portals.is_empty() {
                        self.portals.remove(portal);
                    }
                    forward
                }
            },
            b'D' => {
                let name = names(body, 1).map(|(n, _)| n).unwrap_or_default();
                match body.first() {
                    Some(b'S') => !has(&self.statements, name),
                    _ => !has(&self.portals, name),
                }
            }
            b'E' => !has(&self.portals, names(body, 0).map(|(n, _)| n).unwrap_or_default()),
            b'C' => {
                let name = names(body, 1).map(|(n, _)| n).unwrap_or_default();
                let removed = match body.first() {
                    Some(b'S') => self.statements.remove(name).is_some(),
                    _ => {
                        self.described.remove(name);
                        self.portals.remove(name).is_some()
                    }
                };
                !removed
            }
            b'S' => {
                self.skipping = false;
                // A batch of dyngate's own messages only: its Sync is answered here. A batch that
                // forwarded anything (or none of dyngate's: a Sync after CopyDone, for one)
                // belongs to the backend.
                let forwarded = std::mem::take(&mut self.batch_forwarded);
                let local = self.batch_local && !forwarded;
                self.batch_local = false;
                return !local;
            }
            b'X' => return false,
            _ => return true,
        };
        self.batch_forwarded |= forward;
        forward
    }

    /// Whether `sql` goes to the backend; if not, its kind is kept for [`local`](Self::local).
    fn classify(&mut self, sql: &str, standard: bool) -> bool {
        match self.gw.statements.classify(sql, standard) {
            Route::Forward => true,
            Route::Intercept(kind) => {
                self.kind = Some(kind);
                false
            }
        }
    }

    /// Parses one of dyngate's query strings, of the kind [`route`](Self::route) found.
    fn prepare(&mut self, statements: &[&str]) -> Result<S::Prepared, PgError> {
        match self.kind.take() {
            Some(kind) => self.gw.statements.prepare(kind, statements),
            None => Err(PgError::error(
                "XX000",
                "internal error: a statement of dyngate's was not classified",
            )),
        }
    }

    /// Handles one client message on the slow path (draining, or skipping a failed batch); `Some`
    /// ends the session.
    async fn message(&mut self, msg: Message) -> std::io::Result<Option<ClientEnd>> {
        if self.skipping && msg.tag() != b'S' {
            return Ok(None);
        }
        if self.route(msg.tag(), msg.body()) {
            self.forward(&msg);
            return Ok(None);
        }
        self.local(msg).await
    }

    /// Answers a client message that [`route`](Self::route) kept for dyngate: one of its
    /// statements (simple or extended protocol), a Sync that ends a batch of its own messages, or
    /// Terminate. `Some` ends the session.
    async fn local(&mut self, msg: Message) -> std::io::Result<Option<ClientEnd>> {
        let standard = self.state.standard_strings.load(Ordering::Acquire);
        match msg.tag() {
            b'Q' => {
                let sql = query_text(msg.body()).unwrap_or_default();
                if !self.settle().await? {
                    return Ok(Some(ClientEnd::Violation));
                }
                let statements = split_statements(sql, standard);
                let mut reply = BytesMut::new();
                match self.prepare(&statements) {
                    Ok(p) => match self
                        .gw
                        .statements
                        .execute(&p, self.info, self.in_transaction(), &self.time_zone())
                        .await
                    {
                        Ok(r) => {
                            write_reply(&self.cw, &r, None, &mut reply).await?;
                        }
                        Err(e) => reply.extend_from_slice(e.to_message().raw()),
                    },
                    Err(e) => reply.extend_from_slice(e.to_message().raw()),
                }
                reply.extend_from_slice(ready_for_query(self.state.tx_status.load(Ordering::Acquire)).raw());
                write_client(&self.cw, &reply).await?;
            }
            b'P' => {
                let Some((name, sql)) = parse_text(msg.body()) else {
                    self.forward(&msg);
                    return Ok(None);
                };
                let name = name.to_string();
                let statements = split_statements(sql, standard);
                if let Some(end) = self.local_turn().await?.stop() {
                    return Ok(end);
                }
                let prepared = if statements.len() > 1 {
                    Err(PgError::error("42601", "cannot insert multiple commands into a prepared statement"))
                } else if !name.is_empty() && self.statements.contains_key(&name) {
                    Err(PgError::error("42P05", format!("prepared statement \"{name}\" already exists")))
                } else {
                    self.prepare(&statements)
                };
                match prepared {
                    Ok(p) => {
                        self.statements.insert(name, p);
                        self.local_reply(&[Message::new(b'1', b"")]).await?;
                    }
                    Err(e) => self.local_error(e).await?,
                }
            }
            b'B' => {
                let Some((portal, rest)) = names(msg.body(), 0) else {
                    self.forward(&msg);
                    return Ok(None);
                };
                let stmt = names(rest, 0).map(|(s, _)| s).unwrap_or_default();
                let formats = bind_result_formats(rest).unwrap_or_default();
                let Some(prepared) = self.statements.get(stmt).cloned() else {
                    self.forward(&msg);
                    return Ok(None);
                };
                let portal = portal.to_string();
                let params = bind_parameter_count(rest);
                if let Some(end) = self.local_turn().await?.stop() {
                    return Ok(end);
                }
                if params != Some(0) {
                    let n = params.map_or("an unreadable number of".to_string(), |n| n.to_string());
                    return self
                        .local_error(PgError::error(
                            "08P01",
                            format!("bind message supplies {n} parameters, but prepared statement \"{stmt}\" requires 0"),
                        ))
                        .await
                        .map(|_| None);
                }
                self.described.remove(&portal);
                self.portals.insert(portal, (prepared, formats));
                self.local_reply(&[Message::new(b'2', b"")]).await?;
            }
            b'D' => {
                let kind = msg.body().first().copied();
                let name = names(msg.body(), 1).map(|(n, _)| n).unwrap_or_default();
                let local = match kind {
                    Some(b'S') => self.statements.get(name).map(|p| (p.clone(), Vec::new())),
                    _ => self.portals.get(name).cloned(),
                };
                let Some((prepared, formats)) = local else {
                    self.forward(&msg);
                    return Ok(None);
                };
                if let Some(end) = self.local_turn().await?.stop() {
                    return Ok(end);
                }
                let columns = match self.gw.statements.shape(&prepared) {
                    Shape::Known(columns) => columns,
                    Shape::Run => match self
                        .gw
                        .statements
                        .execute(&prepared, self.info, self.in_transaction(), &self.time_zone())
                        .await
                    {
                        Ok(r) => {
                            let cols = r.columns.clone();
                            if kind != Some(b'S') {
                                self.described.insert(name.to_string(), r);
                            }
                            cols
                        }
                        Err(e) => return self.local_error(e).await.map(|_| None),
                    },
                };
                let shape = match columns {
                    Some(cols) => row_description(cols.iter().enumerate().map(|(i, c)| (&*c.name, c.type_oid, format_of(&formats, i)))),
                    None => Message::new(b'n', b""),
                };
                if kind == Some(b'S') {
                    self.local_reply(&[no_parameters(), shape]).await?;
                } else {
                    self.local_reply(&[shape]).await?;
                }
            }
            b'E' => {
                let portal = names(msg.body(), 0).map(|(n, _)| n).unwrap_or_default();
                let Some((prepared, formats)) = self.portals.get(portal).cloned() else {
                    self.forward(&msg);
                    return Ok(None);
                };
                if let Some(end) = self.local_turn().await?.stop() {
                    return Ok(end);
                }
                let result = match self.described.remove(portal) {
                    Some(r) => Ok(r),
                    None => {
                        self.gw
                            .statements
                            .execute(&prepared, self.info, self.in_transaction(), &self.time_zone())
                            .await
                    }
                };
                match result {
                    Ok(r) => {
                        let mut reply = BytesMut::new();
                        // An error while the rows came skips the rest of the batch, as PostgreSQL does.
                        self.skipping = write_reply(&self.cw, &r, Some(&formats), &mut reply).await?;
                        write_client(&self.cw, &reply).await?;
                    }
                    Err(e) => self.local_error(e).await?,
                }
            }
            // A Close of dyngate's statement or portal: route removed it.
            b'C' => match self.local_turn().await? {
                Turn::Go => self.local_reply(&[Message::new(b'3', b"")]).await?,
                Turn::Skip => {}
                Turn::End => return Ok(Some(ClientEnd::Violation)),
            },
            // A Sync ending a batch of dyngate's own messages only: answered after whatever the
            // backend still owes from earlier batches.
            b'S' => {
                if !self.settle().await? {
                    return Ok(Some(ClientEnd::Violation));
                }
                write_client(&self.cw, ready_for_query(self.state.tx_status.load(Ordering::Acquire)).raw()).await?;
            }
            b'X' => {
                self.forward(&msg);
                let _ = flush(&mut self.bw, &mut self.out).await;
                return Ok(Some(ClientEnd::Closed));
            }
            _ => self.forward(&msg),
        }
        Ok(None)
    }

    /// Before answering one of dyngate's own extended-protocol messages: marks the batch as
    /// having one and settles (see [`settle`](Self::settle)).
    async fn local_turn(&mut self) -> std::io::Result<Turn> {
        self.batch_local = true;
        if !self.settle().await? {
            return Ok(Turn::End);
        }
        Ok(if self.skipping { Turn::Skip } else { Turn::Go })
    }

    /// Waits until the backend has answered everything forwarded so far, so that a reply of
    /// dyngate's own comes after them. Returns false (after telling the client) when the client
    /// sent one of dyngate's statements in the middle of a COPY, which PostgreSQL refuses too.
    /// If a forwarded message of the current batch failed, the batch is skipped from here on.
    async fn settle(&mut self) -> std::io::Result<bool> {
        if self.state.copy_in.load(Ordering::Acquire) {
            let e = PgError::fatal("08P01", "unexpected message type during COPY from stdin");
            write_client(&self.cw, e.to_message().raw()).await?;
            return Ok(false);
        }
        if !self.state.is_idle() {
            self.out.extend_from_slice(FLUSH);
        }
        flush(&mut self.bw, &mut self.out).await?;
        self.state.wait_idle().await;
        if self.batch_forwarded && self.state.lock().batch_failed() {
            self.skipping = true;
        }
        Ok(true)
    }

    async fn local_reply(&mut self, msgs: &[Message]) -> std::io::Result<()> {
        if self.skipping {
            return Ok(());
        }
        let mut b = BytesMut::new();
        msgs.iter().for_each(|m| b.extend_from_slice(m.raw()));
        write_client(&self.cw, &b).await
    }

    /// Reports an error in one of dyngate's extended-protocol messages; the rest of the batch is
    /// skipped up to Sync.
    async fn local_error(&mut self, e: PgError) -> std::io::Result<()> {
        if self.skipping {
            return Ok(());
        }
        self.skipping = true;
        write_client(&self.cw, e.to_message().raw()).await
    }
}

/// `map` has `name` (without hashing it when `map` is empty, the usual case).
fn has<V>(map: &HashMap<String, V>, name: &str) -> bool {
    !map.is_empty() && map.contains_key(name)
}

/// Whether one of dyngate's own extended-protocol messages is to be answered.
enum Turn {
    Go,
    /// The batch failed: skipped, as PostgreSQL skips to Sync.
    Skip,
    /// The session ends (the client has been told why).
    End,
}

impl Turn {
    /// What the handling of the message returns now, unless it goes on (None).
    fn stop(self) -> Option<Option<ClientEnd>> {
        match self {
            Turn::Go => None,
            Turn::Skip => Some(None),
            Turn::End => Some(Some(ClientEnd::Violation)),
        }
    }
}

/// The number of parameter values in a Bind body after its portal name (`rest` starts at the
/// statement name).
fn bind_parameter_count(rest: &[u8]) -> Option<u16> {
    let (_, after) = names(rest, 0)?;
    let nformats = u16::from_be_bytes([*after.first()?, *after.get(1)?]) as usize;
    let at = 2 + 2 * nformats;
    Some(u16::from_be_bytes([*after.get(at)?, *after.get(at + 1)?]))
}

/// The result format codes of a Bind body (`rest` starts at the statement name): one per column,
/// one for all, or none (all text).
fn bind_result_formats(rest: &[u8]) -> Option<Vec<i16>> {
    let (_, after) = names(rest, 0)?;
    let get = |at: usize| Some(i16::from_be_bytes([*after.get(at)?, *after.get(at + 1)?]));
    let nformats = get(0)? as usize;
    let mut at = 2 + 2 * nformats;
    let nparams = get(at)? as usize;
    at += 2;
    for _ in 0..nparams {
        let len = i32::from_be_bytes([*after.get(at)?, *after.get(at + 1)?, *after.get(at + 2)?, *after.get(at + 3)?]);
        at += 4 + len.max(0) as usize;
    }
    let nresults = get(at)? as usize;
    (0..nresults).map(|i| get(at + 2 + 2 * i)).collect()
}

/// The format of result column `i` under Bind's format codes.
fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [f] => *f,
        fs => fs.get(i).copied().unwrap_or(0),
    }
}

/// Encodes a handler's reply. Simple protocol (`formats` None): RowDescription, rows in text,
/// the command tag. Extended protocol: the rows in the formats Bind asked for (RowDescription
/// answered Describe already), the command tag.
/// A reply's notices, its RowDescription (simple protocol: the extended one sent it at Describe)
/// and its first rows.
fn encode_head(r: &Reply, formats: Option<&[i16]>, out: &mut BytesMut) {
    for n in &r.notices {
        out.extend_from_slice(notice(n).raw());
    }
    let cols = r.columns.as_deref().unwrap_or_default();
    if formats.is_none() && !cols.is_empty() {
        out.extend_from_slice(row_description(cols.iter().map(|c| (&*c.name, c.type_oid, 0))).raw());
    }
    encode_rows(&r.rows, cols, formats, out);
}

/// DataRows, each value in the format the client asked for (text when `formats` is None).
fn encode_rows(rows: &[Vec<Option<String>>], cols: &[Column], formats: Option<&[i16]>, out: &mut BytesMut) {
    for row in rows {
        let values = row.iter().enumerate().map(|(i, v)| {
            let oid = cols.get(i).map_or(TEXT, |c| c.type_oid);
            v.as_deref().map(|s| match formats {
                Some(f) if format_of(f, i) == 1 => binary_value(oid, s),
                _ => s.as_bytes().to_vec(),
            })
        });
        out.extend_from_slice(data_row(values).raw());
    }
}

/// A whole reply. Rows still coming (`Reply::more`: a Flink query's pages) are written as they
/// arrive, with the command tag counting all of them; an error while they come ends the result
/// with its ErrorResponse, as PostgreSQL ends a query that fails midway. `out` holds what goes
/// before; what goes after the reply is up to the caller. Returns whether it ended with an error.
async fn write_reply(cw: &ClientWriter, r: &Reply, formats: Option<&[i16]>, out: &mut BytesMut) -> std::io::Result<bool> {
    encode_head(r, formats, out);
    let Some(more) = &r.more else {
        out.extend_from_slice(command_complete(&r.tag).raw());
        return Ok(false);
    };
    let cols = r.columns.as_deref().unwrap_or_default();
    let mut n = r.rows.len();
    loop {
        write_client(cw, out).await?;
        out.clear();
        match more.next().await {
            Some(Ok(rows)) => {
                n += rows.len();
                encode_rows(&rows, cols, formats, out);
            }
            Some(Err(e)) => {
                out.extend_from_slice(e.to_message().raw());
                return Ok(true);
            }
            None => break,
        }
    }
    out.extend_from_slice(command_complete(&format!("SELECT {n}")).raw());
    Ok(false)
}

/// The binary form of a value the handlers return as text (wire::binary).
fn binary_value(oid: u32, text: &str) -> Vec<u8> {
    crate::wire::binary::encode(oid, text).unwrap_or_else(|| text.as_bytes().to_vec())
}

async fn flush(bw: &mut OwnedWriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        bw.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

async fn write_client(cw: &ClientWriter, bytes: &[u8]) -> std::io::Result<()> {
    let mut w = cw.lock().await;
    w.write_all(bytes).await?;
    w.flush().await
}

async fn violation(cw: &ClientWriter, e: FrameError) -> ClientEnd {
    let err = PgError::fatal("08P01", format!("invalid frontend message: {e}"));
    let _ = write_client(cw, err.to_message().raw()).await;
    ClientEnd::Violation
}

async fn close_for_shutdown(cw: &ClientWriter) -> ClientEnd {
    let err = PgError::fatal("57P01", "terminating connection due to administrator command").with_detail("The gateway is shutting down.");
    let _ = write_client(cw, err.to_message().raw()).await;
    ClientEnd::Shutdown
}

/// Relays everything the backend sends, accounting for replies from the tags: once per read, under
/// one lock.
async fn backend_to_client(mut br: OwnedReadHalf, mut buf: BytesMut, cw: ClientWriter, state: &State) -> std::io::Result<()> {
    loop {
        let (end, became_idle) = scan_replies(&mut buf, state)?;
        if end > 0 {
            write_client(&cw, &buf[..end]).await?;
            buf.advance(end);
            if became_idle {
                state.idle.notify_waiters();
            }
        }
        if br.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Reads the tags of the whole messages at the front of `buf` into the session's state. Returns
/// their length, and whether they left nothing owed (having answered something).
fn scan_replies(buf: &mut BytesMut, state: &State) -> std::io::Result<(usize, bool)> {
    let mut end = 0;
    let mut pending = None;
    let mut answered = false;
    while buf.len() - end >= 5 {
        let len = i32::from_be_bytes([buf[end + 1], buf[end + 2], buf[end + 3], buf[end + 4]]);
        if len < 4 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid message length from backend",
            ));
        }
        let total = len as usize + 1;
        if buf.len() - end < total {
            buf.reserve(total - (buf.len() - end));
            break;
        }
        let tag = buf[end];
        match tag {
            b'Z' => {
                state.tx_status.store(buf.get(end + 5).copied().unwrap_or(b'I'), Ordering::Release);
                state.copy_in.store(false, Ordering::Release);
                pending.get_or_insert_with(|| state.lock()).received(tag);
                answered = true;
            }
            b'G' => {
                state.copy_in.store(true, Ordering::Release);
                pending.get_or_insert_with(|| state.lock()).received(tag);
            }
            // Replies that complete an extended-protocol message, and errors (DataRow, the
            // bulk of the traffic, is not among them).
            b'E' | b'1' | b'2' | b'3' | b'T' | b'n' | b'C' | b'I' | b's' => {
                pending.get_or_insert_with(|| state.lock()).received(tag);
                answered = true;
            }
            b'S' => {
                let body = &buf[end + 5..end + total];
                if let Some(v) = parameter_value(body, "standard_conforming_strings") {
                    state.standard_strings.store(v == "on", Ordering::Release);
                }
                if let Some(v) = parameter_value(body, "TimeZone") {
                    *state.time_zone.lock().unwrap_or_else(|e| e.into_inner()) = v.to_string();
                }
            }
            _ => {}
        }
        end += total;
    }
    let idle = pending.map(|p| {
        let n = p.unanswered();
        state.unanswered.store(n, Ordering::Release);
        n == 0
    });
    Ok((end, answered && idle == Some(true)))
}

#[cfg(test)]
mod tests {
    use crate::wire::codec::parameter_value;

    #[test]
    fn bind_formats() {
        // Statement "s", one parameter format (text), one parameter "ab", two result formats.
        let rest = b"s\0\0\x01\0\0\0\x01\0\0\0\x02ab\0\x02\0\x01\0\0";
        assert_eq!(super::bind_result_formats(rest), Some(vec![1, 0]));
        assert_eq!(super::bind_result_formats(b"s\0\0\0\0\0\0\0"), Some(vec![]));
        assert_eq!(super::bind_result_formats(b"s\0\0"), None);
        assert_eq!(super::format_of(&[1], 5), 1);
        assert_eq!(super::format_of(&[], 0), 0);
        assert_eq!(super::format_of(&[0, 1], 1), 1);
        assert_eq!(super::binary_value(crate::wire::binary::INT8, "3"), 3i64.to_be_bytes());
        assert_eq!(super::binary_value(crate::wire::binary::BOOL, "t"), [1]);
    }

    #[test]
    fn parameter_status_values() {
        let body = b"standard_conforming_strings\0off\0";
        assert_eq!(parameter_value(body, "standard_conforming_strings"), Some("off"));
        assert_eq!(parameter_value(body, "TimeZone"), None);
        assert_eq!(parameter_value(b"standard_conforming_strings", "standard_conforming_strings"), None);
    }
}
