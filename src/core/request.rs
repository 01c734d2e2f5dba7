//! Who asks for an operation, and why a refresh runs: what every operation is given, whichever
//! way it was asked for (a statement, the refresh loop, the HTTP endpoint).

/// Who asks, as the session authenticated them.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub user: &'a str,
    pub database: &'a str,
    /// The session is inside an explicit transaction block.
    pub in_transaction: bool,
    /// The session's TimeZone: the default time zone of a new table's schedule.
    pub time_zone: &'a str,
}

/// Why a refresh runs, and what it does when another refresh of the table is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Asked for by a statement: waits for the running refresh.
    Manual,
    /// A schedule slot (seconds since the epoch): skipped if a refresh is running.
    Scheduled { slot: i64 },
    /// The refresh endpoint, for a schedule time, already claimed as this history row: waits
    /// for the running refresh.
    Api { schedule_time: i64, claimed: i64 },
}

impl Trigger {
    /// As the history records it.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Manual => "MANUAL",
            Trigger::Scheduled { .. } => "SCHEDULED",
            Trigger::Api { .. } => "API",
        }
    }

    /// The schedule time the refresh is for (seconds since the epoch), if any.
    pub fn schedule_time(self) -> Option<i64> {
        match self {
            Trigger::Manual => None,
            Trigger::Scheduled { slot } => Some(slot),
            Trigger::Api { schedule_time, .. } => Some(schedule_time),
        }
    }

    /// Whether the refresh waits for a running one (else it is skipped).
    pub fn waits(self) -> bool {
        !matches!(self, Trigger::Scheduled { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers() {
        let cases = [
            (Trigger::Manual, "MANUAL", None, true),
            (Trigger::Scheduled { slot: 60 }, "SCHEDULED", Some(60), false),
            (
                Trigger::Api {
                    schedule_time: 120,
                    claimed: 7,
                },
                "API",
                Some(120),
                true,
            ),
        ];
        for (t, name, at, waits) in cases {
            assert_eq!((t.name(), t.schedule_time(), t.waits()), (name, at, waits), "{t:?}");
        }
    }
}
