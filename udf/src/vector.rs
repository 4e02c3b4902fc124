//! Distances between `float4[]` vectors, with pgvector's definitions: `<->` [`l2_distance`],
//! `<=>` [`cosine_distance`], `<#>` [`negative_inner_product`], `<+>` [`l1_distance`], and
//! [`inner_product`].
//!
//! Like pgvector, sums are accumulated in `f32` and the result is widened to `f64` (pgvector
//! compiles its loops with `-fassociative-math`, so its summation order depends on the CPU; ours
//! uses eight lanes). Results agree with pgvector's to float rounding, about 1e-6 relative.

use crate::lanes::{fold2, LANES};

/// Two vectors of different lengths were compared; the message is pgvector's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("different vector dimensions {left} and {right}")]
pub struct DimensionMismatch {
    pub left: usize,
    pub right: usize,
}

fn check(a: &[f32], b: &[f32]) -> Result<(), DimensionMismatch> {
    if a.len() == b.len() {
        Ok(())
    } else {
        Err(DimensionMismatch {
            left: a.len(),
            right: b.len(),
        })
    }
}

/// Euclidean distance, `sqrt(Σ (a_i - b_i)²)`: pgvector's `l2_distance` and `<->`.
pub fn l2_distance(a: &[f32], b: &[f32]) -> Result<f64, DimensionMismatch> {
    check(a, b)?;
    Ok(f64::from(l2_squared_f32(a, b)).sqrt())
}

/// Squared Euclidean distance as `f32`, for index structures that compare many distances and
/// only need their order. Panics in debug builds when the lengths differ. Not `#[inline]`: a
/// caller built without optimisation (the engine in the dev profile) would get its own
/// unoptimised copy instead of this crate's.
pub fn l2_squared_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    fold2(a, b, |x, y| (x - y) * (x - y))
}

/// Dot product as `f32`, for index structures; see [`l2_squared_f32`].
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    fold2(a, b, |x, y| x * y)
}

/// Taxicab distance as `f32`, for index structures; see [`l2_squared_f32`].
pub fn l1_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    fold2(a, b, |x, y| (x - y).abs())
}

/// Inner product, `Σ a_i b_i`: pgvector's `inner_product`.
pub fn inner_product(a: &[f32], b: &[f32]) -> Result<f64, DimensionMismatch> {
    check(a, b)?;
    Ok(f64::from(dot_f32(a, b)))
}

/// Negative inner product: pgvector's `<#>`, so that ascending order puts the largest inner
/// product first.
pub fn negative_inner_product(a: &[f32], b: &[f32]) -> Result<f64, DimensionMismatch> {
    check(a, b)?;
    Ok(-f64::from(dot_f32(a, b)))
}

/// Cosine distance, `1 - a·b / (|a| |b|)`, with the similarity clamped to [-1, 1]: pgvector's
/// `cosine_distance` and `<=>`. NaN when either vector has norm zero, as in pgvector.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> Result<f64, DimensionMismatch> {
    check(a, b)?;
    let (mut dot, mut na, mut nb) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for (i, (x, y)) in x.iter().zip(y).enumerate() {
            dot[i] += x * y;
            na[i] += x * x;
            nb[i] += y * y;
        }
    }
    let (mut dot, mut na, mut nb) = (
        dot.iter().sum::<f32>(),
        na.iter().sum::<f32>(),
        nb.iter().sum::<f32>(),
    );
    for (x, y) in ra.iter().zip(rb) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    // sqrt(|a|² |b|²) rather than |a| |b|, as pgvector: one rounding fewer.
    let similarity = f64::from(dot) / (f64::from(na) * f64::from(nb)).sqrt();
    if similarity.is_nan() {
        return Ok(f64::NAN);
    }
    Ok(1.0 - similarity.clamp(-1.0, 1.0))
}

/// Taxicab distance, `Σ |a_i - b_i|`: pgvector's `l1_distance` and `<+>`.
pub fn l1_distance(a: &[f32], b: &[f32]) -> Result<f64, DimensionMismatch> {
    check(a, b)?;
    Ok(f64::from(l1_f32(a, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "got {got}, want {want}"
        );
    }

    #[test]
    fn hand_computed_values() {
        let (a, b) = ([1.0f32, 2.0, 3.0], [4.0f32, 6.0, 8.0]);
        // diffs 3, 4, 5: sqrt(9 + 16 + 25)
        close(l2_distance(&a, &b).unwrap(), 50f64.sqrt());
        close(inner_product(&a, &b).unwrap(), 4.0 + 12.0 + 24.0);
        close(negative_inner_product(&a, &b).unwrap(), -40.0);
        close(l1_distance(&a, &b).unwrap(), 12.0);
        // |a|² = 14, |b|² = 116
        close(
            cosine_distance(&a, &b).unwrap(),
            1.0 - 40.0 / (14.0f64 * 116.0).sqrt(),
        );
    }

    #[test]
    fn values_past_one_simd_chunk() {
        // 19 elements: two chunks of eight and a remainder of three.
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..19).map(|i| (i * i) as f32 / 10.0).collect();
        let (mut sq, mut dot, mut l1) = (0f64, 0f64, 0f64);
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (f64::from(*x), f64::from(*y));
            sq += (x - y) * (x - y);
            dot += x * y;
            l1 += (x - y).abs();
        }
        close(l2_distance(&a, &b).unwrap(), sq.sqrt());
        close(inner_product(&a, &b).unwrap(), dot);
        close(l1_distance(&a, &b).unwrap(), l1);
    }

    #[test]
    fn cosine_edge_cases() {
        // Same direction: 0; opposite: 2; orthogonal: 1.
        close(cosine_distance(&[1.0, 2.0], &[2.0, 4.0]).unwrap(), 0.0);
        close(cosine_distance(&[1.0, 2.0], &[-1.0, -2.0]).unwrap(), 2.0);
        close(cosine_distance(&[1.0, 0.0], &[0.0, 3.0]).unwrap(), 1.0);
        // pgvector returns NaN when a norm is zero.
        assert!(cosine_distance(&[0.0, 0.0], &[1.0, 2.0]).unwrap().is_nan());
        assert!(cosine_distance(&[0.0, 0.0], &[0.0, 0.0]).unwrap().is_nan());
    }

    #[test]
    fn dimension_mismatch_reads_like_pgvector() {
        let err = l2_distance(&[1.0, 2.0, 3.0], &[1.0, 2.0]).unwrap_err();
        assert_eq!(err.to_string(), "different vector dimensions 3 and 2");
        for f in [
            cosine_distance,
            inner_product,
            negative_inner_product,
            l1_distance,
        ] {
            assert_eq!(
                f(&[1.0], &[1.0, 2.0]),
                Err(DimensionMismatch { left: 1, right: 2 })
            );
        }
    }

    #[test]
    fn f32_helpers_agree_with_checked_functions() {
        let a = [0.5f32, -1.5, 2.0, 7.0, 1.0, 0.0, 3.0, -2.0, 4.0];
        let b = [1.0f32, 2.0, -3.0, 0.5, 0.0, 1.0, 1.0, 1.0, -1.0];
        close(
            f64::from(l2_squared_f32(&a, &b)),
            l2_distance(&a, &b).unwrap().powi(2),
        );
        close(f64::from(dot_f32(&a, &b)), inner_product(&a, &b).unwrap());
        // |diffs| 0.5 3.5 5 6.5 1 1 2 3 5, summed by hand.
        close(f64::from(l1_f32(&a, &b)), 27.5);
        close(f64::from(l1_f32(&a, &b)), l1_distance(&a, &b).unwrap());
    }
}
