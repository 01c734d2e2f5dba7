//! `dyngate serve`: starts the backing PostgreSQL (or connects to the given one), the catalog
//! migrations, the pgwire and HTTP listeners, and shuts them down in order on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::{Backend, ServicePool};
use crate::catalog::{self, MigrateError};
use crate::config::ServeArgs;
use crate::core::{EngineKind, SchedulerKind};
use crate::engine::flink::client::cluster::Cluster as FlinkCluster;
use crate::engine::flink::client::gateway::Gateway as FlinkGateway;
use crate::engine::flink::runtime::{FlinkConfig, FlinkRuntime};
use crate::engine::flink::tables::SinkTarget;
use crate::handler::Handler;
use crate::http::{self, AppState, Health};
use crate::http_client::Endpoint;
use crate::local_postgres::{self, Cluster};
use crate::manager::Manager;
use crate::manager::scheduler::LoopConfig;
use crate::scheduler::{Plugin, airflow, dolphinscheduler};
use crate::wire::{self, Gateway, Phase, cancel::CancelRegistry};

/// A start-up failure, reported to the operator (these go to the terminal, not to SQL clients).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Embedded(#[from] local_postgres::EmbeddedError),
    #[error(transparent)]
    Tls(#[from] wire::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] MigrateError),
    #[error("cannot start the session threads: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write the ready file: {0}")]
    ReadyFile(std::io::Error),
    #[error("{0}")]
    Scheduler(String),
    #[error(transparent)]
    Capture(#[from] crate::engine::postgres::incremental::collect::CaptureError),
    #[error("{0}")]
    Flink(String),
}

/// The Flink engine, when --flink-gateway is given. Flink's JDBC connector writes dynamic tables
/// into the backing PostgreSQL as the service account (the embedded cluster's superuser).
fn flink_engine(
    args: &ServeArgs,
    backend: &Backend,
    cluster: Option<&Cluster>,
    database: &str,
) -> Result<Option<Arc<FlinkRuntime>>, ServeError> {
    let Some(url) = &args.flink_gateway else {
        if args.engine == EngineKind::Flink {
            return Err(ServeError::Flink("--engine flink needs --flink-gateway".into()));
        }
        return Ok(None);
    };
    let endpoint = |service, url: &str| {
        Endpoint::parse_with_ca(service, url, Duration::from_secs(30), args.scheduler_ca_file.as_deref())
            .map_err(|e| ServeError::Flink(e.to_string()))
    };
    let (user, password) = match cluster {
        Some(c) => ("postgres".to_string(), c.superuser_password().to_string()),
        None => (
            backend.service.get_user().unwrap_or("postgres").to_string(),
            backend
                .service
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
        ),
    };
    let jdbc_url = args
        .flink_postgres_url
        .clone()
        .unwrap_or_else(|| format!("jdbc:postgresql://{}:{}/{database}", backend.host, backend.port));
    if args.flink_database.is_empty() || !args.flink_database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ServeError::Flink(
            "--flink-database must be a plain name (letters, digits, _)".into(),
        ));
    }
    let gateway = FlinkGateway::new(endpoint("Flink SQL Gateway", url)?).with_secrets([password.clone()]);
    let config = FlinkConfig {
        gateway,
        cluster: args
            .flink_rest
            .as_deref()
            .map(|u| endpoint("Flink", u))
            .transpose()?
            .map(FlinkCluster::new),
        jars: args.flink_jars.clone(),
        database: args.flink_database.clone(),
        sink: SinkTarget { jdbc_url, user, password },
        timeout: args.flink_timeout,
    };
    Ok(Some(Arc::new(FlinkRuntime::new(config))))
}

/// The Airflow plug-in, when --airflow-url is given.
fn airflow_plugin(args: &ServeArgs, http_addr: std::net::SocketAddr) -> Result<Option<Arc<dyn Plugin>>, ServeError> {
    let (url, dags) = match (&args.airflow_url, &args.airflow_dags_folder) {
        (Some(url), Some(dags)) => (url, dags),
        (None, None) if args.scheduler == SchedulerKind::Airflow => {
            return Err(ServeError::Scheduler(
                "--scheduler airflow needs --airflow-url and --airflow-dags-folder".into(),
            ));
        }
        (None, None) => return Ok(None),
        _ => return Err(ServeError::Scheduler("--airflow-url and --airflow-dags-folder go together".into())),
    };
    let endpoint = Endpoint::parse_with_ca("Airflow", url, Duration::from_secs(30), args.scheduler_ca_file.as_deref())
        .map_err(|e| ServeError::Scheduler(e.to_string()))?;
    Ok(Some(Arc::new(airflow::Airflow {
        api: airflow::Api::new(
            endpoint,
            args.airflow_api,
            &args.airflow_user,
            args.airflow_password.as_deref().unwrap_or_default(),
        ),
        dags: dags.clone(),
        refresh_url: args
            .airflow_refresh_url
            .clone()
            .unwrap_or_else(|| format!("http://{http_addr}/v3/dynamic-tables/refresh")),
        token: args.http_token.clone(),
        register_timeout: Duration::from_secs(60),
    })))
}

