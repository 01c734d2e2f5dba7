//! The embedded scheduler as a plug-in. Its schedules are the catalog rows themselves: the refresh
//! loop ([`crate::manager::scheduler`]) claims due slots from `dyngate.dynamic_table`, skips
//! suspended tables and follows a changed freshness at its next tick. So there is nothing to
//! create, change or remove elsewhere, and every operation here succeeds without doing anything.

use super::{BoxFuture, Handle, Plugin, PluginError, Repair, Target};
use crate::core::rules::Freshness;
use crate::core::{SchedulerKind, rules};

pub struct Embedded;

impl Plugin for Embedded {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Embedded
    }

    fn check(&self, f: Freshness) -> Result<(), PluginError> {
        rules::full_mode_cron(f)
            .map(|_| ())
            .map_err(|e| PluginError::Unschedulable(e.to_string()))
    }

    fn register<'a>(&'a self, _: &'a Target<'a>, _: bool) -> BoxFuture<'a, Result<Handle, PluginError>> {
        Box::pin(async { Ok(Handle::none()) })
    }

    fn reschedule<'a>(&'a self, h: &'a Handle, _: &'a Target<'a>) -> BoxFuture<'a, Result<Handle, PluginError>> {
        Box::pin(async { Ok(h.clone()) })
    }

    fn set_active<'a>(&'a self, _: &'a Handle, _: bool) -> BoxFuture<'a, Result<(), PluginError>> {
        Box::pin(async { Ok(()) })
    }

    fn unregister<'a>(&'a self, _: &'a Handle) -> BoxFuture<'a, Result<(), PluginError>> {
        Box::pin(async { Ok(()) })
    }

    fn reconcile<'a>(&'a self, _: &'a Handle, _: &'a Target<'a>, _: bool) -> BoxFuture<'a, Result<Repair, PluginError>> {
        Box::pin(async { Ok(Repair::InPlace(vec![])) })
    }

    fn list<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<Handle>, PluginError>> {
        Box::pin(async { Ok(vec![]) })
    }

    fn key(&self, _: &Handle) -> String {
        String::new()
    }

    fn summary(&self, _: &Handle) -> String {
        "embedded (the gateway's refresh loop)".to_string()
    }
}
