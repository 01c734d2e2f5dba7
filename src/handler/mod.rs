//! Handlers for the statements dyngate answers itself, one per statement kind, dispatched from one
//! `match`. The handler implements the wire layer's [`Statements`]: the wire layer asks it whose a
//! statement is ([`Statements::classify`]), calls [`Handler::prepare`] when one of dyngate's
//! arrives (a simple Query or a Parse) and [`Handler::execute`] when it is to run, and encodes the
//! typed [`Reply`] for whichever protocol the client speaks; handlers know nothing of sockets or
//! framing, and the work itself is the [`Manager`]'s.
//!
//! Inside an explicit transaction block, the statements that change something (CREATE, ALTER,
//! DROP, REFRESH) are refused with 25001: their work happens outside the client's backend session
//! and cannot roll back with it. SHOW and DESCRIBE work anywhere.

use std::borrow::Cow;
use std::sync::Arc;

use crate::core::{Error, Requester};
use crate::engine::flink::statements::FlinkOutcome;
use crate::manager::Manager;
use crate::manager::create::Created;
use crate::sql::dynamic::{self, AlterAction, DtStatement, ParseError};
use crate::sql::flink::{FlinkKind, FlinkStatement};
use crate::sql::{Route, StatementKind};
use crate::wire::binary::can_encode;
use crate::wire::codec::PgError;
use crate::wire::statements::{BOOL, Column, INT8, MoreRows, NextBatch, Reply, RowBatches, SessionInfo, Shape, Statements, TEXT};

const fn col(name: &'static str, type_oid: u32) -> Column {
    Column {
        name: Cow::Borrowed(name),
        type_oid,
    }
}

const SHOW_COLUMNS: [Column; 12] = [
    col("schema_name", TEXT),
    col("table_name", TEXT),
    col("freshness", TEXT),
    col("refresh_mode", TEXT),
    col("status", TEXT),
    col("engine", TEXT),
    col("owner", TEXT),
    // Times as text (PostgreSQL's output format): readable by every client in either format.
    col("last_refresh_at", TEXT),
    col("lag", TEXT),
    col("freshness_met", BOOL),
    col("refresh_action", TEXT),
    col("refresh_action_reason", TEXT),
];
const DESCRIBE_COLUMNS: [Column; 2] = [col("property", TEXT), col("value", TEXT)];
const SHOW_CREATE_COLUMNS: [Column; 1] = [col("create_statement", TEXT)];
const REFRESH_COLUMNS: [Column; 3] = [col("job_id", TEXT), col("state", TEXT), col("rows_written", INT8)];

/// A Flink query's later pages, as the wire layer reads them (Flink's errors as SQLSTATEs).
struct FlinkPages(tokio::sync::mpsc::Receiver<crate::engine::flink::runtime::RowBatch>);

impl RowBatches for FlinkPages {
    fn next(&mut self) -> NextBatch<'_> {
        Box::pin(async move { Some(self.0.recv().await?.map_err(|e| manager_error(e.into()))) })
    }
}

/// A statement of dyngate's own: a dynamic-table statement, or one that runs in Flink.
#[derive(Debug, Clone)]
pub enum Parsed {
    Dynamic(DtStatement),
    Flink(FlinkStatement),
}

/// A parsed statement, ready to execute (kept by the wire layer for a prepared statement).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub statement: Parsed,
    /// The text as the client sent it.
    pub text: String,
}

impl Prepared {
    /// The result shape, known before execution for dyngate's statements; a Flink query's only
    /// by running it.
    pub fn shape(&self) -> Shape {
        match &self.statement {
            Parsed::Flink(f) if f.kind == FlinkKind::Query => Shape::Run,
            Parsed::Flink(_) => Shape::Known(None),
            Parsed::Dynamic(_) => Shape::Known(self.columns()),
        }
    }

    /// The columns of a dynamic-table statement's result, if it has rows.
    fn columns(&self) -> Option<Vec<Column>> {
        let Parsed::Dynamic(statement) = &self.statement else {
            return None;
        };
        match statement {
            DtStatement::Show { .. } => Some(SHOW_COLUMNS.to_vec()),
            DtStatement::Describe { .. } => Some(DESCRIBE_COLUMNS.to_vec()),
            DtStatement::ShowCreate { .. } => Some(SHOW_CREATE_COLUMNS.to_vec()),
            DtStatement::Refresh { .. }
            | DtStatement::Alter {
                action: AlterAction::Refresh { .. },
                ..
            } => Some(REFRESH_COLUMNS.to_vec()),
            _ => None,
        }
    }
}

