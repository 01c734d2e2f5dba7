//! The interception step: dynamic-table statements are recognised before forwarding and answered
//! by dyngate itself (for now with 0A000, until the lifecycle lands), in order with the backend's
//! replies, and the session stays usable; look-alikes pass through to PostgreSQL untouched.
//! Also: logs as JSON with --log-format json, settings from DYNGATE_* and a TOML file.

mod common;

use common::*;

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
        "SELECT 1; DROP DYNAMIC TABLE d",
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        let e = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert_eq!(e.code().code(), "0A000", "{sql}");
        assert!(e.message().contains("DYNAMIC TABLE"), "{}", e.message());
        // Nothing reached PostgreSQL: the multi-statement text did not run its SELECT either.
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
    assert_eq!(n, 1);
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
