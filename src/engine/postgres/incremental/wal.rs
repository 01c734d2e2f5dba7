//! Reading changes from PostgreSQL's write-ahead log: the messages of the `pgoutput` plug-in
//! (logical replication's own, built into PostgreSQL), as `pg_logical_slot_peek_binary_changes`
//! returns them, one message per row. Pure: bytes in, typed messages out, and the log rows a
//! change of a captured table makes.
//!
//! Protocol version 1 (PostgreSQL 10 and later), described in PostgreSQL's "Logical Replication
//! Message Formats": every change comes after its table's Relation message and inside a
//! Begin/Commit pair, values in text form. A table needs REPLICA IDENTITY FULL for its UPDATEs
//! and DELETEs to carry the old row whole.

/// A position in the write-ahead log.
pub type Lsn = u64;

/// `X/Y`, as PostgreSQL prints a `pg_lsn`.
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Reads a `pg_lsn` printed as `X/Y`.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A column's value in a row of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the UPDATE did not change (not sent: take it from the old row).
    Unchanged,
    /// The value in its type's text form.
    Text(String),
}

/// A table as a Relation message describes it: its columns in order (the rows of later
/// messages carry their values in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// One `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        xid: u32,
    },
    Commit {
        lsn: Lsn,
        end_lsn: Lsn,
    },
    Relation(RelationInfo),
    Insert {
        relid: u32,
        new: Vec<Value>,
    },
    /// `old` is there when the table's replica identity is FULL (or the key changed).
    Update {
        relid: u32,
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    Delete {
        relid: u32,
        old: Vec<Value>,
    },
    Truncate {
        relids: Vec<u32>,
    },
    /// A logical message (`pg_logical_emit_message`); the capture's sync points have the
    /// prefix `dyngate`.
    Logical {
        prefix: String,
    },
    /// Origin and Type messages: nothing to capture.
    Other(u8),
}

/// A message that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable pgoutput message ({0})")]
pub struct WalError(pub String);

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WalError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| WalError(format!("{n} bytes wanted at offset {}, {} in all", self.at, self.bytes.len())))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WalError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WalError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, WalError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, WalError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, WalError> {
        let rest = &self.bytes[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| WalError("a string without its terminating NUL".into()))?;
        let s = String::from_utf8(rest[..len].to_vec()).map_err(|_| WalError("a string that is not UTF-8".into()))?;
        self.at += len + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, WalError> {
        let n = self.u16()?;
        (0..n)
            .map(|_| match self.u8()? {
                b'n' => Ok(Value::Null),
                b'u' => Ok(Value::Unchanged),
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    String::from_utf8(bytes.to_vec())
                        .map(Value::Text)
                        .map_err(|_| WalError("a value that is not UTF-8".into()))
                }
                k => Err(WalError(format!(
                    "a column of kind {:?} (binary values are not asked for)",
                    k as char
                ))),
            })
            .collect()
    }

    /// A tuple after its marker byte (`expected` lists the markers allowed).
    fn marked_tuple(&mut self, expected: &[u8]) -> Result<(u8, Vec<Value>), WalError> {
        let marker = self.u8()?;
        if !expected.contains(&marker) {
            return Err(WalError(format!("tuple marker {:?}", marker as char)));
        }
        Ok((marker, self.tuple()?))
    }
}

/// Reads one message (protocol version 1, values in text).
pub fn parse(bytes: &[u8]) -> Result<Message, WalError> {
    let mut r = Reader { bytes, at: 0 };
    let kind = r.u8()?;
    let message = match kind {
        b'B' => {
            let final_lsn = r.u64()?;
            let _commit_time = r.u64()?;
            Message::Begin { final_lsn, xid: r.u32()? }
        }
        b'C' => {
            let _flags = r.u8()?;
            let lsn = r.u64()?;
            let end_lsn = r.u64()?;
            let _commit_time = r.u64()?;
            Message::Commit { lsn, end_lsn }
        }
        b'R' => {
            let oid = r.u32()?;
            let schema = r.string()?;
            let name = r.string()?;
            let _replica_identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let _flags = r.u8()?;
                columns.push(r.string()?);
                let _type_oid = r.u32()?;
                let _typmod = r.u32()?;
            }
            Message::Relation(RelationInfo {
                oid,
                schema,
                name,
                columns,
            })
        }
        b'I' => {
            let relid = r.u32()?;
            let (_, new) = r.marked_tuple(b"N")?;
            Message::Insert { relid, new }
        }
        b'U' => {
            let relid = r.u32()?;
            let (marker, first) = r.marked_tuple(b"KON")?;
            if marker == b'N' {
                Message::Update {
                    relid,
                    old: None,
                    new: first,
                }
            } else {
                let (_, new) = r.marked_tuple(b"N")?;
                Message::Update {
                    relid,
                    old: Some(first),
                    new,
                }
            }
        }
        b'D' => {
            let relid = r.u32()?;
            let (_, old) = r.marked_tuple(b"KO")?;
            Message::Delete { relid, old }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let relids = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relids }
        }
        b'M' => {
            let _flags = r.u8()?;
            let _lsn = r.u64()?;
            let prefix = r.string()?;
            let len = r.u32()? as usize;
            r.take(len)?;
            Message::Logical { prefix }
        }
        b'O' | b'Y' => return Ok(Message::Other(kind)),
        k => return Err(WalError(format!("message kind {:?}", k as char))),
    };
    if r.at != bytes.len() {
        return Err(WalError(format!(
            "{} bytes left over in a {:?} message",
            bytes.len() - r.at,
            kind as char
        )));
    }
    Ok(message)
}

