//! The database a client connected to. The server has one catalog of tables, whatever name a
//! client gives; `current_database()` and psql's `\l` (`pg_database`) answer with that name, as
//! PostgreSQL does, rather than the engine's internal catalog name.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{SessionConfig, SessionContext};

/// PostgreSQL's longest identifier (NAMEDATALEN - 1), to which it truncates database names.
const LONGEST_NAME: usize = 63;

/// The connected database's name, kept in the session's configuration (not a setting a client
/// can `SET`).
#[derive(Debug)]
struct ClientDatabase(String);

/// Makes `ctx` answer as database `name`: the client's startup `database`, or its user name
/// when it gave none (PostgreSQL's default), truncated as PostgreSQL truncates it.
pub fn connect(ctx: &SessionContext, name: &str) {
    let mut end = name.len().min(LONGEST_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = name[..end].to_owned();
    let value = ScalarValue::Utf8(Some(name.clone()));
    ctx.register_udf(create_udf(
        "current_database",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(value.clone()))),
    ));
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::new(ClientDatabase(name)));
}

/// The connected database's name in `config`, once a client connected.
pub fn of(config: &SessionConfig) -> Option<String> {
    config
        .get_extension::<ClientDatabase>()
        .map(|db| db.0.clone())
}

/// `pg_database`'s rows with the internal catalog's row renamed to the connected database (and
/// a row of that name that existed already left out).
pub(super) fn rename_in(
    batch: &RecordBatch,
    internal: &str,
    connected: &str,
) -> Result<RecordBatch> {
    let Some((index, _)) = batch.schema().column_with_name("datname") else {
        return Ok(batch.clone());
    };
    let names = cast(batch.column(index), &DataType::Utf8)?;
    let names = names.as_string::<i32>();
    let keep: BooleanArray = names
        .iter()
        .map(|n| Some(n != Some(connected) || connected == internal))
        .collect();
    let renamed: StringArray = names
        .iter()
        .map(|n| {
            if n == Some(internal) {
                Some(connected)
            } else {
                n
            }
        })
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[index] = cast(
        &(Arc::new(renamed) as ArrayRef),
        batch.column(index).data_type(),
    )?;
    let renamed = RecordBatch::try_new(batch.schema(), columns)?;
    Ok(filter_record_batch(&renamed, &keep)?)
}
