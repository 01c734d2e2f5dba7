//! Change capture: what an incremental dynamic table's sources log for it.
//!
//! Chosen by measurement (2 cores, PostgreSQL 15, fsync off, orders(id PK, customer_id, day,
//! amount); bench/incremental.sh and by hand, 2026-11-24 and 25):
//!
//! | capture                                   | 1 writer, 10k 1-row INSERTs | 8 writers, 1-row INSERTs | INSERT ... SELECT of 200k rows |
//! |-------------------------------------------|-----------------------------|--------------------------|--------------------------------|
//! | statement triggers, transition tables     | 0.84-1.21x (noisy)          | 69-78% of the throughput | 1.5x                           |
//! | row triggers (VALUES (NEW.x, ...))        |                             | 83%                      | 3.2x                           |
//! | row triggers, not SECURITY DEFINER        |                             | 87%                      |                                |
//! | pg_ivm 1.15 (immediate, from the issue)   | 12.8x                       | 5%                       |                                |
//! | logical decoding, peeked (first version)  | 0.94x, 1.40x (noisy)        | 87-93% (see below)       | (no work in the statement)     |
//! | logical decoding, streamed (stream.rs)    | 0.86x                       | 67-69%                   | (no work in the statement)     |
//!
//! Of the triggers, statement triggers are kept: bulk writes (INSERT ... SELECT, COPY, set-wide
//! UPDATEs) cost a row trigger twice as much, and writers only append to a log, so they never
//! wait on one another. With 8 writers on 2 cores the extra heap insert and the trigger's
//! execution are CPU that writers no longer have (an unlogged log, or no xid column, gained
//! nothing); the goal of 90% is not met by any trigger. SECURITY DEFINER stays: writers must not
//! be able to write the log themselves (a forged change would reach other users' tables).
//!
//! The other way, `--capture wal` (needs `wal_level = logical`): logical decoding, streamed from a
//! replication slot (stream.rs), costs writers nothing in their statements, but its decoding runs
//! on the same cores: with 8 CPU-bound writers the walsender alone used 16% of the two cores (about
//! 13 µs a change), more than the triggers cost (bench/README.md; the first version measured
//! 87-93%: it peeked at the slot every 10 s, so most of a run's decoding likely fell after the
//! measured 15 s; not verified). A refresh right after a burst also waits for its decoding. So
//! triggers stay the default; `wal` suits sources whose writers must not be touched at all, and
//! machines with cores to spare. Its changes come as of WAL positions while a refresh reads the log
//! and the sources as of one snapshot; collect.rs says how the two are reconciled. Both fill the
//! same logs, so everything after capture is one code path.
//!
//! Per source table (`dyngate.change_capture`, with its `method`): a log `dyngate."changes_<oid>"`
//! holding the source's columns that dynamic tables read (as `a<attnum>`), plus the writer's
//! transaction id and a sign (-1 an old row, +1 a new one: an UPDATE logs both), filled by
//! three triggers (or by the streamer, from the WAL); a
//! TRUNCATE is recorded in `dyngate.truncation` (the next refresh of each reader is then full).
//! The trigger functions are written by `dyngate.capture_functions` (catalog V4), again after a
//! source column is renamed; they are SECURITY DEFINER (writers need no privilege on the log)
//! and name everything schema-qualified, with no operator in their SQL, so a writer's
//! search_path cannot divert them.
//!
//! Which changes a refresh applies: those of transactions visible in its snapshot and not in the
//! snapshot the table was last brought up to date with (`applied_snapshot`); the log rows every
//! reader has applied are discarded after the refresh (a log nobody needs any more is
//! truncated: incremental::discard_applied).

use tokio_postgres::Transaction;
use tokio_postgres::types::Type;

use crate::core::{quote_ident, quote_literal};
use crate::engine::postgres::incremental::collect;
pub use crate::engine::postgres::incremental::collect::Method;

/// The log's own columns. Source columns are logged as `a<attnum>` ([`log_column`]), read back
/// under their current names (a source column named like the sign cannot be captured).
pub const XID: &str = "dyngate$xid";
pub const SIGN: &str = "dyngate$sign";

/// The log table of source `oid` (unquoted, in schema `dyngate`).
pub fn log_table(oid: u32) -> String {
    format!("changes_{oid}")
}

/// The log table of source `oid`, schema-qualified and quoted, for SQL text.
pub fn log_relation(oid: u32) -> String {
    format!("dyngate.{}", quote_ident(&log_table(oid)))
}

