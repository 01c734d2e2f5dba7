//! ALTER DYNAMIC TABLE ... AS: a new query for an existing dynamic table, which may only append
//! columns; anything else is refused and leaves the table as it was. The table's engine does it
//! (engine::Engine::alter_query: the PostgreSQL engine in one transaction with a refresh, the
//! Flink engine with a batch job or a new streaming job).

use crate::core::{Error, Requester};
use crate::engine::Engine;
use crate::manager::alter::Altered;
use crate::manager::{Manager, on_engine};
use crate::sql::dynamic::TableName;

impl Manager {
    pub async fn alter_query(&self, who: &Requester<'_>, name: &TableName, query: &str) -> Result<Altered, Error> {
        let dt = self.for_change(who, name, "alter").await?;
        let mut client = self.pool.get().await?;
        let search_path = self.search_path_of(&mut client, who).await?;
        drop(client);
        let notices = on_engine!(self, dt.engine, |engine| engine.alter_query(who, &dt, query, &search_path).await?);
        Ok(Altered { notices })
    }
}
