//! The backing PostgreSQL as dyngate sees it: where client sessions connect (as the client's own
//! user) and how the gateway's own service connections (catalog, health) are made.
//!
//! Client sessions always use TCP so that PostgreSQL checks the client's password itself; only the
//! service account may use the embedded cluster's private Unix socket.

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
