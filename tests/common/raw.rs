//! A raw protocol connection, for sending what no well-behaved driver would and for checking
//! exactly which messages come back.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use dyngate::wire::codec::{Message, split_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw protocol connection, for sending what no well-behaved driver would.
pub struct Raw {
    pub s: TcpStream,
    pub buf: bytes::BytesMut,
}

impl Raw {
    pub async fn connect(addr: &str) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: bytes::BytesMut::new(),
        }
    }

    /// Start-up as a role that needs no password (a member of trust_users, see scripts/pg-temp).
    pub async fn login(addr: &str, user: &str, db: &str) -> Raw {
        let mut r = Raw::connect(addr).await;
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes());
        for (k, v) in [("user", user), ("database", db)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        pkt.extend_from_slice(&body);
        r.s.write_all(&pkt).await.unwrap();
        r.until_ready().await;
        r
    }

    /// Next message, or None when the server closed the connection.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = split_message(&mut self.buf).unwrap() {
                return Some(m);
            }
            let n = tokio::time::timeout(Duration::from_secs(20), self.s.read_buf(&mut self.buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    pub async fn until_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.tag() == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
        panic!("connection closed before ReadyForQuery: {out:?}");
    }

    pub async fn send(&mut self, m: &Message) {
        self.s.write_all(m.raw()).await.unwrap();
    }

    pub async fn query(&mut self, sql: &str) -> Vec<Message> {
        self.send(&Message::new(b'Q', format!("{sql}\0").as_bytes())).await;
        self.until_ready().await
    }
}

// ---------------------------------------------------------------------------------------------
// Frontend messages, built by hand.

pub fn put_cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

pub fn query(sql: &str) -> Message {
    let mut b = BytesMut::new();
    put_cstr(&mut b, sql);
    Message::new(b'Q', &b)
}

pub fn parse(name: &str, sql: &str, param_types: &[u32]) -> Message {
    let mut b = BytesMut::new();
    put_cstr(&mut b, name);
    put_cstr(&mut b, sql);
    b.put_i16(param_types.len() as i16);
    for t in param_types {
        b.put_u32(*t);
    }
    Message::new(b'P', &b)
}

pub fn bind(portal: &str, stmt: &str, param_formats: &[i16], params: &[Option<&[u8]>], result_formats: &[i16]) -> Message {
    let mut b = BytesMut::new();
    put_cstr(&mut b, portal);
    put_cstr(&mut b, stmt);
    b.put_i16(param_formats.len() as i16);
    for f in param_formats {
        b.put_i16(*f);
    }
    b.put_i16(params.len() as i16);
    for p in params {
        match p {
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v);
            }
            None => b.put_i32(-1),
        }
    }
    b.put_i16(result_formats.len() as i16);
    for f in result_formats {
        b.put_i16(*f);
    }
    Message::new(b'B', &b)
}

/// Bind with text parameters and text results.
pub fn bind_text(portal: &str, stmt: &str, params: &[Option<&str>]) -> Message {
    let params: Vec<Option<&[u8]>> = params.iter().map(|p| p.map(str::as_bytes)).collect();
    bind(portal, stmt, &[], &params, &[])
}

pub fn describe(kind: u8, name: &str) -> Message {
    let mut b = BytesMut::new();
    b.put_u8(kind);
    put_cstr(&mut b, name);
    Message::new(b'D', &b)
}

pub fn execute(portal: &str, max_rows: i32) -> Message {
    let mut b = BytesMut::new();
    put_cstr(&mut b, portal);
    b.put_i32(max_rows);
    Message::new(b'E', &b)
}

pub fn close(kind: u8, name: &str) -> Message {
    let mut b = BytesMut::new();
    b.put_u8(kind);
    put_cstr(&mut b, name);
    Message::new(b'C', &b)
}

pub fn sync() -> Message {
    Message::new(b'S', &[])
}

pub fn flush() -> Message {
    Message::new(b'H', &[])
}

pub fn copy_data(data: &[u8]) -> Message {
    Message::new(b'd', data)
}

pub fn copy_done() -> Message {
    Message::new(b'c', &[])
}

pub fn copy_fail(reason: &str) -> Message {
    let mut b = BytesMut::new();
    put_cstr(&mut b, reason);
    Message::new(b'f', &b)
}

pub fn terminate() -> Message {
    Message::new(b'X', &[])
}

/// FunctionCall with binary int4 arguments and a binary result.
pub fn function_call(oid: u32, args: &[i32]) -> Message {
    let mut b = BytesMut::new();
    b.put_u32(oid);
    b.put_i16(1);
    b.put_i16(1);
    b.put_i16(args.len() as i16);
    for a in args {
        b.put_i32(4);
        b.put_i32(*a);
    }
    b.put_i16(1);
    Message::new(b'F', &b)
}

pub fn concat(msgs: &[Message]) -> Vec<u8> {
    msgs.iter().flat_map(|m| m.raw().iter().copied()).collect()
}

/// The uneven chunk sizes COPY data is cut into, so rows straddle CopyData boundaries (one byte,
/// a few bytes, more than a row) the way streaming clients send them.
const CHUNK_SIZES: [usize; 5] = [1, 3, 64, 7, 1000];

pub fn copy_chunks(data: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = CHUNK_SIZES[i % CHUNK_SIZES.len()].min(rest.len());
        out.push(copy_data(&rest[..n]));
        rest = &rest[n..];
        i += 1;
    }
    out
}
