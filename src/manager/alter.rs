//! ALTER DYNAMIC TABLE: SUSPEND, RESUME, SET FRESHNESS, SET (...), RESET (...). (REFRESH is
//! [`refresh`](super::refresh); AS is [`alter_query`](super::alter_query).) Each change is one catalog
//! update, by a member of the owner's role, and takes effect at the refresh loop's next tick: the
//! schedules are the catalog rows.
//!
//! States follow Flink: ACTIVATED <-> SUSPENDED, and suspending a suspended table is an error.
//! Unlike Flink, SET FRESHNESS works, re-deriving the mode (CONTINUOUS or FULL) and the schedule
//! without recreating the table.

use crate::config::SchedulerKind;
use crate::manager::catalog::{self, DtRow};
use crate::manager::create::{TIME_ZONE_OPTION, check_time_zone, refresh_mode_name};
use crate::manager::external;
use crate::manager::rules::{self, Freshness, LogicalMode, RefreshMode};
use crate::manager::{Manager, ManagerError, Requester};
use crate::scheduler::airflow::Handle;
use crate::sql::dynamic::{Options, TableName};

/// What an ALTER did, for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Altered {
    pub notices: Vec<String>,
}

impl Manager {
    /// Loads a dynamic table for a change by `who`, who must be a member of the owner's role.
    pub(crate) async fn for_change(&self, who: &Requester<'_>, name: &TableName, action: &'static str) -> Result<DtRow, ManagerError> {
        self.check_database(who)?;
        if who.in_transaction {
            return Err(ManagerError::InTransaction("ALTER DYNAMIC TABLE"));
        }
        let mut client = self.pool.get().await?;
        let dt = self.load_existing(&mut client, who, name).await?;
        Self::require_member(&*client, who, &dt, action).await?;
        Ok(dt)
    }

    /// Sets the status from `from` to `to`; another concurrent change makes it fail cleanly.
    async fn set_status(&self, dt: &DtRow, from: &str, to: &str) -> Result<(), ManagerError> {
        let client = self.pool.get().await?;
        // Resuming restarts the schedule at the current slot: no burst of catch-up refreshes.
        let n = client
            .execute(
                "UPDATE dyngate.dynamic_table
                    SET status = $3, altered_at = now(),
                        last_slot = now()
                  WHERE id = $1 AND status = $2",
                &[&dt.id, &from, &to],
            )
            .await?;
        if n == 0 {
            return Err(ManagerError::WrongState(format!(
                "Dynamic table {} changed concurrently; try again.",
                dt.name
            )));
        }
        Ok(())
    }

    /// Pauses or unpauses the table's Airflow DAG, if Airflow schedules it; returns the DAG.
    async fn pause_dag(&self, dt: &DtRow, paused: bool) -> Result<Option<Handle>, ManagerError> {
        let Some(handle) = external::handle(dt) else { return Ok(None) };
        self.airflow()?.pause(&handle, paused).await.map_err(external::plugin_error)?;
        Ok(Some(handle))
    }

    pub async fn suspend(&self, who: &Requester<'_>, name: &TableName) -> Result<Altered, ManagerError> {
        let dt = self.for_change(who, name, "suspend").await?;
        if dt.status == "SUSPENDED" {
            return Err(ManagerError::WrongState(format!("Dynamic table {} is already suspended.", dt.name)));
        }
        // Airflow first: if it cannot pause the DAG, nothing changes; if the catalog then cannot
        // change, the DAG is unpaused again.
        let dag = self.pause_dag(&dt, true).await?;
        if let Err(e) = self.set_status(&dt, &dt.status, "SUSPENDED").await {
            if let Some(handle) = dag {
                self.airflow()?.pause(&handle, false).await.ok();
            }
            return Err(e);
        }
        tracing::info!(table = %dt.name, by = who.user, "dynamic table suspended");
        Ok(Altered { notices: vec![] })
    }

