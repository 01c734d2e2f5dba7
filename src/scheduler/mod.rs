//! Workflow schedulers for FULL-mode tables, behind one plug-in interface ([`Plugin`]): the
//! embedded one ([`embedded`]: the refresh loop in [`crate::manager::scheduler`] reads the
//! schedules from the catalog, so its plug-in has nothing to hold), Apache Airflow ([`airflow`]:
//! a DAG file per table and Airflow's REST API) and Apache DolphinScheduler
//! ([`dolphinscheduler`]: a workflow with one HTTP task and a schedule, through its REST API).
//! External schedulers hold a table's schedule themselves and call the refresh endpoint when it
//! fires.
//!
//! The manager calls the plug-ins from its operations (`manager::external`) and from the
//! reconciliation loop (`manager::reconcile`). A plug-in returns a [`Handle`], opaque to the
//! manager, which keeps it in the catalog (`dynamic_table.scheduler_handle`) and gives it back
//! for every later call; [`Plugin::summary`] is what DESCRIBE shows of it. [`crate::http_client`] is the HTTP
//! client the plug-ins talk through.

pub mod airflow;
pub mod dolphinscheduler;
pub mod embedded;

use std::future::Future;
use std::pin::Pin;

use crate::core::SchedulerKind;
use crate::core::rules::Freshness;

/// A boxed future, so that plug-ins can sit behind `dyn Plugin`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The table a schedule is for, and the schedule.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The catalog's identity (`dyngate.identity`, a UUID): marks what belongs to this catalog in
    /// a scheduler that several catalogs share, so reconciliation only ever touches its own.
    pub catalog: &'a str,
    /// The database holding the catalog, and the table's id in it.
    pub database: &'a str,
    pub table_id: i64,
    pub schema: &'a str,
    pub table: &'a str,
    pub freshness: Freshness,
    /// The IANA time zone the schedule runs in.
    pub time_zone: &'a str,
    /// Now, ISO 8601 with an offset, on the database's clock: a new schedule starts here (an
    /// earlier tick must not fire).
    pub start: &'a str,
    /// Sent as the refresh call's `configuration` (string pairs), besides the scheduler's own
    /// run id.
    pub configuration: &'a std::collections::BTreeMap<String, String>,
}

impl Target<'_> {
    /// The table as the refresh endpoint's `tables` names it.
    pub fn endpoint_name(&self) -> String {
        use crate::core::quote_ident;
        format!("{}.{}", quote_ident(self.schema), quote_ident(self.table))
    }
}

/// The name of a table's schedule in an external scheduler (a DAG id, a workflow name):
/// `dyngate__<database>__<schema>__<table>__<hash>`, each name cut to its limit in `max`
/// (database, schema, table) with characters other than ASCII letters, digits, `_` and `-`
/// replaced by `_`, and 8 hex digits of a hash of the catalog's identity, the exact names and the
/// table's id: tables whose names differ only in replaced characters (or in case, for a
/// case-insensitive file system), catalogs sharing one scheduler and a table created again under
/// an old name all get schedules of their own. Stable across builds and platforms.
pub fn schedule_name(catalog: &str, database: &str, schema: &str, table: &str, table_id: i64, max: [usize; 3]) -> String {
    fn clean(s: &str, max: usize) -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(max)
            .collect()
    }
    let hash = fnv1a(format!("{catalog}\u{0}{database}\u{0}{schema}\u{0}{table}\u{0}{table_id}").as_bytes());
    format!(
        "dyngate__{}__{}__{}__{:08x}",
        clean(database, max[0]),
        clean(schema, max[1]),
        clean(table, max[2]),
        hash as u32
    )
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// What a plug-in keeps of a table's schedule, as JSON in the catalog. Only the plug-in that made
/// it reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Handle(pub serde_json::Value);

impl Handle {
    /// The handle of a schedule the scheduler does not hold (the embedded one's).
    pub fn none() -> Handle {
        Handle(serde_json::Value::Null)
    }

