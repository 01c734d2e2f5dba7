//! Which refreshes of a query can be incremental, read from its resolved text (what
//! `pg_get_viewdef` prints: every relation schema-qualified, every column qualified by its
//! table's name or alias). Pure: text in, a [`Plan`] or the reason it is refreshed fully out.
//!
//! Shapes supported so far:
//! - [`Plan::Rows`]: `SELECT <scalar expressions> FROM <tables joined> [WHERE ...]`, or a
//!   UNION ALL of such: each combination of source rows gives at most one result row, so a
//!   deleted one deletes one copy of what it gave and an inserted one adds one. Joins are inner,
//!   outer (left, right, full) or cross, one relation after the other (`delta` has how an outer
//!   join's NULL-extended rows are maintained). A relation is a table, or a subquery or common
//!   table expression that is itself such a UNION ALL of rows.
//! - [`Plan::Groups`]: `SELECT <group keys and count(*), count, sum, avg, min, max of scalar
//!   expressions> FROM <tables joined> [WHERE ...] GROUP BY <keys>`, and `SELECT DISTINCT`:
//!   each group's aggregates are kept as mergeable state (counts and sums), so a change touches
//!   only its group.
//!
//! Everything else is refreshed fully, with the reason users see in DESCRIBE and SHOW (like
//! Snowflake's `refresh_mode_reason`). The functions a query calls are to be checked apart,
//! against PostgreSQL's catalog (volatility, and whether they are the user's): text alone cannot
//! tell.

use sqlparser::ast::{
    Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, JoinConstraint, JoinOperator, Query, Select, SelectItem,
    SetExpr, SetOperator, SetQuantifier, Statement, TableAlias, TableFactor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// A table a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub schema: String,
    pub name: String,
    /// The name the query's columns are qualified with (the alias, else the table's name).
    pub binding: String,
}

/// What a query reads: relations joined left to right (a comma is a cross join), as
/// `pg_get_viewdef` prints a FROM clause without parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub items: Vec<Relation>,
    /// How each relation after the first is joined to those before it.
    pub joins: Vec<Join>,
}

/// A relation in FROM: a table, or a subquery (a common table expression's reference is its
/// query in place) whose rows are planned like a query's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    Table(Source),
    Query(Subquery),
}

/// `(SELECT ...) AS binding(columns)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subquery {
    pub binding: String,
    /// The column names the alias gives (`AS t(a, b)`), if it gives them.
    pub columns: Vec<String>,
    /// Its rows: one branch per SELECT of a UNION ALL.
    pub branches: Vec<Branch>,
}

impl Relation {
    pub fn binding(&self) -> &str {
        match self {
            Relation::Table(t) => &t.binding,
            Relation::Query(q) => &q.binding,
        }
    }

    /// The tables it reads (a subquery's, recursively), with repeats.
    pub fn tables(&self) -> Vec<&Source> {
        match self {
            Relation::Table(t) => vec![t],
            Relation::Query(q) => q.branches.iter().flat_map(|b| b.from.tables()).collect(),
        }
    }
}

/// A join of a table to the tables before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    Cross,
    Inner(String),
    Left(String),
    Right(String),
    Full(String),
}

impl Join {
    /// The join condition (none for a cross join).
    pub fn on(&self) -> Option<&str> {
        match self {
            Join::Cross => None,
            Join::Inner(c) | Join::Left(c) | Join::Right(c) | Join::Full(c) => Some(c),
        }
    }

    /// Rows of the tables before it are kept when no row of the joined table matches.
    pub fn keeps_left(&self) -> bool {
        matches!(self, Join::Left(_) | Join::Full(_))
    }

    /// Rows of the joined table are kept when no row of the tables before it matches.
    pub fn keeps_right(&self) -> bool {
        matches!(self, Join::Right(_) | Join::Full(_))
    }

    /// The join written before `table`: ` LEFT JOIN {table} ON {c}`.
    pub fn render(&self, table: &str) -> String {
        match self {
            Join::Cross => format!(" CROSS JOIN {table}"),
            Join::Inner(c) => format!(" JOIN {table} ON {c}"),
            Join::Left(c) => format!(" LEFT JOIN {table} ON {c}"),
            Join::Right(c) => format!(" RIGHT JOIN {table} ON {c}"),
            Join::Full(c) => format!(" FULL JOIN {table} ON {c}"),
        }
    }
}

impl From {
    #[cfg(test)]
    fn one(source: Source) -> From {
        From {
            items: vec![Relation::Table(source)],
            joins: Vec::new(),
        }
    }

