//! How Flink's errors reach users: each [`FlinkError`] becomes the user-facing
//! [`Error::Engine`] with a SQLSTATE (what the user's statement did wrong, or that Flink failed),
//! an HTTP status for the refresh endpoint, and a message prefixed so that it is clear it is
//! Flink's; a job cancelled from outside becomes [`Error::Cancelled`].

use crate::core::Error;
use crate::engine::flink::client::FlinkError;
use crate::engine::flink::runtime::EngineError;

impl From<FlinkError> for Error {
    fn from(e: FlinkError) -> Self {
        let message = match &e {
            FlinkError::Sql(cause) => format!("Flink: {}", cause.message),
            e => format!("Flink: {e}"),
        };
        if matches!(&e, FlinkError::JobFailed { state, .. } if state == "CANCELED") {
            return Error::Cancelled(message);
        }
        let http_status = match e {
            FlinkError::Sql(_) => 422,
            FlinkError::Timeout { .. } => 504,
            _ => 502,
        };
        Error::Engine {
            code: flink_sqlstate(&e),
            http_status,
            message,
        }
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Flink(f) => f.into(),
            EngineError::Catalog(p) => p.into(),
        }
    }
}

/// The SQLSTATE of a Flink error: what the user's statement did wrong, or that Flink failed.
pub fn flink_sqlstate(e: &FlinkError) -> &'static str {
    match e {
        FlinkError::Sql(cause) => {
            let m = cause.message.as_str();
            match cause.short_exception() {
                "ParseException" | "SqlParseException" => "42601",
                "CalciteException" if m.contains("Non-query expression") => "42601",
                _ if m.contains("Column '") && m.contains("not found") => "42703",
                _ if m.contains("not found") || m.contains("does not exist") => "42P01",
                _ if m.contains("already exists") => "42P07",
                "SqlValidatorException" | "ValidationException" => "42000",
                _ => "XX000",
            }
        }
        FlinkError::Timeout { .. } => "57014",
        FlinkError::JobNotFound(_) | FlinkError::NotRunning { .. } => "55000",
        FlinkError::Unreachable(_)
        | FlinkError::SessionNotFound(_)
        | FlinkError::Savepoint { .. }
        | FlinkError::JobFailed { .. }
        | FlinkError::Unexpected { .. } => "58000",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::flink::client::{Cause, FlinkError};

    #[test]
    fn sqlstates_of_flink_errors() {
        let sql = |exception: &str, message: &str| {
            FlinkError::Sql(Cause {
                exception: exception.into(),
                message: message.into(),
            })
        };
        let cases = [
            (
                sql("org.apache.flink.sql.parser.impl.ParseException", "Encountered \"<EOF>\""),
                "42601",
            ),
            (
                sql(
                    "org.apache.calcite.runtime.CalciteException",
                    "Non-query expression encountered in illegal context",
                ),
                "42601",
            ),
            (
                sql("org.apache.calcite.sql.validate.SqlValidatorException", "Object 'x' not found"),
                "42P01",
            ),
            (
                sql(
                    "org.apache.calcite.sql.validate.SqlValidatorException",
                    "Column 'y' not found in any table",
                ),
                "42703",
            ),
            (
                sql("org.apache.flink.table.api.ValidationException", "Table `flink`.`t` already exists"),
                "42P07",
            ),
            (
                sql("org.apache.flink.table.api.ValidationException", "Querying an unbounded table"),
                "42000",
            ),
            (sql("java.lang.RuntimeException", "boom"), "XX000"),
            (FlinkError::Timeout { what: "x".into(), secs: 1 }, "57014"),
            (FlinkError::SessionNotFound("s".into()), "58000"),
            (FlinkError::JobNotFound("j".into()), "55000"),
        ];
        for (e, code) in cases {
            assert_eq!(flink_sqlstate(&e), code, "{e}");
        }
    }
}
