//! The interception step: dynamic-table statements are recognised before forwarding and answered
//! by dyngate itself (for now with 0A000, until the lifecycle lands), in order with the backend's
//! replies, and the session stays usable; look-alikes pass through to PostgreSQL untouched.
//! Also: logs as JSON with --log-format json, settings from DYNGATE_* and a TOML file.

mod common;

use common::raw::Raw;
use common::*;
use dyngate::wire::codec::Message;

#[tokio::test]
async fn dynamic_table_statements_are_intercepted_and_the_session_goes_on() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let c = connect(&gw.url("postgres", &pg.password, &db)).await;
    c.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await.unwrap();
    for sql in [
        "CREATE DYNAMIC TABLE d FRESHNESS = INTERVAL '1' MINUTE AS SELECT x FROM t",
        "alter dynamic table d suspend",
        "/* c */ SHOW DYNAMIC TABLES",
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        let e = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert_eq!(e.code().code(), "0A000", "{sql}");
        assert!(e.message().contains("DYNAMIC TABLE"), "{}", e.message());
    }
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
    assert!(c.simple_query("REFRESH DYNAMIC TABLE d").await.is_err());
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
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
    let db = pg.fresh_db().await;
    let role = pg.fresh_trusted_role("").await;
    let admin = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    admin
        .batch_execute(&format!("CREATE TABLE t (x int); GRANT ALL ON t TO {role}"))
        .await
        .unwrap();
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
    let n: i64 = admin.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
}
