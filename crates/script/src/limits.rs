//! `[script] max_route_ms` and `[script] memory_limit_mb`: a runaway route
//! fails alone. A route or event callback that runs past its time is
//! stopped with a script error naming the script line it was at; a Lua
//! state that would grow past its memory limit fails the allocation with a
//! script error. Either way the call ends as any failed call does (a
//! request that got no reply gets 500), and the thread goes on serving.
//!
//! The time limit costs a route nothing while it keeps within it: no
//! instruction hook is set (a count hook makes Lua 5.4 call into its hook
//! code on every instruction and every return, 5-15 % of the basic
//! script's Lua time, BENCHMARKS.md). Each thread that runs calls writes
//! its call's deadline where a watchdog thread sees it; the watchdog looks
//! every half limit (at most every second) and, at a call past its
//! deadline, signals that thread ([`SIGNAL`]). The signal handler only
//! sets a hook on the VM the thread is running (`lua_sethook`, which Lua
//! allows in a signal handler, as its own interpreter does for Ctrl-C);
//! the hook raises the error at the next Lua instruction, and comes off
//! when the call ends or when it finds no call past its deadline.
//! Coroutines are Lua states of their own that the handler does not know,
//! so `coroutine.create` and `coroutine.wrap` give each new coroutine the
//! hook from the start, checking every [`CHECK_EVERY`] instructions (the
//! cost a coroutine-heavy script pays, as all scripts did before). The
//! watchdog sleeps for good once no call has started for two looks, and
//! the next call wakes it: an idle router has no wake-ups.
//!
//! A call is stopped between its deadline and one look later (a limit and
//! a half at most). Only Lua code is interrupted, never a single C call
//! that blocks (a `KSR` function, `os.execute`, a C module): the error
//! comes when it returns to Lua. A script that catches the error with
//! `pcall` is stopped again at its next instruction, since the deadline
//! stays passed until the call returns.

use mlua::ffi;
use mlua::{Lua, Thread};
use serde::Deserialize;
use std::cell::Cell;
use std::io::Write as _;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lua instructions between two deadline checks in a coroutine.
pub const CHECK_EVERY: u32 = 10_000;

/// The signal the watchdog sends to a thread whose call ran past its
/// deadline: SIGURG, ignored by default and used by nothing else here
/// (Go's runtime took it for the same job for the same reasons).
const SIGNAL: c_int = libc::SIGURG;

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

/// A VM's time limit, and its main Lua state (the one the signal handler
/// sets the hook on).
struct Deadline {
    limit_ms: u64,
    main: *mut ffi::lua_State,
}

thread_local! {
    /// The main state of the VM whose call runs on this thread (null:
    /// none). Read by the signal handler: a constant-initialised cell, so
    /// reading it there allocates nothing and takes no lock.
    static RUNNING: Cell<*mut ffi::lua_State> = const { Cell::new(std::ptr::null_mut()) };
    /// The running call's deadline on [`now_ms`]'s clock (0: none) and
    /// its limit, for the hook's check and message.
    static DEADLINE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// This thread's entry in the watchdog's list.
    static WATCH: Registered = Registered::new();
}

/// Milliseconds on the process's monotonic clock (never 0).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Apply `limits` to a new VM.
pub(crate) fn install(lua: &Lua, limits: &Limits) -> mlua::Result<()> {
    if limits.memory_limit_mb > 0 {
        lua.set_memory_limit((limits.memory_limit_mb as usize).saturating_mul(1 << 20))?;
    }
    if limits.max_route_ms == 0 {
        return Ok(());
    }
    watchdog::start();
    let mut main = std::ptr::null_mut();
    // SAFETY: the closure only reads the pointer of the state it is given
    // (the main state: no route is running while a VM is set up).
    unsafe { lua.exec_raw::<()>((), |state| main = state)? };
    lua.set_app_data(Deadline {
        limit_ms: limits.max_route_ms,
        main,
    });
    hook_coroutines(lua)
}

/// `coroutine.create` and `coroutine.wrap` that give each new coroutine
/// the counting hook.
fn hook_coroutines(lua: &Lua) -> mlua::Result<()> {
    let coroutine: mlua::Table = lua.globals().get("coroutine")?;
    let create = lua.create_function(|lua, f: mlua::Function| {
        let co = lua.create_thread(f)?;
        count_hook(&co);
        Ok(co)
    })?;
    // The body of a wrapped coroutine hooks its own state first: wrap's
    // own behaviour (errors, results, closing) stays Lua's.
    let hook_me = lua.create_function(|lua, ()| {
        count_hook(&lua.current_thread());
        Ok(())
    })?;
    let wrap: mlua::Function = lua
        .load(
            "local wrap, hook_me = ... \
             return function(f) return wrap(function(...) hook_me() return f(...) end) end",
        )
        .set_name("=coroutine.wrap")
        .call((coroutine.get::<mlua::Function>("wrap")?, hook_me))?;
    coroutine.set("create", create)?;
    coroutine.set("wrap", wrap)?;
    Ok(())
}

