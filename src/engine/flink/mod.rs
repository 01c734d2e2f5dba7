//! The Flink engine (`WITH ('engine' = 'flink')`, or `--engine flink`): the table lives in the
//! backing PostgreSQL like any other, Apache Flink computes its rows. A FULL table is refilled by
//! batch jobs ([`full`]); a CONTINUOUS one is kept up to date by a streaming job ([`continuous`]);
//! ALTER ... AS and moves between the modes are in [`alter`]. Statements that name the Flink
//! database run in Flink itself ([`statements`]).
//!
//! Underneath: [`client`] speaks Flink's REST APIs and knows nothing of dynamic tables;
//! [`runtime`] keeps this gateway's SQL Gateway session in step with the catalog's Flink
//! objects; [`tables`] writes the pure SQL of sinks, staging tables and keys; [`error`] turns
//! Flink's errors into the user-facing error.

pub mod alter;
pub mod client;
pub mod continuous;
pub mod error;
pub mod full;
pub mod runtime;
pub mod statements;
pub mod tables;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::Transaction;

use crate::backend::{Pooled, ServicePool};
use crate::catalog::{self, DtRow, FlinkColumn, Identity};
use crate::core::{Error, RefreshAction, RefreshMode, Requester, Status};
use crate::engine::{Engine, Filled, NewTable, Outcome, RefreshJob};
use continuous::Continuous;
use full::{FlinkFill, StageGuard};
use runtime::FlinkRuntime;

/// The Flink engine of a gateway. A gateway started without `--flink-gateway` has one too, with
/// no runtime: what needs Flink fails with 0A000 there, while what only reads or writes the
/// catalog (DESCRIBE, SUSPEND of a FULL table, DROP of a table without a job) still works on
/// tables other gateways made.
pub struct FlinkEngine {
    pool: ServicePool,
    runtime: Option<Arc<FlinkRuntime>>,
    catalog_id: Arc<Identity>,
}

impl FlinkEngine {
    pub fn new(pool: ServicePool, runtime: Option<Arc<FlinkRuntime>>, catalog_id: Arc<Identity>) -> FlinkEngine {
        FlinkEngine { pool, runtime, catalog_id }
    }

    /// Flink, or 0A000 when this gateway has none.
    pub fn runtime(&self) -> Result<&Arc<FlinkRuntime>, Error> {
        self.runtime
            .as_ref()
            .ok_or_else(|| Error::Unsupported("this gateway has no Flink engine (start it with --flink-gateway)".into()))
    }

    /// The Flink database of this gateway, if it has Flink: statements that name it run there.
    pub fn database(&self) -> Option<&str> {
        self.runtime.as_ref().map(|r| r.database())
    }

    /// How long the engine waits for Flink (`--flink-timeout`), if it has Flink.
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.runtime.as_ref().map(|r| r.config().timeout)
    }

    /// Where the engine's jobs run, as the refresh endpoint reports it (`clusterInfo`), if it has Flink.
    pub fn cluster_info(&self) -> Option<serde_json::Value> {
        self.runtime.as_ref().map(|r| r.cluster_info())
    }
}

/// What a Flink table's CREATE prepares before its transaction.
pub enum FlinkCreation {
    /// FULL: the first fill, staged (the guard drops the staging table unless the transaction
    /// took it).
    Full { fill: FlinkFill, guard: StageGuard },
    /// CONTINUOUS: the query's columns; the sink, once the table is made (the job starts after
    /// the commit).
    Continuous {
        described: Vec<FlinkColumn>,
        sink: Option<Continuous>,
    },
}

/// What a Flink table's SET FRESHNESS prepares before its transaction.
pub struct FlinkFreshness {
    mode: RefreshMode,
    /// The table moves between the modes.
    switching: bool,
    /// Becoming CONTINUOUS: the sink's columns, checked.
    to_continuous: Option<Vec<FlinkColumn>>,
    /// Becoming FULL with a job running: the job was stopped (with this savepoint, if any).
    stopped: Option<Option<String>>,
}

impl Engine for FlinkEngine {
    type Creation = FlinkCreation;
    type FreshnessChange = FlinkFreshness;

    fn check_options(&self, options: &[(String, String)]) -> Result<(), Error> {
        full::check_options(options)
    }

    async fn prepare_change(&self) -> Result<Option<Pooled>, Error> {
        Ok(None)
    }

    async fn prepare_create(&self, new: &NewTable<'_>) -> Result<FlinkCreation, Error> {
        if new.mode == RefreshMode::Continuous {
            return Ok(FlinkCreation::Continuous {
                described: self.describe_query(new.query).await?,
                sink: None,
            });
        }
        let fill = self.first_fill(new.query, new.name).await?;
        let guard = StageGuard {
            pool: self.pool.clone(),
            stage: Some(fill.stage.clone()),
        };
        Ok(FlinkCreation::Full { fill, guard })
    }

    async fn fill(&self, tx: &Transaction<'_>, new: &NewTable<'_>, id: i64, creation: &mut FlinkCreation) -> Result<Filled, Error> {
        let rows = match creation {
            FlinkCreation::Full { fill, .. } => self.create_in(tx, new, id, fill).await?,
            FlinkCreation::Continuous { described, sink } => {
                let made = self.continuous_create_in(tx, new, id, described).await?;
                *sink = Some(made);
                0
            }
        };
        Ok(Filled {
            rows,
            action: RefreshAction::Full,
        })
    }

