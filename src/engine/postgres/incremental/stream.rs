//! The WAL capture's streamer: one task per gateway (the one holding the capture's advisory
//! lock streams; the others wait their turn) that reads the slot over a replication connection
//! (replication.rs) as PostgreSQL writes the WAL, and writes what it reads into the logs in
//! batches, one transaction each (collect.rs has the shared parts, and the refresh's side).
//!
//! - Why streaming: a peek at a slot decodes from the slot's restart point again, which
//!   PostgreSQL moves only where it logged the running transactions (every 15 s or so); a
//!   refresh after a lot of WAL (a VACUUM, a bulk load) read all of it again, seconds for a
//!   handful of changes. Streaming decodes each part of the WAL once.
//! - A batch is written when a sync point arrives (a refresh is waiting: collect::sync), when
//!   [`BATCH_CHANGES`] changes are waiting, when the stream has been quiet for `QUIET` after
//!   changes (a burst is in the logs before its refresh comes), or every `--capture-interval`
//!   under a steady stream. It records the span
//!   of the WAL it covers in `dyngate.wal_batch` (catalog V7) and moves the recorded position;
//!   only then is the server told that the slot may move (a crash in between re-sends what the
//!   batch had, and the recorded position makes it skipped).
//! - Memory: complete transactions wait at most one interval; a transaction of more than
//!   [`TX_CHANGES`] changes is not kept: its tables count as truncated by it (their readers'
//!   next refresh is full, which the cost guard would choose for so many changes anyway).
//! - Idle, with nothing of its own pending, the streamer confirms the server's position from
//!   its keepalives, so a slot that sees no captured change does not hold back the WAL.
//! - When no source is captured from the WAL any more, the stream ends and the slot and the
//!   publication are dropped.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::Client;

use crate::backend::ServicePool;
use crate::engine::postgres::incremental::collect::{self, SYNC_PREFIX};
use crate::engine::postgres::incremental::replication::{Connection, Event, ReplicationError};
use crate::engine::postgres::incremental::wal::{self, Lsn, Message, RelationInfo, WalError, format_lsn};

/// Changes of one transaction kept at most (about 100 bytes each); see the module's doc.
pub const TX_CHANGES: usize = 500_000;

/// Changes of complete transactions that make a batch be written before the interval is up.
pub const BATCH_CHANGES: usize = 100_000;

/// A status update at least this often (PostgreSQL's wal_sender_timeout is 60 s by default).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// How long the stream must be quiet for the changes received to be written before the interval
/// is up.
const QUIET: Duration = Duration::from_millis(20);

/// How often an idle stream checks that sources are still captured from the WAL.
const USE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Wal(#[from] WalError),
}

/// What the stream delivered and the logs do not have yet, fed one pgoutput message at a time.
/// Pure.
#[derive(Debug, Default)]
pub struct Buffer {
    /// Whole transactions (Begin to Commit, with the Relation messages sent inside them), in
    /// commit order.
    ready: Vec<Bytes>,
    ready_changes: usize,
    /// The transaction being received.
    open: Vec<Bytes>,
    open_changes: usize,
    /// Set once the open transaction outgrew [`TX_CHANGES`]: the tables it changed.
    oversized: Option<Vec<u32>>,
    open_sync: bool,
    /// A sync point is among the ready transactions.
    sync: bool,
}

impl Buffer {
    /// Takes one message of the stream.
    pub fn feed(&mut self, data: Bytes) -> Result<(), WalError> {
        match data.first() {
            Some(b'B') => {
                self.open.clear();
                self.open.push(data);
                self.open_changes = 0;
                self.oversized = None;
                self.open_sync = false;
            }
            Some(b'C') => {
                if let Some(relids) = self.oversized.take() {
                    self.open.push(truncate_message(&relids));
                }
                self.open.push(data);
                self.ready_changes += self.open_changes;
                self.ready.append(&mut self.open);
                self.open_changes = 0;
                self.sync |= self.open_sync;
            }
            // pgoutput sends a table's Relation message inside the first transaction changing
            // it since the stream started (or since the table changed).
            Some(b'R') if self.open.is_empty() => self.ready.push(data),
            Some(b'R') => self.open.push(data),
            Some(b'M') => {
                if matches!(wal::parse(&data)?, Message::Logical { prefix } if prefix == SYNC_PREFIX) {
                    self.open_sync = true;
                }
            }
            Some(b'I' | b'U' | b'D' | b'T') => {
                self.open_changes += 1;
                if let Some(relids) = &mut self.oversized {
                    add_relids(relids, &data)?;
                } else if self.open_changes > TX_CHANGES {
                    let mut relids = Vec::new();
                    for m in self.open.iter().filter(|m| !matches!(m.first(), Some(b'B' | b'R'))) {
                        add_relids(&mut relids, m)?;
                    }
                    add_relids(&mut relids, &data)?;
                    self.open.retain(|m| matches!(m.first(), Some(b'B' | b'R')));
                    self.oversized = Some(relids);
                } else {
                    self.open.push(data);
                }
            }
            // Origin and Type messages.
            _ => {}
        }
        Ok(())
    }

