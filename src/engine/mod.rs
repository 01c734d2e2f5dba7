//! Engines: what turns a dynamic table's definition into its content. PostgreSQL itself is the
//! embedded default ([`postgres`]: a refresh is SQL in the backing database, recomputed or applied
//! incrementally); Apache Flink ([`flink`]: batch jobs for FULL tables, streaming jobs for
//! CONTINUOUS ones, through its SQL Gateway) is the other.
//!
//! Both implement [`Engine`]: one method (or, where a statement spans a transaction, one method
//! per phase) for each operation whose work differs by engine: CREATE's fill, a refresh, ALTER ...
//! AS, SET FRESHNESS and SET (...), SUSPEND, RESUME, DROP and DESCRIBE. The manager does what is
//! the same for every table (names, privileges, the catalog row, the schedule, the history of a
//! failed refresh) and dispatches on the table's typed [`EngineKind`](crate::core::EngineKind);
//! it holds no engine SQL and no Flink logic. Engines sit below the manager and import nothing
//! of it.

pub mod flink;
pub mod postgres;

use std::collections::BTreeMap;
use std::future::Future;

use tokio_postgres::Transaction;

use crate::backend::Pooled;
use crate::catalog::{DtRow, RefreshRow};
use crate::core::rules::Freshness;
use crate::core::{Error, QualifiedName, RefreshAction, RefreshMode, Requester, Trigger};

/// The result of filling or refreshing a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    pub action: RefreshAction,
    pub rows: u64,
}

/// How a refresh attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done and recorded: the rows written.
    Done(i64),
    /// The table's refresh lock was taken (a scheduled refresh only): nothing ran.
    Locked,
    /// The table's definition changed after it was loaded: nothing ran; reload and retry.
    Stale,
}

/// One refresh, as the manager asks an engine for it.
#[derive(Debug, Clone, Copy)]
pub struct RefreshJob<'a> {
    pub trigger: Trigger,
    pub job_id: &'a str,
    /// The partition it replaces (column, value); empty: the whole table.
    pub partition: &'a [(String, String)],
    /// When it began (seconds since the epoch), for the history rows written before its own.
    pub began: Option<f64>,
}

impl RefreshJob<'_> {
    /// A history row of this refresh of `dt` in `state`; the rest as the caller sets it.
    pub fn row<'r>(&'r self, dt: &'r DtRow, state: &'r str) -> RefreshRow<'r> {
        RefreshRow {
            schedule_time: self.trigger.schedule_time(),
            started_at: self.began,
            partition: self.partition,
            ..RefreshRow::of(dt, self.job_id, self.trigger.name(), state)
        }
    }
}

/// A new table, as CREATE gives it to its engine.
#[derive(Debug, Clone, Copy)]
pub struct NewTable<'a> {
    pub name: &'a QualifiedName,
    /// The requester, who will own the table.
    pub owner: &'a str,
    /// The query as written, and the requester's search_path (expanded and quoted) it is bound under.
    pub query: &'a str,
    pub search_path: &'a str,
    /// The declared column list, if any.
    pub columns: Option<&'a str>,
    pub options: &'a [(String, String)],
    pub partitioned: bool,
    pub mode: RefreshMode,
    pub freshness: Freshness,
}

/// What CREATE's first fill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    pub rows: u64,
    /// How the table's refreshes will go: FULL or INCREMENTAL.
    pub action: RefreshAction,
}

/// An engine. Each method says in which phase of its statement it runs; a method that runs in
/// the statement's transaction (`tx`) must leave everything as it was if that transaction rolls
/// back, or undo itself.
pub trait Engine: Send + Sync {
    /// What CREATE prepares before its transaction and finishes after the commit.
    type Creation: Send;
    /// What SET FRESHNESS prepares before its transaction and finishes after it.
    type FreshnessChange: Send;

    /// Refuses, with 0A000, options of a new table this engine cannot honour.
    fn check_options(&self, options: &[(String, String)]) -> Result<(), Error>;

