//! A grouped table that is its own state. When every aggregate of a grouped query can be
//! brought up to date from its own value and the delta's, an apply merges the delta per group
//! into the table's rows in place (`INSERT ... ON CONFLICT` on a unique index of the group keys,
//! NULLs not distinct), then deletes the groups left with no row; no side table is kept
//! (groups.rs has the general layout, with its state table). That is so when:
//!
//! - the select list has count(*): a group whose count comes to 0 is deleted;
//! - every other aggregate is count(e), or sum(e)
//!   - whose value has one scale whatever rows it adds up: a sum of integers (`bigint`), of
//!     money, or of a column typed `bigint` or `numeric(p, s)` (a sum of other numerics has
//!     the scale of its largest-scale value, which a deletion may take away), and
//!   - that is NULL only when the group has no row: e is a NOT NULL column of a table that no
//!     outer join NULL-extends, or count(e) is in the select list too and says when it is;
//! - min, max and avg are not (their value alone cannot take a deletion);
//! - the table's columns have the query's types (no cast may merge two groups).
//!
//! Against the state table, an apply skips the state's upsert, the table's DELETE and INSERT of
//! the touched groups and the bookkeeping of extrema (bench/incremental.sh).
//!
//! Pure: plan, columns and the sources' column facts (capture::SourceTable) in, SQL out. Which
//! layout a table has is decided at its fill and each full refresh (incremental::refill_state),
//! and checked before each apply (incremental::shape): a NOT NULL dropped since makes the next
//! refresh full, which gives the table a state table again.

use crate::core::quote_ident;
use crate::engine::postgres::incremental::analyze::{Agg, Output, Plan, Relation, column_ref};
use crate::engine::postgres::incremental::capture::SourceTable;
use crate::engine::postgres::incremental::delta::Column;
use crate::engine::postgres::incremental::groups::{Grouped, changed_rows, col, grouped};

const SIGN: &str = "\"dyngate$sign\"";

/// Whether the grouped table whose columns are `table` (its query's: `query`) can be its own
/// state; if not, why.
pub fn check(plan: &Plan, table: &[Column], query: &[Column], sources: &[SourceTable]) -> Result<(), String> {
    let g = grouped(plan).ok_or("not a grouped query")?;
    if table.len() != g.outputs.len() || query.len() != g.outputs.len() || table.iter().zip(query).any(|(t, q)| t.ty != q.ty) {
        return Err("the table's columns do not have the query's types".into());
    }
    if !g.outputs.contains(&Output::Agg(Agg::Count, None)) {
        return Err("there is no count(*) to tell when a group is empty".into());
    }
    for (i, o) in g.outputs.iter().enumerate() {
        match o {
            Output::Key(_) | Output::Agg(Agg::Count, _) => {}
            Output::Agg(Agg::Sum, Some(e)) => {
                let fixed = matches!(query[i].ty.as_str(), "bigint" | "money") || column_fact(&g, sources, e, false, |s| &s.fixed_scale);
                if !fixed {
                    return Err(format!("the scale of sum({e}) follows its values'"));
                }
                if counted_by(&g, e).is_none() && !column_fact(&g, sources, e, true, |s| &s.not_null) {
                    return Err(format!("sum({e}) may be NULL in a group with rows"));
                }
            }
            Output::Agg(agg, _) => return Err(format!("{agg:?} needs the state table")),
        }
    }
    Ok(())
}

/// Whether `e` is a column of a source table that `fact` lists (and, if `kept`, of a table that
/// no outer join NULL-extends).
fn column_fact(g: &Grouped<'_>, sources: &[SourceTable], e: &str, kept: bool, fact: impl Fn(&SourceTable) -> &Vec<String>) -> bool {
    let Some((binding, column)) = column_ref(e) else {
        return false;
    };
    let extended = g.from.null_extended();
    g.from.items.iter().zip(extended).any(|(item, extended)| match item {
        Relation::Table(t) if t.binding == binding && !(kept && extended) => sources
            .iter()
            .find(|s| s.schema == t.schema && s.name == t.name)
            .is_some_and(|s| fact(s).contains(&column)),
        _ => false,
    })
}

