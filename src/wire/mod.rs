//! The PostgreSQL wire front end: accepting clients, start-up and authentication relay, and the
//! per-session relay to a dedicated backend connection.
//!
//! This layer translates between the protocol and the rest of dyngate: it forwards what is
//! PostgreSQL's and hands dyngate's own statements to a [`Statements`] (the handler, plugged in
//! by the server; this layer imports nothing above it). It holds no dynamic-table
//! logic.

pub mod binary;
pub mod cancel;
pub mod codec;
pub mod conn;
pub mod loops;
pub mod pending;
pub mod session;
pub mod startup;
pub mod statements;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::backend::Backend;
use cancel::CancelRegistry;
use statements::{SessionInfo, Statements};

/// The server's lifecycle, as sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stop accepting; close each session once its running statement has finished.
    Draining,
}

/// What every session shares.
pub struct Gateway<S> {
    pub backend: Backend,
    pub tls: Option<TlsAcceptor>,
    pub require_tls: bool,
    pub cancels: CancelRegistry,
    /// Who answers dyngate's own statements.
    pub statements: S,
}

/// Accepts clients until shutdown, then drains sessions for up to `grace`.
pub async fn serve<S: Statements>(
    listener: TcpListener,
    gw: Arc<Gateway<S>>,
    mut phase: watch::Receiver<Phase>,
    grace: Duration,
    loops: &loops::SessionLoops,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let gw = gw.clone();
                    let phase = phase.clone();
                    // The socket moves to the session's own loop (a tokio socket belongs to the
                    // runtime that registered it).
                    let Ok(std_tcp) = tcp.into_std() else { continue };
                    let session = async move {
                        match tokio::net::TcpStream::from_std(std_tcp) {
                            Ok(tcp) => handle_connection(tcp, gw, phase).await,
                            Err(e) => tracing::warn!(error = %e, "cannot register a client socket"),
                        }
                    };
                    sessions.spawn_on(session.instrument(tracing::info_span!("session", %peer)), loops.next());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = phase.changed() => break,
        }
    }
    drop(listener);
    let open = sessions.len();
    if open > 0 {
        tracing::info!(sessions = open, grace = ?grace, "waiting for running statements to finish");
    }
    let drained = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "shutdown grace period over: cancelling running statements"
        );
        let mut cancels = JoinSet::new();
        for key in gw.cancels.all() {
            let gw = gw.clone();
            cancels.spawn(async move { cancel::send_cancel(&gw.backend, &key).await });
        }
        cancels.join_all().await;
        sessions.shutdown().await;
    }
}

async fn handle_connection<S: Statements>(tcp: tokio::net::TcpStream, gw: Arc<Gateway<S>>, phase: watch::Receiver<Phase>) {
    // A client gets as long as PostgreSQL's default authentication_timeout to log in.
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        let Some(mut req) = startup::accept(tcp, &gw).await? else {
            return Ok(None);
        };
        let opened = startup::open_backend(&mut req, &gw).await?;
        Ok::<_, conn::ReadError>(opened.map(|o| (req, o)))
    })
    .await;
    let (req, opened) = match started {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection ended during start-up");
            return;
        }
        Err(_) => {
            tracing::info!("client did not finish start-up in time");
            return;
        }
    };
    let user = req.param("user").unwrap_or_default().to_string();
    let database = req.param("database").map(str::to_string).unwrap_or_else(|| user.clone());
    tracing::debug!(%user, %database, tls = req.tls, "session started");
    let info = SessionInfo { user, database };
    session::run(
        gw,
        req.client,
        opened.backend,
        opened.key,
        info,
        (opened.standard_strings, opened.time_zone),
        phase,
    )
    .await;
}
