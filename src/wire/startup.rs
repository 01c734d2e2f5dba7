//! Connection start-up: TLS negotiation, cancel requests, and authentication relayed to the
//! backing PostgreSQL.
//!
//! dyngate keeps no user database. It opens the backend session with the client's own start-up
//! packet (user, database, options, application_name) and relays the authentication exchange the
//! backend asks for, so PostgreSQL itself checks the password (trust, md5, SCRAM-SHA-256) and its
//! roles and privileges apply to everything the client does. SCRAM's channel-binding variant is
//! not offered, since the client's TLS session ends at the gateway; a cleartext password is only
//! relayed over TLS. A failed login reaches the client as PostgreSQL's own error (28P01) and leaves
//! no backend session.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::wire::Gateway;
use crate::wire::cancel::{BackendKey, send_cancel};
use crate::wire::codec::{Message, PgError, StartupPacket, parameter_value, parse_startup, take_cstr};
use crate::wire::conn::{Framed, ReadError};

/// The client side of a session: plain TCP or TLS.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}
pub type ClientStream = Box<dyn ClientIo>;

/// A client that finished the start-up packets and wants a session.
pub struct StartupRequest {
    pub client: Framed<ClientStream>,
    /// The StartupMessage exactly as the client sent it.
    pub packet: Bytes,
    pub params: Vec<(String, String)>,
    pub tls: bool,
}

