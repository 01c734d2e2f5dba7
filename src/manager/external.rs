//! The manager's side of external workflow schedulers (Apache Airflow now): which scheduler a
//! FULL table gets, and turning the plug-in's answers into the manager's errors. The operations
//! (CREATE, SUSPEND / RESUME, SET FRESHNESS, DROP) call the plug-in inside their transaction, so a
//! failure in Airflow changes nothing in the catalog, and undo what they did in Airflow when the
//! catalog change fails.

use tokio_postgres::GenericClient;

use crate::config::SchedulerKind;
use crate::manager::catalog::DtRow;
use crate::manager::rules::Freshness;
use crate::manager::{Manager, ManagerError};
use crate::scheduler::airflow::{self, Handle, PluginError, Target};

/// The option naming a table's scheduler.
pub const SCHEDULER_OPTION: &str = "scheduler";

pub fn plugin_error(e: PluginError) -> ManagerError {
    match e {
        PluginError::Cron(c) => ManagerError::InvalidOption(c.to_string()),
        other => ManagerError::Scheduler(format!("Airflow: {other}")),
    }
}

/// Now, as ISO 8601 with an offset, on the database's clock: a new DAG's start date.
pub async fn now_iso(c: &impl GenericClient) -> Result<String, ManagerError> {
    Ok(c.query_one(
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')",
        &[],
    )
    .await?
    .get(0))
}

/// The table's Airflow DAG, if Airflow schedules it.
pub fn handle(dt: &DtRow) -> Option<Handle> {
    if dt.scheduler.as_deref() != Some("airflow") {
        return None;
    }
    dt.scheduler_handle.as_deref().and_then(|h| serde_json::from_str(h).ok())
}

pub fn target<'a>(database: &'a str, dt: &'a DtRow, freshness: Freshness, start_date: &'a str) -> Target<'a> {
    Target {
        database,
        table_id: dt.id,
        schema: &dt.name.schema,
        table: &dt.name.name,
        freshness,
        time_zone: &dt.time_zone,
        start_date,
    }
}

impl Manager {
    /// The scheduler a FULL table asks for (`WITH ('scheduler' = ...)`), else the default.
    pub(crate) fn scheduler_for(&self, options: &[(String, String)]) -> Result<SchedulerKind, ManagerError> {
        match options.iter().find(|(k, _)| k == SCHEDULER_OPTION) {
            None => Ok(self.default_scheduler),
            Some((_, v)) => SchedulerKind::parse(v)
                .ok_or_else(|| ManagerError::InvalidOption(format!("unknown scheduler '{v}' (known: embedded, airflow)"))),
        }
    }

    /// The Airflow plug-in, checked to schedule `f`.
    pub(crate) fn airflow_for(&self, f: Freshness) -> Result<&airflow::Plugin, ManagerError> {
        let plugin = self.airflow()?;
        plugin.check(f).map_err(|e| plugin_error(e.into()))?;
        Ok(plugin)
    }
}
