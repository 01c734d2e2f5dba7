//! The embedded default: a private PostgreSQL cluster under `--data-dir`, run from the machine's
//! own PostgreSQL binaries, so that one command gives a working gateway with nothing else set up.
//!
//! Layout of the data directory:
//! - `pgdata/`: the cluster (initdb on first start, reused afterwards);
//! - `run/`: its Unix socket, mode 0700, reachable only by the gateway's service account;
//! - `postgres.log`: the server log;
//! - `superuser.password`: the generated password of the `postgres` role (mode 0600);
//! - `dyngate.lock`: held while a gateway uses this directory, so two never share it.
//!
//! Clients reach the cluster over TCP on 127.0.0.1 with SCRAM (PostgreSQL checks their passwords);
//! only the service account uses the trusted socket. Run as root, the cluster runs as the
//! unprivileged `postgres` user, since PostgreSQL refuses to run as root. This module owns the
//! cluster's files and processes and nothing else.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use crate::backend::Backend;

/// Name of the superuser role created by initdb.
pub const SUPERUSER: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb, pg_ctl and postgres via `pg_config --bindir` and in /usr/lib/postgresql/*/bin).\n\
         Install them, e.g. on Debian/Ubuntu: `apt-get install postgresql`, on Fedora/RHEL: `dnf install postgresql-server`, \
         on macOS: `brew install postgresql`; or pass --pg-bin-dir DIR, or use an existing server with --postgres URL."
    )]
    NoBinaries,
    #[error("--pg-bin-dir {0} does not contain initdb, pg_ctl and postgres")]
    BadBinDir(PathBuf),
    #[error(
        "running as root, but there is no unprivileged `postgres` user to run the embedded PostgreSQL as (PostgreSQL refuses to run as root): create one (`useradd --system postgres`) or use --postgres URL"
    )]
    NoUnprivilegedUser,
    #[error(
        "the `postgres` user cannot reach {0}: choose a --data-dir whose parent directories it can traverse (e.g. under /var/lib or /tmp)"
    )]
    Unreachable(PathBuf),
    #[error("another dyngate is already using the data directory {0}")]
    Locked(PathBuf),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let what = what.into();
    move |e| EmbeddedError::Io(what, e)
}

/// A running embedded cluster.
#[derive(Debug)]
pub struct Cluster {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    run_as: Option<(u32, u32)>,
    port: u16,
    socket_dir: PathBuf,
    password: String,
    _lock: fs::File,
}

/// Finds PostgreSQL's server binaries: an explicit directory, then `pg_config --bindir`, then the
/// newest `/usr/lib/postgresql/<major>/bin` (Debian keeps them off PATH).
pub fn find_bin_dir(explicit: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    let has_all = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| d.join(b).is_file());
    if let Some(d) = explicit {
        return if has_all(d) {
            Ok(d.to_path_buf())
        } else {
            Err(EmbeddedError::BadBinDir(d.to_path_buf()))
        };
    }
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_all(&d) {
            return Ok(d);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has_all(d))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, d)| d).ok_or(EmbeddedError::NoBinaries)
}

/// The uid/gid to run PostgreSQL as: none when not root, else the `postgres` user.
fn run_as_user() -> Result<Option<(u32, u32)>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions; getpwnam returns a pointer into static storage that we
    // read immediately, before any other call could overwrite it.
    unsafe {
        if libc::geteuid() != 0 {
            return Ok(None);
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            return Err(EmbeddedError::NoUnprivilegedUser);
        }
        Ok(Some(((*pw).pw_uid, (*pw).pw_gid)))
    }
}

fn chown(path: &Path, run_as: Option<(u32, u32)>) -> Result<(), EmbeddedError> {
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(format!("chown {}", path.display())))?;
    }
    Ok(())
}

fn random_password() -> String {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// Initialises the cluster if needed, starts it (or adopts it if a previous gateway left it
    /// running) and returns it.
    pub async fn start(data_dir: &Path, bin_dir: PathBuf) -> Result<Cluster, EmbeddedError> {
        let run_as = run_as_user()?;
        fs::create_dir_all(data_dir).map_err(io(format!("create {}", data_dir.display())))?;
        let data_dir = data_dir.canonicalize().map_err(io(format!("resolve {}", data_dir.display())))?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o755)).map_err(io("chmod data dir"))?;
        let lock = lock_dir(&data_dir)?;

        let pgdata = data_dir.join("pgdata");
        let socket_dir = data_dir.join("run");
        let log_file = data_dir.join("postgres.log");
        let pw_file = data_dir.join("superuser.password");
        for d in [&pgdata, &socket_dir] {
            fs::create_dir_all(d).map_err(io(format!("create {}", d.display())))?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(io("chmod"))?;
            chown(d, run_as)?;
        }
        if !log_file.exists() {
            fs::File::create(&log_file).map_err(io("create postgres.log"))?;
        }
        chown(&log_file, run_as)?;
        if run_as.is_some() {
            let mut probe = Command::new("/bin/sh");
            probe.args(["-c", "test -w \"$1\"", "sh"]).arg(&socket_dir);
            if !run(probe, run_as, "probe").await.map(|o| o.status.success()).unwrap_or(false) {
                return Err(EmbeddedError::Unreachable(data_dir));
            }
        }

        let mut cluster = Cluster {
            bin_dir,
            pgdata,
            run_as,
            port: 0,
            socket_dir,
            password: String::new(),
            _lock: lock,
        };
        if !cluster.pgdata.join("PG_VERSION").exists() {
            cluster.initdb(&pw_file).await?;
        }
        cluster.password = fs::read_to_string(&pw_file)
            .map_err(io(format!("read {}", pw_file.display())))?
            .trim()
            .to_string();

        if let Some(port) = cluster.running_port().await {
            tracing::info!(port, "adopting the embedded PostgreSQL left running by an earlier gateway");
            cluster.port = port;
        } else {
            cluster.port = free_port().map_err(io("choose a port"))?;
            cluster.write_runtime_conf()?;
            let mut cmd = Command::new(cluster.bin_dir.join("pg_ctl"));
            cmd.arg("-D")
                .arg(&cluster.pgdata)
                .arg("-l")
                .arg(&log_file)
                .args(["-w", "-t", "60", "start"]);
            let out = run(cmd, run_as, "pg_ctl start").await?;
            if !out.status.success() {
                return Err(EmbeddedError::Command {
                    what: "starting the embedded PostgreSQL".into(),
                    detail: format!("{} (see {})", String::from_utf8_lossy(&out.stderr).trim(), log_file.display()),
                });
            }
            tracing::info!(port = cluster.port, data_dir = %data_dir.display(), "embedded PostgreSQL started");
        }
        Ok(cluster)
    }

    async fn initdb(&self, pw_file: &Path) -> Result<(), EmbeddedError> {
        let password = random_password();
        // initdb reads the password from a file it can open as the unprivileged user.
        let tmp_pw = self.socket_dir.join("initdb.pw");
        write_private(&tmp_pw, &password)?;
        chown(&tmp_pw, self.run_as)?;
        let mut cmd = Command::new(self.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(&self.pgdata)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .arg(format!("--pwfile={}", tmp_pw.display()));
        let out = run(cmd, self.run_as, "initdb").await;
        let _ = fs::remove_file(&tmp_pw);
        let out = out?;
        if !out.status.success() {
            return Err(EmbeddedError::Command {
                what: "initdb".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let conf = self.pgdata.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io("open postgresql.conf"))?;
        writeln!(
            f,
            "\n# Set by dyngate at every start (port, socket directory).\ninclude_if_exists = 'dyngate.conf'"
        )
        .map_err(io("write postgresql.conf"))?;
        write_private(pw_file, &password)?;
        tracing::info!(
            superuser = SUPERUSER,
            password_file = %pw_file.display(),
            "created the embedded PostgreSQL cluster; the superuser's password is in the password file"
        );
        Ok(())
    }

    fn write_runtime_conf(&self) -> Result<(), EmbeddedError> {
        let path = self.pgdata.join("dyngate.conf");
        let sock = self.socket_dir.display().to_string().replace('\'', "''");
        // wal_level = logical: so that `--capture wal` (engine::postgres::incremental::collect) needs no
        // restart of the cluster.
        let text = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = logical\n",
            self.port, sock
        );
        fs::write(&path, text).map_err(io("write dyngate.conf"))?;
        chown(&path, self.run_as)
    }

    /// The port of a postmaster already running on this data directory, if any.
    async fn running_port(&self) -> Option<u16> {
        let mut cmd = Command::new(self.bin_dir.join("pg_ctl"));
        cmd.arg("-D").arg(&self.pgdata).arg("status");
        let out = run(cmd, self.run_as, "pg_ctl status").await.ok()?;
        if !out.status.success() {
            return None;
        }
        let pid = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        pid.lines().nth(3)?.trim().parse().ok()
    }

    /// Where client sessions and the service account reach the cluster.
    pub fn backend(&self) -> Backend {
        let mut service = tokio_postgres::Config::new();
        service
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname("postgres")
            .application_name("dyngate");
        Backend {
            host: "127.0.0.1".into(),
            port: self.port,
            service,
        }
    }

    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// Stops the cluster (fast shutdown: open sessions are closed, then a clean checkpoint).
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        let mut cmd = Command::new(self.bin_dir.join("pg_ctl"));
        cmd.arg("-D").arg(&self.pgdata).args(["-m", "fast", "-w", "stop"]);
        let out = run(cmd, self.run_as, "pg_ctl stop").await?;
        if !out.status.success() {
            return Err(EmbeddedError::Command {
                what: "stopping the embedded PostgreSQL".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), EmbeddedError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("write {}", path.display())))?;
    f.write_all(text.as_bytes()).map_err(io(format!("write {}", path.display())))
}

fn lock_dir(data_dir: &Path) -> Result<fs::File, EmbeddedError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("dyngate.lock"))
        .map_err(io("open dyngate.lock"))?;
    // SAFETY: flock on a file descriptor we own; the lock lives as long as the File.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(EmbeddedError::Locked(data_dir.to_path_buf()));
    }
    Ok(f)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn run(mut cmd: Command, run_as: Option<(u32, u32)>, what: &str) -> Result<Output, EmbeddedError> {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd.stdin(std::process::Stdio::null())
        .env("LC_ALL", "C.UTF-8")
        .env_remove("PGPORT")
        .env_remove("PGHOST");
    cmd.output().await.map_err(io(what.to_string()))
}
