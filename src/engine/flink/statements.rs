//! Statements that run in Apache Flink (they name the Flink database, see `sql::flink`): DDL of
//! Flink objects, kept in the catalog and replayed into every session the engine opens; queries,
//! whose rows come back to the client; and INSERT jobs.
//!
//! DDL runs in Flink inside the catalog transaction that records it, which holds the lock of the
//! catalog's Flink version row: Flink DDL is serialized across gateways, and a statement that Flink
//! refuses changes nothing. If Flink accepted it but the commit fails, the engine's session is
//! dropped, so the next statement sets one up again from the catalog (where the change is not).
//!
//! Flink objects are shared by every user of the gateway, as Flink's own catalog is; the role
//! that created one, or a member of it, may alter or drop it. JDBC credentials written in their
//! options are the creator's; the `dyngate.flink_objects` view and errors show them masked.

use super::FlinkEngine;
use crate::core::{Error, Requester};
use crate::engine::flink::runtime::{FlinkRuntime, QueryRows};
use crate::sql::flink::{FlinkKind, FlinkStatement, ObjectKind};

/// What a Flink statement returns.
#[derive(Debug)]
pub enum FlinkOutcome {
    /// DDL done; the notice to send, if any (e.g. IF NOT EXISTS of an existing object).
    Done { tag: &'static str, notice: Option<String> },
    /// A query's rows (the rest still coming, page by page).
    Rows(QueryRows),
    /// A submitted job.
    Job(String),
}

impl FlinkEngine {
    /// Runs a Flink statement for `who`.
    pub async fn statement(&self, who: &Requester<'_>, stmt: &FlinkStatement) -> Result<FlinkOutcome, Error> {
        let engine = self.runtime()?;
        match &stmt.kind {
            FlinkKind::Query => {
                let client = self.pool.get().await?;
                let session = engine.session(&*client).await?;
                drop(client);
                Ok(FlinkOutcome::Rows(engine.query(&session, &stmt.text).await?))
            }
            FlinkKind::Job => {
                if who.in_transaction {
                    return Err(Error::InTransaction("a Flink INSERT"));
                }
                let client = self.pool.get().await?;
                let session = engine.session(&*client).await?;
                drop(client);
                let job = session.submit_job(&stmt.text, &Default::default(), engine.deadline()).await?;
                tracing::info!(job = %job, user = who.user, "submitted a Flink job");
                Ok(FlinkOutcome::Job(job.0))
            }
            FlinkKind::Create { object, what } | FlinkKind::Alter { object, what } => self.ddl(engine, who, stmt, object, *what).await,
            FlinkKind::Drop { object, what, if_exists } => self.drop_object(engine, who, stmt, object, *what, *if_exists).await,
        }
    }

