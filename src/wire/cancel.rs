//! Cancel keys: the gateway hands each client the backend's real pid (applications use it to find
//! their session in pg_stat_activity and to recognise their own notifications) with a secret of
//! the gateway's own, mapped to the backend's secret, so a client's CancelRequest (Ctrl-C in psql)
//! cancels the right backend query without the backend's secret ever leaving the gateway.

use std::collections::HashMap;
use std::sync::Mutex;

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::Backend;
use crate::wire::codec::cancel_request;

/// A backend session's cancel key.
#[derive(Debug, Clone)]
pub struct BackendKey {
    pub pid: u32,
    pub secret: Bytes,
}

#[derive(Debug)]
struct Entry {
    secret: Bytes,
    backend: BackendKey,
}

/// All live sessions' keys, by backend pid.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<u32, Entry>>,
}

/// Constant-time comparison: a wrong secret must not reveal how much of it was right.
fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl CancelRegistry {
    /// Registers a session; returns the key to give its client: the backend's pid (unique on the
    /// one backing server) and a fresh secret as long as the backend's.
    pub fn register(&self, backend: BackendKey) -> (u32, Bytes) {
        let mut raw = vec![0u8; backend.secret.len()];
        getrandom::fill(&mut raw).expect("the OS random source is available");
        let secret = Bytes::from(raw);
        let pid = backend.pid;
        let entry = Entry {
            secret: secret.clone(),
            backend,
        };
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(pid, entry);
        (pid, secret)
    }

    pub fn unregister(&self, pid: u32) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
    }

    /// The backend key for a client's cancel request, if the pid and secret match a live session.
    pub fn lookup(&self, pid: u32, secret: &[u8]) -> Option<BackendKey> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&pid)
            .filter(|e| secrets_equal(&e.secret, secret))
            .map(|e| e.backend.clone())
    }

    /// Every live backend key (used to cancel running statements when shutdown runs out of time).
    pub fn all(&self) -> Vec<BackendKey> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| e.backend.clone())
            .collect()
    }
}

/// Sends a CancelRequest for `key` to the backend and waits until the backend has closed the
/// cancel connection, which PostgreSQL does only after signalling the backend process. Clients
/// (libpq, pgJDBC) take the close of their own cancel connection as the promise that the cancel
/// cannot hit a later statement, so the gateway must not close theirs any earlier. Best effort, as
/// in PostgreSQL itself.
pub async fn send_cancel(backend: &Backend, key: &BackendKey) {
    let mut s = match backend.connect_tcp().await {
        Ok(s) => s,
        Err(e) => return tracing::warn!(error = %e, "cannot reach the backend to cancel a query"),
    };
    if let Err(e) = s.write_all(&cancel_request(key.pid, &key.secret)).await {
        return tracing::debug!(error = %e, "sending cancel request to backend");
    }
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_unregister() {
        let r = CancelRegistry::default();
        let (pid, secret) = r.register(BackendKey {
            pid: 42,
            secret: Bytes::from_static(&[9, 9, 9, 9]),
        });
        assert_eq!(pid, 42, "the client sees the backend's real pid");
        assert_eq!(secret.len(), 4);
        assert_ne!(&secret[..], &[9, 9, 9, 9], "but not the backend's secret");
        assert_eq!(r.lookup(pid, &secret).map(|k| k.pid), Some(42));
        let mut wrong = secret.to_vec();
        wrong[0] ^= 1;
        assert!(r.lookup(pid, &wrong).is_none());
        assert!(r.lookup(pid, &secret[..3]).is_none());
        assert!(r.lookup(pid.wrapping_add(1), &secret).is_none());
        assert_eq!(r.all().len(), 1);
        r.unregister(pid);
        assert!(r.lookup(pid, &secret).is_none());
    }

    #[test]
    fn secret_length_follows_the_backend() {
        let r = CancelRegistry::default();
        let (_, s) = r.register(BackendKey {
            pid: 1,
            secret: Bytes::from(vec![0u8; 32]),
        });
        assert_eq!(s.len(), 32);
    }
}
