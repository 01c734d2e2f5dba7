//! Capture from the write-ahead log: the sources' changes read by logical decoding from a
//! replication slot (the `pgoutput` plug-in, restricted to a publication naming the sources), so
//! that writers do no work at all for dynamic tables (see capture.rs for the measurements).
//!
//! - One slot per catalog (`dyngate_<catalog id>`: slots belong to the whole cluster) and one
//!   publication (`dyngate_capture`) in the catalog's database, recorded in `dyngate.wal_capture`
//!   (catalog V5) with the position up to which the changes of committed transactions are in the
//!   log tables. A source captured this way is in the publication with REPLICA IDENTITY FULL (an
//!   UPDATE or DELETE then carries the old row whole), and its changes go to the same log tables
//!   as the triggers' (capture.rs), with their transaction's id.
//! - The streamer (stream.rs) reads the slot as the WAL is written and writes the changes into
//!   the logs in batches ([`write_batch_in`]), each recorded in `dyngate.wal_batch` (catalog V7)
//!   with the span of the WAL it covers. One gateway streams at a time (a session advisory lock).
//! - [`sync`] waits until every transaction committed before it is in the logs: it writes a sync
//!   point (a logical message) into the WAL, and the streamer writes a batch when the point
//!   reaches it. Refreshes sync before their transaction, so the logs are nearly complete.
//! - A refresh reads its sources and the logs as of one snapshot, but transactions may commit
//!   after the last batch and before that snapshot. So, inside its transaction, [`fetch_gap`]
//!   syncs again and copies, from another connection, the rows of the batches its snapshot does
//!   not see into temporary tables that the delta reads beside the logs (delta.rs). Those batches
//!   must follow on from the position the snapshot sees without a hole, else (batches pruned
//!   after 10 minutes, a slot made again) the refresh starts again ([`Peeked::Gap`]).
//! - Every log row is checked against the refresh's snapshot too (a transaction is decoded once
//!   its commit is in the WAL, a moment before it is visible).
//! - Changes of transactions the capture's first snapshot sees (`change_capture.since`) are in
//!   the first fill, and are skipped. A column renamed since a change is found by its place; a
//!   change that cannot be turned into log rows (columns added or dropped as well, a table whose
//!   identity is no longer FULL) is recorded as a truncation: its readers' next refresh is full.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::backend::ServicePool;
use crate::core::{quote_ident, quote_literal};
use crate::engine::postgres::incremental::capture::{SIGN, SourceTable, XID, log_column, log_relation};
use crate::engine::postgres::incremental::stream::StreamError;
use crate::engine::postgres::incremental::wal::{self, Lsn, Message, RelationInfo, format_lsn, full_xid, parse_lsn};

/// The publication naming the sources captured from the WAL.
pub const PUBLICATION: &str = "dyngate_capture";

/// The advisory lock the streaming gateway holds (a slot serves one reader at a time); slots
/// are made and dropped under it too.
const COLLECT_LOCK: (i32, i32) = (0x6477_616c, 1); // "dwal"

/// The prefix of the capture's sync points (logical messages; see [`sync`]).
pub const SYNC_PREFIX: &str = "dyngate";

/// How long [`sync`] waits for the streamer.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`sync`] reads the position when another gateway streams.
const SYNC_POLL: Duration = Duration::from_millis(2);

/// How long batches are remembered in `dyngate.wal_batch`.
const BATCH_KEEP: &str = "10 minutes";

/// Held shared by a statement that may start a capture from the WAL (from before
/// [`ensure_slot`] to its end) and by the transaction installing it (capture::install), taken
/// exclusively to drop an unused slot: a slot is never dropped under a capture being started.
pub const SLOT_USE_LOCK: (i32, i32) = (0x6477_616c, 2);

/// How sources are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Capture {
    /// From the WAL when PostgreSQL has `wal_level = logical` and the gateway's role may create
    /// replication slots; else triggers.
    Auto,
    /// Statement-level triggers on the sources.
    Triggers,
    /// Logical decoding of the WAL (needs `wal_level = logical`).
    Wal,
}

