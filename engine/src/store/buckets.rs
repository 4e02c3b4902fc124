//! Buckets of stored results by a stable hash of each file's URL, so that a task of a
//! distributed scan, given the files of one bucket class, reads only the parts that can hold
//! them.
//!
//! Every URL falls in one of [`BUCKETS`] buckets. A scan's file groups are bucket classes (the
//! buckets congruent to `g` modulo a power of two `n`), and every part names in its file name
//! the narrowest class holding all of its rows. A reader skips a part whose class is disjoint
//! from its own. A part without a class in its name (an older part, or one whose name was
//! changed) holds any bucket: everyone reads it.

use std::fmt;

/// Buckets in all; a power of two, so every class modulus below divides it.
pub const BUCKETS: u32 = 4096;

/// The bucket of the file at `url`: the same in every process, run and release (changing it
/// would make every task read every part once).
pub fn bucket_of(url: &str) -> u32 {
    let hash = blake3::hash(url.as_bytes());
    let low = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    (low % u64::from(BUCKETS)) as u32
}

/// The buckets `b` with `b % modulus == residue`, `modulus` a power of two dividing
/// [`BUCKETS`]: a file group of a scan, or what one part can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Buckets {
    modulus: u32,
    residue: u32,
}

impl Buckets {
    /// Every bucket.
    pub const ALL: Buckets = Buckets {
        modulus: 1,
        residue: 0,
    };

    /// The buckets congruent to `residue` modulo `modulus`; `None` unless `modulus` is a power
    /// of two dividing [`BUCKETS`] and `residue` is below it.
    pub fn class(residue: u32, modulus: u32) -> Option<Buckets> {
        (modulus.is_power_of_two() && modulus <= BUCKETS && residue < modulus)
            .then_some(Buckets { modulus, residue })
    }

    /// The narrowest class holding every one of `buckets` (each below [`BUCKETS`]); all of
    /// them when there are none.
    pub fn holding(buckets: impl IntoIterator<Item = u32>) -> Buckets {
        let mut buckets = buckets.into_iter();
        let Some(first) = buckets.next() else {
            return Buckets::ALL;
        };
        // The low bits all buckets share: where any differs from the first, the class ends.
        let differ = buckets.fold(0, |acc, b| acc | (b ^ first));
        let modulus = match differ {
            0 => BUCKETS,
            d => 1 << d.trailing_zeros(),
        };
        Buckets {
            modulus,
            residue: first % modulus,
        }
    }

    /// Whether some bucket is in both.
    pub fn overlaps(self, other: Buckets) -> bool {
        let modulus = self.modulus.min(other.modulus);
        self.residue % modulus == other.residue % modulus
    }

    /// The class a part's file name ends with (`part-...-b3of8.parquet`); every bucket when
    /// the name has none or a malformed one.
    pub fn of_part_name(name: &str) -> Buckets {
        let parsed = || {
            let stem = name.strip_suffix(".parquet")?;
            let (_, tag) = stem.rsplit_once('-')?;
            let (residue, modulus) = tag.strip_prefix('b')?.split_once("of")?;
            // Four digits hold every valid value; longer numbers are refused unparsed.
            let number = |s: &str| {
                (s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u32>().ok())
                    .flatten()
            };
            Buckets::class(number(residue)?, number(modulus)?)
        };
        parsed().unwrap_or(Buckets::ALL)
    }

    /// The suffix a part's file name carries for this class (nothing for every bucket).
    pub fn part_name_tag(self) -> String {
        match self == Buckets::ALL {
            true => String::new(),
            false => format!("-{self}"),
        }
    }
}

impl fmt::Display for Buckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}of{}", self.residue, self.modulus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(class: Buckets, bucket: u32) -> bool {
        class.overlaps(Buckets::holding([bucket]))
    }

    #[test]
    fn buckets_are_fixed() {
        // Fixed values: changing the hash makes every task of a cluster read every part.
        assert_eq!(bucket_of("file:///music/000.mp3"), 2713);
        assert_eq!(bucket_of("s3://bucket/a.flac"), 3434);
        let spread: std::collections::HashSet<u32> = (0..10_000)
            .map(|i| bucket_of(&format!("s3://b/{i}.mp3")))
            .collect();
        assert!(spread.len() > 3_500, "{}", spread.len());
    }

    #[test]
    fn the_narrowest_class_holds_every_bucket() {
        assert_eq!(Buckets::holding([]), Buckets::ALL);
        assert_eq!(Buckets::holding([5]), Buckets::class(5, BUCKETS).unwrap());
        assert_eq!(Buckets::holding([1, 9, 17]), Buckets::class(1, 8).unwrap());
        assert_eq!(Buckets::holding([2, 7]), Buckets::ALL);
        for buckets in [vec![3, 11, 4091], vec![0, 2048], vec![6, 14, 30, 1022]] {
            let class = Buckets::holding(buckets.iter().copied());
            assert!(buckets.iter().all(|&b| contains(class, b)), "{class}");
        }
    }

    #[test]
    fn classes_overlap_when_they_share_a_bucket() {
        let c = |r, m| Buckets::class(r, m).unwrap();
        assert!(c(1, 4).overlaps(c(5, 8)));
        assert!(c(5, 8).overlaps(c(1, 4)));
        assert!(!c(1, 4).overlaps(c(2, 8)));
        assert!(!c(0, 2).overlaps(c(1, 2)));
        assert!(Buckets::ALL.overlaps(c(7, 4096)));
        // Exhaustively against the buckets themselves, for small moduli.
        for (m1, m2) in [(2, 8), (4, 4), (16, 2)] {
            for r1 in 0..m1 {
                for r2 in 0..m2 {
                    let shared = (0..BUCKETS).any(|b| b % m1 == r1 && b % m2 == r2);
                    assert_eq!(c(r1, m1).overlaps(c(r2, m2)), shared, "{r1}/{m1} {r2}/{m2}");
                }
            }
        }
    }

    #[test]
    fn part_names_carry_their_class() {
        let class = Buckets::class(3, 8).unwrap();
        let name = format!("part-0001-abc-000001{}.parquet", class.part_name_tag());
        assert_eq!(name, "part-0001-abc-000001-b3of8.parquet");
        assert_eq!(Buckets::of_part_name(&name), class);
        assert_eq!(Buckets::ALL.part_name_tag(), "");
        assert_eq!(
            Buckets::of_part_name("part-0001-abc-000001.parquet"),
            Buckets::ALL
        );
    }

    #[test]
    fn crafted_part_names_are_read_by_everyone() {
        for name in [
            "part-1-w-1-b3of6.parquet",
            "part-1-w-1-b8of8.parquet",
            "part-1-w-1-b0of8192.parquet",
            "part-1-w-1-b1of99999999999999999999.parquet",
            "part-1-w-1-b+1of4.parquet",
            "part-1-w-1-bof4.parquet",
            "part-1-w-1-b1of4.json",
            "b1of4.parquet",
        ] {
            assert_eq!(Buckets::of_part_name(name), Buckets::ALL, "{name}");
        }
    }
}