    pub async fn resume(&self, who: &Requester<'_>, name: &TableName, options: &Options) -> Result<Altered, ManagerError> {
        let dt = self.for_change(who, name, "resume").await?;
        let mut notices = Vec::new();
        if !options.is_empty() {
            notices.push("RESUME options have no effect on the PostgreSQL engine".to_string());
        }
        if dt.status == "ACTIVATED" {
            // The PostgreSQL engine's refresh work is the gateway's loop, which cannot die apart
            // from the gateway: an ACTIVATED table is already being refreshed.
            notices.push(format!("dynamic table {} is already active", dt.name));
            return Ok(Altered { notices });
        }
        // Unpaused, Airflow runs the latest missed tick once (like --missed-refreshes run-once).
        let dag = self.pause_dag(&dt, false).await?;
        if let Err(e) = self.set_status(&dt, "SUSPENDED", "ACTIVATED").await {
            if let Some(handle) = dag {
                self.airflow()?.pause(&handle, true).await.ok();
            }
            return Err(e);
        }
        tracing::info!(table = %dt.name, by = who.user, "dynamic table resumed");
        Ok(Altered { notices })
    }

    pub async fn set_freshness(&self, who: &Requester<'_>, name: &TableName, f: Freshness) -> Result<Altered, ManagerError> {
        let dt = self.for_change(who, name, "alter").await?;
        let logical = match dt.logical_mode.as_str() {
            "CONTINUOUS" => LogicalMode::Continuous,
            "FULL" => LogicalMode::Full,
            _ => LogicalMode::Automatic,
        };
        let mode = rules::derive_mode(f, logical, self.threshold);
        if mode == RefreshMode::Full {
            rules::full_mode_cron(f)?;
        }
        // A FULL table keeps its scheduler; one becoming FULL gets its own choice or the default.
        let options: Options = dt.option_pairs();
        let scheduler = match (mode, dt.scheduler.as_deref().and_then(SchedulerKind::parse)) {
            (RefreshMode::Continuous, _) => None,
            (RefreshMode::Full, Some(kind)) => Some(kind),
            (RefreshMode::Full, None) => Some(self.scheduler_for(&options)?),
        };
        let plugin = match scheduler {
            Some(SchedulerKind::Airflow) => Some(self.airflow_for(f)?),
            _ => None,
        };
        let secs = f.duration().as_secs() as i64;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE dyngate.dynamic_table
                SET freshness_n = $2, freshness_unit = $3, freshness = make_interval(secs => $4::bigint), refresh_mode = $5,
                    scheduler = $6, altered_at = now(),
                    last_slot = now()
              WHERE id = $1",
            &[
                &dt.id,
                &(f.n as i32),
                &f.unit.name(),
                &secs,
                &refresh_mode_name(mode),
                &scheduler.map(SchedulerKind::name),
            ],
        )
        .await?;
        // The Airflow DAG follows: rewritten with the new cron, created for a table now FULL on
        // Airflow, removed for one now CONTINUOUS (after the commit: a DAG is only lost once the
        // catalog no longer needs it).
        let old = external::handle(&dt);
        let mut remove = None;
        let mut registered = None;
        match (old, plugin) {
            (Some(handle), Some(plugin)) => {
                let start = external::now_iso(&tx).await?;
                plugin
                    .reschedule(&handle, &external::target(&self.database, &dt, f, &start))
                    .await
                    .map_err(external::plugin_error)?;
            }
            (None, Some(plugin)) => {
                let start = external::now_iso(&tx).await?;
                let handle = plugin
                    .register(&external::target(&self.database, &dt, f, &start))
                    .await
                    .map_err(external::plugin_error)?;
                let recorded = async {
                    // A suspended table's new DAG starts paused too.
                    if dt.status == "SUSPENDED" {
                        plugin.pause(&handle, true).await.map_err(external::plugin_error)?;
                    }
                    let json = serde_json::to_string(&handle).unwrap_or_default();
                    catalog::set_scheduler(&tx, dt.id, Some("airflow"), Some(&json)).await?;
                    Ok::<_, ManagerError>(())
                }
                .await;
                if let Err(e) = recorded {
                    plugin.unregister(&handle).await.ok();
                    return Err(e);
                }
                registered = Some((plugin, handle));
            }
            (Some(handle), None) => {
                catalog::set_scheduler(&tx, dt.id, scheduler.map(SchedulerKind::name), None).await?;
                remove = Some(handle);
            }
            (None, None) => {}
        }
        if let Err(e) = tx.commit().await {
            if let Some((plugin, handle)) = registered {
                plugin.unregister(&handle).await.ok();
            }
            return Err(e.into());
        }
        if let Some(handle) = remove {
            let removed = match self.airflow() {
                Ok(plugin) => plugin.unregister(&handle).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = removed {
                tracing::warn!(table = %dt.name, dag = handle.dag_id, error = %e, "removing the Airflow DAG of a table now CONTINUOUS");
            }
        }
        tracing::info!(table = %dt.name, freshness = %f, mode = refresh_mode_name(mode), "freshness changed");
        let mut notices = Vec::new();
        if refresh_mode_name(mode) != dt.refresh_mode {
            notices.push(format!("refresh mode of {} is now {}", dt.name, refresh_mode_name(mode)));
        }
        Ok(Altered { notices })
    }