/// The method new captures use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Trigger,
    Wal,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Trigger => "trigger",
            Method::Wal => "wal",
        }
    }
}

/// Why the setting cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "--capture wal needs wal_level = logical, and PostgreSQL has wal_level = {0} (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
    )]
    WalLevel(String),
    #[error("--capture wal needs a role that may create replication slots (SUPERUSER or REPLICATION); {0} may not")]
    Privilege(String),
    #[error("--capture wal needs a replication connection to PostgreSQL: {0}")]
    Replication(crate::engine::postgres::incremental::replication::ReplicationError),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// What the setting comes to on this PostgreSQL.
pub async fn resolve(c: &impl GenericClient, setting: Capture) -> Result<Method, CaptureError> {
    if setting == Capture::Triggers {
        return Ok(Method::Trigger);
    }
    let row = c
        .query_one(
            "SELECT current_setting('wal_level'), r.rolsuper OR r.rolreplication, current_user::text
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let (level, may, user): (String, bool, String) = (row.get(0), row.get(1), row.get(2));
    match (setting, level == "logical", may) {
        (_, true, true) => Ok(Method::Wal),
        (Capture::Wal, false, _) => Err(CaptureError::WalLevel(level)),
        (Capture::Wal, true, false) => Err(CaptureError::Privilege(user)),
        _ => Ok(Method::Trigger),
    }
}

/// The slot of catalog `catalog_id` (a UUID).
pub fn slot_name(catalog_id: &str) -> String {
    format!("dyngate_{}", catalog_id.replace('-', "").to_lowercase())
}

/// Makes sure the slot and the publication exist, outside any transaction (creating a slot
/// waits for the transactions running at that moment to end): before a statement that may
/// start capturing. A slot lost since it was recorded (dropped by hand, a restored backup) is
/// made again, and every source captured from the WAL is marked truncated: what happened in
/// between is unknown, so its readers' next refresh is full. The caller holds [`SLOT_USE_LOCK`]
/// shared until its statement ends, so that the slot is not dropped as unused before the
/// statement starts its capture.
pub async fn ensure_slot(c: &Client, catalog_id: &str) -> Result<(), tokio_postgres::Error> {
    let slot = slot_name(catalog_id);
    let ready: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM dyngate.wal_capture w JOIN pg_catalog.pg_replication_slots s ON s.slot_name = w.slot
                             WHERE w.slot = $1 AND s.database = current_database())",
            &[&slot],
        )
        .await?
        .get(0);
    if ready {
        return Ok(());
    }
    c.execute("SELECT pg_advisory_lock($1, $2)", &[&COLLECT_LOCK.0, &COLLECT_LOCK.1])
        .await?;
    let made = make_slot(c, &slot).await;
    c.execute("SELECT pg_advisory_unlock($1, $2)", &[&COLLECT_LOCK.0, &COLLECT_LOCK.1])
        .await?;
    made
}

async fn make_slot(c: &Client, slot: &str) -> Result<(), tokio_postgres::Error> {
    // The publication first: pgoutput fails on changes made before its publication existed.
    c.batch_execute(&format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {pub}) THEN
             CREATE PUBLICATION {qpub} WITH (publish = 'insert, update, delete, truncate');
           END IF;
         END $$;",
        pub = quote_literal(PUBLICATION),
        qpub = quote_ident(PUBLICATION),
    ))
    .await?;
    let exists: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await?
        .get(0);
    if !exists {
        c.execute("SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
            .await?;
    }
    c.batch_execute(&format!(
        "BEGIN;
         INSERT INTO dyngate.truncation (source)
           SELECT source FROM dyngate.change_capture WHERE method = 'wal' AND EXISTS (SELECT 1 FROM dyngate.wal_capture);
         DELETE FROM dyngate.wal_capture;
         INSERT INTO dyngate.wal_capture (slot, publication, position)
           SELECT slot_name, {pub}, confirmed_flush_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = {qslot};
         COMMIT;",
        pub = quote_literal(PUBLICATION),
        qslot = quote_literal(slot),
    ))
    .await
}

