//! Engines: what does the refreshing. PostgreSQL itself is the embedded default
//! ([`postgres`]); Apache Flink (through its SQL Gateway, [`flink`] holds its client layer) joins
//! later behind the same operations.
//!
//! An engine turns a dynamic table's definition into its content: the first fill at creation and
//! each refresh. Refreshes report what they did ([`RefreshAction`]) so that an incremental
//! refresh can later report INCREMENTAL or NO_DATA instead of FULL.

pub mod flink;
pub mod incremental;
pub mod postgres;

use crate::core::RefreshAction;

/// The result of filling or refreshing a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    pub action: RefreshAction,
    pub rows: u64,
}
