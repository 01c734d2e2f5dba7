//! Dynamic tables refreshed by Flink: the table lives in the backing PostgreSQL (where every
//! client reads it, as any other dynamic table) and Flink computes its rows, writing them through
//! its JDBC connector.
//!
//! A FULL refresh is a batch job that writes the query's rows into a staging table
//! (`dyngate."flink_stage_<id>"`, unlogged, owned by the service account); once the job has
//! FINISHED, one PostgreSQL transaction replaces the table's rows (or one partition's) with the
//! staged ones. Readers see the old rows until it commits, never a partial result: the atomicity
//! that Flink's `INSERT OVERWRITE` gives on file systems, which its JDBC sink lacks (it refuses
//! OVERWRITE; see docs/flink-facts.md).
//!
//! Names: Flink's JDBC connector writes PostgreSQL column names unquoted (measured: a column `n m`
//! failed with "n m doesn't exist in the parameters of SQL statement: INSERT INTO ... (UserId, n
//! m)"), so PostgreSQL would fold them to lower case. The staging table's columns are therefore
//! plain positional names (`c1`, `c2`, ...), written by position; the table's own columns are the
//! query's column names in lower case (as an unquoted name in PostgreSQL reads), or the declared
//! column list. Table names are given to the connector quoted. A job that writes a table directly
//! (a streaming one) needs names PostgreSQL reads unquoted: [`plain_column_name`].
//!
//! Everything here is pure: the SQL texts, the rules. The engine runs them.

use crate::catalog::FlinkColumn;
use crate::core::quote_ident;
use crate::engine::flink::client::types::{LogicalType, TypeKind, pg_ddl_type};

/// How Flink's JDBC connector reaches the backing PostgreSQL, to write dynamic tables.
#[derive(Debug, Clone)]
pub struct SinkTarget {
    pub jdbc_url: String,
    pub user: String,
    pub password: String,
}

/// PostgreSQL's reserved key words, which cannot be column names unquoted (PostgreSQL 15's
/// "reserved" and "reserved (can be function or type)" key words).
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// The columns a sink writes straight into a table: the table's column names (which PostgreSQL
/// must read unquoted: [`plain_column_name`]) with the query's Flink types, position by position.
pub fn sink_columns(table_names: &[String], described: &[FlinkColumn]) -> Result<Vec<FlinkColumn>, String> {
    if table_names.len() != described.len() {
        return Err(format!(
            "the table has {} columns, the query returns {}",
            table_names.len(),
            described.len()
        ));
    }
    table_names
        .iter()
        .zip(described)
        .map(|(name, c)| match plain_column_name(name) {
            Ok(plain) if plain == *name => Ok(FlinkColumn {
                name: plain,
                flink_type: c.flink_type.clone(),
            }),
            _ => Err(format!(
                "column \"{name}\" cannot be written by Flink's JDBC connector, which does not quote column names: use a lower-case name"
            )),
        })
        .collect()
}

/// The PostgreSQL name of a query column: `name` in lower case, if PostgreSQL reads that
/// unquoted (the JDBC connector does not quote), else why not.
pub fn plain_column_name(name: &str) -> Result<String, String> {
    let lower = name.to_lowercase();
    let mut chars = lower.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if !first_ok || !rest_ok || lower.len() > 63 {
        return Err(format!(
            "column \"{name}\" of the query cannot be written by Flink's JDBC connector, which does not quote column names: name it with AS (letters, digits and _)"
        ));
    }
    if RESERVED.contains(&lower.as_str()) {
        return Err(format!(
            "column \"{name}\" of the query is a reserved word in PostgreSQL, and Flink's JDBC connector does not quote column names: name it otherwise with AS"
        ));
    }
    Ok(lower)
}

