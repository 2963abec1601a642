//! How a script function is called from Rust: found by name in the
//! globals (the names interned per VM), run with `lua_pcall` and no
//! message handler, and how its call ended read back as an mlua error.
//! [`super`] decides which function runs for what, and what its end
//! means.

use mlua::{Function, Lua, LuaString, Value};
use std::collections::HashMap;

/// Run `f` with `args`: `Ok` when it returned, `Err` with what it raised.
/// As [`run_named`] does once it has the function: `lua_pcall` with no
/// message handler, so an error raised in the route comes back as a value
/// instead of going through mlua's error handler, which would build a
/// traceback for it (the cost `KSR.x.exit()` must not pay; see
/// `ksr/x.rs`). Only the first two results are taken: no list of values
/// is built for a route's return.
pub(super) fn run(
    lua: &Lua,
    f: Function,
    args: impl mlua::IntoLuaMulti,
) -> mlua::Result<Result<(), mlua::Error>> {
    // SAFETY: as in `run_named`: the function at index 1, its arguments
    // above it.
    let (ok, err) = unsafe {
        lua.exec_raw::<(Value, Value)>((f, args), |l| {
            pcall_at_bottom(l, mlua::ffi::lua_gettop(l) - 1)
        })?
    };
    Ok(ended(ok, err))
}

/// Call the function at index 1 with the `nargs` values above it, with no
/// message handler, and leave `true`, or `false` and the error, as a Lua
/// `pcall` returns them.
///
/// # Safety
/// `l` is a state in a C function's frame (mlua's `exec_raw`) holding
/// exactly the function and its arguments.
unsafe fn pcall_at_bottom(l: *mut mlua::ffi::lua_State, nargs: std::ffi::c_int) {
    use mlua::ffi;
    // SAFETY: per this function's contract; a failed call leaves one
    // error value, under which `false` is put.
    unsafe {
        if ffi::lua_pcall(l, nargs, 0, 0) == ffi::LUA_OK {
            ffi::lua_pushboolean(l, 1);
        } else {
            ffi::lua_pushboolean(l, 0);
            ffi::lua_insert(l, -2);
        }
    }
}

/// Run the global function `name` with `args`: `None` when it is not
/// defined (not a function), else as [`run`]. [`run_by_name`] tries
/// [`run_direct`] first; this takes the calls it leaves (a name not in
/// globals that have a metatable, a stack that cannot grow).
///
/// Done with Lua's C API inside one protected call of mlua's
/// (`exec_raw`): a raw read of the globals, then `lua_pcall` of the
/// function with no message handler, leaving `true` or `false, error` as
/// a Lua `pcall` returns them. When the raw read finds nothing and the
/// globals have a metatable, the name is looked up through it (so an
/// `__index` is asked) in a protected call of its own: an error there
/// means "not defined", as a strict-mode `__index` raises for an unknown
/// name. Before, a runner written in Lua did this; the C API skips its
/// Lua code, its `pcall` and mlua's call machinery around it: 1,073 of
/// the 20,178 instructions of a stateless request, 5 %
/// (`bench/instructions.py`).
fn run_named(
    lua: &Lua,
    name: LuaString,
    args: impl mlua::IntoLuaMulti,
) -> mlua::Result<Option<Result<(), mlua::Error>>> {
    use mlua::ffi;
    /// `t[k]` for `t, k` at 1 and 2: one result.
    unsafe extern "C-unwind" fn index(l: *mut ffi::lua_State) -> std::ffi::c_int {
        // SAFETY: called by `lua_pcall` below with two arguments.
        unsafe { ffi::lua_gettable(l, 1) };
        1
    }
    let mut ran = false;
    // SAFETY: the closure runs on the VM's own state, in mlua's protected
    // call, with the name at index 1 and the arguments above it. It uses
    // at most five of the 20 stack slots a C function is given, calls
    // nothing that can raise outside its own `lua_pcall`s (raw reads,
    // pushes of existing values and of a C function, a boolean), holds
    // nothing with a destructor, and leaves only values for mlua to read
    // back.
    let (ok, err) = unsafe {
        lua.exec_raw::<(Value, Value)>((name, args), |l| {
            let nargs = ffi::lua_gettop(l) - 1;
            ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
            ffi::lua_pushvalue(l, 1);
            let mut t = ffi::lua_rawget(l, -2);
            if t == ffi::LUA_TNIL && ffi::lua_getmetatable(l, -2) != 0 {
                // [name, args.., G, nil, mt] -> [name, args.., G, G[name]]
                ffi::lua_pop(l, 2);
                ffi::lua_pushcfunction(l, index);
                ffi::lua_pushvalue(l, -2);
                ffi::lua_pushvalue(l, 1);
                t = match ffi::lua_pcall(l, 2, 1, 0) {
                    ffi::LUA_OK => ffi::lua_type(l, -1),
                    _ => ffi::LUA_TNIL,
                };
            }
            if t != ffi::LUA_TFUNCTION {
                ffi::lua_settop(l, 0);
                return;
            }
            // [name, args.., G, f] -> [f, args..]
            ffi::lua_replace(l, 1);
            ffi::lua_pop(l, 1);
            ran = true;
            pcall_at_bottom(l, nargs);
        })?
    };
    Ok(ran.then(|| ended(ok, err)))
}

/// Run the global function `name` with `args`: `None` when it is not
/// defined (not a function), else how it ended. [`run_direct`] when it
/// can, else [`run_named`].
pub(super) fn run_by_name<A: mlua::IntoLuaMulti>(
    lua: &Lua,
    name: LuaString,
    args: A,
) -> mlua::Result<Option<Result<(), mlua::Error>>> {
    match run_direct(lua, &name, args)? {
        Direct::Ran(r) => Ok(Some(r)),
        Direct::Missing => Ok(None),
        Direct::Ask(args) => run_named(lua, name, args),
    }
}

