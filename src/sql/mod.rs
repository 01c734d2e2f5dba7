//! SQL text handling in front of the relay: deciding, cheaply and without a full parse, whether a
//! statement is one dyngate handles itself or one to forward to PostgreSQL untouched.
//!
//! Everything here is pure (text in, decision out). It must never rewrite what it forwards: a
//! statement classified as [`Route::Forward`] goes to PostgreSQL as the client sent it.

pub mod classify;
pub mod dynamic;
pub mod flink;
mod lex;

pub use classify::{Route, StatementKind, classify, split_statements};
