//! Authentication through the gateway: PostgreSQL checks the client's own password (SCRAM and
//! md5), a wrong password gets 28P01 and leaves no backend session, and the role's privileges
//! apply to what it does through the gateway.

mod common;
use common::*;

#[tokio::test]
async fn scram_login_as_the_clients_own_role() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let role = pg.fresh_role("s3cret").await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let c = connect(&gw.url(&role, "s3cret", &db)).await;
    let row = c.query_one("SELECT current_user::text, session_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), role);
    assert_eq!(row.get::<_, String>(1), role);
}

#[tokio::test]
async fn md5_and_trust_are_relayed() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let admin = pg.admin().await;
    // scripts/pg-temp's pg_hba.conf: members of md5_users use md5, of trust_users no password.
    let md5 = unique("md5role");
    let trusted = unique("trustrole");
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'md5'; CREATE ROLE {md5} LOGIN PASSWORD 'pw' IN ROLE md5_users;
             CREATE ROLE {trusted} LOGIN IN ROLE trust_users;"
        ))
        .await
        .unwrap();
    let gw = Dyngate::with_backend(&pg, &[]);
    let c = connect(&gw.url(&md5, "pw", &db)).await;
    assert_eq!(one::<String>(&c, "SELECT current_user::text").await, md5);
    let err = try_connect(&gw.url(&md5, "nope", &db)).await.expect_err("wrong md5 password fails");
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("28P01"));
    let c = connect(&format!("postgres://{trusted}@127.0.0.1:{}/{db}", gw.pg_port)).await;
    assert_eq!(one::<String>(&c, "SELECT current_user::text").await, trusted);
}

#[tokio::test]
async fn wrong_password_is_28p01_and_leaves_no_backend_session() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let role = pg.fresh_role("right").await;
    let gw = Dyngate::with_backend(&pg, &[]);
    for _ in 0..5 {
        let err = try_connect(&gw.url(&role, "wrong", &db)).await.expect_err("login must fail");
        let code = err.as_db_error().map(|e| e.code().code().to_string());
        assert_eq!(code.as_deref(), Some("28P01"), "{err:?}");
    }
    pg.assert_no_backends(&db).await;
    // The gateway still serves others.
    let c = connect(&gw.url(&role, "right", &db)).await;
    assert_eq!(one::<i32>(&c, "SELECT 1").await, 1);
}

#[tokio::test]
async fn privileges_are_the_roles_own() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let role = pg.fresh_role("pw").await;
    let admin = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    admin
        .batch_execute("CREATE TABLE secret (x int); INSERT INTO secret VALUES (1)")
        .await
        .unwrap();
    let gw = Dyngate::with_backend(&pg, &[]);
    let c = connect(&gw.url(&role, "pw", &db)).await;
    let err = c.query("SELECT * FROM secret", &[]).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501");
    assert!(err.as_db_error().unwrap().message().contains("permission denied"));
}
