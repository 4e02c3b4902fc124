//! Trigram similarity of text, with the definitions of PostgreSQL's `pg_trgm`: [`similarity`]
//! (`%`), [`word_similarity`] (`<%`) and [`show_trgm`].
//!
//! A string's words are its runs of letters and digits. Each word is lower-cased and padded with
//! two spaces before and one after; its trigrams are the windows of three characters. A trigram
//! of three one-byte characters is kept as is; any other is reduced to three bytes of a CRC, as
//! pg_trgm does, so that its results (and `show_trgm`'s `0x…` items) are the same.
//!
//! Which characters are letters, and how they are lower-cased, depends on the database's locale
//! in PostgreSQL; these functions reproduce a UTF-8 database with `C.UTF-8` (glibc) locale, which
//! `en_US.UTF-8` matches too for letters: any Unicode letter counts, combining marks, symbols and
//! emoji separate words, digits of other scripts count but superscripts, fractions and circled
//! numbers do not, and lower-casing maps one character to one character.

/// `pg_trgm.similarity_threshold`'s default: `a % b` is `similarity(a, b) >= 0.3`.
pub const DEFAULT_SIMILARITY_THRESHOLD: f64 = 0.3;

/// `pg_trgm.word_similarity_threshold`'s default: `a <% b` is `word_similarity(a, b) >= 0.6`.
pub const DEFAULT_WORD_SIMILARITY_THRESHOLD: f64 = 0.6;

/// Three bytes: the characters of an ASCII trigram, or a hash of a longer one.
type Trigram = [u8; 3];

fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric()
    } else {
        c.is_alphabetic() || (c.is_numeric() && !is_numeric_symbol(c))
    }
}

/// Numeric characters that glibc does not class as letters or digits (Unicode category No,
/// the common blocks): superscripts and subscripts, vulgar fractions, enclosed numbers.
fn is_numeric_symbol(c: char) -> bool {
    matches!(c,
        '\u{B2}' | '\u{B3}' | '\u{B9}' | '\u{BC}'..='\u{BE}'
        | '\u{2070}'..='\u{209F}'
        | '\u{2150}'..='\u{215F}' | '\u{2189}'
        | '\u{2460}'..='\u{24FF}' | '\u{2776}'..='\u{2793}'
        | '\u{3251}'..='\u{325F}' | '\u{3280}'..='\u{3289}' | '\u{32B1}'..='\u{32BF}')
}

/// One character to one character, like C's `towlower` (Rust's full mapping may give two).
fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// CRC-32 table for the reflected polynomial, as PostgreSQL's.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// PostgreSQL's "legacy" CRC-32, which pg_trgm uses to hash multi-byte trigrams: the reflected
/// table driven by the non-reflected (shift-left) update. Not a standard CRC, but pg_trgm's.
fn legacy_crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in bytes {
        crc = CRC_TABLE[((crc >> 24) as u8 ^ b) as usize] ^ (crc << 8);
    }
    !crc
}

fn trigram_of(bytes: &[u8]) -> Trigram {
    match bytes {
        [a, b, c] => [*a, *b, *c],
        // pg_trgm copies the CRC's first three bytes in memory, which on the little-endian
        // machines it runs on are its low bytes.
        _ => {
            let crc = legacy_crc32(bytes).to_le_bytes();
            [crc[0], crc[1], crc[2]]
        }
    }
}

/// Trigrams in the order they occur, word after word, duplicates kept; `word_similarity` needs
/// the positions.
fn trigrams_in_order(s: &str) -> Vec<Trigram> {
    let mut out = Vec::new();
    let mut padded: Vec<char> = Vec::new();
    let mut buf = [0u8; 12];
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        padded.clear();
        padded.extend([' ', ' ']);
        while let Some(&c) = chars.peek() {
            chars.next();
            if is_word_char(c) {
                padded.push(lower(c));
            } else if padded.len() > 2 {
                break;
            }
        }
        if padded.len() == 2 {
            break;
        }
        padded.push(' ');
        for w in padded.windows(3) {
            let mut len = 0;
            for c in w {
                len += c.encode_utf8(&mut buf[len..]).len();
            }
            out.push(trigram_of(&buf[..len]));
        }
    }
    out
}

/// pg_trgm orders trigrams by their bytes as C `char`, which is signed on x86-64 (where
/// PostgreSQL's order is visible in `show_trgm`).
fn signed_key(t: &Trigram) -> [i8; 3] {
    [t[0] as i8, t[1] as i8, t[2] as i8]
}

fn trigram_set(s: &str) -> Vec<Trigram> {
    let mut t = trigrams_in_order(s);
    t.sort_unstable_by_key(signed_key);
    t.dedup();
    t
}

/// pg_trgm's similarity of two trigram counts: shared / (all of one + all of the other - shared),
/// in `f32` as pg_trgm computes it.
fn ratio(shared: usize, len1: usize, len2: usize) -> f32 {
    shared as f32 / (len1 + len2 - shared) as f32
}

