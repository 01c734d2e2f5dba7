//! ALTER DYNAMIC TABLE: SUSPEND, RESUME, SET FRESHNESS, SET (...), RESET (...). (REFRESH is
//! [`refresh`](super::refresh); AS is [`alter_query`](super::alter_query).) Each change is one catalog
//! transaction, by a member of the owner's role. The embedded scheduler follows at its next tick
//! (its schedules are the catalog rows); an external scheduler's schedule is changed inside the
//! transaction, following the rules in [`external`].
//!
//! States follow Flink: ACTIVATED <-> SUSPENDED, and suspending a suspended table is an error.
//! Unlike Flink, SET FRESHNESS works, re-deriving the mode (CONTINUOUS or FULL) and the schedule
//! without recreating the table, and `SET ('scheduler' = ...)` moves a FULL table to another
//! scheduler.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::Transaction;

use crate::catalog::{self, DtRow};
use crate::core::rules::{self, Freshness};
use crate::core::{Error, RefreshMode, Requester, SchedulerKind, Status};
use crate::engine::Engine;
use crate::engine::postgres::incremental;
use crate::manager::create::{TIME_ZONE_OPTION, check_time_zone};
use crate::manager::external::{self, SCHEDULER_OPTION, Scheduled};
use crate::manager::{Manager, on_engine};
use crate::scheduler::{Handle, Plugin};
use crate::sql::dynamic::{Options, TableName};

/// What [`Manager::switch_schedule`] did that the caller finishes around the commit.
#[derive(Default)]
struct Switched {
    /// A schedule created in the transaction: removed again if the commit fails.
    registered: Option<(Arc<dyn Plugin>, Handle)>,
    /// The old schedule, queued for removal: removed after the commit.
    removal: Option<(SchedulerKind, Handle, Option<i64>)>,
}

impl Switched {
    /// Commits `tx`, then removes the old schedule; a failed commit removes the new one instead.
    async fn commit(self, manager: &Manager, tx: Transaction<'_>, dt: &DtRow) -> Result<(), Error> {
        if let Err(e) = tx.commit().await {
            if let Some((plugin, handle)) = self.registered {
                plugin.unregister(&handle).await.ok();
            }
            return Err(e.into());
        }
        if let Some((kind, handle, queued)) = self.removal {
            manager.remove_queued(queued, kind, &handle, &dt.name).await;
        }
        Ok(())
    }
}

/// What an ALTER did, for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Altered {
    pub notices: Vec<String>,
}

impl Manager {
    /// Loads a dynamic table for a change by `who`, who must be a member of the owner's role.
    pub(crate) async fn for_change(&self, who: &Requester<'_>, name: &TableName, action: &'static str) -> Result<DtRow, Error> {
        self.check_database(who)?;
        if who.in_transaction {
            return Err(Error::InTransaction("ALTER DYNAMIC TABLE"));
        }
        let mut client = self.pool.get().await?;
        let dt = self.load_existing(&mut client, who, name).await?;
        Self::require_member(&*client, who, &dt, action).await?;
        if dt.status == Status::Initializing {
            // Flink's words: its first job is still being started.
            return Err(Error::WrongState(format!(
                "Dynamic table {} is being initialized and does not support {action} operation.",
                dt.name
            )));
        }
        Ok(dt)
    }

