//! What a dynamic table's definition binds to, and what plain DDL may do to it: the query's names
//! are resolved once, at CREATE (a table created later earlier in the search_path changes
//! nothing); plain DROP TABLE of a dynamic table, of a table it reads (with or without CASCADE),
//! of a column it reads, or of a schema holding one is refused with a clear error and changes
//! nothing; a dynamic table read by another cannot be dropped first.

mod common;

use common::*;
use tokio_postgres::Client;

async fn setup() -> (Pg, String, Dyngate, Client) {
    catalog_setup(
        &[],
        &[
            &orders(30),
            "CREATE DYNAMIC TABLE daily FRESHNESS = INTERVAL '1' HOUR AS SELECT day, sum(amount) AS total FROM orders GROUP BY day",
        ],
    )
    .await
}

async fn count(c: &Client, sql: &str) -> i64 {
    one(c, sql).await
}

/// Everything a refused DDL statement must have left alone.
async fn intact(c: &Client) {
    assert_eq!(count(c, "SELECT count(*) FROM orders").await, 30, "orders kept");
    assert_eq!(count(c, "SELECT count(*) FROM daily").await, 3, "daily kept");
    assert_eq!(
        count(c, "SELECT count(*) FROM dyngate.dynamic_tables WHERE table_name = 'daily'").await,
        1,
        "catalog row kept"
    );
    c.query_one("REFRESH DYNAMIC TABLE daily", &[]).await.expect("still refreshes");
}

#[tokio::test]
async fn plain_ddl_cannot_pull_a_dynamic_table_apart() {
    let (_pg, _db, _gw, c) = setup().await;

    let e = c.batch_execute("DROP TABLE daily").await.unwrap_err();
    assert_eq!(code(&e), Some("42809"), "{e:?}");
    assert_eq!(message(&e), "\"public.daily\" is a dynamic table");
    assert!(e.as_db_error().unwrap().hint().unwrap().contains("DROP DYNAMIC TABLE"), "{e:?}");
    intact(&c).await;

    // PostgreSQL's own dependency check, through the view that holds the query.
    let e = c.batch_execute("DROP TABLE orders").await.unwrap_err();
    assert_eq!(code(&e), Some("2BP01"), "{e:?}");
    intact(&c).await;

    let e = c.batch_execute("DROP TABLE orders CASCADE").await.unwrap_err();
    assert_eq!(code(&e), Some("2BP01"), "{e:?}");
    assert_eq!(
        message(&e),
        "cannot drop table public.orders because dynamic table public.daily reads it"
    );
    intact(&c).await;

    let e = c.batch_execute("ALTER TABLE orders DROP COLUMN amount").await.unwrap_err();
    assert_eq!(code(&e), Some("2BP01"), "{e:?}");
    let e = c.batch_execute("ALTER TABLE orders DROP COLUMN amount CASCADE").await.unwrap_err();
    assert_eq!(code(&e), Some("2BP01"), "{e:?}");
    intact(&c).await;
    // A column the query does not read may go.
    c.batch_execute("ALTER TABLE orders ADD COLUMN note text; ALTER TABLE orders DROP COLUMN note")
        .await
        .unwrap();

    c.batch_execute("CREATE SCHEMA mart").await.unwrap();
    c.batch_execute("CREATE DYNAMIC TABLE mart.d2 FRESHNESS = INTERVAL '1' HOUR AS SELECT * FROM orders")
        .await
        .unwrap();
    let e = c.batch_execute("DROP SCHEMA mart CASCADE").await.unwrap_err();
    assert_eq!(code(&e), Some("2BP01"), "{e:?}");
    assert_eq!(message(&e), "cannot drop schema mart because dynamic table mart.d2 is in it");
    assert_eq!(count(&c, "SELECT count(*) FROM mart.d2").await, 30);

    // Renaming or moving a dynamic table (or its schema) would lose it: refused.
    for sql in [
        "ALTER TABLE mart.d2 RENAME TO d3",
        "ALTER SCHEMA mart RENAME TO mart2",
        "ALTER TABLE mart.d2 SET SCHEMA public",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&e), Some("0A000"), "{sql}: {e:?}");
        assert_eq!(message(&e), "cannot rename or move dynamic table mart.d2", "{sql}");
    }
    // Other ALTER TABLEs of it are PostgreSQL's business; renaming what a dynamic table reads is
    // fine too: refreshes follow the new names.
    c.batch_execute("ALTER TABLE mart.d2 ALTER COLUMN amount SET STATISTICS 200")
        .await
        .unwrap();
    c.batch_execute("ALTER TABLE orders RENAME COLUMN amount TO price").await.unwrap();
    c.batch_execute("ALTER TABLE orders RENAME TO sales").await.unwrap();
    c.batch_execute("INSERT INTO sales VALUES (31, '2024-01-01', 5)").await.unwrap();
    c.query_one("REFRESH DYNAMIC TABLE mart.d2", &[]).await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM mart.d2").await, 31);
    let resolved: String = one(&c, "SELECT resolved_query FROM dyngate.dynamic_tables WHERE table_name = 'd2'").await;
    assert!(resolved.contains("public.sales") && resolved.contains("price"), "{resolved}");
    c.batch_execute("ALTER TABLE sales RENAME COLUMN price TO amount").await.unwrap();
    c.batch_execute("ALTER TABLE sales RENAME TO orders").await.unwrap();

    // A table that went past the guard anyway (here: a superuser switching it off for a
    // moment) leaves a catalog entry that DROP DYNAMIC TABLE still removes.
    c.batch_execute("ALTER EVENT TRIGGER dyngate_guard_drop DISABLE; DROP TABLE mart.d2; ALTER EVENT TRIGGER dyngate_guard_drop ENABLE")
        .await
        .unwrap();
    c.batch_execute("DROP DYNAMIC TABLE mart.d2").await.unwrap();
    c.batch_execute("CREATE DYNAMIC TABLE mart.d2 FRESHNESS = INTERVAL '1' HOUR AS SELECT * FROM orders")
        .await
        .unwrap();

    // The gateway's own DROP works, and leaves no view behind.
    c.batch_execute("DROP DYNAMIC TABLE mart.d2").await.unwrap();
    c.batch_execute("DROP SCHEMA mart").await.unwrap();
    c.batch_execute("DROP DYNAMIC TABLE daily").await.unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM pg_class WHERE relnamespace = 'dyngate'::regnamespace AND relkind = 'v' AND relname NOT IN ('dynamic_tables', 'refresh_history', 'flink_objects')").await,
        0
    );
    c.batch_execute("DROP TABLE orders").await.expect("nothing reads orders any more");
}

