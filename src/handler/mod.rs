//! Handlers for the statements dyngate answers itself, one per statement kind, dispatched from one
//! `match`. The wire layer calls [`Handler::prepare`] when a statement arrives (a simple Query or a
//! Parse) and [`Handler::execute`] when it is to run, and encodes the typed [`Reply`] for whichever
//! protocol the client speaks; handlers know nothing of sockets or framing.
//!
//! The dynamic-table statements are recognised, routed here and parsed already (a malformed one
//! gets 42601, a bad freshness 22023); their implementations arrive with the dynamic-table
//! lifecycle. Until then a well-formed one answers SQLSTATE 0A000 (feature_not_supported) rather
//! than reaching PostgreSQL as a confusing syntax error.

use crate::sql::dynamic::{self, DtStatement, ParseError};
use crate::wire::codec::PgError;

/// Who is asking: the identity PostgreSQL authenticated for this session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: String,
    pub database: String,
}

/// A result column: name and PostgreSQL type OID (values are sent in text format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub type_oid: u32,
}

pub const TEXT: u32 = 25;
pub const INT8: u32 = 20;
pub const TIMESTAMPTZ: u32 = 1184;
pub const BOOL: u32 = 16;

/// What a statement returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The result columns, or `None` for a statement that returns no rows.
    pub columns: Option<Vec<Column>>,
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag, e.g. `CREATE DYNAMIC TABLE`.
    pub tag: String,
}

/// A parsed statement, ready to execute (kept by the wire layer for a prepared statement).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub statement: DtStatement,
}

impl Prepared {
    /// The result shape, known before execution (for Describe).
    pub fn columns(&self) -> Option<Vec<Column>> {
        None
    }
}

/// Answers intercepted statements.
#[derive(Debug, Default)]
pub struct Handler {}

impl Handler {
    /// Parses an intercepted query string (already split into its statements).
    pub fn prepare(&self, statements: &[&str]) -> Result<Prepared, PgError> {
        let [sql] = statements else {
            // PostgreSQL runs a multi-statement string as one implicit transaction; a dynamic-table
            // statement does work outside the backend session, so it cannot take part in one.
            return Err(PgError::error(
                "0A000",
                "a DYNAMIC TABLE statement cannot be combined with other statements in one query string",
            )
            .with_hint("Send it as a query of its own."));
        };
        let statement = dynamic::parse(sql).map_err(parse_error)?;
        Ok(Prepared { statement })
    }

    /// Runs a prepared statement for `session`.
    pub async fn execute(&self, prepared: &Prepared, session: &SessionInfo) -> Result<Reply, PgError> {
        tracing::debug!(user = %session.user, statement = ?prepared.statement, "dyngate statement");
        let what = match prepared.statement {
            DtStatement::Create(_) => "CREATE DYNAMIC TABLE",
            DtStatement::Alter { .. } => "ALTER DYNAMIC TABLE",
            DtStatement::Drop { .. } => "DROP DYNAMIC TABLE",
            DtStatement::Refresh { .. } => "REFRESH DYNAMIC TABLE",
            DtStatement::Show { .. } => "SHOW DYNAMIC TABLES",
            DtStatement::ShowCreate { .. } => "SHOW CREATE DYNAMIC TABLE",
            DtStatement::Describe { .. } => "DESCRIBE DYNAMIC TABLE",
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
