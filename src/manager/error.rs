//! The manager's errors and their one mapping to SQLSTATE (the HTTP mapping joins it with the
//! refresh endpoint). Errors PostgreSQL raised while running the user's own query pass through
//! with PostgreSQL's fields; failures of the gateway's own machinery are logged in full and reach
//! the client as a short message without addresses or credentials.

use crate::manager::rules::RuleError;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// 42P01, worded as Flink's "Materialized table with identifier %s does not exist."
    #[error("Dynamic table with identifier {0} does not exist.")]
    NotFound(String),
    /// 42P07.
    #[error("Dynamic table {0} already exists.")]
    Exists(String),
    /// 42P07: a plain table or view has the name.
    #[error("relation {0} already exists and is not a dynamic table")]
    RelationExists(String),
    /// 42809, Flink's "Table %s is not a materialized table, does not support materialized table
    /// related operation."
    #[error("Table {0} is not a dynamic table, does not support dynamic table related operation.")]
    NotDynamic(String),
    /// 22023: freshness and mode rules.
    #[error("{0}")]
    Rule(#[from] RuleError),
    /// 25001: work that cannot be part of the client's transaction.
    #[error("{0} cannot run inside a transaction block")]
    InTransaction(&'static str),
    /// 0A000: dynamic tables live in the gateway's catalog database only.
    #[error("dynamic tables live in database \"{expected}\"; this session is connected to \"{actual}\"")]
    WrongDatabase { expected: String, actual: String },
    /// 42501: the requester may not operate this table.
    #[error("must be a member of role \"{owner}\" to {action} dynamic table {table}")]
    NotOwner {
        owner: String,
        action: &'static str,
        table: String,
    },
    /// 55000 (object_not_in_prerequisite_state): e.g. suspending a suspended table.
    #[error("{0}")]
    WrongState(String),
    /// 2BP01: other dynamic tables read this one.
    #[error("cannot drop dynamic table {table} because {} {} {} it",
        if readers.len() == 1 { "dynamic table" } else { "dynamic tables" },
        readers.join(", "),
        if readers.len() == 1 { "reads" } else { "read" })]
    ReadBy { table: String, readers: Vec<String> },
    /// 22023: an option or partition spec that cannot be used.
    #[error("{0}")]
    InvalidOption(String),
    /// 42P16: a definition that cannot be used (ALTER ... AS, partition columns).
    #[error("{0}")]
    InvalidDefinition(String),
    /// 58000: the external scheduler failed (unreachable, refused); nothing was changed.
    #[error("{0}")]
    Scheduler(String),
    /// 0A000: accepted syntax, not (yet) supported.
    #[error("{0}")]
    Unsupported(String),
    /// An error PostgreSQL raised (the user's query, a privilege check, ...), with its fields.
    #[error("{message}")]
    Postgres {
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    /// Flink refused the statement, failed, or could not be reached; nothing was changed.
    #[error("{}", flink_message(.0))]
    Flink(crate::engine::flink::FlinkError),
    /// The gateway's own machinery failed (the catalog connection, ...). Details are logged.
    #[error("internal error in the dynamic-table catalog; see the gateway's log")]
    Internal,
}

impl ManagerError {
    /// The HTTP status of this error on the API.
    pub fn http_status(&self) -> u16 {
        match self {
            ManagerError::NotFound(_) => 404,
            ManagerError::WrongState(_) | ManagerError::Exists(_) | ManagerError::RelationExists(_) => 409,
            ManagerError::NotOwner { .. } => 403,
            ManagerError::Rule(_)
            | ManagerError::NotDynamic(_)
            | ManagerError::InTransaction(_)
            | ManagerError::WrongDatabase { .. }
            | ManagerError::InvalidDefinition(_)
            | ManagerError::InvalidOption(_) => 400,
            ManagerError::ReadBy { .. } => 409,
            ManagerError::Scheduler(_) => 502,
            ManagerError::Unsupported(_) => 501,
            ManagerError::Postgres { .. } => 422,
            ManagerError::Flink(crate::engine::flink::FlinkError::Sql(_)) => 422,
            ManagerError::Flink(crate::engine::flink::FlinkError::Timeout { .. }) => 504,
            ManagerError::Flink(_) => 502,
            ManagerError::Internal => 500,
        }
    }

