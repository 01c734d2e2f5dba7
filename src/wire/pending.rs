//! Accounting of the replies a backend still owes a session: a pure state machine fed by both relay
//! directions, so the gateway knows when everything it forwarded has been answered (to answer its
//! own statements in order, to close sessions on shutdown, to know whether a vanished client left
//! a statement running).
//!
//! What earns a reply: a Query or FunctionCall (everything up to ReadyForQuery), a Sync
//! (ReadyForQuery), and in the extended protocol each Parse (ParseComplete), Bind (BindComplete),
//! Close (CloseComplete), Describe (RowDescription or NoData, after ParameterDescription for a
//! statement) and Execute (CommandComplete, EmptyQueryResponse or PortalSuspended). An error in
//! the extended protocol makes PostgreSQL skip every message up to the next Sync, so their replies
//! are written off.
//!
//! One exception drivers rely on: PostgreSQL ignores Sync (and Flush) while in COPY FROM STDIN
//! (copyfromparse.c), and libpq sends Parse/Bind/Execute("COPY ... FROM STDIN")/Sync in one write,
//! before it knows the command is a COPY. So when the backend announces COPY IN, the Syncs already
//! sent ahead of the copy's end are written off, and further Syncs until CopyDone/CopyFail are not
//! counted.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A Query or FunctionCall: answered by ReadyForQuery.
    Query,
    /// A Sync: answered by ReadyForQuery, unless the backend reads it during COPY IN.
    Sync,
    /// An extended-protocol message, answered by one of these tags.
    Ext(&'static [u8]),
    /// CopyDone or CopyFail sent: Syncs after it count again.
    CopyEnd,
}

/// The replies that answer each extended-protocol message.
pub fn completions(tag: u8) -> Option<&'static [u8]> {
    match tag {
        b'P' => Some(b"1"),
        b'B' => Some(b"2"),
        b'C' => Some(b"3"),
        b'D' => Some(b"Tn"),
        b'E' => Some(b"CIs"),
        _ => None,
    }
}

/// What the backend owes, in the order the client sent it.
#[derive(Debug, Default)]
pub struct Pending {
    queue: VecDeque<Entry>,
    /// Entries in `queue` other than CopyEnd markers.
    unanswered: u32,
    /// The backend is in COPY IN and no CopyDone/CopyFail has been sent yet.
    in_copy: bool,
    /// An extended-protocol message of the batch still being sent (no Sync after it yet) failed:
    /// the backend skips everything up to the next Sync, so what is sent until then earns no reply,
    /// and the gateway's own messages of that batch must be skipped too.
    batch_failed: bool,
}

impl Pending {
    /// Messages sent and not yet answered; 0 when the backend is idle.
    pub fn unanswered(&self) -> u32 {
        self.unanswered
    }

    pub fn batch_failed(&self) -> bool {
        self.batch_failed
    }

    fn push(&mut self, e: Entry) {
        if self.batch_failed && e != Entry::Sync {
            return;
        }
        self.queue.push_back(e);
        self.unanswered += 1;
    }

    /// The client sent a message with tag `tag`, forwarded to the backend: records the reply it
    /// earns, if any.
    pub fn sent(&mut self, tag: u8) {
        match tag {
            b'Q' | b'F' => self.sent_query(),
            b'S' => self.sent_sync(),
            b'c' | b'f' => self.sent_copy_end(),
            t => self.sent_extended(t),
        }
    }

    /// The client sent a Query or FunctionCall.
    fn sent_query(&mut self) {
        self.push(Entry::Query);
    }

    /// The client sent a Sync.
    fn sent_sync(&mut self) {
        if !self.in_copy {
            self.push(Entry::Sync);
        }
        self.batch_failed = false;
    }

    /// The client sent an extended-protocol message with tag `tag` (Parse, Bind, Close, Describe,
    /// Execute); other tags earn no reply.
    fn sent_extended(&mut self, tag: u8) {
        if let Some(c) = completions(tag) {
            self.push(Entry::Ext(c));
        }
    }

    /// The client sent CopyDone or CopyFail.
    fn sent_copy_end(&mut self) {
        if self.in_copy {
            self.in_copy = false;
        } else {
            self.queue.push_back(Entry::CopyEnd);
        }
    }

    fn pop_front(&mut self) {
        while let Some(e) = self.queue.pop_front() {
            if e != Entry::CopyEnd {
                self.unanswered -= 1;
                return;
            }
        }
    }

    /// The front entry, past stale CopyEnd markers.
    fn front(&mut self) -> Option<Entry> {
        while self.queue.front() == Some(&Entry::CopyEnd) {
            self.queue.pop_front();
        }
        self.queue.front().copied()
    }

    /// The backend sent a message with tag `tag`. Returns true when nothing is owed any more.
    pub fn received(&mut self, tag: u8) -> bool {
        match tag {
            b'Z' => {
                self.in_copy = false;
                // Extended messages still queued before this ReadyForQuery were skipped.
                while let Some(Entry::Ext(_)) = self.front() {
                    self.pop_front();
                }
                self.pop_front();
            }
            b'G' => self.copy_in_started(),
            b'E' => {
                if let Some(Entry::Ext(_)) = self.front() {
                    // PostgreSQL skips everything up to the next Sync.
                    while let Some(Entry::Ext(_)) = self.front() {
                        self.pop_front();
                    }
                    if self.queue.is_empty() {
                        // No Sync sent yet: the batch the client is still sending has failed.
                        self.batch_failed = true;
                    }
                }
            }
            t => {
                if let Some(Entry::Ext(c)) = self.front()
                    && c.contains(&t)
                {
                    self.pop_front();
                }
            }
        }
        self.unanswered == 0
    }

