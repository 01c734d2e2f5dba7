//! The gateway's own lifecycle: the embedded PostgreSQL default (initdb, reuse, clean stop,
//! adoption after a crash, one gateway per data directory), catalog migrations (applied once, by
//! two gateways at once, a changed migration refused), /healthz, and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn embedded(dir: &std::path::Path) -> Vec<String> {
    vec!["--data-dir".into(), dir.display().to_string()]
}

#[tokio::test]
async fn embedded_default_initialises_reuses_and_stops_cleanly() {
    let dir = tmp_dir().join("data");
    let mut gw = Dyngate::start(&embedded(&dir));
    let password = std::fs::read_to_string(dir.join("superuser.password")).unwrap();
    let c = connect(&gw.url("postgres", password.trim(), "postgres")).await;
    c.batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    let (status, body) = http_get(&gw.http("/healthz")).unwrap();
    assert_eq!(status, 200, "{body}");
    // A second gateway cannot take the same data directory.
    let err = Dyngate::try_start(&embedded(&dir)).err().expect("second gateway refused");
    assert!(err.contains("already using the data directory"), "{err}");
    drop(c);

    assert!(gw.stop().success());
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "the embedded PostgreSQL stopped with the gateway"
    );
    assert!(gw.log().contains("embedded PostgreSQL stopped"));

    // The next start reuses the cluster: same password, same data.
    let gw = Dyngate::start(&embedded(&dir));
    assert!(!gw.log().contains("created the embedded PostgreSQL cluster"));
    let c = connect(&gw.url("postgres", password.trim(), "postgres")).await;
    assert_eq!(one::<i32>(&c, "SELECT x FROM kept").await, 7);
}

#[tokio::test]
async fn embedded_cluster_survives_a_killed_gateway_and_is_adopted() {
    let dir = tmp_dir().join("data");
    let gw = Dyngate::start(&embedded(&dir));
    let password = std::fs::read_to_string(dir.join("superuser.password")).unwrap();
    gw.signal(libc::SIGKILL);
    drop(gw);
    assert!(dir.join("pgdata/postmaster.pid").exists(), "PostgreSQL outlives a killed gateway");
    let mut gw = Dyngate::start(&embedded(&dir));
    assert!(gw.log().contains("adopting the embedded PostgreSQL"), "{}", gw.log());
    let c = connect(&gw.url("postgres", password.trim(), "postgres")).await;
    assert_eq!(one::<i32>(&c, "SELECT 1").await, 1);
    drop(c);
    assert!(gw.stop().success());
    assert!(!dir.join("pgdata/postmaster.pid").exists());
}

#[tokio::test]
async fn missing_binaries_say_what_to_install() {
    let dir = tmp_dir();
    let err = Dyngate::try_start(&[
        "--data-dir".into(),
        dir.join("d").display().to_string(),
        "--pg-bin-dir".into(),
        "/nonexistent".into(),
    ])
    .err()
    .unwrap();
    assert!(err.contains("--pg-bin-dir /nonexistent does not contain initdb"), "{err}");
}

fn url_with_db(pg: &Pg, db: &str) -> String {
    pg.url_for("postgres", &pg.password, db)
}

#[tokio::test]
async fn migrations_apply_once_even_with_two_gateways_starting_together() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let url = url_with_db(&pg, &db);
    let args = vec!["--postgres".to_string(), url.clone()];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Dyngate::start(&args));
        let b = s.spawn(|| Dyngate::start(&args));
        (a.join().unwrap(), b.join().unwrap())
    });
    let c = connect(&url).await;
    let rows = c
        .query("SELECT version FROM dyngate.schema_migrations ORDER BY version", &[])
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let expected: Vec<i32> = dyngate::catalog::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(versions, expected);
    for g in [&a, &b] {
        let (status, body) = http_get(&g.http("/healthz")).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"version\":{}", expected.last().unwrap())), "{body}");
    }
    drop((a, b));
    // Starting again changes nothing.
    let g = Dyngate::start(&args);
    let n: i64 = one(&c, "SELECT count(*) FROM dyngate.schema_migrations").await;
    assert_eq!(n as usize, expected.len());
    drop(g);

    // A migration whose text changed after it was applied stops the start-up.
    c.execute("UPDATE dyngate.schema_migrations SET checksum = 'deadbeef' WHERE version = 1", &[])
        .await
        .unwrap();
    let err = Dyngate::try_start(&args).err().expect("refused");
    assert!(err.contains("was changed after it was applied"), "{err}");
}

#[tokio::test]
async fn shutdown_lets_running_statements_finish() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let mut gw = Dyngate::with_backend(&pg, &["--shutdown-timeout", "20s"]);
    let c = connect(&gw.url("postgres", &pg.password, &db)).await;
    let idle = connect(&gw.url("postgres", &pg.password, &db)).await;
    let running = tokio::spawn(async move {
        let r = c
            .query_one("SELECT pg_sleep(1.5)::text || 'done'", &[])
            .await
            .map(|r| r.get::<_, String>(0));
        (r, c)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    gw.signal(libc::SIGTERM);
    let (result, c) = running.await.unwrap();
    assert_eq!(result.unwrap(), "done", "the running statement finished");
    // Idle sessions are closed with PostgreSQL's own shutdown error, and so is the finished one.
    let err = idle.query_one("SELECT 1", &[]).await.unwrap_err();
    assert!(
        err.is_closed() || err.as_db_error().is_some_and(|e| e.code().code() == "57P01"),
        "{err:?}"
    );
    assert!(c.query_one("SELECT 1", &[]).await.is_err());
    let status = gw.wait(Duration::from_secs(20)).expect("exits");
    assert!(status.success());
    assert!(t0.elapsed() < Duration::from_secs(10));
    pg.assert_no_backends(&db).await;
}

#[tokio::test]
async fn shutdown_timeout_cancels_what_is_still_running() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let mut gw = Dyngate::with_backend(&pg, &["--shutdown-timeout", "1s"]);
    let c = connect(&gw.url("postgres", &pg.password, &db)).await;
    let running = tokio::spawn(async move { c.query_one("SELECT pg_sleep(60)", &[]).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    gw.signal(libc::SIGTERM);
    let status = gw.wait(Duration::from_secs(20)).expect("exits");
    assert!(status.success());
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    assert!(running.await.unwrap().is_err());
    pg.assert_no_backends(&db).await;
}
