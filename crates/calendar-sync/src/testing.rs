//! Internals that the workspace's own tests and benchmarks drive directly (the
//! claim statement, event ids, the migration count). Not part of the public
//! API: hidden from the docs and free to change in any release.

pub use crate::apply::{event_body, event_id};
pub use crate::db::migrate::{MIGRATION_TABLE, known_migrations};
pub use crate::store::{
    CLAIM, COMPLETE_MANY, ClaimBatch, ClaimedItem, Completion, LOCK_NAMESPACE, UNLOCK, claim,
    claim_within, complete_many, take_budget, unlock_rows,
};
