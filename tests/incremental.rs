//! Incremental refresh on the PostgreSQL engine, as users see it through the gateway: which
//! tables are refreshed incrementally (and why the others are not, in DESCRIBE, SHOW and the
//! catalog view), that a refresh applies exactly what changed (history: action and changes),
//! falls back to a full refresh after a TRUNCATE or when the changes are large, keeps capturing
//! while suspended, and that DROP removes capture no other table needs. A randomized workload
//! compares every refresh with a recompute (the seed is printed on failure; set
//! DYNGATE_TEST_SEED to replay one).

mod common;

use common::*;
use tokio_postgres::Client;

async fn setup() -> (Pg, String, Dyngate, Client) {
    setup_with(Capture::Default).await
}

/// How the gateway under test captures changes (`--capture`; the test PostgreSQL has
/// wal_level = logical).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Capture {
    /// The default: triggers.
    Default,
    /// `auto`: the WAL here.
    Auto,
    Triggers,
    /// The WAL, collected every 50 ms: refreshes meet collections (and start again when one
    /// committed after their snapshot).
    WalBusy,
}

impl Capture {
    /// The gateway's arguments for it.
    fn args(self) -> &'static [&'static str] {
        match self {
            Capture::Default => &[],
            Capture::Auto => &["--capture", "auto"],
            Capture::Triggers => &["--capture", "triggers"],
            Capture::WalBusy => &["--capture", "wal", "--capture-interval", "50ms"],
        }
    }
}

/// A gateway capturing changes as told, and `orders` (no key, a fifth of the notes NULL),
/// analyzed.
async fn setup_with(capture: Capture) -> (Pg, String, Dyngate, Client) {
    catalog_setup(
        capture.args(),
        &["CREATE TABLE orders (id int, day date, amount numeric, note text);
           INSERT INTO orders SELECT g, date '2024-01-01' + g % 3, g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'n' || g END
             FROM generate_series(1, 400) g;
           ANALYZE orders;"],
    )
    .await
}

/// How `table` is captured: by its triggers, by the WAL (in the publication, REPLICA IDENTITY
/// FULL), or not at all (and then with its own replica identity again).
async fn captured(c: &Client, table: &str) -> &'static str {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::text::regclass AND tgname LIKE 'dyngate_capture_%'),
                    EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                             WHERE p.pubname = 'dyngate_capture' AND pr.prrelid = $1::text::regclass),
                    (SELECT relreplident::text FROM pg_class WHERE oid = $1::text::regclass)",
            &[&table],
        )
        .await
        .unwrap();
    match (r.get::<_, i64>(0), r.get::<_, bool>(1), r.get::<_, String>(2).as_str()) {
        (4, false, "d") => "triggers",
        (0, true, "f") => "wal",
        (0, false, "d") => "none",
        other => panic!("{table} is captured halfway: {other:?}"),
    }
}

/// The rows of a relation or query, as sorted text: a multiset to compare.
async fn content(c: &Client, from: &str) -> Vec<String> {
    c.query_scalar(&format!("SELECT ROW(q.*)::text FROM {from} q ORDER BY 1"), &[])
        .await
        .unwrap()
}

