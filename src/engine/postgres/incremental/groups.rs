//! The SQL of a grouped table ([`Plan::Groups`]) that is not its own state (in_place.rs has
//! those): its aggregates are kept as mergeable state in a side table `dyngate."state_<table id>"`, one row per group (unique on the keys, NULLs not
//! distinct), owned by the table's owner:
//!
//! - `dyngate$n`: the group's rows (count(*)); a group with none is no row of the table;
//! - per count(e): `dyngate$c<i>`, the non-NULL values;
//! - per sum(e) and avg(e): `dyngate$s<i>` (their sum) and `dyngate$c<i>`; the output is the sum,
//!   or the sum divided by the count, as PostgreSQL's avg computes it, NULL with no values;
//! - per min(e) and max(e): `dyngate$m<i>`, the extremum; `dyngate$d<i>` holds the extremum of
//!   the values a delta deleted, and `dyngate$redo` marks a group whose extremum may have been
//!   deleted: it is recomputed from the source (one scan of it; only then);
//! - per numeric sum(e) and avg(e), the largest scale of its values as such an extremum
//!   (`dyngate$x<i>`, `dyngate$y<i>`), with `dyngate$q<i>` counting the values of that scale
//!   (and `dyngate$z<i>` the delta's deleted ones): its group is recomputed only when the last
//!   value of that scale goes, not with every deletion (a money column's values all have one
//!   scale);
//! - `dyngate$touched`: the transaction that last changed the group (an apply rewrites the rows
//!   of the groups its own transaction touched).
//!
//! Pure: plan and names in, SQL out. The apply is one text of several statements, run as the
//! owner inside the refresh's REPEATABLE READ transaction: merge the delta into the state, redo
//! the extrema, then delete the touched groups' rows from the table and insert their new ones.
//! Sums of floating-point values are not kept (their rounding would depend on the order the
//! rows came in): such tables are refreshed fully (see `float_reason`).

use crate::core::quote_ident;
use crate::engine::postgres::incremental::analyze::{Agg, From, Output, Plan};
use crate::engine::postgres::incremental::capture::SourceTable;
use crate::engine::postgres::incremental::delta::{Column, delta_terms, from_now};

/// The state table of dynamic table `id` (unquoted, in schema `dyngate`).
pub fn state_table(id: i64) -> String {
    format!("state_{id}")
}

fn qstate(id: i64) -> String {
    format!("dyngate.{}", quote_ident(&state_table(id)))
}

pub(super) fn col(kind: &str, i: usize) -> String {
    quote_ident(&format!("dyngate${kind}{i}"))
}

const N: &str = "\"dyngate$n\"";
const TOUCHED: &str = "\"dyngate$touched\"";
/// Marks the groups the running transaction touched (no flags to reset afterwards).
const NOW: &str = "pg_catalog.pg_current_xact_id()";
const REDO: &str = "\"dyngate$redo\"";

/// The parts of a grouped plan.
pub(super) struct Grouped<'a> {
    pub from: &'a From,
    pub filter: &'a Option<String>,
    pub keys: &'a [String],
    pub outputs: &'a [Output],
}

pub(super) fn grouped(plan: &Plan) -> Option<Grouped<'_>> {
    match plan {
        Plan::Groups {
            from,
            filter,
            keys,
            outputs,
        } => Some(Grouped {
            from,
            filter,
            keys,
            outputs,
        }),
        Plan::Rows { .. } => None,
    }
}

/// Why a grouped plan whose outputs have `columns`' types is refreshed fully, if it is.
pub fn float_reason(plan: &Plan, columns: &[Column]) -> Option<String> {
    let g = grouped(plan)?;
    g.outputs.iter().zip(columns).find_map(|(o, c)| match o {
        Output::Agg(Agg::Sum | Agg::Avg, Some(e)) if c.ty == "real" || c.ty == "double precision" => Some(format!(
            "the sum of floating-point values ({e}) depends on the order rows are added; it is recomputed"
        )),
        _ => None,
    })
}

/// A value kept as the extremum of the group's rows: a min or max output, or the largest scale
/// of a numeric sum's values (PostgreSQL's numeric sum has the scale of its largest-scale value,
/// and an avg is that sum divided: a sum kept across deletions must be given that scale again).
struct Extremum {
    /// The state column holding it, and the one holding the delta's deleted extremum.
    value: String,
    deleted: String,
    f: &'static str,
    /// Over the source's rows, and over the changes' column.
    of_source: String,
    of_change: String,
    /// For a scale: the state columns counting the values at the extremum, and the delta's
    /// deleted values at its deleted extremum. Deleting a value at the largest scale then needs
    /// the group recomputed only when it was the last one (all values of a money column have
    /// the same scale).
    counted: Option<(String, String)>,
    /// The aggregate's argument.
    arg: String,
}

fn scale_tracked(o: &Output, ty: Option<&str>) -> bool {
    matches!(o, Output::Agg(Agg::Sum | Agg::Avg, Some(_))) && ty == Some("numeric")
}

