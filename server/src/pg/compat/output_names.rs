//! Result columns of one name. PostgreSQL allows `SELECT 1, 1` or `SELECT x, x FROM t`;
//! DataFusion refuses a projection whose names repeat. A statement refused for that is planned
//! again with every top-level select item aliased `name\0position`, and the server sends each
//! column under the part before the NUL: a client cannot send a NUL inside a query, so no name
//! of its own is ever cut.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{Expr, Ident, SelectItem, SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::pgwire::api::results::{FieldInfo, Response};

/// Whether `message` is DataFusion's refusal of repeated result names.
pub fn is_repeated_name_error(message: &str) -> bool {
    message.contains("Projections require unique expression names")
}

/// `sql`, one statement, with its select items aliased as above; `None` for several
/// statements (some may have run already) or for one without a select list to alias.
pub fn alias_repeated_names_in(sql: &str) -> Option<String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    match statements.as_mut_slice() {
        [statement] => alias_repeated_names(statement).then(|| statement.to_string()),
        _ => None,
    }
}

/// Aliases each item of `statement`'s outermost select list as above; false when it has no
/// such list (not a query, or a wildcard-only one) and nothing changed.
fn alias_repeated_names(statement: &mut Statement) -> bool {
    let Statement::Query(query) = statement else {
        return false;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    let mut changed = false;
    for (position, item) in select.projection.iter_mut().enumerate() {
        let (expr, name) = match item {
            SelectItem::UnnamedExpr(expr) => {
                let name = column_name(expr);
                (expr.clone(), name)
            }
            SelectItem::ExprWithAlias { expr, alias } => (expr.clone(), alias.value.clone()),
            _ => continue,
        };
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: Ident::with_quote('"', format!("{name}\0{position}")),
        };
        changed = true;
    }
    changed
}

/// The name PostgreSQL gives an unaliased select item: a column's name, a function's name, the
/// inner name of a cast, `case` and `array`, else `?column?`.
fn column_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(ident) => folded(ident),
        Expr::CompoundIdentifier(parts) => parts.last().map(folded).unwrap_or_default(),
        Expr::Function(function) => function
            .name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .map(folded)
            .unwrap_or_else(|| "?column?".to_owned()),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => column_name(expr),
        Expr::Case { .. } => "case".to_owned(),
        Expr::Array(_) => "array".to_owned(),
        _ => "?column?".to_owned(),
    }
}

fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// `name` as the client sees it: up to the NUL that [`alias_repeated_names`] added.
fn client_name(name: &str) -> Option<&str> {
    name.split_once('\0').map(|(name, _)| name)
}

/// `fields` with the names the client sees.
pub fn client_fields(fields: Vec<FieldInfo>) -> Vec<FieldInfo> {
    if !fields.iter().any(|f| client_name(f.name()).is_some()) {
        return fields;
    }
    fields
        .into_iter()
        .map(|f| match client_name(f.name()) {
            Some(name) => FieldInfo::new(
                name.to_owned(),
                f.table_id(),
                f.column_id(),
                f.datatype().clone(),
                f.format(),
            )
            .with_format_options(Arc::clone(f.format_options()))
            .with_type_size(f.type_size())
            .with_type_modifier(f.type_modifier()),
            None => f,
        })
        .collect()
}

/// `response` with the names the client sees.
pub fn client_response(response: Response) -> Response {
    match response {
        Response::Query(mut query) => {
            let fields = client_fields(query.row_schema.as_ref().clone());
            query.row_schema = Arc::new(fields);
            Response::Query(query)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::pgwire::api::results::FieldFormat;
    use datafusion_postgres::pgwire::api::Type;

    fn aliased(sql: &str) -> Option<String> {
        alias_repeated_names_in(sql)
    }

    #[test]
    fn every_top_level_item_gets_its_postgresql_name_and_position() {
        assert_eq!(
            aliased("SELECT 1, 1, t.X, \"Y\", l2_distance(a, b) AS d, CAST(z AS int), *, abs(-1) FROM t"),
            Some(
                "SELECT 1 AS \"?column?\u{0}0\", 1 AS \"?column?\u{0}1\", t.X AS \"x\u{0}2\", \
                 \"Y\" AS \"Y\u{0}3\", l2_distance(a, b) AS \"d\u{0}4\", CAST(z AS INT) AS \
                 \"z\u{0}5\", *, abs(-1) AS \"abs\u{0}7\" FROM t"
                    .to_owned()
            )
        );
        assert_eq!(aliased("INSERT INTO t VALUES (1)"), None);
        assert_eq!(aliased("SELECT 1 UNION SELECT 2"), None);
        assert_eq!(aliased("SELECT 1, 1; SELECT 2"), None);
    }

    #[test]
    fn clients_see_the_name_before_the_nul() {
        let field =
            |name: &str| FieldInfo::new(name.into(), None, None, Type::INT4, FieldFormat::Text);
        let fields = client_fields(vec![field("x\u{0}0"), field("x\u{0}1"), field("y")]);
        let names: Vec<&str> = fields.iter().map(FieldInfo::name).collect();
        assert_eq!(names, ["x", "x", "y"]);
        assert!(is_repeated_name_error(
            "Error during planning: Projections require unique expression names but the \
             expression \"Int64(1)\" at position 0 and \"Int64(1)\" at position 1 have the same name"
        ));
    }
}
