//! The SQL that applies a plan's delta to its dynamic table. Pure: plan and names in, one
//! statement out, which the refresh runs as the table's owner inside its REPEATABLE READ
//! transaction (so the log and the sources are read as of one snapshot).

use crate::engine::incremental::analyze::{From, Plan, Source};
use crate::engine::incremental::capture::{SIGN, SourceTable, XID, log_column, log_table};
use crate::manager::rules::{quote_ident, quote_literal};

/// A column of the dynamic table: name and type as `format_type` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: String,
}

/// The changes of `source`'s log not yet applied: those of transactions invisible in `applied`
/// (the snapshot the table was last brought up to date with), read in the caller's snapshot,
/// with the source's columns under their current names, and the sign.
pub fn pending_changes(source: &SourceTable, applied: &str) -> String {
    let columns: String = source
        .columns
        .iter()
        .map(|(n, name)| format!("{} AS {}, ", quote_ident(&log_column(*n)), quote_ident(name)))
        .collect();
    format!(
        "SELECT {columns}{sign} FROM dyngate.{log} WHERE NOT pg_catalog.pg_visible_in_snapshot({xid}, {applied}::pg_catalog.pg_snapshot)",
        sign = quote_ident(SIGN),
        log = quote_ident(&log_table(source.oid)),
        xid = quote_ident(XID),
        applied = quote_literal(applied)
    )
}

/// `source`'s rows as they were at `applied`, with a sign: its rows now (+1), and the changes
/// since undone (each change's sign negated).
pub fn old_rows(source: &SourceTable, applied: &str) -> String {
    let names: String = source.columns.iter().map(|(_, name)| format!("{}, ", quote_ident(name))).collect();
    format!(
        "SELECT {names}'1'::pg_catalog.int2 AS {sign} FROM {table}
         UNION ALL
         SELECT {names}(- {sign})::pg_catalog.int2 FROM ({pending}) AS \"dyngate$pending\"",
        sign = quote_ident(SIGN),
        table = source.quoted,
        pending = pending_changes(source, applied),
    )
}

/// A source table as it is now, under its binding in the query.
pub fn table_now(t: &Source) -> String {
    format!("{}.{} AS {}", quote_ident(&t.schema), quote_ident(&t.name), quote_ident(&t.binding))
}

/// The FROM clauses (each with the expression of its rows' sign) whose rows add up to the change
/// of the joined rows since `applied`, `sources[i]` being the captured table of
/// `from.tables[i]`. Telescoping: term i reads table i's changes, the tables before it as they
/// are now, and those after it as they were (so every pair of changes is counted once):
/// Δ(A ⋈ B) = ΔA ⋈ B_old + A_new ⋈ ΔB. One table: its changes.
pub fn delta_terms(from: &From, sources: &[&SourceTable], applied: &str) -> Vec<(String, String)> {
    (0..from.tables.len())
        .map(|i| {
            let clause = from.render(|j| {
                let t = &from.tables[j];
                let binding = quote_ident(&t.binding);
                match j.cmp(&i) {
                    std::cmp::Ordering::Less => table_now(t),
                    std::cmp::Ordering::Equal => format!("({}) AS {binding}", pending_changes(sources[j], applied)),
                    std::cmp::Ordering::Greater => format!("({}) AS {binding}", old_rows(sources[j], applied)),
                }
            });
            let signs: Vec<String> = from.tables[i..]
                .iter()
                .map(|t| format!("{}.{}", quote_ident(&t.binding), quote_ident(SIGN)))
                .collect();
            (clause, signs.join(" * "))
        })
        .collect()
}

