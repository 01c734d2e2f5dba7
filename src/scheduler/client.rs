//! A small HTTP/1.1 client for the services dyngate drives (Airflow's and DolphinScheduler's REST
//! APIs; Flink's SQL Gateway next): one request per connection, JSON or form bodies, a deadline
//! per request, errors that say what failed without the credentials. Built on hyper's
//! connection-level client (already in the tree through axum). `https://` URLs go through rustls
//! (the ring provider the gateway's own TLS uses), verifying the server against the system's CA
//! bundle or a CA file given with `--scheduler-ca-file`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("{service} at {addr} is unreachable: {source}")]
    Connect {
        service: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{service} did not answer {method} {path} within {secs} s")]
    Timeout {
        service: &'static str,
        method: String,
        path: String,
        secs: u64,
    },
    #[error("{service} at {addr}: TLS handshake failed: {source}")]
    Tls {
        service: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot read the CA certificates in {path}: {message}")]
    Ca { path: String, message: String },
    #[error("{service}: HTTP error on {method} {path}: {source}")]
    Http {
        service: &'static str,
        method: String,
        path: String,
        source: hyper::Error,
    },
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (an empty body is `null`).
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body)
    }

    /// The body as text, shortened, for error messages.
    pub fn snippet(&self) -> String {
        self.snippet_without(&[])
    }

    /// The body as text with every `secrets` hidden, shortened, for error messages (services
    /// echo what they were sent in their validation errors).
    pub fn snippet_without(&self, secrets: &[&str]) -> String {
        scrub(&String::from_utf8_lossy(&self.body), secrets)
    }
}

/// `text` for an error message: each of `secrets` replaced by `***` (before shortening, so no
/// part of one is left), then cut at 300 characters.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

/// `url` without credentials (`user:password@`), for messages.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Where a service is: `http[s]://host[:port][/base path]`.
#[derive(Clone)]
pub struct Endpoint {
    /// Named in errors and logs ("Airflow", ...).
    pub service: &'static str,
    /// `host:port`.
    pub addr: String,
    /// The path prefix, without a trailing slash ("" or "/dolphinscheduler").
    pub base: String,
    pub timeout: Duration,
    /// For `https://`: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{} at {scheme}://{}{}", self.service, self.addr, self.base)
    }
}

/// The CA bundle `https://` endpoints are checked against unless a CA file is given:
/// `$SSL_CERT_FILE`, else the system's (Debian's path).
fn system_ca_file() -> std::path::PathBuf {
    std::env::var_os("SSL_CERT_FILE").map_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into(), Into::into)
}

