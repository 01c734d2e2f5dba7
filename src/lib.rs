//! dyngate: a PostgreSQL wire-protocol gateway that keeps dynamic tables fresh.
//!
//! Layout: [`wire`] speaks the protocol and relays to the backing PostgreSQL; [`sql`] classifies
//! statements; [`handler`] answers dyngate's own statements; [`catalog`] owns the `dyngate` schema;
//! [`embedded`] runs the default private PostgreSQL; [`http`] is the side listener; [`server`]
//! wires them together; [`config`] reads flags, environment and file.

pub mod backend;
pub mod catalog;
pub mod config;
pub mod core;
pub mod embedded;
pub mod engine;
pub mod handler;
pub mod http;
pub mod manager;
pub mod scheduler;
pub mod server;
pub mod sql;
pub mod wire;