/// The DolphinScheduler plug-in, when --dolphinscheduler-url is given.
fn dolphinscheduler_plugin(args: &ServeArgs, http_addr: std::net::SocketAddr) -> Result<Option<Arc<dyn Plugin>>, ServeError> {
    let (url, token) = match (&args.dolphinscheduler_url, &args.dolphinscheduler_token) {
        (Some(url), Some(token)) => (url, token),
        (None, None) if args.scheduler == SchedulerKind::DolphinScheduler => {
            return Err(ServeError::Scheduler(
                "--scheduler dolphinscheduler needs --dolphinscheduler-url and --dolphinscheduler-token".into(),
            ));
        }
        (None, None) => return Ok(None),
        _ => {
            return Err(ServeError::Scheduler(
                "--dolphinscheduler-url and --dolphinscheduler-token go together".into(),
            ));
        }
    };
    // The task sends the token as a header, where DolphinScheduler would replace placeholders.
    if args.http_token.as_deref().is_some_and(|t| t.contains("${") || t.contains("$[")) {
        return Err(ServeError::Scheduler(
            "--http-token holds ${ or $[, which DolphinScheduler's tasks would replace as placeholders: choose another token".into(),
        ));
    }
    let endpoint = Endpoint::parse_with_ca("DolphinScheduler", url, Duration::from_secs(30), args.scheduler_ca_file.as_deref())
        .map_err(|e| ServeError::Scheduler(e.to_string()))?;
    let refresh_url = args
        .dolphinscheduler_refresh_url
        .clone()
        .unwrap_or_else(|| format!("http://{http_addr}/v3/dynamic-tables/refresh"));
    let mut config = dolphinscheduler::Config::new(endpoint, token.clone(), args.dolphinscheduler_version, refresh_url);
    config.project = args.dolphinscheduler_project.clone();
    config.tenant = args.dolphinscheduler_tenant.clone();
    config.worker_group = args.dolphinscheduler_worker_group.clone();
    config.refresh_token = args.http_token.clone();
    Ok(Some(Arc::new(dolphinscheduler::DolphinScheduler::new(config))))
}

/// The external schedulers' plug-ins this gateway is configured for.
fn external_schedulers(args: &ServeArgs, http_addr: std::net::SocketAddr) -> Result<Vec<Arc<dyn Plugin>>, ServeError> {
    Ok(airflow_plugin(args, http_addr)?
        .into_iter()
        .chain(dolphinscheduler_plugin(args, http_addr)?)
        .collect())
}

pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(wire::tls::acceptor(c, k)?),
        _ => None,
    };
    let cluster = match &args.postgres {
        Some(_) => None,
        None => {
            let bin = local_postgres::find_bin_dir(args.pg_bin_dir.as_deref())?;
            Some(Cluster::start(&args.data_dir, bin).await?)
        }
    };
    let result = serve(&args, tls, cluster.as_ref()).await;
    if let Some(c) = &cluster
        && let Err(e) = c.stop().await
    {
        tracing::error!(error = %e, "stopping the embedded PostgreSQL");
    }
    result
}

