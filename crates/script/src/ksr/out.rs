//! A string a `KSR` function returns, pushed onto Lua's stack directly.
//!
//! With a memory limit set (`[script] memory_limit_mb`, 256 by default),
//! mlua makes every Lua string from Rust inside a protected call, since
//! an allocation past the limit raises a Lua error and a Lua error must
//! not cross Rust frames; the string is then held by a registry
//! reference until mlua pushes it as the function's result. For the
//! strings a script reads on every request (`KSR.pv.get("$ru")`...) that
//! was most of the read's cost: pushing them directly took the relay
//! script's request (8 reads, 6 of them strings) from 39,676 to 34,797
//! instructions (`bench/instructions.py --script relay`, fat LTO).
//!
//! [`Out::text`] pushes the string itself, with `lua_pushlstring` alone,
//! when that cannot raise: the only error `lua_pushlstring` can raise in
//! Lua 5.4 is a memory error (an error in a finalizer the collector runs
//! becomes a warning), so it cannot when the VM has room for the string
//! and for the string table doubling (it only grows for a new short
//! string, by at most the memory already in use). Otherwise, or when the
//! limit is not known, the string is made the protected way.
//!
//! The value pushed is the callback's result: nothing touches the stack
//! between the push and mlua counting the result ([`Out`]'s
//! `push_into_stack` adds nothing for it).

use mlua::state::RawLua;
use mlua::{ffi, IntoLua, Lua, Value};

/// What the VM's memory limit is, as far as [`Out::text`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemoryLimit {
    /// Not known (a VM built outside an engine, e.g. to check a script):
    /// every string is made the protected way.
    Unknown,
    /// The VM has no limit (`memory_limit_mb = 0`).
    None,
    /// The VM's limit, in bytes.
    Bytes(usize),
}

impl MemoryLimit {
    /// The limit `[script] memory_limit_mb` sets (see
    /// [`crate::limits::install`], which sets it on each VM).
    pub(crate) fn from_mb(mb: u64) -> MemoryLimit {
        if mb == 0 {
            MemoryLimit::None
        } else {
            MemoryLimit::Bytes((mb as usize).saturating_mul(1 << 20))
        }
    }

    /// Whether a string of `len` bytes can be made with `used` bytes in
    /// use without reaching the limit: the string (its header is under 64
    /// bytes) plus a doubling of the string table (at most `used` more,
    /// since each interned string takes more memory than its slot).
    fn room(self, used: usize, len: usize) -> bool {
        match self {
            MemoryLimit::Unknown => false,
            MemoryLimit::None => true,
            MemoryLimit::Bytes(limit) => {
                used.saturating_mul(2)
                    .saturating_add(len)
                    .saturating_add(1024)
                    <= limit
            }
        }
    }
}

/// A `KSR` function's result.
pub(crate) enum Out {
    /// A value mlua pushes.
    Value(Value),
    /// Already pushed, on top of the stack the function returns from.
    Pushed,
}

impl Out {
    /// `text` as the result: pushed now when that cannot raise (see the
    /// module's comment), else a Lua string made the protected way. Call
    /// it last: the pushed string must stay on top until the function
    /// returns.
    pub(crate) fn text(lua: &Lua, limit: MemoryLimit, text: &[u8]) -> mlua::Result<Out> {
        if limit.room(lua.used_memory(), text.len()) {
            let pushed = lua.exec_raw_lua(|raw| {
                let state = raw.state();
                // SAFETY: `state` is the running callback's; a free slot
                // is checked first (growing the stack fails without
                // raising), and with room for the string the push cannot
                // raise (module comment).
                unsafe {
                    if ffi::lua_checkstack(state, 1) == 0 {
                        return false;
                    }
                    ffi::lua_pushlstring(state, text.as_ptr().cast(), text.len());
                }
                true
            });
            if pushed {
                return Ok(Out::Pushed);
            }
        }
        Ok(Out::Value(Value::String(lua.create_string(text)?)))
    }
}

impl From<Value> for Out {
    fn from(v: Value) -> Out {
        Out::Value(v)
    }
}

impl IntoLua for Out {
    fn into_lua(self, lua: &Lua) -> mlua::Result<Value> {
        match self {
            Out::Value(v) => Ok(v),
            // SAFETY: the value pushed by `Out::text` is on top.
            Out::Pushed => lua.exec_raw_lua(|raw| unsafe { Ok(raw.pop_value()) }),
        }
    }

    unsafe fn push_into_stack(self, raw: &RawLua) -> mlua::Result<()> {
        match self {
            Out::Value(v) => raw.push_value(&v),
            Out::Pushed => Ok(()),
        }
    }
}

