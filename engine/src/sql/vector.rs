//! pgvector's distance functions on `float4[]` (or any numeric list, fixed-size or not, or
//! pgvector's text form `'[1,2,3]'`): `l2_distance`, `cosine_distance`, `inner_product`,
//! `vector_negative_inner_product` and `l1_distance`, plus `vector_dims` and `l2_norm`.
//! NULL in, NULL out; vectors of different lengths fail the query with pgvector's message.

use std::sync::Arc;

use audiolake_udf::vector::{self, DimensionMismatch};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array, Float64Array, Int32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The distance functions, each named as in pgvector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distance {
    L2,
    Cosine,
    InnerProduct,
    NegativeInnerProduct,
    L1,
}

impl Distance {
    pub const ALL: [Distance; 5] = [
        Distance::L2,
        Distance::Cosine,
        Distance::InnerProduct,
        Distance::NegativeInnerProduct,
        Distance::L1,
    ];

    pub fn function_name(self) -> &'static str {
        match self {
            Distance::L2 => "l2_distance",
            Distance::Cosine => "cosine_distance",
            Distance::InnerProduct => "inner_product",
            Distance::NegativeInnerProduct => "vector_negative_inner_product",
            Distance::L1 => "l1_distance",
        }
    }

    /// The distance a pgvector operator stands for (`<->`, `<=>`, `<#>`, `<+>`).
    pub fn of_operator(op: &str) -> Option<Distance> {
        match op {
            "<->" => Some(Distance::L2),
            "<=>" => Some(Distance::Cosine),
            "<#>" => Some(Distance::NegativeInnerProduct),
            "<+>" => Some(Distance::L1),
            _ => None,
        }
    }

    /// The distance of a function name, for recognising `ORDER BY` expressions.
    pub fn of_function(name: &str) -> Option<Distance> {
        Distance::ALL
            .into_iter()
            .find(|d| d.function_name() == name)
    }

    fn compute(self, a: &[f32], b: &[f32]) -> std::result::Result<f64, DimensionMismatch> {
        match self {
            Distance::L2 => vector::l2_distance(a, b),
            Distance::Cosine => vector::cosine_distance(a, b),
            Distance::InnerProduct => vector::inner_product(a, b),
            Distance::NegativeInnerProduct => vector::negative_inner_product(a, b),
            Distance::L1 => vector::l1_distance(a, b),
        }
    }
}

