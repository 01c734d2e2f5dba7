//! The SQL that applies a plan's delta to its dynamic table. Pure: plan and names in, one
//! statement out, which the refresh runs as the table's owner inside its REPEATABLE READ
//! transaction (so the log and the sources are read as of one snapshot).
//!
//! A delta is a UNION ALL of terms ([`delta_terms`]), each a FROM clause whose rows count +1 or
//! -1. Every relation of a FROM is read one of three ways: as it is now, its changes since the
//! applied snapshot (the log's rows, signed), or as it was then (its rows now plus the changes
//! undone). A subquery's changes are its own delta, so subqueries nest.

use crate::core::{quote_ident, quote_literal};
use crate::engine::postgres::incremental::analyze::{Branch, From, Plan, Relation, Source, Subquery};
use crate::engine::postgres::incremental::capture::{SIGN, SourceTable, XID, log_column, log_relation};
use crate::engine::postgres::incremental::collect;

/// A column of the dynamic table: name and type as `format_type` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: String,
}

impl Column {
    #[cfg(test)]
    pub fn new(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            ty: ty.into(),
        }
    }
}

/// The changes of `source`'s log not yet applied: those of transactions invisible in `applied`
/// (the snapshot the table was last brought up to date with), read in the caller's snapshot,
/// with the source's columns under their current names, and the sign. A source captured from
/// the WAL adds what this transaction copied (collect::fetch_gap), and keeps only the changes
/// of transactions its snapshot sees (a transaction is decoded a moment before it is visible).
pub fn pending_changes(source: &SourceTable, applied: &str) -> String {
    let columns: String = source
        .columns
        .iter()
        .map(|(n, name)| format!("{} AS {}, ", quote_ident(&log_column(*n)), quote_ident(name)))
        .collect();
    let xid = quote_ident(XID);
    let log = if source.peeked {
        format!("{} AS \"dyngate$log\"", collect::log_and_peeked(source.oid))
    } else {
        log_relation(source.oid)
    };
    let seen = if source.wal {
        format!(" AND pg_catalog.pg_visible_in_snapshot({xid}, pg_catalog.pg_current_snapshot())")
    } else {
        String::new()
    };
    format!(
        "SELECT {columns}{sign} FROM {log} WHERE NOT pg_catalog.pg_visible_in_snapshot({xid}, {applied}::pg_catalog.pg_snapshot){seen}{limit}",
        sign = quote_ident(SIGN),
        applied = quote_literal(applied),
        limit = source.changes.map(estimate_hint).unwrap_or_default(),
    )
}

/// A LIMIT that tells the planner about how many changes a source's log holds for this refresh:
/// `counted` of them, counted by the same query in the same snapshot, so the LIMIT never cuts
/// one off (it leaves an eighth more, and some, all the same). A log's statistics are those of a
/// table that fills and empties between refreshes: the planner took 14k changes for 66k, and
/// built V2's join (bench/incremental) on customers' 100k rows instead of on the changes. With
/// twice the count as the limit it still did; with 11k and 14k it built on the changes.
fn estimate_hint(counted: i64) -> String {
    format!(" LIMIT {}", counted.saturating_add(counted / 8).saturating_add(100))
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

/// A FROM clause reading its relations as they are now (a subquery, or a common table
/// expression, written out in place).
pub fn from_now(from: &From) -> String {
    from.render(|i| relation_now(&from.items[i]))
}

fn relation_now(r: &Relation) -> String {
    match r {
        Relation::Table(t) => table_now(t),
        Relation::Query(q) => {
            let selects: Vec<String> = q
                .branches
                .iter()
                .map(|b| {
                    let where_ = b.filter.as_ref().map(|f| format!(" WHERE {f}")).unwrap_or_default();
                    format!("SELECT {} FROM {}{where_}", b.projection, from_now(&b.from))
                })
                .collect();
            format!(
                "({}) AS {}",
                selects.join(" UNION ALL "),
                subquery_alias(&q.binding, &q.columns, false)
            )
        }
    }
}

/// `binding`, or `binding(columns)` when the query names them, with the sign column after them
/// when `signed`.
fn subquery_alias(binding: &str, columns: &[String], signed: bool) -> String {
    if columns.is_empty() {
        return quote_ident(binding);
    }
    let mut names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    if signed {
        names.push(quote_ident(SIGN));
    }
    format!("{}({})", quote_ident(binding), names.join(", "))
}

/// The captured table `t` is (None: not among `sources`, which incremental::check_sources
/// rules out before any apply).
fn captured<'a>(t: &Source, sources: &'a [SourceTable]) -> Option<&'a SourceTable> {
    sources.iter().find(|s| s.schema == t.schema && s.name == t.name)
}

