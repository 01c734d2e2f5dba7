//! PostgreSQL protocol v3 framing: splitting a byte stream into whole messages and building the few
//! messages the gateway writes itself.
//!
//! The relay never decodes what it forwards: a message stays the bytes it arrived as (tag, length,
//! body), so rows, type OIDs, command tags and error fields reach the client exactly as PostgreSQL
//! sent them. Only tags are inspected. This module must stay free of I/O policy (no sockets, no
//! session state): it is the pure layer that the session and the startup code share.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest message accepted from a client. PostgreSQL's own limit for most messages is 1 GiB
/// (`PQ_LARGE_MESSAGE_LIMIT`); anything longer is a broken or hostile peer.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;
/// Largest startup-phase packet (PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A framing violation: the peer sent bytes that are not a protocol message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("invalid startup packet length {0}")]
    BadStartupLength(i64),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// One protocol message, kept as its raw bytes (tag byte, 4-byte length, body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    raw: Bytes,
}

impl Message {
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }
    /// The body after the tag and the length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
    pub fn into_raw(self) -> Bytes {
        self.raw
    }
    /// Builds a message from a tag and a body.
    pub fn new(tag: u8, body: &[u8]) -> Message {
        let mut b = BytesMut::with_capacity(body.len() + 5);
        b.put_u8(tag);
        b.put_u32((body.len() + 4) as u32);
        b.put_slice(body);
        Message { raw: b.freeze() }
    }
}

/// The whole length (tag included) of the tagged message at the front of `buf`, once its header
/// (tag and length) is there; the body may still be incomplete.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64;
    if len < 4 || len as usize > MAX_MESSAGE_LEN {
        return Err(FrameError::BadLength(len));
    }
    Ok(Some(len as usize + 1))
}

/// Splits one whole tagged message off the front of `buf`, if `buf` holds one.
pub fn split_message(buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
    let Some(total) = message_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(take_message(buf, total)))
}

/// Splits the first `total` bytes off `buf` as a message (`total` from [`message_len`], and all
/// there).
pub fn take_message(buf: &mut BytesMut, total: usize) -> Message {
    Message {
        raw: buf.split_to(total).freeze(),
    }
}

/// Splits one untagged startup-phase packet (length, code, payload) off the front of `buf`.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as i64;
    if len < 8 || len as usize > MAX_STARTUP_LEN {
        return Err(FrameError::BadStartupLength(len));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    Ok(Some(buf.split_to(len as usize).freeze()))
}

/// What a client's first packet asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: u32,
        secret: Bytes,
    },
    /// A StartupMessage: protocol version and the parameters (user, database, options, ...).
    Startup {
        version: u32,
        params: Vec<(String, String)>,
    },
}

/// Decodes a packet produced by [`split_startup`].
pub fn parse_startup(packet: &Bytes) -> Result<StartupPacket, FrameError> {
    let mut p = &packet[4..];
    let code = p.get_u32();
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            if p.len() < 4 + 4 {
                return Err(FrameError::Malformed("CancelRequest"));
            }
            let pid = p.get_u32();
            Ok(StartupPacket::Cancel {
                pid,
                secret: Bytes::copy_from_slice(p),
            })
        }
        v if v >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let key = take_cstr(&mut p).ok_or(FrameError::Malformed("StartupMessage"))?;
                if key.is_empty() {
                    break;
                }
                let value = take_cstr(&mut p).ok_or(FrameError::Malformed("StartupMessage"))?;
                params.push((key, value));
            }
            Ok(StartupPacket::Startup { version: v, params })
        }
        _ => Err(FrameError::Malformed("startup packet (unsupported protocol version)")),
    }
}

/// Reads a NUL-terminated string, advancing `p` past the NUL.
pub fn take_cstr(p: &mut &[u8]) -> Option<String> {
    let end = p.iter().position(|&b| b == 0)?;
    let s = String::from_utf8_lossy(&p[..end]).into_owned();
    *p = &p[end + 1..];
    Some(s)
}

/// Encodes a CancelRequest packet for a backend.
pub fn cancel_request(pid: u32, secret: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(12 + secret.len());
    b.put_u32((12 + secret.len()) as u32);
    b.put_u32(CANCEL_REQUEST_CODE);
    b.put_u32(pid);
    b.put_slice(secret);
    b.freeze()
}

