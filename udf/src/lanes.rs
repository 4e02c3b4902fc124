//! Reductions over `f32` slices in eight independent accumulators, which the compiler turns
//! into SIMD: one running value would make every step wait for the last, several times slower.
//! The summation order differs from a plain loop's, so results differ from one in the last bits.

pub(crate) const LANES: usize = 8;

/// `Σ term(a[i], b[i])` over the common length.
#[inline(always)]
pub(crate) fn fold2(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((sum, x), y) in acc.iter_mut().zip(x).zip(y) {
            *sum += term(*x, *y);
        }
    }
    let mut sum = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        sum += term(*x, *y);
    }
    acc.iter().sum::<f32>() + sum
}

/// `Σ a[i]`.
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (sum, x) in acc.iter_mut().zip(chunk) {
            *sum += x;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// `Σ a[i]²`, each square widened to `f64` before it is added (for long signals).
pub(crate) fn sum_of_squares_f64(a: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (sum, &x) in acc.iter_mut().zip(chunk) {
            *sum += f64::from(x * x);
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|&x| f64::from(x * x)).sum::<f64>()
}

/// The largest magnitude in `a` (0 for none).
pub(crate) fn abs_max(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (max, x) in acc.iter_mut().zip(chunk) {
            *max = max.max(x.abs());
        }
    }
    acc.iter().chain(tail).fold(0.0f32, |m, x| m.max(x.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_plain_loops_past_one_chunk() {
        let a: Vec<f32> = (0..27).map(|i| (i as f32 - 13.0) * 0.25).collect();
        let b: Vec<f32> = (0..27).map(|i| i as f32).collect();
        assert_eq!(sum(&a), a.iter().sum::<f32>());
        assert_eq!(fold2(&a, &b, |x, y| x * y), 409.5);
        assert_eq!(sum_of_squares_f64(&a), 102.375);
        assert_eq!(abs_max(&a), 3.25);
        assert_eq!(abs_max(&[]), 0.0);
        // Unequal lengths: the tails line up with each other, not with the longer's end.
        assert_eq!(
            fold2(&a[..9], &b, |x, y| x * y),
            fold2(&a[..9], &b[..9], |x, y| x * y)
        );
        assert_eq!(fold2(&a[..9], &b, |x, y| x * y), -66.0);
    }
}