    /// Sets the status from `from` to `to` and the schedule's active state with it; another
    /// concurrent change makes it fail cleanly.
    ///
    /// `options` (RESUME WITH) replace the table's refresh options, which its scheduler sends with
    /// each refresh call from then on.
    async fn set_status(&self, dt: &DtRow, from: Status, to: Status, options: Option<&BTreeMap<String, String>>) -> Result<(), Error> {
        let active = to == Status::Activated;
        let options = options.map(|o| serde_json::to_string(o).unwrap_or_default());
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        external::lock_schedule(&tx, dt.id).await?;
        // Resuming restarts the schedule at the current slot: no burst of catch-up refreshes.
        let row = tx
            .query_opt(
                "UPDATE dyngate.dynamic_table
                    SET status = $3, altered_at = now(),
                        last_slot = CASE WHEN $2 = $3 THEN last_slot ELSE now() END,
                        refresh_options = coalesce($4::text::jsonb, refresh_options)
                  WHERE id = $1 AND status = $2
                RETURNING id",
                &[&dt.id, &from.name(), &to.name(), &options],
            )
            .await?;
        if row.is_none() {
            return Err(Error::WrongState(format!(
                "Dynamic table {} changed concurrently; try again.",
                dt.name
            )));
        }
        // The schedule as of now (the locks keep it so until the commit).
        let current = catalog::load_by_id(&tx, dt.id)
            .await?
            .ok_or_else(|| Error::NotFound(dt.name.to_string()))?;
        let schedule = match external::schedule_of(&current) {
            Some((kind, mut handle)) if !handle.is_none() => {
                let plugin = self.plugin(kind)?;
                if options.is_some() {
                    // The new configuration goes into the schedule before it runs again.
                    let catalog_id = self.catalog_id().await?;
                    let start = external::now_iso(&tx).await?;
                    let scheduled = Scheduled {
                        catalog: catalog_id,
                        database: &self.database,
                        dt: &current,
                        freshness: current.freshness,
                        start: &start,
                    };
                    handle = plugin
                        .reschedule(&handle, &scheduled.target())
                        .await
                        .map_err(external::plugin_error)?;
                    catalog::set_scheduler(&tx, dt.id, Some(kind), external::handle_json(&handle).as_deref()).await?;
                }
                plugin.set_active(&handle, active).await.map_err(external::plugin_error)?;
                Some((plugin, handle))
            }
            _ => None,
        };
        if let Err(e) = tx.commit().await {
            if let Some((plugin, handle)) = schedule {
                plugin.set_active(&handle, !active).await.ok();
            }
            return Err(e.into());
        }
        Ok(())
    }

    pub async fn suspend(&self, who: &Requester<'_>, name: &TableName) -> Result<Altered, Error> {
        let dt = self.for_change(who, name, "suspend").await?;
        if dt.status == Status::Suspended {
            return Err(Error::WrongState(format!("Dynamic table {} is already suspended.", dt.name)));
        }
        if !on_engine!(self, dt.engine, |engine| engine.suspend(&dt).await?) {
            self.set_status(&dt, dt.status, Status::Suspended, None).await?;
        }
        tracing::info!(table = %dt.name, by = who.user, "dynamic table suspended");
        Ok(Altered { notices: vec![] })
    }

    pub async fn resume(&self, who: &Requester<'_>, name: &TableName, options: &Options) -> Result<Altered, Error> {
        let dt = self.for_change(who, name, "resume").await?;
        let mut notices = Vec::new();
        let options: Option<BTreeMap<String, String>> = (!options.is_empty()).then(|| options.iter().cloned().collect());
        if options.is_some() {
            notices.push(format!(
                "RESUME options of {} are kept as its refresh options, which its scheduler sends with each refresh call; the PostgreSQL engine does not read them",
                dt.name
            ));
        }
        if let Some(notices) = on_engine!(self, dt.engine, |engine| engine.resume(&dt, options.as_ref()).await?) {
            tracing::info!(table = %dt.name, by = who.user, "dynamic table resumed");
            return Ok(Altered { notices });
        }
        if dt.status == Status::Activated && options.is_none() {
            // The PostgreSQL engine's refresh work is the gateway's loop, which cannot die apart
            // from the gateway: an ACTIVATED table is already being refreshed.
            notices.push(format!("dynamic table {} is already active", dt.name));
            return Ok(Altered { notices });
        }
        // An external scheduler resumes at its next tick, as the embedded one does (Airflow's
        // plug-in keeps Airflow from running the latest missed tick).
        self.set_status(&dt, dt.status, Status::Activated, options.as_ref()).await?;
        tracing::info!(table = %dt.name, by = who.user, "dynamic table resumed");
        Ok(Altered { notices })
    }

