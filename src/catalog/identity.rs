//! The catalog's identity (`dyngate.identity`, a UUID made by the first migration): it marks what
//! belongs to this catalog outside it (schedules in a shared scheduler, Flink jobs on a shared
//! cluster). Read once per gateway, on first use.

use tokio::sync::OnceCell;

use crate::backend::ServicePool;
use crate::core::Error;

/// The catalog's identity, read on first use and kept.
#[derive(Debug, Default)]
pub struct Identity(OnceCell<String>);

impl Identity {
    pub fn new() -> Identity {
        Identity::default()
    }

    /// The identity, read from the catalog the first time.
    pub async fn get(&self, pool: &ServicePool) -> Result<&str, Error> {
        self.0
            .get_or_try_init(|| async {
                let client = pool.get().await?;
                let id: String = client.query_one("SELECT catalog_id::text FROM dyngate.identity", &[]).await?.get(0);
                Ok::<_, Error>(id)
            })
            .await
            .map(String::as_str)
    }
}
