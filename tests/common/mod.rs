//! Shared test harness: the throwaway PostgreSQL that `scripts/test` started (DYNGATE_TEST_PG),
//! dyngate processes started from the built binary on ports chosen at run time, where the
//! dynamic-table tests start (`catalog_setup`, with the `orders` or `src` table), and small SQL
//! helpers (`exec`, `one`, `code`, `message`).
#![allow(dead_code)]

pub mod dolphin;
pub mod raw;

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The backing PostgreSQL of the test run.
#[derive(Debug, Clone)]
pub struct Pg {
    pub host: String,
    pub port: u16,
    /// The superuser `postgres`'s password.
    pub password: String,
    pub url: String,
}

/// The PostgreSQL started by scripts/test.
pub fn pg() -> Pg {
    let url = std::env::var("DYNGATE_TEST_PG")
        .expect("DYNGATE_TEST_PG is not set: run the tests with scripts/test, which starts a throwaway PostgreSQL");
    let cfg: tokio_postgres::Config = url.parse().expect("DYNGATE_TEST_PG is a valid URL");
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        _ => panic!("DYNGATE_TEST_PG must use TCP"),
    };
    let password = String::from_utf8(cfg.get_password().expect("password in DYNGATE_TEST_PG").to_vec()).unwrap();
    Pg {
        host,
        port: cfg.get_ports()[0],
        password,
        url,
    }
}