/// `similarity(a, b)`: the number of trigrams the two strings share divided by the number of
/// distinct trigrams in either; 0 when either has none.
pub fn similarity(a: &str, b: &str) -> f32 {
    let (ta, tb) = (trigram_set(a), trigram_set(b));
    if ta.is_empty() || tb.is_empty() {
        return 0.0;
    }
    let shared = ta
        .iter()
        .filter(|t| tb.binary_search_by_key(&signed_key(t), signed_key).is_ok());
    ratio(shared.count(), ta.len(), tb.len())
}

/// `a % b` with a threshold (`pg_trgm.similarity_threshold`, default
/// [`DEFAULT_SIMILARITY_THRESHOLD`]).
pub fn similar(a: &str, b: &str, threshold: f64) -> bool {
    f64::from(similarity(a, b)) >= threshold
}

/// `word_similarity(a, b)`: the greatest similarity between the trigrams of `a` and those of a
/// continuous extent of `b`'s trigram sequence, where an extent ends on a trigram of `a` (pg_trgm
/// 9.6+, not a maximum over `b`'s words).
pub fn word_similarity(a: &str, b: &str) -> f32 {
    let needle = trigram_set(a);
    if needle.is_empty() {
        return 0.0;
    }
    // Number the distinct trigrams of `b`; `in_a[n]` tells whether number `n` is one of `a`'s.
    let hay = trigrams_in_order(b);
    let mut sorted: Vec<Trigram> = hay.clone();
    sorted.sort_unstable_by_key(signed_key);
    sorted.dedup();
    let number = |t: &Trigram| {
        sorted
            .binary_search_by_key(&signed_key(t), signed_key)
            .unwrap()
    };
    let seq: Vec<usize> = hay.iter().map(number).collect();
    let in_a: Vec<bool> = sorted
        .iter()
        .map(|t| {
            needle
                .binary_search_by_key(&signed_key(t), signed_key)
                .is_ok()
        })
        .collect();
    best_extent(&seq, &in_a, needle.len())
}

/// Scans `seq` (trigram numbers of the haystack) once. Each time a trigram of the needle ends
/// the window, the window's start moves right to the position that maximises the similarity of
/// the extent [start, end]; positions left of the best start are dropped for good. The extent's
/// counts are: `distinct`, the distinct trigrams in it, and `shared`, those that are also in the
/// needle (of `needle_len` distinct trigrams). Matches pg_trgm's greedy procedure exactly,
/// including which extents it does not try.
fn best_extent(seq: &[usize], in_a: &[bool], needle_len: usize) -> f32 {
    // Last position of each trigram number inside the window, if any.
    let mut last_at: Vec<Option<usize>> = vec![None; in_a.len()];
    let mut start: Option<usize> = None;
    let (mut distinct, mut shared) = (0usize, 0usize);
    let mut best = 0.0f32;
    for (end, &n) in seq.iter().enumerate() {
        // Before the first needle trigram nothing is tracked: no extent can start there.
        if start.is_some() || in_a[n] {
            if last_at[n].is_none() {
                distinct += 1;
                shared += usize::from(in_a[n]);
            }
            last_at[n] = Some(end);
        }
        if !in_a[n] {
            continue;
        }
        let first = *start.get_or_insert(end);
        // Try every start from the current one to `end`, shrinking the counts as trigrams whose
        // last occurrence falls behind the start leave the window.
        let mut here = ratio(shared, needle_len, distinct);
        let (mut try_distinct, mut try_shared) = (distinct, shared);
        for (s, &m) in seq.iter().enumerate().take(end + 1).skip(first) {
            let candidate = ratio(try_shared, needle_len, try_distinct);
            if candidate > here {
                here = candidate;
                start = Some(s);
                distinct = try_distinct;
                shared = try_shared;
            }
            if last_at[m] == Some(s) {
                try_distinct -= 1;
                try_shared -= usize::from(in_a[m]);
            }
        }
        best = best.max(here);
        // Forget trigrams whose last occurrence is now left of the window.
        for (s, &m) in seq.iter().enumerate().take(start.unwrap()).skip(first) {
            if last_at[m] == Some(s) {
                last_at[m] = None;
            }
        }
    }
    best
}

/// `a <% b` with a threshold (`pg_trgm.word_similarity_threshold`, default
/// [`DEFAULT_WORD_SIMILARITY_THRESHOLD`]).
pub fn word_similar(a: &str, b: &str, threshold: f64) -> bool {
    f64::from(word_similarity(a, b)) >= threshold
}