    /// The tables it reads (those of subqueries too), with repeats.
    pub fn tables(&self) -> Vec<&Source> {
        self.items.iter().flat_map(Relation::tables).collect()
    }

    /// Per relation, whether an outer join can give it as NULLs (a row with no match kept):
    /// the joined one of a LEFT join, those before it of a RIGHT join, both of a FULL one.
    pub fn null_extended(&self) -> Vec<bool> {
        let mut extended = vec![false; self.items.len()];
        for (i, join) in self.joins.iter().enumerate() {
            if join.keeps_left() {
                extended[i + 1] = true;
            }
            if join.keeps_right() {
                extended[..=i].iter_mut().for_each(|e| *e = true);
            }
        }
        extended
    }

    /// The FROM clause (without the keyword), the i-th relation given by `table(i)`.
    pub fn render(&self, table: impl Fn(usize) -> String) -> String {
        let mut sql = table(0);
        for (i, join) in self.joins.iter().enumerate() {
            sql.push_str(&join.render(&table(i + 1)));
        }
        sql
    }
}

/// How a query is refreshed incrementally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One row out per qualifying combination of rows in, for each branch of a UNION ALL.
    Rows { branches: Vec<Branch> },
    /// One row out per group: `SELECT {outputs} FROM {source} WHERE {filter} GROUP BY {keys}`.
    Groups {
        from: From,
        filter: Option<String>,
        /// The GROUP BY expressions, as printed; each is in the select list.
        keys: Vec<String>,
        /// The select list, in order.
        outputs: Vec<Output>,
    },
}

/// `SELECT {projection} FROM {from} WHERE {filter}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub from: From,
    /// The select list, as printed (`orders.id, orders.amount * 2::numeric AS a2`).
    pub projection: String,
    pub filter: Option<String>,
}

impl Plan {
    /// What each branch reads.
    pub fn froms(&self) -> Vec<&From> {
        match self {
            Plan::Rows { branches } => branches.iter().map(|b| &b.from).collect(),
            Plan::Groups { from, .. } => vec![from],
        }
    }
}

/// An item of a grouped query's select list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The i-th group key.
    Key(usize),
    /// An aggregate of an expression (`None`: `count(*)`).
    Agg(Agg, Option<String>),
}

/// The aggregates maintained incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// Reads `resolved` (a query as `pg_get_viewdef` prints it): the plan, or why the table is
/// refreshed fully.
pub fn analyze(resolved: &str) -> Result<Plan, String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, resolved).map_err(|e| format!("the query could not be analyzed ({e})"))?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return Err("the query could not be analyzed (not one SELECT)".into());
    };
    query_plan(q, &[])
}

/// A common table expression in scope: its name, the column names it gives, its query.
#[derive(Clone)]
struct Cte<'a> {
    name: &'a str,
    columns: Vec<String>,
    query: &'a Query,
}

/// A query's plan, the common table expressions `outer` in scope.
fn query_plan(q: &Query, outer: &[Cte<'_>]) -> Result<Plan, String> {
    let mut ctes = outer.to_vec();
    if let Some(with) = &q.with {
        if with.recursive {
            return Err("WITH RECURSIVE is refreshed fully".into());
        }
        for cte in &with.cte_tables {
            // Later ones see earlier ones (and shadow outer ones of the same name).
            ctes.insert(
                0,
                Cte {
                    name: &cte.alias.name.value,
                    columns: cte.alias.columns.iter().map(|c| c.name.value.clone()).collect(),
                    query: &cte.query,
                },
            );
        }
    }
    check_query_tail(q)?;
    let mut leaves = Vec::new();
    union_all_leaves(&q.body, &mut leaves)?;
    if let [select] = leaves.as_slice() {
        return select_plan(select, &ctes);
    }
    let mut branches = Vec::new();
    for select in leaves {
        match select_plan(select, &ctes)? {
            Plan::Rows { branches: b } => branches.extend(b),
            Plan::Groups { .. } => {
                return Err("UNION ALL of grouped or DISTINCT queries is not supported incrementally yet".into());
            }
        }
    }
    Ok(Plan::Rows { branches })
}

/// The SELECTs of a UNION ALL (one: a plain SELECT); other set operations are refused.
fn union_all_leaves<'a>(body: &'a SetExpr, leaves: &mut Vec<&'a Select>) -> Result<(), String> {
    match body {
        SetExpr::Select(s) => leaves.push(s),
        SetExpr::SetOperation {
            op: SetOperator::Union,
            set_quantifier: SetQuantifier::All,
            left,
            right,
        } => {
            union_all_leaves(left, leaves)?;
            union_all_leaves(right, leaves)?;
        }
        SetExpr::SetOperation { op, set_quantifier, .. } => {
            let op = format!("{op} {set_quantifier}");
            return Err(format!("{} is not supported incrementally yet", op.trim_end()));
        }
        SetExpr::Query(q) if q.with.is_none() && q.order_by.is_none() => {
            check_query_tail(q)?;
            union_all_leaves(&q.body, leaves)?;
        }
        _ => return Err("the query's form is not supported incrementally".into()),
    }
    Ok(())
}

