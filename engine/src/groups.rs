//! Feature groups chosen by name, as `audiolake analyze --groups`, [`Engine::analyze_table_groups`]
//! and `analyze(path, groups)` take them.
//!
//! [`Engine::analyze_table_groups`]: crate::Engine::analyze_table_groups

use audiolake_udf::features::GROUPS;

use crate::error::{EngineError, Result};

/// The longest comma-separated list accepted: every group name, spaces and commas fit many
/// times over, and a hostile list is refused before it is split.
pub const MAX_LIST_BYTES: usize = 256;

/// The groups named in `names`, matched ignoring case and spaces around them, each once, in the
/// order of [`GROUPS`]; blank names are skipped. An unknown name or no name at all is an error
/// that lists the groups.
pub fn choose<S: AsRef<str>>(names: &[S]) -> Result<Vec<&'static str>> {
    let mut chosen = vec![false; GROUPS.len()];
    for name in names.iter().map(|n| n.as_ref().trim()) {
        if name.is_empty() {
            continue;
        }
        let known = GROUPS
            .iter()
            .position(|g| g.eq_ignore_ascii_case(name))
            .ok_or_else(|| EngineError::UnknownGroup {
                name: name.to_string(),
            })?;
        chosen[known] = true;
    }
    let groups: Vec<&'static str> = GROUPS
        .iter()
        .zip(chosen)
        .filter_map(|(&g, c)| c.then_some(g))
        .collect();
    if groups.is_empty() {
        return Err(EngineError::NoGroups);
    }
    Ok(groups)
}

/// The groups of a comma-separated list such as `rhythm, Tonal` (see [`choose`]), refused
/// unread when longer than [`MAX_LIST_BYTES`].
pub fn parse_list(list: &str) -> Result<Vec<&'static str>> {
    if list.len() > MAX_LIST_BYTES {
        return Err(EngineError::GroupListTooLong { bytes: list.len() });
    }
    choose(&list.split(',').collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_ignoring_case_and_kept_once_in_group_order() {
        assert_eq!(
            parse_list(" Tonal ,rhythm,,TONAL").unwrap(),
            vec!["rhythm", "tonal"]
        );
        assert_eq!(choose(GROUPS).unwrap(), GROUPS);
    }

    #[test]
    fn unknown_empty_and_oversized_lists_are_refused() {
        assert_eq!(
            parse_list("rhythm, beats").unwrap_err().to_string(),
            "unknown feature group \"beats\"; the groups are rhythm, tonal, loudness, \
             spectral, timbre, musicnn"
        );
        assert_eq!(
            parse_list(" , ").unwrap_err().to_string(),
            "no feature group was named; name one or more of rhythm, tonal, loudness, \
             spectral, timbre, musicnn, separated by commas"
        );
        assert_eq!(
            choose::<&str>(&[]).unwrap_err().to_string(),
            parse_list("").unwrap_err().to_string()
        );
        let long = "rhythm,".repeat(40);
        assert_eq!(
            parse_list(&long).unwrap_err().to_string(),
            "the list of feature groups is 280 bytes long, more than 256; name each group \
             once (the groups are rhythm, tonal, loudness, spectral, timbre, musicnn)"
        );
    }
}
