//! The process's own RPC methods, with Kamailio's names and result shapes:
//! `core.version`, `core.uptime`, `core.echo`, `core.shmmem`.
//! (`system.listMethods` and `system.methodHelp` come with every registry.)

use rpc::{object, Params, Registry, RpcResult};
use serde_json::{json, Value};
use std::time::{Instant, SystemTime};

/// When the process started, by the wall clock (shown) and the monotonic
/// clock (counted, so a clock change does not move the uptime).
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// Wall-clock time of the start.
    pub at: SystemTime,
    /// Monotonic time of the start.
    pub instant: Instant,
}

impl Started {
    /// Now.
    pub fn now() -> Started {
        Started {
            at: SystemTime::now(),
            instant: Instant::now(),
        }
    }
}

/// Add the core methods to `registry`.
pub fn register(registry: &Registry, started: Started) {
    registry.register(
        "core.version",
        "The program's name, version, machine and system (Kamailio's core.version).",
        |p: &Params| -> RpcResult {
            p.no_more(0)?;
            Ok(json!(version_text()))
        },
    );
    registry.register(
        "core.uptime",
        "The local time now, when the server started, and the seconds since \
         (Kamailio's core.uptime: now, up_since, uptime).",
        move |p: &Params| -> RpcResult {
            p.no_more(0)?;
            Ok(object([
                ("now", json!(ctime(SystemTime::now()))),
                ("up_since", json!(ctime(started.at))),
                ("uptime", json!(started.instant.elapsed().as_secs())),
            ]))
        },
    );
    registry.register(
        "core.echo",
        "Answers its parameters as a list, each as it arrived (Kamailio's core.echo \
         turns each into a string; this one keeps numbers numbers).",
        |p: &Params| -> RpcResult { Ok(Value::Array(p.all().to_vec())) },
    );
    registry.register(
        "core.shmmem",
        "The process's heap, in bytes, with the fields of Kamailio's core.shmmem: \
         total (what the allocator holds from the system), used and real_used (in use \
         by the program), free (held but free), fragments (free chunks). One process, \
         one heap (glibc's malloc): no shared memory pool; no max_used (glibc keeps none).",
        |p: &Params| -> RpcResult {
            p.no_more(0)?;
            let h = heap();
            Ok(object([
                ("total", json!(h.total)),
                ("free", json!(h.free)),
                ("used", json!(h.used)),
                ("real_used", json!(h.used)),
                ("fragments", json!(h.fragments)),
            ]))
        },
    );
}

/// The heap as glibc's allocator counts it (`mallinfo2`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Heap {
    /// Held from the system: the arenas' space and the chunks mapped alone.
    total: u64,
    /// Handed out to the program and not yet freed.
    used: u64,
    /// Held in the arenas but free.
    free: u64,
    /// Free chunks in the arenas.
    fragments: u64,
}

/// The heap now. Unlike the resident set, `used` falls back when memory
/// is freed, so it tells a leak (it keeps growing) from the allocator
/// keeping freed memory for reuse (`free` and the resident set stay up).
/// It walks every arena's free lists under their locks: for an operator's
/// look, not for a hot path.
fn heap() -> Heap {
    // SAFETY: mallinfo2 takes no argument and returns a plain struct.
    let m = unsafe { libc::mallinfo2() };
    Heap {
        total: (m.arena + m.hblkhd) as u64,
        used: (m.uordblks + m.hblkhd) as u64,
        free: m.fordblks as u64,
        fragments: m.ordblks as u64,
    }
}

/// `evapi 0.1.0 (x86_64/linux) 1bd959b0a1c2`, as Kamailio words its own
/// (version, architecture and system, then the commit built).
pub fn version_text() -> String {
    format!(
        "evapi {} ({}/{}) {}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        env!("EVAPI_COMMIT")
    )
}

/// `t` as C's `ctime` writes it, in local time, without the newline:
/// `Tue Dec  1 18:42:36 2026` (the format of Kamailio's core.uptime).
fn ctime(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as libc::time_t,
        Err(_) => 0,
    };
    // SAFETY: localtime_r reads `secs` and writes only into `tm`, a plain
    // C struct that lives on this stack frame; it is the thread-safe form.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return format!("@{secs}");
    }
    ctime_of(&tm)
}

fn ctime_of(tm: &libc::tm) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS.get(tm.tm_wday as usize).unwrap_or(&"???"),
        MONTHS.get(tm.tm_mon as usize).unwrap_or(&"???"),
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_format() {
        // SAFETY: a plain C struct, all fields set below that are read.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        (tm.tm_wday, tm.tm_mon, tm.tm_mday, tm.tm_year) = (2, 11, 1, 126);
        (tm.tm_hour, tm.tm_min, tm.tm_sec) = (18, 42, 6);
        assert_eq!(ctime_of(&tm), "Tue Dec  1 18:42:06 2026");
        let now = ctime(SystemTime::now());
        assert_eq!(now.len(), 24, "{now}");
    }

    #[test]
    fn heap_used_follows_allocations_and_frees() {
        const MB: u64 = 1 << 20;
        let before = heap();
        let block = vec![1u8; 64 << 20];
        let during = heap();
        assert!(block.iter().step_by(4096).all(|&b| b == 1));
        drop(block);
        let after = heap();
        // Other tests of this binary allocate meanwhile: margins of 16 MB.
        assert!(
            during.used >= before.used + 48 * MB,
            "{before:?} {during:?}"
        );
        assert!(during.used >= after.used + 48 * MB, "{during:?} {after:?}");
        assert!(during.total >= during.used, "{during:?}");
    }

    #[test]
    fn shapes_as_kamailio() {
        let r = Registry::new();
        register(&r, Started::now());
        let v = r.call("core.version", Value::Null).unwrap();
        let v = v.as_str().unwrap();
        assert!(
            v.starts_with(&format!("evapi {} (", env!("CARGO_PKG_VERSION"))),
            "{v}"
        );
        let up = r.call("core.uptime", json!([])).unwrap();
        assert!(up["now"].is_string() && up["up_since"].is_string(), "{up}");
        assert!(up["uptime"].is_u64(), "{up}");
        let e = r.call("core.uptime", json!([1])).unwrap_err();
        assert_eq!(e.code, rpc::code::INVALID_PARAMS);
        assert_eq!(
            r.call("core.echo", json!([1, "1", 1.5])).unwrap(),
            json!([1, "1", 1.5])
        );
        assert_eq!(r.call("core.echo", Value::Null).unwrap(), json!([]));
        let m = r.call("core.shmmem", json!([])).unwrap();
        let f = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("{k} in {m}"));
        assert!(f("used") > 0 && f("used") == f("real_used"), "{m}");
        assert!(f("total") >= f("used") && f("total") >= f("free"), "{m}");
        assert!(r.call("core.shmmem", json!([1])).is_err());
    }
}