async fn serve(args: &ServeArgs, tls: Option<tokio_rustls::TlsAcceptor>, cluster: Option<&Cluster>) -> Result<(), ServeError> {
    let backend = match (&args.postgres, cluster) {
        (Some(url), _) => Backend::from_url(url)?,
        (None, Some(c)) => c.backend(),
        (None, None) => unreachable!("run() starts a cluster when --postgres is absent"),
    };

    let pg_listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: args.listen, source })?;
    let http_listener = TcpListener::bind(args.http_listen).await.map_err(|source| ServeError::Listen {
        addr: args.http_listen,
        source,
    })?;
    let pg_addr = pg_listener
        .local_addr()
        .map_err(|source| ServeError::Listen { addr: args.listen, source })?;
    let http_addr = http_listener.local_addr().map_err(|source| ServeError::Listen {
        addr: args.http_listen,
        source,
    })?;
    tracing::info!(addr = %pg_addr, tls = tls.is_some(), "listening for PostgreSQL clients");
    tracing::info!(addr = %http_addr, "listening for HTTP");

    // The catalog, and with it the dynamic tables, live in the service account's database.
    let database = backend
        .service
        .get_dbname()
        .or(backend.service.get_user())
        .unwrap_or("postgres")
        .to_string();
    let manager = Arc::new(
        Manager::new(
            // Kept open: up to two per refresh running at once, plus a few for statements.
            ServicePool::new(backend.clone(), 2 * args.refresh_concurrency + 8),
            database.clone(),
            args.freshness_threshold,
        )
        .with_schedulers(args.scheduler, external_schedulers(args, http_addr)?)
        .with_engines(args.engine, flink_engine(args, &backend, cluster, &database)?),
    );

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let health = Health::new(backend.clone());
    let http_task = {
        let mut phase = phase_rx.clone();
        let state = Arc::new(AppState {
            health: health.clone(),
            manager: manager.clone(),
            token: args.http_token.clone(),
        });
        let app = http::router(state);
        tokio::spawn(async move {
            let stop = async move {
                let _ = phase.changed().await;
            };
            if let Err(e) = axum::serve(http_listener, app).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        })
    };

    let gw = Arc::new(Gateway {
        backend: backend.clone(),
        tls,
        require_tls: args.require_tls,
        cancels: CancelRegistry::default(),
        statements: Handler::new(manager.clone()),
    });
    let threads = if args.session_threads == 0 {
        wire::loops::default_threads()
    } else {
        args.session_threads
    };
    let loops = wire::loops::SessionLoops::start(threads).map_err(ServeError::Runtime)?;
    let wire_task = {
        let phase = phase_rx.clone();
        let grace = args.shutdown_timeout;
        tokio::spawn(async move {
            wire::serve(pg_listener, gw, phase, grace, &loops).await;
            loops
        })
    };

    let migrated = tokio::select! {
        r = migrate_with_retry(&backend) => Some(r),
        _ = shutdown_signal() => None,
    };
    let outcome = match migrated {
        Some(Ok(version)) => match manager.set_capture(args.capture).await {
            Err(e) => Err(ServeError::Capture(e)),
            Ok(method) => {
                tracing::info!(capture = method.as_str(), "change capture for incremental refreshes");
                health.set_catalog_version(version);
                if let Some(path) = &args.ready_file {
                    let body = serde_json::json!({"pg": pg_addr.to_string(), "http": http_addr.to_string()});
                    std::fs::write(path, body.to_string()).map_err(ServeError::ReadyFile)?;
                }
                let (stop_tx, stop_rx) = watch::channel(false);
                let config = LoopConfig {
                    tick: args.scheduler_tick,
                    missed: args.missed_refreshes,
                    concurrency: args.refresh_concurrency,
                };
                let refresh_loop = tokio::spawn(manager.clone().run_refresh_loop(config, stop_rx.clone()));
                let reconcile_loop = tokio::spawn(
                    manager
                        .clone()
                        .run_reconcile_loop(args.scheduler_reconcile_interval, stop_rx.clone()),
                );
                let flink_watch = tokio::spawn(manager.clone().run_flink_watch(stop_rx.clone()));
                let wal_stream = tokio::spawn(manager.clone().run_wal_stream(args.capture_interval, stop_rx));
                tracing::info!(catalog_version = version, "dyngate is ready");
                shutdown_signal().await;
                let _ = stop_tx.send(true);
                let _ = refresh_loop.await;
                let _ = reconcile_loop.await;
                let _ = wal_stream.await;
                let _ = flink_watch.await;
                Ok(())
            }
        },
        Some(Err(e)) => Err(e.into()),
        None => Ok(()),
    };

    tracing::info!("shutting down: no new connections");
    let _ = phase_tx.send(Phase::Draining);
    if let Ok(loops) = wire_task.await {
        tokio::task::spawn_blocking(move || loops.stop()).await.ok();
    }
    let _ = http_task.await;
    outcome
}

/// Applies the catalog migrations, retrying while the backend cannot be reached (it may still be
/// starting). Errors that retrying cannot fix (a changed or newer catalog) end the start-up.
async fn migrate_with_retry(backend: &Backend) -> Result<i32, MigrateError> {
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut client = backend.connect_service().await?;
            catalog::migrate(&mut client).await
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err(e @ (MigrateError::Changed { .. } | MigrateError::TooNew { .. })) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "catalog not ready yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
