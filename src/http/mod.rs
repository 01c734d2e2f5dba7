//! The HTTP side listener: `GET /healthz` (200 when the backing PostgreSQL answers and the catalog
//! migrations are applied, 503 with the reason otherwise), the dynamic-table API under `/v3`
//! ([`api`]), and its OpenAPI document at `/openapi.json`.
//!
//! Client-facing bodies never carry connection strings or passwords; details go to the log.

pub mod api;

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::backend::Backend;
use crate::manager::Manager;

/// What the health check looks at.
pub struct Health {
    backend: Backend,
    /// The applied catalog version; 0 until migrations have run.
    catalog_version: AtomicI32,
    client: Mutex<Option<tokio_postgres::Client>>,
}

impl Health {
    pub fn new(backend: Backend) -> Arc<Health> {
        Arc::new(Health {
            backend,
            catalog_version: AtomicI32::new(0),
            client: Mutex::new(None),
        })
    }

    pub fn set_catalog_version(&self, v: i32) {
        self.catalog_version.store(v, Ordering::Release);
    }

    /// Runs `SELECT 1` over a cached service connection, reconnecting when it broke.
    async fn backend_ok(&self) -> bool {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            match tokio::time::timeout(Duration::from_secs(3), self.backend.connect_service()).await {
                Ok(Ok(c)) => *guard = Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "health check: cannot connect to the backing PostgreSQL");
                    return false;
                }
                Err(_) => return false,
            }
        }
        let Some(c) = guard.as_ref() else { return false };
        matches!(
            tokio::time::timeout(Duration::from_secs(3), c.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
    }
}

/// What the HTTP handlers share.
pub struct AppState {
    pub health: Arc<Health>,
    pub manager: Arc<Manager>,
    /// The bearer token the `/v3` routes require, if any.
    pub token: Option<String>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/v3/dynamic-tables/refresh", post(api::refresh))
        .route("/v3/dynamic-tables", get(api::list))
        .route("/v3/dynamic-tables/{name}", get(api::one))
        .route("/v3/jobs/{job_id}", get(api::job))
        .with_state(state)
}

async fn healthz(State(s): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let h = &s.health;
    let backend = h.backend_ok().await;
    let version = h.catalog_version.load(Ordering::Acquire);
    let ok = backend && version > 0;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "backend": if backend { "reachable" } else { "unreachable" },
        "catalog": if version > 0 { json!({"applied": true, "version": version}) } else { json!({"applied": false}) },
    });
    (status, Json(body))
}

async fn openapi() -> ([(&'static str, &'static str); 1], &'static str) {
    ([("content-type", "application/json")], include_str!("openapi.json"))
}