/// A name unique within the test run (for databases, roles, tables).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn tmp_dir() -> PathBuf {
    let base = std::env::var("DYNGATE_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let d = base.join(unique("t"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    try_connect(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl Pg {
    pub fn url_for(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@{}:{}/{db}", self.host, self.port)
    }

    /// A superuser connection straight to PostgreSQL.
    pub async fn admin(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Creates a database of its own for one test; returns its name.
    pub async fn fresh_db(&self) -> String {
        let name = unique("db");
        self.admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        name
    }

    /// Creates a login role with a password; returns its name.
    pub async fn fresh_role(&self, password: &str) -> String {
        self.fresh_login_role("role", &format!("PASSWORD '{password}'")).await
    }

    /// Creates a login role that needs no password (scripts/pg-temp trusts members of
    /// `trust_users` on 127.0.0.1), for raw protocol clients that do not speak SCRAM. `attributes`
    /// are extra role attributes such as `SUPERUSER`.
    pub async fn fresh_trusted_role(&self, attributes: &str) -> String {
        self.fresh_login_role("trusted", &format!("{attributes} IN ROLE trust_users")).await
    }

    /// Creates a login role named after `prefix`, with `options` (a password, attributes, the
    /// group roles scripts/pg-temp's pg_hba.conf knows); returns its name.
    pub async fn fresh_login_role(&self, prefix: &str, options: &str) -> String {
        let name = unique(prefix);
        self.admin()
            .await
            .batch_execute(&format!("CREATE ROLE {name} LOGIN {options}"))
            .await
            .unwrap();
        name
    }

    /// A database of its own with a table `t (x int)` that a fresh role needing no password (see
    /// [`fresh_trusted_role`](Self::fresh_trusted_role)) may use fully: where raw protocol clients
    /// start. Returns the database, the role and a superuser connection straight to the database.
    pub async fn trusted_table(&self) -> (String, String, tokio_postgres::Client) {
        let db = self.fresh_db().await;
        let role = self.fresh_trusted_role("").await;
        let admin = connect(&self.url_for("postgres", &self.password, &db)).await;
        admin
            .batch_execute(&format!("CREATE TABLE t (x int); GRANT ALL ON t TO {role}"))
            .await
            .unwrap();
        (db, role, admin)
    }

    /// Client backends connected to `db` (from pg_stat_activity), excluding the asking session.
    pub async fn backends_in(&self, db: &str) -> i64 {
        let c = self.admin().await;
        c.query_one_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .unwrap()
    }

    /// Waits until no client backend is connected to `db`; panics after 10 s.
    pub async fn assert_no_backends(&self, db: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.backends_in(db).await;
            if n == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{n} backend session(s) still connected to {db}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running dyngate process. Dropping it stops it (SIGTERM, then SIGKILL after 15 s).
pub struct Dyngate {
    child: Option<Child>,
    pub pg_port: u16,
    pub http_port: u16,
    pub log_path: PathBuf,
    pub dir: PathBuf,
}

impl Dyngate {
    /// Starts `dyngate serve` with `args` plus loopback listeners on free ports, and waits until
    /// it is ready.
    pub fn start(args: &[String]) -> Dyngate {
        Self::try_start(args).unwrap_or_else(|log| panic!("dyngate did not become ready; its log:\n{log}"))
    }

    /// Like [`start`](Self::start) but returns the log on failure.
    pub fn try_start(args: &[String]) -> Result<Dyngate, String> {
        let dir = tmp_dir();
        let ready = dir.join("ready.json");
        let log_path = dir.join("dyngate.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dyngate"))
            .arg("serve")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--log",
                "info,dyngate=debug",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .env_remove("DYNGATE_POSTGRES")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dyngate");
        let mut g = Dyngate {
            child: Some(child),
            pg_port: 0,
            http_port: 0,
            log_path,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                let port = |k: &str| v[k].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
                g.pg_port = port("pg");
                g.http_port = port("http");
                return Ok(g);
            }
            if let Some(status) = g.child.as_mut().unwrap().try_wait().unwrap() {
                let log = g.log();
                g.child = None;
                return Err(format!("exited with {status}\n{log}"));
            }
            if Instant::now() > deadline {
                return Err(g.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts dyngate in front of the test run's PostgreSQL.
    pub fn with_backend(pg: &Pg, extra: &[&str]) -> Dyngate {
        let mut args = vec!["--postgres".to_string(), pg.url.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&args)
    }

    /// Starts dyngate whose service account (and so whose catalog) is in database `db`: the
    /// database where its dynamic tables live.
    pub fn for_db(pg: &Pg, db: &str, extra: &[&str]) -> Dyngate {
        let mut args = vec!["--postgres".to_string(), pg.url_for("postgres", &pg.password, db)];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&args)
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.pg_port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.pg_port)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(30)).expect("dyngate exits after SIGTERM")
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dyngate {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGTERM);
            if self.wait(Duration::from_secs(15)).is_none()
                && let Some(mut c) = self.child.take()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A minimal HTTP/1.1 request on loopback: (status, body). Enough for the gateway's API without an
/// HTTP client dependency.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// A minimal HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    http("GET", url, &[], "")
}

/// The SQLSTATE of a database error.
pub fn code(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

/// The primary message of a database error (else the whole error).
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
}

/// Runs each statement as a query string of its own (a dynamic-table statement cannot share one).
pub async fn exec(c: &tokio_postgres::Client, statements: &[&str]) {
    for s in statements {
        c.batch_execute(s).await.unwrap_or_else(|e| panic!("{s}: {e:?}"));
    }
}

/// The one value (one row, one column) a query returns.
pub async fn one<T: tokio_postgres::types::FromSqlOwned>(c: &tokio_postgres::Client, sql: &str) -> T {
    c.query_one_scalar(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// Where dynamic-table tests start: a database of its own, a gateway (started with `extra`) whose
/// catalog database it is, and a superuser session through that gateway, in which `setup` has
/// run, each string as a query string of its own.
pub async fn catalog_setup(extra: &[&str], setup: &[&str]) -> (Pg, String, Dyngate, tokio_postgres::Client) {
    let pg = pg();
    let db = pg.fresh_db().await;
    let gw = Dyngate::for_db(&pg, &db, extra);
    let c = connect(&gw.url("postgres", &pg.password, &db)).await;
    exec(&c, setup).await;
    (pg, db, gw, c)
}

/// The source table dynamic-table tests read: `orders (id int PRIMARY KEY, day date NOT NULL,
/// amount numeric NOT NULL)` holding `n` orders, ids 1 to `n`, each of amount `id`, on three days
/// (`date '2024-01-01' + id % 3`).
pub fn orders(n: u32) -> String {
    format!(
        "CREATE TABLE orders (id int PRIMARY KEY, day date NOT NULL, amount numeric NOT NULL);
         INSERT INTO orders SELECT g, date '2024-01-01' + g % 3, g FROM generate_series(1, {n}) g;"
    )
}

/// The smallest source table: `src (v int)` holding one row, 1.
pub const SRC: &str = "CREATE TABLE src (v int); INSERT INTO src VALUES (1)";
