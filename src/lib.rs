//! dyngate: a PostgreSQL wire-protocol gateway that keeps dynamic tables fresh.
//!
//! Layout, bottom up (docs/architecture.md draws it; tests/layering.rs keeps it): [`core`] holds
//! names, kinds, rules and the user-facing error and imports nothing of dyngate; [`backend`] says
//! where the backing PostgreSQL is, [`sql`] classifies and parses statements, [`http_client`]
//! talks HTTP to other services; [`catalog`] owns the `dyngate` schema and its typed rows,
//! [`local_postgres`] runs the default private PostgreSQL; [`engine`] refreshes tables (PostgreSQL,
//! Flink) and [`scheduler`] fires FULL tables' refreshes (embedded, Airflow, DolphinScheduler);
//! [`manager`] runs the operations; [`handler`] answers dyngate's own statements and [`http`] is
//! the side listener; [`wire`] speaks the protocol and relays to the backing PostgreSQL;
//! [`config`] reads flags, environment and file; [`server`] wires them together.

pub mod backend;
pub mod catalog;
pub mod config;
pub mod core;
pub mod engine;
pub mod handler;
pub mod http;
pub mod http_client;
pub mod local_postgres;
pub mod manager;
pub mod scheduler;
pub mod server;
pub mod sql;
pub mod wire;