/// One SELECT: rows, or groups (GROUP BY, DISTINCT).
fn select_plan(select: &Select, ctes: &[Cte<'_>]) -> Result<Plan, String> {
    let distinct = match &select.distinct {
        None => false,
        Some(Distinct::Distinct) => true,
        Some(_) => return Err("DISTINCT ON is not supported incrementally".into()),
    };
    if select.having.is_some() {
        return Err("HAVING is not supported incrementally yet".into());
    }
    let keys = match &select.group_by {
        GroupByExpr::Expressions(e, m) if m.is_empty() => e,
        _ => return Err("GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS are refreshed fully".into()),
    };
    if !select.named_window.is_empty() {
        return Err("window functions (WINDOW) are not supported incrementally".into());
    }
    let from = from_of(&select.from, ctes)?;
    if let Some(w) = &select.selection {
        check_scalar(w, "WHERE")?;
    }
    let filter = select.selection.as_ref().map(ToString::to_string);
    if distinct {
        // SELECT DISTINCT x, y is GROUP BY x, y: one row per group, kept with its count.
        if !keys.is_empty() {
            return Err("DISTINCT together with GROUP BY is not supported incrementally yet".into());
        }
        let mut exprs = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => exprs.push(e.clone()),
                _ => return Err("a select list with * is not supported incrementally".into()),
            }
        }
        return groups(from, filter, &exprs, &select.projection);
    }
    if !keys.is_empty() {
        return groups(from, filter, keys, &select.projection);
    }
    for item in &select.projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return Err("a select list with * is not supported incrementally".into()),
        };
        check_scalar(expr, "the select list")?;
    }
    let projection = select.projection.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    Ok(Plan::Rows {
        branches: vec![Branch { from, projection, filter }],
    })
}

/// Tables joined one after the other (inner, outer and cross joins, commas).
fn from_of(items: &[sqlparser::ast::TableWithJoins], ctes: &[Cte<'_>]) -> Result<From, String> {
    let Some(first) = items.first() else {
        return Err("a query without FROM is refreshed fully".into());
    };
    let mut from = From {
        items: vec![relation_of(&first.relation, ctes)?],
        joins: Vec::new(),
    };
    for j in &first.joins {
        let on = |c: &JoinConstraint| match c {
            JoinConstraint::On(c) => {
                check_scalar(c, "a join condition")?;
                Ok(c.to_string())
            }
            _ => Err("joins with USING or NATURAL are not supported incrementally yet".to_string()),
        };
        let join = match &j.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) => Join::Inner(on(c)?),
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => Join::Left(on(c)?),
            JoinOperator::Right(c) | JoinOperator::RightOuter(c) => Join::Right(on(c)?),
            JoinOperator::FullOuter(c) => Join::Full(on(c)?),
            JoinOperator::CrossJoin(JoinConstraint::None) => Join::Cross,
            _ => return Err("this join is not supported incrementally".into()),
        };
        from.items.push(relation_of(&j.relation, ctes)?);
        from.joins.push(join);
    }
    for item in &items[1..] {
        if !item.joins.is_empty() {
            return Err("joins after a comma in FROM are not supported incrementally yet".into());
        }
        from.items.push(relation_of(&item.relation, ctes)?);
        from.joins.push(Join::Cross);
    }
    let mut bindings: Vec<&str> = from.items.iter().map(Relation::binding).collect();
    bindings.sort();
    bindings.dedup();
    if bindings.len() != from.items.len() {
        return Err("a FROM list naming one binding twice could not be analyzed".into());
    }
    Ok(from)
}

