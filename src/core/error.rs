//! The user-facing error of every dynamic-table operation, and its one mapping to SQLSTATE and
//! to HTTP status (psql and the refresh endpoint see the same error). Errors PostgreSQL raised
//! while running the user's own query pass through with PostgreSQL's fields; an engine's own
//! errors arrive already worded for users (each engine converts its errors into [`Error::Engine`]);
//! failures of the gateway's own machinery are logged in full and reach the client as a short
//! message without addresses or credentials.

use super::rules::RuleError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// An engine (Flink) refused the statement, failed, or could not be reached; nothing was
    /// changed. The engine chose the SQLSTATE and HTTP status, and worded the message for users.
    #[error("{message}")]
    Engine {
        code: &'static str,
        http_status: u16,
        message: String,
    },
    /// 58000: the engine's job was cancelled from outside; its refresh is recorded CANCELLED.
    #[error("{0}")]
    Cancelled(String),
    /// The gateway's own machinery failed (the catalog connection, ...). Details are logged.
    #[error("internal error in the dynamic-table catalog; see the gateway's log")]
    Internal,
}

impl Error {
    /// The HTTP status of this error on the API.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::NotFound(_) => 404,
            Error::WrongState(_) | Error::Exists(_) | Error::RelationExists(_) => 409,
            Error::NotOwner { .. } => 403,
            Error::Rule(_)
            | Error::NotDynamic(_)
            | Error::InTransaction(_)
            | Error::WrongDatabase { .. }
            | Error::InvalidDefinition(_)
            | Error::InvalidOption(_) => 400,
            Error::ReadBy { .. } => 409,
            Error::Scheduler(_) => 502,
            Error::Unsupported(_) => 501,
            Error::Postgres { .. } => 422,
            Error::Engine { http_status, .. } => *http_status,
            Error::Cancelled(_) => 502,
            Error::Internal => 500,
        }
    }

    pub fn sqlstate(&self) -> &str {
        match self {
            Error::NotFound(_) => "42P01",
            Error::Exists(_) | Error::RelationExists(_) => "42P07",
            Error::NotDynamic(_) => "42809",
            Error::Rule(_) | Error::InvalidOption(_) => "22023",
            Error::InTransaction(_) => "25001",
            Error::WrongDatabase { .. } | Error::Unsupported(_) => "0A000",
            Error::NotOwner { .. } => "42501",
            Error::WrongState(_) => "55000",
            Error::ReadBy { .. } => "2BP01",
            Error::Scheduler(_) => "58000",
            Error::InvalidDefinition(_) => "42P16",
            Error::Postgres { code, .. } => code,
            Error::Engine { code, .. } => code,
            Error::Cancelled(_) => "58000",
            Error::Internal => "XX000",
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Error::Postgres {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            },
            None => {
                tracing::error!(error = %e, "catalog connection failed");
                Error::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        let cases: Vec<(Error, &str)> = vec![
            (Error::NotFound("t".into()), "42P01"),
            (Error::Exists("t".into()), "42P07"),
            (Error::RelationExists("t".into()), "42P07"),
            (Error::NotDynamic("t".into()), "42809"),
            (Error::Rule(RuleError::FullDayNotOne), "22023"),
            (Error::InTransaction("CREATE DYNAMIC TABLE"), "25001"),
            (
                Error::WrongDatabase {
                    expected: "a".into(),
                    actual: "b".into(),
                },
                "0A000",
            ),
            (
                Error::NotOwner {
                    owner: "o".into(),
                    action: "drop",
                    table: "t".into(),
                },
                "42501",
            ),
            (Error::Unsupported("x".into()), "0A000"),
            (Error::WrongState("x".into()), "55000"),
            (
                Error::ReadBy {
                    table: "t".into(),
                    readers: vec!["u".into()],
                },
                "2BP01",
            ),
            (Error::InvalidDefinition("x".into()), "42P16"),
            (Error::InvalidOption("x".into()), "22023"),
            (Error::Scheduler("x".into()), "58000"),
            (
                Error::Postgres {
                    code: "42P01".into(),
                    message: "m".into(),
                    detail: None,
                    hint: None,
                },
                "42P01",
            ),
            (
                Error::Engine {
                    code: "42601",
                    http_status: 422,
                    message: "m".into(),
                },
                "42601",
            ),
            (Error::Cancelled("x".into()), "58000"),
            (Error::Internal, "XX000"),
        ];
        for (e, code) in cases {
            assert_eq!(e.sqlstate(), code, "{e}");
        }
        let http = [
            (Error::NotFound("t".into()), 404),
            (Error::WrongState("x".into()), 409),
            (
                Error::NotOwner {
                    owner: "o".into(),
                    action: "drop",
                    table: "t".into(),
                },
                403,
            ),
            (Error::Rule(RuleError::FullDayNotOne), 400),
            (Error::Unsupported("x".into()), 501),
            (
                Error::Engine {
                    code: "57014",
                    http_status: 504,
                    message: "m".into(),
                },
                504,
            ),
            (Error::Cancelled("x".into()), 502),
            (Error::Internal, 500),
        ];
        for (e, status) in http {
            assert_eq!(e.http_status(), status, "{e}");
        }
        assert_eq!(
            Error::ReadBy {
                table: "public.a".into(),
                readers: vec!["public.b".into(), "public.c".into()]
            }
            .to_string(),
            "cannot drop dynamic table public.a because dynamic tables public.b, public.c read it"
        );
        assert_eq!(
            Error::NotFound("public.t".into()).to_string(),
            "Dynamic table with identifier public.t does not exist."
        );
    }
}