    async fn ddl(
        &self,
        engine: &FlinkRuntime,
        who: &Requester<'_>,
        stmt: &FlinkStatement,
        object: &str,
        what: ObjectKind,
    ) -> Result<FlinkOutcome, Error> {
        let create = matches!(stmt.kind, FlinkKind::Create { .. });
        let tag = if create { "CREATE" } else { "ALTER" };
        if who.in_transaction {
            return Err(Error::InTransaction(if create {
                "CREATE of a Flink object"
            } else {
                "ALTER of a Flink object"
            }));
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let version: i64 = tx
            .query_one("SELECT version FROM dyngate.flink_catalog_version FOR UPDATE", &[])
            .await?
            .get(0);
        let existing = tx
            .query(
                "SELECT owner_role, object_kind FROM dyngate.flink_statement WHERE object_name = $1 AND verb = 'CREATE'",
                &[&object],
            )
            .await?;
        if create {
            if let Some(row) = existing.first() {
                let kind: String = row.get(1);
                if stmt.text.to_ascii_uppercase().contains("IF NOT EXISTS") && kind == what.name() {
                    return Ok(FlinkOutcome::Done {
                        tag,
                        notice: Some(format!("Flink {} {object} already exists, skipping", what.name().to_lowercase())),
                    });
                }
                return Err(Error::Postgres {
                    code: "42P07".into(),
                    message: format!("Flink {} {object} already exists", kind.to_lowercase()),
                    detail: None,
                    hint: None,
                });
            }
        } else {
            let Some(row) = existing.first() else {
                return Err(not_found(what, object));
            };
            require_member_of(&tx, who, &row.get::<_, String>(0), "alter", object).await?;
        }
        let session = engine.session(&tx).await?;
        session.configure(&stmt.text).await?;
        let written = async {
            tx.execute(
                "INSERT INTO dyngate.flink_statement (object_name, object_kind, verb, statement, owner_role) VALUES ($1, $2, $3, $4, $5)",
                &[&object, &what.name(), &tag, &stmt.text, &who.user],
            )
            .await?;
            tx.execute("UPDATE dyngate.flink_catalog_version SET version = version + 1", &[])
                .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = written {
            engine.invalidate().await;
            return Err(e.into());
        }
        engine.advance(version, version + 1).await;
        tracing::info!(object, user = who.user, verb = tag, "Flink object changed");
        Ok(FlinkOutcome::Done { tag, notice: None })
    }

    async fn drop_object(
        &self,
        engine: &FlinkRuntime,
        who: &Requester<'_>,
        stmt: &FlinkStatement,
        object: &str,
        what: ObjectKind,
        if_exists: bool,
    ) -> Result<FlinkOutcome, Error> {
        if who.in_transaction {
            return Err(Error::InTransaction("DROP of a Flink object"));
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Serializes Flink DDL across gateways (the version row is bumped below).
        tx.query_one("SELECT version FROM dyngate.flink_catalog_version FOR UPDATE", &[])
            .await?;
        let existing = tx
            .query(
                "SELECT owner_role, object_kind FROM dyngate.flink_statement WHERE object_name = $1 AND verb = 'CREATE'",
                &[&object],
            )
            .await?;
        let Some(row) = existing.first() else {
            if if_exists {
                return Ok(FlinkOutcome::Done {
                    tag: "DROP",
                    notice: Some(format!("Flink {} {object} does not exist, skipping", what.name().to_lowercase())),
                });
            }
            return Err(not_found(what, object));
        };
        let kind: String = row.get(1);
        if kind != what.name() {
            return Err(Error::Postgres {
                code: "42809".into(),
                message: format!("{object} is a Flink {}, not a {}", kind.to_lowercase(), what.name().to_lowercase()),
                detail: None,
                hint: None,
            });
        }
        require_member_of(&tx, who, &row.get::<_, String>(0), "drop", object).await?;
        // Dynamic tables whose query names the object (a word match, case-insensitive).
        let bare = object.rsplit('.').next().unwrap_or(object);
        let readers: Vec<String> = tx
            .query(
                "SELECT format('%s.%s', schema_name, table_name) FROM dyngate.dynamic_table
                  WHERE engine = 'flink' AND query ~* ('\\m' || regexp_replace($1, '([^A-Za-z0-9_])', '\\\\\\1', 'g') || '\\M')
                  ORDER BY 1",
                &[&bare],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !readers.is_empty() {
            return Err(Error::Postgres {
                code: "2BP01".into(),
                message: format!(
                    "cannot drop Flink {} {object} because dynamic table{} {} read{} it",
                    what.name().to_lowercase(),
                    if readers.len() == 1 { "" } else { "s" },
                    readers.join(", "),
                    if readers.len() == 1 { "s" } else { "" }
                ),
                detail: None,
                hint: Some("Drop those dynamic tables first.".into()),
            });
        }
        let session = engine.session(&tx).await?;
        session.configure(&stmt.text).await?;
        let written = async {
            tx.execute("DELETE FROM dyngate.flink_statement WHERE object_name = $1", &[&object])
                .await?;
            tx.execute("UPDATE dyngate.flink_catalog_version SET version = version + 1", &[])
                .await?;
            tx.commit().await
        }
        .await;
        // The session remembers the object's statements for its own replay: a new one is set up
        // from the catalog either way.
        engine.invalidate().await;
        written?;
        tracing::info!(object, user = who.user, "Flink object dropped");
        Ok(FlinkOutcome::Done { tag: "DROP", notice: None })
    }
}

fn not_found(what: ObjectKind, object: &str) -> Error {
    Error::Postgres {
        code: "42P01".into(),
        message: format!("Flink {} {object} does not exist", what.name().to_lowercase()),
        detail: None,
        hint: None,
    }
}

async fn require_member_of(
    tx: &tokio_postgres::Transaction<'_>,
    who: &Requester<'_>,
    owner: &str,
    action: &'static str,
    object: &str,
) -> Result<(), Error> {
    let member: bool = tx
        .query_one("SELECT pg_has_role($1, $2, 'MEMBER')", &[&who.user, &owner])
        .await?
        .get(0);
    if !member {
        return Err(Error::Postgres {
            code: "42501".into(),
            message: format!("must be a member of role \"{owner}\" to {action} Flink object {object}"),
            detail: None,
            hint: None,
        });
    }
    Ok(())
}