/// The action and changes of the table's latest refresh by hand. (The tables here have a day's
/// freshness: their scheduled refresh, at midnight, is unlikely to meet a test.)
async fn last_refresh(c: &Client, table: &str) -> (String, Option<i64>) {
    let r = c
        .query_one(
            "SELECT action, changes FROM dyngate.refresh_history WHERE table_name = $1 AND trigger IN ('MANUAL', 'CREATION') ORDER BY started_at DESC, ended_at DESC LIMIT 1",
            &[&table],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

async fn describe(c: &Client, table: &str, property: &str) -> Option<String> {
    c.query(&format!("DESCRIBE DYNAMIC TABLE {table}"), &[])
        .await
        .unwrap()
        .iter()
        .find(|r| r.get::<_, &str>(0) == property)
        .and_then(|r| r.get(1))
}

async fn refresh(c: &Client, table: &str) {
    c.simple_query(&format!("REFRESH DYNAMIC TABLE {table}")).await.unwrap();
}

async fn log_rows(c: &Client) -> i64 {
    let logs: Vec<String> = c
        .query_scalar("SELECT format('dyngate.%I', log_table) FROM dyngate.change_capture", &[])
        .await
        .unwrap();
    let mut n = 0;
    for log in logs {
        n += one::<i64>(c, &format!("SELECT count(*) FROM {log}")).await;
    }
    n
}

const BIG: &str = "SELECT id, day, amount * 2 AS double, note FROM orders WHERE amount > 10 OR note IS NULL";

#[tokio::test]
async fn a_filter_is_refreshed_with_only_what_changed() {
    let (pg, db, gw, c) = setup().await;
    c.batch_execute(&format!("CREATE DYNAMIC TABLE big FRESHNESS = INTERVAL '1' DAY AS {BIG}"))
        .await
        .unwrap();
    assert_eq!(describe(&c, "big", "refresh_action").await.as_deref(), Some("INCREMENTAL"));
    assert_eq!(describe(&c, "big", "refresh_action_reason").await, None);
    let recompute = format!("({BIG})");
    assert_eq!(content(&c, "big").await, content(&c, &recompute).await);

    // Nothing changed: NO_DATA.
    refresh(&c, "big").await;
    assert_eq!(last_refresh(&c, "big").await, ("NO_DATA".into(), Some(0)));

    // A writer with no privilege but on orders: its changes are captured all the same.
    let writer = pg.fresh_role("writerpw").await;
    c.batch_execute(&format!("GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO {writer}"))
        .await
        .unwrap();
    let w = connect(&gw.url(&writer, "writerpw", &db)).await;
    w.batch_execute(
        "INSERT INTO orders VALUES (1000, '2024-02-01', 50, NULL), (1000, '2024-02-01', 50, NULL);
         UPDATE orders SET amount = 5 WHERE id = 20;
         DELETE FROM orders WHERE id IN (30, 31);
         UPDATE orders SET note = 'x' WHERE id = 1000;",
    )
    .await
    .unwrap();
    // Not yet refreshed.
    assert_ne!(content(&c, "big").await, content(&c, &recompute).await);
    refresh(&c, "big").await;
    assert_eq!(content(&c, "big").await, content(&c, &recompute).await);
    // 2 inserted, 2 per updated row (old and new), 2 deleted, 2 per updated row.
    assert_eq!(last_refresh(&c, "big").await, ("INCREMENTAL".into(), Some(2 + 2 + 2 + 4)));
    // Changes of a rolled-back transaction are never applied.
    w.batch_execute("BEGIN; DELETE FROM orders WHERE id < 100; ROLLBACK;")
        .await
        .unwrap();
    refresh(&c, "big").await;
    assert_eq!(last_refresh(&c, "big").await, ("NO_DATA".into(), Some(0)));
    assert_eq!(content(&c, "big").await, content(&c, &recompute).await);
    assert_eq!(log_rows(&c).await, 0, "applied changes are discarded");

    // A TRUNCATE makes the next refresh full.
    c.batch_execute("TRUNCATE orders; INSERT INTO orders SELECT g, date '2024-03-01', g, NULL FROM generate_series(1, 50) g")
        .await
        .unwrap();
    refresh(&c, "big").await;
    assert_eq!(last_refresh(&c, "big").await.0, "FULL");
    assert_eq!(content(&c, "big").await, content(&c, &recompute).await);

    // Changes large next to the source: recomputed (the cost guard).
    c.batch_execute("ANALYZE orders; UPDATE orders SET amount = amount + 1")
        .await
        .unwrap();
    refresh(&c, "big").await;
    let (action, changes) = last_refresh(&c, "big").await;
    assert_eq!((action.as_str(), changes), ("FULL", Some(100)));
    assert_eq!(content(&c, "big").await, content(&c, &recompute).await);
    // And small ones are applied again.
    c.batch_execute("UPDATE orders SET amount = 7 WHERE id = 40").await.unwrap();
    refresh(&c, "big").await;
    assert_eq!(last_refresh(&c, "big").await, ("INCREMENTAL".into(), Some(2)));
    assert_eq!(content(&c, "big").await, content(&c, &recompute).await);

    // Renamed source columns are captured under their new names; added ones change nothing.
    c.batch_execute(
        "ALTER TABLE orders RENAME COLUMN note TO remark;
         ALTER TABLE orders ADD COLUMN extra int DEFAULT 1;
         INSERT INTO orders VALUES (3000, NULL, 3000, 'r', 2);
         UPDATE orders SET remark = NULL WHERE id = 41;",
    )
    .await
    .unwrap();
    refresh(&c, "big").await;
    assert_eq!(last_refresh(&c, "big").await, ("INCREMENTAL".into(), Some(3)));
    let renamed = "(SELECT id, day, amount * 2 AS double, remark FROM orders WHERE amount > 10 OR remark IS NULL)";
    assert_eq!(content(&c, "big").await, content(&c, renamed).await);
}

#[tokio::test]
async fn tables_refreshed_fully_say_why() {
    let (_pg, _db, _gw, c) = setup().await;
    let cases = [
        (
            "by_day",
            "SELECT day, string_agg(note, ',') AS notes FROM orders GROUP BY day",
            "string_agg",
        ),
        (
            "floaty",
            "SELECT day, sum(amount::float8) AS s FROM orders GROUP BY day",
            "floating-point",
        ),
        ("distinct_days", "SELECT DISTINCT ON (day) day, id FROM orders", "DISTINCT ON"),
        ("lucky", "SELECT id FROM orders WHERE random() < 0.5", "random()"),
        ("recent", "SELECT id FROM orders WHERE day > current_date - 10", "CURRENT_DATE"),
        ("asked", "SELECT id FROM orders", "'refresh.action' = 'full' was asked for"),
    ];
    for (name, query, _) in cases {
        let with = if name == "asked" { "WITH ('refresh.action' = 'full')" } else { "" };
        c.batch_execute(&format!(
            "CREATE DYNAMIC TABLE {name} {with} FRESHNESS = INTERVAL '1' DAY AS {query}"
        ))
        .await
        .unwrap();
    }
    let shown = c.query("SHOW DYNAMIC TABLES", &[]).await.unwrap();
    for (name, _, why) in cases {
        assert_eq!(describe(&c, name, "refresh_action").await.as_deref(), Some("FULL"), "{name}");
        let reason = describe(&c, name, "refresh_action_reason").await.unwrap_or_default();
        assert!(reason.contains(why), "{name}: {reason}");
        let row = shown.iter().find(|r| r.get::<_, &str>("table_name") == name).unwrap();
        assert_eq!(row.get::<_, &str>("refresh_action"), "FULL");
        assert_eq!(row.get::<_, Option<&str>>("refresh_action_reason"), Some(reason.as_str()));
        let viewed: Option<String> = c
            .query_one_scalar(
                "SELECT refresh_action_reason FROM dyngate.dynamic_tables WHERE table_name = $1",
                &[&name],
            )
            .await
            .unwrap();
        assert_eq!(viewed.as_deref(), Some(reason.as_str()));
    }
    // A partitioned table: its refreshes replace partitions.
    c.batch_execute("CREATE DYNAMIC TABLE parts PARTITIONED BY (day) FRESHNESS = INTERVAL '1' DAY AS SELECT day, count(*) AS n FROM orders GROUP BY day")
        .await
        .unwrap();
    assert_eq!(describe(&c, "parts", "refresh_action").await.as_deref(), Some("FULL"));
    assert!(
        describe(&c, "parts", "refresh_action_reason")
            .await
            .unwrap()
            .contains("PARTITIONED BY")
    );

    // Refreshed fully, as said.
    refresh(&c, "by_day").await;
    assert_eq!(last_refresh(&c, "by_day").await, ("FULL".into(), None));

    // Asking for incremental names what is in the way, and creates nothing.
    let err = c
        .batch_execute(
            "CREATE DYNAMIC TABLE want WITH ('refresh.action' = 'incremental') FRESHNESS = INTERVAL '1' DAY
             AS SELECT day, count(*) AS n FROM orders GROUP BY ROLLUP (day)",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("0A000"), "{err:?}");
    assert!(
        message(&err).contains("cannot be refreshed incrementally: GROUP BY ALL, ROLLUP"),
        "{}",
        message(&err)
    );
    let left: i64 = one(&c, "SELECT count(*) FROM pg_class WHERE relname = 'want'").await;
    assert_eq!(left, 0);
    let err = c
        .batch_execute("CREATE DYNAMIC TABLE want WITH ('refresh.action' = 'fast') FRESHNESS = INTERVAL '1' DAY AS SELECT id FROM orders")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("22023"), "{err:?}");
    // Where it can be met, it is.
    c.batch_execute(
        "CREATE DYNAMIC TABLE want WITH ('refresh.action' = 'incremental') FRESHNESS = INTERVAL '1' DAY AS SELECT id FROM orders",
    )
    .await
    .unwrap();
    assert_eq!(describe(&c, "want", "refresh_action").await.as_deref(), Some("INCREMENTAL"));
}

#[tokio::test]
async fn alter_switches_the_refresh_action() {
    let (_pg, _db, _gw, c) = setup().await;
    c.batch_execute("CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' DAY AS SELECT id, day FROM orders WHERE id % 2 = 0")
        .await
        .unwrap();
    // ALTER SET ('refresh.action' = 'full'): refreshed fully; capture goes.
    c.simple_query("ALTER DYNAMIC TABLE t SET ('refresh.action' = 'full')")
        .await
        .unwrap();
    assert_eq!(describe(&c, "t", "refresh_action").await.as_deref(), Some("FULL"));
    let captured: i64 = one(&c, "SELECT count(*) FROM dyngate.change_capture").await;
    assert_eq!(captured, 0);
    c.batch_execute("DELETE FROM orders WHERE id = 2").await.unwrap();
    refresh(&c, "t").await;
    assert_eq!(last_refresh(&c, "t").await, ("FULL".into(), None));

    // RESET: back to incremental, after one full refresh.
    c.simple_query("ALTER DYNAMIC TABLE t RESET ('refresh.action')").await.unwrap();
    assert_eq!(describe(&c, "t", "refresh_action").await.as_deref(), Some("INCREMENTAL"));
    c.batch_execute("DELETE FROM orders WHERE id = 4").await.unwrap();
    refresh(&c, "t").await;
    assert_eq!(last_refresh(&c, "t").await.0, "FULL");
    c.batch_execute("DELETE FROM orders WHERE id = 6").await.unwrap();
    refresh(&c, "t").await;
    assert_eq!(last_refresh(&c, "t").await, ("INCREMENTAL".into(), Some(1)));
    let recompute = "(SELECT id, day FROM orders WHERE id % 2 = 0)";
    assert_eq!(content(&c, "t").await, content(&c, recompute).await);

    // ALTER ... AS with a query that cannot be incremental: FULL, with the reason.
    c.batch_execute("ALTER DYNAMIC TABLE t AS SELECT id, day, count(*) OVER () AS n FROM orders WHERE id % 2 = 0")
        .await
        .unwrap();
    assert_eq!(describe(&c, "t", "refresh_action").await.as_deref(), Some("FULL"));
    assert!(
        describe(&c, "t", "refresh_action_reason")
            .await
            .unwrap()
            .contains("window functions")
    );
    // And back to one that can: applied from the ALTER's own refill on.
    c.batch_execute("ALTER DYNAMIC TABLE t AS SELECT id, day, round(amount)::bigint AS n FROM orders WHERE id % 2 = 0")
        .await
        .unwrap();
    assert_eq!(describe(&c, "t", "refresh_action").await.as_deref(), Some("INCREMENTAL"));
    c.batch_execute("UPDATE orders SET amount = 0 WHERE id = 8").await.unwrap();
    refresh(&c, "t").await;
    assert_eq!(last_refresh(&c, "t").await, ("INCREMENTAL".into(), Some(2)));
    let recompute = "(SELECT id, day, round(amount)::bigint AS n FROM orders WHERE id % 2 = 0)";
    assert_eq!(content(&c, "t").await, content(&c, recompute).await);
}

#[tokio::test]
async fn suspended_tables_catch_up_and_drop_removes_unneeded_capture() {
    suspended_and_dropped(Capture::Auto).await;
}

#[tokio::test]
async fn suspended_tables_catch_up_and_drop_removes_unneeded_triggers() {
    suspended_and_dropped(Capture::Default).await;
}

async fn suspended_and_dropped(capture: Capture) {
    let (_pg, _db, _gw, c) = setup_with(capture).await;
    let how = if capture == Capture::Auto { "wal" } else { "triggers" };
    for (name, filter) in [("odd", "id % 2 = 1"), ("even", "id % 2 = 0")] {
        c.batch_execute(&format!(
            "CREATE DYNAMIC TABLE {name} FRESHNESS = INTERVAL '1' DAY AS SELECT id, amount FROM orders WHERE {filter}"
        ))
        .await
        .unwrap();
    }
    // A table reading a dynamic table is incremental too.
    c.batch_execute("CREATE DYNAMIC TABLE odd_big FRESHNESS = INTERVAL '1' DAY AS SELECT id FROM odd WHERE amount > 100")
        .await
        .unwrap();
    assert_eq!(describe(&c, "odd_big", "refresh_action").await.as_deref(), Some("INCREMENTAL"));

    c.simple_query("ALTER DYNAMIC TABLE odd SUSPEND").await.unwrap();
    c.batch_execute("DELETE FROM orders WHERE id IN (101, 102, 103); INSERT INTO orders VALUES (1001, NULL, 1001, NULL)")
        .await
        .unwrap();
    refresh(&c, "even").await;
    assert_eq!(last_refresh(&c, "even").await, ("INCREMENTAL".into(), Some(4)));
    // odd has not applied them: they are kept for it (in the log; from the WAL, in the slot until
    // collected).
    if how == "triggers" {
        assert_eq!(log_rows(&c).await, 4);
    }
    c.simple_query("ALTER DYNAMIC TABLE odd RESUME").await.unwrap();
    refresh(&c, "odd").await;
    assert_eq!(last_refresh(&c, "odd").await, ("INCREMENTAL".into(), Some(4)));
    let recompute = "(SELECT id, amount FROM orders WHERE id % 2 = 1)";
    assert_eq!(content(&c, "odd").await, content(&c, recompute).await);
    // odd's refresh logged what it changed in odd, for odd_big.
    refresh(&c, "odd_big").await;
    assert_eq!(last_refresh(&c, "odd_big").await, ("INCREMENTAL".into(), Some(3)));
    assert_eq!(
        content(&c, "odd_big").await,
        content(&c, "(SELECT id FROM odd WHERE amount > 100)").await
    );
    assert_eq!(log_rows(&c).await, 0);

    assert_eq!(captured(&c, "orders").await, how);
    assert_eq!(captured(&c, "odd").await, how);
    c.batch_execute("DROP DYNAMIC TABLE odd_big").await.unwrap();
    assert_eq!(captured(&c, "odd").await, "none", "no one reads odd incrementally any more");
    c.batch_execute("DROP DYNAMIC TABLE odd").await.unwrap();
    assert_eq!(captured(&c, "orders").await, how, "even still needs it");
    c.batch_execute("DROP DYNAMIC TABLE even").await.unwrap();
    assert_eq!(captured(&c, "orders").await, "none");
    let left: i64 = one(
        &c,
        "SELECT (SELECT count(*) FROM dyngate.change_capture)
                  + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = 'dyngate' AND c.relname LIKE 'changes_%')
                  + (SELECT count(*) FROM pg_proc WHERE proname ~ '^capture_(insert|delete|update|truncate)_')",
    )
    .await;
    assert_eq!(left, 0, "no log, function or catalog row is left");
    c.batch_execute("INSERT INTO orders VALUES (2000, NULL, 1, NULL)").await.unwrap();
    if capture == Capture::Auto {
        // The replication slot and the publication go too (the streamer drops them once it
        // finds nothing captured from the WAL, within a few seconds): a slot nobody reads would
        // keep the WAL from being recycled.
        let mut left = (1, 1);
        for _ in 0..100 {
            let r = c
                .query_one(
                    "SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()),
                            (SELECT count(*) FROM pg_publication WHERE pubname = 'dyngate_capture')",
                    &[],
                )
                .await
                .unwrap();
            left = (r.get::<_, i64>(0), r.get::<_, i64>(1));
            if left == (0, 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(left, (0, 0), "slots and publications left");
    }
}

/// A small deterministic generator (xorshift64*): the workload follows from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A small value or NULL (so that rows repeat and NULLs are common).
    fn value(&mut self, n: u64) -> String {
        match self.below(n + 1) {
            0 => "NULL".into(),
            v => v.to_string(),
        }
    }
}

/// The query shapes refreshed incrementally, each compared with its recompute after every
/// refresh.
const SHAPES: &[(&str, &str)] = &[
    ("filtered", "SELECT k, v FROM r WHERE v IS NULL OR v > 3"),
    ("projected", "SELECT k * 2 AS k2, coalesce(v, -1) AS v, note FROM r"),
    ("dups", "SELECT v FROM r WHERE k % 2 = 0"),
    ("all_rows", "SELECT note, k FROM r"),
    (
        "grouped",
        "SELECT k, count(*) AS n, sum(v) AS s, avg(v) AS a, min(v) AS lo, max(v) AS hi, count(note) AS notes FROM r GROUP BY k",
    ),
    (
        "joined",
        "SELECT r.k, r.v, s.w, s.k AS sk FROM r JOIN s ON s.k = r.k WHERE s.w IS NULL OR s.w <> 2",
    ),
    (
        "joined_groups",
        "SELECT s.w, count(*) AS n, sum(r.v) AS total, max(r.note) AS mx, min(s.k) AS lo FROM r JOIN s ON s.k = r.k GROUP BY s.w",
    ),
    ("distinct_rows", "SELECT DISTINCT v, note FROM r WHERE k IS NULL OR k < 8"),
    // Numeric values of several scales: a sum has its largest-scale value's scale.
    (
        "scaled",
        "SELECT k, sum(v::numeric / 4) AS s, avg(v::numeric / 3) AS a, sum(CASE WHEN v > 3 THEN 1.5 ELSE 2 END) AS t FROM r GROUP BY k",
    ),
    (
        "unioned",
        "SELECT k, v FROM r WHERE v > 2 UNION ALL SELECT k, w FROM s UNION ALL SELECT r.k, s.w FROM r JOIN s ON s.k = r.k WHERE r.v IS NULL",
    ),
    (
        "grouped_expr",
        "SELECT v % 3 AS b, note, count(*) AS n, min(note) AS mn, max(k) AS mx, avg(k::numeric / 7) AS a FROM r WHERE k IS NULL OR k > 2 GROUP BY v % 3, note",
    ),
    // Outer joins: rows NULL-extended while nothing matches them, and no longer once something does.
    (
        "left_joined",
        "SELECT r.k, r.v, s.w FROM r LEFT JOIN s ON s.k = r.k AND s.w <> 1 WHERE r.v IS DISTINCT FROM 2",
    ),
    ("right_joined", "SELECT r.v, s.k, s.w FROM r RIGHT JOIN s ON s.k = r.k AND r.v > 2"),
    (
        "full_joined",
        "SELECT r.k AS rk, r.v, s.k AS sk, s.w FROM r FULL JOIN s ON s.k = r.k AND r.v < s.w",
    ),
    (
        "outer_groups",
        "SELECT s.w, count(*) AS n, count(r.v) AS nv, sum(r.v) AS total, max(r.v) AS hi FROM s LEFT JOIN r ON r.k = s.k GROUP BY s.w",
    ),
    (
        "chained",
        "SELECT r.k, s.w, s2.k AS k2 FROM r LEFT JOIN s ON s.k = r.k RIGHT JOIN s AS s2 ON s2.k = r.k + 1 AND s2.w < 2",
    ),
    // Subqueries and common table expressions in FROM.
    (
        "subqueried",
        "SELECT x.k, x.v2, s.w FROM (SELECT r.k, r.v * 2 AS v2 FROM r WHERE r.v IS NOT NULL) x JOIN s ON s.k = x.k",
    ),
    (
        "with_ctes",
        "WITH big AS (SELECT k, v FROM r WHERE v > 2), named AS (SELECT b.k, b.v, s.w FROM big b LEFT JOIN s ON s.k = b.k)
         SELECT n.k, count(*) AS c, sum(n.v) AS total, max(n.w) AS mw FROM named n GROUP BY n.k",
    ),
    (
        "sub_union",
        "SELECT u.a, u.b FROM (SELECT k, v FROM r UNION ALL SELECT k, w FROM s) u(a, b) WHERE u.b IS DISTINCT FROM 1",
    ),
    (
        "sub_joined",
        "SELECT s.w, x.v FROM s JOIN (SELECT r.k, r.v FROM r WHERE r.v > 1) x ON x.k = s.k",
    ),
    (
        "sub_outer",
        "SELECT s.k, t.v, t.note FROM s LEFT JOIN (SELECT r.k, r.v, r.note FROM r WHERE r.note IS NOT NULL) t ON t.k = s.k",
    ),
    // Grouped tables that are their own state (IN_PLACE): count(*), and sums of one scale that
    // are NULL only in a group with no rows: amt is numeric(8,2) NOT NULL, v and s.k are counted.
    (
        "counted",
        "SELECT k, count(*) AS n, sum(v) AS s, count(v) AS nv, sum(amt) AS total FROM r GROUP BY k",
    ),
    (
        "joined_counted",
        "SELECT s.w, r.note, count(*) AS n, sum(r.amt) AS total, sum(s.k) AS sk, count(s.k) AS nk FROM r JOIN s ON s.k = r.k GROUP BY s.w, r.note",
    ),
    // The same sum over a LEFT JOIN's NULL-extended side: a state table.
    (
        "outer_counted",
        "SELECT s.w, count(*) AS n, sum(r.amt) AS total FROM s LEFT JOIN r ON r.k = s.k GROUP BY s.w",
    ),
];

/// The shapes of SHAPES whose table is its own state (no state table).
const IN_PLACE: &[&str] = &["counted", "joined_counted"];

#[tokio::test]
async fn randomized_workloads_match_a_recompute() {
    randomized(Capture::WalBusy).await;
}

#[tokio::test]
async fn randomized_workloads_match_a_recompute_with_triggers() {
    randomized(Capture::Triggers).await;
}

async fn randomized(capture: Capture) {
    let seed: u64 = std::env::var("DYNGATE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("DYNGATE_TEST_SEED={seed} ({capture:?})");
    let (_pg, _db, _gw, c) = catalog_setup(capture.args(), &[]).await;
    let mut rng = Rng(seed);
    let load = "INSERT INTO r SELECT CASE WHEN g % 7 = 0 THEN NULL ELSE g % 10 END, CASE WHEN g % 5 = 0 THEN NULL ELSE g % 6 END,
                       CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || (g % 4) END, (g % 13) * 0.25
                  FROM generate_series(1, 400) g; ANALYZE r;";
    let load_s = "INSERT INTO s SELECT CASE WHEN g % 9 = 0 THEN NULL ELSE g % 10 END, g % 4 FROM generate_series(1, 30) g; ANALYZE s;";
    c.batch_execute(&format!(
        "CREATE TABLE r (k int, v int, note text, amt numeric(8, 2) NOT NULL); {load} CREATE TABLE s (k int, w int); {load_s}"
    ))
    .await
    .unwrap();
    for (name, query) in SHAPES {
        c.batch_execute(&format!("CREATE DYNAMIC TABLE {name} FRESHNESS = INTERVAL '1' DAY AS {query}"))
            .await
            .unwrap();
        assert_eq!(describe(&c, name, "refresh_action").await.as_deref(), Some("INCREMENTAL"), "{name}");
        if query.contains("GROUP BY") {
            assert_eq!(state_table(&c, name).await.is_none(), IN_PLACE.contains(name), "{name}");
        }
    }
    let mut incremental = 0;
    for round in 0..30 {
        let mut statements = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let k = rng.value(10);
            let s = match rng.below(24) {
                0 => format!("TRUNCATE r; {load}"),
                19 if rng.below(6) == 0 => format!("TRUNCATE s; {load_s}"),
                19..=22 => match rng.below(3) {
                    0 => format!(
                        "INSERT INTO s VALUES ({k}, {}), ({}, {})",
                        rng.value(4),
                        rng.value(10),
                        rng.value(4)
                    ),
                    1 => format!("UPDATE s SET w = {} WHERE k IS NOT DISTINCT FROM {k}", rng.value(4)),
                    _ => format!("DELETE FROM s WHERE ctid IN (SELECT ctid FROM s WHERE k IS NOT DISTINCT FROM {k} LIMIT 1)"),
                },
                1..=6 => {
                    let rows: Vec<String> = (0..1 + rng.below(8))
                        .map(|_| {
                            let note = match rng.below(4) {
                                0 => "NULL".to_string(),
                                n => format!("'n{n}'"),
                            };
                            format!("({}, {}, {note}, {}.{})", rng.value(10), rng.value(6), rng.below(9), rng.below(100))
                        })
                        .collect();
                    format!("INSERT INTO r VALUES {}", rows.join(", "))
                }
                7..=12 => format!(
                    "UPDATE r SET v = {}, amt = amt + 0.5 WHERE k IS NOT DISTINCT FROM {k} AND ctid IN (SELECT ctid FROM r WHERE k IS NOT DISTINCT FROM {k} LIMIT 3)",
                    rng.value(6)
                ),
                13..=16 => format!("DELETE FROM r WHERE ctid IN (SELECT ctid FROM r WHERE k IS NOT DISTINCT FROM {k} LIMIT 2)"),
                17 => format!("BEGIN; DELETE FROM r WHERE k IS NOT DISTINCT FROM {k}; ROLLBACK"),
                18 => format!(
                    "BEGIN; UPDATE r SET v = v + 1 WHERE k IS NOT DISTINCT FROM {k}; UPDATE s SET w = 3 WHERE k IS NOT DISTINCT FROM {k}; COMMIT"
                ),
                _ => format!(
                    "DELETE FROM r WHERE v = (SELECT max(v) FROM r) AND k IS NOT DISTINCT FROM {k}; UPDATE s SET k = {} WHERE ctid IN (SELECT ctid FROM s WHERE k IS NOT DISTINCT FROM {k} LIMIT 1)",
                    rng.value(10)
                ),
            };
            statements.push(s);
        }
        let script = statements.join("; ");
        c.batch_execute(&script)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}, round {round}: {script}: {e}"));
        for (name, query) in SHAPES {
            // Some tables skip rounds: changes pile up for them.
            if rng.below(4) == 0 {
                continue;
            }
            refresh(&c, name).await;
            let (action, _) = last_refresh(&c, name).await;
            incremental += (action == "INCREMENTAL") as usize;
            assert_eq!(
                content(&c, name).await,
                content(&c, &format!("({query})")).await,
                "seed {seed} ({capture:?}), round {round}, {name} after {action}; last statements: {script}"
            );
        }
    }
    assert!(incremental >= 40, "seed {seed}: only {incremental} refreshes were incremental");
}

#[tokio::test]
async fn loop_and_manual_refreshes_interleave() {
    let (_pg, _db, _gw, c) = setup().await;
    // Continuous: the refresh loop refreshes it every second and claims its slots in the catalog
    // while manual refreshes run.
    c.batch_execute(
        "CREATE DYNAMIC TABLE live FRESHNESS = INTERVAL '1' SECOND
           AS SELECT day, count(*) AS n, sum(amount) AS total, max(id) AS last FROM orders GROUP BY day",
    )
    .await
    .unwrap();
    assert_eq!(describe(&c, "live", "refresh_action").await.as_deref(), Some("INCREMENTAL"));
    let recompute = "(SELECT day, count(*) AS n, sum(amount) AS total, max(id) AS last FROM orders GROUP BY day)";
    for i in 0..12 {
        c.batch_execute(&format!(
            "INSERT INTO orders VALUES ({id}, '2024-05-01', {i}, NULL); DELETE FROM orders WHERE id = (SELECT max(id) FROM orders WHERE day = '2024-01-02')",
            id = 5000 + i
        ))
        .await
        .unwrap();
        refresh(&c, "live").await;
        assert_eq!(content(&c, "live").await, content(&c, recompute).await, "after change {i}");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    let failed: i64 = one(
        &c,
        "SELECT count(*) FROM dyngate.refresh_history WHERE table_name = 'live' AND state NOT IN ('SUCCEEDED', 'SKIPPED')",
    )
    .await;
    assert_eq!(failed, 0);
    let scheduled: i64 = one(
        &c,
        "SELECT count(*) FROM dyngate.refresh_history WHERE table_name = 'live' AND trigger = 'SCHEDULED' AND state = 'SUCCEEDED'",
    )
    .await;
    assert!(scheduled > 0, "the loop refreshed it too");
}

/// Writers commit while refreshes run, so transactions commit between a refresh's sync and its
/// snapshot, and batches commit after its snapshot (collect::fetch_gap copies those). A second
/// gateway shares the catalog: one of the two streams the WAL, and the other's refreshes wait
/// for it. Every change must be applied exactly once: after the writers stop, one more refresh
/// must equal the recompute (a change lost or applied twice would stay wrong).
#[tokio::test]
async fn writers_committing_during_wal_refreshes_are_applied_once() {
    let (pg, db, gw, c) = setup_with(Capture::WalBusy).await;
    let other = Dyngate::for_db(&pg, &db, Capture::WalBusy.args());
    let c2 = connect(&other.url("postgres", &pg.password, &db)).await;
    // Large enough that the cost guard keeps the refreshes incremental.
    c.batch_execute("INSERT INTO orders SELECT g, date '2024-01-01' + g % 3, g, 'n' FROM generate_series(401, 50000) g; ANALYZE orders;")
        .await
        .unwrap();
    let grouped = "SELECT day, count(*) AS n, sum(amount) AS total, min(id) AS first, max(id) AS last FROM orders GROUP BY day";
    let rows = "SELECT id, day, amount FROM orders WHERE note IS NOT NULL";
    for (name, query) in [("g", grouped), ("r", rows)] {
        c.batch_execute(&format!("CREATE DYNAMIC TABLE {name} FRESHNESS = INTERVAL '1' DAY AS {query}"))
            .await
            .unwrap();
        assert_eq!(describe(&c, name, "refresh_action").await.as_deref(), Some("INCREMENTAL"));
    }
    assert_eq!(captured(&c, "orders").await, "wal");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2i32 {
        let writer = connect(&pg.url_for("postgres", &pg.password, &db)).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0i32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = 100_000 + w * 100_000 + i;
                writer
                    .batch_execute(&format!(
                        "INSERT INTO orders VALUES ({id}, date '2024-01-01' + {i} % 4, {i}, 'w');
                         UPDATE orders SET amount = amount + 1 WHERE id = {old};
                         DELETE FROM orders WHERE id = {gone};",
                        old = 1 + (i * 7 + w) % 400,
                        gone = id - 3,
                    ))
                    .await
                    .unwrap();
                i += 1;
            }
            i
        }));
    }
    let mut refreshes = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(6);
    while std::time::Instant::now() < until {
        for (client, name) in [(&c, "g"), (&c2, "r"), (&c2, "g"), (&c, "r")] {
            refresh(client, name).await;
            refreshes += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(written > 100, "the writers wrote {written} times");
    for (name, query) in [("g", grouped), ("r", rows)] {
        refresh(&c2, name).await;
        assert_eq!(
            content(&c, name).await,
            content(&c, &format!("({query})")).await,
            "{name} after {refreshes} refreshes and {written} writes"
        );
        let actions: Vec<String> = c
            .query_scalar(
                "SELECT DISTINCT action FROM dyngate.refresh_history WHERE table_name = $1 AND trigger = 'MANUAL'",
                &[&name],
            )
            .await
            .unwrap();
        assert!(actions.contains(&"INCREMENTAL".to_string()), "{name}: {actions:?}");
    }
    // One gateway streamed: the slot had one reader at a time.
    let streamed = [gw.log(), other.log()]
        .iter()
        .filter(|l| l.contains("streaming changes from the WAL"))
        .count();
    assert!(streamed >= 1, "no gateway streamed");
}

/// A captured column no dynamic table reads any more may change its type (while one reads it,
/// its view keeps the type from changing): writers go on writing (the log's column follows the
/// new type), and the tables left are still refreshed incrementally, and right. With triggers,
/// and from the WAL.
#[tokio::test]
async fn a_captured_column_nobody_reads_may_change_its_type() {
    for capture in [Capture::Triggers, Capture::Auto] {
        let (_pg, _db, _gw, c) = setup_with(capture).await;
        for create in [
            "CREATE DYNAMIC TABLE by_day FRESHNESS = INTERVAL '1' DAY AS SELECT day, count(*) AS n FROM orders GROUP BY day",
            "CREATE DYNAMIC TABLE big FRESHNESS = INTERVAL '1' DAY AS SELECT id, amount FROM orders WHERE amount > 100",
        ] {
            c.batch_execute(create).await.unwrap();
        }
        let refused = c.batch_execute("ALTER TABLE orders ALTER COLUMN day TYPE text").await.unwrap_err();
        assert_eq!(code(&refused), Some("0A000"), "{capture:?}: by_day's view reads day: {refused}");
        // day stays captured (big still reads orders), and nobody reads it now.
        c.batch_execute("DROP DYNAMIC TABLE by_day").await.unwrap();
        // (The rewrite leaves orders without statistics, which the cost guard would take for an
        // empty table: ANALYZE, as autovacuum would.)
        c.batch_execute("ALTER TABLE orders ALTER COLUMN day TYPE text USING to_char(day, 'YYYY-MM-DD'); ANALYZE orders")
            .await
            .unwrap();
        c.batch_execute(
            "INSERT INTO orders VALUES (9001, 'some day', 500, NULL);
             UPDATE orders SET amount = amount + 1, day = 'later' WHERE id > 390;
             DELETE FROM orders WHERE id = 395",
        )
        .await
        .unwrap();
        refresh(&c, "big").await;
        let last = last_refresh(&c, "big").await;
        assert_eq!(last.0, "INCREMENTAL", "{capture:?}: {last:?}");
        assert_eq!(
            content(&c, "big").await,
            content(&c, "(SELECT id, amount FROM orders WHERE amount > 100)").await,
            "{capture:?}"
        );
    }
}

/// The gateway streaming the WAL goes away (killed: no clean shutdown): another gateway sharing
/// the catalog takes the stream over, and no change is lost or applied twice, those made while
/// no gateway streamed included.
#[tokio::test]
async fn another_gateway_takes_the_wal_stream_over() {
    let (pg, db, mut first, c) = setup_with(Capture::WalBusy).await;
    let query = "SELECT day, count(*) AS n, sum(amount) AS total, max(id) AS last FROM orders GROUP BY day";
    c.batch_execute(&format!("CREATE DYNAMIC TABLE g FRESHNESS = INTERVAL '1' DAY AS {query}"))
        .await
        .unwrap();
    let second = Dyngate::for_db(&pg, &db, Capture::WalBusy.args());
    let c2 = connect(&second.url("postgres", &pg.password, &db)).await;
    let direct = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    direct
        .batch_execute("INSERT INTO orders VALUES (1001, '2024-01-01', 7, NULL); DELETE FROM orders WHERE id = 5")
        .await
        .unwrap();
    refresh(&c2, "g").await;
    assert_eq!(content(&c2, "g").await, content(&c2, &format!("({query})")).await);
    // The first gateway started streaming (it made the slot); it is killed.
    assert!(first.log().contains("streaming changes from the WAL"), "{}", first.log());
    first.signal(libc::SIGKILL);
    first.wait(std::time::Duration::from_secs(10)).expect("killed");
    direct
        .batch_execute("INSERT INTO orders VALUES (1002, '2024-01-02', 9, 'x'); UPDATE orders SET amount = amount * 2 WHERE id < 20")
        .await
        .unwrap();
    refresh(&c2, "g").await;
    assert_eq!(last_refresh(&c2, "g").await.0, "INCREMENTAL");
    assert_eq!(content(&c2, "g").await, content(&c2, &format!("({query})")).await);
    assert!(second.log().contains("streaming changes from the WAL"), "{}", second.log());
}

/// Group keys whose values are equal but print differently (numeric 1.5 and 1.50): a group whose
/// extremum was deleted is recomputed from all its rows, whichever way they print.
#[tokio::test]
async fn equal_keys_that_print_differently_are_one_group() {
    let (_pg, _db, _gw, c) = setup().await;
    c.batch_execute(
        "CREATE TABLE prices (k numeric, v int);
         INSERT INTO prices VALUES (1.5, 1), (1.50, 7), (1.500, 3), (2, 4), (2.0, 9), (NULL, 5), (NULL, 6);
         -- Other groups, so that the cost guard keeps the refresh incremental.
         INSERT INTO prices SELECT 100 + g % 50, g FROM generate_series(1, 1000) g;
         ANALYZE prices",
    )
    .await
    .unwrap();
    let query = "SELECT k, count(*) AS n, max(v) AS hi, min(v) AS lo, sum(v) AS total, sum(v * 0.5) AS half FROM prices GROUP BY k";
    c.batch_execute(&format!("CREATE DYNAMIC TABLE p FRESHNESS = INTERVAL '1' DAY AS {query}"))
        .await
        .unwrap();
    assert_eq!(describe(&c, "p", "refresh_action").await.as_deref(), Some("INCREMENTAL"));
    // Each group's maximum and minimum go, from rows printed another way than the group's.
    c.batch_execute("DELETE FROM prices WHERE v IN (7, 9, 6, 1)").await.unwrap();
    refresh(&c, "p").await;
    assert_eq!(last_refresh(&c, "p").await.0, "INCREMENTAL");
    let compare = "SELECT k::text IS NULL, n, hi, lo, total, half FROM";
    assert_eq!(
        content(&c, &format!("({compare} p)")).await,
        content(&c, &format!("({compare} ({query}) s)")).await
    );
    // A group's row is replaced whichever way its key printed when it was written (by the
    // full fill, or by an apply).
    for change in [
        "INSERT INTO prices VALUES (1.50000, 11), (2.00, 12)",
        "DELETE FROM prices WHERE v = 12",
        "UPDATE prices SET v = v + 1 WHERE k = 1.5",
    ] {
        c.batch_execute(change).await.unwrap();
        refresh(&c, "p").await;
        assert_eq!(
            content(&c, &format!("({compare} p)")).await,
            content(&c, &format!("({compare} ({query}) s)")).await,
            "after {change}"
        );
    }
}

/// A grouped table's state leaves room on its pages for the updates of the next applies, also a
/// state made before dyngate did (catalog V8 sets it when the gateway starts); the applies go on
/// matching a recompute.
#[tokio::test]
async fn state_tables_leave_room_for_updates_in_place() {
    let (pg, db, gw, c) = setup().await;
    let query = "SELECT day, count(*) AS n, sum(amount) AS total FROM orders GROUP BY day";
    c.batch_execute(&format!("CREATE DYNAMIC TABLE g FRESHNESS = INTERVAL '1' DAY AS {query}"))
        .await
        .unwrap();
    let direct = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    let state: String = one(
        &direct,
        "SELECT format('dyngate.%I', 'state_' || id) FROM dyngate.dynamic_table WHERE table_name = 'g'",
    )
    .await;
    assert_eq!(reloptions(&direct, &state).await, "{fillfactor=40}");
    // As a state table made before V8: no setting, and the migration not applied yet.
    direct
        .batch_execute(&format!(
            "ALTER TABLE {state} RESET (fillfactor); DELETE FROM dyngate.schema_migrations WHERE version = 8"
        ))
        .await
        .unwrap();
    drop((c, gw));
    let gw = Dyngate::for_db(&pg, &db, &[]);
    let c = connect(&gw.url("postgres", &pg.password, &db)).await;
    assert_eq!(reloptions(&direct, &state).await, "{fillfactor=40}");
    for round in 0..3 {
        direct
            .batch_execute(&format!(
                "UPDATE orders SET amount = amount + 1 WHERE id % 40 = {round};
                 INSERT INTO orders VALUES (500 + {round}, '2024-01-02', 1.5, NULL);
                 DELETE FROM orders WHERE id % 50 = {round} + 1"
            ))
            .await
            .unwrap();
        refresh(&c, "g").await;
        assert_eq!(last_refresh(&c, "g").await.0, "INCREMENTAL");
        assert_eq!(content(&c, "g").await, content(&c, &format!("({query})")).await, "round {round}");
    }
}

/// The state table of a grouped dynamic table, if it has one.
async fn state_table(c: &Client, table: &str) -> Option<String> {
    c.query_one_scalar(
        "SELECT to_regclass(format('dyngate.%I', 'state_' || id))::text FROM dyngate.dynamic_table WHERE table_name = $1",
        &[&table],
    )
    .await
    .unwrap()
}

/// The unique indexes on a table, as their definitions.
async fn unique_indexes(c: &Client, table: &str) -> Vec<String> {
    c.query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::text::regclass AND indisunique ORDER BY 1",
        &[&table],
    )
    .await
    .unwrap()
}