/// The recorded slot, publication and position, as the caller's snapshot sees them.
pub async fn recorded(c: &impl GenericClient, lock: bool) -> Result<Option<(String, String, Lsn)>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT slot::text, publication::text, position::text FROM dyngate.wal_capture{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(c.query_opt(&sql, &[]).await?.map(|r| {
        let position: String = r.get(2);
        (r.get(0), r.get(1), parse_lsn(&position).unwrap_or(0))
    }))
}

/// A captured source as the decoder needs it: its log, and its captured columns by name.
struct Target {
    log: String,
    /// (attnum, current name, log column type, place among the live columns)
    columns: Vec<(i16, String, String, usize)>,
    /// The table's columns a Relation message would list now (neither dropped nor generated).
    live: usize,
    /// The snapshot its capture started with: the changes it sees are in the first fill.
    since: Option<Snapshot>,
}

/// The sources captured from the WAL (all of them, or those in `only`).
async fn targets(c: &impl GenericClient, only: Option<&[u32]>) -> Result<HashMap<u32, Target>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT cc.source, cc.log_table, u.n, a.attname::text, format_type(l.atttypid, l.atttypmod),
                    (SELECT count(*) FROM pg_catalog.pg_attribute p
                      WHERE p.attrelid = cc.source AND p.attnum > 0 AND p.attnum < u.n AND NOT p.attisdropped AND p.attgenerated = ''),
                    (SELECT count(*) FROM pg_catalog.pg_attribute p
                      WHERE p.attrelid = cc.source AND p.attnum > 0 AND NOT p.attisdropped AND p.attgenerated = ''),
                    cc.since::text
               FROM dyngate.change_capture cc
               CROSS JOIN LATERAL unnest(cc.attnums) AS u(n)
               LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = cc.source AND a.attnum = u.n AND NOT a.attisdropped
               JOIN pg_catalog.pg_attribute l ON l.attrelid = format('dyngate.%I', cc.log_table)::regclass AND l.attname = 'a' || u.n
              WHERE cc.method = 'wal' AND ($1::oid[] IS NULL OR cc.source = ANY($1))",
            &[&only.map(|o| o.to_vec())],
        )
        .await?;
    let mut map: HashMap<u32, Target> = HashMap::new();
    for r in rows {
        let (source, log, n, name, ty): (u32, String, i16, Option<String>, String) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let (place, live, since): (i64, i64, Option<String>) = (r.get(5), r.get(6), r.get(7));
        let t = map.entry(source).or_insert_with(|| Target {
            log,
            columns: Vec::new(),
            live: live as usize,
            since: since.as_deref().and_then(Snapshot::parse),
        });
        // A dropped column logs NULL, as the triggers do.
        t.columns.push((n, name.unwrap_or_default(), ty, place as usize));
    }
    Ok(map)
}

/// A decoded log row: the captured columns' values, the transaction's xid8, the sign.
type DecodedRow = (Vec<Option<String>>, u64, i16);

/// What decoding gave for the captured sources: log rows per source, and the sources truncated
/// (with the transaction's xid8).
#[derive(Default)]
struct Decoded {
    rows: HashMap<u32, Vec<DecodedRow>>,
    truncated: Vec<(u32, u64)>,
    /// The end of the last transaction read.
    end: Option<Lsn>,
}

