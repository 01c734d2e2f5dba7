//! The operations behind the HTTP API: refreshing tables for a scheduler's run (idempotent per
//! table and schedule time), listing tables, reading a job. Refreshes run as each table's owner,
//! as scheduled ones do.

use crate::core::time::ScheduleTime;
use crate::core::{EngineKind, Error, QualifiedName, Status, Trigger};
use std::sync::Arc;

use crate::catalog::{self, ApiClaim, DtRow, JobPart};
use crate::core::names::new_job_id;
use crate::manager::Manager;
use crate::sql::dynamic::TableName;

/// What a refresh endpoint call started (or found started).
#[derive(Debug, Clone)]
pub struct ApiJob {
    pub job_id: String,
    /// Every table had been refreshed for this schedule time by an earlier call.
    pub repeated: bool,
    /// With `wait`: each table's outcome.
    pub results: Option<Vec<TableOutcome>>,
    /// Where the refreshes run (`clusterInfo`).
    pub cluster_info: serde_json::Value,
}

/// How one table's refresh ended.
#[derive(Debug, Clone)]
pub struct TableOutcome {
    pub table: String,
    pub state: &'static str,
    pub rows: i64,
    pub error: Option<String>,
}

impl Manager {
    fn qualify(name: &TableName) -> QualifiedName {
        QualifiedName {
            schema: name.schema.clone().unwrap_or_else(|| "public".into()),
            name: name.name.clone(),
        }
    }

    /// Refreshes `tables` for `schedule_time` (a time without a zone is read in each table's
    /// schedule time zone). All tables are checked
    /// before anything runs: an unknown or suspended one refreshes none. A call for a
    /// scheduler's run (`run_id`) is recorded as SCHEDULED with the run's id, others as API.
    pub async fn refresh_api(
        self: &Arc<Self>,
        tables: &[TableName],
        schedule_time: ScheduleTime,
        wait: bool,
        run_id: Option<&str>,
    ) -> Result<ApiJob, Error> {
        let client = self.pool.get().await?;
        let mut dts: Vec<(DtRow, i64)> = Vec::new();
        for t in tables {
            let name = Self::qualify(t);
            let Some(dt) = catalog::load(&*client, &name).await? else {
                return Err(Error::NotFound(name.to_string()));
            };
            if dt.status == Status::Suspended {
                return Err(Error::WrongState(format!("Dynamic table {name} is suspended.")));
            }
            let at = match schedule_time {
                ScheduleTime::At(t) => t,
                // The wall clock in the table's zone (PostgreSQL has the zone database).
                ScheduleTime::Local(wall) => client
                    .query_one(
                        "SELECT extract(epoch FROM (to_timestamp($1::float8) AT TIME ZONE 'UTC') AT TIME ZONE $2)::bigint",
                        &[&(wall as f64), &dt.time_zone],
                    )
                    .await?
                    .get(0),
            };
            dts.push((dt, at));
        }
        let job_id = new_job_id();
        // A request for one table on the flink engine answers Flink's job id (as Flink's own
        // refresh handler does), once the job is submitted; GET /v3/jobs/{id} takes either id.
        let flink_single = match dts.as_slice() {
            [(dt, _)] if dt.engine == EngineKind::Flink => Some(dt.id),
            _ => None,
        };
        let cluster_info = match (dts.iter().all(|(dt, _)| dt.engine == EngineKind::Flink), self.flink.cluster_info()) {
            (true, Some(info)) => info,
            _ => serde_json::json!({"execution.target": "postgres", "engine": "postgres"}),
        };
        let mut claimed = Vec::new();
        let mut earlier = None;
        for (dt, at) in dts {
            match catalog::api_claim(&*client, &dt, &job_id, at, run_id).await? {
                ApiClaim::New(id) => claimed.push((dt, id, at)),
                ApiClaim::Existing(j) => {
                    earlier.get_or_insert(j);
                }
            }
        }
        if claimed.is_empty() {
            let job_id = earlier.unwrap_or(job_id);
            let job_id = self.engine_job_of(&*client, &flink_single, &job_id).await.unwrap_or(job_id);
            return Ok(ApiJob {
                job_id,
                repeated: true,
                results: None,
                cluster_info,
            });
        }
        if !wait {
            for (dt, id, schedule_time) in claimed {
                let me = self.clone();
                let job = job_id.clone();
                tokio::spawn(async move {
                    if let Err(e) = me
                        .run_refresh(
                            &dt,
                            Trigger::Api {
                                schedule_time,
                                claimed: id,
                            },
                            job,
                        )
                        .await
                    {
                        tracing::debug!(table = %dt.name, error = %e, "API refresh failed");
                    }
                });
            }
            let job_id = match flink_single {
                Some(dt_id) => self.wait_engine_job(dt_id, &job_id).await.unwrap_or(job_id),
                None => job_id,
            };
            return Ok(ApiJob {
                job_id,
                repeated: false,
                results: None,
                cluster_info,
            });
        }
        let mut results = Vec::new();
        for (dt, id, schedule_time) in claimed {
            let r = self
                .run_refresh(
                    &dt,
                    Trigger::Api {
                        schedule_time,
                        claimed: id,
                    },
                    job_id.clone(),
                )
                .await;
            results.push(match r {
                Ok(rec) => TableOutcome {
                    table: dt.name.to_string(),
                    state: rec.state,
                    rows: rec.rows,
                    error: None,
                },
                Err(e) => TableOutcome {
                    table: dt.name.to_string(),
                    state: "FAILED",
                    rows: 0,
                    error: Some(e.to_string()),
                },
            });
        }
        let job_id = self.engine_job_of(&*client, &flink_single, &job_id).await.unwrap_or(job_id);
        Ok(ApiJob {
            job_id,
            repeated: false,
            results: Some(results),
            cluster_info,
        })
    }