/// The columns of a Flink-refreshed table from the query's columns as `DESCRIBE` gives them
/// (name, type): names in lower case.
pub fn table_columns(described: &[(String, String)]) -> Result<Vec<FlinkColumn>, String> {
    let mut out: Vec<FlinkColumn> = Vec::with_capacity(described.len());
    for (name, ty) in described {
        let name = name.to_lowercase();
        if out.iter().any(|c| c.name == name) {
            return Err(format!(
                "the query returns column \"{name}\" twice (names are folded to lower case)"
            ));
        }
        let logical = LogicalType::from_sql(ty);
        match &logical.kind {
            TypeKind::Array(_)
            | TypeKind::Multiset(_)
            | TypeKind::Map { .. }
            | TypeKind::Row(_)
            | TypeKind::IntervalDayTime
            | TypeKind::IntervalYearMonth
            | TypeKind::TimestampTz { .. }
            | TypeKind::Null
            | TypeKind::Other(_) => {
                return Err(format!(
                    "column \"{name}\" has Flink type {ty}, which Flink's JDBC connector cannot write to PostgreSQL: cast it (e.g. to STRING)"
                ));
            }
            _ => {}
        }
        out.push(FlinkColumn {
            name,
            flink_type: strip_type(ty),
        });
    }
    Ok(out)
}

/// A type as `DESCRIBE` prints it, without `NOT NULL` and the time attribute markers (a sink
/// column takes plain values).
fn strip_type(ty: &str) -> String {
    let mut t = ty.trim().to_string();
    if t.to_ascii_uppercase().ends_with("NOT NULL") {
        t.truncate(t.len() - 8);
    }
    t.replace("*ROWTIME*", "").replace("*PROCTIME*", "").trim().to_string()
}

/// The column definitions of the PostgreSQL table: `"day" date, "total" numeric(10,2)`.
pub fn pg_columns(columns: &[FlinkColumn]) -> String {
    columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), pg_ddl_type(&LogicalType::from_sql(&c.flink_type))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column definitions of the staging table: positional names (`c1 date, c2 numeric(10,2)`),
/// which the JDBC connector can write unquoted.
pub fn stage_columns(columns: &[FlinkColumn]) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("c{} {}", i + 1, pg_ddl_type(&LogicalType::from_sql(&c.flink_type))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Flink string literal.
pub fn flink_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A Flink identifier, quoted.
pub fn flink_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The DDL of a temporary Flink table `sink` writing into the staging table `pg_table` (quoted,
/// schema-qualified; columns as [`stage_columns`] names them) through the JDBC connector.
pub fn sink_ddl(sink: &str, columns: &[FlinkColumn], target: &SinkTarget, pg_table: &str) -> String {
    let named: Vec<FlinkColumn> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| FlinkColumn {
            name: format!("c{}", i + 1),
            flink_type: c.flink_type.clone(),
        })
        .collect();
    named_sink_ddl(sink, &named, &[], target, pg_table)
}

/// The DDL of a temporary Flink table `sink` writing into `pg_table` (quoted, schema-qualified)
/// through the JDBC connector, with the columns' own names (which PostgreSQL must read unquoted:
/// [`plain_column_name`]) and, when `key` names columns, that primary key: the connector then
/// upserts (`INSERT ... ON CONFLICT (key) DO UPDATE`, which needs a unique index on them).
pub fn named_sink_ddl(sink: &str, columns: &[FlinkColumn], key: &[String], target: &SinkTarget, pg_table: &str) -> String {
    let mut cols: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if key.contains(&c.name) { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", flink_ident(&c.name), c.flink_type)
        })
        .collect();
    if !key.is_empty() {
        let k: Vec<String> = key.iter().map(|c| flink_ident(c)).collect();
        cols.push(format!("PRIMARY KEY ({}) NOT ENFORCED", k.join(", ")));
    }
    format!(
        "CREATE TEMPORARY TABLE {} ({}) WITH ('connector' = 'jdbc', 'url' = {}, 'table-name' = {}, 'username' = {}, 'password' = {})",
        flink_ident(sink),
        cols.join(", "),
        flink_literal(&target.jdbc_url),
        flink_literal(pg_table),
        flink_literal(&target.user),
        flink_literal(&target.password),
    )
}

/// The INSERT that writes `query`'s rows (only those of one partition when `partition` names
/// columns and values) into `sink`.
pub fn insert_sql(sink: &str, query: &str, partition: &[(String, String)]) -> String {
    let mut sql = format!("INSERT INTO {} SELECT * FROM ({query}) AS dyngate_query", flink_ident(sink));
    if !partition.is_empty() {
        let filter: Vec<String> = partition
            .iter()
            .map(|(c, v)| format!("dyngate_query.{} = {}", flink_ident(c), flink_literal(v)))
            .collect();
        sql.push_str(" WHERE ");
        sql.push_str(&filter.join(" AND "));
    }
    sql
}