/// The output that counts `e`'s values (count(e)), if any.
fn counted_by(g: &Grouped<'_>, e: &str) -> Option<usize> {
    g.outputs
        .iter()
        .position(|o| matches!(o, Output::Agg(Agg::Count, Some(c)) if c == e))
}

/// The key columns (see [`key_columns`]) of a table that can be its own state ([`check`]);
/// None if it cannot.
pub fn own_state_keys(plan: &Plan, table: &[Column], query: &[Column], sources: &[SourceTable]) -> Option<Vec<String>> {
    check(plan, table, query, sources).ok()?;
    key_columns(plan, table)
}

/// The table's columns holding the group keys (for each key, the first output of it), unquoted.
pub fn key_columns(plan: &Plan, table: &[Column]) -> Option<Vec<String>> {
    let g = grouped(plan)?;
    (0..g.keys.len())
        .map(|j| {
            let i = g.outputs.iter().position(|o| *o == Output::Key(j))?;
            table.get(i).map(|c| c.name.clone())
        })
        .collect()
}

/// The name of the key index of dynamic table `id` (in the table's schema, unquoted).
pub fn key_index(id: i64) -> String {
    format!("dyngate_keys_{id}")
}

/// The unique index an apply's upsert needs on table `id` (`target`, quoted): on the key
/// columns, NULLs not distinct (GROUP BY has one group of NULLs).
pub fn key_index_sql(id: i64, target: &str, keys: &[String]) -> String {
    let cols: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
    format!(
        "CREATE UNIQUE INDEX {} ON {target} ({}) NULLS NOT DISTINCT",
        quote_ident(&key_index(id)),
        cols.join(", ")
    )
}

