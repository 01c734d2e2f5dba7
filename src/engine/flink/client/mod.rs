//! The Flink engine's client layer: typed access to Apache Flink's SQL Gateway REST API (v4,
//! [`gateway`]) and to the cluster's REST API ([`cluster`]), plus the pure translation of Flink's
//! result types and values into what a PostgreSQL client expects ([`types`]).
//!
//! This layer owns the wire details that `docs/flink-facts.md` measured on Flink 2.3: result
//! paging (NOT_READY and empty PAYLOAD pages polled with a backoff, EOS), errors that are HTTP 500
//! with their meaning in the last `Caused by:` line of a Java stack, sessions that disappear
//! (recognised so that a caller can reopen one and replay its DDL), the lagging `/jobs/{id}`
//! (never used: job state comes from `/jobs` and `/jobs/overview`), stop-with-savepoint as a
//! trigger plus polling, and DECIMAL values that must be read without going through `f64`.
//!
//! It must not know about dynamic tables, the catalog or pgwire: the Flink engine built on it
//! decides which statements to run and what to store. Nothing it returns in an error carries a
//! secret the caller registered ([`gateway::Gateway::with_secrets`]): JDBC passwords travel inside
//! DDL text and Flink echoes statement text in some of its messages.

pub mod cluster;
pub mod gateway;
pub mod types;

use crate::http_client::ClientError;

/// What went wrong talking to Flink.
#[derive(Debug, thiserror::Error)]
pub enum FlinkError {
    /// The gateway or the cluster could not be reached or did not answer in time.
    #[error(transparent)]
    Unreachable(#[from] ClientError),
    /// Flink rejected a statement (syntax, validation, planning, a failed restore ...): the
    /// readable reason of its error.
    #[error("{}", .0.message)]
    Sql(Cause),
    /// The SQL Gateway session is unknown: closed, expired (10 min idle by default) or lost in a
    /// gateway restart. The caller may open a new one and replay its set-up statements.
    #[error("the Flink SQL Gateway session {0} does not exist (closed or expired)")]
    SessionNotFound(String),
    /// The cluster does not know the job.
    #[error("Flink job {0} does not exist")]
    JobNotFound(String),
    /// The job has ended (in `state`), so it cannot be stopped with a savepoint.
    #[error("Flink job {job} is not running (it is {state})")]
    NotRunning { job: String, state: String },
    /// A job ended without finishing (FAILED, CANCELED): why.
    #[error("Flink job {job} ended {state}: {reason}")]
    JobFailed { job: String, state: String, reason: String },
    /// A wait (for a result, a job state, a savepoint) outlived its deadline.
    #[error("gave up waiting for {what} after {secs} s")]
    Timeout { what: String, secs: u64 },
    /// Stop-with-savepoint did not produce a savepoint.
    #[error("the savepoint of Flink job {job} failed: {reason}")]
    Savepoint { job: String, reason: String },
    /// An answer this client does not understand (status or body).
    #[error("{service} answered {method} {path} with {status}: {detail}")]
    Unexpected {
        service: &'static str,
        method: String,
        path: String,
        status: u16,
        detail: String,
    },
}

impl FlinkError {
    /// Whether opening a new session (and replaying its set-up) could cure this.
    pub fn is_session_not_found(&self) -> bool {
        matches!(self, FlinkError::SessionNotFound(_))
    }
}

/// The readable reason of a Flink error: the exception's class and message from the last
/// `Caused by:` of a Java stack trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Fully qualified, e.g. `org.apache.calcite.sql.validate.SqlValidatorException`.
    pub exception: String,
    /// The message, possibly several lines (a factory error lists the known connectors).
    pub message: String,
}

impl Cause {
    /// The class name without its package (`SqlValidatorException`).
    pub fn short_exception(&self) -> &str {
        self.exception.rsplit('.').next().unwrap_or(&self.exception)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.short_exception(), self.message)
    }
}

/// The last `Caused by:` of a Java stack trace (`text`), with its message's continuation lines
/// (up to the first `at ...` frame); without any `Caused by:`, the trace's first line.
pub fn last_cause(text: &str) -> Option<Cause> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().rposition(|l| l.trim_start().starts_with("Caused by: "));
    let (first, rest) = match start {
        Some(i) => (lines[i].trim_start().trim_start_matches("Caused by: "), &lines[i + 1..]),
        None => {
            let i = lines.iter().position(|l| {
                let l = l.trim();
                !l.is_empty() && l != "<Exception on server side:" && l != "Internal server error."
            })?;
            (lines[i].trim().trim_start_matches("<Exception on server side:"), &lines[i + 1..])
        }
    };
    let mut message_lines: Vec<&str> = Vec::new();
    let (exception, head) = split_exception(first);
    message_lines.push(head);
    for line in rest {
        let t = line.trim_start();
        if t.starts_with("at ") || t.starts_with("... ") || t.starts_with("Caused by:") || t.starts_with("Suppressed:") {
            break;
        }
        if t.starts_with("End of exception on server side") {
            break;
        }
        message_lines.push(line.trim_end());
    }
    while message_lines.last().is_some_and(|l| l.trim().is_empty()) {
        message_lines.pop();
    }
    let message = message_lines.join("\n").trim().to_string();
    Some(Cause {
        message: if message.is_empty() { exception.to_string() } else { message },
        exception: exception.to_string(),
    })
}

/// `java.lang.Foo: message` -> (`java.lang.Foo`, `message`); a line without a class prefix is all
/// message (class empty).
fn split_exception(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.split_once(": ") {
        Some((class, msg)) if is_class_name(class) => (class, msg),
        _ if is_class_name(line) => (line, ""),
        _ => ("", line),
    }
}

