//! DROP DYNAMIC TABLE: drop the table with the requester's privileges (PostgreSQL checks ownership) and its
//! catalog row in one transaction, after any running refresh of it has finished. Its engine stops
//! what writes into it first, and removes its own objects for it last (engine::Engine::drop_before,
//! drop_after); the schedule goes after the commit.

use crate::catalog;
use crate::core::{Error, Requester};
use crate::engine::Engine;
use crate::engine::postgres::run_as::run_as;
use crate::manager::{Manager, external, on_engine};
use crate::sql::dynamic::TableName;

impl Manager {
    /// Returns false when the table did not exist and IF EXISTS was given.
    pub async fn drop_table(&self, who: &Requester<'_>, name: &TableName, if_exists: bool) -> Result<bool, Error> {
        self.check_database(who)?;
        if who.in_transaction {
            return Err(Error::InTransaction("DROP DYNAMIC TABLE"));
        }
        let mut client = self.pool.get().await?;
        let name = self.resolve_existing(&mut client, who, name).await?;
        let tx = client.transaction().await?;
        let Some(dt) = catalog::load(&tx, &name).await? else {
            if catalog::relation_exists(&tx, &name).await? {
                return Err(Error::NotDynamic(name.to_string()));
            }
            return if if_exists {
                Ok(false)
            } else {
                Err(Error::NotFound(name.to_string()))
            };
        };
        catalog::lock_table(&tx, dt.id).await?;
        // Its schedule as of now: a concurrent ALTER may have changed it while we waited.
        external::lock_schedule(&tx, dt.id).await?;
        let dt = catalog::load(&tx, &name).await?.ok_or_else(|| Error::NotFound(name.to_string()))?;
        let readers = catalog::readers(&tx, &name).await?;
        if !readers.is_empty() {
            return Err(Error::ReadBy {
                table: name.to_string(),
                readers,
            });
        }
        on_engine!(self, dt.engine, |engine| engine.drop_before(&tx, &dt).await?);
        // Tells the guard against plain DROP TABLE (sql/V2) that this drop is the gateway's.
        tx.execute("SELECT set_config('dyngate.dropping', $1, true)", &[&dt.id.to_string()])
            .await?;
        if catalog::relation_exists(&tx, &name).await? {
            // As the requester: PostgreSQL checks that they own the table.
            run_as(&tx, who.user, &format!("DROP TABLE {}", name.quoted())).await?;
        } else {
            // Gone already (dropped by a superuser, or past the guard): the catalog entry still
            // goes, for a member of the owner's role.
            Self::require_member(&tx, who, &dt, "drop").await?;
            tracing::warn!(table = %name, "dropping the catalog entry of a dynamic table whose table was already gone");
        }
        catalog::delete(&tx, dt.id).await?;
        on_engine!(self, dt.engine, |engine| engine.drop_after(&tx, &dt).await?);
        // The schedule goes after the table (a removal that fails is retried by reconciliation;
        // until then, the schedule only calls an endpoint that answers 404).
        let schedule = external::schedule_of(&dt);
        let queued = match &schedule {
            Some((kind, handle)) => self.queue_removal(&tx, *kind, handle, &name, "dropped").await?,
            None => None,
        };
        tx.commit().await?;
        if let Some((kind, handle)) = schedule {
            self.remove_queued(queued, kind, &handle, &name).await;
        }
        tracing::info!(table = %name, by = who.user, "dynamic table dropped");
        Ok(true)
    }
}