fn extrema(g: &Grouped<'_>, columns: &[Column]) -> Vec<Extremum> {
    let mut out = Vec::new();
    for (i, o) in g.outputs.iter().enumerate() {
        let ty = columns.get(i).map(|c| c.ty.as_str());
        match o {
            Output::Agg(a @ (Agg::Min | Agg::Max), Some(e)) => out.push(Extremum {
                value: col("m", i),
                deleted: col("d", i),
                f: if *a == Agg::Min { "min" } else { "max" },
                of_source: e.clone(),
                of_change: col("e", i),
                counted: None,
                arg: e.clone(),
            }),
            Output::Agg(_, Some(e)) if scale_tracked(o, ty) => out.push(Extremum {
                value: col("x", i),
                deleted: col("y", i),
                f: "max",
                of_source: format!("pg_catalog.scale(({e})::pg_catalog.numeric)"),
                // Computed once per change (apply_sql), not in each of the six places it is read.
                of_change: col("f", i),
                counted: Some((col("q", i), col("z", i))),
                arg: e.clone(),
            }),
            _ => {}
        }
    }
    out
}

/// A state column: its name, how a query over the source computes it (over the whole group, or
/// over a bucket of it: see [`state_query`]), and how the buckets' values combine.
struct StateColumn {
    name: String,
    expr: String,
    combined: String,
}

/// The state's columns, in order.
fn state_columns(g: &Grouped<'_>, columns: &[Column]) -> Vec<StateColumn> {
    let column = |name: String, expr: String, combine: &str| StateColumn {
        combined: format!("{combine}(b.{name})"),
        name,
        expr,
    };
    let mut cols: Vec<StateColumn> = g
        .keys
        .iter()
        .enumerate()
        .map(|(j, k)| StateColumn {
            name: col("k", j),
            expr: k.clone(),
            combined: format!("b.{}", col("k", j)),
        })
        .collect();
    cols.push(column(N.to_string(), "count(*)".into(), "sum"));
    for (i, o) in g.outputs.iter().enumerate() {
        match o {
            Output::Key(_) | Output::Agg(Agg::Count, None) => {}
            Output::Agg(Agg::Count, Some(e)) => cols.push(column(col("c", i), format!("count({e})"), "sum")),
            Output::Agg(Agg::Sum | Agg::Avg, Some(e)) => {
                cols.push(column(col("s", i), format!("sum({e})"), "sum"));
                cols.push(column(col("c", i), format!("count({e})"), "sum"));
            }
            Output::Agg(Agg::Min | Agg::Max, Some(_)) | Output::Agg(_, None) => {}
        }
    }
    for (i, x) in extrema(g, columns).into_iter().enumerate() {
        cols.push(column(x.value.clone(), format!("{}({})", x.f, x.of_source), x.f));
        cols.push(column(x.deleted, format!("{}({})", x.f, x.of_source), x.f));
        if let Some((count, deleted_count)) = x.counted {
            // Per bucket (one scale), its values; combined, those of the largest scale.
            cols.push(StateColumn {
                combined: format!(
                    "coalesce(sum(b.{count}) FILTER (WHERE b.{value} = b.\"dyngate$top{i}\"), 0)",
                    value = x.value
                ),
                name: count,
                expr: format!("count({})", x.arg),
            });
            cols.push(StateColumn {
                name: deleted_count,
                expr: "0::bigint".into(),
                combined: "0::bigint".into(),
            });
        }
    }
    cols
}

/// The source tables as they are now, joined as the query joins them.
fn tables_now(from: &From) -> String {
    from_now(from)
}

fn from_source(g: &Grouped<'_>) -> String {
    let where_ = g.filter.as_ref().map(|f| format!(" WHERE ({f})")).unwrap_or_default();
    format!("FROM {}{where_}", tables_now(g.from))
}

/// The state of every group computed from the source (of the groups `only` names, if given:
/// a condition on the source's rows). With counted extrema (scales), in two steps: buckets of
/// one scale per group first (few per group), then the buckets combined, the values counted at
/// the largest scale; one scan of the source either way.
fn state_query(g: &Grouped<'_>, columns: &[Column], only: Option<&str>) -> String {
    let cols = state_columns(g, columns);
    let mut conds: Vec<String> = g.filter.iter().map(|f| format!("({f})")).collect();
    conds.extend(only.map(str::to_string));
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let from = format!("FROM {}{where_}", tables_now(g.from));
    let select: Vec<String> = cols.iter().map(|c| format!("{} AS {}", c.expr, c.name)).collect();
    let counted: Vec<Extremum> = extrema(g, columns).into_iter().filter(|x| x.counted.is_some()).collect();
    if counted.is_empty() {
        return format!("SELECT {} {from} GROUP BY {}", select.join(", "), g.keys.join(", "));
    }
    let bucket_keys: Vec<String> = g.keys.iter().cloned().chain(counted.iter().map(|x| x.of_source.clone())).collect();
    let keys: Vec<String> = (0..g.keys.len()).map(|j| format!("b.{}", col("k", j))).collect();
    let window = if keys.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {}", keys.join(", "))
    };
    let tops: String = extrema(g, columns)
        .iter()
        .enumerate()
        .filter(|(_, x)| x.counted.is_some())
        .map(|(i, x)| format!(", max(b.{}) OVER ({window}) AS \"dyngate$top{i}\"", x.value))
        .collect();
    let combined: Vec<String> = cols.iter().map(|c| format!("{} AS {}", c.combined, c.name)).collect();
    let group = if keys.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", keys.join(", "))
    };
    format!(
        "SELECT {} FROM (SELECT b.*{tops} FROM (SELECT {} {from} GROUP BY {}) AS b) AS b{group}",
        combined.join(", "),
        select.join(", "),
        bucket_keys.join(", "),
    )
}