fn is_class_name(s: &str) -> bool {
    !s.is_empty() && s.contains('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '$' || c == '_')
}

/// The readable reason in a Flink REST error body (`{"errors":[...]}`): the last `Caused by:`
/// over all its elements; for a body that is not such JSON, the body's first line.
pub fn error_cause(body: &str) -> Option<Cause> {
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => match v.get("errors").and_then(|e| e.as_array()) {
            Some(errors) => errors.iter().filter_map(|e| e.as_str()).collect::<Vec<_>>().join("\n"),
            None => body.to_string(),
        },
        Err(_) => body.to_string(),
    };
    last_cause(&text)
}

/// The session named in a body that says it does not exist (`Session '<id>' does not exist.`),
/// however deep in the trace. Only the gateway's own wording counts: a JDBC error such as
/// `relation "x" does not exist` is not a missing session.
pub fn missing_session(body: &str) -> Option<String> {
    let at = body.find("' does not exist")?;
    let head = &body[..at];
    let open = head.rfind("Session '")?;
    let id = &head[open + "Session '".len()..];
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then(|| id.to_string())
}

/// `text` with each secret replaced by `***` (no shortening, unlike the client's `scrub`).
pub fn hide(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), "***");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNTAX: &str = include_str!("testdata/syntax.json");
    const UNKNOWN_TABLE: &str = include_str!("testdata/unknown_table.json");
    const CONFIGURE: &str = include_str!("testdata/configure.json");
    const HEARTBEAT_GONE: &str = include_str!("testdata/heartbeat_gone.json");
    const NO_JAR: &str = include_str!("testdata/jdbc_no_jar.json");

    #[test]
    fn causes_of_real_error_bodies() {
        // Bodies as Flink 2.3's SQL Gateway sent them (stacks trimmed), see docs/flink-facts.md.
        let cases = [
            (
                SYNTAX,
                "org.apache.calcite.runtime.CalciteException",
                "Non-query expression encountered in illegal context",
            ),
            (
                UNKNOWN_TABLE,
                "org.apache.calcite.sql.validate.SqlValidatorException",
                "Object 'no_such_table' not found",
            ),
            (
                CONFIGURE,
                "org.apache.flink.sql.parser.impl.ParseException",
                "Encountered \"<EOF>\" at line 1, column 16.\nWas expecting one of:\n    <BRACKET_QUOTED_IDENTIFIER> ...",
            ),
            (
                HEARTBEAT_GONE,
                "org.apache.flink.table.gateway.api.utils.SqlGatewayException",
                "Session 'f2774541-e9a2-43d4-af14-cda318cb99db' does not exist.",
            ),
            (
                NO_JAR,
                "org.apache.flink.table.api.ValidationException",
                "Could not find any factory for identifier 'jdbc' that implements \
                 'org.apache.flink.table.factories.DynamicTableFactory' in the classpath.\n\n\
                 Available factory identifiers are:\n\nblackhole\ndatagen\nfilesystem\nlegacy-csv\nprint\n\
                 python-arrow-source\npython-input-format",
            ),
            (
                r#"{"errors":["org.apache.flink.runtime.rest.handler.RestHandlerException: Job cancellation failed because the job has already reached another terminal state (FAILED)."]}"#,
                "org.apache.flink.runtime.rest.handler.RestHandlerException",
                "Job cancellation failed because the job has already reached another terminal state (FAILED).",
            ),
            (
                "JobException: Recovery is suppressed\n\tat x.y(Z.java:1)\nCaused by: org.postgresql.util.PSQLException: ERROR: relation \"smoke_no_such\" does not exist\n  Position: 13\n\tat a.b(C.java:2)\n",
                "org.postgresql.util.PSQLException",
                "ERROR: relation \"smoke_no_such\" does not exist\n  Position: 13",
            ),
            ("not json at all", "", "not json at all"),
            (
                r#"{"errors":["Internal server error.","<Exception on server side:\njava.lang.IllegalStateException\n\tat a.b(C.java:1)\n\nEnd of exception on server side>"]}"#,
                "java.lang.IllegalStateException",
                "java.lang.IllegalStateException",
            ),
        ];
        for (body, exception, message) in cases {
            let cause = error_cause(body).unwrap();
            assert_eq!(cause.exception, exception, "{body:.80}");
            // The parser's message goes on with the tokens it expected: compared up to there.
            if exception.ends_with("ParseException") {
                assert!(cause.message.starts_with(message), "{}", cause.message);
            } else {
                assert_eq!(cause.message, message, "{body:.80}");
            }
        }
        assert_eq!(error_cause(r#"{"errors":[]}"#), None);
        let c = error_cause(UNKNOWN_TABLE).unwrap();
        assert_eq!(c.short_exception(), "SqlValidatorException");
        assert_eq!(c.to_string(), "SqlValidatorException: Object 'no_such_table' not found");
    }

    #[test]
    fn missing_sessions() {
        let cases = [
            (HEARTBEAT_GONE, Some("f2774541-e9a2-43d4-af14-cda318cb99db")),
            (UNKNOWN_TABLE, None),
            (SYNTAX, None),
            // A sink's PostgreSQL error is not a missing session.
            (
                "Caused by: org.postgresql.util.PSQLException: ERROR: relation \"x\" does not exist",
                None,
            ),
            ("Session 'not a handle' does not exist.", None),
        ];
        for (body, want) in cases {
            assert_eq!(missing_session(body).as_deref(), want, "{body:.80}");
        }
    }

    #[test]
    fn hiding_secrets() {
        let secrets = vec!["s3cr3t".to_string(), String::new()];
        assert_eq!(hide("password='s3cr3t' and s3cr3t", &secrets), "password='***' and ***");
        assert_eq!(hide("nothing", &[]), "nothing");
    }
}
