//! A refresh of one dynamic table (manual now; scheduled and through the HTTP endpoint later):
//! recorded as EXECUTING, run as the table's owner under a per-table lock (never two at once),
//! then recorded as SUCCEEDED with the data time and rows, or FAILED with PostgreSQL's error.

use crate::engine;
use crate::manager::catalog::{self, DtRow};
use crate::manager::drop::TABLE_LOCK_SPACE;
use crate::manager::{Manager, ManagerError, Requester, begin_as, new_job_id};
use crate::sql::dynamic::{Options, TableName};

/// A finished refresh, as the history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub job_id: String,
    pub state: &'static str,
    pub rows: i64,
}

impl Manager {
    /// REFRESH DYNAMIC TABLE / ALTER DYNAMIC TABLE ... REFRESH, by a member of the owner's role.
    pub async fn refresh_manual(&self, who: &Requester<'_>, name: &TableName, partition: &Options) -> Result<RefreshRecord, ManagerError> {
        self.check_database(who)?;
        if who.in_transaction {
            return Err(ManagerError::InTransaction("REFRESH DYNAMIC TABLE"));
        }
        if !partition.is_empty() {
            return Err(ManagerError::Unsupported(
                "REFRESH ... PARTITION is not supported yet by the PostgreSQL engine".into(),
            ));
        }
        let mut client = self.pool.get().await?;
        let name = self.resolve(&mut client, who, name).await?;
        let Some(dt) = catalog::load(&*client, &name).await? else {
            if catalog::relation_exists(&*client, &name).await? {
                return Err(ManagerError::NotDynamic(name.to_string()));
            }
            return Err(ManagerError::NotFound(name.to_string()));
        };
        let member: bool = client
            .query_one("SELECT pg_has_role($1, $2, 'MEMBER')", &[&who.user, &dt.owner])
            .await?
            .get(0);
        if !member {
            return Err(ManagerError::NotOwner {
                owner: dt.owner.clone(),
                action: "refresh",
                table: name.to_string(),
            });
        }
        self.run_refresh(&mut client, &dt, "MANUAL").await
    }

    /// Runs one refresh of `dt` and records it. A failure of the refresh itself is recorded and
    /// returned as the error PostgreSQL gave.
    async fn run_refresh(&self, client: &mut tokio_postgres::Client, dt: &DtRow, trigger: &str) -> Result<RefreshRecord, ManagerError> {
        let job_id = new_job_id();
        let history = catalog::refresh_started(&*client, dt, &job_id, trigger).await?;
        let result = async {
            let tx = begin_as(client, &dt.owner).await?;
            tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&TABLE_LOCK_SPACE, &(dt.id as i32)])
                .await?;
            let data_time: String = tx.query_one("SELECT now()::text", &[]).await?.get(0);
            let done = engine::postgres::full_refresh(&tx, &dt.name.quoted(), &dt.query).await?;
            tx.commit().await?;
            Ok::<_, ManagerError>((done, data_time))
        }
        .await;
        match result {
            Ok((done, data_time)) => {
                catalog::refresh_finished(&*client, history, Ok((done.action.as_str(), &data_time, done.rows as i64))).await?;
                tracing::info!(table = %dt.name, job_id, rows = done.rows, trigger, "refresh succeeded");
                Ok(RefreshRecord {
                    job_id,
                    state: "SUCCEEDED",
                    rows: done.rows as i64,
                })
            }
            Err(e) => {
                let msg = e.to_string();
                catalog::refresh_finished(&*client, history, Err((e.sqlstate(), &msg))).await?;
                tracing::warn!(table = %dt.name, job_id, error = %msg, trigger, "refresh failed");
                Err(e)
            }
        }
    }
}
