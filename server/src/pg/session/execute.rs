//! A query run from its logical plan: parameters bound, the plan analysed and optimised once
//! (or taken optimised from the plan cache) and made physical without optimising it again (as
//! `SessionState::create_physical_plan` would), on the session's kept state and task context
//! (see `snapshot`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::QueryResponse;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use futures::{stream, StreamExt};

use super::super::compat;
use super::snapshot::Snapshot;

/// `plan` analysed and optimised by the session's rules.
pub(super) fn optimize(snapshot: &Snapshot, plan: &LogicalPlan) -> PgWireResult<LogicalPlan> {
    snapshot.state.optimize(plan).map_err(api)
}

/// The rows of `optimized` (a query, optimised, its parameters bound), encoded in `format`.
pub(super) async fn query(
    snapshot: &Snapshot,
    optimized: &LogicalPlan,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<QueryResponse> {
    let state = &snapshot.state;
    let physical = state
        .query_planner()
        .create_physical_plan(optimized, state)
        .await
        .map_err(api)?;
    let fields = Arc::new(compat::client_fields(arrow_schema_to_pg_fields(
        optimized.schema().as_arrow(),
        format,
        Some(options),
    )?));
    let batches = execute_stream(physical, Arc::clone(&snapshot.task)).map_err(api)?;
    let encoding = Arc::clone(&fields);
    let rows = batches
        .map(move |batch| {
            let rows: Box<dyn Iterator<Item = _> + Send + Sync> = match batch {
                Ok(batch) => encode_recordbatch(Arc::clone(&encoding), batch),
                Err(e) => Box::new(std::iter::once(Err(api(e)))),
            };
            stream::iter(rows)
        })
        .flatten();
    Ok(QueryResponse::new(fields, rows))
}

/// `plan` with the portal's parameters in place of its placeholders, decoded as the client
/// typed them or else as `types` (what the server described) say, and converted to the types
/// the plan infers.
pub(super) fn bind<S: Clone>(
    portal: &Portal<S>,
    plan: &LogicalPlan,
    types: &[Type],
) -> PgWireResult<LogicalPlan> {
    let inferred = ordered(plan.get_parameter_types().map_err(api)?);
    let inferred: Vec<Option<&DataType>> = inferred.iter().map(Option::as_ref).collect();
    let types: Vec<Option<&Type>> = types.iter().map(Some).collect();
    let values: ParamValues = deserialize_parameters_with_server_types(portal, &inferred, &types)?;
    plan.clone()
        .replace_params_with_values(&values)
        .map_err(api)
}

/// The types of `$1`, `$2`, ... in that order, as the server describes them.
fn ordered(types: HashMap<String, Option<DataType>>) -> Vec<Option<DataType>> {
    let mut types: Vec<(u32, Option<DataType>)> = types
        .into_iter()
        .map(|(id, t)| (id.trim_start_matches('$').parse().unwrap_or(u32::MAX), t))
        .collect();
    types.sort_by_key(|(position, _)| *position);
    types.into_iter().map(|(_, t)| t).collect()
}

fn api(e: DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}