/// A source of a dynamic table, as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `"schema"."name"`, quoted.
    pub quoted: String,
    /// The columns the dynamic table's query reads: number and current name.
    pub columns: Vec<(i16, String)>,
    /// Of those, the ones declared NOT NULL, and the ones whose values all have one scale
    /// (`bigint`, `numeric(p, s)`): what decides whether a sum of them can be kept in the
    /// table itself (in_place.rs).
    pub not_null: Vec<String>,
    pub fixed_scale: Vec<String>,
    /// Captured from the WAL ([`sources_of`] reads it from `dyngate.change_capture`).
    pub wal: bool,
    /// With this transaction's peek table beside its log (collect::fetch_gap sets it).
    pub peeked: bool,
    /// The changes pending in this refresh's snapshot, once counted (incremental::pending sets
    /// it). None pending: the delta reads the table as it is, and has no term for its changes.
    /// Some: the planner is told about how many there are (delta::pending_changes).
    pub changes: Option<i64>,
}

impl SourceTable {
    /// No change pending in this refresh's snapshot.
    pub fn quiet(&self) -> bool {
        self.changes == Some(0)
    }
}

/// The log's column holding source attribute `attnum` (see `dyngate.change_capture`).
pub fn log_column(attnum: i16) -> String {
    format!("a{attnum}")
}

/// The sources the query bound in view `dyngate.<view>` reads, with the columns it reads; or
/// why they cannot be captured.
pub async fn sources_of(tx: &Transaction<'_>, view: &str) -> Result<Result<Vec<SourceTable>, String>, tokio_postgres::Error> {
    let rows = tx
        .query_typed(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relkind::text, c.relpersistence::text, n.nspname::text, c.relname::text,
                    coalesce(array_agg(a.attnum ORDER BY a.attnum) FILTER (WHERE a.attnum > 0), '{}'),
                    coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum > 0), '{}'),
                    EXISTS (SELECT 1 FROM dyngate.change_capture cc WHERE cc.source = c.oid AND cc.method = 'wal'),
                    coalesce(array_agg(a.attname::text) FILTER (WHERE a.attnum > 0 AND a.attnotnull), '{}'),
                    coalesce(array_agg(a.attname::text) FILTER (WHERE a.attnum > 0 AND (a.atttypid = 'pg_catalog.int8'::pg_catalog.regtype
                             OR (a.atttypid = 'pg_catalog.numeric'::pg_catalog.regtype AND a.atttypmod >= 0))), '{}')
               FROM pg_depend d
               JOIN pg_rewrite rw ON rw.oid = d.objid
               JOIN pg_class c ON c.oid = d.refobjid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
              WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                AND rw.ev_class = format('dyngate.%I', $1::text)::regclass AND c.oid <> rw.ev_class
              GROUP BY c.oid, n.nspname, c.relname, c.relkind, c.relpersistence",
            &[(&view, Type::TEXT)],
        )
        .await?;
    let mut sources = Vec::new();
    for r in rows {
        let (oid, quoted, kind, persistence, schema, name): (u32, String, String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        let (attnums, names, wal): (Vec<i16>, Vec<String>, bool) = (r.get(6), r.get(7), r.get(8));
        let (not_null, fixed_scale): (Vec<String>, Vec<String>) = (r.get(9), r.get(10));
        let what = match kind.as_str() {
            "r" if persistence == "t" => Some("a temporary table"),
            "r" => None,
            "v" => Some("a view"),
            "m" => Some("a materialized view"),
            "f" => Some("a foreign table"),
            "p" => Some("a partitioned table"),
            _ => Some("not a table"),
        };
        if let Some(what) = what {
            return Ok(Err(format!("{quoted} is {what}; only changes to ordinary tables are captured")));
        }
        if let Some(c) = names.iter().find(|c| *c == SIGN) {
            return Ok(Err(format!("{quoted} has a column named {c}, which change capture uses")));
        }
        sources.push(SourceTable {
            oid,
            schema,
            name,
            quoted,
            columns: attnums.into_iter().zip(names).collect(),
            not_null,
            fixed_scale,
            wal,
            peeked: false,
            changes: None,
        });
    }
    Ok(Ok(sources))
}