/// Severity of an error or notice the gateway writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error the gateway reports itself, in PostgreSQL's field layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    /// Five-character SQLSTATE.
    pub code: std::borrow::Cow<'static, str>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn new(severity: Severity, code: impl Into<std::borrow::Cow<'static, str>>, message: impl Into<String>) -> PgError {
        PgError {
            severity,
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
    pub fn error(code: impl Into<std::borrow::Cow<'static, str>>, message: impl Into<String>) -> PgError {
        PgError::new(Severity::Error, code, message)
    }
    pub fn fatal(code: impl Into<std::borrow::Cow<'static, str>>, message: impl Into<String>) -> PgError {
        PgError::new(Severity::Fatal, code, message)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> PgError {
        self.detail = Some(detail.into());
        self
    }

    /// The ErrorResponse message, with the fields psql and drivers read: S, V, C, M, D, H.
    pub fn to_message(&self) -> Message {
        let mut b = BytesMut::new();
        let mut field = |t: u8, v: &str| {
            b.put_u8(t);
            b.put_slice(v.as_bytes());
            b.put_u8(0);
        };
        field(b'S', self.severity.as_str());
        field(b'V', self.severity.as_str());
        field(b'C', &self.code);
        field(b'M', &self.message);
        if let Some(d) = &self.detail {
            field(b'D', d);
        }
        if let Some(h) = &self.hint {
            field(b'H', h);
        }
        b.put_u8(0);
        Message::new(b'E', &b)
    }
}

/// ReadyForQuery with the given transaction status (`I`, `T` or `E`).
pub fn ready_for_query(status: u8) -> Message {
    Message::new(b'Z', &[status])
}

/// RowDescription for columns given as (name, type OID, format code).
pub fn row_description<'a>(columns: impl ExactSizeIterator<Item = (&'a str, u32, i16)>) -> Message {
    let mut b = BytesMut::new();
    b.put_u16(columns.len() as u16);
    for (name, oid, format) in columns {
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_u32(0); // not a table column
        b.put_u16(0);
        b.put_u32(oid);
        b.put_i16(-1); // type size: variable, as for text
        b.put_i32(-1); // no type modifier
        b.put_i16(format);
    }
    Message::new(b'T', &b)
}

/// DataRow of encoded values (`None` is NULL).
pub fn data_row(values: impl ExactSizeIterator<Item = Option<Vec<u8>>>) -> Message {
    let mut b = BytesMut::new();
    b.put_u16(values.len() as u16);
    for v in values {
        match v {
            Some(v) => {
                b.put_u32(v.len() as u32);
                b.put_slice(&v);
            }
            None => b.put_i32(-1),
        }
    }
    Message::new(b'D', &b)
}

/// CommandComplete with the given tag.
pub fn command_complete(tag: &str) -> Message {
    let mut b = tag.as_bytes().to_vec();
    b.push(0);
    Message::new(b'C', &b)
}

/// A NoticeResponse with severity NOTICE (SQLSTATE 00000).
pub fn notice(message: &str) -> Message {
    let mut b = BytesMut::new();
    for (t, v) in [(b'S', "NOTICE"), (b'V', "NOTICE"), (b'C', "00000"), (b'M', message)] {
        b.put_u8(t);
        b.put_slice(v.as_bytes());
        b.put_u8(0);
    }
    b.put_u8(0);
    Message::new(b'N', &b)
}

/// ParameterDescription for a statement without parameters.
pub fn no_parameters() -> Message {
    Message::new(b't', &[0, 0])
}

/// Reads the SQL text of a simple Query ('Q') message body.
pub fn query_text(body: &[u8]) -> Option<&str> {
    let end = body.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&body[..end]).ok()
}

/// Reads the statement name and SQL text of a Parse ('P') message body.
pub fn parse_text(body: &[u8]) -> Option<(&str, &str)> {
    let n1 = body.iter().position(|&b| b == 0)?;
    let rest = &body[n1 + 1..];
    let n2 = rest.iter().position(|&b| b == 0)?;
    Some((std::str::from_utf8(&body[..n1]).ok()?, std::str::from_utf8(&rest[..n2]).ok()?))
}

/// The first NUL-terminated name of a Bind (portal), Describe or Close body after `skip` bytes,
/// and for Bind the statement name after it.
pub fn names(body: &[u8], skip: usize) -> Option<(&str, &[u8])> {
    let rest = body.get(skip..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some((std::str::from_utf8(&rest[..end]).ok()?, &rest[end + 1..]))
}

/// The fields of an ErrorResponse or NoticeResponse body, as (code, value) pairs.
pub fn error_fields(msg: &Message) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut p = msg.body();
    while let Some((&t, rest)) = p.split_first() {
        if t == 0 {
            break;
        }
        p = rest;
        match take_cstr(&mut p) {
            Some(v) => out.push((t, v)),
            None => break,
        }
    }
    out
}