/// The rows of a UNION ALL's branches, each with the sign of its change since `applied`
/// (negated when `negate`).
fn branch_changes(branches: &[Branch], sources: &[SourceTable], applied: &str, negate: bool) -> Option<Vec<String>> {
    let mut selects = Vec::new();
    for b in branches {
        for term in changed_terms(&b.from, sources, applied)? {
            let sign = if negate { format!("-({})", term.sign) } else { term.sign.clone() };
            selects.push(format!(
                "SELECT {}, ({sign})::pg_catalog.int2 AS {} FROM {}{}",
                b.projection,
                quote_ident(SIGN),
                term.clause,
                term.where_clause(b.filter.as_deref())
            ));
        }
    }
    Some(selects)
}

/// One term of a delta: the rows of `SELECT ... FROM {clause} WHERE {conds}`, each counted
/// `sign` times (an expression: -1 removes a row, +1 adds one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub clause: String,
    pub sign: String,
    /// Conditions on the term's rows, besides the query's own WHERE.
    pub conds: Vec<String>,
}

impl Term {
    /// ` WHERE ({filter}) AND {conds}`, or nothing.
    pub fn where_clause(&self, filter: Option<&str>) -> String {
        let all: Vec<String> = filter
            .map(|f| format!("({f})"))
            .into_iter()
            .chain(self.conds.iter().cloned())
            .collect();
        if all.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", all.join(" AND "))
        }
    }
}

/// A term being built: a FROM clause whose rows are counted by the product of `signs`
/// (none: once each) where `conds` hold.
#[derive(Debug, Clone)]
struct Draft {
    clause: String,
    signs: Vec<String>,
    conds: Vec<String>,
}

impl Draft {
    fn of(clause: String, sign: Option<&str>) -> Draft {
        Draft {
            clause,
            signs: sign.map(String::from).into_iter().collect(),
            conds: Vec::new(),
        }
    }

    /// This clause followed by `join` (` JOIN x ON c`), whose rows count `sign` times.
    fn join(&self, join: &str, sign: Option<&str>) -> Draft {
        let mut d = self.clone();
        d.clause.push_str(join);
        d.signs.extend(sign.map(String::from));
        d
    }

    fn when(mut self, cond: String) -> Draft {
        self.conds.push(cond);
        self
    }

    /// `EXISTS`: some row of this clause satisfies `on`.
    fn exists(&self, on: &str) -> String {
        format!("EXISTS (SELECT 1 FROM {} WHERE {})", self.clause, self.conds_and(on))
    }

    fn conds_and(&self, on: &str) -> String {
        self.conds.iter().map(String::as_str).chain([on]).collect::<Vec<_>>().join(" AND ")
    }

    fn sign(&self) -> String {
        if self.signs.is_empty() {
            "1".into()
        } else {
            self.signs.join(" * ")
        }
    }
}

/// A relation read three ways, under its binding: as it is now, its changes since `applied`
/// (signed), and as it was at `applied` (signed: its rows now, and the changes undone).
///
/// A relation with no change pending in the refresh's snapshot (`pending` None: a quiet
/// source, see [`SourceTable::changes`]) was as it is now, and adds no term: the delta of a join
/// where one side changed is then one term over plain tables, which the planner estimates
/// rightly (the UNION ALL of a table and its empty log looked like a table of unknown keys:
/// V2 in bench/incremental joined 14k changes with all of customers through a merge join).
struct Read {
    now: String,
    pending: Option<String>,
    old: String,
    /// The sign column of `pending` and `old`.
    sign: String,
}