impl StartupRequest {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A session whose backend is authenticated and ready.
pub struct Opened {
    pub backend: Framed<TcpStream>,
    /// The backend's cancel key and the key the client got instead.
    pub key: Option<(u32, BackendKey)>,
    /// standard_conforming_strings as the backend reported it at start-up.
    pub standard_strings: bool,
    /// The session's TimeZone as the backend reported it at start-up.
    pub time_zone: String,
}

/// Reads the client's start-up packets. Returns `None` when the connection was a cancel request or
/// was refused (the client has been told why).
pub async fn accept<S>(tcp: TcpStream, gw: &Gateway<S>) -> Result<Option<StartupRequest>, ReadError> {
    let mut tls = false;
    let direct = gw.tls.is_some() && is_direct_tls(&tcp).await;
    let mut conn: Framed<ClientStream> = if let Some(acceptor) = gw.tls.as_ref().filter(|_| direct) {
        // PostgreSQL 17's direct TLS: the first bytes are a TLS ClientHello, not an SSLRequest.
        let s = acceptor.accept(tcp).await?;
        if s.get_ref().1.alpn_protocol() != Some(b"postgresql") {
            return Ok(None);
        }
        tls = true;
        Framed::new(Box::new(s))
    } else {
        Framed::new(Box::new(tcp))
    };
    loop {
        let packet = match conn.read_startup().await {
            Ok(p) => p,
            Err(ReadError::Frame(e)) => {
                let _ = conn
                    .write(PgError::fatal("08P01", format!("invalid startup packet: {e}")).to_message().raw())
                    .await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let parsed = match parse_startup(&packet) {
            Ok(p) => p,
            Err(e) => {
                let _ = conn
                    .write(PgError::fatal("08P01", format!("invalid startup packet: {e}")).to_message().raw())
                    .await;
                return Ok(None);
            }
        };
        match parsed {
            StartupPacket::SslRequest => match gw.tls.as_ref() {
                Some(acceptor) if !tls => {
                    // Bytes sent after the SSLRequest but before the handshake would be
                    // unencrypted yet treated as trusted (CVE-2021-23214): refuse them.
                    if !conn.rbuf.is_empty() {
                        return Ok(None);
                    }
                    conn.write(b"S").await?;
                    let Framed { stream, .. } = conn;
                    let s = acceptor.accept(stream).await?;
                    conn = Framed::new(Box::new(s));
                    tls = true;
                }
                _ => conn.write(b"N").await?,
            },
            StartupPacket::GssEncRequest => conn.write(b"N").await?,
            StartupPacket::Cancel { pid, secret } => {
                match gw.cancels.lookup(pid, &secret) {
                    Some(key) => send_cancel(&gw.backend, &key).await,
                    None => tracing::debug!(pid, "cancel request with an unknown key ignored"),
                }
                return Ok(None);
            }
            StartupPacket::Startup { params, .. } => {
                if gw.require_tls && !tls {
                    let e = PgError::fatal("28000", "this gateway accepts only TLS connections").with_hint("Connect with sslmode=require.");
                    let _ = conn.write(e.to_message().raw()).await;
                    return Ok(None);
                }
                if !params.iter().any(|(k, _)| k == "user") {
                    let e = PgError::fatal("28000", "no PostgreSQL user name specified in startup packet");
                    let _ = conn.write(e.to_message().raw()).await;
                    return Ok(None);
                }
                return Ok(Some(StartupRequest {
                    client: conn,
                    packet,
                    params,
                    tls,
                }));
            }
        }
    }
}

/// Whether the client opened with a TLS ClientHello (PostgreSQL 17's direct TLS) rather than a
/// start-up packet. Waits for the client's first byte.
async fn is_direct_tls(tcp: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(tcp.peek(&mut b).await, Ok(1) if b[0] == 0x16)
}

/// Opens and authenticates the backend session for `req`, relaying the exchange. Returns `None`
/// when the login failed or the client went away (the client has been told what the backend said).
pub async fn open_backend<S>(req: &mut StartupRequest, gw: &Gateway<S>) -> Result<Option<Opened>, ReadError> {
    let client = &mut req.client;
    let tcp = match gw.backend.connect_tcp().await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot connect to the backing PostgreSQL");
            let err = PgError::fatal("08001", "the gateway cannot reach its backing PostgreSQL").with_hint("See the gateway's log.");
            let _ = client.write(err.to_message().raw()).await;
            return Ok(None);
        }
    };
    let mut backend = Framed::new(tcp);
    backend.write(&req.packet).await?;

    // Authentication.
    loop {
        let m = match backend.read_message().await {
            Ok(m) => m,
            Err(e) => return backend_gone(client, e).await,
        };
        match m.tag() {
            b'R' => {
                let code = auth_code(&m);
                match code {
                    Some(0) => {
                        client.write(m.raw()).await?;
                        break;
                    }
                    Some(3) if !req.tls => {
                        let e = PgError::fatal(
                            "28000",
                            "the server asks for a cleartext password, which this gateway accepts only over TLS",
                        )
                        .with_hint("Connect with sslmode=require.");
                        client.write(e.to_message().raw()).await?;
                        return Ok(None);
                    }
                    Some(3 | 5 | 11) => {
                        client.write(m.raw()).await?;
                        if !relay_password(client, &mut backend).await? {
                            return Ok(None);
                        }
                    }
                    Some(10) => {
                        let Some(filtered) = without_channel_binding(&m) else {
                            let e = PgError::fatal(
                                "28000",
                                "the server offers only SCRAM with channel binding, which cannot pass through the gateway",
                            );
                            client.write(e.to_message().raw()).await?;
                            return Ok(None);
                        };
                        client.write(filtered.raw()).await?;
                        if !relay_password(client, &mut backend).await? {
                            return Ok(None);
                        }
                    }
                    Some(12) => client.write(m.raw()).await?,
                    _ => {
                        let e = PgError::fatal(
                            "28000",
                            "the server asks for an authentication method the gateway cannot relay (only trust, password, md5 and SCRAM-SHA-256 can)",
                        );
                        client.write(e.to_message().raw()).await?;
                        return Ok(None);
                    }
                }
            }
            b'E' => {
                // Wrong password, unknown role, no such database: PostgreSQL's own words.
                client.write(m.raw()).await?;
                return Ok(None);
            }
            b'v' | b'N' => client.write(m.raw()).await?,
            _ => {
                return protocol_violation(client, "unexpected message from the server during authentication").await;
            }
        }
    }

    // After AuthenticationOk: parameters, the cancel key, ReadyForQuery.
    let mut out = BytesMut::new();
    let mut key = None;
    let mut standard_strings = true;
    let mut time_zone = String::from("UTC");
    loop {
        let m = match backend.read_message().await {
            Ok(m) => m,
            Err(e) => {
                client.write(&out).await?;
                return backend_gone(client, e).await;
            }
        };
        match m.tag() {
            b'K' => {
                let body = m.body();
                if body.len() < 8 {
                    return protocol_violation(client, "malformed BackendKeyData from the server").await;
                }
                let backend_key = BackendKey {
                    pid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    secret: Bytes::copy_from_slice(&body[4..]),
                };
                let (pid, secret) = gw.cancels.register(backend_key.clone());
                let mut b = BytesMut::with_capacity(4 + secret.len());
                b.put_u32(pid);
                b.put_slice(&secret);
                out.extend_from_slice(Message::new(b'K', &b).raw());
                key = Some((pid, backend_key));
            }
            b'Z' => {
                out.extend_from_slice(m.raw());
                if let Err(e) = client.write(&out).await {
                    if let Some((pid, _)) = &key {
                        gw.cancels.unregister(*pid);
                    }
                    return Err(e.into());
                }
                return Ok(Some(Opened {
                    backend,
                    key,
                    standard_strings,
                    time_zone,
                }));
            }
            b'E' => {
                out.extend_from_slice(m.raw());
                client.write(&out).await?;
                if let Some((pid, _)) = &key {
                    gw.cancels.unregister(*pid);
                }
                return Ok(None);
            }
            b'S' => {
                if let Some(v) = parameter_value(m.body(), "standard_conforming_strings") {
                    standard_strings = v == "on";
                }
                if let Some(v) = parameter_value(m.body(), "TimeZone") {
                    time_zone = v.to_string();
                }
                out.extend_from_slice(m.raw());
            }
            _ => out.extend_from_slice(m.raw()),
        }
    }
}

/// Relays the client's answer to an authentication request. `false` if the client went away or
/// answered with something else.
async fn relay_password(client: &mut Framed<ClientStream>, backend: &mut Framed<TcpStream>) -> Result<bool, ReadError> {
    let m = match client.read_message().await {
        Ok(m) => m,
        Err(ReadError::Closed) => return Ok(false),
        Err(ReadError::Frame(e)) => {
            let _ = client
                .write(PgError::fatal("08P01", format!("invalid message: {e}")).to_message().raw())
                .await;
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if m.tag() != b'p' {
        let e = PgError::fatal("08P01", format!("expected password response, got message type {}", m.tag() as char));
        client.write(e.to_message().raw()).await?;
        return Ok(false);
    }
    backend.write(m.raw()).await?;
    Ok(true)
}

fn auth_code(m: &Message) -> Option<u32> {
    let b = m.body();
    (b.len() >= 4).then(|| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// AuthenticationSASL without the `-PLUS` mechanisms; `None` if nothing is left.
fn without_channel_binding(m: &Message) -> Option<Message> {
    let mut p = &m.body()[4..];
    let mut body = BytesMut::new();
    body.put_u32(10);
    let mut any = false;
    while let Some(mech) = take_cstr(&mut p) {
        if mech.is_empty() {
            break;
        }
        if !mech.ends_with("-PLUS") {
            body.put_slice(mech.as_bytes());
            body.put_u8(0);
            any = true;
        }
    }
    body.put_u8(0);
    any.then(|| Message::new(b'R', &body))
}

async fn backend_gone(client: &mut Framed<ClientStream>, e: ReadError) -> Result<Option<Opened>, ReadError> {
    tracing::warn!(error = %e, "the backing PostgreSQL closed the connection during start-up");
    let err = PgError::fatal("08006", "the backing PostgreSQL closed the connection during start-up");
    let _ = client.write(err.to_message().raw()).await;
    Ok(None)
}

async fn protocol_violation(client: &mut Framed<ClientStream>, what: &str) -> Result<Option<Opened>, ReadError> {
    tracing::error!(what, "protocol violation by the backing PostgreSQL");
    let _ = client.write(PgError::fatal("08P01", what).to_message().raw()).await;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_binding_is_filtered() {
        let mut body = BytesMut::new();
        body.put_u32(10);
        body.put_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let m = Message::new(b'R', &body);
        let f = without_channel_binding(&m).unwrap();
        assert_eq!(&f.body()[4..], b"SCRAM-SHA-256\0\0");

        let mut body = BytesMut::new();
        body.put_u32(10);
        body.put_slice(b"SCRAM-SHA-256-PLUS\0\0");
        assert!(without_channel_binding(&Message::new(b'R', &body)).is_none());
    }
}