/// Answers intercepted statements.
pub struct Handler {
    manager: Arc<Manager>,
}

impl Handler {
    pub fn new(manager: Arc<Manager>) -> Handler {
        Handler { manager }
    }

    /// Parses an intercepted query string (already split into its statements).
    pub fn prepare(&self, kind: StatementKind, statements: &[&str]) -> Result<Prepared, PgError> {
        let [sql] = statements else {
            // PostgreSQL runs a multi-statement string as one implicit transaction; a dynamic-table
            // statement does work outside the backend session, so it cannot take part in one.
            return Err(PgError::error(
                "0A000",
                "a DYNAMIC TABLE statement cannot be combined with other statements in one query string",
            )
            .with_hint("Send it as a query of its own."));
        };
        let statement = match kind {
            StatementKind::Flink => {
                let db = self.manager.flink_database().unwrap_or_default();
                Parsed::Flink(crate::sql::flink::parse(sql, db).map_err(|e| PgError::error(e.sqlstate(), e.to_string()))?)
            }
            _ => Parsed::Dynamic(dynamic::parse(sql).map_err(parse_error)?),
        };
        Ok(Prepared {
            statement,
            text: sql.trim().to_string(),
        })
    }

    /// Runs a Flink statement.
    async fn flink(&self, f: &FlinkStatement, who: &Requester<'_>) -> Result<Reply, PgError> {
        let outcome = self.manager.flink_statement(who, f).await.map_err(manager_error)?;
        Ok(match outcome {
            FlinkOutcome::Done { tag, notice } => Reply {
                notices: notice.into_iter().collect(),
                ..done(tag)
            },
            FlinkOutcome::Job(id) => Reply {
                notices: vec![format!("Flink job {id} submitted")],
                ..done("INSERT 0 0")
            },
            FlinkOutcome::Rows(result) => {
                let columns = result
                    .columns
                    .iter()
                    .map(|c| {
                        let oid = crate::engine::flink::client::types::pg_type(&c.logical_type).oid;
                        Column {
                            name: Cow::Owned(c.name.clone()),
                            // A type the gateway cannot write in binary (interval) is described
                            // as text, so no client asks for a binary form it cannot get.
                            type_oid: if can_encode(oid) { oid } else { TEXT },
                        }
                    })
                    .collect();
                Reply {
                    columns: Some(columns),
                    tag: format!("SELECT {}", result.first.len()),
                    rows: result.first,
                    more: result.rest.map(|r| MoreRows::new(FlinkPages(r))),
                    ..Reply::default()
                }
            }
        })
    }