/// Reads the messages (whole transactions, with the Relation messages sent among them) of
/// transactions that ended after `after`, for the sources in `targets`; `relations` holds the
/// tables' layouts as the stream described them so far; `reference` is a recent xid8 (to widen
/// 32-bit xids).
fn decode(
    messages: &[Bytes],
    after: Lsn,
    targets: &HashMap<u32, Target>,
    reference: u64,
    relations: &mut HashMap<u32, RelationInfo>,
) -> Result<Decoded, wal::WalError> {
    let mut out = Decoded::default();
    let mut tx: Vec<Message> = Vec::new();
    let mut xid = 0u32;
    for data in messages {
        let message = wal::parse(data)?;
        match message {
            Message::Begin { xid: x, .. } => {
                xid = x;
                tx.clear();
            }
            Message::Relation(r) => {
                relations.insert(r.oid, r);
            }
            Message::Commit { end_lsn, .. } => {
                out.end = Some(end_lsn);
                let full = full_xid(xid, reference);
                if end_lsn > after {
                    for m in tx.drain(..) {
                        apply_message(&mut out, relations, targets, &m, full);
                    }
                }
                tx.clear();
            }
            Message::Other(_) | Message::Logical { .. } => {}
            // A change comes inside its transaction's Begin and Commit.
            m => tx.push(m),
        }
    }
    Ok(out)
}

fn apply_message(out: &mut Decoded, relations: &HashMap<u32, RelationInfo>, targets: &HashMap<u32, Target>, m: &Message, xid: u64) {
    let relid = match m {
        Message::Insert { relid, .. } | Message::Update { relid, .. } | Message::Delete { relid, .. } => *relid,
        Message::Truncate { relids } => {
            out.truncated.extend(
                relids
                    .iter()
                    .filter(|r| targets.get(r).is_some_and(|t| !t.since.as_ref().is_some_and(|s| s.sees(xid))))
                    .map(|r| (*r, xid)),
            );
            return;
        }
        _ => return,
    };
    let Some(target) = targets.get(&relid) else { return };
    if target.since.as_ref().is_some_and(|s| s.sees(xid)) {
        // Made before the capture started: in the first fill.
        return;
    }
    let wanted: Vec<wal::Wanted<'_>> = target
        .columns
        .iter()
        .map(|(_, name, _, place)| wal::Wanted { name, place: *place })
        .collect();
    let rows = relations
        .get(&relid)
        .ok_or_else(|| wal::WalError("a change before its table's Relation message".into()))
        .and_then(|r| wal::log_rows(r, m, &wanted, target.live));
    match rows {
        Ok(rows) => out
            .rows
            .entry(relid)
            .or_default()
            .extend(rows.into_iter().map(|(values, sign)| (values, xid, sign))),
        Err(e) => {
            if !out.truncated.iter().any(|(r, x)| *r == relid && *x == xid) {
                tracing::warn!(source = relid, error = %e, "a change could not be logged; the readers' next refresh is full");
                out.truncated.push((relid, xid));
            }
        }
    }
}

/// An xid8 later than that of every transaction decoded so far (to widen their 32-bit xids):
/// the batch transaction's own, assigned here (it writes anyway). Each decoded transaction was
/// given its xid before it committed, so before this one's.
///
/// Not the snapshot's xmax: a transaction's commit is in the WAL, and so decoded, a moment
/// before it leaves the running transactions, and until then xmax need not be past it. A batch
/// that read xmax just then widened such an xid into the previous epoch (to 0 in a young
/// cluster), which the capture's first snapshot sees: the transaction's changes were dropped as
/// if the first fill had them. `writers_committing_during_wal_refreshes_are_applied_once` lost
/// one writer transaction in about 30 runs that way (on a busy machine).
async fn reference_xid(c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
    let x: i64 = c.query_one("SELECT pg_catalog.pg_current_xact_id()::text::int8", &[]).await?.get(0);
    Ok(x as u64)
}