/// A grouped query: every select item is a group key or one of the aggregates kept as state.
fn groups(from: From, filter: Option<String>, key_exprs: &[Expr], projection: &[SelectItem]) -> Result<Plan, String> {
    if key_exprs
        .iter()
        .any(|k| matches!(k, Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_)))
    {
        return Err("GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS are refreshed fully".into());
    }
    // PostgreSQL prints an expression key in parentheses in GROUP BY, not in the select list.
    let mut keys: Vec<String> = Vec::new();
    for k in key_exprs {
        let k = unparenthesized(k).to_string();
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut outputs = Vec::new();
    for item in projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return Err("a select list with * is not supported incrementally".into()),
        };
        if let Some(i) = keys.iter().position(|k| *k == unparenthesized(expr).to_string()) {
            outputs.push(Output::Key(i));
            continue;
        }
        outputs.push(aggregate(expr)?);
    }
    for (i, k) in keys.iter().enumerate() {
        if !outputs.contains(&Output::Key(i)) {
            return Err(format!(
                "GROUP BY {k} without {k} in the select list is not supported incrementally yet"
            ));
        }
    }
    for k in &keys {
        let e = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(k)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| format!("the query could not be analyzed ({e})"))?;
        check_scalar(&e, "GROUP BY")?;
    }
    Ok(Plan::Groups {
        from,
        filter,
        keys,
        outputs,
    })
}

/// The relation and column an expression is, when it is a column (`o.amount`, as PostgreSQL
/// prints one: qualified), unquoted.
pub fn column_ref(e: &str) -> Option<(String, String)> {
    let expr = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(e)
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    match unparenthesized(&expr) {
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [relation, column] => Some((relation.value.clone(), column.value.clone())),
            _ => None,
        },
        _ => None,
    }
}

fn unparenthesized(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => unparenthesized(inner),
        _ => e,
    }
}

/// `count(*)`, or count, sum, avg, min or max of a scalar expression, plainly (no DISTINCT,
/// FILTER, ORDER BY or OVER).
fn aggregate(expr: &Expr) -> Result<Output, String> {
    let unsupported = || {
        Err(format!(
            "{expr} in a grouped select list is not supported incrementally (only group keys, and count, sum, avg, min and max of expressions)"
        ))
    };
    let Expr::Function(f) = expr else {
        return unsupported();
    };
    let name = f.name.to_string().to_lowercase();
    let agg = match name.as_str() {
        "count" => Agg::Count,
        "sum" => Agg::Sum,
        "avg" => Agg::Avg,
        "min" => Agg::Min,
        "max" => Agg::Max,
        _ => return unsupported(),
    };
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() || !matches!(f.parameters, FunctionArguments::None) {
        return Err(format!("{expr}: FILTER, OVER and WITHIN GROUP are not supported incrementally"));
    }
    let FunctionArguments::List(list) = &f.args else {
        return unsupported();
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(format!(
            "{expr}: DISTINCT and ORDER BY in aggregates are not supported incrementally"
        ));
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if agg == Agg::Count => Ok(Output::Agg(Agg::Count, None)),
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => {
            check_scalar(e, "an aggregate's argument")?;
            Ok(Output::Agg(agg, Some(e.to_string())))
        }
        _ => unsupported(),
    }
}

/// ORDER BY is harmless (a table has no order); LIMIT, OFFSET and FETCH are not.
fn check_query_tail(q: &Query) -> Result<(), String> {
    if q.limit_clause.is_some() || q.fetch.is_some() {
        return Err("LIMIT, OFFSET and FETCH are refreshed fully".into());
    }
    if !q.locks.is_empty() {
        return Err("FOR UPDATE / FOR SHARE is refreshed fully".into());
    }
    Ok(())
}

/// A FROM item: a table, a subquery, or a common table expression's name.
fn relation_of(f: &TableFactor, ctes: &[Cte<'_>]) -> Result<Relation, String> {
    let alias_columns =
        |alias: &Option<TableAlias>| -> Vec<String> { alias.iter().flat_map(|a| &a.columns).map(|c| c.name.value.clone()).collect() };
    let (name, alias) = match f {
        TableFactor::Table {
            name, alias, args: None, ..
        } => (name, alias),
        TableFactor::Table { .. } => return Err("table functions in FROM are refreshed fully".into()),
        TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            ..
        } => return subquery_of(&alias.name.value, alias_columns(&Some(alias.clone())), subquery, ctes),
        TableFactor::Derived { lateral: true, .. } => return Err("LATERAL subqueries are refreshed fully".into()),
        TableFactor::NestedJoin { .. } => return Err("parenthesized joins in FROM are not supported incrementally yet".into()),
        _ => return Err("this FROM item is not supported incrementally".into()),
    };
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.clone())).collect();
    if let [one] = parts.as_slice()
        && let Some(cte) = ctes.iter().find(|c| c.name == one)
    {
        let columns = match alias_columns(alias) {
            given if given.is_empty() => cte.columns.clone(),
            given => given,
        };
        let binding = alias.as_ref().map_or(one, |a| &a.name.value);
        // What the query's own WITH is is what it sees from here on: the CTEs before this one.
        let visible = ctes.iter().skip_while(|c| c.name != one).skip(1).cloned().collect::<Vec<_>>();
        return subquery_of(binding, columns, cte.query, &visible);
    }
    let [schema, table] = parts.as_slice() else {
        return Err(format!("the table {name} could not be resolved"));
    };
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return Err("column aliases on a table in FROM are not supported incrementally yet".into());
    }
    Ok(Relation::Table(Source {
        schema: schema.clone(),
        name: table.clone(),
        binding: alias.as_ref().map_or_else(|| table.clone(), |a| a.name.value.clone()),
    }))
}

