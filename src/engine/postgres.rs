//! The PostgreSQL engine: a dynamic table is an ordinary table in the backing database, filled
//! and refreshed by SQL run inside a transaction of the caller's (which has already taken the
//! owner's role, so the refresh reads only what the owner may read).
//!
//! A FULL refresh replaces the content in one transaction with DELETE and INSERT: readers keep
//! seeing the old rows until it commits (MVCC), never an empty or partial table, and are not
//! blocked (DELETE takes no lock that conflicts with SELECT, unlike TRUNCATE or a table swap).

use tokio_postgres::Transaction;

use crate::engine::{RefreshAction, Refreshed};

/// Creates the table and fills it for the first time. `target` is the quoted, schema-qualified
/// name; `columns` the declared column list, if any (else the query's columns are used).
pub async fn create(tx: &Transaction<'_>, target: &str, columns: Option<&str>, query: &str) -> Result<Refreshed, tokio_postgres::Error> {
    let rows = match columns {
        Some(cols) => {
            tx.batch_execute(&format!("CREATE TABLE {target} ({cols})")).await?;
            tx.execute(&format!("INSERT INTO {target} SELECT * FROM ({query}) AS dyngate_query"), &[])
                .await?
        }
        None => tx.execute(&format!("CREATE TABLE {target} AS {query}"), &[]).await?,
    };
    Ok(Refreshed {
        action: RefreshAction::Full,
        rows,
    })
}

/// Replaces the whole content with the query's current result.
pub async fn full_refresh(tx: &Transaction<'_>, target: &str, query: &str) -> Result<Refreshed, tokio_postgres::Error> {
    tx.execute(&format!("DELETE FROM {target}"), &[]).await?;
    let rows = tx
        .execute(&format!("INSERT INTO {target} SELECT * FROM ({query}) AS dyngate_query"), &[])
        .await?;
    Ok(Refreshed {
        action: RefreshAction::Full,
        rows,
    })
}
