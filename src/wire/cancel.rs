//! Cancel keys: the gateway hands each client its own (pid, secret) and maps it to the backend
//! session's key, so a client's CancelRequest (Ctrl-C in psql) cancels the right backend query
//! without ever revealing the backend's key.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

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

/// All live sessions' keys, by the pid the gateway gave the client.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<u32, Entry>>,
}

/// Constant-time comparison: a wrong secret must not reveal how much of it was right.
fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl CancelRegistry {
    /// Registers a session; returns the key to give its client (a secret as long as the backend's).
    pub fn register(&self, backend: BackendKey) -> (u32, Bytes) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut raw = vec![0u8; 4 + backend.secret.len()];
            getrandom::fill(&mut raw).expect("the OS random source is available");
            let pid = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) & 0x7fff_ffff;
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let secret = Bytes::copy_from_slice(&raw[4..]);
            map.insert(
                pid,
                Entry {
                    secret: secret.clone(),
                    backend,
                },
            );
            return (pid, secret);
        }
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

/// Sends a CancelRequest for `key` to the backend. Best effort, as in PostgreSQL itself.
pub async fn send_cancel(backend: &Backend, key: &BackendKey) {
    match backend.connect_tcp().await {
        Ok(mut s) => {
            if let Err(e) = s.write_all(&cancel_request(key.pid, &key.secret)).await {
                tracing::debug!(error = %e, "sending cancel request to backend");
            }
            let _ = s.shutdown().await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot reach the backend to cancel a query"),
    }
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
        assert_eq!(secret.len(), 4);
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
