//! A logical replication connection to the backing PostgreSQL: what the WAL capture's streamer
//! (collect.rs) reads the slot through, so that the WAL is decoded once, as it is written,
//! instead of again from the slot's restart point by every peek.
//!
//! tokio-postgres has no replication protocol (CopyBoth), so this is a small client of its own:
//! the startup with `replication=database`, the authentication methods the service account may
//! meet (trust, password, md5, SCRAM-SHA-256, with postgres-protocol's implementations), then
//! `START_REPLICATION ... LOGICAL`, after which the server sends XLogData and keepalives and the
//! client answers with standby status updates (PostgreSQL's "Streaming Replication Protocol").
//! The framing and the copy-data messages are pure functions, with table tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::Host;

use crate::core::{quote_ident, quote_literal};
use crate::engine::postgres::incremental::wal::{Lsn, format_lsn};

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("replication connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("replication connection: {code}: {message}")]
    Server { code: String, message: String },
    #[error("replication connection: {0}")]
    Protocol(String),
}

impl ReplicationError {
    fn protocol(what: impl Into<String>) -> ReplicationError {
        ReplicationError::Protocol(what.into())
    }
}

/// What the server sends once streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One message of the output plug-in, with where in the WAL the server had got to.
    Data { start: Lsn, end: Lsn, data: Bytes },
    /// The server's position; `reply` when it wants a status update at once.
    Keepalive { end: Lsn, reply: bool },
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Reads a CopyData payload of the replication stream.
pub fn parse_copy_data(mut b: Bytes) -> Result<Event, ReplicationError> {
    if b.is_empty() {
        return Err(ReplicationError::protocol("an empty CopyData message"));
    }
    match b.get_u8() {
        b'w' if b.len() >= 24 => {
            let start = b.get_u64();
            let end = b.get_u64();
            let _sent_at = b.get_i64();
            Ok(Event::Data { start, end, data: b })
        }
        b'k' if b.len() == 17 => {
            let end = b.get_u64();
            let _sent_at = b.get_i64();
            Ok(Event::Keepalive {
                end,
                reply: b.get_u8() != 0,
            })
        }
        k => Err(ReplicationError::protocol(format!(
            "a CopyData message of kind {:?} and {} bytes",
            k as char,
            b.len()
        ))),
    }
}

/// A standby status update: everything up to `lsn` is written, flushed and applied (the slot's
/// confirmed position may move there), sent at `now`.
pub fn standby_status(lsn: Lsn, now: SystemTime) -> Bytes {
    let us = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let mut b = BytesMut::with_capacity(34);
    b.put_u8(b'r');
    b.put_u64(lsn);
    b.put_u64(lsn);
    b.put_u64(lsn);
    b.put_i64(us - PG_EPOCH_OFFSET_US);
    b.put_u8(0);
    b.freeze()
}