#[tokio::test]
async fn a_dynamic_table_read_by_another_is_dropped_last() {
    let (_pg, _db, _gw, c) = setup().await;
    c.batch_execute("CREATE DYNAMIC TABLE top_day FRESHNESS = INTERVAL '1' HOUR AS SELECT day FROM daily ORDER BY total DESC LIMIT 1")
        .await
        .unwrap();
    let e = c.batch_execute("DROP DYNAMIC TABLE daily").await.unwrap_err();
    assert_eq!(code(&e), Some("2BP01"), "{e:?}");
    assert_eq!(
        message(&e),
        "cannot drop dynamic table public.daily because dynamic table public.top_day reads it"
    );
    intact(&c).await;
    c.batch_execute("DROP DYNAMIC TABLE top_day").await.unwrap();
    c.batch_execute("DROP DYNAMIC TABLE daily").await.unwrap();
}

#[tokio::test]
async fn names_are_resolved_once_at_create() {
    let (_pg, _db, _gw, c) = setup().await;
    let resolved: String = one(&c, "SELECT resolved_query FROM dyngate.dynamic_tables WHERE table_name = 'daily'").await;
    assert!(resolved.contains("public.orders"), "{resolved}");
    let described = c.simple_query("DESCRIBE DYNAMIC TABLE daily").await.unwrap();
    let has_resolved = described.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0) == Some("resolved_query") && r.get(1) == Some(resolved.as_str()),
        _ => false,
    });
    assert!(has_resolved, "DESCRIBE shows the resolved query");

    // A table of the same name, created later in a schema searched first ("$user", the
    // owner's own schema, comes before public), changes nothing.
    c.batch_execute("CREATE SCHEMA postgres; CREATE TABLE postgres.orders (id int, day date, amount numeric)")
        .await
        .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM orders").await,
        0,
        "the shadow is what plain SQL sees now"
    );
    c.query_one("REFRESH DYNAMIC TABLE daily", &[]).await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM public.daily").await, 3, "still reads public.orders");
}