    pub fn is_none(&self) -> bool {
        self.0.is_null()
    }

    /// A plug-in's own handle type, as JSON.
    pub fn of<T: serde::Serialize>(value: &T) -> Handle {
        Handle(serde_json::to_value(value).unwrap_or_default())
    }

    /// The plug-in's own handle type, back from JSON.
    pub fn parse<T: serde::de::DeserializeOwned>(&self, scheduler: &'static str) -> Result<T, PluginError> {
        serde_json::from_value(self.0.clone())
            .map_err(|e| PluginError::Failed(format!("{scheduler}: unreadable handle in the catalog: {e}")))
    }
}

/// What reconciliation did to one schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Repair {
    /// The schedule was there (the list says what was corrected in place: paused state, cron,
    /// ...; empty when nothing was).
    InPlace(Vec<String>),
    /// The schedule was gone and was created again: the catalog must keep the new handle.
    Recreated(Handle),
    /// The schedule was put right (or is right) and its handle changed: the catalog must keep
    /// the new one (e.g. a handle from an older dyngate gains a field).
    Updated { handle: Handle, fixes: Vec<String> },
}

/// A plug-in's failure. Messages go to SQL and HTTP clients: they name the scheduler and what
/// failed, never credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The scheduler cannot express this schedule (Airflow's cron has no seconds): the user's
    /// error (22023), raised before anything changes.
    #[error("{0}")]
    Unschedulable(String),
    /// The scheduler failed, refused or could not be reached (58000).
    #[error("{0}")]
    Failed(String),
    /// Something not this catalog's stands in the way of this one table's schedule (a workflow
    /// of the same name that someone else made): 58000 for the statement; reconciliation reports
    /// it and goes on with the other tables (unlike `Failed`, which ends the round).
    #[error("{0}")]
    Conflict(String),
}

/// A workflow scheduler for FULL-mode tables.
///
/// Contract, for every implementation:
/// - `register` creates everything the schedule needs, or nothing: on failure it removes what it
///   created before returning the error. A schedule registered inactive never fires until
///   `set_active(true)`. No run fires for a tick before `Target::start`.
/// - `reschedule` changes the cron / time zone / configuration of an existing schedule, keeping
///   its active state, and returns the handle to keep from then on (usually the same).
/// - `unregister` is idempotent: a schedule already gone is success.
/// - `reconcile` makes the scheduler hold what the catalog says (exists, `active`, the target's
///   schedule) and reports what it changed.
/// - `list` returns the handles of every schedule this catalog (`Target::catalog`) owns in the
///   scheduler, found by the scheduler's own listing (not from the catalog): reconciliation
///   removes the ones the catalog does not know.
pub trait Plugin: Send + Sync {
    fn kind(&self) -> SchedulerKind;

    /// Refuses a freshness the scheduler cannot express, before anything is changed.
    fn check(&self, f: Freshness) -> Result<(), PluginError>;

    fn register<'a>(&'a self, t: &'a Target<'a>, active: bool) -> BoxFuture<'a, Result<Handle, PluginError>>;

    fn reschedule<'a>(&'a self, h: &'a Handle, t: &'a Target<'a>) -> BoxFuture<'a, Result<Handle, PluginError>>;

    /// Resumes (true) or suspends (false) the schedule.
    fn set_active<'a>(&'a self, h: &'a Handle, active: bool) -> BoxFuture<'a, Result<(), PluginError>>;

    fn unregister<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), PluginError>>;

    fn reconcile<'a>(&'a self, h: &'a Handle, t: &'a Target<'a>, active: bool) -> BoxFuture<'a, Result<Repair, PluginError>>;

    fn list<'a>(&'a self, catalog: &'a str) -> BoxFuture<'a, Result<Vec<Handle>, PluginError>>;

    /// The schedule's identity in the scheduler (a DAG id, a workflow code), to compare handles.
    fn key(&self, h: &Handle) -> String;

    /// What DESCRIBE shows of a handle.
    fn summary(&self, h: &Handle) -> String;
}