    /// Runs a prepared statement for `session`.
    /// `time_zone` is the session's TimeZone setting now.
    pub async fn execute(&self, p: &Prepared, session: &SessionInfo, in_transaction: bool, time_zone: &str) -> Result<Reply, PgError> {
        let who = Requester {
            user: &session.user,
            database: &session.database,
            in_transaction,
            time_zone,
        };
        let m = &self.manager;
        let statement = match &p.statement {
            Parsed::Flink(f) => return self.flink(f, &who).await,
            Parsed::Dynamic(d) => d,
        };
        let reply = match statement {
            DtStatement::Create(c) => match m.create(&who, c, &p.text).await.map_err(manager_error)? {
                Created::Created { .. } => done("CREATE DYNAMIC TABLE"),
                Created::AlreadyExisted(name) => Reply {
                    notices: vec![format!("dynamic table {name} already exists, skipping")],
                    ..done("CREATE DYNAMIC TABLE")
                },
            },
            DtStatement::Drop { if_exists, name } => {
                if m.drop_table(&who, name, *if_exists).await.map_err(manager_error)? {
                    done("DROP DYNAMIC TABLE")
                } else {
                    Reply {
                        notices: vec![format!("dynamic table {} does not exist, skipping", name.name)],
                        ..done("DROP DYNAMIC TABLE")
                    }
                }
            }
            DtStatement::Refresh { name, partition }
            | DtStatement::Alter {
                name,
                action: AlterAction::Refresh { partition },
            } => {
                let r = m.refresh_manual(&who, name, partition).await.map_err(manager_error)?;
                Reply {
                    columns: p.columns(),
                    rows: vec![vec![Some(r.job_id), Some(r.state.to_string()), Some(r.rows.to_string())]],
                    ..done("REFRESH DYNAMIC TABLE")
                }
            }
            DtStatement::Alter { name, action } => {
                let altered = match action {
                    AlterAction::Suspend => m.suspend(&who, name).await,
                    AlterAction::Resume { options } => m.resume(&who, name, options).await,
                    AlterAction::SetFreshness(f) => m.set_freshness(&who, name, *f).await,
                    AlterAction::Set(options) => m.set_options(&who, name, options, &[]).await,
                    AlterAction::Reset(keys) => m.set_options(&who, name, &[], keys).await,
                    AlterAction::AsQuery { query } => m.alter_query(&who, name, query).await,
                    AlterAction::Refresh { .. } => unreachable!("handled with REFRESH above"),
                }
                .map_err(manager_error)?;
                Reply {
                    notices: altered.notices,
                    ..done("ALTER DYNAMIC TABLE")
                }
            }
            DtStatement::Show { like } => {
                let rows = m.show(&who, like.as_deref()).await.map_err(manager_error)?;
                let rows: Vec<Vec<Option<String>>> = rows
                    .into_iter()
                    .map(|l| {
                        vec![
                            Some(l.schema),
                            Some(l.name),
                            Some(l.freshness),
                            Some(l.refresh_mode),
                            Some(l.status),
                            Some(l.engine),
                            Some(l.owner),
                            l.last_refresh_at,
                            l.lag,
                            Some(if l.freshness_met { "t" } else { "f" }.to_string()),
                            Some(l.refresh_action),
                            l.refresh_action_reason,
                        ]
                    })
                    .collect();
                Reply {
                    columns: p.columns(),
                    tag: format!("SHOW {}", rows.len()),
                    rows,
                    ..Reply::default()
                }
            }
            DtStatement::Describe { name } => {
                let rows = m.describe(&who, name).await.map_err(manager_error)?;
                let rows: Vec<Vec<Option<String>>> = rows.into_iter().map(|(k, v)| vec![Some(k), v]).collect();
                Reply {
                    columns: p.columns(),
                    tag: format!("DESCRIBE {}", rows.len()),
                    rows,
                    ..Reply::default()
                }
            }
            DtStatement::ShowCreate { name } => {
                let text = m.show_create(&who, name).await.map_err(manager_error)?;
                Reply {
                    columns: p.columns(),
                    rows: vec![vec![Some(text)]],
                    tag: "SHOW 1".into(),
                    ..Reply::default()
                }
            }
        };
        Ok(reply)
    }
}

fn done(tag: &str) -> Reply {
    Reply {
        tag: tag.to_string(),
        ..Reply::default()
    }
}

fn parse_error(e: ParseError) -> PgError {
    PgError::error(e.sqlstate(), e.to_string())
}

fn manager_error(e: Error) -> PgError {
    let code = e.sqlstate().to_string();
    match e {
        Error::Postgres { message, detail, hint, .. } => {
            let mut err = PgError::error(code, message);
            err.detail = detail;
            err.hint = hint;
            err
        }
        Error::InTransaction(_) => {
            PgError::error(code, e.to_string()).with_hint("Run it outside BEGIN ... COMMIT; SHOW and DESCRIBE work inside.")
        }
        e => PgError::error(code, e.to_string()),
    }
}

/// The wire layer's view of the handler.
impl Statements for Handler {
    type Prepared = Prepared;

    fn classify(&self, sql: &str, standard_strings: bool) -> Route {
        crate::sql::classify(sql, standard_strings, self.manager.flink_database())
    }

    fn prepare(&self, kind: StatementKind, statements: &[&str]) -> Result<Prepared, PgError> {
        Handler::prepare(self, kind, statements)
    }

    fn shape(&self, prepared: &Prepared) -> Shape {
        prepared.shape()
    }

    async fn execute(&self, prepared: &Prepared, session: &SessionInfo, in_transaction: bool, time_zone: &str) -> Result<Reply, PgError> {
        Handler::execute(self, prepared, session, in_transaction, time_zone).await
    }
}