/// A subquery in FROM (or a common table expression's): planned as rows.
fn subquery_of(binding: &str, columns: Vec<String>, q: &Query, ctes: &[Cte<'_>]) -> Result<Relation, String> {
    match query_plan(q, ctes)? {
        Plan::Rows { branches } => Ok(Relation::Query(Subquery {
            binding: binding.to_string(),
            columns,
            branches,
        })),
        Plan::Groups { .. } => Err("GROUP BY or DISTINCT in a subquery or WITH query in FROM is not supported incrementally yet".into()),
    }
}

/// Refuses what cannot be computed row by row: aggregates, window functions, subqueries, and
/// the SQL value functions of the clock (`CURRENT_DATE`, ...), whose result changes with no
/// change in the sources. Read from the expression's tokens: a word before `(` is a function.
fn check_scalar(e: &Expr, place: &str) -> Result<(), String> {
    let text = e.to_string();
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, &text)
        .tokenize()
        .map_err(|e| format!("the query could not be analyzed ({e})"))?;
    let tokens: Vec<&Token> = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
    // Before aggregates: `count(*) OVER ()` is a window function.
    if tokens
        .iter()
        .any(|t| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("over")))
    {
        return Err("window functions (OVER) are refreshed fully".into());
    }
    for (i, t) in tokens.iter().enumerate() {
        if matches!(t, Token::Period) && matches!(tokens.get(i + 1), Some(Token::Mul)) {
            return Err(format!("whole-row references (x.*) in {place} are not supported incrementally"));
        }
        let Token::Word(w) = t else { continue };
        let word = w.value.to_lowercase();
        let call = matches!(tokens.get(i + 1), Some(Token::LParen));
        let unquoted = w.quote_style.is_none();
        if unquoted && matches!(word.as_str(), "select" | "exists") {
            return Err(format!("subqueries in {place} are not supported incrementally yet"));
        }
        if call && AGGREGATES.contains(&word.as_str()) {
            return Err(format!("aggregates ({word}) are not supported incrementally yet"));
        }
        if unquoted && !call && CLOCK.contains(&word.as_str()) {
            return Err(format!("{} changes with time, not with the sources", word.to_uppercase()));
        }
    }
    Ok(())
}