/// The statements that apply the changes logged since `applied` to `target` (quoted, with
/// columns `table`): the upsert of the delta per group, then the deletion of the groups left
/// with no row. Run in this order in the refresh's transaction; [`check`] must hold.
pub fn apply_sql(plan: &Plan, sources: &[SourceTable], applied: &str, target: &str, table: &[Column]) -> Option<[String; 2]> {
    let g = grouped(plan)?;
    let names: Vec<String> = table.iter().map(|c| quote_ident(&c.name)).collect();
    let keys: Vec<String> = key_columns(plan, table)?.iter().map(|k| quote_ident(k)).collect();
    let args: String = g
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Output::Agg(_, Some(e)) => Some(format!(", {e} AS {}", col("e", i))),
            _ => None,
        })
        .collect();
    let changed = changed_rows(&g, sources, applied, &args)?;
    let values = |i: usize| format!("coalesce(sum({SIGN}) FILTER (WHERE {} IS NOT NULL), 0)", col("e", i));
    let mut select = Vec::new();
    let mut sets = Vec::new();
    let mut empty = None;
    for (i, o) in g.outputs.iter().enumerate() {
        let name = names.get(i)?;
        let added = format!("{name} = t.{name} + excluded.{name}");
        match o {
            Output::Key(j) => select.push(col("k", *j)),
            Output::Agg(Agg::Count, None) => {
                select.push(format!("sum({SIGN})"));
                sets.push(added);
                empty.get_or_insert(format!("t.{name} = 0"));
            }
            Output::Agg(Agg::Count, Some(_)) => {
                select.push(values(i));
                sets.push(added);
            }
            Output::Agg(Agg::Sum, Some(e)) => {
                let sum = format!("sum({SIGN} * {})", col("e", i));
                match counted_by(&g, e) {
                    // NULL while the group has no value. A new group whose changes leave it no
                    // value has a delta of 0 (they cancel): NULL is inserted, and NULL merges
                    // into an existing group as no change. The count alone cannot tell: values
                    // updated in place change the sum, not the count.
                    Some(c) => {
                        let count = names.get(c)?;
                        select.push(format!("CASE WHEN {} <> 0 OR {sum} <> '0' THEN {sum} END", values(i)));
                        sets.push(format!(
                            "{name} = CASE WHEN t.{count} + excluded.{count} <> 0 THEN coalesce(t.{name} + excluded.{name}, t.{name}, excluded.{name}) END"
                        ));
                    }
                    None => {
                        select.push(sum);
                        sets.push(added);
                    }
                }
            }
            Output::Agg(..) => return None,
        }
    }
    let key_list: Vec<String> = (0..g.keys.len()).map(|j| col("k", j)).collect();
    Some([
        format!(
            "INSERT INTO {target} AS t ({}) SELECT {} FROM ({changed}) AS c GROUP BY {} ON CONFLICT ({}) DO UPDATE SET {}",
            names.join(", "),
            select.join(", "),
            key_list.join(", "),
            keys.join(", "),
            sets.join(", "),
        ),
        format!("DELETE FROM {target} AS t WHERE {}", empty?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::postgres::incremental::analyze::analyze;

    fn source(name: &str, not_null: &[&str], fixed_scale: &[&str]) -> SourceTable {
        SourceTable {
            oid: 7,
            schema: "public".into(),
            name: name.into(),
            quoted: format!("public.{name}"),
            columns: Vec::new(),
            not_null: not_null.iter().map(|c| c.to_string()).collect(),
            fixed_scale: fixed_scale.iter().map(|c| c.to_string()).collect(),
            wal: false,
            peeked: false,
            changes: None,
        }
    }

    /// Which grouped tables are their own state: (query, its columns' types, NOT NULL columns
    /// and fixed-scale columns of orders and of customers, whether the table's types differ,
    /// the reason not, if not).
    #[test]
    fn which_tables_are_their_own_state() {
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str], Option<&'a str>);
        let v1 = "SELECT o.day, count(*) AS n, sum(o.amount) AS total FROM public.orders o GROUP BY o.day";
        let v2 = "SELECT c.region, o.day, count(*) AS n, sum(o.amount) AS total FROM public.orders o JOIN public.customers c ON c.id = o.customer_id GROUP BY c.region, o.day";
        let cases: &[Case] = &[
            (v1, &["date", "bigint", "numeric"], &["amount"], &["amount"], None),
            (v2, &["text", "date", "bigint", "numeric"], &["amount"], &["amount"], None),
            // numeric without a scale: the sum's scale is its values' largest.
            (v1, &["date", "bigint", "numeric"], &["amount"], &[], Some("scale")),
            // May be NULL, and nothing counts its values.
            (v1, &["date", "bigint", "numeric"], &[], &["amount"], Some("may be NULL")),
            (
                "SELECT o.day, count(*) AS n, sum(o.amount) AS total, count(o.amount) AS priced FROM public.orders o GROUP BY o.day",
                &["date", "bigint", "numeric", "bigint"],
                &[],
                &["amount"],
                None,
            ),
            // A sum of integers is a bigint: one scale, whatever the argument.
            (
                "SELECT o.day, count(*) AS n, sum(o.qty * 2) AS q, count(o.qty * 2) AS m FROM public.orders o GROUP BY o.day",
                &["date", "bigint", "bigint", "bigint"],
                &[],
                &[],
                None,
            ),
            (
                "SELECT o.day, count(*) AS n, sum(o.qty * 2) AS q FROM public.orders o GROUP BY o.day",
                &["date", "bigint", "bigint"],
                &["qty"],
                &[],
                Some("may be NULL"),
            ),
            // The NOT NULL column of a NULL-extended table may be NULL.
            (
                "SELECT c.region, count(*) AS n, sum(o.amount) AS total FROM public.customers c LEFT JOIN public.orders o ON o.customer_id = c.id GROUP BY c.region",
                &["text", "bigint", "numeric"],
                &["amount"],
                &["amount"],
                Some("may be NULL"),
            ),
            (
                "SELECT o.day, count(*) AS n, sum(o.amount) AS total FROM public.customers c RIGHT JOIN public.orders o ON o.customer_id = c.id GROUP BY o.day",
                &["date", "bigint", "numeric"],
                &["amount"],
                &["amount"],
                None,
            ),
            (
                "SELECT o.day, sum(o.amount) AS total FROM public.orders o GROUP BY o.day",
                &["date", "numeric"],
                &["amount"],
                &["amount"],
                Some("count(*)"),
            ),
            ("SELECT DISTINCT o.day FROM public.orders o", &["date"], &[], &[], Some("count(*)")),
            (
                "SELECT o.day, count(*) AS n, max(o.amount) AS top FROM public.orders o GROUP BY o.day",
                &["date", "bigint", "numeric"],
                &["amount"],
                &["amount"],
                Some("Max"),
            ),
            (
                "SELECT o.day, count(*) AS n, avg(o.amount) AS mean FROM public.orders o GROUP BY o.day",
                &["date", "bigint", "numeric"],
                &["amount"],
                &["amount"],
                Some("Avg"),
            ),
            ("SELECT o.id FROM public.orders o", &["integer"], &[], &[], Some("grouped")),
        ];
        for (sql, types, not_null, fixed, want) in cases {
            let plan = analyze(sql).unwrap();
            let query: Vec<Column> = types.iter().enumerate().map(|(i, t)| Column::new(&format!("c{i}"), t)).collect();
            let sources = [source("orders", not_null, fixed), source("customers", &["region"], &[])];
            match (check(&plan, &query, &query, &sources), want) {
                (Ok(()), None) => {}
                (Err(why), Some(want)) => assert!(why.contains(want), "{sql}: {why}"),
                (got, want) => panic!("{sql}: {got:?}, expected {want:?}"),
            }
        }
        // A table whose columns were declared with other types keeps the state table.
        let plan = analyze(v1).unwrap();
        let query = [
            Column::new("day", "date"),
            Column::new("n", "bigint"),
            Column::new("total", "numeric"),
        ];
        let table = [
            Column::new("day", "text"),
            Column::new("n", "bigint"),
            Column::new("total", "numeric"),
        ];
        let sources = [source("orders", &["amount"], &["amount"])];
        assert!(check(&plan, &table, &query, &sources).unwrap_err().contains("types"));
    }

    #[test]
    fn apply_merges_into_the_table() {
        let plan = analyze(
            "SELECT o.day, count(*) AS n, sum(o.amount) AS total, sum(o.tip) AS tips, count(o.tip) AS tipped FROM public.orders o GROUP BY o.day",
        )
        .unwrap();
        let table = [
            Column::new("day", "date"),
            Column::new("n", "bigint"),
            Column::new("total", "numeric"),
            Column::new("Tips", "numeric"),
            Column::new("tipped", "bigint"),
        ];
        let mut orders = source("orders", &["amount"], &["amount", "tip"]);
        orders.columns = vec![(2, "day".into()), (3, "amount".into()), (4, "tip".into())];
        let [upsert, delete] = apply_sql(&plan, &[orders], "1:2:", "public.\"Daily\"", &table).unwrap();
        for part in [
            "INSERT INTO public.\"Daily\" AS t (\"day\", \"n\", \"total\", \"Tips\", \"tipped\") SELECT \"dyngate$k0\", sum(\"dyngate$sign\"), sum(\"dyngate$sign\" * \"dyngate$e2\"), ",
            // A sum that may be NULL: no delta (NULL) when its changes cancel out.
            "CASE WHEN coalesce(sum(\"dyngate$sign\") FILTER (WHERE \"dyngate$e3\" IS NOT NULL), 0) <> 0 OR sum(\"dyngate$sign\" * \"dyngate$e3\") <> '0' THEN sum(\"dyngate$sign\" * \"dyngate$e3\") END",
            "o.day AS \"dyngate$k0\", ",
            "o.amount AS \"dyngate$e2\", o.tip AS \"dyngate$e3\", o.tip AS \"dyngate$e4\" FROM ",
            ") AS c GROUP BY \"dyngate$k0\" ON CONFLICT (\"day\") DO UPDATE SET \"n\" = t.\"n\" + excluded.\"n\", \"total\" = t.\"total\" + excluded.\"total\", ",
            "\"Tips\" = CASE WHEN t.\"tipped\" + excluded.\"tipped\" <> 0 THEN coalesce(t.\"Tips\" + excluded.\"Tips\", t.\"Tips\", excluded.\"Tips\") END",
        ] {
            assert!(upsert.contains(part), "{part}\n---\n{upsert}");
        }
        assert_eq!(delete, "DELETE FROM public.\"Daily\" AS t WHERE t.\"n\" = 0");
        assert_eq!(key_columns(&plan, &table).unwrap(), ["day"]);
        assert_eq!(
            key_index_sql(12, "public.\"Daily\"", &["day".into(), "Region".into()]),
            "CREATE UNIQUE INDEX \"dyngate_keys_12\" ON public.\"Daily\" (\"day\", \"Region\") NULLS NOT DISTINCT"
        );
    }
}