impl super::module::KemiReturn for Out {
    fn failed(_: i64) -> Self {
        Out::Value(Value::Nil)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};
    use super::*;

    /// With room, the value read is the function's result (were it not
    /// left on top, the result would be the name passed in), in one call
    /// and in many, and `gete`'s "" for a null as well.
    #[test]
    fn strings_read_with_room_are_the_results() {
        let vm = Vm::with_memory_limit_mb(64);
        let mut req = request("INVITE", &format!("X-Long: {}\r\n", "v".repeat(3000)));
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(String, String, String, i64, String, Option<String>, String)>(
                r#"KSR.pv.get("$rm"), KSR.pv.get("$ru"), KSR.pv.get("$ci"),
                   KSR.pv.get("$sp"), KSR.pv.gete("$hdr(X-None)"),
                   KSR.pv.get("$hdr(X-None)"), KSR.pv.get("$hdr(X-Long)")"#,
            )
        });
        assert_eq!(r.0, "INVITE");
        assert_eq!(r.1, "sip:bob@example.com:5070");
        assert_eq!(r.2, "cid-1");
        assert_eq!(r.3, 5061);
        assert_eq!(r.4, "");
        assert_eq!(r.5, None);
        assert_eq!(r.6, "v".repeat(3000));
        let n = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(
                r#"local n = 0
                   for i = 1, 20000 do
                       local a, b = KSR.pv.get("$ci"), KSR.pv.gete("$var(unset)")
                       if a == "cid-1" and b == "" then n = n + 1 end
                   end
                   return n"#,
            )
        });
        assert_eq!(n, 20000);
        // From a coroutine: pushed onto the coroutine's own stack.
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(String, String)>(
                r#"coroutine.wrap(function()
                       local a = KSR.pv.get("$rm")
                       coroutine.yield(a, KSR.pv.get("$ci"))
                   end)()"#,
            )
        });
        assert_eq!(r, ("INVITE".to_string(), "cid-1".to_string()));
    }

    /// Near the limit the string is made the protected way: a read either
    /// gives the value or fails with a memory error the script can catch,
    /// and the VM goes on once memory is freed.
    #[test]
    fn near_the_limit_a_read_fails_cleanly() {
        let vm = Vm::with_memory_limit_mb(4);
        let mut req = request("INVITE", &format!("X-Long: {}\r\n", "w".repeat(20_000)));
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, bool)>(
                r#"local want, hog = string.rep("w", 20000), {}
                   -- fill memory until an allocation fails
                   local ok = pcall(function()
                       for i = 1, 1e9 do hog[i] = string.rep("x", 1000) .. i end
                   end)
                   assert(not ok)
                   -- drop a little, so that small allocations succeed again
                   for i = #hog, #hog - 60, -1 do hog[i] = nil end
                   collectgarbage()
                   local good, failed = 0, 0
                   for i = 1, 200 do
                       local ok, v = pcall(KSR.pv.get, "$hdr(X-Long)")
                       if ok and v == want then good = good + 1
                       elseif not ok and tostring(v):find("memory") then failed = failed + 1
                       else error("unexpected: " .. tostring(ok) .. " " .. tostring(v)) end
                   end
                   hog = nil
                   collectgarbage()
                   return good, failed, KSR.pv.get("$ci") == "cid-1""#,
            )
        });
        assert_eq!(r.0 + r.1, 200, "{r:?}");
        assert!(r.2, "reads work again once memory is freed");
    }

    /// The VM of a script being checked does not know the limit: the
    /// protected way, with the same results.
    #[test]
    fn without_a_known_limit_the_results_are_the_same() {
        let vm = Vm::new();
        let mut req = request("OPTIONS", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(String, String)>(r#"KSR.pv.get("$ci"), KSR.pv.gete("$hdr(X-None)")"#)
        });
        assert_eq!(r, ("cid-1".to_string(), String::new()));
    }

    #[test]
    fn room_counts_the_string_and_a_string_table_doubling() {
        let mb = MemoryLimit::from_mb(1);
        assert_eq!(mb, MemoryLimit::Bytes(1 << 20));
        assert!(mb.room(1000, 100));
        // Half the limit in use: no room, whatever the length.
        assert!(!mb.room(1 << 19, 0));
        assert!(!mb.room(0, 1 << 20));
        assert!(MemoryLimit::from_mb(0).room(usize::MAX, usize::MAX));
        assert!(!MemoryLimit::Unknown.room(0, 0));
    }
}