    /// Nothing received that the logs lack.
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.open.is_empty()
    }

    /// Whether a batch is due now (a sync point, or many changes).
    pub fn due(&self) -> bool {
        self.sync || self.ready_changes >= BATCH_CHANGES
    }

    /// Takes the whole transactions received.
    pub fn take(&mut self) -> Vec<Bytes> {
        self.ready_changes = 0;
        self.sync = false;
        std::mem::take(&mut self.ready)
    }
}

/// The tables a change message names, added to `relids` (once each).
fn add_relids(relids: &mut Vec<u32>, data: &[u8]) -> Result<(), WalError> {
    let named = match wal::parse(data)? {
        Message::Insert { relid, .. } | Message::Update { relid, .. } | Message::Delete { relid, .. } => vec![relid],
        Message::Truncate { relids } => relids,
        _ => Vec::new(),
    };
    for r in named {
        if !relids.contains(&r) {
            relids.push(r);
        }
    }
    Ok(())
}

/// A pgoutput Truncate message naming `relids`.
fn truncate_message(relids: &[u32]) -> Bytes {
    let mut b = BytesMut::with_capacity(6 + 4 * relids.len());
    b.put_u8(b'T');
    b.put_u32(relids.len() as u32);
    b.put_u8(0);
    for r in relids {
        b.put_u32(*r);
    }
    b.freeze()
}

/// How long the streamer rests while no slot is recorded (it is woken when one is made here:
/// [`wake`]).
const NO_SLOT_PAUSE: Duration = Duration::from_secs(10);

fn waker() -> &'static tokio::sync::Notify {
    static WAKER: OnceLock<tokio::sync::Notify> = OnceLock::new();
    WAKER.get_or_init(tokio::sync::Notify::new)
}

/// Wakes this process's streamer: a slot was just made.
pub fn wake() {
    waker().notify_one();
}

