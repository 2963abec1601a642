//! Logging: `KSR.dbg`, `KSR.info`, `KSR.notice`, `KSR.warn`, `KSR.err`,
//! `KSR.crit`, `KSR.alert` (msg) and `KSR.log(level, msg)`, at the tracing
//! level closest to Kamailio's; a trailing newline is dropped.

use super::module::Module;
use crate::diag;
use mlua::{Lua, LuaString};
use tracing::{debug, info};

/// Log `msg` at Kamailio's `level`; false for an unknown level. Warnings
/// and errors carry their script line and Call-ID and are rate-limited per
/// script line (see [`crate::diag`]); debug and info lines are the
/// operator's choice and are not.
pub(crate) fn log_at(lua: &Lua, level: &str, msg: &str) -> bool {
    let msg = msg.trim_end_matches(['\n', '\r']);
    match level {
        "dbg" | "debug" => debug!(target: "script", "{msg}"),
        "info" | "notice" => info!(target: "script", "{msg}"),
        "warn" | "warning" => diag::emit(lua, diag::Level::Warn, &msg),
        "err" | "error" | "crit" | "alert" | "bug" => diag::emit(lua, diag::Level::Error, &msg),
        _ => return false,
    }
    true
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    for level in ["dbg", "info", "notice", "warn", "err", "crit", "alert"] {
        m.func(level, move |cx, msg: LuaString| {
            // Borrowed when it is UTF-8 (a debug line that is not logged
            // then costs no copy).
            match msg.to_str() {
                Ok(text) => log_at(cx.lua, level, &text),
                Err(_) => log_at(cx.lua, level, &msg.to_string_lossy()),
            };
            Ok(())
        })?;
    }
    m.func("log", |cx, (level, msg): (String, LuaString)| {
        let msg = msg.to_string_lossy();
        if !log_at(cx.lua, &level, &msg) {
            cx.warn(format_args!("unknown level {level:?}; message: {msg}"));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::Vm;

    #[test]
    fn levels_log_and_unknown_level_is_not_an_error() {
        let vm = Vm::new();
        vm.run(
            r#"KSR.info("hello\n"); KSR.dbg("d"); KSR.err("e"); KSR.alert("a")
               KSR.log("warn", "w"); KSR.log("nonsense", "still fine")"#,
        );
        assert!(super::log_at(&vm.lua, "notice", "x\n"));
        assert!(!super::log_at(&vm.lua, "loud", "x"));
        // A message that is not text (no tostring) is a Lua error.
        assert!(vm.try_run("KSR.info({})").is_err());
    }
}