fn connector(ca_file: &std::path::Path) -> Result<TlsConnector, ClientError> {
    let bad = |message: String| ClientError::Ca {
        path: ca_file.display().to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in file".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(std::sync::Arc::new(config)))
}

impl Endpoint {
    /// An endpoint from its URL; `https://` ones are verified against the system's CA bundle.
    pub fn parse(service: &'static str, url: &str, timeout: Duration) -> Result<Endpoint, ClientError> {
        Endpoint::parse_with_ca(service, url, timeout, None)
    }

    /// An endpoint from its URL; `https://` ones are verified against `ca_file` (PEM) when given.
    pub fn parse_with_ca(
        service: &'static str,
        url: &str,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Endpoint, ClientError> {
        let bad = |why| ClientError::Url(redact(url), why);
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(bad("it must start with http:// or https://")),
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it needs a host (and no credentials: they are given separately)"));
        }
        let (host, addr) = match authority.rsplit_once(':') {
            Some((host, p)) if p.parse::<u16>().is_ok() => (host, authority.to_string()),
            _ => (authority, format!("{authority}:{}", if https { 443 } else { 80 })),
        };
        let tls = if https {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_string()).map_err(|_| bad("its host is not a valid DNS name or IP address"))?;
            let ca = ca_file.map_or_else(system_ca_file, std::path::Path::to_path_buf);
            Some((connector(&ca)?, name))
        } else {
            None
        };
        Ok(Endpoint {
            service,
            addr,
            base: base.to_string(),
            timeout,
            tls,
        })
    }

    /// Sends one request.
    pub async fn send(&self, method: &str, path: &str, auth: &Auth, body: Body<'_>) -> Result<Response, ClientError> {
        let work = self.exchange(method, path, auth, body);
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                service: self.service,
                method: method.to_string(),
                path: path.to_string(),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    async fn exchange(&self, method: &str, path: &str, auth: &Auth, body: Body<'_>) -> Result<Response, ClientError> {
        let tcp = TcpStream::connect(&self.addr).await.map_err(|source| ClientError::Connect {
            service: self.service,
            addr: self.addr.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.over(tcp, method, path, auth, body).await,
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|source| ClientError::Tls {
                    service: self.service,
                    addr: self.addr.clone(),
                    source,
                })?;
                self.over(tls, method, path, auth, body).await
            }
        }
    }

    /// One request and its answer over an open connection.
    async fn over<S>(&self, io: S, method: &str, path: &str, auth: &Auth, body: Body<'_>) -> Result<Response, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| ClientError::Http {
            service: self.service,
            method: method.to_string(),
            path: path.to_string(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(http)?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(HOST, &self.addr)
            .header("accept", "application/json");
        match auth {
            Auth::None => {}
            Auth::Bearer(token) => req = req.header(AUTHORIZATION, format!("Bearer {token}")),
            Auth::Basic { user, password } => req = req.header(AUTHORIZATION, basic(user, password)),
            Auth::Header(name, value) => req = req.header(*name, value.as_str()),
        }
        let payload = match body {
            Body::None => Bytes::new(),
            Body::Json(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            Body::Form(pairs) => {
                req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Bytes::from(form(pairs))
            }
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|_| ClientError::Url(path.to_string(), "not a valid request path or header"))?;
        let answer = sender.send_request(req).await.map_err(http)?;
        let status = answer.status().as_u16();
        let body = answer.into_body().collect().await.map_err(http)?.to_bytes();
        driver.abort();
        Ok(Response { status, body })
    }
}

/// How a request authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// `Authorization: Bearer <token>` (Airflow 3's JWT).
    Bearer(String),
    /// `Authorization: Basic ...` (Airflow 2's basic_auth backend).
    Basic {
        user: String,
        password: String,
    },
    /// A header of the service's own (DolphinScheduler's `token`).
    Header(&'static str, String),
}

/// Never prints the secret.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { user, .. } => write!(f, "Basic({user:?}, ***)"),
            Auth::Header(name, _) => write!(f, "Header({name:?}, ***)"),
        }
    }
}

/// A request's body.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
    /// `application/x-www-form-urlencoded` (DolphinScheduler's v1 endpoints).
    Form(&'a [(&'a str, String)]),
}

