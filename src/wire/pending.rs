//! Accounting of the ReadyForQuery replies a backend still owes a session: a pure state machine fed
//! by both relay directions, so the gateway knows when the backend is idle (to answer its own
//! statements in order, to close sessions on shutdown, to know whether a vanished client left a
//! statement running).
//!
//! Each Query, FunctionCall and Sync sent earns one ReadyForQuery, with one exception that drivers
//! rely on: PostgreSQL ignores Sync (and Flush) while in COPY FROM STDIN (copyfromparse.c), and
//! libpq sends Parse/Bind/Execute("COPY ... FROM STDIN")/Sync in one write, before it knows the
//! command is a COPY. So when the backend announces COPY IN, the Syncs already sent ahead of the
//! copy's end are written off, and further Syncs until CopyDone/CopyFail are not counted.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A Query or FunctionCall: one ReadyForQuery.
    Query,
    /// A Sync: one ReadyForQuery unless the backend reads it during COPY IN.
    Sync,
    /// CopyDone or CopyFail sent: Syncs after it count again.
    CopyEnd,
}

/// What the backend owes, in the order the client sent it.
#[derive(Debug, Default)]
pub struct Pending {
    queue: VecDeque<Entry>,
    /// Replies owed: the Query and Sync entries in `queue`.
    owed: u32,
    /// The backend is in COPY IN and no CopyDone/CopyFail has been sent yet.
    in_copy: bool,
}

impl Pending {
    pub fn owed(&self) -> u32 {
        self.owed
    }

    /// The client sent a Query or FunctionCall.
    pub fn sent_query(&mut self) {
        self.queue.push_back(Entry::Query);
        self.owed += 1;
    }

    /// The client sent a Sync.
    pub fn sent_sync(&mut self) {
        if !self.in_copy {
            self.queue.push_back(Entry::Sync);
            self.owed += 1;
        }
    }

    /// The client sent CopyDone or CopyFail.
    pub fn sent_copy_end(&mut self) {
        if self.in_copy {
            self.in_copy = false;
        } else {
            self.queue.push_back(Entry::CopyEnd);
        }
    }

    /// The backend sent CopyInResponse: Syncs sent before the copy's end will be ignored by it.
    pub fn copy_in_started(&mut self) {
        // A CopyDone sent before the command now starting its COPY is stale (a client finishing a
        // COPY that had already failed); it says nothing about this copy.
        while self.queue.front() == Some(&Entry::CopyEnd) {
            self.queue.pop_front();
        }
        let end = self.queue.iter().position(|e| *e == Entry::CopyEnd);
        let before = end.unwrap_or(self.queue.len());
        let mut i = 0;
        let mut removed = 0;
        self.queue.retain(|e| {
            let drop = i < before && *e == Entry::Sync;
            i += 1;
            removed += drop as u32;
            !drop
        });
        self.owed -= removed;
        match end {
            // The client already ended the copy: the marker has done its work.
            Some(_) => {
                if let Some(p) = self.queue.iter().position(|e| *e == Entry::CopyEnd) {
                    self.queue.remove(p);
                }
            }
            None => self.in_copy = true,
        }
    }

    /// The backend sent ReadyForQuery. Returns true when nothing more is owed.
    pub fn ready(&mut self) -> bool {
        self.in_copy = false;
        while let Some(e) = self.queue.pop_front() {
            if e != Entry::CopyEnd {
                self.owed -= 1;
                break;
            }
        }
        self.owed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a script of events: q = Query, s = Sync, c = CopyDone/Fail sent, G = CopyInResponse,
    /// Z = ReadyForQuery; returns `owed` after each.
    fn run(script: &str) -> Vec<u32> {
        let mut p = Pending::default();
        script
            .chars()
            .map(|c| {
                match c {
                    'q' => p.sent_query(),
                    's' => p.sent_sync(),
                    'c' => p.sent_copy_end(),
                    'G' => p.copy_in_started(),
                    'Z' => {
                        p.ready();
                    }
                    _ => unreachable!(),
                }
                p.owed()
            })
            .collect()
    }

    #[test]
    fn scripts() {
        let cases: &[(&str, &str, &[u32])] = &[
            ("simple queries", "qqZZ", &[1, 2, 1, 0]),
            ("extended batches", "ssZsZZ", &[1, 2, 1, 2, 1, 0]),
            ("simple COPY", "qGcZ", &[1, 1, 1, 0]),
            // libpq: P/B/D/E(COPY)/S in one write, then CopyData.., CopyDone, Sync.
            ("libpq extended COPY", "sGcsZ", &[1, 0, 0, 1, 0]),
            ("Syncs during COPY are ignored", "sGsscsZ", &[1, 0, 0, 0, 0, 1, 0]),
            // A client that sent everything before the backend answered.
            ("all sent ahead", "scsGZ", &[1, 1, 2, 1, 0]),
            ("COPY then more work", "sGcsqZZ", &[1, 0, 0, 1, 2, 1, 0]),
            ("COPY that failed before starting", "sZ", &[1, 0]),
            ("stray CopyDone outside COPY", "csZ", &[0, 1, 0]),
            (
                "stale CopyDone after a failed COPY, then libpq COPY",
                "qGZcsGcsZ",
                &[1, 1, 0, 0, 1, 0, 0, 1, 0],
            ),
        ];
        for (name, script, want) in cases {
            assert_eq!(run(script), *want, "{name}: {script}");
        }
    }
}