/// One statement applying the plan's delta to `target` (quoted), whose columns are `columns`
/// (in order, as the query's): for each distinct result row, the net number of copies its
/// changes add or remove; removed copies are deleted (any of the equal rows: they cannot be told
/// apart), added ones inserted. Rows are told apart by their text form (`ROW(...)::text`), which
/// every type has, is NULL-safe, and is at least as strict as equality; the values are cast to
/// the table's column types first, as an INSERT would. Its row count is the rows inserted.
///
/// Cost: the changes, plus, when some row lost copies, one scan of the table (a dynamic table
/// of plain rows has no key to look them up by); the cost guard weighs that.
pub fn apply_sql(plan: &Plan, sources: &[Vec<&SourceTable>], applied: &str, target: &str, columns: &[Column]) -> Option<String> {
    let Plan::Rows { branches } = plan else {
        return None;
    };
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let list = names.join(", ");
    let qualified = |alias: &str| names.iter().map(|n| format!("{alias}.{n}")).collect::<Vec<_>>().join(", ");
    let cast: String = columns
        .iter()
        .map(|c| format!("c.{n}::{t} AS {n}", n = quote_ident(&c.name), t = c.ty))
        .collect::<Vec<_>>()
        .join(", ");
    let mut changed: Vec<String> = Vec::new();
    for (b, srcs) in branches.iter().zip(sources) {
        let where_ = b.filter.as_ref().map(|f| format!(" WHERE {f}")).unwrap_or_default();
        for (clause, sign) in delta_terms(&b.from, srcs, applied) {
            changed.push(format!("SELECT {}, {sign} FROM {clause}{where_}", b.projection));
        }
    }
    Some(format!(
        "WITH changed ({list}, \"dyngate$n\") AS MATERIALIZED (
             {changed}),
         typed AS MATERIALIZED (SELECT {cast}, c.\"dyngate$n\" FROM changed AS c),
         keyed AS MATERIALIZED (SELECT ROW({typed_cols})::text AS \"dyngate$k\", typed.* FROM typed),
         net AS MATERIALIZED (
             SELECT \"dyngate$k\", sum(\"dyngate$n\") AS \"dyngate$n\" FROM keyed
              GROUP BY \"dyngate$k\" HAVING sum(\"dyngate$n\") <> 0),
         gone AS (
             DELETE FROM {target} AS t USING (
                 SELECT m.ctid FROM (
                     SELECT t2.ctid, net.\"dyngate$n\",
                            row_number() OVER (PARTITION BY net.\"dyngate$k\") AS \"dyngate$r\"
                       FROM {target} AS t2 JOIN net ON ROW({t2_cols})::text = net.\"dyngate$k\"
                      WHERE net.\"dyngate$n\" < 0) AS m
                  WHERE m.\"dyngate$r\" <= -m.\"dyngate$n\") AS doomed
              WHERE t.ctid = doomed.ctid)
         INSERT INTO {target} ({list})
         SELECT {one_cols} FROM net
           JOIN (SELECT DISTINCT ON (keyed.\"dyngate$k\") * FROM keyed) AS one ON one.\"dyngate$k\" = net.\"dyngate$k\",
           pg_catalog.generate_series(1, net.\"dyngate$n\")
          WHERE net.\"dyngate$n\" > 0",
        changed = changed.join("\n             UNION ALL "),
        typed_cols = qualified("typed"),
        t2_cols = qualified("t2"),
        one_cols = qualified("one"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::incremental::analyze::analyze;

    #[test]
    fn rows_apply_sql() {
        let plan = analyze("SELECT o.id, o.amount * 2 AS \"Double\" FROM public.orders o WHERE o.amount > 1").unwrap();
        let cols = [
            Column {
                name: "id".into(),
                ty: "integer".into(),
            },
            Column {
                name: "Double".into(),
                ty: "numeric".into(),
            },
        ];
        let source = SourceTable {
            oid: 7,
            schema: "public".into(),
            name: "orders".into(),
            quoted: "public.orders".into(),
            columns: vec![(1, "id".into()), (4, "amount".into())],
        };
        let sql = apply_sql(&plan, &[vec![&source]], "10:20:", "public.\"T\"", &cols).unwrap();
        if let Ok(path) = std::env::var("DYNGATE_PRINT_DELTA_SQL") {
            std::fs::write(path, &sql).unwrap();
        }
        for part in [
            "WITH changed (\"id\", \"Double\", \"dyngate$n\")",
            "SELECT o.id, o.amount * 2 AS \"Double\", \"o\".\"dyngate$sign\" FROM (SELECT \"a1\" AS \"id\", \"a4\" AS \"amount\", \"dyngate$sign\" FROM dyngate.\"changes_7\" WHERE NOT pg_catalog.pg_visible_in_snapshot(\"dyngate$xid\", '10:20:'::pg_catalog.pg_snapshot)) AS \"o\" WHERE o.amount > 1",
            "SELECT c.\"id\"::integer AS \"id\", c.\"Double\"::numeric AS \"Double\", c.\"dyngate$n\" FROM changed AS c",
            "JOIN net ON ROW(t2.\"id\", t2.\"Double\")::text = net.\"dyngate$k\"",
            "INSERT INTO public.\"T\" (\"id\", \"Double\")",
        ] {
            assert!(sql.contains(part), "{part}\n---\n{sql}");
        }
    }
}