impl Read {
    fn of(r: &Relation, sources: &[SourceTable], applied: &str) -> Option<Read> {
        let binding = quote_ident(r.binding());
        let sign = format!("{binding}.{}", quote_ident(SIGN));
        match r {
            Relation::Table(t) => {
                let s = captured(t, sources)?;
                Some(Read {
                    now: table_now(t),
                    pending: (!s.quiet()).then(|| format!("({}) AS {binding}", pending_changes(s, applied))),
                    old: format!("({}) AS {binding}", old_rows(s, applied)),
                    sign,
                })
            }
            // A subquery's change is its query's delta; as it was, its rows now and the change undone.
            Relation::Query(q) => {
                let alias = subquery_alias(&q.binding, &q.columns, true);
                let mut old = vec![format!(
                    "SELECT \"dyngate$q\".*, '1'::pg_catalog.int2 AS {} FROM {}",
                    quote_ident(SIGN),
                    relation_now(&Relation::Query(Subquery {
                        binding: "dyngate$q".into(),
                        columns: Vec::new(),
                        branches: q.branches.clone(),
                    }))
                )];
                old.extend(branch_changes(&q.branches, sources, applied, true)?);
                let changes = branch_changes(&q.branches, sources, applied, false)?;
                Some(Read {
                    now: relation_now(r),
                    pending: (!changes.is_empty()).then(|| format!("({}) AS {alias}", changes.join(" UNION ALL "))),
                    old: format!("({}) AS {alias}", old.join(" UNION ALL ")),
                    sign,
                })
            }
        }
    }
}

/// One side of a join: its rows now, their change (terms), and how it is NULL-extended when
/// a row of the other side matches none of its rows.
struct Side {
    now: Draft,
    delta: Vec<Draft>,
    /// ` LEFT JOIN t ON false` for each of its relations: all its columns NULL.
    nulls: String,
}

impl Side {
    /// Whether no row of this side matched `on` at `applied`: as many matches now as the
    /// changes added (matches now minus the signed matches among the changes).
    fn matched_none_before(&self, on: &str) -> String {
        if self.delta.is_empty() {
            return format!("NOT {}", self.now.exists(on));
        }
        let changes: Vec<String> = self
            .delta
            .iter()
            .map(|d| format!("SELECT {} AS s FROM {} WHERE {}", d.sign(), d.clause, d.conds_and(on)))
            .collect();
        format!(
            "(SELECT count(*) FROM {} WHERE {}) = (SELECT coalesce(sum(x.s), 0) FROM ({}) AS x)",
            self.now.clause,
            self.now.conds_and(on),
            changes.join(" UNION ALL ")
        )
    }

    /// Whether some change of this side matches `on`.
    fn touched(&self, on: &str) -> String {
        match self.delta.as_slice() {
            [] => "false".into(),
            [d] => d.exists(on),
            ds => format!("({})", ds.iter().map(|d| d.exists(on)).collect::<Vec<_>>().join(" OR ")),
        }
    }
}

/// The change of the rows an outer join keeps from side `kept` NULL-extended, because no row of
/// `other` matches them on `on` (an anti-join, A ▷ B):
/// Δ(A ▷ B) = (ΔA ▷ B_old) + Σ over the rows of A now that some change of B matches of
/// ([no match in B now] − [no match in B_old]). The rows no change of B matches kept their
/// (lack of) matches, so only those matched by a change are looked at again.
fn unmatched_delta(kept: &Side, other: &Side, on: &str) -> Vec<Draft> {
    let mut terms: Vec<Draft> = kept
        .delta
        .iter()
        .map(|d| d.join(&other.nulls, None).when(other.matched_none_before(on)))
        .collect();
    if other.delta.is_empty() {
        // No change of `other`: no row of `kept` gained or lost its matches.
        return terms;
    }
    let touched = other.touched(on);
    let extended = kept.now.join(&other.nulls, None);
    terms.push(extended.clone().when(touched.clone()).when(format!("NOT {}", other.now.exists(on))));
    let mut before = extended.when(touched).when(other.matched_none_before(on));
    before.signs.push("-1".into());
    terms.push(before);
    terms
}

/// The terms whose rows add up to the change of `from`'s joined rows since `applied`, the
/// tables' changes read from the logs of `sources` (None: a table of `from` is not among them). Built one join at a time, R being the
/// relations joined so far and T the next one:
/// - inner: Δ(R ⋈ T) = ΔR ⋈ T_old + R_now ⋈ ΔT (telescoping: every pair of changes counted once);
/// - outer: the inner part, plus the change of the rows kept NULL-extended (`unmatched_delta`):
///   R's for LEFT, T's for RIGHT, both for FULL.
pub fn delta_terms(from: &From, sources: &[SourceTable], applied: &str) -> Option<Vec<Term>> {
    let mut terms = changed_terms(from, sources, applied)?;
    if terms.is_empty() {
        // Nothing changed (the refresh applies no delta then; kept valid all the same).
        terms.push(Term {
            clause: from_now(from),
            sign: "1".into(),
            conds: vec!["false".into()],
        });
    }
    Some(terms)
}

