//! The PostgreSQL engine: a dynamic table is an ordinary table in the backing database, filled
//! and refreshed by SQL run inside a transaction of the caller's.
//!
//! User SQL (the query, the declared columns) runs with the privileges of the role it belongs to
//! (the creator, then the owner) through a SECURITY DEFINER function owned by that role
//! ([`run_as`]). `SET ROLE` alone would not do: the gateway's service session is a superuser's,
//! and a query could call `set_config('role', ...)` to become it again; inside a
//! security-definer function PostgreSQL refuses any change of role or session authorization.
//!
//! A FULL refresh replaces the content in one transaction with DELETE and INSERT: readers keep
//! seeing the old rows until it commits (MVCC), never an empty or partial table, and are not
//! blocked (DELETE takes no lock that conflicts with SELECT, unlike TRUNCATE or a table swap).

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use crate::core::{RefreshAction, quote_ident, quote_literal};
use crate::engine::Refreshed;

/// Key space of the advisory locks that serialize creating the per-role functions.
const RUNNER_LOCK_SPACE: i32 = 0x6479_6e72; // "dynr"

/// The oid of each role whose function is known to exist, so that a statement costs one round
/// trip. A cached oid is only used together with a check, in the same statement, that the role
/// still has that oid: a role dropped (or renamed) and another created under its name never gets
/// the first one's function.
static RUNNERS: std::sync::Mutex<Option<std::collections::HashMap<String, u32>>> = std::sync::Mutex::new(None);

fn runners() -> std::sync::MutexGuard<'static, Option<std::collections::HashMap<String, u32>>> {
    RUNNERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The SQL expression that runs the text in parameter `$sql` as `role` through the runner
/// `oid` (see [`runner`]), in one round trip with whatever statement embeds it: NULL, without
/// running anything, when the role named by parameter `$role` no longer has that oid.
pub fn run_as_call(oid: u32, role_param: usize, sql_param: usize) -> String {
    format!("CASE WHEN (SELECT oid FROM pg_roles WHERE rolname = ${role_param}) = {oid} THEN dyngate.run_as_{oid}(${sql_param}) END")
}

/// The oid of `role`'s runner function, remembered; created (and committed) when missing.
pub async fn runner(client: &mut Client, role: &str) -> Result<u32, tokio_postgres::Error> {
    if let Some(oid) = runners().as_ref().and_then(|m| m.get(role).copied()) {
        return Ok(oid);
    }
    let tx = client.transaction().await?;
    let (oid, _) = ensure_runner(&tx, role).await?;
    tx.commit().await?;
    runners().get_or_insert_with(Default::default).insert(role.to_string(), oid);
    Ok(oid)
}

/// Forgets `role`'s runner (its oid no longer matched, or its function was gone).
pub fn forget_runner(role: &str) {
    if let Some(m) = runners().as_mut() {
        m.remove(role);
    }
}

/// Runs one statement of `role`'s with `role`'s privileges; returns the rows it processed.
pub async fn run_as(tx: &Transaction<'_>, role: &str, sql: &str) -> Result<u64, tokio_postgres::Error> {
    let cached = runners().as_ref().and_then(|m| m.get(role).copied());
    if let Some(oid) = cached {
        let call = format!("SELECT {}", run_as_call(oid, 2, 1));
        match tx.query_typed_one(&call, &[(&sql, Type::TEXT), (&role, Type::TEXT)]).await {
            Ok(row) => {
                if let Some(n) = row.get::<_, Option<i64>>(0) {
                    return Ok(n as u64);
                }
            }
            Err(e) => {
                if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) {
                    forget_runner(role);
                }
                return Err(e);
            }
        }
        forget_runner(role);
    }
    let (oid, created) = ensure_runner(tx, role).await?;
    // A function created by this transaction exists for others only once it commits.
    if !created {
        runners().get_or_insert_with(Default::default).insert(role.to_string(), oid);
    }
    let n: i64 = tx
        .query_typed_one(&format!("SELECT dyngate.run_as_{oid}($1)"), &[(&sql, Type::TEXT)])
        .await?
        .get(0);
    Ok(n as u64)
}

/// Creates `role`'s function if it does not exist yet; returns the role's oid and whether this
/// transaction created it.
async fn ensure_runner(tx: &Transaction<'_>, role: &str) -> Result<(u32, bool), tokio_postgres::Error> {
    let probe = "SELECT r.oid, to_regprocedure(format('dyngate.run_as_%s(text)', r.oid)) IS NOT NULL FROM pg_roles r WHERE r.rolname = $1";
    let row = tx.query_typed_one(probe, &[(&role, Type::TEXT)]).await?;
    let (oid, exists): (u32, bool) = (row.get(0), row.get(1));
    if exists {
        return Ok((oid, false));
    }
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&RUNNER_LOCK_SPACE, &(oid as i32)])
        .await?;
    let exists: bool = tx.query_typed_one(probe, &[(&role, Type::TEXT)]).await?.get(1);
    if !exists {
        let function = format!("dyngate.run_as_{oid}");
        let signature = format!("{function}(text)");
        tx.batch_execute(&format!(
            "CREATE FUNCTION {function}(sql text) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER AS $dyngate$
             DECLARE n bigint; BEGIN EXECUTE sql; GET DIAGNOSTICS n = ROW_COUNT; RETURN n; END $dyngate$;
             ALTER FUNCTION {signature} OWNER TO {owner};
             REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;
             COMMENT ON FUNCTION {signature} IS 'dyngate: runs dynamic-table SQL with this role''s privileges';",
            owner = quote_ident(role)
        ))
        .await?;
    }
    Ok((oid, !exists))
}

