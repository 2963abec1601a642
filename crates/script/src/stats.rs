//! The script's counters: route runs that failed, and route functions
//! named but not defined. Counted where the call ends, from the Lua state's
//! app data, so a run that succeeds pays nothing for them.

use mlua::Lua;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the script's runs have gone through since the engine was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptStats {
    /// Runs of a route, failure route, reply route, branch route or event
    /// callback that ended in an error: a Lua error or exception, the
    /// memory or time limit, or a state that could not be loaded on a
    /// thread. (`KSR.x.exit()` and `KSR.x.drop()` are not errors.)
    pub errors: u64,
    /// Calls of a route function that the script does not define (a
    /// failure route or reply route named by `KSR.tm.*`, for one).
    pub missing_functions: u64,
}

/// The counters, shared by every Lua state of one engine.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    errors: AtomicU64,
    missing_functions: AtomicU64,
}

/// What went wrong with one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Error,
    Missing,
}

impl Counters {
    pub(crate) fn count(&self, what: Failure) {
        let c = match what {
            Failure::Error => &self.errors,
            Failure::Missing => &self.missing_functions,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> ScriptStats {
        ScriptStats {
            errors: self.errors.load(Ordering::Relaxed),
            missing_functions: self.missing_functions.load(Ordering::Relaxed),
        }
    }
}

/// Count a failure against the engine whose state `lua` is (a state built
/// outside an engine, in unit tests, counts nowhere).
pub(crate) fn count(lua: &Lua, what: Failure) {
    if let Some(c) = lua.app_data_ref::<Arc<Counters>>() {
        c.count(what);
    }
}
