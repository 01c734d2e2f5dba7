//! The interception step: dynamic-table statements are recognised before forwarding and answered
//! by dyngate itself, in the simple and the extended protocol, in order with the backend's
//! replies, and the session stays usable; look-alikes pass through to PostgreSQL untouched.
//! Also: logs as JSON with --log-format json, settings from DYNGATE_* and a TOML file.

mod common;

use common::raw::Raw;
use common::*;
use dyngate::wire::codec::Message;

#[tokio::test]
async fn dynamic_table_statements_are_intercepted_and_the_session_goes_on() {
    let (_pg, _db, _gw, c) = catalog_setup(&[], &["CREATE TABLE t (x int); INSERT INTO t VALUES (1)"]).await;
    c.simple_query("  /* c */ CREATE DYNAMIC TABLE d FRESHNESS = INTERVAL '1' MINUTE AS SELECT x FROM t")
        .await
        .unwrap();
    let n: i64 = one(&c, "SELECT count(*) FROM d").await;
    assert_eq!(n, 1, "created and filled, readable with plain SELECT");
    // A query string mixing dyngate's and PostgreSQL's statements is refused as a whole: nothing
    // of it reaches PostgreSQL.
    let err = c.simple_query("INSERT INTO t VALUES (2); DROP DYNAMIC TABLE d").await.unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code().code(), "0A000");
    assert!(e.message().contains("cannot be combined"), "{}", e.message());
    // Malformed statements get 42601, a bad freshness 22023.
    for (sql, code) in [
        ("CREATE DYNAMIC TABLE d FRESHNESS = INTERVAL '1' MONTH AS SELECT 1", "22023"),
        ("ALTER DYNAMIC TABLE d EXPLODE", "42601"),
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some(code), "{sql}");
    }
    // Look-alikes are PostgreSQL's: a table named dynamic, a string mentioning the statement.
    c.batch_execute("CREATE TABLE dynamic (a int)").await.unwrap();
    let rows = c.simple_query("SELECT 'create dynamic table x as select 1'").await.unwrap();
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["create dynamic table x as select 1"]);
    // Replies stay in order after an intercepted statement inside a transaction.
    c.batch_execute("BEGIN").await.unwrap();
    let err = c.simple_query("REFRESH DYNAMIC TABLE d").await.unwrap_err();
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("25001"));
    let n: i64 = one(&c, "SELECT count(*) FROM t").await;
    assert_eq!(n, 1, "the refused INSERT never ran");
    c.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn json_logs_and_settings_from_environment_and_file() {
    let pg = pg();
    let dir = tmp_dir();
    let conf = dir.join("dyngate.toml");
    std::fs::write(&conf, "log-format = \"json\"\nshutdown-timeout = \"3s\"\n").unwrap();
    // The backend comes from the environment, the log format from the file.
    let ready = dir.join("ready.json");
    let log = dir.join("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dyngate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&conf)
        .arg("--ready-file")
        .arg(&ready)
        .env("DYNGATE_POSTGRES", &pg.url)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if ready.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        lines.iter().any(|v| v["fields"]["message"] == "listening for PostgreSQL clients"),
        "{text}"
    );
    assert!(!text.contains(&pg.password), "the backend password is not logged");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyngate"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--http-listen",
        "--postgres",
        "--data-dir",
        "--tls-cert",
        "--require-tls",
        "--log-format",
        "DYNGATE_LISTEN",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

/// libpq sends Parse/Bind/Describe/Execute("COPY ... FROM STDIN")/Sync in one write; PostgreSQL
/// ignores that Sync during the COPY. The gateway must not wait for a reply that never comes: a
/// statement it answers itself afterwards is answered, and shutdown finds the session idle.
#[tokio::test]
async fn extended_copy_with_early_sync_leaves_the_session_idle() {
    let pg = pg();
    let (db, role, admin) = pg.trusted_table().await;
    let mut gw = Dyngate::with_backend(&pg, &["--shutdown-timeout", "20s"]);
    let mut r = Raw::login(&gw.addr(), &role, &db).await;
    for m in [
        Message::new(b'P', b"\0COPY t FROM STDIN\0\0\0"),
        Message::new(b'B', b"\0\0\0\0\0\0\0\0"),
        Message::new(b'D', b"P\0"),
        Message::new(b'E', b"\0\0\0\0\0"),
        Message::new(b'S', b""),
    ] {
        r.send(&m).await;
    }
    let mut tags = Vec::new();
    while let Some(m) = r.next().await {
        tags.push(m.tag());
        if m.tag() == b'G' {
            break;
        }
    }
    assert_eq!(tags, b"12nG", "ParseComplete, BindComplete, NoData, CopyInResponse");
    r.send(&Message::new(b'd', b"1\n2\n")).await;
    r.send(&Message::new(b'c', b"")).await;
    r.send(&Message::new(b'S', b"")).await;
    let tags: Vec<u8> = r.until_ready().await.iter().map(|m| m.tag()).collect();
    assert_eq!(tags, b"CZ", "CommandComplete and one ReadyForQuery");

    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), r.query("SHOW DYNAMIC TABLES"))
        .await
        .expect("the gateway answers its own statement: it does not wait for a second ReadyForQuery");
    assert_eq!(reply.iter().map(|m| m.tag()).collect::<Vec<_>>(), b"EZ");

    let t0 = std::time::Instant::now();
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(std::time::Duration::from_secs(15)).expect("exits").success());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "the idle session was closed at once"
    );
    let n: i64 = one(&admin, "SELECT count(*) FROM t").await;
    assert_eq!(n, 2);
}