/// A grouped table whose aggregates a delta can be added to (count(*), and sums of one scale
/// that are NULL only with no rows) is its own state: the applies merge into its rows by a
/// unique index on the group keys, NULL keys included, and delete emptied groups. A dropped
/// index, or a NOT NULL dropped from a summed column, makes the next refresh full, which makes
/// what the applies need again.
#[tokio::test]
async fn grouped_tables_that_are_their_own_state() {
    let (_pg, _db, _gw, c) = setup().await;
    c.batch_execute(
        "CREATE TABLE sales (day date NOT NULL, region text, amount numeric(10, 2) NOT NULL, qty int);
         INSERT INTO sales SELECT date '2024-01-01' + g % 5, CASE WHEN g % 7 = 0 THEN NULL ELSE 'r' || g % 3 END,
                                  g / 4.0, CASE WHEN g % 4 = 0 THEN NULL ELSE g % 9 END
           FROM generate_series(1, 2000) g;
         ANALYZE sales;",
    )
    .await
    .unwrap();
    let query = "SELECT region, day, count(*) AS n, sum(amount) AS total, sum(qty) AS q, count(qty) AS nq FROM sales GROUP BY region, day";
    c.batch_execute(&format!("CREATE DYNAMIC TABLE by_region FRESHNESS = INTERVAL '1' DAY AS {query}"))
        .await
        .unwrap();
    assert_eq!(state_table(&c, "by_region").await, None);
    let id: String = one(&c, "SELECT id::text FROM dyngate.dynamic_table WHERE table_name = 'by_region'").await;
    assert_eq!(
        unique_indexes(&c, "by_region").await,
        [format!(
            "CREATE UNIQUE INDEX dyngate_keys_{id} ON public.by_region USING btree (region, day) NULLS NOT DISTINCT"
        )]
    );
    // Updated in place by each apply: room on its pages for the new versions.
    assert_eq!(reloptions(&c, "by_region").await, "{fillfactor=40}");
    let same = |when: &'static str| {
        let c = &c;
        async move { assert_eq!(content(c, "by_region").await, content(c, &format!("({query})")).await, "{when}") }
    };
    // Groups change (one with a NULL region), a new group comes, and one goes.
    c.batch_execute(
        "UPDATE sales SET amount = amount + 0.5, qty = NULL WHERE day = '2024-01-02' AND region IS NULL;
         INSERT INTO sales VALUES ('2024-02-01', 'new', 1.25, NULL), ('2024-02-01', 'new', 2, NULL), (date '2024-01-03', NULL, 3, 3);
         DELETE FROM sales WHERE region = 'r1' AND day = '2024-01-04';",
    )
    .await
    .unwrap();
    refresh(&c, "by_region").await;
    assert_eq!(last_refresh(&c, "by_region").await.0, "INCREMENTAL");
    same("after the first apply").await;
    let group = "SELECT n, total::text, q FROM by_region WHERE region = 'new'";
    let r = c.query_one(group, &[]).await.unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, String>(1), r.get::<_, Option<i64>>(2)),
        (2, "3.25".into(), None)
    );
    assert!(
        c.query_opt("SELECT 1 FROM by_region WHERE region = 'r1' AND day = '2024-01-04'", &[])
            .await
            .unwrap()
            .is_none()
    );
    c.batch_execute("DELETE FROM sales WHERE region = 'new'").await.unwrap();
    refresh(&c, "by_region").await;
    same("after a group emptied").await;

    // The index dropped by hand: the next refresh is full and makes it again. The owner's own
    // fillfactor stays.
    c.batch_execute(&format!(
        "DROP INDEX dyngate_keys_{id}; ALTER TABLE by_region SET (fillfactor = 70); UPDATE sales SET qty = 1 WHERE qty = 2"
    ))
    .await
    .unwrap();
    refresh(&c, "by_region").await;
    assert_eq!(last_refresh(&c, "by_region").await.0, "FULL");
    assert_eq!(unique_indexes(&c, "by_region").await.len(), 1);
    assert_eq!(reloptions(&c, "by_region").await, "{fillfactor=70}");
    c.batch_execute("UPDATE sales SET qty = 2 WHERE qty = 1 AND day = '2024-01-01'")
        .await
        .unwrap();
    refresh(&c, "by_region").await;
    assert_eq!(last_refresh(&c, "by_region").await.0, "INCREMENTAL");
    same("after the index was made again").await;

    // A new query with finer groups (a key added): the old key index would not fit its rows.
    let query = "SELECT region, day, count(*) AS n, sum(amount) AS total, sum(qty) AS q, count(qty) AS nq, qty % 2 AS odd FROM sales GROUP BY region, day, qty % 2";
    c.batch_execute(&format!("ALTER DYNAMIC TABLE by_region AS {query}")).await.unwrap();
    assert_eq!(
        unique_indexes(&c, "by_region").await,
        [format!(
            "CREATE UNIQUE INDEX dyngate_keys_{id} ON public.by_region USING btree (region, day, odd) NULLS NOT DISTINCT"
        )]
    );
    c.batch_execute("UPDATE sales SET qty = qty + 1 WHERE day = '2024-01-05' AND region = 'r1'")
        .await
        .unwrap();
    refresh(&c, "by_region").await;
    assert_eq!(last_refresh(&c, "by_region").await.0, "INCREMENTAL");
    let same = |when: &'static str| {
        let c = &c;
        async move { assert_eq!(content(c, "by_region").await, content(c, &format!("({query})")).await, "{when}") }
    };
    same("after ALTER ... AS and an apply").await;

    // amount may now be NULL: its sum could be NULL in a group with rows. The next refresh is
    // full and gives the table a state table, which the next ones apply to.
    c.batch_execute("ALTER TABLE sales ALTER amount DROP NOT NULL; INSERT INTO sales VALUES ('2024-03-01', 'x', NULL, 1)")
        .await
        .unwrap();
    refresh(&c, "by_region").await;
    assert_eq!(last_refresh(&c, "by_region").await.0, "FULL");
    assert!(state_table(&c, "by_region").await.is_some());
    same("after the full refresh").await;
    c.batch_execute("INSERT INTO sales VALUES ('2024-03-01', 'x', NULL, 2), ('2024-03-01', 'y', 5, 2)")
        .await
        .unwrap();
    refresh(&c, "by_region").await;
    assert_eq!(last_refresh(&c, "by_region").await.0, "INCREMENTAL");
    same("after an apply to the state table").await;
}

