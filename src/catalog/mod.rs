//! The catalog: dyngate's own state, kept in the schema `dyngate` of the backing PostgreSQL. It
//! owns the catalog's shape (the versioned migrations under `sql/`, [`migrate`](mod@migrate)), the typed reads
//! and writes of the dynamic tables' rows ([`tables`]) and of the refresh history ([`history`]),
//! the per-table locks ([`locks`]) and the catalog's identity ([`identity`]). Plain functions over a connection or transaction: the
//! operations decide the transactions. It knows nothing of the engines, the wire protocol or HTTP.

pub mod history;
pub mod identity;
pub mod locks;
pub mod migrate;
pub mod tables;

pub use history::{
    ApiClaim, JobPart, RefreshRow, api_claim, cancel_orphaned_refreshes, creation_refresh, job, partition_json, record_refresh,
    refresh_executing,
};
pub use identity::Identity;
pub use locks::{TABLE_LOCK_SPACE, lock_for_refresh, lock_table, unlock_refresh};
pub use migrate::{MIGRATIONS, MigrateError, Migration, migrate};
pub use tables::{
    DtRow, FlinkColumn, NewDt, claim_slots, columns_of, delete, insert, load, load_by_id, readers, relation_exists, set_binding, set_query,
    set_scheduler,
};