/// A log row: the captured columns' values (text form; None is NULL) and the sign.
pub type LogRow = (Vec<Option<String>>, i16);

/// A captured column as the table is now: its name, and its place among the columns a
/// Relation message lists (those neither dropped nor generated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub name: &'a str,
    pub place: usize,
}

/// The log rows one change makes, for a table whose captured columns are `wanted`, read from
/// rows laid out as `relation` says (the table as it was when the change was made): the old row
/// with sign -1, the new one with +1. A column is found by its name, or, renamed since, by its
/// place when the table has as many columns as then (`live` now). An UPDATE's unchanged TOASTed
/// values come from its old row. `Err` when a row lacks what is needed (an old row without
/// REPLICA IDENTITY FULL, a column that cannot be found).
pub fn log_rows(relation: &RelationInfo, message: &Message, wanted: &[Wanted<'_>], live: usize) -> Result<Vec<LogRow>, WalError> {
    let positions: Vec<usize> = wanted
        .iter()
        .map(|w| {
            relation
                .columns
                .iter()
                .position(|c| c == w.name)
                .or((relation.columns.len() == live && w.place < live).then_some(w.place))
                .ok_or_else(|| {
                    WalError(format!(
                        "column {} of {}.{} is not in its changes (columns were added or dropped since they were made)",
                        w.name, relation.schema, relation.name
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let pick = |row: &[Value], fallback: Option<&[Value]>| -> Result<Vec<Option<String>>, WalError> {
        positions
            .iter()
            .map(|&p| match (row.get(p), fallback.and_then(|f| f.get(p))) {
                (Some(Value::Text(t)), _) => Ok(Some(t.clone())),
                (Some(Value::Null), _) => Ok(None),
                (Some(Value::Unchanged), Some(Value::Text(t))) => Ok(Some(t.clone())),
                (Some(Value::Unchanged), Some(Value::Null)) => Ok(None),
                _ => Err(WalError(format!(
                    "a change of {}.{} lacks a value (is its REPLICA IDENTITY FULL?)",
                    relation.schema, relation.name
                ))),
            })
            .collect()
    };
    let whole = |row: &[Value]| row.len() == relation.columns.len();
    Ok(match message {
        Message::Insert { new, .. } => vec![(pick(new, None)?, 1)],
        Message::Delete { old, .. } if whole(old) => vec![(pick(old, None)?, -1)],
        Message::Update { old: Some(old), new, .. } if whole(old) => vec![(pick(old, None)?, -1), (pick(new, Some(old))?, 1)],
        Message::Delete { .. } | Message::Update { .. } => {
            return Err(WalError(format!(
                "an UPDATE or DELETE of {}.{} without its old row (its REPLICA IDENTITY is not FULL)",
                relation.schema, relation.name
            )));
        }
        _ => Vec::new(),
    })
}

/// The 64-bit transaction id (`xid8`) of a 32-bit `xid` assigned before `reference` (a recent
/// `xid8` assigned later, such as the caller's own transaction's: collect::reference_xid says
/// why not a snapshot's xmax): the one in the same or the previous epoch that is not after it.
pub fn full_xid(xid: u32, reference: u64) -> u64 {
    let candidate = (reference & !0xFFFF_FFFF) | u64::from(xid);
    if candidate > reference {
        candidate.saturating_sub(1 << 32)
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    /// Messages as PostgreSQL 15 sent them for `w2(id int, t text, n numeric)`, REPLICA
    /// IDENTITY FULL: INSERT (1, 'a''b', 1.50); UPDATE n = 3; DELETE; TRUNCATE.
    #[test]
    fn logical_messages() {
        // 'M', flags (1: transactional), its LSN, the prefix, the content's length and bytes.
        let mut m = vec![b'M', 1, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        m.extend_from_slice(b"dyngate\0");
        m.extend_from_slice(&[0, 0, 0, 3]);
        m.extend_from_slice(b"abc");
        assert_eq!(parse(&m).unwrap(), Message::Logical { prefix: "dyngate".into() });
        // Content shorter than its length says.
        m.truncate(m.len() - 1);
        assert!(parse(&m).is_err());
    }

    #[test]
    fn messages_of_postgres_15() {
        let w2 = RelationInfo {
            oid: 36594,
            schema: "public".into(),
            name: "w2".into(),
            columns: vec!["id".into(), "t".into(), "n".into()],
        };
        let cases = [
            (
                "42000000004f5730a80003040a3832fea50000675f",
                Message::Begin {
                    final_lsn: 0x4F57_30A8,
                    xid: 26463,
                },
            ),
            (
                "5200008ef27075626c6963007732006600030169640000000017ffffffff01740000000019ffffffff016e00000006a4ffffffff",
                Message::Relation(w2.clone()),
            ),
            (
                "4900008ef24e000374000000013174000000036127627400000004312e3530",
                Message::Insert {
                    relid: 36594,
                    new: vec![text("1"), text("a'b"), text("1.50")],
                },
            ),
            (
                "4900008ef24e00037400000001326e740000000132",
                Message::Insert {
                    relid: 36594,
                    new: vec![text("2"), Value::Null, text("2")],
                },
            ),
            (
                "4300000000004f5730a8000000004f5730d80003040a3832fea5",
                Message::Commit {
                    lsn: 0x4F57_30A8,
                    end_lsn: 0x4F57_30D8,
                },
            ),
            (
                "5500008ef24f000374000000013174000000036127627400000004312e35304e00037400000001317400000003612762740000000133",
                Message::Update {
                    relid: 36594,
                    old: Some(vec![text("1"), text("a'b"), text("1.50")]),
                    new: vec![text("1"), text("a'b"), text("3")],
                },
            ),
            (
                "4400008ef24f00037400000001317400000003612762740000000133",
                Message::Delete {
                    relid: 36594,
                    old: vec![text("1"), text("a'b"), text("3")],
                },
            ),
            ("54000000010000008ef2", Message::Truncate { relids: vec![36594] }),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(&hex(bytes)), Ok(want), "{bytes}");
        }
        for bad in ["", "49", "4900008ef24e0003740000000a31", "5a00", "4900008ef24e000162"] {
            assert!(parse(&hex(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_become_signed_log_rows() {
        let r = RelationInfo {
            oid: 1,
            schema: "public".into(),
            name: "r".into(),
            columns: vec!["k".into(), "big".into(), "v".into()],
        };
        let wanted = [Wanted { name: "v", place: 2 }, Wanted { name: "big", place: 1 }];
        let insert = Message::Insert {
            relid: 1,
            new: vec![text("1"), text("x"), Value::Null],
        };
        assert_eq!(log_rows(&r, &insert, &wanted, 3), Ok(vec![(vec![None, Some("x".into())], 1)]));
        let update = Message::Update {
            relid: 1,
            old: Some(vec![text("1"), text("long"), text("2")]),
            new: vec![text("1"), Value::Unchanged, text("3")],
        };
        assert_eq!(
            log_rows(&r, &update, &wanted, 3),
            Ok(vec![
                (vec![Some("2".into()), Some("long".into())], -1),
                (vec![Some("3".into()), Some("long".into())], 1)
            ])
        );
        // Without REPLICA IDENTITY FULL an UPDATE has no old row, a DELETE only the key.
        let keyless = Message::Update {
            relid: 1,
            old: None,
            new: vec![text("1"), text("x"), text("3")],
        };
        assert!(log_rows(&r, &keyless, &wanted, 3).unwrap_err().0.contains("REPLICA IDENTITY"));
        let key_only = Message::Delete {
            relid: 1,
            old: vec![text("1")],
        };
        assert!(log_rows(&r, &key_only, &wanted, 3).is_err());
        // Renamed since: found by its place while the table has as many columns; not once one
        // was added.
        let renamed = [Wanted { name: "value", place: 2 }];
        assert_eq!(log_rows(&r, &insert, &renamed, 3), Ok(vec![(vec![None], 1)]));
        assert!(log_rows(&r, &insert, &renamed, 4).unwrap_err().0.contains("added or dropped"));
        assert_eq!(log_rows(&r, &Message::Truncate { relids: vec![1] }, &wanted, 3), Ok(vec![]));
    }

    #[test]
    fn lsns_and_xids() {
        assert_eq!(parse_lsn("0/4F5730D8"), Some(0x4F57_30D8));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(format_lsn((0x16 << 32) | 0xB374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
        let epoch2 = 2u64 << 32;
        let cases = [
            (100, epoch2 + 200, epoch2 + 100),
            (200, epoch2 + 200, epoch2 + 200),
            // Before the wraparound into this epoch: the previous one.
            (u32::MAX - 5, epoch2 + 10, epoch2 - 6),
            (7, 100, 7),
        ];
        for (xid, reference, want) in cases {
            assert_eq!(full_xid(xid, reference), want, "{xid} {reference}");
        }
    }
}
