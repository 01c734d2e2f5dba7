//! ALTER DYNAMIC TABLE: SUSPEND, RESUME, SET FRESHNESS, SET (...), RESET (...). (REFRESH is
//! [`refresh`](super::refresh); AS is [`alter_query`](super::alter_query).) Each change is one catalog
//! update, by a member of the owner's role, and takes effect at the refresh loop's next tick: the
//! schedules are the catalog rows.
//!
//! States follow Flink: ACTIVATED <-> SUSPENDED, and suspending a suspended table is an error.
//! Unlike Flink, SET FRESHNESS works, re-deriving the mode (CONTINUOUS or FULL) and the schedule
//! without recreating the table.

use crate::manager::catalog::DtRow;
use crate::manager::create::{TIME_ZONE_OPTION, check_time_zone, refresh_mode_name};
use crate::manager::rules::{self, Freshness, LogicalMode, RefreshMode};
use crate::manager::{Manager, ManagerError, Requester};
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

    pub async fn suspend(&self, who: &Requester<'_>, name: &TableName) -> Result<Altered, ManagerError> {
        let dt = self.for_change(who, name, "suspend").await?;
        if dt.status == "SUSPENDED" {
            return Err(ManagerError::WrongState(format!("Dynamic table {} is already suspended.", dt.name)));
        }
        self.set_status(&dt, &dt.status, "SUSPENDED").await?;
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
        self.set_status(&dt, "SUSPENDED", "ACTIVATED").await?;
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
        let secs = f.duration().as_secs() as i64;
        let client = self.pool.get().await?;
        client
            .execute(
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
                    &(mode == RefreshMode::Full).then_some("embedded"),
                ],
            )
            .await?;
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
                "scheduler" if v != "embedded" => {
                    return Err(ManagerError::Unsupported(format!(
                        "scheduler '{v}' is not available yet (only 'embedded' is)"
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