/// The key of a continuously maintained table: the output columns of a grouped query that hold
/// its GROUP BY expressions (all of them must be selected), or every column of a SELECT
/// DISTINCT; None for a query that groups nothing (its rows are appended). The names are the
/// output names in lower case, as the table's columns are named.
pub fn upsert_key(query: &str, columns: &[FlinkColumn]) -> Result<Option<Vec<String>>, String> {
    use sqlparser::ast::{Distinct, Expr, GroupByExpr, SelectItem, SetExpr, Statement};
    let statements = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::GenericDialect {}, query)
        .map_err(|e| format!("the query could not be read to find its key ({e})"))?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return Err("the query could not be read to find its key".into());
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Ok(None);
    };
    if matches!(select.distinct, Some(Distinct::Distinct)) {
        return Ok(Some(columns.iter().map(|c| c.name.clone()).collect()));
    }
    let group = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) if !exprs.is_empty() => exprs,
        _ => return Ok(None),
    };
    let mut key = Vec::new();
    for g in group {
        let found = select.projection.iter().enumerate().find_map(|(i, item)| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } if e == g => Some(i),
            // GROUP BY an alias of the select list.
            SelectItem::ExprWithAlias { alias, .. } if matches!(g, Expr::Identifier(id) if id.value.eq_ignore_ascii_case(&alias.value)) => {
                Some(i)
            }
            _ => None,
        });
        match found.and_then(|i| columns.get(i)) {
            Some(c) if !key.contains(&c.name) => key.push(c.name.clone()),
            Some(_) => {}
            None => {
                return Err(format!(
                    "GROUP BY {g} is not in the select list: a continuously maintained table is keyed by its grouping columns, so select each of them"
                ));
            }
        }
    }
    Ok(Some(key))
}