/// Why calling these functions (by name, as the query calls them) keeps the table from being
/// refreshed incrementally: a volatile function, or one of the clock, changes its result with
/// no change in the sources; a function of the user's may read anything.
pub async fn function_reason(tx: &Transaction<'_>, view: &str, called: &[String]) -> Result<Option<String>, tokio_postgres::Error> {
    // Functions outside pg_catalog are recorded as dependencies of the view.
    let user: Option<String> = tx
        .query_opt(
            "SELECT p.oid::regprocedure::text
               FROM pg_depend d JOIN pg_rewrite rw ON rw.oid = d.objid JOIN pg_proc p ON p.oid = d.refobjid
              WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_proc'::regclass
                AND rw.ev_class = format('dyngate.%I', $1::text)::regclass
              LIMIT 1",
            &[&view],
        )
        .await?
        .map(|r| r.get(0));
    if let Some(f) = user {
        return Ok(Some(format!(
            "it calls {f}, which may change its result without a change in the sources"
        )));
    }
    let volatile: Option<String> = tx
        .query_opt(
            "SELECT proname::text FROM pg_proc
              WHERE proname = ANY($1) AND (provolatile = 'v' OR proname = ANY($2))
              LIMIT 1",
            &[&called, &CLOCK_FUNCTIONS],
        )
        .await?
        .map(|r| r.get(0));
    Ok(volatile.map(|f| format!("it calls {f}(), whose result changes without a change in the sources")))
}

/// Stable functions of the clock and the session (the volatile ones are found by volatility).
const CLOCK_FUNCTIONS: &[&str] = &[
    "now",
    "transaction_timestamp",
    "statement_timestamp",
    "current_setting",
    "pg_backend_pid",
];

/// Locks `source` against writers (not readers) until the caller's transaction ends.
pub async fn lock(tx: &Transaction<'_>, source: &SourceTable) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", source.quoted))
        .await
}