/// What [`run_direct`] found.
enum Direct<A> {
    /// The function ran: how it ended.
    Ran(Result<(), mlua::Error>),
    /// The name is not a function of the globals.
    Missing,
    /// The raw read found nothing and the globals have a metatable (or
    /// the stack could not grow): ask [`run_named`], with the arguments.
    Ask(A),
}

/// Run the global function `name` with `args` as [`run_named`] does,
/// with no protected call around it: the reads and pushes before the
/// function's own `lua_pcall` cannot raise (a raw read of the globals,
/// values already in the VM, the arguments pushed by mlua the way it
/// pushes them anywhere), so they need none. mlua's `exec_raw` makes one
/// (a `lua_pcall` of a Rust closure) and reads the results back as a
/// list of values: about 900 of the 17,800 instructions of a stateless
/// request (`bench/instructions.py --script base`), on every route and
/// event call.
///
/// A name the raw read does not find in globals that have a metatable
/// is left to [`run_named`], which asks the metatable in a protected
/// call.
fn run_direct<A: mlua::IntoLuaMulti>(
    lua: &Lua,
    name: &LuaString,
    args: A,
) -> mlua::Result<Direct<A>> {
    use mlua::ffi;
    lua.exec_raw_lua(|raw| {
        let l = raw.state();
        // SAFETY: `l` is the VM's running state, under mlua's lock. The
        // stack is checked for room before anything is pushed; the raw
        // read, `lua_pushvalue` and `lua_remove` do not allocate, and
        // mlua's pushes protect themselves where they allocate. The
        // stack is put back to `top` on every way out.
        unsafe {
            let top = ffi::lua_gettop(l);
            if ffi::lua_checkstack(l, 8) == 0 {
                return Ok(Direct::Ask(args));
            }
            ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
            if let Err(e) = raw.push(name) {
                ffi::lua_settop(l, top);
                return Err(e);
            }
            let t = ffi::lua_rawget(l, -2);
            if t != ffi::LUA_TFUNCTION {
                let ask = t == ffi::LUA_TNIL && ffi::lua_getmetatable(l, -2) != 0;
                ffi::lua_settop(l, top);
                return Ok(if ask {
                    Direct::Ask(args)
                } else {
                    Direct::Missing
                });
            }
            // [.., G, f] -> [.., f, args..]
            ffi::lua_remove(l, -2);
            let nargs = match args.push_into_stack_multi(raw) {
                Ok(n) => n,
                Err(e) => {
                    ffi::lua_settop(l, top);
                    return Err(e);
                }
            };
            let r = if ffi::lua_pcall(l, nargs, 0, 0) == ffi::LUA_OK {
                Ok(())
            } else {
                ended(Value::Boolean(false), raw.pop_value())
            };
            ffi::lua_settop(l, top);
            Ok(Direct::Ran(r))
        }
    })
}

/// How a route call ended: the first two values its `lua_pcall` left.
fn ended(ok: Value, err: Value) -> Result<(), mlua::Error> {
    if matches!(ok, Value::Boolean(true)) {
        return Ok(());
    }
    Err(match err {
        Value::Error(e) => *e,
        // What Lua raises when an allocation fails ([script] memory_limit_mb).
        Value::String(s) if s.as_bytes() == b"not enough memory" => {
            mlua::Error::MemoryError(s.to_string_lossy())
        }
        Value::String(s) => mlua::Error::RuntimeError(s.to_string_lossy()),
        Value::Nil => mlua::Error::RuntimeError("(no error object)".into()),
        other => mlua::Error::RuntimeError(
            other
                .to_string()
                .unwrap_or_else(|_| format!("(error object: {})", other.type_name())),
        ),
    })
}

/// Most function names kept interned per VM (route names come from the
/// script and the configuration; a script naming routes from data would
/// otherwise grow the cache without end: past the cap, a name is looked
/// up as text).
const MAX_FN_NAMES: usize = 256;

/// The Lua strings of the global function names called from Rust, per VM:
/// looking a route up then pushes a reference, not the name's text.
#[derive(Default)]
struct FnNames(HashMap<Box<str>, LuaString, foldhash::fast::RandomState>);

/// The Lua string of the function name `name` (interned per VM, up to
/// [`MAX_FN_NAMES`]).
pub(super) fn fn_name(lua: &Lua, name: &str) -> Option<LuaString> {
    let key = {
        let names = lua.app_data_ref::<FnNames>();
        names.and_then(|n| n.0.get(name).cloned())
    };
    if key.is_some() {
        return key;
    }
    let k = lua.create_string(name).ok()?;
    if lua.app_data_ref::<FnNames>().is_none() {
        lua.set_app_data(FnNames::default());
    }
    if let Some(mut n) = lua.app_data_mut::<FnNames>() {
        if n.0.len() < MAX_FN_NAMES {
            n.0.insert(name.into(), k.clone());
        }
    }
    Some(k)
}

/// The global function `name`, if the script defines one. A raw read of
/// the globals (no `__index` call through a protected Lua call) when they
/// have no metatable, which is what scripts do; else a plain read.
pub(super) fn function(lua: &Lua, name: &str) -> Option<Function> {
    let globals = lua.globals();
    let key = fn_name(lua, name)?;
    let found = if globals.metatable().is_none() {
        globals.raw_get::<Value>(&key)
    } else {
        globals.get::<Value>(&key)
    };
    match found {
        Ok(Value::Function(f)) => Some(f),
        _ => None,
    }
}