/// A generated column is not in the WAL's messages: with WAL capture, a source whose generated
/// column a table reads is captured by triggers (and refreshed incrementally all the same).
#[tokio::test]
async fn generated_columns_are_captured_by_triggers() {
    let (_pg, _db, _gw, c) = catalog_setup(Capture::Auto.args(), &[]).await;
    c.batch_execute(
        "CREATE TABLE items (id int, price numeric(8, 2) NOT NULL, taxed numeric(8, 2) GENERATED ALWAYS AS (price * 1.2) STORED);
         INSERT INTO items (id, price) SELECT g, g / 4.0 FROM generate_series(1, 500) g;
         CREATE TABLE other (id int, n int);
         INSERT INTO other SELECT g, g FROM generate_series(1, 500) g;
         ANALYZE items, other;",
    )
    .await
    .unwrap();
    let query = "SELECT id % 10 AS b, count(*) AS n, sum(taxed) AS total FROM items GROUP BY id % 10";
    c.batch_execute(&format!("CREATE DYNAMIC TABLE taxes FRESHNESS = INTERVAL '1' DAY AS {query}"))
        .await
        .unwrap();
    c.batch_execute("CREATE DYNAMIC TABLE others FRESHNESS = INTERVAL '1' DAY AS SELECT id, n FROM other WHERE n > 3")
        .await
        .unwrap();
    assert_eq!(captured(&c, "items").await, "triggers");
    assert_eq!(captured(&c, "other").await, "wal");
    c.batch_execute("UPDATE items SET price = price + 1 WHERE id < 50; DELETE FROM items WHERE id > 490")
        .await
        .unwrap();
    refresh(&c, "taxes").await;
    assert_eq!(last_refresh(&c, "taxes").await, ("INCREMENTAL".to_string(), Some(108)));
    assert_eq!(content(&c, "taxes").await, content(&c, &format!("({query})")).await);
}