/// Streams while this gateway may, until `stop`: see the module's doc. A failed stream is
/// started again after a pause.
pub async fn run(pool: ServicePool, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let pause = match stream_once(&pool, interval, &mut stop).await {
            Ok(Rest::NoSlot) => NO_SLOT_PAUSE,
            Ok(Rest::Short) => interval.min(Duration::from_secs(1)),
            Err(e) => {
                tracing::warn!(error = %e, "streaming changes from the WAL; starting again");
                Duration::from_secs(2)
            }
        };
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = waker().notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// How long the streamer rests after a stream (or none).
enum Rest {
    /// No slot is recorded: nothing is captured from the WAL.
    NoSlot,
    /// A stream ended, or another gateway streams.
    Short,
}

/// One stream, if this gateway gets the capture's lock and there is a slot to read.
async fn stream_once(pool: &ServicePool, interval: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<Rest, StreamError> {
    let mut c = pool.get().await?;
    // The lock is the session's: the connection is closed, not pooled, if anything goes wrong.
    c.discard_on_drop(true);
    if !collect::try_lock_capture(&c).await? {
        // Another gateway streams.
        c.discard_on_drop(false);
        return Ok(Rest::Short);
    }
    let streamed = stream_locked(&c, pool, interval, stop).await;
    if collect::unlock_capture(&c).await.is_ok() {
        c.discard_on_drop(false);
    }
    streamed
}

async fn stream_locked(
    c: &Client,
    pool: &ServicePool,
    interval: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Rest, StreamError> {
    if collect::release_if_unused(c).await? {
        tracing::info!("no source is captured from the WAL any more: its slot is dropped");
        return Ok(Rest::NoSlot);
    }
    let Some((slot, publication, position)) = collect::recorded(c, false).await? else {
        return Ok(Rest::NoSlot);
    };
    let mut r = Connection::connect(&pool.backend().service, "dyngate WAL capture").await?;
    r.start(&slot, position, &publication).await?;
    tracing::info!(slot, from = %format_lsn(position), "streaming changes from the WAL");
    // Refreshes of this gateway wait on it (collect::sync); cleared when the stream ends.
    let _streaming = Streaming::new(position);
    let mut buffer = Buffer::default();
    let mut relations: HashMap<u32, RelationInfo> = HashMap::new();
    let mut confirmed = position;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = Instant::now();
    let mut last_use_check = Instant::now();
    // When the stream falls quiet with changes received, they are written (a burst of writes is
    // in the logs by the time its refresh comes); under a steady stream, every interval.
    let mut quiet = tokio::time::Instant::now();
    let mut last_write = tokio::time::Instant::now();
    loop {
        let mut write = false;
        tokio::select! {
            event = r.next() => match event? {
                Event::Data { data, .. } => {
                    buffer.feed(data)?;
                    write = buffer.due();
                    // At most one such batch every 5 QUIET (a slow steady stream is no burst).
                    quiet = (tokio::time::Instant::now() + QUIET).max(last_write + 5 * QUIET);
                }
                Event::Keepalive { end, reply } => {
                    // Everything the server sent before `end` is in the logs.
                    if buffer.is_idle() && end > confirmed {
                        confirmed = end;
                    }
                    if reply {
                        r.confirm(confirmed).await?;
                        last_status = Instant::now();
                    }
                }
            },
            _ = tokio::time::sleep_until(quiet), if !buffer.ready.is_empty() => write = true,
            _ = tick.tick() => {
                write = !buffer.ready.is_empty();
                if buffer.is_idle() && last_use_check.elapsed() >= USE_CHECK_EVERY {
                    last_use_check = Instant::now();
                    if !collect::in_use(c).await? {
                        // Ended here; the next round drops the slot once the server let it go.
                        return Ok(Rest::Short);
                    }
                }
            }
            _ = stop.changed() => return Ok(Rest::Short),
        }
        if write {
            last_write = tokio::time::Instant::now();
            let messages = buffer.take();
            // A failure ends the stream: the next one is sent the batch's transactions again.
            if let Some(end) = write_batch(c, &messages, &mut relations).await? {
                collect::streamed().send_replace(Some(end));
                confirmed = confirmed.max(end);
                r.confirm(confirmed).await?;
                last_status = Instant::now();
            }
        }
        if last_status.elapsed() >= STATUS_EVERY {
            r.confirm(confirmed).await?;
            last_status = Instant::now();
        }
    }
}

/// Publishes the position of a stream of this process while it lives (collect::streamed).
struct Streaming;

impl Streaming {
    fn new(position: Lsn) -> Streaming {
        collect::streamed().send_replace(Some(position));
        Streaming
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        collect::streamed().send_replace(None);
    }
}

/// Writes the changes of `messages` (whole transactions) into the logs in one transaction,
/// records the batch, and moves the recorded position: where it moved to, if it did.
async fn write_batch(c: &Client, messages: &[Bytes], relations: &mut HashMap<u32, RelationInfo>) -> Result<Option<Lsn>, StreamError> {
    c.batch_execute("BEGIN").await?;
    match collect::write_batch_in(c, messages, relations).await {
        Ok(end) => {
            c.batch_execute("COMMIT").await?;
            Ok(end)
        }
        Err(e) => {
            c.batch_execute("ROLLBACK").await.ok();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin() -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'B');
        b.put_u64(0x100);
        b.put_u64(0);
        b.put_u32(7);
        b.freeze()
    }

    fn commit() -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'C');
        b.put_u8(0);
        b.put_u64(0x100);
        b.put_u64(0x108);
        b.put_u64(0);
        b.freeze()
    }

    fn relation(oid: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(oid);
        b.put_slice(b"public\0t\0");
        b.put_u8(b'f');
        b.put_u16(1);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(23);
        b.put_u32(u32::MAX);
        b.freeze()
    }

    fn insert(oid: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(oid);
        b.put_u8(b'N');
        b.put_u16(1);
        b.put_u8(b't');
        b.put_u32(1);
        b.put_u8(b'1');
        b.freeze()
    }

    fn message(prefix: &str) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'M');
        b.put_u8(1);
        b.put_u64(0x104);
        b.put_slice(prefix.as_bytes());
        b.put_u8(0);
        b.put_u32(0);
        b.freeze()
    }

    fn kinds(messages: &[Bytes]) -> String {
        messages.iter().map(|m| m[0] as char).collect()
    }

    #[test]
    fn whole_transactions_are_ready_in_order() {
        let mut b = Buffer::default();
        for m in [begin(), relation(1), insert(1), insert(1), commit(), begin(), insert(1)] {
            b.feed(m).unwrap();
        }
        assert!(!b.is_idle() && !b.due());
        assert_eq!(b.ready_changes, 2);
        assert_eq!(kinds(&b.take()), "BRIIC");
        // The open transaction stays.
        assert!(!b.is_idle());
        b.feed(commit()).unwrap();
        assert_eq!(kinds(&b.take()), "BIC");
        assert!(b.is_idle());
    }

    #[test]
    fn sync_points_make_a_batch_due_once_committed() {
        let mut b = Buffer::default();
        for m in [begin(), message("other"), commit()] {
            b.feed(m).unwrap();
        }
        assert!(!b.due());
        b.feed(begin()).unwrap();
        b.feed(message(SYNC_PREFIX)).unwrap();
        assert!(!b.due(), "not before its commit");
        b.feed(commit()).unwrap();
        assert!(b.due());
        // Messages are not kept: the sync point's transaction is an empty one.
        assert_eq!(kinds(&b.take()), "BCBC");
        assert!(!b.due());
    }

    #[test]
    fn oversized_transactions_become_truncations() {
        let mut b = Buffer::default();
        b.feed(begin()).unwrap();
        b.feed(relation(5)).unwrap();
        for _ in 0..TX_CHANGES {
            b.feed(insert(5)).unwrap();
        }
        b.feed(relation(6)).unwrap();
        b.feed(insert(6)).unwrap();
        assert!(b.oversized.is_some());
        b.feed(insert(5)).unwrap();
        b.feed(commit()).unwrap();
        let ready = b.take();
        assert_eq!(kinds(&ready), "BRRTC");
        assert_eq!(wal::parse(&ready[3]).unwrap(), Message::Truncate { relids: vec![5, 6] });
    }
}