    /// The engine's job id of table `dt_id`'s refresh in `job_id`, if it has one.
    async fn engine_job_of(&self, c: &impl tokio_postgres::GenericClient, dt_id: &Option<i64>, job_id: &str) -> Option<String> {
        let dt_id = (*dt_id)?;
        c.query_opt(
            "SELECT engine_job_id FROM dyngate.refresh WHERE dynamic_table_id = $1 AND job_id = $2 AND engine_job_id IS NOT NULL",
            &[&dt_id, &job_id],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
    }

    /// Waits (up to the Flink engine's timeout) until the refresh of `dt_id` in `job_id` has
    /// submitted its Flink job, or ended without one.
    async fn wait_engine_job(&self, dt_id: i64, job_id: &str) -> Option<String> {
        let deadline = std::time::Instant::now() + self.flink.timeout()?;
        let client = self.pool.get().await.ok()?;
        while std::time::Instant::now() < deadline {
            let row = client
                .query_opt(
                    "SELECT engine_job_id, state FROM dyngate.refresh WHERE dynamic_table_id = $1 AND job_id = $2",
                    &[&dt_id, &job_id],
                )
                .await
                .ok()?;
            match row {
                Some(r) if r.get::<_, Option<String>>(0).is_some() => return r.get(0),
                Some(r) if ["SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED"].contains(&r.get::<_, &str>(1)) => return None,
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        None
    }

    /// The refreshes of one job; empty when there is no such job.
    pub async fn job(&self, job_id: &str) -> Result<Vec<JobPart>, Error> {
        let client = self.pool.get().await?;
        Ok(catalog::job(&*client, job_id).await?)
    }

    /// Rows of the `dyngate.dynamic_tables` view, as JSON objects (all tables, or one).
    pub async fn list_json(&self, one: Option<&TableName>) -> Result<Vec<serde_json::Value>, Error> {
        let client = self.pool.get().await?;
        let q = one.map(Self::qualify);
        let rows = client
            .query(
                "SELECT to_jsonb(t)::text FROM dyngate.dynamic_tables t
                  WHERE $1::text IS NULL OR (schema_name = $1 AND table_name = $2) ORDER BY schema_name, table_name",
                &[&q.as_ref().map(|q| q.schema.as_str()), &q.as_ref().map(|q| q.name.as_str())],
            )
            .await?;
        Ok(rows.iter().filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()).collect())
    }
}