fn count_hook(co: &Thread) {
    // SAFETY: `co` is a live coroutine of this VM, on this thread.
    unsafe {
        ffi::lua_sethook(
            co.state(),
            Some(stop_hook),
            ffi::LUA_MASKCOUNT,
            CHECK_EVERY as c_int,
        )
    };
}

/// The hook: stop the call if it is past its deadline, else (a signal
/// that came late, a call that has ended) take itself off the main state.
unsafe extern "C-unwind" fn stop_hook(l: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) {
    let (at, limit) = DEADLINE.with(Cell::get);
    if at == 0 || now_ms() < at {
        // A coroutine keeps its counting hook; the hook a signal set
        // (counting every instruction) comes off.
        if ffi::lua_gethookcount(l) == 1 {
            ffi::lua_sethook(l, None, 0, 0);
        }
        return;
    }
    // The message goes into a stack buffer: lua_error does not return, so
    // nothing that needs dropping may be alive when it is called.
    let mut buf = [0u8; 512];
    let len = {
        let mut file: &[u8] = b"?";
        let mut line = 0;
        if ffi::lua_getinfo(l, c"Sl".as_ptr(), ar) != 0 {
            let src = &(*ar).short_src;
            let n = src.iter().position(|&c| c == 0).unwrap_or(src.len());
            file = std::slice::from_raw_parts(src.as_ptr() as *const u8, n);
            line = (*ar).currentline;
        }
        let mut w = &mut buf[..];
        let room = w.len();
        let _ = std::io::Write::write_all(&mut w, file);
        let _ = write!(
            w,
            ":{line}: stopped: the call ran past [script] max_route_ms = {limit} ms"
        );
        room - w.len()
    };
    ffi::lua_pushlstring(l, buf.as_ptr() as *const c_char, len);
    ffi::lua_error(l);
}

/// The signal handler: hook the VM this thread is running, if any.
extern "C" fn on_signal(_: c_int) {
    let l = RUNNING.with(Cell::get);
    if !l.is_null() {
        // SAFETY: `l` is the main state of the VM running a call on this
        // thread (cleared before the VM can go); lua_sethook is written to
        // be called from a signal handler.
        unsafe { ffi::lua_sethook(l, Some(stop_hook), ffi::LUA_MASKCOUNT, 1) };
    }
}

/// A script call under way; dropping it ends the call (also when a panic
/// unwinds past it).
pub(crate) struct Call {
    /// What [`enter`] found, to put back: the outer call's deadline and
    /// limit, and the state it was running (null: none). `None`: this VM
    /// has no time limit, or an outer call of the same VM keeps its clock.
    outer: Option<((u64, u64), *mut ffi::lua_State)>,
}

/// A script function is about to run: start the clock, unless an outer
/// call of the same VM (an event callback around a resumed route) already
/// did.
pub(crate) fn enter(lua: &Lua) -> Call {
    let Some(d) = lua.app_data_ref::<Deadline>() else {
        return Call { outer: None };
    };
    let before = DEADLINE.with(Cell::get);
    let running = RUNNING.with(Cell::get);
    if before.0 != 0 && running == d.main {
        return Call { outer: None };
    }
    let at = now_ms() + d.limit_ms;
    DEADLINE.with(|c| c.set((at, d.limit_ms)));
    RUNNING.with(|c| c.set(d.main));
    WATCH.with(|w| w.starts(at, d.limit_ms));
    Call {
        outer: Some((before, running)),
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let Some((before, running)) = self.outer else {
            return;
        };
        let main = RUNNING.with(|c| c.replace(running));
        DEADLINE.with(|c| c.set(before));
        if before.0 != 0 {
            // Back to the outer call of another VM on this thread.
            WATCH.with(|w| w.starts(before.0, before.1));
        } else {
            WATCH.with(|w| w.ends());
        }
        // SAFETY: `main` is the state of the VM whose call just ended on
        // this thread. A hook the signal set comes off here; one a late
        // signal sets after this takes itself off at its first check.
        unsafe {
            if ffi::lua_gethook(main).is_some() {
                ffi::lua_sethook(main, None, 0, 0);
            }
        }
    }
}

