//! TLS between clients and the gateway: psql with sslmode=require gets an encrypted session,
//! --require-tls refuses plain connections with 28000, and a cleartext password is never asked
//! for over a plain connection.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A throwaway self-signed certificate for localhost, made with the openssl command.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

fn psql(conninfo: &str, password: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is installed")
}

#[tokio::test]
async fn psql_sslmode_require_and_require_tls() {
    let pg = pg();
    let db = pg.fresh_db().await;
    let role = pg.fresh_role("pw").await;
    let dir = tmp_dir();
    let (cert, key) = self_signed(&dir);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());

    let gw = Dyngate::with_backend(&pg, &["--tls-cert", &cert, "--tls-key", &key]);
    let base = format!("host=127.0.0.1 port={} user={role} dbname={db}", gw.pg_port);
    let out = psql(&format!("{base} sslmode=require"), "pw", "\\conninfo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("SSL connection (protocol: TLSv1.3"), "{text}");
    // Plain connections are still accepted without --require-tls.
    let out = psql(&format!("{base} sslmode=disable"), "pw", "SELECT current_user");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), role);
    drop(gw);

    let gw = Dyngate::with_backend(&pg, &["--tls-cert", &cert, "--tls-key", &key, "--require-tls"]);
    let base = format!("host=127.0.0.1 port={} user={role} dbname={db}", gw.pg_port);
    let out = psql(&format!("{base} sslmode=require"), "pw", "SELECT 'over tls'");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");
    let err = try_connect(&gw.url(&role, "pw", &db)).await.expect_err("plain connection refused");
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("28000"), "{err:?}");
    let out = psql(&format!("{base} sslmode=disable"), "pw", "SELECT 1");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("accepts only TLS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn bad_certificate_files_stop_startup_with_a_clear_error() {
    let pg = pg();
    let dir = tmp_dir();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let f = dir.join("empty.pem").display().to_string();
    let err = Dyngate::try_start(&[
        "--postgres".into(),
        pg.url.clone(),
        "--tls-cert".into(),
        f.clone(),
        "--tls-key".into(),
        f,
    ])
    .err()
    .unwrap();
    assert!(err.contains("no certificate in file"), "{err}");
    assert!(!err.contains(&pg.password), "the log does not print the backend password");
}

#[tokio::test]
async fn cleartext_password_only_over_tls() {
    let pg = pg();
    let db = pg.fresh_db().await;
    // scripts/pg-temp's pg_hba.conf asks members of password_users for a cleartext password.
    let role = pg.fresh_login_role("cleartext", "PASSWORD 'pw' IN ROLE password_users").await;
    let dir = tmp_dir();
    let (cert, key) = self_signed(&dir);
    let gw = Dyngate::with_backend(
        &pg,
        &["--tls-cert", &cert.display().to_string(), "--tls-key", &key.display().to_string()],
    );
    let base = format!("host=127.0.0.1 port={} user={role} dbname={db}", gw.pg_port);
    let out = psql(&format!("{base} sslmode=disable"), "pw", "SELECT 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cleartext password") && stderr.contains("only over TLS"),
        "{stderr}"
    );
    let out = psql(&format!("{base} sslmode=require"), "pw", "SELECT current_user");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), role);
    let out = psql(&format!("{base} sslmode=require"), "wrong", "SELECT 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
}
