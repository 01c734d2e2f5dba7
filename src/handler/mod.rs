//! Handlers for the statements dyngate answers itself, one per statement kind, dispatched from one
//! `match`. The wire layer calls [`Handler::handle`] with the statement's text and the session's
//! identity and writes back whatever messages it returns; handlers know nothing of sockets.
//!
//! The dynamic-table statements are recognised and routed here already; their implementations
//! arrive with the dynamic-table lifecycle. Until then each answers with SQLSTATE 0A000
//! (feature_not_supported) rather than reaching PostgreSQL as a confusing syntax error.

use crate::sql::StatementKind;
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
    /// Handles one intercepted statement; returns the reply messages (without ReadyForQuery).
    pub async fn handle(&self, kind: StatementKind, sql: &str, session: &SessionInfo) -> Result<Vec<Message>, PgError> {
        tracing::debug!(?kind, user = %session.user, len = sql.len(), "intercepted statement");
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
