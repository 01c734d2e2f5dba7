//! Versioned migrations of the catalog schema, applied at start-up.
//!
//! Each file `sql/V<n>__<name>.sql` is embedded in the binary and applied once, in version order,
//! inside one transaction that first takes an advisory lock: two gateways starting at once
//! serialize on the lock, and the second finds everything applied. A migration already applied
//! whose text changed since, or a catalog newer than this binary, stops the start-up with a clear
//! error instead of guessing.

use tokio_postgres::Client;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migrations {
    ($(($v:literal, $name:literal)),* $(,)?) => {
        &[$(Migration { version: $v, name: $name, sql: include_str!(concat!("../../sql/V", $v, "__", $name, ".sql")) }),*]
    };
}

/// Every migration, in order. A new file under `sql/` must be listed here (a test checks).
pub const MIGRATIONS: &[Migration] = migrations![
    (1, "catalog"),
    (2, "resolved_queries_and_guards"),
    (3, "scheduler_reconciliation"),
    (4, "incremental_refresh"),
    (5, "wal_capture"),
    (6, "flink_engine"),
    (7, "wal_stream"),
    (8, "state_fillfactor"),
];

/// Arbitrary but fixed key of the advisory lock that serializes migrations ("dyngate" in ASCII).
const LOCK_KEY: i64 = 0x0064_796e_6761_7465;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "catalog migration V{version} ({name}) was changed after it was applied (checksum {applied} in the catalog, {ours} in this binary)"
    )]
    Changed {
        version: i32,
        name: String,
        applied: String,
        ours: String,
    },
    #[error("the catalog is at version {found}, newer than this dyngate knows ({known}): upgrade dyngate")]
    TooNew { found: i32, known: i32 },
    #[error("catalog migration failed: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// FNV-1a, 64 bits: a stable fingerprint of a migration's text.
pub fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Brings the catalog schema up to date; returns the resulting version.
pub async fn migrate(client: &mut Client) -> Result<i32, MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS dyngate;
         CREATE TABLE IF NOT EXISTS dyngate.schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await?;
    let applied = tx
        .query(
            "SELECT version, name, checksum FROM dyngate.schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut current = 0;
    for row in &applied {
        let (version, name, sum): (i32, String, String) = (row.get(0), row.get(1), row.get(2));
        current = current.max(version);
        match MIGRATIONS.iter().find(|m| m.version == version) {
            None => {
                return Err(MigrateError::TooNew { found: version, known });
            }
            Some(m) if checksum(m.sql) != sum => {
                return Err(MigrateError::Changed {
                    version,
                    name,
                    applied: sum,
                    ours: checksum(m.sql),
                });
            }
            Some(_) => {}
        }
    }
    let start = current;
    for m in MIGRATIONS.iter().filter(|m| m.version > start) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO dyngate.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        tracing::info!(version = m.version, name = m.name, "applied catalog migration");
        current = m.version;
    }
    tx.commit().await?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sql_file_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort_by_key(|n| n[1..n.find("__").unwrap()].parse::<i32>().unwrap());
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| format!("V{}__{}.sql", m.version, m.name)).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "versions are consecutive from 1");
        }
    }

    #[test]
    fn checksum_is_stable_and_sensitive() {
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_ne!(checksum("a"), checksum("b"));
        assert_eq!(checksum("select 1"), checksum("select 1"));
    }
}