/// `show_trgm(s)`'s items in pg_trgm's order: ASCII trigrams as their three characters, hashed
/// ones as `0x` and six hex digits.
pub fn show_trgm(s: &str) -> Vec<String> {
    trigram_set(s)
        .iter()
        .map(|t| {
            if t.iter().all(|&b| b.is_ascii_alphanumeric() || b == b' ') {
                t.iter().map(|&b| b as char).collect()
            } else {
                format!("0x{:02x}{:02x}{:02x}", t[0], t[1], t[2])
            }
        })
        .collect()
}

/// `show_trgm(s)` as PostgreSQL prints a `text[]`: `{"  c"," ca","at ",cat}`. Items with
/// spaces or special characters are quoted, with `"` and `\` escaped.
pub fn show_trgm_text(s: &str) -> String {
    let items: Vec<String> = show_trgm(s).iter().map(|i| array_item(i)).collect();
    format!("{{{}}}", items.join(","))
}

fn array_item(item: &str) -> String {
    let quote = item.is_empty()
        || item.eq_ignore_ascii_case("null")
        || item.chars().any(|c| {
            matches!(
                c,
                '"' | '\\' | '{' | '}' | ',' | ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C'
            )
        });
    if !quote {
        return item.to_string();
    }
    let mut out = String::with_capacity(item.len() + 2);
    out.push('"');
    for c in item.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_trgm_of_a_word() {
        assert_eq!(show_trgm_text("cat"), r#"{"  c"," ca","at ",cat}"#);
        assert_eq!(show_trgm_text("Cat!"), r#"{"  c"," ca","at ",cat}"#);
        assert_eq!(show_trgm_text(""), "{}");
        assert_eq!(show_trgm_text("  ,; "), "{}");
        assert_eq!(show_trgm("a"), ["  a", " a "]);
    }

    #[test]
    fn words_are_padded_separately_and_deduplicated() {
        // "foo-bar baz": three words; "  b" comes from both bar and baz.
        assert_eq!(
            show_trgm_text("Foo-bar Baz"),
            r#"{"  b","  f"," ba"," fo","ar ","az ",bar,baz,foo,"oo "}"#
        );
    }

    #[test]
    fn multibyte_trigrams_hash_like_pg_trgm() {
        // Values printed by PostgreSQL 15 (UTF-8, C.UTF-8) for show_trgm('é').
        assert_eq!(show_trgm("é"), ["0xe69b54", "0xe82c48"]);
        // Signed byte order puts 0xbc.. and 0xcc.. before 0x42...
        assert_eq!(show_trgm("ÀB"), ["0xbc85b6", "0xcc61fb", "0x422388"]);
    }

    #[test]
    fn similarity_counts_shared_over_union() {
        // "word": {"  w"," wo","ord","rd ",wor} (5); "words" adds "ds ","rds" and lacks "rd ":
        // 4 shared of 7 distinct.
        assert_eq!(similarity("word", "words"), 4.0 / 7.0);
        assert_eq!(similarity("abc", "abc"), 1.0);
        assert_eq!(similarity("", "abc"), 0.0);
        assert_eq!(similarity("", ""), 0.0);
        assert!(similar("word", "words", DEFAULT_SIMILARITY_THRESHOLD));
        assert!(!similar("word", "xyz", DEFAULT_SIMILARITY_THRESHOLD));
    }

    #[test]
    fn word_similarity_uses_the_best_extent() {
        // pg_trgm's documented example: the extent "word" of "two words" shares 4 of the 5
        // trigrams of "word" and has 5 distinct trigrams ("  w"," wo",wor,ord,rds), so 4/6...
        // PostgreSQL answers 0.8 (the extent ends at "ord": 4 shared, 5 + 4 - 4 = 5 in union).
        assert_eq!(word_similarity("word", "two words"), 0.8);
        assert_eq!(word_similarity("word", "word"), 1.0);
        assert_eq!(word_similarity("", "word"), 0.0);
        assert_eq!(word_similarity("word", ""), 0.0);
        assert!(word_similar(
            "word",
            "two words",
            DEFAULT_WORD_SIMILARITY_THRESHOLD
        ));
    }

    #[test]
    fn letters_and_separators_beyond_ascii() {
        // Letters of any script are word characters; emoji and combining marks separate words.
        assert_eq!(show_trgm("a😀b").len(), 4);
        assert_eq!(show_trgm("e\u{301}x"), ["  e", "  x", " e ", " x "]);
        // Superscript two is not a word character; an Arabic-Indic digit is.
        assert_eq!(show_trgm("²x"), ["  x", " x "]);
        assert_eq!(show_trgm("٣x").len(), 3);
        // Dotted capital I lowers to a plain i, as towlower does.
        assert_eq!(show_trgm("İx"), ["  i", " ix", "ix "]);
    }

    #[test]
    fn array_items_quote_like_postgres() {
        assert_eq!(array_item("cat"), "cat");
        assert_eq!(array_item(" ca"), "\" ca\"");
        assert_eq!(array_item("NULL"), "\"NULL\"");
        assert_eq!(array_item("a\"b"), "\"a\\\"b\"");
    }
}