    /// Gives `cur` (the row as of now, in `tx`, which holds its schedule locks) the schedule that
    /// freshness `f` on plug-in `to` needs (`to` None: none, the table being CONTINUOUS): the
    /// same scheduler reschedules, another one registers anew and the old schedule is queued for
    /// removal.
    async fn switch_schedule(
        &self,
        tx: &Transaction<'_>,
        cur: &DtRow,
        f: Freshness,
        to: Option<Arc<dyn Plugin>>,
        reason: &str,
    ) -> Result<Switched, Error> {
        let old = external::schedule_of(cur);
        let mut out = Switched::default();
        let Some(plugin) = to else {
            if let Some((kind, handle)) = old {
                catalog::set_scheduler(tx, cur.id, None, None).await?;
                let queued = self.queue_removal(tx, kind, &handle, &cur.name, reason).await?;
                out.removal = Some((kind, handle, queued));
            }
            return Ok(out);
        };
        let catalog_id = self.catalog_id().await?;
        let start = external::now_iso(tx).await?;
        let scheduled = Scheduled {
            catalog: catalog_id,
            database: &self.database,
            dt: cur,
            freshness: f,
            start: &start,
        };
        let target = scheduled.target();
        let kind = plugin.kind();
        match old {
            Some((old_kind, handle)) if old_kind == kind => {
                let handle = plugin.reschedule(&handle, &target).await.map_err(external::plugin_error)?;
                catalog::set_scheduler(tx, cur.id, Some(kind), external::handle_json(&handle).as_deref()).await?;
            }
            old => {
                let handle = plugin
                    .register(&target, cur.status == Status::Activated)
                    .await
                    .map_err(external::plugin_error)?;
                let recorded = async {
                    catalog::set_scheduler(tx, cur.id, Some(kind), external::handle_json(&handle).as_deref()).await?;
                    if let Some((old_kind, old_handle)) = old {
                        let queued = self.queue_removal(tx, old_kind, &old_handle, &cur.name, reason).await?;
                        out.removal = Some((old_kind, old_handle, queued));
                    }
                    Ok::<_, Error>(())
                }
                .await;
                if let Err(e) = recorded {
                    plugin.unregister(&handle).await.ok();
                    return Err(e);
                }
                out.registered = Some((plugin, handle));
            }
        }
        Ok(out)
    }

    pub async fn set_freshness(&self, who: &Requester<'_>, name: &TableName, f: Freshness) -> Result<Altered, Error> {
        let dt = self.for_change(who, name, "alter").await?;
        on_engine!(self, dt.engine, |engine| self.set_freshness_on(engine, &dt, f).await)
    }

    /// SET FRESHNESS on `engine`: the mode derived again and checked, the engine's preparation
    /// (a Flink table moving between the modes: checked, or its job stopped, before anything
    /// changes), the transaction, and the engine's finish (which undoes its preparation when the
    /// transaction failed).
    async fn set_freshness_on<E: Engine>(&self, engine: &E, dt: &DtRow, f: Freshness) -> Result<Altered, Error> {
        let mode = rules::derive_mode(f, dt.logical_mode, self.threshold);
        if mode == RefreshMode::Full {
            rules::full_mode_cron(f)?;
        }
        // A FULL table keeps its scheduler; one becoming FULL gets its own choice or the default.
        let options: Options = dt.option_pairs();
        let scheduler = match (mode, dt.scheduler) {
            (RefreshMode::Continuous, _) => None,
            (RefreshMode::Full, Some(kind)) => Some(kind),
            (RefreshMode::Full, None) => Some(self.scheduler_for(&options)?),
        };
        if let Some(kind) = scheduler {
            self.plugin_for(kind, f)?;
        }
        let change = engine.prepare_freshness(dt, mode).await?;
        let changed = self.set_freshness_in(engine, dt, f, mode, scheduler, &change).await;
        let finished = engine.freshness_changed(dt, change, changed.is_ok()).await;
        changed?;
        tracing::info!(table = %dt.name, freshness = %f, mode = mode.name(), "freshness changed");
        let mut notices = Vec::new();
        if mode != dt.refresh_mode {
            notices.push(format!("refresh mode of {} is now {}", dt.name, mode.name()));
        }
        notices.extend(finished?);
        Ok(Altered { notices })
    }

    /// SET FRESHNESS's transaction (see `set_freshness_on`).
    async fn set_freshness_in<E: Engine>(
        &self,
        engine: &E,
        dt: &DtRow,
        f: Freshness,
        mode: RefreshMode,
        scheduler: Option<SchedulerKind>,
        change: &E::FreshnessChange,
    ) -> Result<(), Error> {
        let plugin = scheduler.map(|k| self.plugin_for(k, f)).transpose()?;
        let secs = f.duration().as_secs() as i64;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        external::lock_schedule(&tx, dt.id).await?;
        engine.change_freshness(&tx, dt, change).await?;
        tx.execute(
            "UPDATE dyngate.dynamic_table
                SET freshness_n = $2, freshness_unit = $3, freshness = make_interval(secs => $4::bigint), refresh_mode = $5,
                    altered_at = now(),
                    last_slot = now()
              WHERE id = $1",
            &[&dt.id, &(f.n as i32), &f.unit.name(), &secs, &mode.name()],
        )
        .await?;
        // The schedule follows: rescheduled, created for a table now FULL, removed for one now
        // CONTINUOUS (after the commit: a schedule is only lost once the catalog no longer needs it).
        let cur = catalog::load_by_id(&tx, dt.id)
            .await?
            .ok_or_else(|| Error::NotFound(dt.name.to_string()))?;
        let switched = self.switch_schedule(&tx, &cur, f, plugin, "now CONTINUOUS").await?;
        switched.commit(self, tx, &cur).await?;
        Ok(())
    }

