//! The backing PostgreSQL as dyngate sees it: where client sessions connect (as the client's own
//! user) and how the gateway's own service connections (catalog, health) are made.
//!
//! Client sessions always use TCP so that PostgreSQL checks the client's password itself; only the
//! service account may use the embedded cluster's private Unix socket.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_postgres::config::Host;

/// Where to reach the backing PostgreSQL.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Host and port client sessions connect to.
    pub host: String,
    pub port: u16,
    /// The gateway's service account (catalog work, health checks).
    pub service: tokio_postgres::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("invalid --postgres value: {0}")]
    BadUrl(String),
    #[error("--postgres must name a TCP host (client sessions connect over TCP so PostgreSQL checks their passwords)")]
    NotTcp,
}

impl Backend {
    /// From a `--postgres` URL or key=value string.
    pub fn from_url(url: &str) -> Result<Backend, BackendError> {
        let service: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| BackendError::BadUrl(e.to_string()))?;
        let host = match service.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            None => "127.0.0.1".to_string(),
            Some(_) => return Err(BackendError::NotTcp),
        };
        let port = service.get_ports().first().copied().unwrap_or(5432);
        Ok(Backend { host, port, service })
    }

    /// Opens a TCP connection for a client session.
    pub async fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        let s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Opens a service-account connection; its driver task runs in the background.
    pub async fn connect_service(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.service.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "service connection closed");
            }
        });
        Ok(client)
    }
}

/// A small pool of service-account connections for catalog and refresh work. Connections are
/// opened on demand, returned on drop, and discarded when broken.
#[derive(Clone)]
pub struct ServicePool {
    backend: Arc<Backend>,
    idle: Arc<Mutex<Vec<tokio_postgres::Client>>>,
    max_idle: usize,
}

/// A pooled connection; goes back to the pool when dropped.
pub struct Pooled {
    client: Option<tokio_postgres::Client>,
    /// Closed instead of returned when dropped (see [`Pooled::discard_on_drop`]).
    discard: bool,
    idle: Arc<Mutex<Vec<tokio_postgres::Client>>>,
    max_idle: usize,
}

impl ServicePool {
    pub fn new(backend: Backend, max_idle: usize) -> ServicePool {
        ServicePool {
            backend: Arc::new(backend),
            idle: Arc::default(),
            max_idle,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub async fn get(&self) -> Result<Pooled, tokio_postgres::Error> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let client = match reused {
            Some(c) => c,
            None => self.backend.connect_service().await?,
        };
        Ok(Pooled {
            client: Some(client),
            discard: false,
            idle: self.idle.clone(),
            max_idle: self.max_idle,
        })
    }
}

impl Pooled {
    /// While set, the connection is closed when dropped instead of going back to the pool: for
    /// the span of a session-level advisory lock, which a connection given back (by an error
    /// path, or a future dropped midway) would hold for whoever uses it next.
    pub fn discard_on_drop(&mut self, discard: bool) {
        self.discard = discard;
    }
}

impl Deref for Pooled {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &Self::Target {
        self.client.as_ref().expect("present until drop")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if !self.discard && !c.is_closed() && idle.len() < self.max_idle {
                idle.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let b = Backend::from_url("postgres://u:p@127.0.0.1:5544/db").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 5544));
        assert_eq!(b.service.get_user(), Some("u"));
        let b = Backend::from_url("host=localhost user=x").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("localhost", 5432));
        assert!(matches!(Backend::from_url("host=/tmp user=x"), Err(BackendError::NotTcp)));
        assert!(matches!(Backend::from_url("postgres://[bad"), Err(BackendError::BadUrl(_))));
    }
}