/// Writes decoded rows into `table` (a log, or a peek table) with the target's column types.
async fn write_rows(c: &impl GenericClient, table: &str, target: &Target, rows: &[DecodedRow]) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let k = target.columns.len();
    let mut columns: Vec<String> = target.columns.iter().map(|(n, _, _, _)| quote_ident(&log_column(*n))).collect();
    columns.push(quote_ident(XID));
    columns.push(quote_ident(SIGN));
    let mut select: Vec<String> = target
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, _, ty, _))| format!("u.c{i}::{ty}"))
        .collect();
    select.push("u.x::pg_catalog.xid8".into());
    select.push("u.s".into());
    let arrays: Vec<String> = (0..k).map(|i| format!("${}::text[]", i + 1)).collect();
    let aliases: Vec<String> = (0..k).map(|i| format!("c{i}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT {} FROM unnest({}{}${}::text[], ${}::int2[]) AS u({}{}x, s)",
        columns.join(", "),
        select.join(", "),
        arrays.join(", "),
        if k > 0 { ", " } else { "" },
        k + 1,
        k + 2,
        aliases.join(", "),
        if k > 0 { ", " } else { "" },
    );
    let mut values: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); k];
    for (row, _, _) in rows {
        for (i, v) in row.iter().enumerate() {
            values[i].push(v.clone());
        }
    }
    let xids: Vec<String> = rows.iter().map(|(_, x, _)| x.to_string()).collect();
    let signs: Vec<i16> = rows.iter().map(|(_, _, s)| *s).collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    params.push(&xids);
    params.push(&signs);
    c.execute(&sql, &params).await?;
    Ok(())
}

/// Waits until every transaction that committed before the call is in the logs (see the
/// module's doc): writes a sync point, a logical message in a transaction of its own, committed
/// synchronously so that it is flushed (walsenders send only flushed WAL; a transaction
/// committed with `synchronous_commit = off` is visible before its commit is flushed), then
/// waits until the recorded position passes it. `Ok(false)` when no slot is recorded (nothing
/// is captured from the WAL). Outside any transaction.
pub async fn sync(c: &Client) -> Result<bool, SyncError> {
    let rows = c
        .simple_query(&format!(
            "BEGIN; SET LOCAL synchronous_commit = on;
             SELECT pg_catalog.pg_logical_emit_message(true, {prefix}, '')::text
              WHERE EXISTS (SELECT 1 FROM dyngate.wal_capture);
             COMMIT",
            prefix = quote_literal(SYNC_PREFIX)
        ))
        .await?;
    let point = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    let Some(point) = point else {
        return Ok(false);
    };
    let Some(point_lsn) = parse_lsn(&point) else {
        return Ok(false);
    };
    let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
    let mut streamed = streamed().subscribe();
    loop {
        let here = *streamed.borrow_and_update();
        if let Some(position) = here {
            if position >= point_lsn {
                return Ok(true);
            }
            // This gateway streams: woken when its next batch commits (or the stream ends).
            if tokio::time::timeout_at(deadline, streamed.changed()).await.is_err() {
                return Err(SyncError::Behind(SYNC_TIMEOUT.as_secs()));
            }
            continue;
        }
        // Another gateway streams: its position is read from the catalog. No record any more:
        // the slot is being made again, and its sources count as truncated.
        let passed: bool = c
            .query_one(
                "SELECT coalesce((SELECT position >= $1::text::pg_lsn FROM dyngate.wal_capture), true)",
                &[&point],
            )
            .await?
            .get(0);
        if passed {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SyncError::Behind(SYNC_TIMEOUT.as_secs()));
        }
        tokio::time::sleep(SYNC_POLL).await;
    }
}

/// The position this process's streamer recorded last (stream.rs); `None` while it does not
/// stream. [`sync`] waits on it instead of polling the catalog.
pub fn streamed() -> &'static tokio::sync::watch::Sender<Option<Lsn>> {
    static STREAMED: OnceLock<tokio::sync::watch::Sender<Option<Lsn>>> = OnceLock::new();
    STREAMED.get_or_init(|| tokio::sync::watch::channel(None).0)
}

/// Why [`sync`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the capture of changes from the WAL has not caught up within {0} s (see the gateway's log)")]
    Behind(u64),
}

/// Takes the capture's lock if it is free (the streamer's session).
pub async fn try_lock_capture(c: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(
        c.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&COLLECT_LOCK.0, &COLLECT_LOCK.1])
            .await?
            .get(0),
    )
}