async fn columns(c: &Client, table: &str) -> Vec<String> {
    c.query_scalar(
        "SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute
          WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[&table],
    )
    .await
    .unwrap()
}

async fn catalog_query(c: &Client) -> String {
    one(c, "SELECT query FROM dyngate.dynamic_tables WHERE table_name = 'daily'").await
}

#[tokio::test]
async fn alter_as_may_only_append_columns() {
    let (_pg, _db, _gw, c) = setup().await;
    let before = catalog_query(&c).await;
    let refused = [
        "SELECT day FROM orders GROUP BY day",
        "SELECT day, sum(amount) AS sum FROM orders GROUP BY day",
        "SELECT day, count(*) AS total FROM orders GROUP BY day",
        "SELECT sum(amount) AS total, day FROM orders GROUP BY day",
    ];
    for q in refused {
        let e = c.batch_execute(&format!("ALTER DYNAMIC TABLE daily AS {q}")).await.unwrap_err();
        assert_eq!(code(&e), Some("42P16"), "{q}: {e:?}");
        assert!(message(&e).contains("may only append columns"), "{}", message(&e));
        assert_eq!(catalog_query(&c).await, before, "{q}: catalog unchanged");
        assert_eq!(columns(&c, "daily").await, ["day date", "total numeric"], "{q}");
    }
    // A new query that fails when run leaves everything as it was too.
    let e = c
        .batch_execute(
            "ALTER DYNAMIC TABLE daily AS SELECT day, sum(amount) AS total, 1 / (count(*) - count(*)) AS boom FROM orders GROUP BY day",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("22012"), "{e:?}");
    assert_eq!(catalog_query(&c).await, before);
    assert_eq!(columns(&c, "daily").await, ["day date", "total numeric"]);
    intact(&c).await;

    // Appending works: the column is added and filled at once, the catalog shows the new query.
    c.batch_execute("CREATE TABLE days_off (day date PRIMARY KEY)").await.unwrap();
    let q = "SELECT day, sum(amount) AS total, count(*) AS n FROM orders WHERE day NOT IN (SELECT day FROM days_off) GROUP BY day";
    c.batch_execute(&format!("ALTER DYNAMIC TABLE daily AS {q}")).await.unwrap();
    assert_eq!(columns(&c, "daily").await, ["day date", "total numeric", "n bigint"]);
    assert_eq!(count(&c, "SELECT sum(n)::bigint FROM daily").await, 30);
    assert_eq!(catalog_query(&c).await, q);
    let shown: String = one(&c, "SHOW CREATE DYNAMIC TABLE daily").await;
    assert!(shown.ends_with(q), "{shown}");
    // Dependencies follow the new query.
    let e = c.batch_execute("DROP TABLE days_off").await.unwrap_err();
    assert_eq!(code(&e), Some("2BP01"), "{e:?}");
    c.batch_execute("INSERT INTO days_off VALUES ('2024-01-01')").await.unwrap();
    c.query_one("REFRESH DYNAMIC TABLE daily", &[]).await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM daily").await, 2, "refreshes run the new query");

    // On a suspended table the new column stays empty until the table refreshes again.
    c.batch_execute("ALTER DYNAMIC TABLE daily SUSPEND").await.unwrap();
    let q2 = format!(
        "{} , max(amount) AS biggest FROM orders WHERE day NOT IN (SELECT day FROM days_off) GROUP BY day",
        "SELECT day, sum(amount) AS total, count(*) AS n"
    );
    c.batch_execute(&format!("ALTER DYNAMIC TABLE daily AS {q2}")).await.unwrap();
    assert_eq!(count(&c, "SELECT count(biggest) FROM daily").await, 0);
    c.batch_execute("ALTER DYNAMIC TABLE daily RESUME").await.unwrap();
    c.query_one("REFRESH DYNAMIC TABLE daily", &[]).await.unwrap();
    assert_eq!(count(&c, "SELECT count(biggest) FROM daily").await, 2);
}