    /// SET (...) merges options; RESET (...) removes them. `engine` cannot change yet.
    pub async fn set_options(
        &self,
        who: &Requester<'_>,
        name: &TableName,
        set: &[(String, String)],
        reset: &[String],
    ) -> Result<Altered, ManagerError> {
        let dt = self.for_change(who, name, "alter").await?;
        for (k, v) in set {
            match k.as_str() {
                "engine" if v != &dt.engine => {
                    return Err(ManagerError::Unsupported(
                        "changing the engine of a dynamic table is not supported yet".into(),
                    ));
                }
                "scheduler" if SchedulerKind::parse(v).is_none() => {
                    return Err(ManagerError::InvalidOption(format!(
                        "unknown scheduler '{v}' (known: embedded, airflow)"
                    )));
                }
                // A CONTINUOUS table has none yet: the option applies when it becomes FULL.
                "scheduler" if dt.scheduler.is_some() && Some(v.as_str()) != dt.scheduler.as_deref() => {
                    return Err(ManagerError::Unsupported(format!(
                        "moving a dynamic table to scheduler '{v}' is not supported yet; create it again with WITH ('scheduler' = '{v}')"
                    )));
                }
                _ => {}
            }
        }
        if reset.iter().any(|k| k == "engine") {
            return Err(ManagerError::Unsupported(
                "changing the engine of a dynamic table is not supported yet".into(),
            ));
        }
        let mut options = dt.options.as_object().cloned().unwrap_or_default();
        for k in reset {
            options.remove(k);
        }
        for (k, v) in set {
            options.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let flat: Vec<(String, String)> = options
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        rules::partition_formatters(&flat, &dt.partitioned_by).map_err(ManagerError::InvalidOption)?;
        // The schedule's time zone is a column of its own; RESET puts it back to UTC.
        let time_zone = match options.get(TIME_ZONE_OPTION) {
            Some(tz) => tz.as_str().unwrap_or_default().to_string(),
            None if reset.iter().any(|k| k == TIME_ZONE_OPTION) => "UTC".to_string(),
            None => dt.time_zone.clone(),
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        check_time_zone(&tx, &time_zone).await?;
        tx.execute(
            "UPDATE dyngate.dynamic_table
                SET options = $2::text::jsonb, time_zone = $3, altered_at = now(),
                    last_slot = CASE WHEN time_zone = $3 THEN last_slot ELSE now() END
              WHERE id = $1",
            &[&dt.id, &serde_json::Value::Object(options).to_string(), &time_zone],
        )
        .await?;
        tx.commit().await?;
        Ok(Altered { notices: vec![] })
    }
}