/// A dynamic table's query bound to what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The view in schema `dyngate` that holds the query (unquoted name).
    pub view: String,
    /// The query with every name schema-qualified, as PostgreSQL prints the view back.
    pub resolved: String,
}

/// Binds `query` to the objects it names under `search_path` (the requester's, already
/// expanded): creates the view `dyngate.<view>` holding it, so PostgreSQL records what the
/// dynamic table reads (and refuses to drop it), and returns the query with all names resolved.
///
/// The view is created by the service account but never selected from (no one else has any
/// privilege on it); creating a view runs nothing of the query. It goes through the extended
/// protocol, which takes exactly one statement.
pub async fn bind_query(tx: &Transaction<'_>, search_path: &str, view: &str, query: &str) -> Result<Bound, tokio_postgres::Error> {
    tx.execute("SELECT set_config('search_path', $1, true)", &[&search_path]).await?;
    tx.execute(&format!("CREATE VIEW dyngate.{} AS {query}", quote_ident(view)), &[])
        .await?;
    // Printed with only pg_catalog visible, every other name comes out schema-qualified.
    tx.execute("SELECT set_config('search_path', 'pg_catalog', true)", &[]).await?;
    let def: String = tx
        .query_one("SELECT pg_get_viewdef(format('dyngate.%I', $1::text)::regclass, true)", &[&view])
        .await?
        .get(0);
    tx.execute("SELECT set_config('search_path', $1, true)", &[&search_path]).await?;
    Ok(Bound {
        view: view.to_string(),
        resolved: def.trim().trim_end_matches(';').trim().to_string(),
    })
}

/// Drops a view made by [`bind_query`].
pub async fn unbind_query(tx: &Transaction<'_>, view: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute(&format!("DROP VIEW IF EXISTS dyngate.{}", quote_ident(view)), &[])
        .await?;
    Ok(())
}

/// Creates the table as `role` and fills it for the first time. `target` is the quoted,
/// schema-qualified name; `columns` the declared column list, if any (else the query's columns);
/// `storage` its storage parameters, if any (`name = value, ...`, made by dyngate).
pub async fn create(
    tx: &Transaction<'_>,
    role: &str,
    target: &str,
    columns: Option<&str>,
    storage: Option<&str>,
    query: &str,
) -> Result<Refreshed, tokio_postgres::Error> {
    let with = storage.map(|s| format!(" WITH ({s})")).unwrap_or_default();
    let rows = match columns {
        Some(cols) => {
            run_as(tx, role, &format!("CREATE TABLE {target} ({cols}){with}")).await?;
            run_as(tx, role, &format!("INSERT INTO {target} SELECT * FROM ({query}) AS dyngate_query")).await?
        }
        None => run_as(tx, role, &format!("CREATE TABLE {target}{with} AS {query}")).await?,
    };
    Ok(Refreshed {
        action: RefreshAction::Full,
        rows,
    })
}

/// The SQL that replaces the content of `target` with `query`'s current rows, or only one
/// partition (the rows whose columns equal `spec`'s values): DELETE and INSERT, given to a runner
/// as one text (PL/pgSQL's EXECUTE takes both; the row count is the INSERT's). Run in one
/// transaction, readers see the old rows until it commits and are not blocked.
pub fn replace_sql(target: &str, query: &str, spec: &[(String, String)]) -> String {
    if spec.is_empty() {
        return format!("DELETE FROM {target}; INSERT INTO {target} SELECT * FROM ({query}) AS dyngate_query");
    }
    let filter: Vec<String> = spec
        .iter()
        .map(|(c, v)| format!("{} = {}", quote_ident(c), quote_literal(v)))
        .collect();
    let filter = filter.join(" AND ");
    format!("DELETE FROM {target} WHERE {filter}; INSERT INTO {target} SELECT * FROM ({query}) AS dyngate_query WHERE {filter}")
}

/// Replaces the whole content with the query's current result, as `owner`, in `tx`.
pub async fn full_refresh(tx: &Transaction<'_>, owner: &str, target: &str, query: &str) -> Result<Refreshed, tokio_postgres::Error> {
    let rows = run_as(tx, owner, &replace_sql(target, query, &[])).await?;
    Ok(Refreshed {
        action: RefreshAction::Full,
        rows,
    })
}