/// Lets the capture's lock go.
pub async fn unlock_capture(c: &Client) -> Result<(), tokio_postgres::Error> {
    c.execute("SELECT pg_advisory_unlock($1, $2)", &[&COLLECT_LOCK.0, &COLLECT_LOCK.1])
        .await
        .map(drop)
}

/// Whether any source is captured from the WAL.
pub async fn in_use(c: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
    Ok(
        c.query_one("SELECT EXISTS (SELECT 1 FROM dyngate.change_capture WHERE method = 'wal')", &[])
            .await?
            .get(0),
    )
}

/// Inside the streamer's batch transaction: writes the changes of `messages` (whole
/// transactions) into the logs, records the batch, and moves the recorded position (see the
/// module's doc). Where the position moved to, if it did.
pub async fn write_batch_in(
    c: &Client,
    messages: &[Bytes],
    relations: &mut HashMap<u32, RelationInfo>,
) -> Result<Option<Lsn>, StreamError> {
    let Some((_, _, position)) = recorded(c, true).await? else {
        return Ok(None);
    };
    // A batch of sync points alone changes no log (its Relation messages, if any, are read).
    let changes = messages.iter().any(|m| matches!(m.first(), Some(b'I' | b'U' | b'D' | b'T')));
    let (reference, targets) = if changes {
        // Read after the changes were received: a source whose changes were decoded was
        // published, so its capture had committed; and it is visible, for the capture locked
        // writers out (capture::lock) until after it was.
        (reference_xid(c).await?, targets(c, None).await?)
    } else {
        (0, HashMap::new())
    };
    let decoded = decode(messages, position, &targets, reference, relations)?;
    tracing::debug!(
        messages = messages.len(),
        position = %format_lsn(position),
        end = ?decoded.end.map(format_lsn),
        "writing changes from the WAL"
    );
    for (source, rows) in &decoded.rows {
        // Decoded rows are only of the targets.
        let Some(target) = targets.get(source) else { continue };
        write_rows(c, &format!("dyngate.{}", quote_ident(&target.log)), target, rows).await?;
    }
    for (source, xid) in &decoded.truncated {
        c.execute(
            "INSERT INTO dyngate.truncation (source, xid) VALUES ($1, $2::text::xid8)",
            &[source, &xid.to_string()],
        )
        .await?;
    }
    // Rows every reader applied already (a refresh copies the rows of batches its snapshot does
    // not see) go with the next refresh's discard_applied: discarding here would scan each log
    // with every batch.
    let Some(end) = decoded.end.filter(|e| *e > position) else {
        return Ok(None);
    };
    c.batch_execute(&format!(
        "INSERT INTO dyngate.wal_batch (after, upto) VALUES ({after}, {end});
         DELETE FROM dyngate.wal_batch WHERE written < now() - interval {keep};
         UPDATE dyngate.wal_capture SET position = {end};",
        after = quote_literal(&format_lsn(position)),
        end = quote_literal(&format_lsn(end)),
        keep = quote_literal(BATCH_KEEP),
    ))
    .await?;
    Ok(Some(end))
}

/// A `pg_snapshot` (`xmin:xmax:xip,...`): which transactions it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    xmin: u64,
    xmax: u64,
    running: Vec<u64>,
}

impl Snapshot {
    /// Reads a `pg_snapshot` printed as text.
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list.split(',').map(|x| x.parse().ok()).collect::<Option<_>>()?,
        };
        parts.next().is_none().then_some(Snapshot { xmin, xmax, running })
    }

    /// Whether a committed transaction `xid` is visible in it (pg_visible_in_snapshot).
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.running.contains(&xid))
    }
}

/// What [`fetch_gap`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peeked {
    /// The peek tables are filled; whether a source was truncated after the position seen.
    Ready { truncated: bool },
    /// The batches the snapshot does not see leave a hole: start the transaction again.
    Gap,
}

