//! The per-table advisory locks that serialize work on one dynamic table across gateways sharing
//! the catalog: refreshes, drops and changes of the definition take ([`TABLE_LOCK_SPACE`], id).
//! A refresh of several statements (incremental, Flink) holds it at session level
//! ([`lock_for_refresh`]); a statement's transaction holds it until its end ([`lock_table`]).

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::backend::Pooled;
use crate::core::{Error, Trigger};

/// Key space of the per-table advisory locks that serialize refreshes and drops.
pub const TABLE_LOCK_SPACE: i32 = 0x6479_6e67; // "dyng"

/// Takes table `id`'s lock until the end of the transaction `tx`, waiting for it.
pub async fn lock_table(tx: &impl GenericClient, id: i64) -> Result<(), tokio_postgres::Error> {
    tx.query_typed(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[(&TABLE_LOCK_SPACE, Type::INT4), (&(id as i32), Type::INT4)],
    )
    .await?;
    Ok(())
}

/// Takes table `id`'s refresh lock at session level, for a refresh of several statements
/// (incremental, Flink): waiting for it, or, for a scheduled refresh, only if it is free (false:
/// taken). Until the caller releases it, an early return or a dropped future (even one dropped
/// while the lock is being taken) closes the connection instead of pooling it with the lock held.
pub async fn lock_for_refresh(client: &mut Pooled, id: i64, trigger: Trigger) -> Result<bool, Error> {
    let key = (TABLE_LOCK_SPACE, id as i32);
    client.discard_on_drop(true);
    if !trigger.waits() {
        let locked: bool = client
            .query_typed_one("SELECT pg_try_advisory_lock($1, $2)", &[(&key.0, Type::INT4), (&key.1, Type::INT4)])
            .await?
            .get(0);
        if !locked {
            client.discard_on_drop(false);
        }
        return Ok(locked);
    }
    // Typed: one round trip (a refresh's fixed work is mostly round trips).
    client
        .query_typed("SELECT pg_advisory_lock($1, $2)", &[(&key.0, Type::INT4), (&key.1, Type::INT4)])
        .await?;
    Ok(true)
}

/// Releases the lock [`lock_for_refresh`] took; whether it was released.
pub async fn unlock_refresh(client: &Pooled, id: i64) -> bool {
    let key = (TABLE_LOCK_SPACE, id as i32);
    client
        .query_typed("SELECT pg_advisory_unlock($1, $2)", &[(&key.0, Type::INT4), (&key.1, Type::INT4)])
        .await
        .is_ok()
}
