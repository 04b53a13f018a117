//! PostgreSQL: the writer's transaction (`storage/writer.rs`). Many daemons write at once here,
//! so the writer task keeps its batching (a round of polls and claims in one transaction) but
//! takes a connection from the pool for each round instead of owning the only one.

#![allow(unused_variables)]

use super::*;
use crate::storage::writer::{Work, Written};

/// Runs `work` in one transaction and commits it.
pub(in crate::storage) async fn in_transaction(pg: &Pg, work: &Work<'_>) -> Result<Written> {
    Err(not_yet("the writer"))
}
