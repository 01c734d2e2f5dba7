//! Workflow schedulers for FULL-mode tables. The embedded one is the refresh loop
//! ([`crate::manager::scheduler`]); external ones (Apache Airflow now, DolphinScheduler to come)
//! hold a table's schedule themselves and call the refresh endpoint when it fires.
//!
//! So far this holds the pure parts of the Airflow plug-in ([`airflow`]): the cron it is given,
//! the DAG id, and the DAG file; and the HTTP client the plug-ins will talk through
//! ([`client`]). The plug-in interface and Airflow's REST calls come next (see
//! docs/airflow-facts.md for the behaviour they are written against).

pub mod airflow;
pub mod client;