async fn reloptions(c: &Client, rel: &str) -> String {
    c.query_one_scalar(
        "SELECT coalesce(reloptions, '{}')::text FROM pg_class WHERE oid = $1::text::regclass",
        &[&rel],
    )
    .await
    .unwrap()
}

/// A refresh that meets many changes in a log the planner knows nothing of (not analyzed yet)
/// gives it statistics first, so that the delta's joins are planned by its shape; a few changes
/// do not.
#[tokio::test]
async fn a_log_full_of_changes_gets_statistics() {
    let (pg, db, _gw, c) = setup().await;
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, kind int, price numeric);
         INSERT INTO items SELECT g, g % 50, g / 10.0 FROM generate_series(1, 20000) g;
         ANALYZE items;",
    )
    .await
    .unwrap();
    let query = "SELECT i.kind, count(*) AS n, sum(i.price) AS total FROM items i JOIN orders o ON o.id = i.id % 400 GROUP BY i.kind";
    c.batch_execute(&format!("CREATE DYNAMIC TABLE by_kind FRESHNESS = INTERVAL '1' DAY AS {query}"))
        .await
        .unwrap();
    let direct = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    let log = log_of(&direct, "items").await;
    // Autovacuum would analyze it sooner or later: here, only the refresh may.
    direct
        .batch_execute(&format!("ALTER TABLE {log} SET (autovacuum_enabled = false)"))
        .await
        .unwrap();
    let statistics = || async {
        direct
            .query_one_scalar::<i64, _>(
                "SELECT count(*) FROM pg_stats WHERE schemaname = 'dyngate' AND format('dyngate.%I', tablename) = $1",
                &[&log],
            )
            .await
            .unwrap()
    };
    direct
        .batch_execute("UPDATE items SET price = price + 1 WHERE id <= 100")
        .await
        .unwrap();
    refresh(&c, "by_kind").await;
    assert_eq!(last_refresh(&c, "by_kind").await, ("INCREMENTAL".to_string(), Some(200)));
    assert_eq!(statistics().await, 0, "200 changes: not analyzed");
    direct
        .batch_execute("UPDATE items SET price = price + 1 WHERE id <= 1500")
        .await
        .unwrap();
    refresh(&c, "by_kind").await;
    assert_eq!(last_refresh(&c, "by_kind").await, ("INCREMENTAL".to_string(), Some(3000)));
    assert!(statistics().await > 0, "3000 changes: analyzed");
    assert_eq!(content(&c, "by_kind").await, content(&c, &format!("({query})")).await);
}

