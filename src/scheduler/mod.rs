//! Workflow schedulers for FULL-mode tables. The embedded one is the refresh loop
//! ([`crate::manager::scheduler`]); external ones (Apache Airflow now, DolphinScheduler to come)
//! hold a table's schedule themselves and call the refresh endpoint when it fires.
//!
//! [`airflow`] is the Airflow plug-in (a DAG file per table, Airflow's REST API; see
//! docs/airflow-facts.md for the behaviour it is written against), [`client`] the HTTP client it
//! talks through. The manager calls it from its operations (`manager::external`). A plug-in
//! interface shared with DolphinScheduler comes with the second plug-in.

pub mod airflow;
pub mod client;
