//! The dynamic-table manager: the operations behind each statement (create, alter, refresh,
//! suspend, resume, drop), independent of how they were asked for (pgwire or HTTP).
//!
//! So far it holds the pure rules ([`rules`]); the operations arrive with the lifecycle.

pub mod rules;
