//! The HTTP client for the services dyngate drives (Airflow's and DolphinScheduler's REST APIs,
//! Flink's SQL Gateway and REST API): reqwest over HTTP/1.1, one request per connection (no idle
//! connections kept), JSON or form bodies, a deadline per request, no redirects followed, no
//! proxies, errors that say what failed without the credentials or the URL. `https://` URLs go
//! through rustls on the ring provider the gateway's own TLS uses, verifying the server against the
//! system's CA store (rustls-native-certs: `$SSL_CERT_FILE`, `$SSL_CERT_DIR` or the distribution's
//! bundle) or a CA file given with `--scheduler-ca-file`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::ACCEPT;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_rustls::rustls;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("{service} at {addr} is unreachable: {}", cause(.source))]
    Connect {
        service: &'static str,
        addr: String,
        source: reqwest::Error,
    },
    #[error("{service} did not answer {method} {path} within {secs} s")]
    Timeout {
        service: &'static str,
        method: String,
        path: String,
        secs: u64,
    },
    #[error("{service} at {addr}: TLS handshake failed: {}", cause(.source))]
    Tls {
        service: &'static str,
        addr: String,
        source: reqwest::Error,
    },
    #[error("cannot read the CA certificates in {path}: {message}")]
    Ca { path: String, message: String },
    #[error("{service}: HTTP error on {method} {path}: {}", cause(.source))]
    Http {
        service: &'static str,
        method: String,
        path: String,
        source: reqwest::Error,
    },
}

/// The errors in `e`'s chain, `e` first, looking inside `io::Error`s too (their `source()` skips
/// the error they wrap, and rustls's handshake errors come wrapped twice).
fn chain(e: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |err| {
        match err.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => err.source(),
        }
    })
}

/// What failed, from the innermost error ("Connection refused (os error 111)", "invalid peer
/// certificate: UnknownIssuer"): reqwest's own texts are generic ("error sending request").
fn cause(e: &reqwest::Error) -> String {
    chain(e).last().map(ToString::to_string).unwrap_or_default()
}

/// Whether rustls refused the connection (reqwest counts it as a connect error).
fn is_tls(e: &reqwest::Error) -> bool {
    chain(e).any(|err| err.is::<rustls::Error>())
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

/// `url` without credentials (`user:password@`), for messages. By hand, as it must also work on
/// what the URL parser refuses.
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
    /// `"http"` or `"https"`.
    scheme: &'static str,
    client: reqwest::Client,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}://{}{}", self.service, self.scheme, self.addr, self.base)
    }
}

/// The roots `https://` endpoints are verified against: the certificates in `ca_file` (PEM), or
/// the system's store. Read once, when the endpoint is made, so a missing or empty file is a
/// configuration error at start-up rather than a failed handshake later.
fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(ca_file) = ca_file else {
        let system = "the system's store ($SSL_CERT_FILE, $SSL_CERT_DIR or the distribution's bundle)";
        let found = rustls_native_certs::load_native_certs();
        // Stores often hold a few certificates rustls cannot parse: skipped, as reqwest does.
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
            return Err(ClientError::Ca {
                path: system.into(),
                message: if errors.is_empty() {
                    "no certificate found".into()
                } else {
                    errors.join("; ")
                },
            });
        }
        return Ok(roots);
    };
    let bad = |message: String| ClientError::Ca {
        path: ca_file.display().to_string(),
        message,
    };
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in file".into()));
    }
    Ok(roots)
}