fn state_list(g: &Grouped<'_>, columns: &[Column]) -> String {
    state_columns(g, columns).into_iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

/// The fillfactor of the tables an apply updates in place, state tables and tables that are
/// their own state (in_place.rs): an apply updates most of the groups it touches in place, and
/// with room left on their page the new versions go there (HOT updates: the unique index is not
/// written, and the dead versions are pruned by the next apply's reads). In bench/incremental.sh
/// (4.5k of V2's 5.1k groups updated by each refresh) 40 turned 10% of the updates HOT into 70%
/// and took V2's refresh from about 70 to 57 ms; a grouped table is small next to its sources,
/// so 2.5 times its size costs little. sql/V8 sets it on the state tables made before;
/// incremental::refill_state on a table that is its own state, unless it has a fillfactor of
/// its own.
pub const STATE_FILLFACTOR: u32 = 40;

/// Creates the empty state table of table `id` (whose columns are `columns`) for `owner` (run
/// by the service account: the columns' types are derived from the query without reading a row).
pub fn create_state_sql(plan: &Plan, id: i64, owner: &str, columns: &[Column]) -> Option<String> {
    let g = grouped(plan)?;
    let keys: Vec<String> = (0..g.keys.len()).map(|j| col("k", j)).collect();
    let t = qstate(id);
    Some(format!(
        "CREATE TABLE {t} WITH (fillfactor = {STATE_FILLFACTOR}) AS {q} WITH NO DATA;
         ALTER TABLE {t} ADD COLUMN {TOUCHED} xid8, ADD COLUMN {REDO} boolean NOT NULL DEFAULT false;
         CREATE UNIQUE INDEX ON {t} ({keys}) NULLS NOT DISTINCT;
         COMMENT ON TABLE {t} IS 'dyngate: the aggregates of a dynamic table refreshed incrementally';
         ALTER TABLE {t} OWNER TO {owner};",
        // Typed by the one-step query (a bucketed one would sum counts as numeric).
        q = {
            let select: Vec<String> = state_columns(&g, columns)
                .iter()
                .map(|c| format!("{} AS {}", c.expr, c.name))
                .collect();
            format!("SELECT {} {} GROUP BY {}", select.join(", "), from_source(&g), g.keys.join(", "))
        },
        keys = keys.join(", "),
        owner = quote_ident(owner),
    ))
}

/// Drops the state table of table `id`, if any.
pub fn drop_state_sql(id: i64) -> String {
    format!("DROP TABLE IF EXISTS {}", qstate(id))
}

/// Fills (or refills) the state from the source, as the owner.
pub fn fill_state_sql(plan: &Plan, id: i64, columns: &[Column]) -> Option<String> {
    let g = grouped(plan)?;
    let t = qstate(id);
    Some(format!(
        "DELETE FROM {t}; INSERT INTO {t} ({}) {}",
        state_list(&g, columns),
        state_query(&g, columns, None)
    ))
}

/// The condition on the source's rows that picks the groups marked for a redo in state `t`
/// (whose key columns are `keys`). It starts with a test of whether any group is marked, which
/// PostgreSQL runs once, before the scan: with none (most applies), the sources are not read,
/// whatever the planner guessed (a state table not analyzed yet looked full of marks to it, and
/// an apply read 10M rows for nothing).
fn redo_rows(g: &Grouped<'_>, t: &str, keys: &[String]) -> String {
    let state_keys: Vec<String> = keys.iter().map(|k| format!("rd.{k}")).collect();
    let source_keys: Vec<String> = g.keys.iter().map(|k| format!("({k})")).collect();
    format!(
        "EXISTS (SELECT 1 FROM {t} AS marked WHERE marked.{REDO}) AND {}",
        matching(&source_keys, &state_keys, &format!("FROM {t} AS rd WHERE rd.{REDO}"))
    )
}

/// Whether the row's `keys` are those of a row of `rows` (`FROM ... WHERE ...`, whose `their`
/// keys are compared): by the keys' own equality, so that values equal but printed otherwise
/// (numeric 1.5 and 1.50) match, as GROUP BY has them one group; hashed. Keys with a NULL are
/// compared NULL-safely, for the rows with a NULL key only.
fn matching(keys: &[String], their: &[String], rows: &str) -> String {
    let any_null: Vec<String> = keys.iter().map(|k| format!("{k} IS NULL")).collect();
    let same: Vec<String> = keys
        .iter()
        .zip(their)
        .map(|(k, s)| format!("{k} IS NOT DISTINCT FROM {s}"))
        .collect();
    format!(
        "(ROW({keys}) IN (SELECT {their} {rows}) OR (({any_null}) AND EXISTS (SELECT 1 {rows} AND {same})))",
        keys = keys.join(", "),
        their = their.join(", "),
        any_null = any_null.join(" OR "),
        same = same.join(" AND "),
    )
}

/// A column of an apply's delta, aggregated per group from the changes: in one step, or (with
/// one counted extremum) in two, over buckets of the changes first (one per group and value of
/// that extremum), then per group over the buckets (see [`bucketed_delta`]). An apply builds the
/// columns of the form it uses only.
enum DeltaColumn {
    /// A group key (or a value of no row): the same in both forms.
    Key(String),
    /// An aggregate over the changes; in the two-step form, over a bucket's changes, the buckets'
    /// then combined by `combine` (`sum`, `min`, `max`).
    Partial { agg: String, combine: &'static str },
    /// An expression of the form in use only: of the changes and their window columns (one
    /// step), or of the buckets' columns (two steps).
    Own(String),
}

impl DeltaColumn {
    /// A sum (or a count, as a sum of signs).
    fn summed(agg: String) -> DeltaColumn {
        DeltaColumn::Partial { agg, combine: "sum" }
    }

    /// The column in the one-step form.
    fn one_step(&self) -> &str {
        match self {
            DeltaColumn::Key(e) | DeltaColumn::Partial { agg: e, .. } | DeltaColumn::Own(e) => e,
        }
    }

    /// The name of the `j`th column's partial aggregate in a bucket.
    fn partial_name(j: usize) -> String {
        col("p", j)
    }
}

/// The changes logged since `applied` as rows of the group keys (`dyngate$k<j>`), the sign, and
/// `args` (`, <expression> AS <name>`, each of the changed rows).
pub(super) fn changed_rows(g: &Grouped<'_>, sources: &[SourceTable], applied: &str, args: &str) -> Option<String> {
    let keys: Vec<String> = g.keys.iter().enumerate().map(|(j, k)| format!("{k} AS {}", col("k", j))).collect();
    Some(
        delta_terms(g.from, sources, applied)?
            .into_iter()
            .map(|term| {
                format!(
                    "SELECT {}, {} AS \"dyngate$sign\"{args} FROM {}{}",
                    keys.join(", "),
                    term.sign,
                    term.clause,
                    term.where_clause(g.filter.as_deref()),
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL "),
    )
}

/// The changes in a bucket inserted, and deleted (columns of the buckets).
const BUCKET_INSERTED: &str = "\"dyngate$bi\"";
const BUCKET_DELETED: &str = "\"dyngate$bd\"";

/// The delta per group in two steps: the `changed` rows aggregated per group (`key_list`) and
/// value of the counted extremum (`value`, a column of the changes), their inserted and deleted
/// rows counted; then the buckets combined per group. Both steps hash (no sort), and the first
/// one makes few buckets of many changes when a group's values have few scales (V1 of
/// bench/incremental.sh: 14k changes, 1.5k buckets, 730 groups; 8 ms instead of 11 with the
/// window, which sorts the changes).
fn bucketed_delta(delta: &[DeltaColumn], key_list: &str, value: &str, changed: &str) -> String {
    let mut partials: Vec<String> = Vec::new();
    let mut combined: Vec<String> = Vec::new();
    for (j, c) in delta.iter().enumerate() {
        match c {
            DeltaColumn::Key(e) | DeltaColumn::Own(e) => combined.push(e.clone()),
            DeltaColumn::Partial { agg, combine } => {
                let p = DeltaColumn::partial_name(j);
                partials.push(format!(", {agg} AS {p}"));
                combined.push(format!("{combine}(b.{p})"));
            }
        }
    }
    format!(
        "SELECT {} FROM (SELECT {key_list}, {value}, count(*) FILTER (WHERE \"dyngate$sign\" > 0) AS {BUCKET_INSERTED}, \
         count(*) FILTER (WHERE \"dyngate$sign\" < 0) AS {BUCKET_DELETED}{} FROM ({changed}) AS c GROUP BY {key_list}, {value}) AS b \
         GROUP BY {key_list}",
        combined.join(", "),
        partials.concat(),
    )
}

/// The changes with window columns over their group (`windows`, naming the window `w`), if any.
fn with_windows(windows: &[String], key_list: &str, changed: String) -> String {
    if windows.is_empty() {
        return changed;
    }
    let partition = if key_list.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {key_list}")
    };
    format!("SELECT c.*, {} FROM ({changed}) AS c WINDOW w AS ({partition})", windows.join(", "))
}

/// The statements that apply the changes logged since `applied` to table `id` (`target`, quoted,
/// with `columns`; its state laid out by the query's columns `query`): see the module's doc. The
/// last statement's row count is the rows inserted.
pub fn apply_sql(
    plan: &Plan,
    id: i64,
    sources: &[SourceTable],
    applied: &str,
    target: &str,
    columns: &[Column],
    query: &[Column],
) -> Option<String> {
    let g = grouped(plan)?;
    let t = qstate(id);
    let keys: Vec<String> = (0..g.keys.len()).map(|j| col("k", j)).collect();
    let key_list = keys.join(", ");

    // The changes, as keys, sign and the aggregates' arguments.
    let changed_args: String = g
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Output::Agg(_, Some(e)) if scale_tracked(o, query.get(i).map(|c| c.ty.as_str())) => Some(format!(
                ", {e} AS {}, pg_catalog.scale(({e})::pg_catalog.numeric) AS {}",
                col("e", i),
                col("f", i)
            )),
            Output::Agg(_, Some(e)) => Some(format!(", {e} AS {}", col("e", i))),
            _ => None,
        })
        .collect();
    // Per group: the delta of each state column, and whether it is touched.
    let mut delta: Vec<DeltaColumn> = keys.iter().map(|k| DeltaColumn::Key(k.clone())).collect();
    let mut insert_cols: Vec<String> = keys.clone();
    delta.push(DeltaColumn::summed("sum(\"dyngate$sign\")".into()));
    insert_cols.push(N.into());
    let mut merge: Vec<String> = vec![format!("{N} = st.{N} + excluded.{N}"), format!("{TOUCHED} = excluded.{TOUCHED}")];
    let mut redo: Vec<String> = Vec::new();
    let extrema = extrema(&g, query);
    for (i, o) in g.outputs.iter().enumerate() {
        let e = col("e", i);
        let count = || DeltaColumn::summed(format!("coalesce(sum(\"dyngate$sign\") FILTER (WHERE {e} IS NOT NULL), 0)"));
        let sum_merge = |c: &str| {
            format!("{c} = CASE WHEN st.{c} IS NULL THEN excluded.{c} WHEN excluded.{c} IS NULL THEN st.{c} ELSE st.{c} + excluded.{c} END")
        };
        match o {
            Output::Key(_) | Output::Agg(_, None) => {}
            Output::Agg(Agg::Count, Some(_)) => {
                delta.push(count());
                insert_cols.push(col("c", i));
                merge.push(format!("{c} = st.{c} + excluded.{c}", c = col("c", i)));
            }
            Output::Agg(Agg::Sum | Agg::Avg, Some(_)) => {
                delta.push(DeltaColumn::summed(format!("sum(\"dyngate$sign\" * {e})")));
                delta.push(count());
                insert_cols.push(col("s", i));
                insert_cols.push(col("c", i));
                merge.push(sum_merge(&col("s", i)));
                merge.push(format!("{c} = st.{c} + excluded.{c}", c = col("c", i)));
            }
            Output::Agg(Agg::Min | Agg::Max, Some(_)) => {}
        }
    }
    // The values counted at their group's extremum (scales) are counted in buckets of one
    // value first when there is one such extremum (a hash aggregate: 14k changes of V1 fall in
    // 1.5k buckets), or over a window of the changes (a sort of them all).
    let counted = extrema.iter().filter(|x| x.counted.is_some()).count();
    let bucketed = counted == 1;
    // Per counted extremum on the window's way, the changes' extremum of the inserted and of
    // the deleted values over the group (window columns of the changes).
    let mut windows: Vec<String> = Vec::new();
    // Per extremum, the delta's deleted extremum (in the form in use): a new group with one is
    // marked for a redo.
    let mut deleted_extrema: Vec<String> = Vec::new();
    for (k, x) in extrema.iter().enumerate() {
        let (f, e, m, d) = (x.f, &x.of_change, &x.value, &x.deleted);
        let (pick, cmp) = if f == "min" { ("least", "<=") } else { ("greatest", ">=") };
        let deleted = format!("{f}({e}) FILTER (WHERE \"dyngate$sign\" < 0)");
        match (&x.counted, bucketed) {
            (Some((q, z)), true) => {
                // The buckets' value is the extremum's (one per bucket), with its inserted and
                // deleted changes counted; the packed maximum picks the count at the largest.
                let (ni, nd) = (format!("b.{BUCKET_INSERTED}"), format!("b.{BUCKET_DELETED}"));
                let of = |n: &str| format!("{f}(b.{e}) FILTER (WHERE {n} > 0)");
                let at = |n: &str| format!("coalesce({f}(((b.{e})::bigint << 32) + {n}) FILTER (WHERE {n} > 0) & 4294967295, 0)");
                delta.push(DeltaColumn::Own(of(&ni)));
                delta.push(DeltaColumn::Own(of(&nd)));
                delta.push(DeltaColumn::Own(at(&ni)));
                delta.push(DeltaColumn::Own(at(&nd)));
                deleted_extrema.push(of(&nd));
                insert_cols.extend([m.clone(), d.clone(), q.clone(), z.clone()]);
            }
            (counted, _) => {
                delta.push(DeltaColumn::Partial {
                    agg: format!("{f}({e}) FILTER (WHERE \"dyngate$sign\" > 0)"),
                    combine: f,
                });
                delta.push(DeltaColumn::Partial {
                    agg: deleted.clone(),
                    combine: f,
                });
                deleted_extrema.push(if bucketed {
                    format!("{f}(b.{})", DeltaColumn::partial_name(delta.len() - 1))
                } else {
                    deleted
                });
                insert_cols.push(m.clone());
                insert_cols.push(d.clone());
                if let Some((q, z)) = counted {
                    let (wi, wd) = (format!("\"dyngate$wi{k}\""), format!("\"dyngate$wd{k}\""));
                    windows.push(format!("{f}({e}) FILTER (WHERE \"dyngate$sign\" > 0) OVER w AS {wi}"));
                    windows.push(format!("{f}({e}) FILTER (WHERE \"dyngate$sign\" < 0) OVER w AS {wd}"));
                    delta.push(DeltaColumn::Own(format!(
                        "coalesce(sum(\"dyngate$sign\") FILTER (WHERE \"dyngate$sign\" > 0 AND {e} = {wi}), 0)"
                    )));
                    delta.push(DeltaColumn::Own(format!(
                        "coalesce(-sum(\"dyngate$sign\") FILTER (WHERE \"dyngate$sign\" < 0 AND {e} = {wd}), 0)"
                    )));
                    insert_cols.push(q.clone());
                    insert_cols.push(z.clone());
                }
            }
        }
        merge.push(format!("{m} = {pick}(st.{m}, excluded.{m})"));
        if let Some((q, z)) = &x.counted {
            // The values at the new extremum: the state's, the inserted ones', or both; less
            // the deleted ones at it. None left (or not known): the group is recomputed.
            let top = format!("{pick}(st.{m}, excluded.{m})");
            let count = format!(
                "(CASE WHEN excluded.{m} IS NULL THEN st.{q} WHEN st.{m} IS NULL OR excluded.{m} {gt} st.{m} THEN excluded.{q} \
                 WHEN excluded.{m} = st.{m} THEN st.{q} + excluded.{q} ELSE st.{q} END \
                 - CASE WHEN excluded.{d} = {top} THEN excluded.{z} ELSE 0 END)",
                gt = if f == "min" { "<" } else { ">" },
            );
            merge.push(format!("{q} = {count}"));
            redo.push(format!("({top} IS NOT NULL AND coalesce({count} <= 0, true))"));
        } else {
            // A deleted value at or beyond the extremum: the group is recomputed.
            redo.push(format!("coalesce(excluded.{d} {cmp} {pick}(st.{m}, excluded.{m}), false)"));
        }
    }
    let redo_insert = if deleted_extrema.is_empty() {
        "false".to_string()
    } else {
        deleted_extrema
            .iter()
            .map(|x| format!("{x} IS NOT NULL"))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    delta.push(DeltaColumn::Key(NOW.to_string()));
    delta.push(DeltaColumn::Own(redo_insert));
    insert_cols.push(TOUCHED.into());
    insert_cols.push(REDO.into());
    if !redo.is_empty() {
        merge.push(format!("{REDO} = st.{REDO} OR {}", redo.join(" OR ")));
    }
    let changed = changed_rows(&g, sources, applied, &changed_args)?;
    let delta_query = match extrema.iter().find(|x| x.counted.is_some()) {
        Some(x) if bucketed => bucketed_delta(&delta, &key_list, &x.of_change, &changed),
        _ => format!(
            "SELECT {} FROM ({}) AS c GROUP BY {key_list}",
            delta.iter().map(DeltaColumn::one_step).collect::<Vec<_>>().join(", "),
            with_windows(&windows, &key_list, changed),
        ),
    };
    let mut sql = vec![
        // Groups the previous apply left empty.
        format!("DELETE FROM {t} WHERE {N} = 0"),
        format!(
            "INSERT INTO {t} AS st ({cols})
             {delta_query}
             ON CONFLICT ({key_list}) DO UPDATE SET {merge}",
            cols = insert_cols.join(", "),
            merge = merge.join(", "),
        ),
    ];
    if !extrema.is_empty() {
        // Marks left by the previous apply go first.
        sql.insert(0, format!("UPDATE {t} SET {REDO} = false WHERE {REDO}"));
        let mut cleared: Vec<String> = Vec::new();
        let mut sets: Vec<String> = Vec::new();
        for x in &extrema {
            cleared.push(format!("{} = NULL", x.value));
            sets.push(format!("{m} = r.{m}", m = x.value));
            if let Some((q, _)) = &x.counted {
                cleared.push(format!("{q} = 0"));
                sets.push(format!("{q} = r.{q}"));
            }
        }
        sql.push(format!("UPDATE {t} SET {} WHERE {REDO}", cleared.join(", ")));
        sql.push(format!(
            "UPDATE {t} AS st SET {sets}
               FROM ({groups}) AS r
              WHERE st.{REDO} AND {same}",
            sets = sets.join(", "),
            groups = state_query(&g, query, Some(&redo_rows(&g, &t, &keys))),
            same = keys
                .iter()
                .map(|k| format!("st.{k} IS NOT DISTINCT FROM r.{k}"))
                .collect::<Vec<_>>()
                .join(" AND "),
        ));
    }
    // The touched groups' rows: out with the old, in with the new.
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let target_keys: Vec<String> = (0..g.keys.len())
        .map(|j| {
            let i = g.outputs.iter().position(|o| *o == Output::Key(j)).unwrap_or(j);
            format!("t.{}", names.get(i).cloned().unwrap_or_default())
        })
        .collect();
    let state_keys: Vec<String> = (0..g.keys.len())
        .map(|j| {
            let i = g.outputs.iter().position(|o| *o == Output::Key(j)).unwrap_or(j);
            let ty = columns.get(i).map_or("text", |c| c.ty.as_str());
            format!("st.{}::{ty}", col("k", j))
        })
        .collect();
    sql.push(format!(
        "DELETE FROM {target} AS t WHERE {}",
        matching(&target_keys, &state_keys, &format!("FROM {t} AS st WHERE st.{TOUCHED} = {NOW}"))
    ));
    let outputs: Vec<String> = g
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let ty = columns.get(i).map_or("text", |c| c.ty.as_str());
            let value = match o {
                Output::Key(j) => format!("st.{}", col("k", *j)),
                Output::Agg(Agg::Count, None) => format!("st.{N}"),
                Output::Agg(Agg::Count, Some(_)) => format!("st.{}", col("c", i)),
                // A numeric sum gets back the scale of its largest-scale value.
                Output::Agg(Agg::Sum | Agg::Avg, _) if scale_tracked(o, query.get(i).map(|c| c.ty.as_str())) => format!(
                    "CASE WHEN st.{c} > 0 THEN pg_catalog.round((st.{s})::pg_catalog.numeric, st.{x}){div} END",
                    c = col("c", i),
                    s = col("s", i),
                    x = col("x", i),
                    div = if matches!(o, Output::Agg(Agg::Avg, _)) {
                        format!(" / st.{}", col("c", i))
                    } else {
                        String::new()
                    }
                ),
                Output::Agg(Agg::Sum, _) => format!("CASE WHEN st.{c} > 0 THEN st.{s} END", c = col("c", i), s = col("s", i)),
                Output::Agg(Agg::Avg, _) => format!(
                    "CASE WHEN st.{c} > 0 THEN st.{s}::{ty} / st.{c} END",
                    c = col("c", i),
                    s = col("s", i)
                ),
                Output::Agg(Agg::Min | Agg::Max, _) => format!("st.{}", col("m", i)),
            };
            format!("({value})::{ty}")
        })
        .collect();
    sql.push(format!(
        "INSERT INTO {target} ({}) SELECT {} FROM {t} AS st WHERE st.{TOUCHED} = {NOW} AND st.{N} > 0",
        names.join(", "),
        outputs.join(", ")
    ));
    Some(sql.join(";\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::postgres::incremental::analyze::analyze;

    #[test]
    fn state_and_apply_sql() {
        let plan = analyze("SELECT o.day, count(*) AS n, sum(o.amount) AS total, min(o.amount) AS lo FROM public.orders o GROUP BY o.day")
            .unwrap();
        let cols = [
            Column::new("day", "date"),
            Column::new("n", "bigint"),
            Column::new("total", "numeric"),
            Column::new("lo", "numeric"),
        ];
        let create = create_state_sql(&plan, 5, "alice", &cols).unwrap();
        for part in [
            "CREATE TABLE dyngate.\"state_5\" WITH (fillfactor = 40) AS SELECT o.day AS \"dyngate$k0\", count(*) AS \"dyngate$n\", sum(o.amount) AS \"dyngate$s2\", count(o.amount) AS \"dyngate$c2\", ",
            "max(pg_catalog.scale((o.amount)::pg_catalog.numeric)) AS \"dyngate$x2\"",
            "min(o.amount) AS \"dyngate$m3\", min(o.amount) AS \"dyngate$d3\" FROM \"public\".\"orders\" AS \"o\" GROUP BY o.day WITH NO DATA",
            "CREATE UNIQUE INDEX ON dyngate.\"state_5\" (\"dyngate$k0\") NULLS NOT DISTINCT",
            "OWNER TO \"alice\"",
        ] {
            assert!(create.contains(part), "{part}\n---\n{create}");
        }
        assert!(
            create.contains("count(o.amount) AS \"dyngate$q2\", 0::bigint AS \"dyngate$z2\""),
            "{create}"
        );
        // The fill counts the values at each group's largest scale: buckets of one scale first.
        let fill = fill_state_sql(&plan, 5, &cols).unwrap();
        for part in [
            "coalesce(sum(b.\"dyngate$q2\") FILTER (WHERE b.\"dyngate$x2\" = b.\"dyngate$top0\"), 0) AS \"dyngate$q2\"",
            "max(b.\"dyngate$x2\") OVER (PARTITION BY b.\"dyngate$k0\") AS \"dyngate$top0\"",
            "GROUP BY o.day, pg_catalog.scale((o.amount)::pg_catalog.numeric)) AS b) AS b GROUP BY b.\"dyngate$k0\"",
        ] {
            assert!(fill.contains(part), "{part}\n---\n{fill}");
        }
        let source = SourceTable {
            oid: 9,
            schema: "public".into(),
            name: "orders".into(),
            quoted: "public.orders".into(),
            columns: vec![(2, "day".into()), (3, "amount".into())],
            not_null: Vec::new(),
            fixed_scale: Vec::new(),
            wal: false,
            peeked: false,
            changes: None,
        };
        let apply = apply_sql(&plan, 5, std::slice::from_ref(&source), "1:2:", "public.daily", &cols, &cols).unwrap();
        if let Ok(path) = std::env::var("DYNGATE_PRINT_GROUPS_SQL") {
            std::fs::write(path, &apply).unwrap();
        }
        for part in [
            "ON CONFLICT (\"dyngate$k0\") DO UPDATE SET \"dyngate$n\" = st.\"dyngate$n\" + excluded.\"dyngate$n\"",
            "\"dyngate$m3\" = least(st.\"dyngate$m3\", excluded.\"dyngate$m3\")",
            // The sum's largest scale is recomputed only when no value of it is left; the
            // minimum when a deleted value was at or below it.
            "\"dyngate$redo\" = st.\"dyngate$redo\" OR (greatest(st.\"dyngate$x2\", excluded.\"dyngate$x2\") IS NOT NULL AND coalesce((CASE WHEN excluded.\"dyngate$x2\" IS NULL THEN st.\"dyngate$q2\" ",
            "ELSE 0 END) <= 0, true)) OR coalesce(excluded.\"dyngate$d3\" <= least(st.\"dyngate$m3\", excluded.\"dyngate$m3\"), false)",
            // One counted extremum (the sum's scale): the changes are aggregated in buckets of
            // one scale per group, and the values at the largest counted from the buckets.
            "coalesce(max(((b.\"dyngate$f2\")::bigint << 32) + b.\"dyngate$bi\") FILTER (WHERE b.\"dyngate$bi\" > 0) & 4294967295, 0)",
            "max(b.\"dyngate$f2\") FILTER (WHERE b.\"dyngate$bd\" > 0) IS NOT NULL OR min(b.\"dyngate$p9\") IS NOT NULL FROM (SELECT \"dyngate$k0\", \"dyngate$f2\", count(*) FILTER (WHERE \"dyngate$sign\" > 0) AS \"dyngate$bi\"",
            "sum(\"dyngate$sign\") AS \"dyngate$p1\", sum(\"dyngate$sign\" * \"dyngate$e2\") AS \"dyngate$p2\"",
            "min(\"dyngate$e3\") FILTER (WHERE \"dyngate$sign\" < 0) AS \"dyngate$p9\"",
            // The scale of each changed value, computed once.
            "o.amount AS \"dyngate$e2\", pg_catalog.scale((o.amount)::pg_catalog.numeric) AS \"dyngate$f2\"",
            "AS c GROUP BY \"dyngate$k0\", \"dyngate$f2\") AS b GROUP BY \"dyngate$k0\"",
            "UPDATE dyngate.\"state_5\" AS st SET \"dyngate$x2\" = r.\"dyngate$x2\", \"dyngate$q2\" = r.\"dyngate$q2\", \"dyngate$m3\" = r.\"dyngate$m3\"",
            // Groups to redo are found by the keys' equality (1.5 = 1.50), not their text, and
            // the sources are read only if some group is marked.
            "WHERE EXISTS (SELECT 1 FROM dyngate.\"state_5\" AS marked WHERE marked.\"dyngate$redo\") AND (ROW((o.day)) IN (SELECT rd.\"dyngate$k0\" FROM dyngate.\"state_5\" AS rd WHERE rd.\"dyngate$redo\") OR (((o.day) IS NULL) AND EXISTS (SELECT 1 FROM dyngate.\"state_5\" AS rd WHERE rd.\"dyngate$redo\" AND (o.day) IS NOT DISTINCT FROM rd.\"dyngate$k0\")))",
            "WHERE st.\"dyngate$redo\" AND st.\"dyngate$k0\" IS NOT DISTINCT FROM r.\"dyngate$k0\"",
            "DELETE FROM public.daily AS t WHERE (ROW(t.\"day\") IN (SELECT st.\"dyngate$k0\"::date FROM dyngate.\"state_5\" AS st WHERE st.\"dyngate$touched\" = pg_catalog.pg_current_xact_id()) OR ((t.\"day\" IS NULL) AND EXISTS (SELECT 1 FROM dyngate.\"state_5\" AS st WHERE st.\"dyngate$touched\" = pg_catalog.pg_current_xact_id() AND t.\"day\" IS NOT DISTINCT FROM st.\"dyngate$k0\"::date)))",
            "(CASE WHEN st.\"dyngate$c2\" > 0 THEN pg_catalog.round((st.\"dyngate$s2\")::pg_catalog.numeric, st.\"dyngate$x2\") END)::numeric",
        ] {
            assert!(apply.contains(part), "{part}\n---\n{apply}");
        }
        assert!(
            apply
                .trim_end()
                .ends_with("WHERE st.\"dyngate$touched\" = pg_catalog.pg_current_xact_id() AND st.\"dyngate$n\" > 0")
        );
        // Two counted extrema: the changes go through a window, which counts the values at
        // each one's largest scale.
        let two = analyze("SELECT o.day, sum(o.amount) AS total, avg(o.price) AS price FROM public.orders o GROUP BY o.day").unwrap();
        let two_cols = [
            Column::new("day", "date"),
            Column::new("total", "numeric"),
            Column::new("price", "numeric"),
        ];
        let source_two = SourceTable {
            columns: vec![(2, "day".into()), (3, "amount".into()), (4, "price".into())],
            ..source.clone()
        };
        let apply = apply_sql(
            &two,
            5,
            std::slice::from_ref(&source_two),
            "1:2:",
            "public.daily",
            &two_cols,
            &two_cols,
        )
        .unwrap();
        for part in [
            "coalesce(sum(\"dyngate$sign\") FILTER (WHERE \"dyngate$sign\" > 0 AND \"dyngate$f1\" = \"dyngate$wi0\"), 0)",
            "coalesce(-sum(\"dyngate$sign\") FILTER (WHERE \"dyngate$sign\" < 0 AND \"dyngate$f2\" = \"dyngate$wd1\"), 0)",
            "max(\"dyngate$f2\") FILTER (WHERE \"dyngate$sign\" < 0) IS NOT NULL",
            "WINDOW w AS (PARTITION BY \"dyngate$k0\")) AS c GROUP BY \"dyngate$k0\"",
        ] {
            assert!(apply.contains(part), "{part}\n---\n{apply}");
        }
        assert!(!apply.contains("dyngate$bi"), "{apply}");
        assert!(
            apply_sql(
                &analyze("SELECT o.id FROM public.orders o").unwrap(),
                5,
                std::slice::from_ref(&source),
                "1:2:",
                "t",
                &cols,
                &cols
            )
            .is_none()
        );
    }

    #[test]
    fn float_sums_are_recomputed() {
        let plan = analyze("SELECT o.day, sum(o.x) AS s, max(o.x) AS m FROM public.orders o GROUP BY o.day").unwrap();
        let cols = |ty: &str| vec![Column::new("day", "date"), Column::new("s", ty), Column::new("m", ty)];
        assert!(float_reason(&plan, &cols("double precision")).unwrap().contains("floating-point"));
        assert_eq!(float_reason(&plan, &cols("numeric")), None);
    }
}
