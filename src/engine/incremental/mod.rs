//! Incremental refresh on the PostgreSQL engine: a dynamic table refreshed by applying what
//! changed in its sources since its last refresh, instead of recomputing its query.
//!
//! - [`analyze`] decides, from the resolved query, whether and how a table can be refreshed
//!   incrementally, or why not (the reason users see).
//!
//! Work in progress (issue 6): change capture and the delta application are not wired in yet;
//! every dynamic table is still refreshed fully.

pub mod analyze;