    /// SET (...) merges options; RESET (...) removes them. `engine` cannot change yet.
    pub async fn set_options(
        &self,
        who: &Requester<'_>,
        name: &TableName,
        set: &[(String, String)],
        reset: &[String],
    ) -> Result<Altered, Error> {
        let dt = self.for_change(who, name, "alter").await?;
        for (k, v) in set {
            match k.as_str() {
                "engine" if v != dt.engine.name() => {
                    return Err(Error::Unsupported(
                        "changing the engine of a dynamic table is not supported yet".into(),
                    ));
                }
                SCHEDULER_OPTION => {
                    external::parse_kind(v)?;
                }
                incremental::ACTION_OPTION => {
                    incremental::requested(&[(k.clone(), v.clone())]).map_err(Error::InvalidOption)?;
                }
                _ => {}
            }
        }
        if reset.iter().any(|k| k == "engine") {
            return Err(Error::Unsupported(
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
        rules::partition_formatters(&flat, &dt.partitioned_by).map_err(Error::InvalidOption)?;
        // The schedule's time zone is a column of its own; RESET puts it back to UTC.
        let time_zone = match options.get(TIME_ZONE_OPTION) {
            Some(tz) => tz.as_str().unwrap_or_default().to_string(),
            None if reset.iter().any(|k| k == TIME_ZONE_OPTION) => "UTC".to_string(),
            None => dt.time_zone.clone(),
        };
        // A FULL table moves when its scheduler is named (SET) or put back to the default (RESET);
        // a CONTINUOUS one has none: the option applies when it becomes FULL.
        let f = dt.freshness;
        let moves = set.iter().any(|(k, _)| k == SCHEDULER_OPTION) || reset.iter().any(|k| k == SCHEDULER_OPTION);
        let plugin = match dt.scheduler {
            Some(_) if moves => Some(self.plugin_for(self.scheduler_for(&flat)?, f)?),
            Some(kind) if time_zone != dt.time_zone => Some(self.plugin_for(kind, f)?),
            _ => None,
        };
        let action_changes =
            set.iter().any(|(k, _)| k == incremental::ACTION_OPTION) || reset.iter().any(|k| k == incremental::ACTION_OPTION);
        let mut client = self.pool.get().await?;
        let _held = match action_changes {
            true => on_engine!(self, dt.engine, |engine| engine.prepare_change().await?),
            false => None,
        };
        let tx = client.transaction().await?;
        check_time_zone(&tx, &time_zone).await?;
        if action_changes {
            // No refresh runs while the refresh action changes (taken before the schedule's
            // lock, in the order DROP takes them).
            catalog::lock_table(&tx, dt.id).await?;
        }
        external::lock_schedule(&tx, dt.id).await?;
        tx.execute(
            "UPDATE dyngate.dynamic_table
                SET options = $2::text::jsonb, time_zone = $3, altered_at = now(),
                    last_slot = CASE WHEN time_zone = $3 THEN last_slot ELSE now() END
              WHERE id = $1",
            &[&dt.id, &serde_json::Value::Object(options).to_string(), &time_zone],
        )
        .await?;
        let cur = catalog::load_by_id(&tx, dt.id)
            .await?
            .ok_or_else(|| Error::NotFound(dt.name.to_string()))?;
        let mut notices = on_engine!(self, dt.engine, |engine| engine.options_changed(&tx, &cur, action_changes).await?);
        let switched = match plugin {
            Some(plugin) => {
                let to = plugin.kind();
                if cur.scheduler != Some(to) {
                    notices.push(format!("dynamic table {} is now scheduled by the {} scheduler", dt.name, to.name()));
                }
                let reason = format!("moved to the {} scheduler", to.name());
                self.switch_schedule(&tx, &cur, f, Some(plugin), &reason).await?
            }
            None => Switched::default(),
        };
        switched.commit(self, tx, &cur).await?;
        Ok(Altered { notices })
    }
}