/// [`delta_terms`], none when no source of `from` changed.
fn changed_terms(from: &From, sources: &[SourceTable], applied: &str) -> Option<Vec<Term>> {
    let relations: Vec<Read> = from.items.iter().map(|r| Read::of(r, sources, applied)).collect::<Option<_>>()?;
    let null = |r: &Read| format!(" LEFT JOIN {} ON false", r.now);
    let changes = |r: &Read| -> Vec<Draft> { r.pending.iter().map(|p| Draft::of(p.clone(), Some(&r.sign))).collect() };
    let first = &relations[0];
    let mut now = Draft::of(first.now.clone(), None);
    let mut delta = changes(first);
    for (k, (t, join)) in relations[1..].iter().zip(&from.joins).enumerate() {
        let inner = |table: &str| match join.on() {
            Some(on) => format!(" JOIN {table} ON {on}"),
            None => format!(" CROSS JOIN {table}"),
        };
        let mut next: Vec<Draft> = match &t.pending {
            Some(pending) => {
                let mut next: Vec<Draft> = delta.iter().map(|d| d.join(&inner(&t.old), Some(&t.sign))).collect();
                next.push(now.join(&inner(pending), Some(&t.sign)));
                next
            }
            // Unchanged: as it was is as it is.
            None => delta.iter().map(|d| d.join(&inner(&t.now), None)).collect(),
        };
        if let Some(on) = join.on() {
            let left = Side {
                now: now.clone(),
                delta: delta.clone(),
                nulls: relations[..=k].iter().map(null).collect(),
            };
            let right = Side {
                now: Draft::of(t.now.clone(), None),
                delta: changes(t),
                nulls: null(t),
            };
            if join.keeps_left() {
                next.extend(unmatched_delta(&left, &right, on));
            }
            if join.keeps_right() {
                next.extend(unmatched_delta(&right, &left, on));
            }
        }
        now = now.join(&join.render(&t.now), None);
        delta = next;
    }
    Some(
        delta
            .into_iter()
            .map(|d| Term {
                sign: d.sign(),
                clause: d.clause,
                conds: d.conds,
            })
            .collect(),
    )
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
pub fn apply_sql(plan: &Plan, sources: &[SourceTable], applied: &str, target: &str, columns: &[Column]) -> Option<String> {
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
    for b in branches {
        for term in delta_terms(&b.from, sources, applied)? {
            let where_ = term.where_clause(b.filter.as_deref());
            changed.push(format!("SELECT {}, {} FROM {}{where_}", b.projection, term.sign, term.clause));
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
    use crate::engine::postgres::incremental::analyze::analyze;

    fn captured(oid: u32, name: &str) -> SourceTable {
        SourceTable {
            oid,
            schema: "public".into(),
            name: name.into(),
            quoted: format!("public.{name}"),
            columns: vec![(1, "id".into())],
            not_null: Vec::new(),
            fixed_scale: Vec::new(),
            wal: false,
            peeked: false,
            changes: None,
        }
    }

    /// An inner join has two terms (telescoping); a left join adds three for the rows kept
    /// NULL-extended (the left side's changes, and the left rows a change on the right matched,
    /// counted now and before); a full join three for each side.
    #[test]
    fn outer_join_terms() {
        let (a, b) = (captured(1, "a"), captured(2, "b"));
        let count = |sql: &str| {
            let Ok(Plan::Rows { branches }) = analyze(sql) else {
                panic!("{sql}");
            };
            delta_terms(&branches[0].from, &[a.clone(), b.clone()], "1:1:").unwrap()
        };
        assert_eq!(count("SELECT a.id FROM public.a JOIN public.b ON b.id = a.id").len(), 2);
        assert_eq!(count("SELECT a.id FROM public.a, public.b").len(), 2);
        let left = count("SELECT a.id FROM public.a LEFT JOIN public.b ON b.id = a.id");
        assert_eq!(left.len(), 5);
        let extended: Vec<&Term> = left
            .iter()
            .filter(|t| t.clause.contains("LEFT JOIN \"public\".\"b\" AS \"b\" ON false"))
            .collect();
        assert_eq!(extended.len(), 3, "{left:#?}");
        assert_eq!(extended.iter().filter(|t| t.sign.ends_with("-1")).count(), 1);
        assert!(extended.iter().all(|t| !t.conds.is_empty()));
        assert_eq!(count("SELECT a.id FROM public.a RIGHT JOIN public.b ON b.id = a.id").len(), 5);
        assert_eq!(count("SELECT a.id FROM public.a FULL JOIN public.b ON b.id = a.id").len(), 8);
    }

    /// A quiet source (no change pending) adds no term and is read as it is: per join kind and
    /// per side left quiet, the terms that remain, and that none reads the quiet table's log.
    #[test]
    fn quiet_sources_add_no_terms() {
        let cases: &[(&str, &str, usize)] = &[
            // (join, quiet tables, terms)
            ("JOIN", "", 2),
            ("JOIN", "b", 1),
            ("JOIN", "a", 1),
            ("JOIN", "ab", 1),
            ("LEFT JOIN", "b", 2),
            ("LEFT JOIN", "a", 3),
            ("RIGHT JOIN", "b", 3),
            ("RIGHT JOIN", "a", 2),
            ("FULL JOIN", "b", 4),
            ("FULL JOIN", "ab", 1),
        ];
        for (join, quiet, want) in cases {
            let mut a = captured(1, "a");
            let mut b = captured(2, "b");
            a.changes = Some(if quiet.contains('a') { 0 } else { 3 });
            b.changes = Some(if quiet.contains('b') { 0 } else { 3 });
            let sql = format!("SELECT a.id FROM public.a {join} public.b ON b.id = a.id");
            let Ok(Plan::Rows { branches }) = analyze(&sql) else {
                panic!("{sql}");
            };
            let terms = delta_terms(&branches[0].from, &[a, b], "1:1:").unwrap();
            assert_eq!(terms.len(), *want, "{join}, quiet {quiet:?}: {terms:#?}");
            for (t, log) in [("a", "changes_1"), ("b", "changes_2")] {
                if quiet.contains(t) {
                    assert!(
                        terms
                            .iter()
                            .all(|x| !x.clause.contains(log) && !x.conds.iter().any(|c| c.contains(log))),
                        "{join}, quiet {quiet:?}: {terms:#?}"
                    );
                }
            }
            // A counted log is read with a hint of its size: the count, and some.
            assert!(
                *quiet == "ab" || terms.iter().any(|x| x.clause.contains(" LIMIT 103)")),
                "{terms:#?}"
            );
            if *quiet == "ab" {
                assert_eq!(terms[0].conds, ["false"], "nothing changed: one term with no rows");
            }
        }
        // A subquery whose sources are all quiet is read as it is.
        let (a, mut b) = (captured(1, "a"), captured(2, "b"));
        b.changes = Some(0);
        let Ok(Plan::Rows { branches }) = analyze("SELECT a.id FROM public.a JOIN (SELECT b.id FROM public.b) AS s ON s.id = a.id") else {
            panic!("subquery");
        };
        let terms = delta_terms(&branches[0].from, &[a, b], "1:1:").unwrap();
        assert_eq!(terms.len(), 1, "{terms:#?}");
        assert!(!terms[0].clause.contains("changes_2"), "{terms:#?}");
    }

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
            not_null: Vec::new(),
            fixed_scale: Vec::new(),
            wal: false,
            peeked: false,
            changes: None,
        };
        let sql = apply_sql(&plan, &[source], "10:20:", "public.\"T\"", &cols).unwrap();
        if let Ok(path) = std::env::var("DYNGATE_PRINT_DELTA_SQL") {
            std::fs::write(path, &sql).unwrap();
        }
        for part in [
            "WITH changed (\"id\", \"Double\", \"dyngate$n\")",
            "SELECT o.id, o.amount * 2 AS \"Double\", \"o\".\"dyngate$sign\" FROM (SELECT \"a1\" AS \"id\", \"a4\" AS \"amount\", \"dyngate$sign\" FROM dyngate.\"changes_7\" WHERE NOT pg_catalog.pg_visible_in_snapshot(\"dyngate$xid\", '10:20:'::pg_catalog.pg_snapshot)) AS \"o\" WHERE (o.amount > 1)",
            "SELECT c.\"id\"::integer AS \"id\", c.\"Double\"::numeric AS \"Double\", c.\"dyngate$n\" FROM changed AS c",
            "JOIN net ON ROW(t2.\"id\", t2.\"Double\")::text = net.\"dyngate$k\"",
            "INSERT INTO public.\"T\" (\"id\", \"Double\")",
        ] {
            assert!(sql.contains(part), "{part}\n---\n{sql}");
        }
    }
}