/// The names of the functions `resolved` calls (a word before `(`, lower-cased unless quoted),
/// for the catalog to check (capture::function_reason). Keywords that take parentheses come
/// along; no function of PostgreSQL's bears their names.
pub fn called_functions(resolved: &str) -> Vec<String> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, resolved).tokenize() else {
        return Vec::new();
    };
    let tokens: Vec<&Token> = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
    let mut names: Vec<String> = tokens
        .windows(2)
        .filter_map(|w| match w {
            [Token::Word(word), Token::LParen] => Some(match word.quote_style {
                Some(_) => word.value.clone(),
                None => word.value.to_lowercase(),
            }),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// PostgreSQL's aggregates, as a query may call them (so that `count(*)` in a select list without
/// GROUP BY is known for one).
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "bit_xor",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_count",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "xmlagg",
    "range_agg",
    "range_intersect_agg",
];

/// SQL value functions of the clock, which PostgreSQL prints without parentheses.
const CLOCK: &[&str] = &["current_date", "current_time", "current_timestamp", "localtime", "localtimestamp"];

#[cfg(test)]
mod tests {
    use super::*;

    fn src(schema: &str, name: &str, binding: &str) -> Source {
        Source {
            schema: schema.into(),
            name: name.into(),
            binding: binding.into(),
        }
    }

    #[test]
    fn rows_plans() {
        let cases = [
            (
                "SELECT orders.id, orders.amount * 2::numeric AS a2 FROM public.orders WHERE orders.amount > 10::numeric AND orders.day IS NOT NULL",
                Plan::Rows {
                    branches: vec![Branch {
                        from: From::one(src("public", "orders", "orders")),
                        projection: "orders.id, orders.amount * 2::NUMERIC AS a2".into(),
                        filter: Some("orders.amount > 10::NUMERIC AND orders.day IS NOT NULL".into()),
                    }],
                },
            ),
            (
                " SELECT o.id,\n    upper(o.note) AS u\n   FROM \"My Schema\".\"Orders\" o\n  ORDER BY o.id;",
                Plan::Rows {
                    branches: vec![Branch {
                        from: From::one(src("My Schema", "Orders", "o")),
                        projection: "o.id, upper(o.note) AS u".into(),
                        filter: None,
                    }],
                },
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(analyze(sql), Ok(want), "{sql}");
        }
    }

    #[test]
    fn join_plans() {
        let sql = "SELECT c.region, o.day, count(*) AS n, sum(o.amount) AS total FROM public.orders o JOIN public.customers c ON c.id = o.customer_id GROUP BY c.region, o.day";
        let Ok(Plan::Groups { from, keys, .. }) = analyze(sql) else {
            panic!("{sql}");
        };
        assert_eq!(from.tables(), [&src("public", "orders", "o"), &src("public", "customers", "c")]);
        assert_eq!(from.joins, [Join::Inner("c.id = o.customer_id".to_string())]);
        assert_eq!(keys, ["c.region", "o.day"]);
        assert_eq!(from.render(|i| format!("T{i}")), "T0 JOIN T1 ON c.id = o.customer_id");
        let sql = "SELECT a.id, b.id AS bid FROM public.a, public.b WHERE a.id = b.id";
        let Ok(Plan::Rows { branches }) = analyze(sql) else {
            panic!("{sql}");
        };
        assert_eq!(branches[0].from.render(|i| format!("T{i}")), "T0 CROSS JOIN T1");
        assert_eq!(branches[0].filter.as_deref(), Some("a.id = b.id"));
        let sql = "SELECT a.id, b.y, c.z FROM public.a LEFT JOIN public.b ON b.id = a.id RIGHT JOIN public.c ON c.id = a.id FULL JOIN public.d ON d.id = c.id";
        let Ok(Plan::Rows { branches }) = analyze(sql) else {
            panic!("{sql}");
        };
        let from = &branches[0].from;
        assert_eq!(
            from.joins,
            [
                Join::Left("b.id = a.id".into()),
                Join::Right("c.id = a.id".into()),
                Join::Full("d.id = c.id".into())
            ]
        );
        assert_eq!(
            from.render(|i| format!("T{i}")),
            "T0 LEFT JOIN T1 ON b.id = a.id RIGHT JOIN T2 ON c.id = a.id FULL JOIN T3 ON d.id = c.id"
        );
        let keeps: Vec<(bool, bool)> = from.joins.iter().map(|j| (j.keeps_left(), j.keeps_right())).collect();
        assert_eq!(keeps, [(true, false), (false, true), (true, true)]);
    }

    /// Subqueries and common table expressions are relations planned as rows; a common table
    /// expression sees those before it.
    #[test]
    fn subquery_plans() {
        let sql = "WITH big AS (SELECT r.k, r.v FROM public.r WHERE r.v > 2), named(a, b) AS (SELECT big.k, s.w FROM big JOIN public.s ON s.k = big.k)
                   SELECT n.a, x.v FROM named n LEFT JOIN (SELECT r.k, r.v FROM public.r UNION ALL SELECT t.k, t.v FROM public.t) x(k, v) ON x.k = n.a";
        let Ok(Plan::Rows { branches }) = analyze(sql) else {
            panic!("{sql}");
        };
        let from = &branches[0].from;
        let [Relation::Query(named), Relation::Query(x)] = from.items.as_slice() else {
            panic!("{from:?}");
        };
        assert_eq!(
            (named.binding.as_str(), named.columns.as_slice()),
            ("n", &["a".to_string(), "b".to_string()][..])
        );
        assert_eq!((x.binding.as_str(), x.columns.len(), x.branches.len()), ("x", 2, 2));
        let Relation::Query(big) = &named.branches[0].from.items[0] else {
            panic!("{named:?}");
        };
        assert_eq!(big.binding, "big");
        assert_eq!(big.branches[0].filter.as_deref(), Some("r.v > 2"));
        let tables: Vec<&str> = from.tables().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tables, ["r", "s", "r", "t"]);
        // A name that is not a common table expression in scope is a table to resolve.
        let sql = "WITH a AS (SELECT b.k FROM b) SELECT a.k FROM a";
        assert!(analyze(sql).unwrap_err().contains("could not be resolved"));
    }

    #[test]
    fn union_all_plans() {
        let sql = "SELECT a.id, a.x FROM public.a WHERE a.x > 1 UNION ALL (SELECT b.id, b.y FROM public.b UNION ALL SELECT c.id, 0 AS x FROM public.c)";
        let Ok(Plan::Rows { branches }) = analyze(sql) else {
            panic!("{sql}");
        };
        let names: Vec<&str> = branches.iter().map(|b| b.from.tables()[0].name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(branches[0].filter.as_deref(), Some("a.x > 1"));
        assert_eq!(branches[2].projection, "c.id, 0 AS x");
    }

    #[test]
    fn distinct_is_grouping() {
        let sql = "SELECT DISTINCT o.day, o.note, o.day AS again FROM public.orders o";
        let Ok(Plan::Groups { keys, outputs, .. }) = analyze(sql) else {
            panic!("{sql}");
        };
        assert_eq!(keys, ["o.day", "o.note"]);
        assert_eq!(outputs, [Output::Key(0), Output::Key(1), Output::Key(0)]);
    }

    #[test]
    fn groups_plans() {
        let sql = "SELECT o.day, count(*) AS n, sum(o.amount) AS total, avg(o.amount * 2::numeric) AS a, min(o.note) AS lo, max(o.id) AS hi, count(o.note) AS notes
                     FROM public.orders o WHERE o.amount > 0::numeric GROUP BY o.day";
        assert_eq!(
            analyze(sql),
            Ok(Plan::Groups {
                from: From::one(src("public", "orders", "o")),
                filter: Some("o.amount > 0::NUMERIC".into()),
                keys: vec!["o.day".into()],
                outputs: vec![
                    Output::Key(0),
                    Output::Agg(Agg::Count, None),
                    Output::Agg(Agg::Sum, Some("o.amount".into())),
                    Output::Agg(Agg::Avg, Some("o.amount * 2::NUMERIC".into())),
                    Output::Agg(Agg::Min, Some("o.note".into())),
                    Output::Agg(Agg::Max, Some("o.id".into())),
                    Output::Agg(Agg::Count, Some("o.note".into())),
                ],
            })
        );
        // Keys in another order than selected, and expressions as keys.
        let sql = "SELECT sum(o.amount) AS s, (o.id % 10) AS bucket, o.day FROM public.orders o GROUP BY o.day, (o.id % 10)";
        let Ok(Plan::Groups { keys, outputs, .. }) = analyze(sql) else {
            panic!("{sql}");
        };
        assert_eq!(keys, ["o.day", "o.id % 10"]);
        assert_eq!(
            outputs,
            [Output::Agg(Agg::Sum, Some("o.amount".into())), Output::Key(1), Output::Key(0)]
        );
    }

    #[test]
    fn reasons() {
        let cases = [
            (
                "SELECT orders.day, count(DISTINCT orders.id) AS count FROM public.orders GROUP BY orders.day",
                "DISTINCT and ORDER BY in aggregates",
            ),
            (
                "SELECT orders.day, sum(orders.amount) / count(*) AS a FROM public.orders GROUP BY orders.day",
                "only group keys",
            ),
            (
                "SELECT count(*) AS n FROM public.orders GROUP BY orders.day",
                "without orders.day in the select list",
            ),
            (
                "SELECT orders.day, string_agg(orders.note, ',') AS s FROM public.orders GROUP BY orders.day",
                "only group keys",
            ),
            (
                "SELECT orders.day, count(*) FILTER (WHERE orders.amount > 1) AS s FROM public.orders GROUP BY orders.day",
                "FILTER",
            ),
            (
                "SELECT orders.day, count(*) AS n FROM public.orders GROUP BY ROLLUP (orders.day)",
                "ROLLUP",
            ),
            ("SELECT count(*) AS count FROM public.orders", "aggregates (count)"),
            ("SELECT DISTINCT ON (orders.day) orders.id FROM public.orders", "DISTINCT ON"),
            ("SELECT DISTINCT count(*) AS n FROM public.orders", "aggregates (count)"),
            ("SELECT orders.id FROM public.orders LIMIT 10", "LIMIT"),
            ("SELECT orders.id FROM public.orders OFFSET 10", "LIMIT, OFFSET"),
            (
                "SELECT a.id FROM public.a LEFT JOIN (public.b JOIN public.c ON c.id = b.id) ON b.id = a.id",
                "parenthesized joins",
            ),
            ("SELECT o.id FROM public.orders o JOIN public.customers c USING (id)", "USING"),
            ("SELECT 1 AS one", "without FROM"),
            (
                "SELECT orders.id, row_number() OVER (ORDER BY orders.id) AS n FROM public.orders",
                "window functions",
            ),
            ("SELECT orders.id, count(*) OVER () AS n FROM public.orders", "window functions"),
            (
                "SELECT orders.id FROM public.orders WHERE orders.day > CURRENT_DATE",
                "CURRENT_DATE changes with time",
            ),
            (
                "SELECT orders.id FROM public.orders WHERE orders.id IN (SELECT 1)",
                "subqueries in WHERE",
            ),
            (
                "SELECT x.day FROM (SELECT DISTINCT orders.day FROM public.orders) x",
                "GROUP BY or DISTINCT in a subquery",
            ),
            (
                "SELECT x.id FROM public.a, LATERAL (SELECT b.id FROM public.b WHERE b.id = a.id) x",
                "LATERAL",
            ),
            (
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT x.n + 1 FROM x) SELECT x.n FROM x",
                "WITH RECURSIVE",
            ),
            ("SELECT a.id FROM public.a UNION SELECT b.id FROM public.b", "UNION"),
            ("SELECT a.id FROM public.a EXCEPT ALL SELECT b.id FROM public.b", "EXCEPT ALL"),
            (
                "SELECT a.id, count(*) AS n FROM public.a GROUP BY a.id UNION ALL SELECT b.id, 1 AS n FROM public.b",
                "UNION ALL of grouped",
            ),
            ("WITH x AS (SELECT 1 AS id) SELECT x.id FROM x", "without FROM"),
            ("SELECT g.g FROM generate_series(1, 3) g(g)", "table functions"),
            ("SELECT orders.* FROM public.orders", "*"),
            ("SELECT orders.id FROM public.orders HAVING true", "HAVING"),
            ("SELECT row_to_json(o.*) AS j FROM public.orders o", "whole-row"),
        ];
        for (sql, want) in cases {
            match analyze(sql) {
                Err(reason) => assert!(reason.contains(want), "{sql}: {reason}"),
                Ok(p) => panic!("{sql}: planned {p:?}"),
            }
        }
    }

    #[test]
    fn called_functions_are_listed_once() {
        let sql = "SELECT upper(o.note) AS u, \"MyFn\"(o.id) AS m FROM public.orders o WHERE random() > 0.5::double precision AND Upper(o.note) IN ('A', 'B')";
        assert_eq!(called_functions(sql), ["MyFn", "in", "random", "upper"]);
    }

    #[test]
    fn outer_joins_null_extend() {
        let cases = [
            ("SELECT a.x FROM public.a", vec![false]),
            ("SELECT a.x FROM public.a JOIN public.b ON b.k = a.k", vec![false, false]),
            ("SELECT a.x FROM public.a LEFT JOIN public.b ON b.k = a.k", vec![false, true]),
            ("SELECT a.x FROM public.a RIGHT JOIN public.b ON b.k = a.k", vec![true, false]),
            ("SELECT a.x FROM public.a FULL JOIN public.b ON b.k = a.k", vec![true, true]),
            (
                "SELECT a.x FROM public.a JOIN public.b ON b.k = a.k RIGHT JOIN public.c ON c.k = b.k LEFT JOIN public.d ON d.k = c.k",
                vec![true, true, false, true],
            ),
        ];
        for (sql, want) in cases {
            let Ok(Plan::Rows { branches }) = analyze(sql) else {
                panic!("{sql}");
            };
            assert_eq!(branches[0].from.null_extended(), want, "{sql}");
        }
    }

    #[test]
    fn column_references() {
        let cases = [
            ("o.amount", Some(("o", "amount"))),
            ("\"My Orders\".\"Amount\"", Some(("My Orders", "Amount"))),
            ("(o.amount)", Some(("o", "amount"))),
            ("amount", None),
            ("o.amount * 2", None),
            ("public.o.amount", None),
        ];
        for (e, want) in cases {
            let got = column_ref(e);
            assert_eq!(got.as_ref().map(|(r, c)| (r.as_str(), c.as_str())), want, "{e}");
        }
    }
}