/// Every vector function of this module.
pub fn vector_functions() -> Vec<ScalarUDF> {
    let mut functions: Vec<ScalarUDF> = Distance::ALL
        .into_iter()
        .map(|d| ScalarUDF::new_from_impl(VectorFunction::new(Op::Distance(d))))
        .collect();
    functions.push(ScalarUDF::new_from_impl(VectorFunction::new(Op::Dims)));
    functions.push(ScalarUDF::new_from_impl(VectorFunction::new(Op::Norm)));
    functions
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Distance(Distance),
    Dims,
    Norm,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorFunction {
    op: Op,
    signature: Signature,
}

impl VectorFunction {
    fn new(op: Op) -> Self {
        Self {
            op,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn arity(&self) -> usize {
        match self.op {
            Op::Distance(_) => 2,
            Op::Dims | Op::Norm => 1,
        }
    }
}

/// `float4[]`: the type vectors are compared in.
pub(crate) fn float4_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
}

impl ScalarUDFImpl for VectorFunction {
    fn name(&self) -> &str {
        match self.op {
            Op::Distance(d) => d.function_name(),
            Op::Dims => "vector_dims",
            Op::Norm => "l2_norm",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Numeric lists become `float4[]`; text stays text (pgvector's `'[1,2,3]'`).
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != self.arity() {
            return Err(DataFusionError::Plan(format!(
                "{} takes {} argument(s), got {}",
                self.name(),
                self.arity(),
                arg_types.len()
            )));
        }
        arg_types
            .iter()
            .map(|t| match t {
                DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
                    if f.data_type().is_numeric() || f.data_type().is_null() =>
                {
                    Ok(float4_list())
                }
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(DataType::Utf8),
                DataType::Null => Ok(float4_list()),
                other => Err(DataFusionError::Plan(format!(
                    "{} expects vectors (float4[] or '[1,2,3]'), not {other}",
                    self.name()
                ))),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.op {
            Op::Distance(_) | Op::Norm => DataType::Float64,
            Op::Dims => DataType::Int32,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let columns: Vec<Vectors> = args.args.iter().map(Vectors::new).collect::<Result<_>>()?;
        let n = if all_scalar { 1 } else { rows };
        let out: ArrayRef = match self.op {
            Op::Distance(d) => {
                let mut values = Vec::with_capacity(n);
                for row in 0..n {
                    values.push(match (columns[0].get(row), columns[1].get(row)) {
                        (Some(a), Some(b)) => Some(
                            d.compute(a, b)
                                .map_err(|e| DataFusionError::Execution(e.to_string()))?,
                        ),
                        _ => None,
                    });
                }
                Arc::new(Float64Array::from(values))
            }
            Op::Dims => Arc::new(Int32Array::from_iter(
                (0..n).map(|row| columns[0].get(row).map(|v| v.len() as i32)),
            )),
            Op::Norm => Arc::new(Float64Array::from_iter((0..n).map(|row| {
                columns[0]
                    .get(row)
                    .map(|v| f64::from(vector::dot_f32(v, v)).sqrt())
            }))),
        };
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// One argument's vectors, a constant one parsed once.
enum Vectors {
    Constant(Option<Vec<f32>>),
    /// Offsets and values of a `float4[]` column, with its nulls.
    Column(datafusion::arrow::array::ListArray, Float32Array),
}

impl Vectors {
    fn new(arg: &ColumnarValue) -> Result<Vectors> {
        match arg {
            ColumnarValue::Scalar(ScalarValue::Utf8(text)) => Ok(Vectors::Constant(
                text.as_deref().map(parse_vector).transpose()?,
            )),
            ColumnarValue::Scalar(scalar) => {
                let array = scalar.to_array_of_size(1)?;
                match Vectors::from_array(&array)? {
                    Vectors::Column(list, _) if list.is_null(0) => Ok(Vectors::Constant(None)),
                    Vectors::Column(list, values) => {
                        let range =
                            list.value_offsets()[0] as usize..list.value_offsets()[1] as usize;
                        Ok(Vectors::Constant(Some(values.values()[range].to_vec())))
                    }
                    constant => Ok(constant),
                }
            }
            ColumnarValue::Array(array) => Vectors::from_array(array),
        }
    }

    fn from_array(array: &ArrayRef) -> Result<Vectors> {
        match array.data_type() {
            DataType::Utf8 => {
                // A text column of vectors: parse each one into a list.
                let texts = array.as_string::<i32>();
                let mut builder = datafusion::arrow::array::ListBuilder::new(
                    datafusion::arrow::array::Float32Builder::new(),
                );
                for text in texts.iter() {
                    match text {
                        Some(t) => {
                            builder.values().append_slice(&parse_vector(t)?);
                            builder.append(true);
                        }
                        None => builder.append(false),
                    }
                }
                let list = builder.finish();
                Vectors::from_array(&(Arc::new(list) as ArrayRef))
            }
            DataType::Null => Ok(Vectors::Constant(None)),
            _ => {
                let list = cast(array, &float4_list())?.as_list::<i32>().clone();
                let values = list.values().as_primitive::<Float32Type>().clone();
                if values.null_count() > 0 {
                    return Err(DataFusionError::Execution(
                        "array must not contain nulls".to_string(),
                    ));
                }
                Ok(Vectors::Column(list, values))
            }
        }
    }

    fn get(&self, row: usize) -> Option<&[f32]> {
        match self {
            Vectors::Constant(v) => v.as_deref(),
            Vectors::Column(list, values) => {
                if list.is_null(row) {
                    return None;
                }
                let offsets = list.value_offsets();
                Some(&values.values()[offsets[row] as usize..offsets[row + 1] as usize])
            }
        }
    }
}

/// pgvector's text form of a vector, `[1,2,3]`.
pub fn parse_vector(text: &str) -> Result<Vec<f32>> {
    let invalid =
        || DataFusionError::Execution(format!("invalid input syntax for type vector: \"{text}\""));
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(invalid)?;
    if inner.trim().is_empty() {
        return Err(DataFusionError::Execution(
            "vector must have at least 1 dimension".to_string(),
        ));
    }
    inner
        .split(',')
        .map(|x| match x.trim().parse::<f32>() {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(_) => Err(DataFusionError::Execution(
                "NaN and infinite values are not allowed in vector".to_string(),
            )),
            Err(_) => Err(invalid()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgvector_text() {
        assert_eq!(parse_vector(" [1, 2.5,-3] ").unwrap(), vec![1.0, 2.5, -3.0]);
        assert_eq!(
            parse_vector("1,2").unwrap_err().to_string(),
            "Execution error: invalid input syntax for type vector: \"1,2\""
        );
        assert_eq!(
            parse_vector("[]").unwrap_err().to_string(),
            "Execution error: vector must have at least 1 dimension"
        );
    }

    #[test]
    fn operators_and_functions_name_the_same_distance() {
        for d in Distance::ALL {
            assert_eq!(Distance::of_function(d.function_name()), Some(d));
        }
        assert_eq!(
            Distance::of_operator("<#>"),
            Some(Distance::NegativeInnerProduct)
        );
        assert_eq!(Distance::of_operator("<<"), None);
    }
}
