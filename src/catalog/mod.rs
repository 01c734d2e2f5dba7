//! The catalog: dyngate's own state, kept in the schema `dyngate` of the backing PostgreSQL.
//!
//! This module owns the catalog's shape (the versioned migrations under `sql/`) and, later, the
//! typed reads and writes of it. It knows nothing of the wire protocol or HTTP.

pub mod migrate;

pub use migrate::{MIGRATIONS, MigrateError, Migration, migrate};