/// The temporary table holding what [`fetch_gap`] copied for source `oid` (unquoted, in
/// `pg_temp`): dropped at commit.
pub fn peek_table(oid: u32) -> String {
    format!("dyngate_peek_{oid}")
}

/// In a refresh's transaction (its snapshot taken): copies the logged changes this snapshot
/// cannot see (of batches that committed after it) for the sources captured from the WAL into a
/// temporary table per source, readable by `reader`, after a [`sync`] (see the module's doc);
/// on a connection of `pool`'s. Marks the sources it copied rows for (`peeked`), and says whether
/// one was truncated by a transaction this snapshot sees and `applied` does not.
pub async fn fetch_gap(
    tx: &Transaction<'_>,
    pool: &ServicePool,
    sources: &mut [SourceTable],
    reader: &str,
    applied: &str,
) -> Result<Peeked, SyncError> {
    // Sources captured by triggers only (the default): nothing to copy, and the catalog query
    // below (half a millisecond of planning) is not run.
    if !sources.iter().any(|s| s.wal) {
        return Ok(Peeked::Ready { truncated: false });
    }
    let oids: Vec<u32> = sources.iter().filter(|s| s.wal).map(|s| s.oid).collect();
    let targets = targets(tx, Some(&oids)).await?;
    if targets.is_empty() {
        return Ok(Peeked::Ready { truncated: false });
    }
    let Some((_, _, position)) = recorded(tx, false).await? else {
        // Captured from the WAL, but no slot recorded (it is being made again): full.
        return Ok(Peeked::Ready { truncated: true });
    };
    let snapshot: String = tx.query_one("SELECT pg_catalog.pg_current_snapshot()::text", &[]).await?.get(0);
    let (Some(seen), Some(applied)) = (Snapshot::parse(&snapshot), Snapshot::parse(applied)) else {
        return Ok(Peeked::Ready { truncated: true });
    };
    let d = pool.get().await?;
    if !sync(&d).await? {
        return Ok(Peeked::Ready { truncated: true });
    }
    let batches = d
        .query(
            "SELECT batch::text, after::text, upto::text FROM dyngate.wal_batch
              WHERE NOT pg_catalog.pg_visible_in_snapshot(batch, $1::text::pg_catalog.pg_snapshot)
              ORDER BY after",
            &[&snapshot],
        )
        .await?;
    let mut at = position;
    let mut xids: Vec<String> = Vec::with_capacity(batches.len());
    for b in &batches {
        let (batch, after, upto): (String, String, String) = (b.get(0), b.get(1), b.get(2));
        let (Ok(batch), Some(after), Some(upto)) = (batch.parse::<u64>(), parse_lsn(&after), parse_lsn(&upto)) else {
            return Ok(Peeked::Gap);
        };
        if after != at {
            return Ok(Peeked::Gap);
        }
        at = upto;
        // Rows carry the 32-bit id of the transaction that wrote them (xmin).
        xids.push((batch & 0xFFFF_FFFF).to_string());
    }
    // What this snapshot sees and the table has not applied.
    let wanted = |xid: u64| seen.sees(xid) && !applied.sees(xid);
    for s in sources.iter_mut() {
        let Some(target) = targets.get(&s.oid) else { continue };
        let mut rows: Vec<DecodedRow> = Vec::new();
        if !xids.is_empty() {
            let values: Vec<String> = target
                .columns
                .iter()
                .map(|(n, _, _, _)| format!("{}::text", quote_ident(&log_column(*n))))
                .collect();
            let sql = format!(
                "SELECT ARRAY[{}]::text[], {xid}::text, {sign} FROM dyngate.{log} WHERE xmin::text = ANY($1)",
                values.join(", "),
                xid = quote_ident(XID),
                sign = quote_ident(SIGN),
                log = quote_ident(&target.log),
            );
            for r in d.query(&sql, &[&xids]).await? {
                let (values, xid, sign): (Vec<Option<String>>, String, i16) = (r.get(0), r.get(1), r.get(2));
                let xid = xid.parse().unwrap_or(0);
                if wanted(xid) {
                    rows.push((values, xid, sign));
                }
            }
        }
        // Without rows of its own, the log alone is read.
        if rows.is_empty() {
            continue;
        }
        tracing::debug!(
            source = s.oid,
            rows = rows.len(),
            "copying the changes of batches the refresh's snapshot does not see"
        );
        s.peeked = true;
        let table = format!("pg_temp.{}", quote_ident(&peek_table(s.oid)));
        tx.batch_execute(&format!(
            "CREATE TEMPORARY TABLE {table} (LIKE dyngate.{log}) ON COMMIT DROP; GRANT SELECT ON {table} TO {reader};",
            log = quote_ident(&target.log),
            reader = quote_ident(reader),
        ))
        .await?;
        write_rows(tx, &table, target, &rows).await?;
    }
    let mut truncated = false;
    if !xids.is_empty() {
        for r in d
            .query(
                "SELECT xid::text FROM dyngate.truncation WHERE xmin::text = ANY($1) AND source = ANY($2)",
                &[&xids, &oids],
            )
            .await?
        {
            truncated |= r.get::<_, String>(0).parse().is_ok_and(wanted);
        }
    }
    Ok(Peeked::Ready { truncated })
}

