//! Configuration: command-line flags, `DYNGATE_*` environment variables and an optional TOML file,
//! in that order of precedence (a flag beats the environment, which beats the file, which beats the
//! built-in default).
//!
//! The file's keys are the long flag names (`listen`, `http-listen`, `postgres`, ...); an unknown
//! key is an error, so a typo never passes silently. This module only reads configuration; it starts
//! nothing.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::core::{EngineKind, SchedulerKind};
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// dyngate: a PostgreSQL wire-protocol gateway that keeps dynamic tables fresh.
#[derive(Debug, Parser)]
#[command(name = "dyngate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Accept PostgreSQL clients and forward their SQL to the backing PostgreSQL.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of these settings, keyed by their long flag names (e.g. `listen =
    /// "127.0.0.1:6432"`). Flags and DYNGATE_* variables override it.
    #[arg(long, env = "DYNGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for PostgreSQL clients. Port 0 picks a free port; the bound address is logged.
    #[arg(long, env = "DYNGATE_LISTEN", default_value = "127.0.0.1:6432", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Address of the HTTP listener (GET /healthz). Port 0 picks a free port.
    #[arg(long, env = "DYNGATE_HTTP_LISTEN", default_value = "127.0.0.1:8432", value_name = "ADDR")]
    pub http_listen: SocketAddr,

    /// Backing PostgreSQL as a libpq URL or key=value string, for the gateway's own catalog work
    /// (e.g. postgres://dyngate:secret@127.0.0.1:5432/postgres). Client sessions connect to the
    /// same host and port as the client's own user. Without it, dyngate runs an embedded
    /// PostgreSQL under --data-dir.
    #[arg(long, env = "DYNGATE_POSTGRES", value_name = "URL")]
    pub postgres: Option<String>,

    /// Directory of the embedded PostgreSQL cluster (used when --postgres is not given). Created
    /// and initialised on first start, reused afterwards.
    #[arg(long, env = "DYNGATE_DATA_DIR", default_value = ".dyngate", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Directory holding PostgreSQL's server binaries (initdb, pg_ctl, postgres) for the embedded
    /// cluster. Default: found via `pg_config --bindir`, then /usr/lib/postgresql/*/bin.
    #[arg(long, env = "DYNGATE_PG_BIN_DIR", value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,

    /// PEM certificate chain for TLS to clients (psql sslmode=require). Needs --tls-key.
    #[arg(long, env = "DYNGATE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "DYNGATE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Refuse clients that do not use TLS (needs --tls-cert and --tls-key).
    #[arg(long, env = "DYNGATE_REQUIRE_TLS", requires = "tls_cert")]
    pub require_tls: bool,

    /// On SIGINT/SIGTERM, how long running statements may take to finish before their sessions
    /// are closed anyway.
    #[arg(long, env = "DYNGATE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,

    /// Freshness below which a dynamic table without REFRESH_MODE is refreshed CONTINUOUS (at or
    /// above it: FULL, on a schedule). Flink's materialized-table.refresh-mode.freshness-threshold.
    #[arg(long, env = "DYNGATE_FRESHNESS_THRESHOLD", default_value = "30m", value_parser = parse_duration, value_name = "DURATION")]
    pub freshness_threshold: Duration,

    /// Schedule slots missed while no gateway was running (downtime): `run-once` refreshes once for
    /// all of them, `skip` records them as SKIPPED and waits for the next slot.
    #[arg(long, env = "DYNGATE_MISSED_REFRESHES", default_value = "run-once", value_enum)]
    pub missed_refreshes: crate::manager::scheduler::MissedRefreshes,

    /// Refreshes this gateway runs at once (scheduled ones beyond it wait for a slot).
    #[arg(long, env = "DYNGATE_REFRESH_CONCURRENCY", default_value = "4", value_name = "N")]
    pub refresh_concurrency: usize,

    /// How often the refresh loop looks for due refreshes (bounds how late a refresh can start).
    #[arg(long, env = "DYNGATE_SCHEDULER_TICK", default_value = "200ms", value_parser = parse_duration, value_name = "DURATION")]
    pub scheduler_tick: Duration,

    /// Who schedules FULL-mode tables unless a table says otherwise (`WITH ('scheduler' = ...)`):
    /// the embedded scheduler, Apache Airflow (needs --airflow-url and --airflow-dags-folder) or
    /// Apache DolphinScheduler (needs --dolphinscheduler-url and --dolphinscheduler-token).
    #[arg(long, env = "DYNGATE_SCHEDULER", default_value = "embedded", value_enum)]
    pub scheduler: SchedulerKind,

    /// How incremental tables' sources are captured: `triggers` by statement-level triggers;
    /// `wal` by logical decoding, streamed from a replication slot (writers do no extra work;
    /// needs wal_level = logical and a role that may create replication slots; sources get
    /// REPLICA IDENTITY FULL); `auto` the WAL when PostgreSQL allows it, else triggers. A source
    /// keeps the way it was first captured.
    #[arg(long, env = "DYNGATE_CAPTURE", default_value = "triggers", value_enum)]
    pub capture: crate::engine::postgres::incremental::collect::Capture,

    /// With the WAL capture: how long changes read from the replication slot may wait in the
    /// gateway before they are written into the logs (a refresh has them written at once).
    #[arg(long, env = "DYNGATE_CAPTURE_INTERVAL", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub capture_interval: Duration,

    /// The engine of new dynamic tables that do not name one (`WITH ('engine' = ...)`):
    /// `postgres` refreshes them in the backing PostgreSQL; `flink` in Apache Flink (needs
    /// --flink-gateway).
    #[arg(long, env = "DYNGATE_ENGINE", default_value = "postgres", value_enum)]
    pub engine: EngineKind,

    /// Flink's SQL Gateway (its REST endpoint, e.g. http://127.0.0.1:8083). With it, statements
    /// that name the Flink database (--flink-database) run in Flink, and dynamic tables can use
    /// the flink engine.
    #[arg(long, env = "DYNGATE_FLINK_GATEWAY", value_name = "URL")]
    pub flink_gateway: Option<String>,

    /// The Flink cluster's REST endpoint (the JobManager's rest.port, e.g. http://127.0.0.1:8081):
    /// where dyngate follows, stops and cancels the jobs it starts.
    #[arg(long, env = "DYNGATE_FLINK_REST", value_name = "URL", requires = "flink_gateway")]
    pub flink_rest: Option<String>,

    /// Jars added (`ADD JAR`) to every Flink session dyngate opens: connectors and drivers, as
    /// paths the SQL Gateway can read (repeat the flag, or separate them with commas). The
    /// flink engine's dynamic tables need the JDBC connector and the PostgreSQL driver, here or
    /// on the cluster's classpath.
    #[arg(long = "flink-jar", env = "DYNGATE_FLINK_JARS", value_delimiter = ',', value_name = "PATH")]
    pub flink_jars: Vec<String>,

    /// The Flink database (created in the default catalog of every session dyngate opens) that
    /// marks a statement as Flink's: one naming an object in it (`flink.clicks`) runs in Flink.
    #[arg(long, env = "DYNGATE_FLINK_DATABASE", default_value = "flink", value_name = "NAME")]
    pub flink_database: String,

    /// How Flink's JDBC connector reaches the backing PostgreSQL to write dynamic tables, as a
    /// JDBC URL (default: jdbc:postgresql://<the backing host and port>/<the catalog's
    /// database>). Flink connects as the gateway's service account.
    #[arg(long, env = "DYNGATE_FLINK_POSTGRES_URL", value_name = "JDBC-URL")]
    pub flink_postgres_url: Option<String>,

    /// How long a Flink query or batch job run for a statement may take before it is cancelled.
    #[arg(long, env = "DYNGATE_FLINK_TIMEOUT", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub flink_timeout: Duration,

    /// How often each gateway reconciles the catalog with the external schedulers: retries failed
    /// removals, recreates schedules deleted behind dyngate's back, removes stray ones.
    #[arg(long, env = "DYNGATE_SCHEDULER_RECONCILE_INTERVAL", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub scheduler_reconcile_interval: Duration,

    /// CA certificates (PEM) that `https://` scheduler URLs are verified against (default: the
    /// system's store: $SSL_CERT_FILE, $SSL_CERT_DIR or the distribution's bundle).
    #[arg(long, env = "DYNGATE_SCHEDULER_CA_FILE", value_name = "FILE")]
    pub scheduler_ca_file: Option<PathBuf>,

    /// Airflow's API server, e.g. http://127.0.0.1:8080 or https://airflow.internal.
    #[arg(long, env = "DYNGATE_AIRFLOW_URL", value_name = "URL")]
    pub airflow_url: Option<String>,

    /// Airflow's REST API: v2 (Airflow 3, a JWT from /auth/token) or v1 (Airflow 2, HTTP basic
    /// authentication; enable the basic_auth API auth backend).
    #[arg(long, env = "DYNGATE_AIRFLOW_API", default_value = "v2", value_parser = parse_airflow_api, value_name = "v1|v2")]
    pub airflow_api: crate::scheduler::airflow::ApiVersion,

    /// Airflow user dyngate logs in as.
    #[arg(long, env = "DYNGATE_AIRFLOW_USER", value_name = "USER", default_value = "admin")]
    pub airflow_user: String,

    /// That user's password (prefer the environment variable or the config file).
    #[arg(long, env = "DYNGATE_AIRFLOW_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub airflow_password: Option<String>,

    /// Airflow's DAGs folder, where dyngate writes one DAG file per table.
    #[arg(long, env = "DYNGATE_AIRFLOW_DAGS_FOLDER", value_name = "DIR")]
    pub airflow_dags_folder: Option<PathBuf>,

    /// The refresh endpoint as Airflow's workers reach it (default: this gateway's --http-listen
    /// address).
    #[arg(long, env = "DYNGATE_AIRFLOW_REFRESH_URL", value_name = "URL")]
    pub airflow_refresh_url: Option<String>,

    /// DolphinScheduler's API server, with its base path, e.g.
    /// http://127.0.0.1:12345/dolphinscheduler.
    #[arg(long, env = "DYNGATE_DOLPHINSCHEDULER_URL", value_name = "URL")]
    pub dolphinscheduler_url: Option<String>,

    /// A DolphinScheduler access token (Security > Token manage), sent as its `token` header
    /// (prefer the environment variable or the config file).
    #[arg(long, env = "DYNGATE_DOLPHINSCHEDULER_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub dolphinscheduler_token: Option<String>,

    /// DolphinScheduler's API line: 3.2 or 3.3 (3.3 renamed "process" to "workflow").
    #[arg(long, env = "DYNGATE_DOLPHINSCHEDULER_VERSION", default_value = "3.3", value_parser = parse_dolphinscheduler_version, value_name = "3.2|3.3")]
    pub dolphinscheduler_version: crate::scheduler::dolphinscheduler::Version,

    /// The DolphinScheduler project holding dyngate's workflows (created when missing).
    #[arg(long, env = "DYNGATE_DOLPHINSCHEDULER_PROJECT", default_value = "dyngate", value_name = "NAME")]
    pub dolphinscheduler_project: String,

    /// The tenant DolphinScheduler runs the schedules as, and the worker group of their HTTP task.
    #[arg(long, env = "DYNGATE_DOLPHINSCHEDULER_TENANT", default_value = "default", value_name = "TENANT")]
    pub dolphinscheduler_tenant: String,

    #[arg(
        long,
        env = "DYNGATE_DOLPHINSCHEDULER_WORKER_GROUP",
        default_value = "default",
        value_name = "GROUP"
    )]
    pub dolphinscheduler_worker_group: String,

    /// The refresh endpoint as DolphinScheduler's workers reach it (default: this gateway's
    /// --http-listen address).
    #[arg(long, env = "DYNGATE_DOLPHINSCHEDULER_REFRESH_URL", value_name = "URL")]
    pub dolphinscheduler_refresh_url: Option<String>,

    /// Bearer token required by the HTTP API's /v3 routes (schedulers send `Authorization: Bearer
    /// <token>`). Without it the API is open to whoever reaches --http-listen.
    #[arg(long, env = "DYNGATE_HTTP_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,

    /// Threads running client sessions, each an event loop of its own (0: one per two CPUs, at
    /// least one).
    #[arg(long, env = "DYNGATE_SESSION_THREADS", default_value = "0", value_name = "N")]
    pub session_threads: usize,

    /// Log format.
    #[arg(long, env = "DYNGATE_LOG_FORMAT", default_value = "human", value_enum)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `dyngate=debug`).
    #[arg(long, env = "DYNGATE_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,

    /// Once both listeners are bound and the catalog is ready, write their addresses to this file
    /// as JSON (`{"pg":"127.0.0.1:6432","http":"127.0.0.1:8432"}`), for scripts.
    #[arg(long, env = "DYNGATE_READY_FILE", value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