    pub fn sqlstate(&self) -> &str {
        match self {
            ManagerError::NotFound(_) => "42P01",
            ManagerError::Exists(_) | ManagerError::RelationExists(_) => "42P07",
            ManagerError::NotDynamic(_) => "42809",
            ManagerError::Rule(_) | ManagerError::InvalidOption(_) => "22023",
            ManagerError::InTransaction(_) => "25001",
            ManagerError::WrongDatabase { .. } | ManagerError::Unsupported(_) => "0A000",
            ManagerError::NotOwner { .. } => "42501",
            ManagerError::WrongState(_) => "55000",
            ManagerError::ReadBy { .. } => "2BP01",
            ManagerError::Scheduler(_) => "58000",
            ManagerError::InvalidDefinition(_) => "42P16",
            ManagerError::Postgres { code, .. } => code,
            ManagerError::Flink(e) => crate::manager::flink_sql::flink_sqlstate(e),
            ManagerError::Internal => "XX000",
        }
    }
}

/// A Flink error as the client reads it: Flink's own reason for a refused statement, else what
/// failed (prefixed, so that it is clear the message is Flink's).
fn flink_message(e: &crate::engine::flink::FlinkError) -> String {
    match e {
        crate::engine::flink::FlinkError::Sql(cause) => format!("Flink: {}", cause.message),
        e => format!("Flink: {e}"),
    }
}

impl From<crate::engine::flink::FlinkError> for ManagerError {
    fn from(e: crate::engine::flink::FlinkError) -> Self {
        ManagerError::Flink(e)
    }
}

impl From<crate::engine::incremental::collect::SyncError> for ManagerError {
    fn from(e: crate::engine::incremental::collect::SyncError) -> Self {
        use crate::engine::incremental::collect::SyncError;
        match e {
            SyncError::Postgres(e) => e.into(),
            behind @ SyncError::Behind(_) => ManagerError::WrongState(behind.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for ManagerError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => ManagerError::Postgres {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            },
            None => {
                tracing::error!(error = %e, "catalog connection failed");
                ManagerError::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        let cases: Vec<(ManagerError, &str)> = vec![
            (ManagerError::NotFound("t".into()), "42P01"),
            (ManagerError::Exists("t".into()), "42P07"),
            (ManagerError::RelationExists("t".into()), "42P07"),
            (ManagerError::NotDynamic("t".into()), "42809"),
            (ManagerError::Rule(RuleError::FullDayNotOne), "22023"),
            (ManagerError::InTransaction("CREATE DYNAMIC TABLE"), "25001"),
            (
                ManagerError::WrongDatabase {
                    expected: "a".into(),
                    actual: "b".into(),
                },
                "0A000",
            ),
            (
                ManagerError::NotOwner {
                    owner: "o".into(),
                    action: "drop",
                    table: "t".into(),
                },
                "42501",
            ),
            (ManagerError::Unsupported("x".into()), "0A000"),
            (ManagerError::WrongState("x".into()), "55000"),
            (
                ManagerError::ReadBy {
                    table: "t".into(),
                    readers: vec!["u".into()],
                },
                "2BP01",
            ),
            (ManagerError::InvalidDefinition("x".into()), "42P16"),
            (ManagerError::InvalidOption("x".into()), "22023"),
            (ManagerError::Scheduler("x".into()), "58000"),
            (
                ManagerError::Postgres {
                    code: "42P01".into(),
                    message: "m".into(),
                    detail: None,
                    hint: None,
                },
                "42P01",
            ),
            (ManagerError::Internal, "XX000"),
        ];
        for (e, code) in cases {
            assert_eq!(e.sqlstate(), code, "{e}");
        }
        let http = [
            (ManagerError::NotFound("t".into()), 404),
            (ManagerError::WrongState("x".into()), 409),
            (
                ManagerError::NotOwner {
                    owner: "o".into(),
                    action: "drop",
                    table: "t".into(),
                },
                403,
            ),
            (ManagerError::Rule(RuleError::FullDayNotOne), 400),
            (ManagerError::Unsupported("x".into()), 501),
            (ManagerError::Internal, 500),
        ];
        for (e, status) in http {
            assert_eq!(e.http_status(), status, "{e}");
        }
        assert_eq!(
            ManagerError::ReadBy {
                table: "public.a".into(),
                readers: vec!["public.b".into(), "public.c".into()]
            }
            .to_string(),
            "cannot drop dynamic table public.a because dynamic tables public.b, public.c read it"
        );
        assert_eq!(
            ManagerError::NotFound("public.t".into()).to_string(),
            "Dynamic table with identifier public.t does not exist."
        );
    }
}
