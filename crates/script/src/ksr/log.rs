//! Logging: `KSR.dbg`, `KSR.info`, `KSR.notice`, `KSR.warn`, `KSR.err`,
//! `KSR.crit`, `KSR.alert` (msg) and `KSR.log(level, msg)`, at the tracing
//! level closest to Kamailio's; a trailing newline is dropped.

use super::module::Module;
use mlua::LuaString;
use tracing::{debug, error, info, warn};

/// Log `msg` at Kamailio's `level`; false for an unknown level.
pub(crate) fn log_at(level: &str, msg: &str) -> bool {
    let msg = msg.trim_end_matches(['\n', '\r']);
    match level {
        "dbg" | "debug" => debug!(target: "script", "{msg}"),
        "info" | "notice" => info!(target: "script", "{msg}"),
        "warn" | "warning" => warn!(target: "script", "{msg}"),
        "err" | "error" | "crit" | "alert" | "bug" => error!(target: "script", "{msg}"),
        _ => return false,
    }
    true
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    for level in ["dbg", "info", "notice", "warn", "err", "crit", "alert"] {
        m.func(level, move |_, msg: LuaString| {
            log_at(level, &msg.to_string_lossy());
            Ok(())
        })?;
    }
    m.func("log", |cx, (level, msg): (String, LuaString)| {
        let msg = msg.to_string_lossy();
        if !log_at(&level, &msg) {
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
        assert!(super::log_at("notice", "x\n"));
        assert!(!super::log_at("loud", "x"));
        // A message that is not text (no tostring) is a Lua error.
        assert!(vm.try_run("KSR.info({})").is_err());
    }
}