fn parse_dolphinscheduler_version(s: &str) -> Result<crate::scheduler::dolphinscheduler::Version, String> {
    crate::scheduler::dolphinscheduler::Version::parse(s).ok_or_else(|| format!("unknown DolphinScheduler version {s:?} (3.2 or 3.3)"))
}

fn parse_airflow_api(s: &str) -> Result<crate::scheduler::airflow::ApiVersion, String> {
    crate::scheduler::airflow::ApiVersion::parse(s).ok_or_else(|| format!("unknown Airflow API {s:?} (v1 for Airflow 2, v2 for Airflow 3)"))
}

/// An error in the configuration, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("config file {path}: unknown setting `{key}` (settings are the long flag names of `dyngate serve --help`)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: setting `{key}` must be a string, number or boolean")]
    BadValue { path: PathBuf, key: String },
}

/// Parses a duration such as `30s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration `{s}` (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "sec" | "secs" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!("invalid duration unit in `{s}` (use ms, s, m or h)"));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration `{s}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the command line (and environment), then fills settings still at their defaults from the
/// TOML file named by `--config`, if any.
pub fn load() -> Result<Cli, ConfigError> {
    load_from(std::env::args_os().collect())
}

pub fn load_from(args: Vec<std::ffi::OsString>) -> Result<Cli, ConfigError> {
    let cli = Cli::parse_from(&args);
    let Command::Serve(serve) = &cli.command;
    let Some(path) = serve.config.clone() else {
        return Ok(cli);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Toml {
        path: path.clone(),
        message: e.message().to_string(),
    })?;

    // Re-parse with the file's values installed as defaults: clap then applies flags and
    // environment variables over them, which gives the documented precedence for free.
    let mut cmd = Cli::command();
    let serve_cmd = cmd.find_subcommand_mut("serve").expect("serve subcommand exists");
    let mut sub = serve_cmd.clone();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        if id == "config" || !sub.get_arguments().any(|a| a.get_id() == id.as_str()) {
            return Err(ConfigError::UnknownKey { path, key: key.clone() });
        }
        let v = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::BadValue { path, key: key.clone() });
            }
        };
        // For a switch such as `require-tls`, `true` in the file acts like the flag.
        sub = sub.mut_arg(id.as_str(), |a| a.default_value(v));
    }
    *serve_cmd = sub;
    let matches = cmd.get_matches_from(&args);
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("30s", Some(30_000)),
            ("500ms", Some(500)),
            ("2m", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("5", Some(5_000)),
            ("1.5s", Some(1_500)),
            ("x", None),
            ("5 days", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).ok().map(|d| d.as_millis() as u64), want, "{s}");
        }
    }

    fn serve(args: &[&str]) -> Result<ServeArgs, ConfigError> {
        let mut v: Vec<std::ffi::OsString> = vec!["dyngate".into(), "serve".into()];
        v.extend(args.iter().map(|s| (*s).into()));
        load_from(v).map(|c| match c.command {
            Command::Serve(s) => s,
        })
    }

    #[test]
    fn file_values_fill_defaults_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("dyngate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:7000\"\nhttp-listen = \"127.0.0.1:7001\"\nshutdown-timeout = \"5s\"\n",
        )
        .unwrap();
        let s = serve(&["--config", f.to_str().unwrap(), "--http-listen", "127.0.0.1:9"]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(s.http_listen, "127.0.0.1:9".parse().unwrap(), "a flag beats the file");
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(s.data_dir, PathBuf::from(".dyngate"), "untouched settings keep their default");

        std::fs::write(&f, "lissen = \"x\"\n").unwrap();
        let err = serve(&["--config", f.to_str().unwrap()]).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "lissen"), "{err}");

        std::fs::write(&f, "listen = [1]\n").unwrap();
        assert!(matches!(
            serve(&["--config", f.to_str().unwrap()]),
            Err(ConfigError::BadValue { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults() {
        let s = serve(&[]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:6432".parse().unwrap());
        assert_eq!(s.http_listen, "127.0.0.1:8432".parse().unwrap());
        assert!(s.postgres.is_none());
        assert!(!s.require_tls);
    }
}
