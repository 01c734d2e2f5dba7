//! The core: what every other layer shares and that imports nothing of dyngate. Names and
//! quoting ([`names`]), the domain's kinds ([`kinds`]), who asks and why a refresh runs
//! ([`request`]), the pure rules of dynamic tables ([`rules`]), schedule times ([`time`]) and
//! the user-facing error with its SQLSTATE and HTTP status ([`error`]). No I/O here.

pub mod error;
pub mod kinds;
pub mod names;
pub mod request;
pub mod rules;
pub mod time;

pub use error::Error;
pub use kinds::{EngineKind, LogicalMode, RefreshAction, RefreshMode, SchedulerKind, Status};
pub use names::{QualifiedName, quote_ident, quote_literal};
pub use request::{Requester, Trigger};