    /// Before a statement's transaction that may start capturing changes (CREATE, ALTER ... AS,
    /// SET of the refresh action): what must exist first. The connection returned, if any, is
    /// held until the statement ends.
    fn prepare_change(&self) -> impl Future<Output = Result<Option<Pooled>, Error>> + Send;

    /// CREATE, before its transaction: work that must be committed first (Flink: the query's
    /// columns, and for a FULL table its first rows staged by a batch job).
    fn prepare_create(&self, new: &NewTable<'_>) -> impl Future<Output = Result<Self::Creation, Error>> + Send;

    /// CREATE, in its transaction, with the catalog row `id` written: the table made as the
    /// requester and filled for the first time.
    fn fill(
        &self,
        tx: &Transaction<'_>,
        new: &NewTable<'_>,
        id: i64,
        creation: &mut Self::Creation,
    ) -> impl Future<Output = Result<Filled, Error>> + Send;

    /// CREATE, in its transaction, with the creation's history row (`job_id`) written.
    fn record_fill(
        &self,
        tx: &Transaction<'_>,
        id: i64,
        job_id: &str,
        creation: &Self::Creation,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// CREATE, after the commit (Flink: the streaming job of a CONTINUOUS table starts).
    fn created(
        &self,
        new: &NewTable<'_>,
        id: i64,
        creation: Self::Creation,
        job_id: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// One refresh of `dt` (as loaded), recorded in the history when it ends well; a failure is
    /// returned, and the manager records it.
    fn refresh(&self, client: &mut Pooled, dt: &DtRow, job: &RefreshJob<'_>) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// ALTER ... AS: the new query, its columns appended, the content made to match it. Notices.
    fn alter_query(
        &self,
        who: &Requester<'_>,
        dt: &DtRow,
        query: &str,
        search_path: &str,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// SET FRESHNESS, before its transaction, the table going to `mode`: checks, and work that
    /// must happen first (Flink: a job stopped with a savepoint).
    fn prepare_freshness(&self, dt: &DtRow, mode: RefreshMode) -> impl Future<Output = Result<Self::FreshnessChange, Error>> + Send;

    /// SET FRESHNESS, in its transaction (which then records the freshness and mode).
    fn change_freshness(
        &self,
        tx: &Transaction<'_>,
        dt: &DtRow,
        change: &Self::FreshnessChange,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// SET FRESHNESS, after its transaction: committed, or not (then the engine undoes what it
    /// prepared). Notices.
    fn freshness_changed(
        &self,
        dt: &DtRow,
        change: Self::FreshnessChange,
        committed: bool,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// SET / RESET of options, in its transaction, with the options written (`cur` is the row
    /// as of now) and `action_changed` when the refresh action was among them. Notices.
    fn options_changed(
        &self,
        tx: &Transaction<'_>,
        cur: &DtRow,
        action_changed: bool,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// SUSPEND of an ACTIVATED table: stops what runs by itself (Flink: a streaming job, with a
    /// savepoint). True when the engine recorded the new status itself.
    fn suspend(&self, dt: &DtRow) -> impl Future<Output = Result<bool, Error>> + Send;

    /// RESUME: starts what runs by itself again; `Some(notices)` when the engine resumed the
    /// table itself (else the manager records the new status).
    fn resume(
        &self,
        dt: &DtRow,
        options: Option<&BTreeMap<String, String>>,
    ) -> impl Future<Output = Result<Option<Vec<String>>, Error>> + Send;

    /// DROP, in its transaction, before the table goes: stops what writes into it.
    fn drop_before(&self, tx: &Transaction<'_>, dt: &DtRow) -> impl Future<Output = Result<(), Error>> + Send;

    /// DROP, in its transaction, the table and its catalog row gone: removes the engine's own
    /// objects for it.
    fn drop_after(&self, tx: &Transaction<'_>, dt: &DtRow) -> impl Future<Output = Result<(), Error>> + Send;

    /// What DESCRIBE shows of the engine's own state of `dt`.
    fn describe(&self, dt: &DtRow) -> Vec<(&'static str, Option<String>)>;
}
