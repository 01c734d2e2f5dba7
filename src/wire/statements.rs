//! What the wire layer hands dyngate's own statements to: the [`Statements`] trait, which the
//! handler implements, and the types that cross it (who the session is, the reply, its columns).
//! The wire layer asks once per message whose statement it is ([`Statements::classify`]), keeps
//! prepared statements and portals, and encodes replies for the protocol the client speaks; what
//! a statement does is the implementor's.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::sql::{Route, StatementKind};
use crate::wire::codec::PgError;

/// Who is asking: the identity PostgreSQL authenticated for this session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: String,
    pub database: String,
}

/// A result column: name and PostgreSQL type OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: Cow<'static, str>,
    pub type_oid: u32,
}

pub const TEXT: u32 = 25;
pub const INT8: u32 = 20;
pub const BOOL: u32 = 16;

/// Rows, each value in PostgreSQL's text form (None: NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// What a statement returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The result columns, or `None` for a statement that returns no rows.
    pub columns: Option<Vec<Column>>,
    pub rows: Rows,
    /// The command tag, e.g. `CREATE DYNAMIC TABLE`.
    pub tag: String,
    /// Notices to send before the result (e.g. "already exists, skipping").
    pub notices: Vec<String>,
    /// Rows still coming after `rows` (a Flink query's later pages); the tag then counts them all.
    pub more: Option<MoreRows>,
}

/// The next batch of rows still coming; None at the end.
pub type NextBatch<'a> = Pin<Box<dyn Future<Output = Option<Result<Rows, PgError>>> + Send + 'a>>;

/// A source of rows that come batch by batch.
pub trait RowBatches: Send {
    /// The next batch; None at the end.
    fn next(&mut self) -> NextBatch<'_>;
}

/// Rows still coming for a reply, batch by batch.
#[derive(Clone)]
pub struct MoreRows(Arc<tokio::sync::Mutex<Box<dyn RowBatches>>>);

impl MoreRows {
    pub fn new(batches: impl RowBatches + 'static) -> MoreRows {
        MoreRows(Arc::new(tokio::sync::Mutex::new(Box::new(batches))))
    }

    /// The next batch; None at the end.
    pub async fn next(&self) -> Option<Result<Rows, PgError>> {
        self.0.lock().await.next().await
    }
}

impl PartialEq for MoreRows {
    fn eq(&self, other: &MoreRows) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MoreRows {}

impl std::fmt::Debug for MoreRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MoreRows")
    }
}

/// The shape of a prepared statement's result, as Describe answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Known before running: its columns, or None for a statement that returns no rows.
    Known(Option<Vec<Column>>),
    /// Known only by running it (Describe runs it and keeps the reply for the Execute).
    Run,
}

/// The statements dyngate answers itself.
pub trait Statements: Send + Sync + 'static {
    /// A statement ready to execute, kept by the session for Bind, Describe and Execute.
    type Prepared: Clone + Send + Sync + 'static;

    /// Whose statement `sql` is: PostgreSQL's (forwarded untouched) or dyngate's, and which kind.
    /// `standard_strings` is the session's standard_conforming_strings.
    fn classify(&self, sql: &str, standard_strings: bool) -> Route;

    /// Parses a query string of dyngate's, classified as `kind` and split into its statements.
    fn prepare(&self, kind: StatementKind, statements: &[&str]) -> Result<Self::Prepared, PgError>;

    /// The shape of a prepared statement's result.
    fn shape(&self, prepared: &Self::Prepared) -> Shape;

    /// Runs a prepared statement for `session`; `time_zone` is the session's TimeZone now.
    fn execute(
        &self,
        prepared: &Self::Prepared,
        session: &SessionInfo,
        in_transaction: bool,
        time_zone: &str,
    ) -> impl Future<Output = Result<Reply, PgError>> + Send;
}