/// Captures the changes of `source`'s `columns` (adding to what is captured already), under
/// [`lock`], so that the snapshot a first fill read and the start of the log agree. `reader`
/// (the dynamic table's owner) may read the log. A new capture uses `method` (the WAL only when
/// its slot is there: collect::ensure_slot runs before the statement's transaction; else
/// triggers); an existing one keeps its own. A source never analyzed is analyzed: the cost
/// guard weighs changes against its statistics.
pub async fn install(tx: &Transaction<'_>, source: &SourceTable, reader: &str, method: Method) -> Result<(), tokio_postgres::Error> {
    lock(tx, source).await?;
    let unknown: bool = tx
        .query_one("SELECT reltuples < 0 FROM pg_class WHERE oid = $1", &[&source.oid])
        .await?
        .get(0);
    if unknown {
        tx.batch_execute(&format!("ANALYZE {}", source.quoted)).await?;
    }
    let log = log_table(source.oid);
    let qlog = log_relation(source.oid);
    let existing: Option<Vec<i16>> = tx
        .query_opt("SELECT attnums FROM dyngate.change_capture WHERE source = $1", &[&source.oid])
        .await?
        .map(|r| r.get(0));
    let mut attnums = existing.clone().unwrap_or_default();
    let added: Vec<i16> = source.columns.iter().map(|(n, _)| *n).filter(|n| !attnums.contains(n)).collect();
    attnums.extend(&added);
    let types: Vec<String> = tx
        .query(
            "SELECT format('%I %s', 'a' || a.attnum, format_type(a.atttypid, a.atttypmod))
               FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum = ANY($2) ORDER BY array_position($2, a.attnum)",
            &[&source.oid, &added],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match existing {
        None => {
            // The slot is not dropped while this transaction runs (collect::SLOT_USE_LOCK). A
            // generated column is not in the WAL's messages (pgoutput leaves them out): a source
            // whose generated columns are read is captured by triggers.
            let wal = method == Method::Wal
                && tx
                    .query_one(
                        "SELECT pg_advisory_xact_lock_shared($1, $2)::text,
                                EXISTS (SELECT 1 FROM dyngate.wal_capture w JOIN pg_catalog.pg_replication_slots s ON s.slot_name = w.slot)
                                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                                 WHERE a.attrelid = $3 AND a.attnum = ANY ($4) AND a.attgenerated <> '')",
                        &[&collect::SLOT_USE_LOCK.0, &collect::SLOT_USE_LOCK.1, &source.oid, &attnums],
                    )
                    .await?
                    .get::<_, bool>(1);
            let extra: String = types.iter().map(|t| format!(", {t}")).collect();
            tx.batch_execute(&format!(
                "CREATE TABLE {qlog} ({xid} xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(), {sign} smallint NOT NULL{extra});
                 COMMENT ON TABLE {qlog} IS {comment};",
                xid = quote_ident(XID),
                sign = quote_ident(SIGN),
                comment = quote_literal(&format!("dyngate: changes to {} for incremental refreshes", source.quoted)),
            ))
            .await?;
            if wal {
                // Its UPDATEs and DELETEs must carry the old row whole; what its identity was is
                // put back when the capture goes.
                tx.execute(
                    "INSERT INTO dyngate.change_capture (source, log_table, attnums, names, method, since, former_replica_identity, former_replica_index)
                     SELECT $1, $2, $3, '{}', 'wal', pg_catalog.pg_current_snapshot(), c.relreplident,
                            (SELECT format('%I', i.relname) FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                              WHERE x.indrelid = c.oid AND x.indisreplident)
                       FROM pg_catalog.pg_class c WHERE c.oid = $1",
                    &[&source.oid, &log, &attnums],
                )
                .await?;
                tx.batch_execute(&format!(
                    "ALTER TABLE {src} REPLICA IDENTITY FULL; ALTER PUBLICATION {publication} ADD TABLE ONLY {src};",
                    src = source.quoted,
                    publication = quote_ident(collect::PUBLICATION),
                ))
                .await?;
            } else {
                tx.execute(
                    "INSERT INTO dyngate.change_capture (source, log_table, attnums, names) VALUES ($1, $2, $3, '{}')",
                    &[&source.oid, &log, &attnums],
                )
                .await?;
                tx.execute("SELECT dyngate.capture_functions($1)", &[&source.oid]).await?;
                tx.batch_execute(&triggers_sql(source)).await?;
            }
        }
        Some(_) if !added.is_empty() => {
            let adds: Vec<String> = types.iter().map(|t| format!("ADD COLUMN {t}")).collect();
            tx.batch_execute(&format!("ALTER TABLE {qlog} {}", adds.join(", "))).await?;
            tx.execute(
                "UPDATE dyngate.change_capture SET attnums = $2 WHERE source = $1",
                &[&source.oid, &attnums],
            )
            .await?;
            tx.execute("SELECT dyngate.capture_functions($1)", &[&source.oid]).await?;
        }
        Some(_) => {}
    }
    // The reader reads the log. GRANT rewrites the log's catalog row and takes no lock of its
    // own: a refresh truncating the drained log (discard_applied) rewrites the same row, and
    // the second update of it would fail with "tuple concurrently updated". So the grant is made
    // only when missing (an owner's right, or a grant of its own: not a superuser's, which
    // may be taken away), under a lock that waits for TRUNCATE (and ANALYZE) of the log.
    let granted: bool = tx
        .query_one(
            "SELECT c.relowner = r.oid OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a
                                                   WHERE a.grantee = r.oid AND a.privilege_type = 'SELECT')
               FROM pg_catalog.pg_class c, pg_catalog.pg_roles r
              WHERE c.oid = $2::text::regclass AND r.rolname = $1",
            &[&reader, &qlog],
        )
        .await?
        .get(0);
    if !granted {
        tx.batch_execute(&format!(
            "LOCK TABLE {qlog} IN SHARE UPDATE EXCLUSIVE MODE; GRANT SELECT ON {qlog} TO {}",
            quote_ident(reader)
        ))
        .await?;
    }
    Ok(())
}

/// The REPLICA IDENTITY clause that puts back a source's identity as `pg_class.relreplident`
/// recorded it (`d`, `n`, `f`, or `i` with its index, already quoted).
fn replica_identity(relreplident: Option<&str>, index: Option<&str>) -> String {
    match (relreplident, index) {
        (Some("n"), _) => "NOTHING".into(),
        (Some("i"), Some(index)) => format!("USING INDEX {index}"),
        (Some("f"), _) => "FULL".into(),
        _ => "DEFAULT".into(),
    }
}

/// The capture triggers of `source`, calling the functions `dyngate.capture_functions` writes.
pub fn triggers_sql(source: &SourceTable) -> String {
    let oid = source.oid;
    let trigger = |op: &str, event: &str, referencing: &str| {
        let name = quote_ident(&format!("dyngate_capture_{op}"));
        format!(
            "DROP TRIGGER IF EXISTS {name} ON {src};
             CREATE TRIGGER {name} AFTER {event} ON {src} {referencing} FOR EACH STATEMENT
               EXECUTE FUNCTION dyngate.{f}();",
            src = source.quoted,
            f = quote_ident(&format!("capture_{op}_{oid}")),
        )
    };
    [
        trigger("insert", "INSERT", "REFERENCING NEW TABLE AS dyngate_new"),
        trigger("delete", "DELETE", "REFERENCING OLD TABLE AS dyngate_old"),
        trigger("update", "UPDATE", "REFERENCING OLD TABLE AS dyngate_old NEW TABLE AS dyngate_new"),
        trigger("truncate", "TRUNCATE", ""),
    ]
    .join("\n")
}

