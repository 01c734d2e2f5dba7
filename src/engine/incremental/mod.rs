//! Incremental refresh on the PostgreSQL engine: a dynamic table refreshed by applying what
//! changed in its sources since its last refresh, instead of recomputing its query.
//!
//! - [`analyze`] decides, from the resolved query, whether and how a table can be refreshed
//!   incrementally, or why not (the reason users see).

pub mod analyze;
