//! `[script] max_route_ms` and `[script] memory_limit_mb`: a runaway route
//! fails alone. A route or event callback that runs past its time is
//! stopped with a script error naming the script line it was at; a Lua
//! state that would grow past its memory limit fails the allocation with a
//! script error. Either way the call ends as any failed call does (a
//! request that got no reply gets 500), and the thread goes on serving.
//!
//! The time limit is checked by an instruction hook every
//! [`CHECK_EVERY`] Lua instructions (tens of microseconds of Lua), so it
//! costs nothing measurable; it cannot interrupt a single C call that
//! blocks (a `KSR` function, `os.execute`, a C module), only Lua code. A
//! script that catches the error with `pcall` is stopped again at the next
//! check, since the deadline stays passed until the call returns.

use mlua::{HookTriggers, Lua, VmState};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Lua instructions between two deadline checks.
pub const CHECK_EVERY: u32 = 10_000;

/// The limits of each Lua state, from `[script]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest a route or event callback may run, in milliseconds, counted
    /// from when the outermost script function was called (a route resumed
    /// by `t_continue` inside an event callback shares the callback's
    /// time). 0: no limit.
    pub max_route_ms: u64,
    /// Most memory one Lua state (one per script thread) may hold, in MiB.
    /// 0: no limit.
    pub memory_limit_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Far beyond any route that does not block (they take
            // microseconds); short enough that a loop is noticed.
            max_route_ms: 5_000,
            memory_limit_mb: 256,
        }
    }
}

/// Largest `max_route_ms`: an hour.
pub const MAX_ROUTE_MS: u64 = 3_600_000;
/// Largest `memory_limit_mb`: 64 GiB.
pub const MAX_MEMORY_MB: u64 = 64 * 1024;

/// The deadline of the call running on this VM, if any.
#[derive(Default)]
struct Deadline {
    at: Option<Instant>,
    limit: Duration,
}

/// Apply `limits` to a new VM.
pub(crate) fn install(lua: &Lua, limits: &Limits) -> mlua::Result<()> {
    if limits.memory_limit_mb > 0 {
        lua.set_memory_limit((limits.memory_limit_mb as usize).saturating_mul(1 << 20))?;
    }
    if limits.max_route_ms == 0 {
        return Ok(());
    }
    lua.set_app_data(Deadline {
        at: None,
        limit: Duration::from_millis(limits.max_route_ms),
    });
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(CHECK_EVERY),
        |lua, debug| {
            let passed = lua
                .app_data_ref::<Deadline>()
                .and_then(|d| d.at.map(|at| (at, d.limit)))
                .filter(|(at, _)| Instant::now() >= *at);
            let Some((_, limit)) = passed else {
                return Ok(VmState::Continue);
            };
            let src = debug.source();
            let file = src.short_src.as_deref().unwrap_or("?");
            let line = debug.current_line().unwrap_or(0);
            Err(mlua::Error::runtime(format!(
                "{file}:{line}: stopped: the call ran past [script] max_route_ms = {} ms",
                limit.as_millis()
            )))
        },
    )
}

/// What [`enter`] found, for [`leave`] to put back.
pub(crate) struct Outer(Option<Option<Instant>>);

/// A script function is about to run: start the clock, unless an outer
/// call (an event callback around a resumed route) already did.
pub(crate) fn enter(lua: &Lua) -> Outer {
    let Some(mut d) = lua.app_data_mut::<Deadline>() else {
        return Outer(None);
    };
    let before = d.at;
    if before.is_none() {
        d.at = Some(Instant::now() + d.limit);
    }
    Outer(Some(before))
}

/// The function returned: restore what [`enter`] found.
pub(crate) fn leave(lua: &Lua, outer: Outer) {
    if let (Some(before), Some(mut d)) = (outer.0, lua.app_data_mut::<Deadline>()) {
        d.at = before;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(limits: Limits) -> Lua {
        let lua = Lua::new();
        install(&lua, &limits).unwrap();
        lua
    }

    #[test]
    fn a_loop_is_stopped_with_its_line_and_the_vm_goes_on() {
        let lua = vm(Limits {
            max_route_ms: 50,
            memory_limit_mb: 0,
        });
        lua.load("function spin()\n  local n = 0\n  while true do n = n + 1 end\nend\nfunction ok() return 7 end")
            .set_name("@loop.lua")
            .exec()
            .unwrap();
        let outer = enter(&lua);
        let err = lua
            .globals()
            .get::<mlua::Function>("spin")
            .unwrap()
            .call::<()>(())
            .unwrap_err()
            .to_string();
        leave(&lua, outer);
        assert!(
            err.contains("loop.lua:3:") && err.contains("max_route_ms = 50 ms"),
            "{err}"
        );
        // The next call has its own time.
        let outer = enter(&lua);
        let seven: i64 = lua
            .globals()
            .get::<mlua::Function>("ok")
            .unwrap()
            .call(())
            .unwrap();
        leave(&lua, outer);
        assert_eq!(seven, 7);
    }

    #[test]
    fn outside_a_call_there_is_no_deadline() {
        let lua = vm(Limits {
            max_route_ms: 1,
            memory_limit_mb: 0,
        });
        // Loading (the script's top level) is not a route: not stopped.
        lua.load("local n = 0 for i = 1, 300000 do n = n + i end")
            .exec()
            .unwrap();
    }

    #[test]
    fn memory_past_the_limit_is_an_error_not_an_abort() {
        let lua = vm(Limits {
            max_route_ms: 0,
            memory_limit_mb: 8,
        });
        let err = lua
            .load("local t = {} while true do t[#t + 1] = string.rep('x', 4096) .. #t end")
            .exec()
            .unwrap_err();
        assert!(matches!(err, mlua::Error::MemoryError(_)), "{err}");
        // The garbage goes; the state serves again.
        lua.gc_collect().unwrap();
        let s: String = lua.load("return string.rep('y', 1000)").eval().unwrap();
        assert_eq!(s.len(), 1000);
    }
}
