//! A small HTTP/1.1 client for the services dyngate drives (Airflow's REST API now;
//! DolphinScheduler's and Flink's SQL Gateway's next): one request per connection, JSON in and
//! out, a deadline per request, errors that say what failed without the credentials. Built on
//! hyper's connection-level client (already in the tree through axum). `http://` only for now:
//! `https://` URLs are refused with a clear error until TLS (tokio-rustls) is wired in.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
        let text = String::from_utf8_lossy(&self.body);
        let mut s: String = text.chars().take(300).collect();
        if text.chars().count() > 300 {
            s.push('…');
        }
        s
    }
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

/// Where a service is: `http://host:port[/base path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Named in errors and logs ("Airflow", ...).
    pub service: &'static str,
    /// `host:port`.
    pub addr: String,
    /// The path prefix, without a trailing slash ("" or "/dolphinscheduler").
    pub base: String,
    pub timeout: Duration,
}

impl Endpoint {
    pub fn parse(service: &'static str, url: &str, timeout: Duration) -> Result<Endpoint, ClientError> {
        let bad = |why| ClientError::Url(redact(url), why);
        if url.starts_with("https://") {
            return Err(bad(
                "https:// is not supported yet; use http:// (e.g. on a private network or through a local proxy)",
            ));
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("it must start with http://"))?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it needs a host (and no credentials: they are given separately)"));
        }
        let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint {
            service,
            addr,
            base: base.to_string(),
            timeout,
        })
    }

    /// Sends one request; `body` is sent as JSON when given. `bearer` goes into Authorization.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let work = self.exchange(method, path, bearer, body);
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

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let http = |source| ClientError::Http {
            service: self.service,
            method: method.to_string(),
            path: path.to_string(),
            source,
        };
        let tcp = TcpStream::connect(&self.addr).await.map_err(|source| ClientError::Connect {
            service: self.service,
            addr: self.addr.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(http)?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(HOST, &self.addr)
            .header("accept", "application/json");
        if let Some(token) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|_| ClientError::Url(path.to_string(), "not a valid request path"))?;
        let answer = sender.send_request(req).await.map_err(http)?;
        let status = answer.status().as_u16();
        let body = answer.into_body().collect().await.map_err(http)?.to_bytes();
        driver.abort();
        Ok(Response { status, body })
    }
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
            .send("POST", "/echo", Some("t0k"), Some(&serde_json::json!({"a": "b"})))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json().unwrap(),
            serde_json::json!({"auth": "Bearer t0k", "body": "{\"a\":\"b\"}"})
        );
        let r = ep.send("GET", "/missing", None, None).await.unwrap();
        assert_eq!((r.status, r.snippet().as_str()), (404, "no such thing"));
        let e = Endpoint::parse("Test", &url, Duration::from_millis(300))
            .unwrap()
            .send("GET", "/slow", None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
    }

    #[tokio::test]
    async fn unreachable_services_and_bad_urls() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ep = Endpoint::parse("Airflow", &format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let e = ep.send("GET", "/api/v2/dags", None, None).await.unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("Airflow at 127.0.0.1:{port} is unreachable")),
            "{e}"
        );
        let bad = [
            "ftp://x",
            "https://airflow.example:8080",
            "http://user:pw@127.0.0.1:1",
            "http:///path",
        ];
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
