//! SQL that audiolake adds to DataFusion's: pgvector's distance functions and operators
//! ([`vector`]), pg_trgm's functions and `%` ([`trgm`]), the settings `SET` knows
//! ([`settings`]), and the PostgreSQL dialect that reads pgvector's `<+>` and `REINDEX INDEX`.
//!
//! Operators become function calls in [`OperatorPlanner`], where the operand types are known:
//! `<->`, `<=>`, `<#>` and `<+>` on vectors, `%` and `<%` on text.

pub mod settings;
pub mod trgm;
pub mod vector;

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::error::Result;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{Expr, ExprSchemable, ScalarUDF};
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr};
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use vector::Distance;

/// Every scalar function of this module.
pub fn functions() -> Vec<ScalarUDF> {
    let mut all = vector::vector_functions();
    all.extend(trgm::trgm_functions());
    all
}

/// Plans pgvector's and pg_trgm's operators as calls of this module's functions.
#[derive(Debug)]
pub struct OperatorPlanner {
    functions: Vec<Arc<ScalarUDF>>,
}

impl Default for OperatorPlanner {
    fn default() -> Self {
        Self {
            functions: functions().into_iter().map(Arc::new).collect(),
        }
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_list(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _)
    )
}

impl OperatorPlanner {
    fn call(&self, name: &str, left: Expr, right: Expr) -> Expr {
        let udf = self
            .functions
            .iter()
            .find(|f| f.name() == name)
            .expect("operator functions are registered");
        Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(udf), vec![left, right]))
    }
}

impl ExprPlanner for OperatorPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let types = || -> Result<(DataType, DataType)> {
            Ok((expr.left.get_type(schema)?, expr.right.get_type(schema)?))
        };
        let function = match &expr.op {
            BinaryOperator::LtDashGt => Some(Distance::L2.function_name()),
            BinaryOperator::Custom(op) if Distance::of_operator(op).is_some() => {
                Distance::of_operator(op).map(Distance::function_name)
            }
            // MySQL's null-safe equality unless an operand is a vector.
            BinaryOperator::Spaceship => {
                let (l, r) = types()?;
                (is_list(&l) || is_list(&r)).then(|| Distance::Cosine.function_name())
            }
            BinaryOperator::Modulo => {
                let (l, r) = types()?;
                (is_text(&l) && is_text(&r)).then_some("similarity_op")
            }
            BinaryOperator::Custom(op) if op == "<%" => Some("word_similarity_op"),
            _ => None,
        };
        Ok(match function {
            Some(name) => PlannerResult::Planned(self.call(name, expr.left, expr.right)),
            None => PlannerResult::Original(expr),
        })
    }
}

/// PostgreSQL's dialect, plus pgvector's `<+>`, which sqlparser reads as `<` and `+`, and
/// `REINDEX INDEX name`, which it does not read.
#[derive(Debug, Default)]
pub struct AudiolakeDialect(PostgreSqlDialect);

const L1_OPERATOR: &str = "<+>";

/// Whether the next tokens are `<`, `+`, `>` written without spaces.
fn at_l1_operator(parser: &Parser<'_>) -> bool {
    let (lt, plus, gt) = (
        parser.peek_nth_token_ref(0),
        parser.peek_nth_token_ref(1),
        parser.peek_nth_token_ref(2),
    );
    lt.token == Token::Lt
        && plus.token == Token::Plus
        && gt.token == Token::Gt
        && lt.span.end == plus.span.start
        && plus.span.end == gt.span.start
}

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> $ret { self.0.$name($($arg),*) })*
    };
}

impl Dialect for AudiolakeDialect {
    /// sqlparser asks `dialect_of!(... is PostgreSqlDialect)` in many places.
    fn dialect(&self) -> std::any::TypeId {
        std::any::TypeId::of::<PostgreSqlDialect>()
    }