/// The change log of `source` (a table name), quoted for SQL.
async fn log_of(c: &Client, source: &str) -> String {
    one(
        c,
        &format!("SELECT format('dyngate.%I', log_table) FROM dyngate.change_capture WHERE source = '{source}'::regclass"),
    )
    .await
}

async fn relation_size(c: &Client, rel: &str) -> i64 {
    c.query_one_scalar("SELECT pg_relation_size($1::text::regclass)", &[&rel])
        .await
        .unwrap()
}

/// A log every reader has applied is emptied with TRUNCATE (its file given back, not left to
/// vacuum); one still needed by a reader, or in use by a writer whose changes are not committed
/// yet, has its applied rows deleted instead, and nothing is lost.
#[tokio::test]
async fn drained_logs_are_truncated() {
    let (pg, db, _gw, c) = setup().await;
    let query = "SELECT id, amount FROM orders WHERE amount > 100";
    for t in ["big_a", "big_b"] {
        c.batch_execute(&format!("CREATE DYNAMIC TABLE {t} FRESHNESS = INTERVAL '1' DAY AS {query}"))
            .await
            .unwrap();
    }
    let log = log_of(&c, "orders").await;
    let same = |t: &'static str| {
        let c = &c;
        async move { assert_eq!(content(c, t).await, content(c, &format!("({query})")).await, "{t}") }
    };
    c.batch_execute("UPDATE orders SET amount = amount + 1 WHERE id % 2 = 0; DELETE FROM orders WHERE id % 7 = 0")
        .await
        .unwrap();
    // big_b has not applied them: they stay.
    refresh(&c, "big_a").await;
    let logged = log_rows(&c).await;
    assert!(logged > 200, "{logged}");
    assert!(relation_size(&c, &log).await > 0);
    refresh(&c, "big_b").await;
    assert_eq!(log_rows(&c).await, 0);
    assert_eq!(relation_size(&c, &log).await, 0, "a drained log is truncated");
    same("big_a").await;
    same("big_b").await;

    // A writer's transaction is open on the log: its rows are deleted, not truncated, and the
    // refreshes do not wait for it.
    let direct = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    c.batch_execute("INSERT INTO orders VALUES (5000, NULL, 5000, NULL)").await.unwrap();
    direct
        .batch_execute("BEGIN; INSERT INTO orders VALUES (6000, NULL, 6000, NULL)")
        .await
        .unwrap();
    for t in ["big_a", "big_b"] {
        refresh(&c, t).await;
        assert_eq!(last_refresh(&c, t).await, ("INCREMENTAL".into(), Some(1)));
    }
    assert_eq!(log_rows(&c).await, 0, "the writer's row is not committed yet");
    assert!(relation_size(&c, &log).await > 0, "deleted, not truncated");
    direct.batch_execute("COMMIT").await.unwrap();
    for t in ["big_a", "big_b"] {
        refresh(&c, t).await;
        assert_eq!(last_refresh(&c, t).await, ("INCREMENTAL".into(), Some(1)));
        same(t).await;
    }
    assert_eq!(relation_size(&c, &log).await, 0);
}