/// The command starting the stream: `pgoutput` protocol version 1, the publication's tables,
/// and logical messages (the capture's sync points).
pub fn start_command(slot: &str, from: Lsn, publication: &str) -> String {
    format!(
        "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {}, messages 'true')",
        quote_ident(slot),
        format_lsn(from),
        quote_literal(&quote_ident(publication)),
    )
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A replication connection, streaming once [`Connection::start`] returned.
pub struct Connection {
    io: Box<dyn Stream>,
    buf: BytesMut,
}

impl Connection {
    /// Connects as `config` says (its first host; TCP or a Unix socket directory), as a
    /// replication connection to its database.
    pub async fn connect(config: &tokio_postgres::Config, application_name: &str) -> Result<Connection, ReplicationError> {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let io: Box<dyn Stream> = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => {
                let s = tokio::net::TcpStream::connect((h.as_str(), port)).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Some(Host::Unix(dir)) => Box::new(tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?),
            None => Box::new(tokio::net::TcpStream::connect(("127.0.0.1", port)).await?),
        };
        let mut c = Connection {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let user = config.get_user().unwrap_or("postgres");
        let dbname = config.get_dbname().unwrap_or(user);
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", user),
                ("database", dbname),
                ("replication", "database"),
                ("application_name", application_name),
            ],
            &mut out,
        )?;
        c.io.write_all(&out).await?;
        c.authenticate(user, config.get_password()).await?;
        // ParameterStatus and BackendKeyData until ReadyForQuery.
        loop {
            let m = c.next_message().await?;
            match m.tag() {
                b'Z' => return Ok(c),
                b'S' | b'K' | b'N' => {}
                t => return Err(ReplicationError::protocol(format!("message {:?} during start-up", t as char))),
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), ReplicationError> {
        let needed = || ReplicationError::protocol("the server asks for a password, and the service account has none");
        let mut scram: Option<ScramSha256> = None;
        loop {
            let m = self.next_message().await?;
            if m.tag() != b'R' || m.body().len() < 4 {
                return Err(ReplicationError::protocol(format!(
                    "message {:?} during authentication",
                    m.tag() as char
                )));
            }
            let body = &m.body()[4..];
            let mut out = BytesMut::new();
            match u32::from_be_bytes([m.body()[0], m.body()[1], m.body()[2], m.body()[3]]) {
                0 => return Ok(()),
                3 => frontend::password_message(password.ok_or_else(needed)?, &mut out)?,
                5 if body.len() == 4 => {
                    let salt = [body[0], body[1], body[2], body[3]];
                    let hash = postgres_protocol::authentication::md5_hash(user.as_bytes(), password.ok_or_else(needed)?, salt);
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                10 => {
                    let offered = body.split(|&b| b == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
                    if !offered {
                        return Err(ReplicationError::protocol(
                            "the server offers no SASL mechanism but SCRAM-SHA-256-PLUS",
                        ));
                    }
                    let s = ScramSha256::new(password.ok_or_else(needed)?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| ReplicationError::protocol("SASL continue before SASL"))?;
                    s.update(body)?;
                    frontend::sasl_response(s.message(), &mut out)?;
                }
                12 => {
                    let s = scram.as_mut().ok_or_else(|| ReplicationError::protocol("SASL final before SASL"))?;
                    s.finish(body)?;
                    continue;
                }
                n => return Err(ReplicationError::protocol(format!("authentication method {n} is not supported"))),
            }
            self.io.write_all(&out).await?;
        }
    }

    /// Ends the connection politely (before streaming).
    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.io.write_all(&out).await;
    }

    /// Starts streaming the slot from `from` (the server starts from the slot's confirmed
    /// position if that is later).
    pub async fn start(&mut self, slot: &str, from: Lsn, publication: &str) -> Result<(), ReplicationError> {
        let mut out = BytesMut::new();
        frontend::query(&start_command(slot, from, publication), &mut out)?;
        self.io.write_all(&out).await?;
        loop {
            let m = self.next_message().await?;
            match m.tag() {
                b'W' => return Ok(()),
                b'N' => {}
                t => {
                    return Err(ReplicationError::protocol(format!(
                        "message {:?} after START_REPLICATION",
                        t as char
                    )));
                }
            }
        }
    }

    /// The next event of the stream. Cancel-safe: a call dropped midway loses nothing.
    pub async fn next(&mut self) -> Result<Event, ReplicationError> {
        loop {
            let m = self.next_message().await?;
            match m.tag() {
                b'd' => return parse_copy_data(m.body),
                b'N' => {}
                // CopyDone, or the command's end: the server is shutting down (or lost the slot).
                b'c' | b'C' | b'Z' => return Err(ReplicationError::protocol("the server ended the stream")),
                t => return Err(ReplicationError::protocol(format!("message {:?} while streaming", t as char))),
            }
        }
    }

    /// Tells the server that everything up to `lsn` is safe: the slot may move there.
    pub async fn confirm(&mut self, lsn: Lsn) -> Result<(), ReplicationError> {
        let data = standby_status(lsn, SystemTime::now());
        let mut out = BytesMut::new();
        frontend::CopyData::new(&data[..])?.write(&mut out);
        tokio::time::timeout(Duration::from_secs(30), self.io.write_all(&out))
            .await
            .map_err(|_| ReplicationError::protocol("a status update could not be sent for 30 s"))??;
        Ok(())
    }

    /// The next message; an ErrorResponse is returned as the error. postgres-protocol frames
    /// the messages and reads the error's fields.
    async fn next_message(&mut self) -> Result<Message, ReplicationError> {
        let bad = |e: std::io::Error| ReplicationError::protocol(e.to_string());
        loop {
            if let Some(header) = backend::Header::parse(&self.buf).map_err(bad)? {
                let total = header.len() as usize + 1;
                if self.buf.len() < total {
                    self.buf.reserve(total - self.buf.len());
                } else if header.tag() == b'E' {
                    let (mut code, mut message) = (String::new(), String::new());
                    if let Some(backend::Message::ErrorResponse(body)) = backend::Message::parse(&mut self.buf).map_err(bad)? {
                        let mut fields = body.fields();
                        while let Some(f) = fields.next().map_err(bad)? {
                            match f.type_() {
                                b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                                b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                                _ => {}
                            }
                        }
                    }
                    return Err(ReplicationError::Server { code, message });
                } else {
                    let raw = self.buf.split_to(total).freeze();
                    return Ok(Message {
                        tag: header.tag(),
                        body: raw.slice(5..),
                    });
                }
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(ReplicationError::protocol("the server closed the connection"));
            }
        }
    }
}

/// One message from the server: its tag and body.
struct Message {
    tag: u8,
    body: Bytes,
}

impl Message {
    fn tag(&self) -> u8 {
        self.tag
    }

    fn body(&self) -> &[u8] {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_data_messages() {
        let mut w = BytesMut::new();
        w.put_u8(b'w');
        w.put_u64(0x1_0000_0010);
        w.put_u64(0x1_0000_0020);
        w.put_i64(5);
        w.put_slice(b"Bxyz");
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(0x2A);
        k.put_i64(7);
        k.put_u8(1);
        let cases: Vec<(Bytes, Result<Event, ()>)> = vec![
            (
                w.freeze(),
                Ok(Event::Data {
                    start: 0x1_0000_0010,
                    end: 0x1_0000_0020,
                    data: Bytes::from_static(b"Bxyz"),
                }),
            ),
            (k.freeze(), Ok(Event::Keepalive { end: 0x2A, reply: true })),
            (Bytes::from_static(b""), Err(())),
            (Bytes::from_static(b"k\0\0"), Err(())),
            (Bytes::from_static(b"w\0\0\0\0"), Err(())),
            (Bytes::from_static(b"x123456789012345678901234"), Err(())),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_copy_data(bytes.clone()).map_err(|_| ()), want, "{bytes:?}");
        }
    }

    #[test]
    fn standby_status_updates() {
        let at = UNIX_EPOCH + Duration::from_micros(PG_EPOCH_OFFSET_US as u64 + 3);
        let b = standby_status(0x0102_0304_0506_0708, at);
        let lsn = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut want = vec![b'r'];
        for _ in 0..3 {
            want.extend_from_slice(&lsn);
        }
        want.extend_from_slice(&3i64.to_be_bytes());
        want.push(0);
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn start_commands_quote_names() {
        assert_eq!(
            start_command("dyngate_ab", 0x1_0000_00FF, "dyngate_capture"),
            "START_REPLICATION SLOT \"dyngate_ab\" LOGICAL 1/FF (proto_version '1', publication_names '\"dyngate_capture\"', messages 'true')"
        );
        assert_eq!(
            start_command("s\"x", 0, "p'q"),
            "START_REPLICATION SLOT \"s\"\"x\" LOGICAL 0/0 (proto_version '1', publication_names '\"p''q\"', messages 'true')"
        );
    }
}