impl Endpoint {
    /// An endpoint from its URL; `https://` ones are verified against the system's CA store.
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
        // Split by hand before the URL parser sees it: it would take `http:///path`'s path for a
        // host, and its messages would repeat the credentials this refuses.
        let (scheme, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => ("https", rest),
            (None, Some(rest)) => ("http", rest),
            (None, None) => return Err(bad("it must start with http:// or https://")),
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it needs a host (and no credentials: they are given separately)"));
        }
        let origin = reqwest::Url::parse(&format!("{scheme}://{authority}"))
            .ok()
            .filter(|u| u.path() == "/" && u.query().is_none() && u.fragment().is_none());
        let Some((host, port)) = origin.as_ref().and_then(|u| Some((u.host_str()?, u.port_or_known_default()?))) else {
            return Err(bad("its host is not a valid DNS name or IP address, or its port not a number"));
        };
        let builder = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            // One request per connection, as the services are called seldom: no idle connection
            // to go stale behind a restarted service or a load balancer.
            .pool_max_idle_per_host(0);
        let builder = if scheme == "https" {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|_| bad("no TLS protocol version available"))?
                .with_root_certificates(roots(ca_file)?)
                .with_no_client_auth();
            // Our own config rather than reqwest's root options: its native roots accept an empty
            // store (found out only by a failed handshake) and its added certificates refuse a
            // store with one unparsable. Needs reqwest's rustls to be tokio-rustls's (0.23):
            // `build` refuses any other, and the https test would say so.
            builder.use_preconfigured_tls(config)
        } else {
            builder
        };
        let client = builder.build().map_err(|_| bad("the HTTP client cannot be built for it"))?;
        Ok(Endpoint {
            service,
            addr: format!("{host}:{port}"),
            base: base.to_string(),
            timeout,
            scheme,
            client,
        })
    }

    /// Sends one request: an answer whatever its status, or why there is none.
    pub async fn send(&self, method: &str, path: &str, auth: &Auth, body: Body<'_>) -> Result<Response, ClientError> {
        let invalid = || ClientError::Url(path.to_string(), "not a valid request path or header");
        let verb = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| invalid())?;
        let url = format!("{}://{}{}{path}", self.scheme, self.addr, self.base);
        let mut req = self
            .client
            .request(verb, url)
            .timeout(self.timeout)
            .header(ACCEPT, "application/json");
        req = match auth {
            Auth::None => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Header(name, value) => req.header(*name, value.as_str()),
        };
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(v),
            Body::Form(pairs) => req.form(pairs),
        };
        let failed = |e: reqwest::Error| {
            let source = e.without_url();
            if source.is_builder() {
                invalid()
            } else if source.is_timeout() {
                ClientError::Timeout {
                    service: self.service,
                    method: method.to_string(),
                    path: path.to_string(),
                    secs: self.timeout.as_secs(),
                }
            } else if is_tls(&source) {
                ClientError::Tls {
                    service: self.service,
                    addr: self.addr.clone(),
                    source,
                }
            } else if source.is_connect() {
                ClientError::Connect {
                    service: self.service,
                    addr: self.addr.clone(),
                    source,
                }
            } else {
                ClientError::Http {
                    service: self.service,
                    method: method.to_string(),
                    path: path.to_string(),
                    source,
                }
            }
        };
        let answer = req.send().await.map_err(failed)?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(failed)?;
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

/// `application/x-www-form-urlencoded` of `pairs` (spaces as `+`, everything but `A-Z a-z 0-9 * -
/// . _` percent-encoded).
pub fn form(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// Percent-encoding for form values and URL query parameters (as [`form`]).
pub fn percent(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
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
        let basic = Auth::Basic {
            user: "Aladdin".into(),
            password: "open sesame".into(),
        };
        let form = [("name", "a b".to_string())];
        let r = ep.send("POST", "/echo", &basic, Body::Form(&form)).await.unwrap();
        assert_eq!(
            r.json().unwrap(),
            serde_json::json!({"auth": "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "body": "name=a+b"})
        );
        let r = ep.send("GET", "/missing", &Auth::None, Body::None).await.unwrap();
        assert_eq!((r.status, r.snippet().as_str()), (404, "no such thing"));
        let e = Endpoint::parse("Test", &url, Duration::from_millis(300))
            .unwrap()
            .send("GET", "/slow", &Auth::None, Body::None)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        assert!(e.to_string().starts_with("Test did not answer GET /slow within"), "{e}");
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
        assert!(e.to_string().contains("TLS handshake failed: invalid peer certificate"), "{e}");
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
        let pairs = [("name", "a b".to_string()), ("json", r#"{"x":"é&="}"#.to_string())];
        assert_eq!(form(&pairs), "name=a+b&json=%7B%22x%22%3A%22%C3%A9%26%3D%22%7D");
        assert_eq!(percent("dyngate-catalog:a b/c"), "dyngate-catalog%3Aa+b%2Fc");
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
            e.to_string()
                .starts_with(&format!("Airflow at 127.0.0.1:{port} is unreachable: Connection refused")),
            "{e}"
        );
        // A token that cannot be a header value: refused before sending, without it.
        let e = ep
            .send("GET", "/api/v2/dags", &Auth::Header("token", "sec\nret".into()), Body::None)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Url(..)) && !e.to_string().contains("sec"), "{e}");
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
