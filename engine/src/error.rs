//! Errors of the engine. Each message says what was wrong, with which value, and what to do.

use audiolake_udf::features::GROUPS;
use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "location '{location}' is outside the allowed locations ({allowed}); \
         allow it with --allow or AudioLake::builder().allow_location(...)"
    )]
    LocationNotAllowed { location: String, allowed: String },

    #[error(
        "location '{location}' is inside the store's own files (catalog/, indexes/, features/), \
         which SQL cannot read or write; read results through the features_* tables and write \
         exports to another allowed location"
    )]
    StoreInternals { location: String },

    #[error("invalid location '{location}': {reason}")]
    InvalidLocation { location: String, reason: String },

    #[error("invalid option for AUDIO table: {0}")]
    InvalidOption(String),

    /// A setting of the engine (`EngineConfig`, `SET audiolake.*`) that cannot be applied.
    #[error("invalid setting: {0}")]
    Setting(String),

    #[error(
        "table {table}: credentials ({keys}) are not accepted in OPTIONS, because table \
         definitions are kept in the store; pass them in the AWS_* environment variables, as \
         instance credentials, or with CREATE SECRET name (TYPE s3, KEY_ID '...', SECRET '...', \
         SCOPE 's3://bucket/'), which keeps them outside the store in a file only you can read"
    )]
    CredentialsInOptions { table: String, keys: String },

    /// A `CREATE SECRET`/`DROP SECRET` or the secrets file that cannot be used.
    #[error("secret: {0}")]
    Secret(String),

    #[error("unknown feature group {name:?}; the groups are {}", GROUPS.join(", "))]
    UnknownGroup { name: String },

    #[error(
        "no feature group was named; name one or more of {}, separated by commas",
        GROUPS.join(", ")
    )]
    NoGroups,

    #[error(
        "the list of feature groups is {bytes} bytes long, more than {max}; name each group \
         once (the groups are {groups})",
        max = crate::groups::MAX_LIST_BYTES,
        groups = GROUPS.join(", ")
    )]
    GroupListTooLong { bytes: usize },

    #[error("catalog in the store could not be {action}: {source}")]
    Catalog {
        action: &'static str,
        #[source]
        source: object_store::Error,
    },

    /// A scheduler or executor that could not start or stopped with an error.
    #[error("cluster: {0}")]
    Cluster(String),

    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<EngineError> for DataFusionError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