/// Drops the slot and the publication when no source is captured from the WAL any more (a slot
/// nobody reads keeps the WAL from being recycled): whether it did. Outside any transaction, by
/// the holder of the capture's lock, with no stream open.
pub async fn release_if_unused(c: &Client) -> Result<bool, tokio_postgres::Error> {
    let free: bool = c
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&SLOT_USE_LOCK.0, &SLOT_USE_LOCK.1])
        .await?
        .get(0);
    if !free {
        // A capture is being started.
        return Ok(false);
    }
    let released = release_locked(c).await;
    c.execute("SELECT pg_advisory_unlock($1, $2)", &[&SLOT_USE_LOCK.0, &SLOT_USE_LOCK.1])
        .await?;
    released
}

async fn release_locked(c: &Client) -> Result<bool, tokio_postgres::Error> {
    let Some((slot, _, _)) = recorded(c, false).await? else {
        return Ok(false);
    };
    if in_use(c).await? {
        return Ok(false);
    }
    // The slot first: a slot whose publication is gone cannot decode. It fails while the
    // server still has the last stream's connection; the next round tries again.
    c.execute(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await?;
    c.batch_execute(&format!(
        "DELETE FROM dyngate.wal_capture; DELETE FROM dyngate.wal_batch; DROP PUBLICATION IF EXISTS {}",
        quote_ident(PUBLICATION)
    ))
    .await?;
    Ok(true)
}

/// The log of a source captured from the WAL as a refresh reads it: the logged rows and those
/// copied into this transaction (fetch_gap).
pub fn log_and_peeked(oid: u32) -> String {
    format!(
        "(SELECT * FROM {} UNION ALL SELECT * FROM pg_temp.{})",
        log_relation(oid),
        quote_ident(&peek_table(oid))
    )
}

impl From<SyncError> for crate::core::Error {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Postgres(e) => e.into(),
            behind @ SyncError::Behind(_) => crate::core::Error::WrongState(behind.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_see_what_committed_before_them() {
        let s = Snapshot::parse("100:105:100,103").unwrap();
        let cases = [
            (99, true),
            (100, false),
            (101, true),
            (103, false),
            (104, true),
            (105, false),
            (200, false),
        ];
        for (xid, seen) in cases {
            assert_eq!(s.sees(xid), seen, "{xid}");
        }
        assert!(Snapshot::parse("7:7:").unwrap().sees(6));
        for bad in ["", "1:2", "1:2:x", "1:2:3:4", "a:2:"] {
            assert_eq!(Snapshot::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn slot_names_follow_the_catalog() {
        assert_eq!(
            slot_name("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
            "dyngate_6f9619ff8b86d011b42d00c04fc964ff"
        );
    }
}