    /// CopyInResponse: Syncs sent before the copy's end will be ignored by the backend.
    fn copy_in_started(&mut self) {
        // A CopyDone sent before the command now starting its COPY is stale (a client finishing a
        // COPY that had already failed); it says nothing about this copy.
        self.front();
        let end = self.queue.iter().position(|e| *e == Entry::CopyEnd);
        let before = end.unwrap_or(self.queue.len());
        let mut i = 0;
        let mut removed = 0;
        self.queue.retain(|e| {
            let skip = i < before && *e == Entry::Sync;
            i += 1;
            removed += skip as u32;
            !skip
        });
        self.unanswered -= removed;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a script of events and returns `unanswered` after each. Lower case is what the client
    /// sent: q = Query, s = Sync, p/b/d/e/k = Parse/Bind/Describe/Execute/Close, c = CopyDone,
    /// h = Flush.
    /// Upper case and digits are what the backend sent: Z, G (CopyInResponse), E (error),
    /// 1/2/3, T, n, C, I (empty query), s is ambiguous so PortalSuspended is written `U`.
    fn run(script: &str) -> Vec<u32> {
        let mut p = Pending::default();
        script
            .chars()
            .map(|c| {
                match c {
                    'q' => p.sent(b'Q'),
                    's' => p.sent(b'S'),
                    'p' => p.sent(b'P'),
                    'b' => p.sent(b'B'),
                    'd' => p.sent(b'D'),
                    'e' => p.sent(b'E'),
                    'k' => p.sent(b'C'),
                    'c' => p.sent(b'c'),
                    'h' => p.sent(b'H'),
                    'U' => {
                        p.received(b's');
                    }
                    t => {
                        p.received(t as u8);
                    }
                }
                p.unanswered()
            })
            .collect()
    }

    #[test]
    fn batch_failure_lasts_until_the_client_sends_sync() {
        let mut p = Pending::default();
        p.sent_extended(b'P');
        p.received(b'E');
        assert!(p.batch_failed(), "the open batch failed");
        p.sent_extended(b'B');
        p.sent_extended(b'E');
        assert_eq!(p.unanswered(), 0, "what follows in the failed batch is skipped by the backend");
        p.sent_sync();
        assert!(!p.batch_failed());
        assert_eq!(p.unanswered(), 1);
        p.received(b'Z');
        assert_eq!(p.unanswered(), 0);

        // A failure in a batch already closed by a Sync does not touch the next one.
        p.sent_extended(b'P');
        p.sent_sync();
        p.sent_extended(b'P');
        p.received(b'E');
        assert!(!p.batch_failed());
        assert_eq!(p.unanswered(), 2, "the Sync and the next batch's Parse");

        let mut p = Pending::default();
        p.sent_query();
        p.received(b'E');
        assert!(!p.batch_failed(), "an error in a simple Query fails no batch");
    }

    #[test]
    fn scripts() {
        let cases: &[(&str, &str, &[u32])] = &[
            ("simple queries", "qqTDCZTDCZ", &[1, 2, 2, 2, 2, 1, 1, 1, 1, 0]),
            ("extended batch", "pbdes12TCZ", &[1, 2, 3, 4, 5, 4, 3, 2, 1, 0]),
            ("describe statement", "pds1tTZ", &[1, 2, 3, 2, 2, 1, 0]),
            ("row limit", "peU", &[1, 2, 2]),
            ("error skips to Sync", "pbes1EZ", &[1, 2, 3, 4, 3, 1, 0]),
            ("error before the rest of the batch was sent", "pEbesZ", &[1, 0, 0, 0, 1, 0]),
            ("error, then a second batch", "pespesEZ1CZ", &[1, 2, 3, 4, 5, 6, 4, 3, 2, 1, 0]),
            ("close", "ks3Z", &[1, 2, 1, 0]),
            ("simple COPY", "qGcCZ", &[1, 1, 1, 1, 0]),
            // libpq: P/B/D/E(COPY)/S in one write, then CopyData.., CopyDone, Sync.
            ("libpq extended COPY", "pbdes12nGcCsZ", &[1, 2, 3, 4, 5, 4, 3, 2, 1, 1, 0, 1, 0]),
            ("Syncs during COPY are ignored", "esGsscCsZ", &[1, 2, 1, 1, 1, 1, 0, 1, 0]),
            // A client that sent everything before the backend answered.
            ("all sent ahead", "escsGCZ", &[1, 2, 2, 3, 2, 1, 0]),
            ("COPY failed before starting", "esEZ", &[1, 2, 1, 0]),
            ("stray CopyDone outside COPY", "csZ", &[0, 1, 0]),
            (
                "stale CopyDone after a failed COPY, then libpq COPY",
                "qGEZcesGcCsZ",
                &[1, 1, 1, 0, 0, 1, 2, 1, 1, 0, 1, 0],
            ),
            ("notices and parameter status are not replies", "pN1", &[1, 1, 0]),
            ("Flush earns no reply", "phd1n", &[1, 1, 2, 1, 0]),
        ];
        for (name, script, want) in cases {
            assert_eq!(run(script), *want, "{name}: {script}");
        }
    }
}
