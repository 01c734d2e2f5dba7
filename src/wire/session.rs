//! One client session after start-up: two relay directions over one dedicated backend connection.
//!
//! Client to backend: whole messages are forwarded as they arrived, batched into one write per
//! read. Simple Query and Parse texts pass through the classifier first; a statement dyngate owns
//! is answered by the [`Handler`](crate::handler::Handler) once every reply the backend still owes
//! has reached the client, so replies stay in order. Backend to client: bytes are relayed
//! unchanged; only message tags are read, to track ReadyForQuery (replies owed, transaction
//! status) and COPY.
//!
//! The two directions run concurrently so that neither side can stall the other (a client that
//! pipelines many queries while the backend writes large results would otherwise deadlock).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, Notify, watch};

use crate::handler::SessionInfo;
use crate::sql::{Route, classify, split_statements};
use crate::wire::cancel::{BackendKey, send_cancel};
use crate::wire::codec::{FrameError, Message, PgError, query_text, ready_for_query, split_message};
use crate::wire::conn::Framed;
use crate::wire::pending::Pending;
use crate::wire::startup::ClientStream;
use crate::wire::{Gateway, Phase};

/// What both directions know of the session.
struct State {
    /// The ReadyForQuery replies the backend still owes.
    pending: std::sync::Mutex<Pending>,
    /// `pending.owed()`, readable without the lock.
    owed: AtomicU32,
    /// The transaction status of the last ReadyForQuery: `I`, `T` or `E`.
    tx_status: AtomicU8,
    /// The backend is in COPY FROM STDIN.
    copy_in: AtomicBool,
    /// The session's standard_conforming_strings, as the backend last reported it.
    standard_strings: AtomicBool,
    /// Signalled when `owed` drops to zero.
    idle: Notify,
}

impl State {
    fn is_idle(&self) -> bool {
        self.owed.load(Ordering::Acquire) == 0
    }