/// The value in a ParameterStatus body if it reports `name`.
pub fn parameter_value<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    let mut parts = body.split(|&b| b == 0);
    (parts.next()? == name.as_bytes())
        .then(|| parts.next().and_then(|v| std::str::from_utf8(v).ok()))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_waits_for_whole_message_and_keeps_the_rest() {
        let m1 = Message::new(b'Q', b"select 1\0");
        let m2 = Message::new(b'X', b"");
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&m1.raw()[..3]);
        assert_eq!(split_message(&mut buf), Ok(None));
        buf.extend_from_slice(&m1.raw()[3..]);
        buf.extend_from_slice(m2.raw());
        assert_eq!(split_message(&mut buf), Ok(Some(m1)));
        assert_eq!(split_message(&mut buf), Ok(Some(m2)));
        assert!(buf.is_empty());
    }

    #[test]
    fn split_rejects_bad_lengths() {
        for len in [-1i32, 0, 3, (MAX_MESSAGE_LEN as i32) + 1] {
            let mut buf = BytesMut::new();
            buf.put_u8(b'Q');
            buf.put_i32(len);
            assert_eq!(split_message(&mut buf), Err(FrameError::BadLength(len as i64)), "len {len}");
        }
    }

    #[test]
    fn startup_packets_decode() {
        let mut buf = BytesMut::new();
        buf.put_u32(8);
        buf.put_u32(SSL_REQUEST_CODE);
        let p = split_startup(&mut buf).unwrap().unwrap();
        assert_eq!(parse_startup(&p), Ok(StartupPacket::SslRequest));

        let mut body = BytesMut::new();
        body.put_u32(196608);
        body.put_slice(b"user\0alice\0database\0db\0\0");
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32 + 4);
        buf.put_slice(&body);
        let p = split_startup(&mut buf).unwrap().unwrap();
        assert_eq!(
            parse_startup(&p),
            Ok(StartupPacket::Startup {
                version: 196608,
                params: vec![("user".into(), "alice".into()), ("database".into(), "db".into())]
            })
        );

        let c = cancel_request(7, &[1, 2, 3, 4]);
        let mut buf = BytesMut::from(&c[..]);
        let p = split_startup(&mut buf).unwrap().unwrap();
        assert_eq!(
            parse_startup(&p),
            Ok(StartupPacket::Cancel {
                pid: 7,
                secret: Bytes::from_static(&[1, 2, 3, 4])
            })
        );
    }

    #[test]
    fn startup_rejects_garbage() {
        let mut buf = BytesMut::new();
        buf.put_u32(9_999_999);
        assert!(split_startup(&mut buf).is_err());
        let mut buf = BytesMut::new();
        buf.put_u32(12);
        buf.put_u32(1234);
        buf.put_u32(0);
        let p = split_startup(&mut buf).unwrap().unwrap();
        assert!(parse_startup(&p).is_err());
        // A StartupMessage whose parameter list is not NUL-terminated.
        let mut buf = BytesMut::new();
        buf.put_u32(14);
        buf.put_u32(196608);
        buf.put_slice(b"user\0a");
        let p = split_startup(&mut buf).unwrap().unwrap();
        assert!(parse_startup(&p).is_err());
    }

    #[test]
    fn error_response_round_trips_fields() {
        let e = PgError::error("0A000", "nope").with_hint("try later").with_detail("d");
        let m = e.to_message();
        assert_eq!(m.tag(), b'E');
        let f = error_fields(&m);
        assert!(f.contains(&(b'C', "0A000".into())));
        assert!(f.contains(&(b'M', "nope".into())));
        assert!(f.contains(&(b'H', "try later".into())));
        assert!(f.contains(&(b'D', "d".into())));
        assert!(f.contains(&(b'S', "ERROR".into())));
    }

    #[test]
    fn reply_encoding() {
        let t = row_description([("name", 25u32, 0i16), ("n", 20, 1)].into_iter());
        assert_eq!(t.tag(), b'T');
        assert_eq!(&t.body()[..2], &[0, 2]);
        assert_eq!(&t.body()[2..7], b"name\0");
        let d = data_row([Some(b"ab".to_vec()), None].into_iter());
        assert_eq!(d.body(), &[0, 2, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(command_complete("SHOW").raw().as_ref(), b"C\0\0\0\x09SHOW\0");
        let b = Message::new(b'B', b"portal\0stmt\0rest");
        let (portal, rest) = names(b.body(), 0).unwrap();
        assert_eq!(portal, "portal");
        assert_eq!(names(rest, 0).unwrap().0, "stmt");
        let d = Message::new(b'D', b"Sname\0");
        assert_eq!(names(d.body(), 1).unwrap().0, "name");
    }

    #[test]
    fn query_and_parse_text() {
        let q = Message::new(b'Q', b"select 1\0");
        assert_eq!(query_text(q.body()), Some("select 1"));
        let p = Message::new(b'P', b"s1\0select $1\0\0\0");
        assert_eq!(parse_text(p.body()), Some(("s1", "select $1")));
    }
}
