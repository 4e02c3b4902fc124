//! pg_trgm's functions: `similarity`, `word_similarity`, `show_trgm`, and `similarity_op` and
//! `word_similarity_op` behind the `%` and `<%` operators, which compare with the session's
//! `pg_trgm.similarity_threshold` and `pg_trgm.word_similarity_threshold`.

use std::sync::Arc;

use audiolake_udf::trgm;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, ListBuilder, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Similarity,
    WordSimilarity,
    ShowTrgm,
    Similar,
    WordSimilar,
}

/// Every pg_trgm function.
pub fn trgm_functions() -> Vec<ScalarUDF> {
    [
        Op::Similarity,
        Op::WordSimilarity,
        Op::ShowTrgm,
        Op::Similar,
        Op::WordSimilar,
    ]
    .into_iter()
    .map(|op| ScalarUDF::new_from_impl(TrgmFunction::new(op)))
    .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TrgmFunction {
    op: Op,
    signature: Signature,
}

impl TrgmFunction {
    fn new(op: Op) -> Self {
        let arity = if op == Op::ShowTrgm { 1 } else { 2 };
        Self {
            op,
            signature: Signature::string(arity, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TrgmFunction {
    fn name(&self) -> &str {
        match self.op {
            Op::Similarity => "similarity",
            Op::WordSimilarity => "word_similarity",
            Op::ShowTrgm => "show_trgm",
            Op::Similar => "similarity_op",
            Op::WordSimilar => "word_similarity_op",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.op {
            Op::Similarity | Op::WordSimilarity => DataType::Float32,
            Op::ShowTrgm => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            Op::Similar | Op::WordSimilar => DataType::Boolean,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let texts: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| cast(&a.to_array(rows)?, &DataType::Utf8).map_err(Into::into))
            .collect::<Result<_>>()?;
        let a = texts[0].as_string::<i32>();
        let pair = |row: usize| {
            let b = texts[1].as_string::<i32>();
            (!a.is_null(row) && !b.is_null(row)).then(|| (a.value(row), b.value(row)))
        };
        let out: ArrayRef = match self.op {
            Op::Similarity => Arc::new(Float32Array::from_iter(
                (0..rows).map(|r| pair(r).map(|(x, y)| trgm::similarity(x, y))),
            )),
            Op::WordSimilarity => Arc::new(Float32Array::from_iter(
                (0..rows).map(|r| pair(r).map(|(x, y)| trgm::word_similarity(x, y))),
            )),
            Op::Similar => {
                let threshold = settings::trgm_threshold(&args.config_options, false)?;
                Arc::new(BooleanArray::from_iter(
                    (0..rows).map(|r| pair(r).map(|(x, y)| trgm::similar(x, y, threshold))),
                ))
            }
            Op::WordSimilar => {
                let threshold = settings::trgm_threshold(&args.config_options, true)?;
                Arc::new(BooleanArray::from_iter((0..rows).map(|r| {
                    pair(r).map(|(x, y)| trgm::word_similar(x, y, threshold))
                })))
            }
            Op::ShowTrgm => {
                let mut builder = ListBuilder::new(StringBuilder::new());
                for row in 0..rows {
                    if a.is_null(row) {
                        builder.append(false);
                    } else {
                        for t in trgm::show_trgm(a.value(row)) {
                            builder.values().append_value(t);
                        }
                        builder.append(true);
                    }
                }
                Arc::new(builder.finish())
            }
        };
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}