/// CREATE grants the new table's owner read access to the sources' change logs. A refresh may be
/// rewriting a log's catalog row at the same moment (the TRUNCATE of a drained log), and two
/// updates of one catalog row fail with "tuple concurrently updated" (GRANT takes no lock of its
/// own): the CREATE waits for the refresh's transaction instead, and succeeds.
#[tokio::test]
async fn create_waits_for_a_refresh_that_rewrites_a_log() {
    let (pg, db, gw, c) = setup().await;
    c.batch_execute("CREATE DYNAMIC TABLE first FRESHNESS = INTERVAL '1' DAY AS SELECT id, amount FROM orders")
        .await
        .unwrap();
    let log = log_of(&c, "orders").await;
    let carol = pg.fresh_login_role("carol", "PASSWORD 'pw'").await;
    c.batch_execute(&format!(
        "GRANT SELECT ON orders TO {carol}; GRANT CREATE ON SCHEMA public TO {carol}"
    ))
    .await
    .unwrap();
    // What a refresh's TRUNCATE of a drained log does, held open.
    let direct = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    direct.batch_execute(&format!("BEGIN; TRUNCATE {log}")).await.unwrap();
    let carol_session = connect(&gw.url(&carol, "pw", &db)).await;
    let create = tokio::spawn(async move {
        carol_session
            .batch_execute("CREATE DYNAMIC TABLE second FRESHNESS = INTERVAL '1' DAY AS SELECT id FROM orders WHERE amount > 10")
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    direct.batch_execute("COMMIT").await.unwrap();
    let created = create.await.unwrap();
    assert!(created.is_ok(), "{created:?}");
    let readable: bool = one(&c, &format!("SELECT has_table_privilege('{carol}', '{log}', 'SELECT')")).await;
    assert!(readable, "the new table's owner reads the log");
    c.batch_execute("INSERT INTO orders VALUES (9000, NULL, 9000, NULL)").await.unwrap();
    refresh(&c, "second").await;
    assert_eq!(
        content(&c, "second").await,
        content(&c, "(SELECT id FROM orders WHERE amount > 10)").await
    );
}