    /// Updates the reply accounting; returns the number of replies owed afterwards.
    fn track(&self, f: impl FnOnce(&mut Pending)) -> u32 {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p);
        let owed = p.owed();
        self.owed.store(owed, Ordering::Release);
        owed
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
pub async fn run(
    gw: Arc<Gateway>,
    client: Framed<ClientStream>,
    backend: Framed<TcpStream>,
    key: Option<(u32, BackendKey)>,
    info: SessionInfo,
    standard_strings: bool,
    shutdown: watch::Receiver<Phase>,
) {
    let Framed { stream: cs, rbuf: crbuf } = client;
    let (cr, cw) = tokio::io::split(cs);
    let cw: ClientWriter = Arc::new(Mutex::new(cw));
    let Framed { stream: bs, rbuf: brbuf } = backend;
    let (br, bw) = bs.into_split();
    let state = Arc::new(State {
        pending: std::sync::Mutex::new(Pending::default()),
        owed: AtomicU32::new(0),
        tx_status: AtomicU8::new(b'I'),
        copy_in: AtomicBool::new(false),
        standard_strings: AtomicBool::new(standard_strings),
        idle: Notify::new(),
    });

    let up = client_to_backend(&gw, cr, crbuf, bw, cw.clone(), &state, &info, shutdown);
    let down = backend_to_client(br, brbuf, cw.clone(), &state);
    tokio::select! {
        end = up => match end {
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

#[allow(clippy::too_many_arguments)]
async fn client_to_backend(
    gw: &Gateway,
    mut cr: ReadHalf<ClientStream>,
    mut buf: BytesMut,
    mut bw: OwnedWriteHalf,
    cw: ClientWriter,
    state: &State,
    info: &SessionInfo,
    mut shutdown: watch::Receiver<Phase>,
) -> ClientEnd {
    let mut out = BytesMut::with_capacity(8192);
    let mut draining = *shutdown.borrow() != Phase::Running;
    loop {
        loop {
            let msg = match split_message(&mut buf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return violation(&cw, e).await,
            };
            // Once draining, an idle session is closed rather than given new work.
            if draining && msg.tag() != b'X' && out.is_empty() && state.is_idle() && !state.copy_in.load(Ordering::Acquire) {
                return close_for_shutdown(&cw).await;
            }
            match msg.tag() {
                b'Q' => {
                    let standard = state.standard_strings.load(Ordering::Acquire);
                    let route = query_text(&msg).map(|q| classify(q, standard)).unwrap_or(Route::Forward);
                    match route {
                        Route::Forward => {
                            state.track(Pending::sent_query);
                            out.extend_from_slice(msg.raw());
                        }
                        Route::Intercept(kind) => {
                            if flush(&mut bw, &mut out).await.is_err() {
                                return ClientEnd::Closed;
                            }
                            tracing::debug!(owed = state.owed.load(Ordering::Acquire), "waiting for the backend to be idle");
                            state.wait_idle().await;
                            let sql = query_text(&msg).unwrap_or_default();
                            let statements = split_statements(sql, standard);
                            let mut reply = BytesMut::new();
                            match gw.handler.handle(kind, &statements, info).await {
                                Ok(msgs) => msgs.iter().for_each(|m| reply.extend_from_slice(m.raw())),
                                Err(e) => reply.extend_from_slice(e.to_message().raw()),
                            }
                            reply.extend_from_slice(ready_for_query(state.tx_status.load(Ordering::Acquire)).raw());
                            if write_client(&cw, &reply).await.is_err() {
                                return ClientEnd::Closed;
                            }
                        }
                    }
                }
                b'S' => {
                    state.track(Pending::sent_sync);
                    out.extend_from_slice(msg.raw());
                }
                b'F' => {
                    state.track(Pending::sent_query);
                    out.extend_from_slice(msg.raw());
                }
                b'c' | b'f' => {
                    state.track(Pending::sent_copy_end);
                    out.extend_from_slice(msg.raw());
                }
                b'X' => {
                    out.extend_from_slice(msg.raw());
                    let _ = flush(&mut bw, &mut out).await;
                    return ClientEnd::Closed;
                }
                _ => out.extend_from_slice(msg.raw()),
            }
        }
        if flush(&mut bw, &mut out).await.is_err() {
            return ClientEnd::Closed;
        }
        tokio::select! {
            r = cr.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return ClientEnd::Closed,
                Ok(_) => {}
            },
            _ = shutdown.changed(), if !draining => {
                draining = true;
                if state.is_idle() && !state.copy_in.load(Ordering::Acquire) {
                    return close_for_shutdown(&cw).await;
                }
            }
            // While draining, close as soon as the running statement has finished.
            _ = tokio::time::sleep(Duration::from_millis(50)), if draining => {
                if state.is_idle() && !state.copy_in.load(Ordering::Acquire) {
                    return close_for_shutdown(&cw).await;
                }
            }
        }
    }
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

/// Relays everything the backend sends, tracking ReadyForQuery and COPY from the tags.
async fn backend_to_client(mut br: OwnedReadHalf, mut buf: BytesMut, cw: ClientWriter, state: &State) -> std::io::Result<()> {
    loop {
        let mut end = 0;
        let mut became_idle = false;
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
            match buf[end] {
                b'Z' => {
                    state.tx_status.store(buf.get(end + 5).copied().unwrap_or(b'I'), Ordering::Release);
                    state.copy_in.store(false, Ordering::Release);
                    if state.track(|p| {
                        p.ready();
                    }) == 0
                    {
                        became_idle = true;
                    }
                }
                b'G' => {
                    state.copy_in.store(true, Ordering::Release);
                    state.track(Pending::copy_in_started);
                }
                b'S' => {
                    if let Some(v) = parameter_value(&buf[end + 5..end + total], "standard_conforming_strings") {
                        state.standard_strings.store(v == "on", Ordering::Release);
                    }
                }
                _ => {}
            }
            end += total;
        }
        if end > 0 {
            let chunk = buf.split_to(end);
            write_client(&cw, &chunk).await?;
            if became_idle {
                state.idle.notify_waiters();
            }
        }
        if br.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// The value in a ParameterStatus body if it reports `name`.
pub fn parameter_value<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    let mut parts = body.split(|&b| b == 0);
    (parts.next()? == name.as_bytes())
        .then(|| parts.next().and_then(|v| std::str::from_utf8(v).ok()))
        .flatten()
}

/// A message the gateway sends on its own, kept here so handlers need not know framing.
pub fn command_complete(tag: &str) -> Message {
    let mut b = tag.as_bytes().to_vec();
    b.push(0);
    Message::new(b'C', &b)
}

#[cfg(test)]
mod tests {
    use super::parameter_value;

    #[test]
    fn parameter_status_values() {
        let body = b"standard_conforming_strings\0off\0";
        assert_eq!(parameter_value(body, "standard_conforming_strings"), Some("off"));
        assert_eq!(parameter_value(body, "TimeZone"), None);
        assert_eq!(parameter_value(b"standard_conforming_strings", "standard_conforming_strings"), None);
    }
}
