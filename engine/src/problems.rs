//! Objects in the store that the engine could not use (a malformed catalog record, a damaged
//! part, an unreadable index definition): set aside and listed in `audiolake_store_problems`,
//! so that one bad object never keeps the engine from opening.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::Result;

use crate::snapshot::Snapshot;

/// One object the engine set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreProblem {
    /// The object's path in the store.
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
    /// What the engine did about it (e.g. where it was moved).
    pub action: String,
}

/// Problems found so far; shared by everything that reads the store.
#[derive(Debug, Default)]
pub struct StoreProblems {
    found: Mutex<Vec<StoreProblem>>,
}

impl StoreProblems {
    /// Records a problem and logs it as a warning, once per object.
    pub fn report(&self, problem: StoreProblem) {
        let mut found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if found.iter().any(|p| p.object == problem.object) {
            return;
        }
        log::warn!(
            "store object {} set aside: {} ({})",
            problem.object,
            problem.problem,
            problem.action
        );
        found.push(problem);
    }

    /// Records an object that its readers skip and leave where it is.
    pub fn skipped(&self, object: &str, problem: String) {
        self.report(StoreProblem {
            object: object.to_owned(),
            problem,
            action: "left in place, not read".to_owned(),
        });
    }

    pub fn list(&self) -> Vec<StoreProblem> {
        self.found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// `audiolake_store_problems`: one row per object set aside.
pub struct ProblemsTable(pub Arc<StoreProblems>);

impl Snapshot for ProblemsTable {
    fn schema() -> SchemaRef {
        let text = |name| Field::new(name, DataType::Utf8, false);
        Arc::new(Schema::new(vec![
            text("object"),
            text("problem"),
            text("action"),
        ]))
    }

    fn snapshot(&self) -> Result<RecordBatch> {
        let found = self.0.list();
        let column = |f: fn(&StoreProblem) -> &str| {
            Arc::new(StringArray::from(found.iter().map(f).collect::<Vec<_>>()))
        };
        Ok(RecordBatch::try_new(
            Self::schema(),
            vec![
                column(|p| &p.object),
                column(|p| &p.problem),
                column(|p| &p.action),
            ],
        )?)
    }
}
