//! Distances between `float4[]` vectors, with pgvector's definitions: `<->` [`l2_distance`],
//! `<=>` [`cosine_distance`], `<#>` [`negative_inner_product`], `<+>` [`l1_distance`], and
//! [`inner_product`].
//!
//! Like pgvector, sums are accumulated in `f32` and the result is widened to `f64` (pgvector
//! compiles its loops with `-fassociative-math`, so its summation order depends on the CPU;
//! ours runs in the widest SIMD the CPU has, chosen at run time, so it does too). Results agree
//! with pgvector's to float rounding, about 1e-6 relative.

use std::sync::LazyLock;

use pulp::{Arch, Simd, WithSimd};

use crate::lanes::LANES;

/// The CPU's SIMD instruction sets, detected once (AVX2 and FMA where the CPU has them; a
/// build for baseline x86-64 would otherwise use SSE2 only).
static ARCH: LazyLock<Arch> = LazyLock::new(Arch::new);

/// What is summed over the elements of two vectors.
trait Term {
    fn simd<S: Simd>(simd: S, sum: S::f32s, x: S::f32s, y: S::f32s) -> S::f32s;
    fn scalar(x: f32, y: f32) -> f32;
}

struct SquaredDifference;
struct Product;
struct AbsoluteDifference;

impl Term for SquaredDifference {
    #[inline(always)]
    fn simd<S: Simd>(simd: S, sum: S::f32s, x: S::f32s, y: S::f32s) -> S::f32s {
        let d = simd.sub_f32s(x, y);
        simd.mul_add_e_f32s(d, d, sum)
    }
    #[inline(always)]
    fn scalar(x: f32, y: f32) -> f32 {
        (x - y) * (x - y)
    }
}

impl Term for Product {
    #[inline(always)]
    fn simd<S: Simd>(simd: S, sum: S::f32s, x: S::f32s, y: S::f32s) -> S::f32s {
        simd.mul_add_e_f32s(x, y, sum)
    }
    #[inline(always)]
    fn scalar(x: f32, y: f32) -> f32 {
        x * y
    }
}

impl Term for AbsoluteDifference {
    #[inline(always)]
    fn simd<S: Simd>(simd: S, sum: S::f32s, x: S::f32s, y: S::f32s) -> S::f32s {
        simd.add_f32s(sum, simd.abs_f32s(simd.sub_f32s(x, y)))
    }
    #[inline(always)]
    fn scalar(x: f32, y: f32) -> f32 {
        (x - y).abs()
    }
}

/// `Σ T(a_i, b_i)` over the common length, in four SIMD accumulators (one would make every
/// step wait for the last), the elements past the last whole register added one by one.
struct Sum<'a, T> {
    a: &'a [f32],
    b: &'a [f32],
    term: std::marker::PhantomData<T>,
}

impl<T: Term> WithSimd for Sum<'_, T> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let n = self.a.len().min(self.b.len());
        let (a, a_tail) = S::as_simd_f32s(&self.a[..n]);
        let (b, b_tail) = S::as_simd_f32s(&self.b[..n]);
        let zero = simd.splat_f32s(0.0);
        let mut acc = [zero; 4];
        let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
        let (a1, b1) = (a4.remainder(), b4.remainder());
        for (x, y) in a4.zip(b4) {
            for i in 0..4 {
                acc[i] = T::simd(simd, acc[i], x[i], y[i]);
            }
        }
        for (x, y) in a1.iter().zip(b1) {
            acc[0] = T::simd(simd, acc[0], *x, *y);
        }
        let acc = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let tail: f32 = a_tail
            .iter()
            .zip(b_tail)
            .map(|(x, y)| T::scalar(*x, *y))
            .sum();
        simd.reduce_sum_f32s(acc) + tail
    }
}

impl<'a, T> Sum<'a, T> {
    fn new(a: &'a [f32], b: &'a [f32]) -> Self {
        Sum {
            a,
            b,
            term: std::marker::PhantomData,
        }
    }
}

fn sum<T: Term>(a: &[f32], b: &[f32]) -> f32 {
    ARCH.dispatch(Sum::<T>::new(a, b))
}

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
    sum::<SquaredDifference>(a, b)
}

/// Dot product as `f32`, for index structures; see [`l2_squared_f32`].
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    sum::<Product>(a, b)
}

/// Taxicab distance as `f32`, for index structures; see [`l2_squared_f32`].
pub fn l1_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    sum::<AbsoluteDifference>(a, b)
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
    fn simd_sums_match_plain_sums_at_every_length() {
        // Lengths around whole registers (4, 8 or 16 lanes) and four accumulators of them.
        for n in 0..140 {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7) % 13) as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5) % 11) as f32 * 0.25 - 1.0).collect();
            let plain = |t: fn(f64, f64) -> f64| -> f64 {
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| t(f64::from(*x), f64::from(*y)))
                    .sum()
            };
            let want = [
                plain(|x, y| (x - y) * (x - y)),
                plain(|x, y| x * y),
                plain(|x, y| (x - y).abs()),
            ];
            let dispatched = [l2_squared_f32(&a, &b), dot_f32(&a, &b), l1_f32(&a, &b)];
            let scalar = [
                Sum::<SquaredDifference>::new(&a, &b).with_simd(pulp::Scalar::new()),
                Sum::<Product>::new(&a, &b).with_simd(pulp::Scalar::new()),
                Sum::<AbsoluteDifference>::new(&a, &b).with_simd(pulp::Scalar::new()),
            ];
            for i in 0..3 {
                for got in [dispatched[i], scalar[i]] {
                    let got = f64::from(got);
                    assert!(
                        (got - want[i]).abs() <= 1e-5 * want[i].abs().max(1.0),
                        "length {n}, term {i}: {got} against {}",
                        want[i]
                    );
                }
            }
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