/// One thread's entry in the watchdog's list.
struct Watch {
    /// The running call's deadline (0: none).
    deadline: AtomicU64,
    /// Its limit: the watchdog looks every half of the smallest.
    limit_ms: AtomicU64,
    /// Calls started (written by the thread only).
    started: AtomicU64,
    /// The thread, for `pthread_kill`.
    thread: libc::pthread_t,
    /// Set when the thread exits, under the lock the watchdog holds while
    /// it signals: a thread is never signalled after it is gone.
    gone: Mutex<bool>,
}

/// The thread-local handle: registers on first use, marks gone at exit.
struct Registered(Arc<Watch>);

impl Registered {
    fn new() -> Registered {
        let w = Arc::new(Watch {
            deadline: AtomicU64::new(0),
            limit_ms: AtomicU64::new(0),
            started: AtomicU64::new(0),
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            gone: Mutex::new(false),
        });
        watchdog::register(Arc::clone(&w));
        Registered(w)
    }

    fn starts(&self, at: u64, limit_ms: u64) {
        let w = &self.0;
        w.limit_ms.store(limit_ms, Ordering::Relaxed);
        w.started
            .store(w.started.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        w.deadline.store(at, Ordering::SeqCst);
        watchdog::wake();
    }

    fn ends(&self) {
        self.0.deadline.store(0, Ordering::Relaxed);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        *watchdog::lock(&self.0.gone) = true;
        self.0.deadline.store(0, Ordering::Relaxed);
    }
}

mod watchdog {
    use super::*;

    struct Dog {
        watches: Mutex<Vec<Arc<Watch>>>,
        /// Asleep with no timeout: the next call's start must wake it.
        parked: AtomicBool,
        thread: OnceLock<std::thread::Thread>,
    }

    static DOG: Dog = Dog {
        watches: Mutex::new(Vec::new()),
        parked: AtomicBool::new(false),
        thread: OnceLock::new(),
    };

