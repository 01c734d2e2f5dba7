//! The domain's kinds, typed: a table's status, its modes, what a refresh did, which engine
//! refreshes it and which scheduler fires it. Each is written in the catalog and in statements as
//! the text `name()` gives and read back with `parse()` (the catalog's CHECK constraints hold the
//! same texts), so no other code compares these as strings.

/// Defines a kind: the enum, its catalog text both ways, and Display as that text.
macro_rules! kind {
    ($(#[$meta:meta])* pub enum $kind:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $kind {
            $($(#[$vmeta])* $variant,)+
        }

        impl $kind {
            /// Every value, in declaration order.
            pub const ALL: &'static [$kind] = &[$($kind::$variant,)+];

            /// As the catalog and the statements write it.
            pub fn name(self) -> &'static str {
                match self {
                    $($kind::$variant => $text,)+
                }
            }

            /// The value written as `text` (exactly), if any.
            pub fn parse(text: &str) -> Option<$kind> {
                match text {
                    $($text => Some($kind::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kind! {
    /// Where a dynamic table is in its life (Flink's states).
    pub enum Status {
        /// A CONTINUOUS Flink table whose first job is being started.
        Initializing = "INITIALIZING",
        Activated = "ACTIVATED",
        Suspended = "SUSPENDED",
    }
}

kind! {
    /// The mode a user asked for.
    pub enum LogicalMode {
        /// No REFRESH_MODE clause: derived from the freshness.
        Automatic = "AUTOMATIC",
        Continuous = "CONTINUOUS",
        Full = "FULL",
    }
}

kind! {
    /// The mode actually used.
    pub enum RefreshMode {
        Continuous = "CONTINUOUS",
        Full = "FULL",
    }
}

kind! {
    /// What a refresh did, as the history records it; a table's own (`refresh_action`) is how its
    /// refreshes are meant to go, FULL or INCREMENTAL.
    pub enum RefreshAction {
        /// Nothing changed in the sources.
        NoData = "NO_DATA",
        /// Recomputed from scratch.
        Full = "FULL",
        /// Applied only what changed.
        Incremental = "INCREMENTAL",
    }
}

kind! {
    /// What refreshes a dynamic table.
    #[derive(clap::ValueEnum)]
    pub enum EngineKind {
        Postgres = "postgres",
        Flink = "flink",
    }
}

kind! {
    /// A workflow scheduler for FULL-mode tables.
    #[derive(clap::ValueEnum)]
    pub enum SchedulerKind {
        Embedded = "embedded",
        Airflow = "airflow",
        #[value(name = "dolphinscheduler")]
        DolphinScheduler = "dolphinscheduler",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind reads back what it writes, and the texts are the catalog's (sql/V1, sql/V4).
    #[test]
    fn texts_round_trip() {
        fn check<K: Copy + PartialEq + std::fmt::Debug>(
            all: &[K],
            name: fn(K) -> &'static str,
            parse: fn(&str) -> Option<K>,
            texts: &[&str],
        ) {
            let names: Vec<&str> = all.iter().map(|k| name(*k)).collect();
            assert_eq!(names, texts);
            for k in all {
                assert_eq!(parse(name(*k)), Some(*k));
            }
            assert_eq!(parse("nonsense"), None);
        }
        check(
            Status::ALL,
            Status::name,
            Status::parse,
            &["INITIALIZING", "ACTIVATED", "SUSPENDED"],
        );
        check(
            LogicalMode::ALL,
            LogicalMode::name,
            LogicalMode::parse,
            &["AUTOMATIC", "CONTINUOUS", "FULL"],
        );
        check(RefreshMode::ALL, RefreshMode::name, RefreshMode::parse, &["CONTINUOUS", "FULL"]);
        check(
            RefreshAction::ALL,
            RefreshAction::name,
            RefreshAction::parse,
            &["NO_DATA", "FULL", "INCREMENTAL"],
        );
        check(EngineKind::ALL, EngineKind::name, EngineKind::parse, &["postgres", "flink"]);
        check(
            SchedulerKind::ALL,
            SchedulerKind::name,
            SchedulerKind::parse,
            &["embedded", "airflow", "dolphinscheduler"],
        );
        assert_eq!(Status::parse("activated"), None, "exact texts only");
        assert_eq!(RefreshAction::Incremental.to_string(), "INCREMENTAL");
    }
}
