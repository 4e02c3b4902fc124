//! Where the feature store keeps a group's results, as the tests look for them.

use audiolake::udf::features::group_schemas;

/// `<group>/v<version>` of the group's current version, under the store's `features/`.
pub fn group_dir(group: &str) -> String {
    format!("{group}/v{}", version(group))
}

/// The group's current version.
pub fn version(group: &str) -> u32 {
    group_schemas()
        .iter()
        .find(|g| g.name == group)
        .unwrap_or_else(|| panic!("no feature group {group:?}"))
        .version
}