    /// Install the signal handler and start the watchdog, once.
    pub(super) fn start() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: a plain handler (no SA_SIGINFO) that only reads a
            // thread-local cell and calls lua_sethook; SA_RESTART so that a
            // system call it interrupts is restarted.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(SIGNAL, &sa, std::ptr::null_mut());
            }
            let t = std::thread::Builder::new()
                .name("script-watchdog".into())
                .spawn(run)
                .expect("spawn the script watchdog thread");
            let _ = DOG.thread.set(t.thread().clone());
        });
    }

    pub(super) fn register(w: Arc<Watch>) {
        lock(&DOG.watches).push(w);
    }

    /// A call started: wake the watchdog if it sleeps for good.
    pub(super) fn wake() {
        if DOG.parked.load(Ordering::SeqCst) && DOG.parked.swap(false, Ordering::SeqCst) {
            if let Some(t) = DOG.thread.get() {
                t.unpark();
            }
        }
    }

    pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeping for good (until a call starts)?
    #[cfg(test)]
    pub(super) fn parked() -> bool {
        DOG.parked.load(Ordering::SeqCst)
    }

    fn run() {
        // Calls started per watch at the last look, by address.
        let mut seen: Vec<(usize, u64)> = Vec::new();
        let mut idle_looks = 0;
        loop {
            let tick = {
                let mut ws = lock(&DOG.watches);
                ws.retain(|w| !*lock(&w.gone));
                let least = ws
                    .iter()
                    .map(|w| w.limit_ms.load(Ordering::Relaxed))
                    .filter(|&l| l > 0)
                    .min()
                    .unwrap_or(1000);
                Duration::from_millis((least / 2).clamp(1, 1000))
            };
            std::thread::park_timeout(tick);
            let now = now_ms();
            let mut active = false;
            let ws: Vec<Arc<Watch>> = lock(&DOG.watches).clone();
            let mut next = Vec::with_capacity(ws.len());
            for w in &ws {
                let key = Arc::as_ptr(w) as usize;
                let started = w.started.load(Ordering::Relaxed);
                let at = w.deadline.load(Ordering::SeqCst);
                let before = seen.iter().find(|(k, _)| *k == key).map(|&(_, s)| s);
                if before != Some(started) || at != 0 {
                    active = true;
                }
                next.push((key, started));
                if at != 0 && now >= at {
                    let gone = lock(&w.gone);
                    if !*gone {
                        // SAFETY: the thread has not run its thread-local
                        // destructors (they take `gone`'s lock first), so
                        // it exists.
                        unsafe { libc::pthread_kill(w.thread, SIGNAL) };
                    }
                }
            }
            seen = next;
            idle_looks = if active { 0 } else { idle_looks + 1 };
            if idle_looks >= 2 {
                DOG.parked.store(true, Ordering::SeqCst);
                // A call that started after the look above wakes us (its
                // start sees `parked`); one before it is seen here.
                let busy = lock(&DOG.watches)
                    .iter()
                    .any(|w| w.deadline.load(Ordering::SeqCst) != 0);
                if busy {
                    DOG.parked.store(false, Ordering::SeqCst);
                } else {
                    while DOG.parked.load(Ordering::SeqCst) {
                        std::thread::park();
                    }
                }
                idle_looks = 0;
            }
        }
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
        let call = enter(&lua);
        let err = lua
            .globals()
            .get::<mlua::Function>("spin")
            .unwrap()
            .call::<()>(())
            .unwrap_err()
            .to_string();
        drop(call);
        assert!(
            err.contains("loop.lua:3:") && err.contains("max_route_ms = 50 ms"),
            "{err}"
        );
        // The next call has its own time.
        let call = enter(&lua);
        let seven: i64 = lua
            .globals()
            .get::<mlua::Function>("ok")
            .unwrap()
            .call(())
            .unwrap();
        drop(call);
        assert_eq!(seven, 7);
    }

    /// Whether the VM's main state has a hook now.
    fn hooked(lua: &Lua) -> bool {
        let main = lua.app_data_ref::<Deadline>().unwrap().main;
        // SAFETY: the VM's main state, on its own thread.
        unsafe { ffi::lua_gethook(main).is_some() }
    }

    /// Run the global function `name` as a route: `Err` holds the text.
    fn route(lua: &Lua, name: &str) -> Result<String, String> {
        let call = enter(lua);
        let r = lua
            .globals()
            .get::<mlua::Function>(name)
            .unwrap()
            .call::<String>(())
            .map_err(|e| e.to_string());
        drop(call);
        r
    }

    #[test]
    fn a_route_within_its_time_runs_without_a_hook() {
        let lua = vm(Limits {
            max_route_ms: 5_000,
            memory_limit_mb: 0,
        });
        let main = lua.app_data_ref::<Deadline>().unwrap().main as usize;
        let seen = lua
            .create_function(move |_, ()| {
                // SAFETY: the VM's main state, on its own thread.
                Ok(unsafe { ffi::lua_gethook(main as *mut ffi::lua_State).is_some() })
            })
            .unwrap();
        lua.globals().set("hooked", seen).unwrap();
        lua.load("function r() local n = 0 for i = 1, 100000 do n = n + i end return tostring(hooked()) end")
            .exec()
            .unwrap();
        assert_eq!(route(&lua, "r").unwrap(), "false");
        assert!(!hooked(&lua));
    }

    #[test]
    fn loops_in_coroutines_and_under_pcall_are_stopped_too() {
        let lua = vm(Limits {
            max_route_ms: 50,
            memory_limit_mb: 0,
        });
        lua.load(
            "function spin() local n = 0 while true do n = n + 1 end end\n\
             function in_create()\n  local co = coroutine.create(spin)\n  local ok, e = coroutine.resume(co)\n  return 'resumed: ' .. tostring(e)\nend\n\
             function in_wrap()\n  coroutine.wrap(spin)()\n  return 'survived'\nend\n\
             function caught()\n  pcall(spin)\n  return 'survived'\nend\n\
             function ok() return 'ok' end",
        )
        .set_name("@co.lua")
        .exec()
        .unwrap();
        // In a coroutine the error ends the coroutine: resume returns it.
        let r = route(&lua, "in_create").unwrap();
        assert!(
            r.starts_with("resumed: co.lua:1:") && r.contains("max_route_ms = 50 ms"),
            "{r}"
        );
        // wrap raises it in the caller; pcall catches it once, and the
        // route is stopped at its next instruction.
        for f in ["in_wrap", "caught"] {
            let e = route(&lua, f).unwrap_err();
            assert!(
                e.contains("co.lua:") && e.contains("max_route_ms = 50 ms"),
                "{f}: {e}"
            );
            assert!(!hooked(&lua), "{f}: the hook came off when the call ended");
            assert_eq!(route(&lua, "ok").unwrap(), "ok");
        }
    }

    #[test]
    fn the_watchdog_sleeps_when_no_call_starts() {
        let lua = vm(Limits {
            max_route_ms: 40,
            memory_limit_mb: 0,
        });
        lua.load("function ok() return 'ok' end").exec().unwrap();
        assert_eq!(route(&lua, "ok").unwrap(), "ok");
        // Other tests of this binary start calls too; once they are done,
        // the watchdog must go to sleep within two looks.
        let until = Instant::now() + Duration::from_secs(60);
        while !watchdog::parked() {
            assert!(Instant::now() < until, "the watchdog never went to sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        // And a call that overruns after that still gets stopped.
        lua.load("function spin() while true do end end")
            .exec()
            .unwrap();
        let e = route(&lua, "spin").unwrap_err();
        assert!(e.contains("max_route_ms = 40 ms"), "{e}");
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