/// The staging table of dynamic table `id` (quoted, schema-qualified).
pub fn stage_table(id: i64) -> String {
    format!("dyngate.{}", quote_ident(&format!("flink_stage_{id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("day", Ok("day")),
            ("UserId", Ok("userid")),
            ("EXPR$1", Ok("expr$1")),
            ("_x9", Ok("_x9")),
            ("n m", Err("does not quote")),
            ("1st", Err("does not quote")),
            ("order", Err("reserved")),
            ("User", Err("reserved")),
            ("été", Err("does not quote")),
        ];
        for (name, want) in cases {
            match (plain_column_name(name), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, *w, "{name}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: {got:?}, wanted {want:?}"),
            }
        }
    }

    fn d(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn columns_from_describe() {
        let cols = table_columns(&d(&[
            ("Day", "DATE NOT NULL"),
            ("total", "DECIMAL(38, 2)"),
            ("ts", "TIMESTAMP(3) *ROWTIME*"),
        ]))
        .unwrap();
        assert_eq!(
            cols,
            vec![
                FlinkColumn {
                    name: "day".into(),
                    flink_type: "DATE".into()
                },
                FlinkColumn {
                    name: "total".into(),
                    flink_type: "DECIMAL(38, 2)".into()
                },
                FlinkColumn {
                    name: "ts".into(),
                    flink_type: "TIMESTAMP(3)".into()
                },
            ]
        );
        assert_eq!(pg_columns(&cols), "\"day\" date, \"total\" numeric(38,2), \"ts\" timestamp(3)");
        assert_eq!(stage_columns(&cols), "c1 date, c2 numeric(38,2), c3 timestamp(3)");
        assert_eq!(table_columns(&d(&[("EXPR$0", "BIGINT")])).unwrap()[0].name, "expr$0");
        for (described, why) in [
            (d(&[("a", "INT"), ("A", "INT")]), "twice"),
            (d(&[("a", "ARRAY<INT>")]), "cannot write"),
            (d(&[("a", "INTERVAL DAY(2) TO SECOND(3)")]), "cannot write"),
        ] {
            let e = table_columns(&described).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn sink_columns_take_the_tables_names() {
        let described = vec![
            FlinkColumn {
                name: "k".into(),
                flink_type: "INT".into(),
            },
            FlinkColumn {
                name: "expr$1".into(),
                flink_type: "BIGINT".into(),
            },
        ];
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cols = sink_columns(&names(&["bucket", "n"]), &described).unwrap();
        assert_eq!((cols[1].name.as_str(), cols[1].flink_type.as_str()), ("n", "BIGINT"));
        assert!(
            sink_columns(&names(&["Bucket", "n"]), &described)
                .unwrap_err()
                .contains("lower-case")
        );
        assert!(sink_columns(&names(&["order", "n"]), &described).is_err());
        assert!(sink_columns(&names(&["bucket"]), &described).unwrap_err().contains("1 columns"));
    }

    #[test]
    fn keys_of_continuous_queries() {
        let cols = |names: &[&str]| -> Vec<FlinkColumn> {
            names
                .iter()
                .map(|n| FlinkColumn {
                    name: n.to_string(),
                    flink_type: "BIGINT".into(),
                })
                .collect()
        };
        let key = |q: &str, names: &[&str]| upsert_key(q, &cols(names));
        let some = |k: &[&str]| Ok(Some(k.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        assert_eq!(
            key("SELECT region, count(*) AS n FROM flink.o GROUP BY region", &["region", "n"]),
            some(&["region"])
        );
        assert_eq!(
            key(
                "SELECT count(*) AS n, `day`, region FROM flink.o GROUP BY region, `day`",
                &["n", "day", "region"]
            ),
            some(&["region", "day"])
        );
        assert_eq!(
            key(
                "SELECT id % 10 AS bucket, max(id) AS m FROM flink.o GROUP BY id % 10",
                &["bucket", "m"]
            ),
            some(&["bucket"])
        );
        assert_eq!(
            key("SELECT id % 10 AS b, count(*) AS n FROM flink.o GROUP BY b", &["b", "n"]),
            some(&["b"])
        );
        assert_eq!(key("SELECT DISTINCT a, b FROM flink.o", &["a", "b"]), some(&["a", "b"]));
        assert_eq!(key("SELECT id, v FROM flink.o WHERE id > 3", &["id", "v"]), Ok(None));
        assert!(
            key("SELECT count(*) AS n FROM flink.o GROUP BY region", &["n"])
                .unwrap_err()
                .contains("not in the select list")
        );
    }

    #[test]
    fn named_sinks_have_their_key() {
        let cols = vec![
            FlinkColumn {
                name: "region".into(),
                flink_type: "STRING".into(),
            },
            FlinkColumn {
                name: "n".into(),
                flink_type: "BIGINT".into(),
            },
        ];
        let target = SinkTarget {
            jdbc_url: "jdbc:postgresql://127.0.0.1:5432/db".into(),
            user: "svc".into(),
            password: "pw".into(),
        };
        assert_eq!(
            named_sink_ddl("k", &cols, &["region".to_string()], &target, "\"public\".\"t\""),
            "CREATE TEMPORARY TABLE `k` (`region` STRING NOT NULL, `n` BIGINT, PRIMARY KEY (`region`) NOT ENFORCED) WITH \
             ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:5432/db', 'table-name' = '\"public\".\"t\"', \
             'username' = 'svc', 'password' = 'pw')"
        );
    }

    #[test]
    fn sink_and_insert_sql() {
        let cols = vec![FlinkColumn {
            name: "n".into(),
            flink_type: "BIGINT".into(),
        }];
        let target = SinkTarget {
            jdbc_url: "jdbc:postgresql://127.0.0.1:5432/db".into(),
            user: "svc".into(),
            password: "p'w".into(),
        };
        assert_eq!(
            sink_ddl("dyngate_sink_1", &cols, &target, "dyngate.\"flink_stage_1\""),
            "CREATE TEMPORARY TABLE `dyngate_sink_1` (`c1` BIGINT) WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:5432/db', \
             'table-name' = 'dyngate.\"flink_stage_1\"', 'username' = 'svc', 'password' = 'p''w')"
        );
        assert_eq!(
            insert_sql("s", "SELECT 1 AS n", &[]),
            "INSERT INTO `s` SELECT * FROM (SELECT 1 AS n) AS dyngate_query"
        );
        assert_eq!(
            insert_sql("s", "SELECT d, n FROM t", &[("d".into(), "2024-01-0'1".into())]),
            "INSERT INTO `s` SELECT * FROM (SELECT d, n FROM t) AS dyngate_query WHERE dyngate_query.`d` = '2024-01-0''1'"
        );
        assert_eq!(stage_table(7), "dyngate.\"flink_stage_7\"");
    }
}
