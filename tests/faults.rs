//! Bad input and faults: malformed protocol messages, clients that vanish mid-query or mid-COPY,
//! a backend session that dies. In every case the gateway keeps serving its other clients and
//! leaves no backend session behind (checked in pg_stat_activity).

mod common;

use std::time::Duration;

use common::raw::Raw;
use common::*;
use dyngate::wire::codec::{Message, error_fields};
use tokio::io::AsyncWriteExt;

fn sqlstate(m: &Message) -> Option<String> {
    (m.tag() == b'E')
        .then(|| error_fields(m).into_iter().find(|(t, _)| *t == b'C').map(|(_, v)| v))
        .flatten()
}

/// The gateway answers a well-behaved client normally.
async fn assert_serves(gw: &Dyngate, pg: &Pg, db: &str) {
    let c = connect(&gw.url("postgres", &pg.password, db)).await;
    assert_eq!(one::<i32>(&c, "SELECT 41 + 1").await, 42);
}

#[tokio::test]
async fn malformed_startup_packets_are_refused() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let gw = Dyngate::with_backend(&pg, &[]);
    // A length far beyond any start-up packet, a length too short, an unknown protocol version.
    let cases: [&[u8]; 3] = [&[0x7f, 0, 0, 0, 0, 3, 0, 0], &[0, 0, 0, 2], &[0, 0, 0, 8, 0, 9, 0, 0]];
    for bytes in cases {
        let mut r = Raw::connect(&gw.addr()).await;
        r.s.write_all(bytes).await.unwrap();
        let m = r.next().await.expect("an error before the close");
        assert_eq!(sqlstate(&m).as_deref(), Some("08P01"), "{bytes:?}");
        assert!(r.next().await.is_none(), "connection closed after the error");
    }
    assert_serves(&gw, &pg, &db).await;
}

#[tokio::test]
async fn malformed_message_after_login_closes_only_that_session() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let role = pg.fresh_trusted_role("").await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let other = connect(&gw.url("postgres", &pg.password, &db)).await;

    let mut r = Raw::login(&gw.addr(), &role, &db).await;
    // A Query whose length field says 2 bytes: impossible (the length includes itself).
    r.s.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    let m = r.next().await.expect("an error before the close");
    assert_eq!(sqlstate(&m).as_deref(), Some("08P01"));
    assert!(r.next().await.is_none());

    // A negative length.
    let mut r = Raw::login(&gw.addr(), &role, &db).await;
    r.s.write_all(&[b'Q', 0xff, 0xff, 0xff, 0xf0]).await.unwrap();
    assert_eq!(sqlstate(&r.next().await.unwrap()).as_deref(), Some("08P01"));

    // A message type PostgreSQL does not know reaches PostgreSQL, which answers it itself.
    let mut r = Raw::login(&gw.addr(), &role, &db).await;
    r.send(&Message::new(b'!', b"")).await;
    let m = r.next().await.unwrap();
    assert_eq!(sqlstate(&m).as_deref(), Some("08P01"), "{:?}", error_fields(&m));

    assert_eq!(one::<i32>(&other, "SELECT 1").await, 1);
    drop(other);
    pg.assert_no_backends(&db).await;
}

#[tokio::test]
async fn client_vanishing_mid_query_leaves_no_backend() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let role = pg.fresh_trusted_role("").await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let mut r = Raw::login(&gw.addr(), &role, &db).await;
    r.send(&Message::new(b'Q', b"SELECT pg_sleep(120)\0")).await;
    // Wait until the backend is really running the sleep.
    let admin = pg.admin().await;
    for _ in 0..100 {
        let n: i64 = admin
            .query_one_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                &[&db],
            )
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(r);
    // Well before the sleep would end, the backend session is gone: the gateway cancelled it.
    pg.assert_no_backends(&db).await;
    assert_serves(&gw, &pg, &db).await;
}

#[tokio::test]
async fn client_vanishing_mid_copy_leaves_no_backend_and_no_rows() {
    let pg = pg();
    let (db, role, admin) = pg.trusted_table().await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let mut r = Raw::login(&gw.addr(), &role, &db).await;
    r.send(&Message::new(b'Q', b"COPY t FROM STDIN\0")).await;
    let m = r.next().await.unwrap();
    assert_eq!(m.tag(), b'G', "CopyInResponse");
    r.send(&Message::new(b'd', b"1\n2\n3\n")).await;
    r.s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(r);
    drop(admin);
    pg.assert_no_backends(&db).await;
    let admin = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    let n: i64 = one(&admin, "SELECT count(*) FROM t").await;
    assert_eq!(n, 0, "an unfinished COPY commits nothing");
}

#[tokio::test]
async fn a_dying_backend_ends_its_session_only() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let victim = connect(&gw.url("postgres", &pg.password, &db)).await;
    let bystander = connect(&gw.url("postgres", &pg.password, &db)).await;
    let pid: i32 = one(&victim, "SELECT pg_backend_pid()").await;
    pg.admin().await.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    let err = victim.query_one("SELECT 1", &[]).await.unwrap_err();
    // PostgreSQL's own FATAL (57P01) reaches the client, or the connection is simply closed.
    if let Some(db_err) = err.as_db_error() {
        assert_eq!(db_err.code().code(), "57P01");
    } else {
        assert!(err.is_closed(), "{err:?}");
    }
    assert_eq!(one::<i32>(&bystander, "SELECT 2").await, 2);
    assert_serves(&gw, &pg, &db).await;
    drop(bystander);
    drop(victim);
    pg.assert_no_backends(&db).await;
}

#[tokio::test]
async fn unreachable_backend_is_a_clear_error() {
    // Nothing listens on this port once the probe socket is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pg = pg();
    let dir = tmp_dir();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dyngate"))
        .args(["serve", "--postgres", &format!("postgres://postgres:x@127.0.0.1:{port}/postgres")])
        .args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
        ])
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let _ = &pg;
    let mut health = None;
    for _ in 0..100 {
        if let Ok(r) = http_get(&format!("http://127.0.0.1:{http}/healthz")) {
            health = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = health.expect("healthz answers while the backend is down");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    assert!(!body.contains("x@127.0.0.1"), "no connection string in the body");
    let err = try_connect(&format!("postgres://postgres:x@127.0.0.1:{listen}/postgres"))
        .await
        .err()
        .unwrap();
    let db = err.as_db_error().expect("a PostgreSQL error, not a dropped connection");
    assert_eq!(db.code().code(), "08001");
    assert!(
        !db.message().contains(&port.to_string()),
        "no backend address in the message: {}",
        db.message()
    );
    let _ = child.kill();
    let _ = child.wait();
}
