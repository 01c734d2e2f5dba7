//! The refresh loop of the PostgreSQL engine and the embedded workflow scheduler, in one task per
//! gateway: every tick it finds the ACTIVATED tables whose current schedule slot has not been
//! claimed yet, claims each slot with a compare-and-set on the catalog (so two gateways sharing a
//! catalog never fire the same slot), and runs the refresh.
//!
//! FULL tables fire on the Quartz cron derived from their freshness (the embedded scheduler);
//! CONTINUOUS tables are refreshed every freshness period (the engine keeping them fresh), except
//! those on the flink engine, which a streaming job keeps fresh (engine::flink::continuous). The
//! schedules are the catalog rows themselves, so they survive restarts; slots missed while no
//! gateway ran are coalesced into one run (or skipped, with --missed-refreshes skip).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::catalog;
use crate::core::rules::{Freshness, Unit};
use crate::core::{Error, Trigger, rules};
use crate::manager::Manager;

/// What to do with schedule slots missed while no gateway was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MissedRefreshes {
    /// One refresh for all the missed slots.
    RunOnce,
    /// No refresh: record the missed slot as SKIPPED and wait for the next one.
    Skip,
}

/// Settings of the refresh loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    pub tick: Duration,
    pub missed: MissedRefreshes,
    /// Refreshes running at once on this gateway.
    pub concurrency: usize,
}

fn unit(name: &str) -> Option<Unit> {
    Some(match name {
        "SECOND" => Unit::Second,
        "MINUTE" => Unit::Minute,
        "HOUR" => Unit::Hour,
        "DAY" => Unit::Day,
        _ => return None,
    })
}

impl Manager {
    /// Runs until `stop` changes.
    pub async fn run_refresh_loop(self: Arc<Self>, config: LoopConfig, mut stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut ticks: u64 = 0;
        let mut wait = Duration::ZERO;
        loop {
            // Every tick (new tables, changes, other gateways' claims), and exactly at the next
            // slot boundary when that comes sooner: a slot is not fired a tick late.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            // Now and then (and at start), close the history rows of refreshes a killed gateway
            // left EXECUTING.
            if ticks.is_multiple_of(50)
                && let Err(e) = self.cancel_orphans().await
            {
                tracing::warn!(error = %e, "checking for orphaned refreshes");
            }
            ticks += 1;
            wait = match self.fire_due(&config, &permits).await {
                Ok(Some(next)) => next.min(config.tick),
                Ok(None) => config.tick,
                Err(e) => {
                    tracing::warn!(error = %e, "refresh loop");
                    config.tick
                }
            };
        }
        // Let running refreshes finish (they hold all permits when done).
        let _ = permits.acquire_many(config.concurrency.max(1) as u32).await;
    }

    async fn cancel_orphans(&self) -> Result<(), Error> {
        let client = self.pool.get().await?;
        let n = catalog::cancel_orphaned_refreshes(&*client).await?;
        if n > 0 {
            tracing::warn!(refreshes = n, "marked refreshes left EXECUTING by a stopped gateway as CANCELLED");
        }
        Ok(())
    }

    /// Fires the due slots; returns how long until the next slot boundary of any table.
    async fn fire_due(self: &Arc<Self>, config: &LoopConfig, permits: &Arc<Semaphore>) -> Result<Option<Duration>, Error> {
        let client = self.pool.get().await?;
        // The database's clock, so that every gateway sharing the catalog agrees on the slots.
        let rows = client
            .query(
                "SELECT id, freshness_n, freshness_unit, floor(extract(epoch FROM last_slot))::bigint, extract(epoch FROM now)::float8,
                        extract(epoch FROM (now AT TIME ZONE time_zone) - (now AT TIME ZONE 'UTC'))::bigint
                   FROM dyngate.dynamic_table, clock_timestamp() AS now
                  WHERE status = 'ACTIVATED' AND (refresh_mode = 'CONTINUOUS' OR coalesce(scheduler, 'embedded') = 'embedded')
                    AND NOT (engine = 'flink' AND refresh_mode = 'CONTINUOUS')",
                &[],
            )
            .await?;
        // (id, slot, whether earlier slots were missed) of every table whose slot is due.
        let mut due: Vec<(i64, i64, bool)> = Vec::new();
        let mut next: Option<f64> = None;
        for r in rows {
            let (id, n, u, last, now, offset): (i64, i32, String, Option<i64>, f64, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            let Some(unit) = unit(&u) else { continue };
            let f = Freshness { n: n as u32, unit };
            let slot = rules::slot(now.floor() as i64, f, offset);
            let period = f.duration().as_secs() as i64;
            let until_next = (slot + period) as f64 - now;
            next = Some(next.map_or(until_next, |n| n.min(until_next)));
            if last.is_some_and(|l| l >= slot) {
                continue;
            }
            due.push((id, slot, last.is_some_and(|l| slot - l > period)));
        }
        // A millisecond late, so that the boundary has passed on the database's clock.
        let next = next.map(|s| Duration::from_secs_f64(s.max(0.0) + 0.001));
        if due.is_empty() {
            return Ok(next);
        }
        // One compare-and-set for all of them (returning the claimed tables): what another gateway
        // claimed first is left out.
        let ids: Vec<i64> = due.iter().map(|d| d.0).collect();
        let slots: Vec<i64> = due.iter().map(|d| d.1).collect();
        let tables = catalog::claim_slots(&*client, &ids, &slots).await?;
        drop(client);
        for dt in tables {
            let Some(&(_, slot, missed)) = due.iter().find(|d| d.0 == dt.id) else {
                continue;
            };
            if missed && config.missed == MissedRefreshes::Skip {
                let reason = "schedule slots were missed while no gateway was running (--missed-refreshes skip)";
                let client = self.pool.get().await?;
                let job_id = crate::core::names::new_job_id();
                let skipped = catalog::RefreshRow {
                    schedule_time: Some(slot),
                    ended: true,
                    error_message: Some(reason),
                    ..catalog::RefreshRow::of(&dt, &job_id, "SCHEDULED", "SKIPPED")
                };
                catalog::record_refresh(&*client, &skipped).await?;
                continue;
            }
            let me = self.clone();
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return Ok(next);
            };
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = me
                    .run_refresh(&dt, Trigger::Scheduled { slot }, crate::core::names::new_job_id())
                    .await
                {
                    tracing::debug!(table = %dt.name, error = %e, "scheduled refresh failed");
                }
            });
        }
        Ok(next)
    }
}
