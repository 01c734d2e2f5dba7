//! Handlers for the statements dyngate answers itself, one per statement kind, dispatched from one
//! `match`. The wire layer calls [`Handler::handle`] with the statement's text and the session's
//! identity and writes back whatever messages it returns; handlers know nothing of sockets.
//!
//! The dynamic-table statements are recognised, routed here and parsed already (a malformed one
//! gets 42601, a bad freshness 22023); their implementations arrive with the dynamic-table
//! lifecycle. Until then a well-formed one answers SQLSTATE 0A000 (feature_not_supported) rather
//! than reaching PostgreSQL as a confusing syntax error.

use crate::sql::StatementKind;
use crate::sql::dynamic::{self, ParseError};
use crate::wire::codec::{Message, PgError};

/// Who is asking: the identity PostgreSQL authenticated for this session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: String,
    pub database: String,
}

/// Answers intercepted statements.
#[derive(Debug, Default)]
pub struct Handler {}

impl Handler {
    /// Handles an intercepted query string (already split into its statements); returns the reply
    /// messages (without ReadyForQuery).
    pub async fn handle(&self, kind: StatementKind, statements: &[&str], session: &SessionInfo) -> Result<Vec<Message>, PgError> {
        tracing::debug!(?kind, user = %session.user, "intercepted statement");
        let [sql] = statements else {
            // PostgreSQL runs a multi-statement string as one implicit transaction; a dynamic-table
            // statement does work outside the backend session, so it cannot take part in one.
            return Err(PgError::error(
                "0A000",
                "a DYNAMIC TABLE statement cannot be combined with other statements in one query string",
            )
            .with_hint("Send it as a query of its own."));
        };
        dynamic::parse(sql).map_err(parse_error)?;
        use StatementKind::*;
        let what = match kind {
            CreateDynamicTable => "CREATE DYNAMIC TABLE",
            AlterDynamicTable => "ALTER DYNAMIC TABLE",
            DropDynamicTable => "DROP DYNAMIC TABLE",
            RefreshDynamicTable => "REFRESH DYNAMIC TABLE",
            ShowDynamicTables => "SHOW DYNAMIC TABLES",
            ShowCreateDynamicTable => "SHOW CREATE DYNAMIC TABLE",
            DescribeDynamicTable => "DESCRIBE DYNAMIC TABLE",
        };
        Err(PgError::error(
            "0A000",
            format!("{what} is not supported by this version of dyngate"),
        ))
    }
}

fn parse_error(e: ParseError) -> PgError {
    PgError::error(e.sqlstate(), e.to_string())
}
