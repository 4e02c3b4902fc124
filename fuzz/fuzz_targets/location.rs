//! The location guard. The input is text, one location per line: every line but the last is
//! added as an allowed root, the last is the location asked for. Whenever the guard allows that
//! location, its object path (what the store would touch) must, segment by segment, start with
//! the segments of a root on the same store, and no segment may be empty, `.`, `..` or hold a
//! backslash. A location the guard allows but whose object path cannot be formed is fine: the
//! store refuses it.

#![no_main]

use audiolake_engine::location::{object_path, resolve_location, store_url, AllowedRoots};
use libfuzzer_sys::fuzz_target;
use url::Url;

/// The object path of `url` as segments, if it has one.
fn segments(url: &Url) -> Option<Vec<String>> {
    let path = object_path(url).ok()?;
    Some(path.parts().map(|p| p.as_ref().to_string()).collect())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((root_lines, asked)) = text.rsplit_once('\n') else {
        return;
    };
    let mut allowed = AllowedRoots::new();
    let mut roots = Vec::new();
    for line in root_lines.split('\n') {
        if allowed.add(line).is_ok() {
            roots.push(resolve_location(line).expect("an added root resolves"));
        }
    }
    let Ok(url) = allowed.check_location(asked) else {
        return;
    };
    let Some(parts) = segments(&url) else {
        return;
    };
    for part in &parts {
        assert!(
            !matches!(part.as_str(), "" | "." | "..") && !part.contains('\\'),
            "{asked:?} is allowed as {url} with segment {part:?} (object path {parts:?})"
        );
    }
    let under_a_root = roots.iter().any(|root| {
        store_url(root) == store_url(&url)
            && segments(root).is_some_and(|r| parts.starts_with(&r))
    });
    assert!(
        under_a_root,
        "{asked:?} is allowed as {url} (object path {parts:?}) but lies under no root of {roots:?}"
    );
});