/// Drivers that prepare everything (pgJDBC, tokio-postgres, psycopg with prepare) send dyngate's
/// statements through Parse/Bind/Describe/Execute: they are answered in that protocol too, in
/// order with the backend's replies in a pipeline.
#[tokio::test]
async fn extended_protocol_statements_are_intercepted_in_order() {
    let (_pg, _db, _gw, c) = catalog_setup(&[], &["CREATE TABLE src (x int); INSERT INTO src VALUES (1), (2)"]).await;
    let create = c
        .prepare("CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' HOUR AS SELECT sum(x) AS s FROM src")
        .await
        .unwrap();
    assert!(create.columns().is_empty(), "no result rows: Describe answers NoData");
    c.execute(&create, &[]).await.unwrap();
    // Parse succeeds and Describe answers: no parameters, the result's columns.
    let st = c.prepare("SHOW DYNAMIC TABLES").await.unwrap();
    assert!(st.params().is_empty());
    let names: Vec<&str> = st.columns().iter().map(|c| c.name()).collect();
    assert_eq!(&names[..3], ["schema_name", "table_name", "freshness"]);
    let rows = c.query(&st, &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, &str>("table_name"), "t");
    assert_eq!(rows[0].get::<_, &str>("refresh_mode"), "FULL");
    // Errors come back from Execute.
    let err = c.query("REFRESH DYNAMIC TABLE nope", &[]).await.unwrap_err();
    assert_eq!(code(&err), Some("42P01"), "{err:?}");
    // A malformed statement fails at Parse.
    let err = c.prepare("ALTER DYNAMIC TABLE t EXPLODE").await.unwrap_err();
    assert_eq!(code(&err), Some("42601"));
    // Pipelined with PostgreSQL's own statements: replies stay in order.
    // Prepared first, so that each execution is one burst sent in join! order (a statement still
    // to be prepared would make its own round trip and could be overtaken).
    let insert = c.prepare("INSERT INTO src VALUES (39)").await.unwrap();
    let refresh = c.prepare("REFRESH DYNAMIC TABLE t").await.unwrap();
    let select = c.prepare("SELECT s::int FROM t").await.unwrap();
    let (a, b, d) = tokio::join!(c.execute(&insert, &[]), c.query_one(&refresh, &[]), c.query_one(&select, &[]));
    assert_eq!(a.unwrap(), 1);
    assert_eq!(b.unwrap().get::<_, i64>("rows_written"), 1);
    assert_eq!(
        d.unwrap().get::<_, i32>(0),
        42,
        "the refresh saw the insert before it and the select saw the refresh"
    );
    assert_eq!(one::<i32>(&c, "SELECT 3::int").await, 3);
}

/// Within one batch (messages up to a Sync), an error makes PostgreSQL skip the rest of the batch:
/// the gateway skips its own messages after a backend error, and forwards nothing after an error
/// of its own.
#[tokio::test]
async fn an_error_skips_the_rest_of_the_batch_on_both_sides() {
    let pg = pg();
    let (db, role, admin) = pg.trusted_table().await;
    let gw = Dyngate::for_db(&pg, &db, &[]);
    let mut r = Raw::login(&gw.addr(), &role, &db).await;
    let parse = |sql: &str| Message::new(b'P', format!("\0{sql}\0\0\0").as_bytes());
    let bind = Message::new(b'B', b"\0\0\0\0\0\0\0\0");
    let exec = Message::new(b'E', b"\0\0\0\0\0");
    let sync = Message::new(b'S', b"");
    let tags = |msgs: Vec<Message>| msgs.iter().map(|m| m.tag()).collect::<Vec<u8>>();

    // A backend error first: dyngate's Parse/Bind/Execute after it get no reply.
    for m in [
        parse("SELEC 1"),
        bind.clone(),
        exec.clone(),
        parse("SHOW DYNAMIC TABLES"),
        bind.clone(),
        exec.clone(),
        sync.clone(),
    ] {
        r.send(&m).await;
    }
    assert_eq!(tags(r.until_ready().await), b"EZ");

    // dyngate's error first: the INSERT after it never reaches PostgreSQL.
    for m in [
        parse("ALTER DYNAMIC TABLE t EXPLODE"),
        parse("INSERT INTO t VALUES (1)"),
        bind.clone(),
        exec.clone(),
        sync.clone(),
    ] {
        r.send(&m).await;
    }
    let reply = r.until_ready().await;
    assert_eq!(tags(reply), b"EZ");
    // Both kinds in one batch, all well formed: every reply, in order.
    for m in [
        parse("INSERT INTO t VALUES (2)"),
        bind.clone(),
        exec.clone(),
        parse("SHOW DYNAMIC TABLES"),
        bind.clone(),
        sync.clone(),
    ] {
        r.send(&m).await;
    }
    assert_eq!(tags(r.until_ready().await), b"12C12Z");
    let n: i64 = one(&admin, "SELECT count(*) FROM t").await;
    assert_eq!(n, 1, "only the INSERT of the last batch ran");
}
