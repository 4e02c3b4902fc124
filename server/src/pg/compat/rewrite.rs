//! Rewrites of parsed statements, applied before datafusion-postgres sees them, for PostgreSQL
//! semantics that DataFusion lacks. Each rewrite keeps PostgreSQL's answer; none guesses.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, ObjectName, Query, Select,
    SelectItem, SetExpr, Statement, TableFactor, UnaryOperator, Value, ValueWithSpan, Visit,
    VisitMut, Visitor, VisitorMut,
};

/// Applies every rewrite to `statement`; true when it changed.
pub fn rewrite(statement: &mut Statement) -> bool {
    let mut rewriter = Rewriter { changed: false };
    let _ = statement.visit(&mut rewriter);
    // Only the result columns' types reach the client.
    if let Statement::Query(query) = statement {
        if let SetExpr::Select(select) = query.body.as_mut() {
            rewriter.changed |= int4_literals(select);
        }
    }
    rewriter.changed
}

struct Rewriter {
    changed: bool,
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        self.changed |= field_access(expr)
            | regproc_literal(expr)
            | like_escape(expr)
            | expand_array(expr)
            | subscripts(expr)
            | l1_operator(expr);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        // Only in filters: in the select list datafusion-postgres already replaces correlated
        // subqueries by NULL (psql's `\d` relies on it), and DataFusion cannot run most of them.
        if let SetExpr::Select(select) = query.body.as_mut() {
            if let Some(selection) = select.selection.as_mut() {
                struct Filters(bool);
                impl VisitorMut for Filters {
                    type Break = ();
                    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
                        self.0 |= single_row_subquery(expr);
                        ControlFlow::Continue(())
                    }
                }
                let mut filters = Filters(false);
                let _ = selection.visit(&mut filters);
                self.changed |= filters.0;
            }
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                {
                    self.changed |= conditional_catalog_lookup(e);
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Constant integer arithmetic (`SELECT 1`, `SELECT 2 + 3 AS five`) is int4 in PostgreSQL;
/// DataFusion makes every integer literal int8, and clients such as node-postgres then return a
/// string instead of a number. Such result columns are cast to int4 when every literal fits (an
/// overflow then fails, as in PostgreSQL). An unnamed one gets PostgreSQL's name `?column?`, but
/// only when it is the only one: DataFusion refuses two columns of the same name.
fn int4_literals(select: &mut Select) -> bool {
    let unnamed = select
        .projection
        .iter()
        .filter(|item| matches!(item, SelectItem::UnnamedExpr(e) if is_int4_constant(e)))
        .count();
    let mut changed = false;
    for item in &mut select.projection {
        let int4 = |expr: &Expr| Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(expr.clone()),
            data_type: DataType::Int(None),
            array: false,
            format: None,
        };
        match item {
            SelectItem::UnnamedExpr(expr) if unnamed == 1 && is_int4_constant(expr) => {
                *item = SelectItem::ExprWithAlias {
                    expr: int4(expr),
                    alias: Ident::with_quote('"', "?column?"),
                };
                changed = true;
            }
            SelectItem::ExprWithAlias { expr, .. } if is_int4_constant(expr) => {
                *expr = int4(expr);
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

/// Integer literals that fit in int4, combined by arithmetic.
fn is_int4_constant(expr: &Expr) -> bool {
    match expr {
        Expr::Value(ValueWithSpan {
            value: Value::Number(n, false),
            ..
        }) => n.parse::<i32>().is_ok(),
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        }
        | Expr::Nested(expr) => is_int4_constant(expr),
        Expr::BinaryOp {
            left,
            op:
                BinaryOperator::Plus
                | BinaryOperator::Minus
                | BinaryOperator::Multiply
                | BinaryOperator::Divide
                | BinaryOperator::Modulo,
            right,
        } => is_int4_constant(left) && is_int4_constant(right),
        _ => false,
    }
}

/// `(expression).field`, which pgJDBC writes for `(_pg_expandarray(i.indkey)).n`: DataFusion
/// reads fields only of named columns (`a.b`), so this becomes `get_field(expression, 'field')`.
fn field_access(expr: &mut Expr) -> bool {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return false;
    };
    let mut names = Vec::new();
    for access in access_chain.iter() {
        match access {
            AccessExpr::Dot(Expr::Identifier(name)) => names.push(name.value.clone()),
            _ => return false,
        }
    }
    let mut result = root.as_ref().clone();
    for name in names {
        result = function(
            "get_field",
            [result, Expr::value(Value::SingleQuotedString(name))],
        );
    }
    *expr = result;
    true
}

/// `'pg_catalog.array_in'::regproc`, as pgJDBC compares `typinput` with it. PostgreSQL turns
/// the name into the function's oid; datafusion-postgres's catalog holds such columns as the
/// function's name, so the literal becomes that name (without the schema), which also is how
/// PostgreSQL prints a regproc.
fn regproc_literal(expr: &mut Expr) -> bool {
    let Expr::Cast {
        expr: inner,
        data_type: DataType::Custom(type_name, modifiers),
        ..
    } = expr
    else {
        return false;
    };
    let is_regproc = modifiers.is_empty()
        && type_name.0.len() == 1
        && type_name.to_string().eq_ignore_ascii_case("regproc");
    let Expr::Value(ValueWithSpan {
        value: Value::SingleQuotedString(name),
        ..
    }) = inner.as_ref()
    else {
        return false;
    };
    if !is_regproc {
        return false;
    }
    let name = name.strip_prefix("pg_catalog.").unwrap_or(name).to_owned();
    *expr = Expr::value(Value::SingleQuotedString(name));
    true
}

/// `a LIKE p ESCAPE '/'`, as SQLAlchemy writes: DataFusion escapes only with a backslash, so
/// the pattern goes through PostgreSQL's own `like_escape(p, '/')`, which rewrites it for the
/// backslash.
fn like_escape(expr: &mut Expr) -> bool {
    let (Expr::Like {
        pattern,
        escape_char,
        ..
    }
    | Expr::ILike {
        pattern,
        escape_char,
        ..
    }) = expr
    else {
        return false;
    };
    let Some(escape) = escape_char.take() else {
        return false;
    };
    if matches!(&escape.value, Value::SingleQuotedString(e) if e == "\\") {
        *escape_char = Some(escape);
        return false;
    }
    let args = [pattern.as_ref().clone(), Expr::Value(escape)];
    **pattern = function("like_escape", args);
    true
}

/// pgvector's `a <+> b`, which audiolake's parser reads but datafusion-postgres's does not:
/// `l1_distance(a, b)`.
fn l1_operator(expr: &mut Expr) -> bool {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Custom(op),
        right,
    } = expr
    else {
        return false;
    };
    if op != "<+>" {
        return false;
    }
    *expr = function(
        "l1_distance",
        [left.as_ref().clone(), right.as_ref().clone()],
    );
    true
}

/// A call of the function `name`.
fn function(name: &str, args: impl IntoIterator<Item = Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// `_pg_expandarray(a)` is set-returning in PostgreSQL; ours returns a list (see
/// `functions::ExpandArray`), so each call is unnested.
fn expand_array(expr: &mut Expr) -> bool {
    let Expr::Function(call) = expr else {
        return false;
    };
    let is_expand = call
        .name
        .0
        .last()
        .is_some_and(|part| part.to_string().eq_ignore_ascii_case("_pg_expandarray"));
    if !is_expand {
        return false;
    }
    *expr = function("unnest", [expr.clone()]);
    true
}

/// `generate_subscripts(a, 1)`, a set-returning function SQLAlchemy runs beside `unnest(a)`,
/// becomes `unnest(generate_series(1, array_length(a, 1)))`: the same positions, in lockstep with
/// the other `unnest`s of the select list, and no rows for an empty or NULL array.
fn subscripts(expr: &mut Expr) -> bool {
    let Expr::Function(call) = expr else {
        return false;
    };
    let is_subscripts = call
        .name
        .0
        .last()
        .is_some_and(|part| part.to_string().eq_ignore_ascii_case("generate_subscripts"));
    let FunctionArguments::List(list) = &call.args else {
        return false;
    };
    let args: Vec<Expr> = list
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    // Only the first dimension: audiolake's arrays have one.
    let one = |e: &Expr| matches!(e, Expr::Value(ValueWithSpan { value: Value::Number(n, _), .. }) if n == "1");
    let [array, dimension] = &args[..] else {
        return false;
    };
    if !is_subscripts || list.args.len() != 2 || !one(dimension) {
        return false;
    }
    let length = function("array_length", [array.clone(), dimension.clone()]);
    let series = function("generate_series", [dimension.clone(), length]);
    *expr = function("unnest", [series]);
    true
}

/// A correlated scalar subquery on the catalog `(SELECT e FROM pg_x WHERE w)` in a filter, as
/// pgJDBC's `getTypeInfo` writes: DataFusion runs only aggregated ones, so `e` becomes `single_value(e)`, the
/// row's value or NULL for no row. Catalog lookups are by key, so several rows do not happen
/// there; on user tables, where they could, DataFusion's error is kept.
fn single_row_subquery(expr: &mut Expr) -> bool {
    let Expr::Subquery(query) = expr else {
        return false;
    };
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
    {
        return false;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    let ungrouped = matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if select.having.is_some()
        || !ungrouped
        || select.distinct.is_some()
        || !reads_catalog_only(select)
        || !is_correlated(select)
    {
        return false;
    }
    let [SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }] =
        &mut select.projection[..]
    else {
        return false;
    };
    if has_aggregate(value) {
        return false;
    }
    *value = function("single_value", [value.clone()]);
    true
}

/// `CASE WHEN c THEN (SELECT ... FROM pg_x WHERE <correlated>) ELSE NULL END` in the select
/// list, as SQLAlchemy's `get_columns` looks up defaults (`pg_attrdef`), identity options
/// (`pg_sequence`) and collations: DataFusion cannot run a correlated subquery inside `CASE`.
/// When every branch is NULL or such a lookup the whole `CASE` becomes NULL, as datafusion-postgres
/// does for correlated subqueries directly in the select list. audiolake has no column defaults,
/// sequences or non-default collations, so PostgreSQL would answer NULL there too.
fn conditional_catalog_lookup(expr: &mut Expr) -> bool {
    let Expr::Case {
        conditions,
        else_result,
        ..
    } = expr
    else {
        return false;
    };
    let is_null = |e: &Expr| matches!(e, Expr::Value(v) if v.value == Value::Null);
    let is_lookup = |e: &Expr| match e {
        Expr::Subquery(query) => match query.body.as_ref() {
            SetExpr::Select(select) => reads_catalog_only(select) && is_correlated(select),
            _ => false,
        },
        _ => false,
    };
    let lookups = conditions.iter().filter(|w| is_lookup(&w.result)).count();
    let rest_null = conditions
        .iter()
        .all(|w| is_lookup(&w.result) || is_null(&w.result))
        && else_result.as_deref().is_none_or(is_null);
    if lookups == 0 || !rest_null {
        return false;
    }
    *expr = Expr::Value(Value::Null.into());
    true
}

/// PostgreSQL's aggregate functions, by name.
const AGGREGATES: &[&str] = &[
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bool_and",
    "bool_or",
    "count",
    "every",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "max",
    "min",
    "string_agg",
    "sum",
];

/// Whether `expr` calls an aggregate (then the subquery returns one row anyway, and DataFusion
/// accepts it as it is).
fn has_aggregate(expr: &Expr) -> bool {
    struct Calls(bool);
    impl Visitor for Calls {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = expr {
                let name = f.name.0.last().map(|p| p.to_string().to_lowercase());
                if name.is_some_and(|n| AGGREGATES.contains(&n.as_str())) {
                    self.0 = true;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut calls = Calls(false);
    let _ = expr.visit(&mut calls);
    calls.0
}

/// Whether every table `select` reads is a pg_catalog or information_schema table.
fn reads_catalog_only(select: &Select) -> bool {
    !select.from.is_empty()
        && select.from.iter().all(|table| {
            std::iter::once(&table.relation)
                .chain(table.joins.iter().map(|j| &j.relation))
                .all(|factor| match factor {
                    TableFactor::Table { name, .. } => {
                        let parts: Vec<String> = name
                            .0
                            .iter()
                            .map(|p| p.to_string().to_lowercase())
                            .collect();
                        match &parts[..] {
                            [.., schema, _] => {
                                schema == "pg_catalog" || schema == "information_schema"
                            }
                            [table] => table.starts_with("pg_"),
                            [] => false,
                        }
                    }
                    _ => false,
                })
        })
}

/// Whether `select` refers to a table qualifier that its own FROM does not define.
fn is_correlated(select: &Select) -> bool {
    let mut own = HashSet::new();
    for table in &select.from {
        for factor in
            std::iter::once(&table.relation).chain(table.joins.iter().map(|j| &j.relation))
        {
            if let TableFactor::Table { name, alias, .. } = factor {
                let key = match alias {
                    Some(alias) => alias.name.value.clone(),
                    None => name.0.last().map(|p| p.to_string()).unwrap_or_default(),
                };
                own.insert(key.to_lowercase());
            }
        }
    }
    struct Outer<'a> {
        own: &'a HashSet<String>,
        found: bool,
    }
    impl Visitor for Outer<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::CompoundIdentifier(parts) = expr {
                if parts.len() >= 2 && !self.own.contains(&parts[0].value.to_lowercase()) {
                    self.found = true;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut outer = Outer {
        own: &own,
        found: false,
    };
    let _ = select.visit(&mut outer);
    outer.found
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> Option<String> {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut statement).then(|| statement.to_string())
    }

    #[test]
    fn integer_constants_become_int4() {
        assert_eq!(
            rewritten("SELECT 1").as_deref(),
            Some(r#"SELECT CAST(1 AS INT) AS "?column?""#)
        );
        assert_eq!(
            rewritten("SELECT 1 AS one, (2 + -3) * 4 AS n, 'a'").as_deref(),
            Some("SELECT CAST(1 AS INT) AS one, CAST((2 + -3) * 4 AS INT) AS n, 'a'")
        );
        assert_eq!(rewritten("SELECT 3000000000"), None);
        assert_eq!(rewritten("SELECT 1, 2"), None);
        assert_eq!(rewritten("SELECT 1.5"), None);
        assert_eq!(rewritten("SELECT a + 1 AS b FROM t"), None);
        // Only the result columns.
        assert_eq!(
            rewritten("SELECT a FROM t WHERE a IN (SELECT 1 AS one)"),
            None
        );
    }

    #[test]
    fn correlated_catalog_lookups_in_case_become_null() {
        assert_eq!(
            rewritten(
                "SELECT a.attname, CASE WHEN a.atthasdef THEN (SELECT pg_get_expr(d.adbin, \
                 d.adrelid) FROM pg_catalog.pg_attrdef AS d WHERE d.adrelid = a.attrelid) \
                 ELSE NULL END AS \"default\" FROM pg_catalog.pg_attribute AS a"
            )
            .as_deref(),
            Some("SELECT a.attname, NULL AS \"default\" FROM pg_catalog.pg_attribute AS a")
        );
        // Uncorrelated, on user tables, or with another value: left alone.
        assert_eq!(
            rewritten(
                "SELECT CASE WHEN a.x THEN (SELECT c.y FROM pg_class AS c WHERE c.oid = a.r) \
                 ELSE 'z' END AS m FROM pg_attribute AS a"
            ),
            None
        );
        assert_eq!(
            rewritten("SELECT CASE WHEN x THEN (SELECT max(y) FROM pg_class) END AS m FROM t"),
            None
        );
        assert_eq!(
            rewritten(
                "SELECT CASE WHEN t.x THEN (SELECT u.y FROM u WHERE u.k = t.k) END AS m FROM t"
            ),
            None
        );
    }

    #[test]
    fn regproc_literal_becomes_the_function_name() {
        assert_eq!(
            rewritten("SELECT typinput = 'pg_catalog.array_in'::regproc AS a FROM pg_type")
                .as_deref(),
            Some("SELECT typinput = 'array_in' AS a FROM pg_type")
        );
    }

    #[test]
    fn like_with_another_escape_goes_through_like_escape() {
        assert_eq!(
            rewritten("SELECT n FROM ns WHERE n NOT LIKE 'pg/_' || '%' ESCAPE '/'").as_deref(),
            Some("SELECT n FROM ns WHERE n NOT LIKE like_escape('pg/_' || '%', '/')")
        );
        assert_eq!(
            rewritten("SELECT n FROM ns WHERE n LIKE 'a\\_%' ESCAPE '\\'"),
            None
        );
    }

    #[test]
    fn subscripts_become_a_series() {
        assert_eq!(
            rewritten("SELECT unnest(i.indkey) AS k, generate_subscripts(i.indkey, 1) AS o FROM i")
                .as_deref(),
            Some(
                "SELECT unnest(i.indkey) AS k, unnest(generate_series(1, \
                 array_length(i.indkey, 1))) AS o FROM i"
            )
        );
    }

    #[test]
    fn field_of_an_expression_becomes_get_field() {
        assert_eq!(
            rewritten("SELECT (_pg_expandarray(i.indkey)).n AS k, (r.keys).x FROM i, r").as_deref(),
            Some(
                "SELECT get_field((unnest(_pg_expandarray(i.indkey))), 'n') AS k, \
                 get_field((r.keys), 'x') FROM i, r"
            )
        );
    }

    #[test]
    fn correlated_subquery_takes_its_single_value() {
        assert_eq!(
            rewritten(
                "SELECT t.typname FROM pg_type t WHERE t.typrelid = 0 OR \
                 (SELECT c.relkind = 'c' FROM pg_class c WHERE c.oid = t.typrelid)"
            )
            .as_deref(),
            Some(
                "SELECT t.typname FROM pg_type t WHERE t.typrelid = 0 OR \
                 (SELECT single_value(c.relkind = 'c') FROM pg_class c WHERE c.oid = t.typrelid)"
            )
        );
        assert_eq!(
            rewritten(
                "SELECT (SELECT d.x FROM pg_catalog.pg_attrdef d WHERE d.id = a.id) AS x FROM a"
            ),
            None
        );
        // On user tables DataFusion's error stays.
        assert_eq!(
            rewritten("SELECT a.x FROM a WHERE (SELECT d.x FROM d WHERE d.id = a.id)"),
            None
        );
    }

    #[test]
    fn other_subqueries_are_left_alone() {
        // Uncorrelated: DataFusion runs it, and fails on more than one row as PostgreSQL does.
        assert_eq!(
            rewritten("SELECT a FROM t WHERE (SELECT c.x FROM c WHERE c.id = 1)"),
            None
        );
        // Aggregated: one row by construction.
        assert_eq!(
            rewritten("SELECT a FROM t WHERE (SELECT max(c.x) FROM c WHERE c.id = t.id)"),
            None
        );
    }
}