    async fn record_fill(&self, tx: &Transaction<'_>, id: i64, job_id: &str, creation: &FlinkCreation) -> Result<(), Error> {
        if let FlinkCreation::Full { fill, .. } = creation {
            self.record_engine_job(tx, id, job_id, fill.job.as_str()).await?;
        }
        Ok(())
    }

    async fn created(&self, new: &NewTable<'_>, id: i64, creation: FlinkCreation, job_id: &str) -> Result<(), Error> {
        match creation {
            // The committed transaction dropped the staging table.
            FlinkCreation::Full { mut guard, .. } => {
                guard.stage = None;
                Ok(())
            }
            FlinkCreation::Continuous { sink: Some(sink), .. } => {
                self.continuous_start(new.owner, new.name, id, new.query, &sink, new.freshness.duration(), job_id)
                    .await
            }
            FlinkCreation::Continuous { sink: None, .. } => Ok(()),
        }
    }

    async fn refresh(&self, client: &mut Pooled, dt: &DtRow, job: &RefreshJob<'_>) -> Result<Outcome, Error> {
        self.refresh_full(client, dt, job).await
    }

    async fn alter_query(&self, who: &Requester<'_>, dt: &DtRow, query: &str, _search_path: &str) -> Result<Vec<String>, Error> {
        self.alter_query_flink(who, dt, query).await
    }

    async fn prepare_freshness(&self, dt: &DtRow, mode: RefreshMode) -> Result<FlinkFreshness, Error> {
        let switching = mode != dt.refresh_mode;
        let to_continuous = match switching && mode == RefreshMode::Continuous {
            true => Some(self.plan_continuous(dt).await?),
            false => None,
        };
        let stopped = match switching && mode == RefreshMode::Full && dt.status == Status::Activated {
            true => Some(self.stop_job(dt).await?),
            false => None,
        };
        Ok(FlinkFreshness {
            mode,
            switching,
            to_continuous,
            stopped,
        })
    }

    async fn change_freshness(&self, tx: &Transaction<'_>, dt: &DtRow, change: &FlinkFreshness) -> Result<(), Error> {
        if let Some(columns) = &change.to_continuous {
            self.to_continuous_in(tx, dt, columns).await?;
        }
        if let Some(savepoint) = &change.stopped {
            self.to_full_in(tx, dt, savepoint.as_deref()).await?;
        }
        Ok(())
    }

    async fn freshness_changed(&self, dt: &DtRow, change: FlinkFreshness, committed: bool) -> Result<Vec<String>, Error> {
        if !committed {
            if change.stopped.is_some() {
                self.restart_after_failed_alter(dt).await;
            }
            return Ok(Vec::new());
        }
        let mut notices = Vec::new();
        if change.mode == RefreshMode::Continuous {
            let cur = catalog::load_by_id(&*self.pool.get().await?, dt.id)
                .await?
                .ok_or_else(|| Error::NotFound(dt.name.to_string()))?;
            if change.switching && cur.status == Status::Activated {
                // The table was emptied with the change: a job started fresh fills it.
                self.start_fresh(&cur).await?;
                notices.push(format!(
                    "the job of {} started fresh: the table fills again from its sources",
                    dt.name
                ));
            } else if !change.switching {
                // The job's checkpoint interval is the freshness: it restarts from a savepoint.
                self.restart(&cur).await?;
            }
        }
        Ok(notices)
    }

    async fn options_changed(&self, _tx: &Transaction<'_>, _cur: &DtRow, _action_changed: bool) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    async fn suspend(&self, dt: &DtRow) -> Result<bool, Error> {
        if dt.refresh_mode != RefreshMode::Continuous {
            return Ok(false);
        }
        self.suspend_job(dt).await?;
        Ok(true)
    }

    async fn resume(&self, dt: &DtRow, options: Option<&BTreeMap<String, String>>) -> Result<Option<Vec<String>>, Error> {
        if dt.refresh_mode != RefreshMode::Continuous {
            return Ok(None);
        }
        let running = dt.status == Status::Activated && dt.flink_job_id.is_some() && dt.flink_job_state.as_deref() == Some("RUNNING");
        if running && options.is_none() {
            return Ok(Some(vec![format!("dynamic table {} is already active", dt.name)]));
        }
        if running {
            self.suspend_job(dt).await?;
        }
        let options = options.cloned().unwrap_or_else(|| dt.refresh_options.clone());
        let reloaded = catalog::load_by_id(&*self.pool.get().await?, dt.id)
            .await?
            .ok_or_else(|| Error::NotFound(dt.name.to_string()))?;
        Ok(Some(self.resume_job(&reloaded, &options).await?))
    }

    async fn drop_before(&self, _tx: &Transaction<'_>, dt: &DtRow) -> Result<(), Error> {
        // Its streaming job goes first (Flink unreachable: nothing is dropped).
        self.cancel_job(dt).await
    }

    async fn drop_after(&self, tx: &Transaction<'_>, dt: &DtRow) -> Result<(), Error> {
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", tables::stage_table(dt.id)))
            .await?;
        Ok(())
    }

    fn describe(&self, dt: &DtRow) -> Vec<(&'static str, Option<String>)> {
        if dt.refresh_mode != RefreshMode::Continuous {
            return Vec::new();
        }
        vec![
            ("engine_job_id", dt.flink_job_id.clone()),
            ("engine_job_state", dt.flink_job_state.clone()),
        ]
    }
}