    fn get_next_precedence(&self, parser: &Parser<'_>) -> Option<Result<u8, ParserError>> {
        if at_l1_operator(parser) {
            return Some(Ok(self.prec_value(Precedence::PgOther)));
        }
        self.0.get_next_precedence(parser)
    }

    /// `REINDEX INDEX name` (see [`crate::index::ddl::parse_reindex`]).
    fn parse_statement(
        &self,
        parser: &mut Parser<'_>,
    ) -> Option<std::result::Result<datafusion::sql::sqlparser::ast::Statement, ParserError>> {
        if !parser.parse_keyword(Keyword::REINDEX) {
            return None;
        }
        Some(crate::index::ddl::parse_reindex(parser))
    }

    fn parse_infix(
        &self,
        parser: &mut Parser<'_>,
        expr: &SqlExpr,
        precedence: u8,
    ) -> Option<Result<SqlExpr, ParserError>> {
        if !at_l1_operator(parser) {
            return None;
        }
        for _ in 0..3 {
            parser.advance_token();
        }
        Some(
            parser
                .parse_subexpr(precedence)
                .map(|right| SqlExpr::BinaryOp {
                    left: Box::new(expr.clone()),
                    op: BinaryOperator::Custom(L1_OPERATOR.to_string()),
                    right: Box::new(right),
                }),
        )
    }

    delegate! {
        identifier_quote_style(identifier: &str) -> Option<char>;
        is_delimited_identifier_start(ch: char) -> bool;
        is_identifier_start(ch: char) -> bool;
        is_identifier_part(ch: char) -> bool;
        supports_unicode_string_literal() -> bool;
        is_reserved_for_identifier(kw: Keyword) -> bool;
        is_custom_operator_part(ch: char) -> bool;
        supports_filter_during_aggregation() -> bool;
        supports_group_by_expr() -> bool;
        prec_value(prec: Precedence) -> u8;
        allow_extract_custom() -> bool;
        allow_extract_single_quotes() -> bool;
        supports_create_index_with_clause() -> bool;
        supports_explain_with_utility_options() -> bool;
        supports_listen_notify() -> bool;
        supports_factorial_operator() -> bool;
        supports_bitwise_shift_operators() -> bool;
        supports_comment_on() -> bool;
        supports_load_extension() -> bool;
        supports_named_fn_args_with_colon_operator() -> bool;
        supports_named_fn_args_with_expr_name() -> bool;
        supports_empty_projections() -> bool;
        supports_nested_comments() -> bool;
        supports_string_escape_constant() -> bool;
        supports_numeric_literal_underscores() -> bool;
        supports_array_typedef_with_brackets() -> bool;
        supports_geometric_types() -> bool;
        supports_set_names() -> bool;
        supports_alter_column_type_using() -> bool;
        supports_notnull_operator() -> bool;
        supports_interval_options() -> bool;
        supports_insert_table_alias() -> bool;
        supports_create_table_like_parenthesized() -> bool;
        supports_select_wildcard_with_alias() -> bool;
        supports_comma_separated_trim() -> bool;
        supports_xml_expressions() -> bool;
        supports_comment_optimizer_hint() -> bool;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> String {
        Parser::parse_sql(&AudiolakeDialect::default(), sql).unwrap()[0].to_string()
    }

    #[test]
    fn reads_every_pgvector_operator() {
        assert_eq!(
            parse("SELECT a <+> b, a <-> b, a <=> b, a <#> b FROM t"),
            "SELECT a <+> b, a <-> b, a <=> b, a <#> b FROM t"
        );
        // `<` and `+` apart stay a comparison with a signed number.
        assert_eq!(parse("SELECT a < +1 FROM t"), "SELECT a < +1 FROM t");
        assert_eq!(
            parse("SELECT x FROM t ORDER BY v <+> '[1,2]' LIMIT 3"),
            "SELECT x FROM t ORDER BY v <+> '[1,2]' LIMIT 3"
        );
    }
}