/// Removes the capture of every source that no incremental dynamic table reads any more (after
/// a DROP, or a table no longer refreshed incrementally).
pub async fn remove_unused(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    let unused = tx
        .query(
            "SELECT cc.source, cc.log_table, format('%I.%I', n.nspname, c.relname), cc.method,
                    cc.former_replica_identity::text, cc.former_replica_index
               FROM dyngate.change_capture cc
               LEFT JOIN pg_class c ON c.oid = cc.source
               LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE NOT EXISTS (
                    SELECT 1 FROM dyngate.dynamic_table t
                      JOIN pg_rewrite rw ON rw.ev_class = to_regclass(format('dyngate.%I', t.query_view))
                      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                     WHERE t.refresh_action = 'INCREMENTAL' AND d.refclassid = 'pg_class'::regclass AND d.refobjid = cc.source)",
            &[],
        )
        .await?;
    for r in unused {
        let (oid, log, quoted): (u32, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
        let (method, identity, index): (String, Option<String>, Option<String>) = (r.get(3), r.get(4), r.get(5));
        let mut sql = String::new();
        if let (Some(src), "wal") = (&quoted, method.as_str()) {
            sql.push_str(&format!(
                "ALTER PUBLICATION {} DROP TABLE ONLY {src};",
                quote_ident(collect::PUBLICATION)
            ));
            sql.push_str(&format!(
                "ALTER TABLE {src} REPLICA IDENTITY {};",
                replica_identity(identity.as_deref(), index.as_deref())
            ));
        }
        if let (Some(src), "trigger") = (quoted, method.as_str()) {
            for op in ["insert", "delete", "update", "truncate"] {
                sql.push_str(&format!(
                    "DROP TRIGGER IF EXISTS {} ON {src};",
                    quote_ident(&format!("dyngate_capture_{op}"))
                ));
            }
        }
        for op in ["insert", "delete", "update", "truncate"] {
            sql.push_str(&format!(
                "DROP FUNCTION IF EXISTS dyngate.{}();",
                quote_ident(&format!("capture_{op}_{oid}"))
            ));
        }
        sql.push_str(&format!("DROP TABLE IF EXISTS dyngate.{};", quote_ident(&log)));
        tx.batch_execute(&sql).await?;
        tx.execute("DELETE FROM dyngate.change_capture WHERE source = $1", &[&oid]).await?;
        tx.execute("DELETE FROM dyngate.truncation WHERE source = $1", &[&oid]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn former_replica_identities() {
        let cases = [
            (Some("d"), None, "DEFAULT"),
            (Some("n"), None, "NOTHING"),
            (Some("f"), None, "FULL"),
            (Some("i"), Some("\"Orders_pkey\""), "USING INDEX \"Orders_pkey\""),
            // An index gone since: the default (the primary key, if any).
            (Some("i"), None, "DEFAULT"),
            (None, None, "DEFAULT"),
        ];
        for (ident, index, want) in cases {
            assert_eq!(replica_identity(ident, index), want, "{ident:?} {index:?}");
        }
    }

    #[test]
    fn triggers_are_statement_level_with_transition_tables() {
        let s = SourceTable {
            oid: 42,
            schema: "public".into(),
            name: "Orders".into(),
            quoted: "public.\"Orders\"".into(),
            columns: vec![(1, "id".into()), (3, "Amount".into())],
            not_null: Vec::new(),
            fixed_scale: Vec::new(),
            wal: false,
            peeked: false,
            changes: None,
        };
        let sql = triggers_sql(&s);
        assert!(sql.contains("CREATE TRIGGER \"dyngate_capture_update\" AFTER UPDATE ON public.\"Orders\" REFERENCING OLD TABLE AS dyngate_old NEW TABLE AS dyngate_new FOR EACH STATEMENT"), "{sql}");
        assert!(sql.contains("EXECUTE FUNCTION dyngate.\"capture_truncate_42\"()"), "{sql}");
        assert_eq!(log_column(3), "a3");
    }
}