/// The `Authorization` value of HTTP basic authentication.
fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `application/x-www-form-urlencoded` of `pairs` (spaces as `+`, everything but unreserved
/// characters percent-encoded).
pub fn form(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encoding for form values and URL query parameters.
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::HeaderMap;
    use axum::routing::{get, post};

    async fn serve() -> String {
        let app = Router::new()
            .route(
                "/base/echo",
                post(|headers: HeaderMap, body: String| async move {
                    let auth = headers.get("authorization").map(|v| v.to_str().unwrap_or_default().to_string());
                    axum::Json(serde_json::json!({"auth": auth, "body": body}))
                }),
            )
            .route(
                "/base/missing",
                get(|| async { (axum::http::StatusCode::NOT_FOUND, "no such thing") }),
            )
            .route(
                "/base/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/base/")
    }

    #[tokio::test]
    async fn requests_and_answers() {
        let url = serve().await;
        let ep = Endpoint::parse("Test", &url, Duration::from_secs(2)).unwrap();
        assert_eq!(ep.base, "/base");
        let r = ep
            .send(
                "POST",
                "/echo",
                &Auth::Bearer("t0k".into()),
                Body::Json(&serde_json::json!({"a": "b"})),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json().unwrap(),
            serde_json::json!({"auth": "Bearer t0k", "body": "{\"a\":\"b\"}"})
        );
        let r = ep.send("GET", "/missing", &Auth::None, Body::None).await.unwrap();
        assert_eq!((r.status, r.snippet().as_str()), (404, "no such thing"));
        let e = Endpoint::parse("Test", &url, Duration::from_millis(300))
            .unwrap()
            .send("GET", "/slow", &Auth::None, Body::None)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
    }

    /// A throwaway certificate for 127.0.0.1, made with the openssl command.
    fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=dyngate-test",
            ])
            .args([
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl is installed");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (cert, key)
    }

    /// An HTTPS server answering every request with 200 `{"tls":true}`.
    async fn tls_server(cert: &std::path::Path, key: &std::path::Path) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let acceptor = crate::wire::tls::acceptor(cert, key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = r#"{"tls":true}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_verifies_the_server() {
        let dir = std::env::temp_dir().join(format!("dyngate-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed(&dir);
        let port = tls_server(&cert, &key).await;
        let url = format!("https://127.0.0.1:{port}/base");
        // Trusting the server's own certificate: it answers over TLS.
        let ep = Endpoint::parse_with_ca("Airflow", &url, Duration::from_secs(5), Some(&cert)).unwrap();
        assert_eq!(format!("{ep:?}"), format!("Airflow at https://127.0.0.1:{port}/base"));
        let r = ep.send("GET", "/x", &Auth::None, Body::None).await.unwrap();
        assert_eq!((r.status, r.json().unwrap()), (200, serde_json::json!({"tls": true})));
        // The system's CAs do not know it: refused, saying so.
        let e = Endpoint::parse("Airflow", &url, Duration::from_secs(5))
            .unwrap()
            .send("GET", "/x", &Auth::None, Body::None)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Tls { .. }), "{e}");
        assert!(e.to_string().contains("TLS handshake failed"), "{e}");
        // A CA file without certificates is a configuration error.
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = Endpoint::parse_with_ca("Airflow", &url, Duration::from_secs(5), Some(&empty)).unwrap_err();
        assert!(matches!(e, ClientError::Ca { .. }), "{e}");
        assert_eq!(Endpoint::parse("A", "https://h", Duration::from_secs(1)).unwrap().addr, "h:443");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn encodings() {
        let b64 = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("admin:p@ss", "YWRtaW46cEBzcw=="),
        ];
        for (plain, want) in b64 {
            assert_eq!(base64(plain.as_bytes()), want, "{plain}");
        }
        assert_eq!(basic("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        let pairs = [("name", "a b".to_string()), ("json", r#"{"x":"é&="}"#.to_string())];
        assert_eq!(form(&pairs), "name=a+b&json=%7B%22x%22%3A%22%C3%A9%26%3D%22%7D");
        assert_eq!(
            format!(
                "{:?}",
                Auth::Basic {
                    user: "u".into(),
                    password: "secret".into()
                }
            ),
            r#"Basic("u", ***)"#
        );
        assert!(!format!("{:?}", Auth::Header("token", "secret".into())).contains("secret"));
    }

    #[tokio::test]
    async fn unreachable_services_and_bad_urls() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ep = Endpoint::parse("Airflow", &format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let e = ep.send("GET", "/api/v2/dags", &Auth::None, Body::None).await.unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("Airflow at 127.0.0.1:{port} is unreachable")),
            "{e}"
        );
        let bad = ["ftp://x", "http://user:pw@127.0.0.1:1", "http:///path", "https://user:pw@h/"];
        for url in bad {
            let e = Endpoint::parse("Airflow", url, Duration::from_secs(1)).unwrap_err();
            assert!(matches!(e, ClientError::Url(..)), "{url}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        assert_eq!(Endpoint::parse("A", "http://h", Duration::from_secs(1)).unwrap().addr, "h:80");
        assert_eq!(
            Endpoint::parse("A", "http://[::1]:8080/x/", Duration::from_secs(1)).unwrap().base,
            "/x"
        );
    }
}
