//! A raw protocol connection, for sending what no well-behaved driver would and for checking
//! exactly which messages come back.

use std::time::Duration;

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
