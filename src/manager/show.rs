//! SHOW DYNAMIC TABLES, DESCRIBE DYNAMIC TABLE, SHOW CREATE DYNAMIC TABLE: read-only looks at
//! the catalog, allowed inside a transaction block. A table is listed only to those who may read
//! it.

use crate::catalog::DtRow;
use crate::core::{EngineKind, Error, LogicalMode, QualifiedName, Requester, quote_ident, quote_literal};
use crate::engine::Engine;
use crate::manager::create::TIME_ZONE_OPTION;
use crate::manager::{Manager, on_engine};
use crate::sql::dynamic::TableName;

/// One line of SHOW DYNAMIC TABLES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub schema: String,
    pub name: String,
    pub freshness: String,
    pub refresh_mode: String,
    pub status: String,
    pub engine: String,
    pub owner: String,
    pub last_refresh_at: Option<String>,
    pub lag: Option<String>,
    pub freshness_met: bool,
    /// INCREMENTAL or FULL, and why FULL.
    pub refresh_action: String,
    pub refresh_action_reason: Option<String>,
}

impl Manager {
    pub async fn show(&self, who: &Requester<'_>, like: Option<&str>) -> Result<Vec<Listed>, Error> {
        self.check_database(who)?;
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT schema_name, table_name, freshness, refresh_mode, status, engine, owner_role, last_refresh_at::text,
                        date_trunc('second', lag)::text, freshness_met, refresh_action, refresh_action_reason
                   FROM dyngate.dynamic_tables
                  WHERE ($1::text IS NULL OR table_name LIKE $1)
                    AND CASE WHEN to_regclass(format('%I.%I', schema_name, table_name)) IS NULL THEN false
                             ELSE has_table_privilege($2, format('%I.%I', schema_name, table_name), 'SELECT') END
                  ORDER BY schema_name, table_name",
                &[&like, &who.user],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Listed {
                schema: r.get(0),
                name: r.get(1),
                freshness: r.get(2),
                refresh_mode: r.get(3),
                status: r.get(4),
                engine: r.get(5),
                owner: r.get(6),
                last_refresh_at: r.get(7),
                lag: r.get(8),
                freshness_met: r.get(9),
                refresh_action: r.get(10),
                refresh_action_reason: r.get(11),
            })
            .collect())
    }

    /// Loads a dynamic table the requester may read.
    async fn visible(&self, who: &Requester<'_>, name: &TableName) -> Result<DtRow, Error> {
        self.check_database(who)?;
        let mut client = self.pool.get().await?;
        let dt = self.load_existing(&mut client, who, name).await?;
        let name = &dt.name;
        let readable: bool = client
            .query_one("SELECT has_table_privilege($1, $2, 'SELECT')", &[&who.user, &name.quoted()])
            .await?
            .get(0);
        if !readable {
            // As PostgreSQL does for a relation one cannot see into: same answer as missing.
            return Err(Error::NotFound(name.to_string()));
        }
        Ok(dt)
    }

    /// DESCRIBE DYNAMIC TABLE: (property, value) pairs.
    pub async fn describe(&self, who: &Requester<'_>, name: &TableName) -> Result<Vec<(String, Option<String>)>, Error> {
        let dt = self.visible(who, name).await?;
        let client = self.pool.get().await?;
        let last = client
            .query_opt(
                "SELECT last_refresh_at::text, date_trunc('second', lag)::text, freshness_met FROM dyngate.dynamic_tables
                  WHERE schema_name = $1 AND table_name = $2",
                &[&dt.name.schema, &dt.name.name],
            )
            .await?;
        let columns = client
            .query(
                "SELECT a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                  WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&dt.name.quoted()],
            )
            .await?;
        let cols: Vec<String> = columns.iter().map(|r| r.get(0)).collect();
        let mut out: Vec<(&str, Option<String>)> = vec![
            ("name", Some(dt.name.to_string())),
            ("columns", Some(cols.join(", "))),
            ("query", Some(dt.query.clone())),
            ("resolved_query", Some(dt.refresh_query().to_string())),
            ("partitioned_by", Some(dt.partitioned_by.join(", ")).filter(|p| !p.is_empty())),
            ("time_zone", Some(dt.time_zone.clone())),
            ("freshness", Some(format!("{} {}", dt.freshness.n, dt.freshness.unit.name()))),
            ("logical_refresh_mode", Some(dt.logical_mode.to_string())),
            ("refresh_mode", Some(dt.refresh_mode.to_string())),
            ("refresh_action", Some(dt.refresh_action.to_string())),
            ("refresh_action_reason", dt.refresh_action_reason.clone()),
            ("status", Some(dt.status.to_string())),
            ("engine", Some(dt.engine.to_string())),
            ("scheduler", dt.scheduler.map(|s| s.to_string())),
            ("scheduler_handle", self.schedule_summary(&dt)),
            ("owner", Some(dt.owner.clone())),
            ("comment", dt.comment.clone()),
            ("options", Some(dt.options.to_string())),
            (
                "refresh_options",
                Some(serde_json::to_string(&dt.refresh_options).unwrap_or_default()).filter(|o| o != "{}"),
            ),
            ("created_at", Some(dt.created_at.clone())),
            ("altered_at", Some(dt.altered_at.clone())),
        ];
        out.extend(on_engine!(self, dt.engine, |engine| engine.describe(&dt)));
        if let Some(l) = last {
            out.push(("last_refresh_at", l.get(0)));
            out.push(("lag", l.get(1)));
            out.push(("freshness_met", Some(l.get::<_, bool>(2).to_string())));
        }
        Ok(out.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// SHOW CREATE DYNAMIC TABLE: a statement that recreates the table.
    pub async fn show_create(&self, who: &Requester<'_>, name: &TableName) -> Result<String, Error> {
        let dt = self.visible(who, name).await?;
        Ok(create_statement(&dt))
    }
}

/// The normalized CREATE statement of a catalog row: names quoted, clauses in canonical order.
pub fn create_statement(dt: &DtRow) -> String {
    let QualifiedName { schema, name } = &dt.name;
    let mut s = format!("CREATE DYNAMIC TABLE {}.{}", quote_ident(schema), quote_ident(name));
    if let Some(c) = &dt.columns {
        s.push_str(&format!(" ({c})"));
    }
    if let Some(c) = &dt.comment {
        s.push_str(&format!("\nCOMMENT {}", quote_literal(c)));
    }
    if !dt.partitioned_by.is_empty() {
        let cols: Vec<String> = dt.partitioned_by.iter().map(|c| quote_ident(c)).collect();
        s.push_str(&format!("\nPARTITIONED BY ({})", cols.join(", ")));
    }
    // The schedule's time zone is always spelled out: it may have come from the session.
    let mut opts = dt.options.as_object().cloned().unwrap_or_default();
    opts.entry(TIME_ZONE_OPTION)
        .or_insert_with(|| serde_json::Value::String(dt.time_zone.clone()));
    // The engine too, when it is not the default's default: it may have come from --engine.
    if dt.engine != EngineKind::Postgres {
        opts.entry("engine")
            .or_insert_with(|| serde_json::Value::String(dt.engine.to_string()));
    }
    let list: Vec<String> = opts
        .iter()
        .map(|(k, v)| format!("{} = {}", quote_literal(k), quote_literal(v.as_str().unwrap_or_default())))
        .collect();
    s.push_str(&format!("\nWITH ({})", list.join(", ")));
    s.push_str(&format!("\nFRESHNESS = {}", dt.freshness));
    if dt.logical_mode != LogicalMode::Automatic {
        s.push_str(&format!("\nREFRESH_MODE = {}", dt.logical_mode));
    }
    s.push_str(&format!("\nAS {}", dt.query));
    s
}
