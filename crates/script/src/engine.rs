//! The engine: the script's source, the handles its `KSR` functions act
//! through, and one Lua VM per thread (created there on first use).
//!
//! Reload ([`Engine::reload`]: SIGHUP and the `app_lua.reload` RPC method)
//! checks the new source in a VM of its own, then swaps the source and
//! bumps the engine's generation; each thread rebuilds its VM at its next
//! call when the generation changed (one atomic read per call to notice),
//! carrying its `$var` values over, as Kamailio keeps them across
//! `app_lua.reload`. A call in progress finishes in the VM it started in.
//!
//! Calls into the script are in [`crate::call`], the current message in
//! [`crate::context`], the hook traits in [`crate::hooks`].

use crate::call::lua_error_text;
use crate::ksr::Handles;
use crate::ops::{EventOps, NatsOps, SipOps};
use mlua::{Lua, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tracing::{debug, error, info, warn};

/// Where the script comes from and what it is asked to provide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptConfig {
    /// Path of the Lua file (for messages: errors name it with the line).
    pub file: PathBuf,
    /// The script's text. `None`: read `file`.
    pub source: Option<String>,
    /// Function run for the three evapi events; empty: none.
    pub event_callback: String,
    /// Function run for the dialog events (`[dialog] event_callback`,
    /// called with `dialog:start`, `dialog:end` or `dialog:failed`);
    /// empty: none.
    pub dialog_event_callback: String,
    /// Time and memory limits of each Lua state.
    pub limits: crate::Limits,
    /// `[htable]`: table definitions and the key limit.
    pub htable: crate::HtableSection,
    /// `[pike]`: flood detection parameters.
    pub pike: crate::PikeSection,
    /// `[maxfwd]`: what `KSR.maxfwd` relays at most.
    pub maxfwd: crate::MaxfwdSection,
    /// `?.lua` patterns put before Lua's own in `package.path` (already
    /// resolved against the config file's folder).
    pub lua_path: Vec<String>,
    /// Patterns put before Lua's own in `package.cpath`; used only with
    /// `allow_c_modules`.
    pub lua_cpath: Vec<String>,
    /// Whether `require` may load C modules (off: a C module runs with
    /// the process's rights and can crash it).
    pub allow_c_modules: bool,
}

/// A script that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The file cannot be read.
    #[error("cannot read script {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// Lua refused the script (syntax) or its top level failed; the message
    /// names the file and line.
    #[error("script error: {0}")]
    Lua(String),
    /// A function the configuration names is not defined by the script.
    #[error("{path}: function {name}() is not defined (it is {why})")]
    MissingFunction {
        /// The script file.
        path: PathBuf,
        /// The function.
        name: String,
        /// Why it is needed.
        why: &'static str,
    },
    /// Reload asked for a script embedded in the program (`evapi run`
    /// without `-c`): there is no file to read again.
    #[error("{path}: the script is built into the program; there is no file to reload")]
    Embedded {
        /// The name it runs under.
        path: PathBuf,
    },
    /// Reload asked while another reload is checking its script (also: the
    /// script's top level asking for a reload of itself).
    #[error("a reload of {path} is already in progress")]
    ReloadBusy {
        /// The script file.
        path: PathBuf,
    },
}

/// The script's text and its generation: 1 as loaded at start, one more
/// for each reload.
#[derive(Debug)]
struct Source {
    text: String,
    generation: u64,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The script file read.
    pub file: PathBuf,
    /// The generation of the script before the reload.
    pub old: u64,
    /// The generation now in force (new messages run it).
    pub new: u64,
}

static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// The routing script and everything its VMs share.
pub struct Engine {
    id: u64,
    path: PathBuf,
    /// The source in force; replaced whole by a reload.
    source: RwLock<Arc<Source>>,
    /// `source`'s generation, read on every call to notice a reload
    /// without taking the lock.
    generation: AtomicU64,
    /// Whether the source came from `path` (false: embedded, no reload).
    from_file: bool,
    /// Held while a reload checks its script: one at a time.
    reloading: Mutex<()>,
    pub(crate) event_callback: Option<String>,
    pub(crate) dialog_callback: Option<String>,
    pub(crate) handles: Arc<Handles>,
    limits: crate::Limits,
    packages: crate::packages::Packages,
    counters: Arc<crate::stats::Counters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish()
    }
}

/// One thread's VM of one engine, and the script generation it runs (or
/// the one it failed to load, so a broken rebuild is not retried on every
/// call).
struct ThreadVm {
    generation: u64,
    lua: Lua,
}

thread_local! {
    /// This thread's VMs, by engine (tests run several engines in one
    /// process; a production process has one). Looked up for every
    /// message: foldhash, not SipHash (about 90 instructions less).
    static VMS: RefCell<HashMap<u64, ThreadVm, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

impl Engine {
    /// Read and check the script (it must compile, its top level must run,
    /// and the functions the configuration names must exist), with the
    /// event socket and the SIP host its `KSR` functions act through.
    ///
    /// `registry` is the admin RPC registry `KSR.jsonrpcs.exec` calls; the
    /// engine's own methods are added to it by [`crate::rpc::register`].
    pub fn new(
        config: &ScriptConfig,
        events: Arc<dyn EventOps>,
        sip: Arc<dyn SipOps>,
        registry: Arc<rpc::Registry>,
    ) -> Result<Arc<Engine>, ScriptError> {
        Self::build(config, Some(events), Some(sip), Some(registry), None)
    }

    /// As [`Engine::new`], with NATS (`[nats]` on): the evapi sends go
    /// over NATS too, and `KSR.nats.*` act through `nats`.
    pub fn with_nats(
        config: &ScriptConfig,
        events: Arc<dyn EventOps>,
        sip: Arc<dyn SipOps>,
        registry: Arc<rpc::Registry>,
        nats: Option<Arc<dyn NatsOps>>,
    ) -> Result<Arc<Engine>, ScriptError> {
        Self::build(config, Some(events), Some(sip), Some(registry), nats)
    }

    /// Read and check the script as [`Engine::new`] does, without an event
    /// socket, a SIP host or an RPC registry (`evapi check`): `KSR`
    /// functions run by the script's top level that need them fail with a
    /// log line.
    pub fn check(config: &ScriptConfig) -> Result<(), ScriptError> {
        Self::build(config, None, None, None, None).map(drop)
    }

    fn build(
        config: &ScriptConfig,
        events: Option<Arc<dyn EventOps>>,
        sip: Option<Arc<dyn SipOps>>,
        registry: Option<Arc<rpc::Registry>>,
        nats: Option<Arc<dyn NatsOps>>,
    ) -> Result<Arc<Engine>, ScriptError> {
        let source = match &config.source {
            Some(s) => s.clone(),
            None => std::fs::read_to_string(&config.file).map_err(|e| ScriptError::Read {
                path: config.file.clone(),
                reason: e.to_string(),
            })?,
        };
        let engine = Arc::new(Engine {
            id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
            path: config.file.clone(),
            source: RwLock::new(Arc::new(Source {
                text: source,
                generation: 1,
            })),
            generation: AtomicU64::new(1),
            from_file: config.source.is_none(),
            reloading: Mutex::new(()),
            event_callback: (!config.event_callback.is_empty())
                .then(|| config.event_callback.clone()),
            dialog_callback: (!config.dialog_event_callback.is_empty())
                .then(|| config.dialog_event_callback.clone()),
            handles: Arc::new(
                Handles::with_shared(
                    sip,
                    events,
                    crate::shared::SharedVars::new(&config.htable, config.pike),
                )
                .with_maxfwd_limit(config.maxfwd.limit())
                .with_memory_limit_mb(config.limits.memory_limit_mb)
                .with_registry(registry)
                .with_nats(nats),
            ),
            limits: config.limits,
            packages: crate::packages::Packages {
                lua_path: config.lua_path.clone(),
                lua_cpath: config.lua_cpath.clone(),
                allow_c: config.allow_c_modules,
            },
            counters: Arc::default(),
        });
        let text = engine.current().text.clone();
        engine.checked_vm(&text)?;
        Ok(engine)
    }

    /// A VM for `text` with the functions the configuration names checked.
    fn checked_vm(&self, text: &str) -> Result<Lua, ScriptError> {
        let lua = self.new_vm(text)?;
        let globals = lua.globals();
        let need = |name: &str, why: &'static str| -> Result<(), ScriptError> {
            match globals.get::<Value>(name) {
                Ok(Value::Function(_)) => Ok(()),
                _ => Err(ScriptError::MissingFunction {
                    path: self.path.clone(),
                    name: name.to_string(),
                    why,
                }),
            }
        };
        need("ksr_request_route", "run for every SIP request")?;
        if let Some(cb) = &self.event_callback {
            need(cb, "the evapi event_callback")?;
        }
        if let Some(cb) = &self.dialog_callback {
            need(cb, "the [dialog] event_callback")?;
        }
        drop(globals);
        Ok(lua)
    }

    /// The script file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation of the script in force: 1 at start, one more per
    /// successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self) -> Arc<Source> {
        self.source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Read the script file again and check it as at start (it must
    /// compile, its top level must run, the functions the configuration
    /// names must exist), in a VM of its own on the calling thread. If it
    /// passes, new messages and events run it: each thread's VM is rebuilt
    /// at its next call, keeping its `$var` values; calls in progress end
    /// in the VM they started in; `$shv` and `$sht` are untouched. If not,
    /// the error names the file and line, and the old script stays.
    ///
    /// The check runs the new script's top level with the real handles,
    /// as at start. Call it off the I/O runtime's threads (a blocking
    /// task): it runs Lua.
    ///
    /// `trigger` names who asked (`SIGHUP`, `app_lua.reload`) in the log
    /// line each outcome gets.
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, ScriptError> {
        let r = self.try_reload();
        match &r {
            Ok(r) => {
                info!(trigger, file = %r.file.display(), old = r.old, new = r.new, "script reloaded")
            }
            Err(e) => {
                warn!(trigger, file = %self.path.display(), error = %e, "script reload refused; the old script stays")
            }
        }
        r
    }

    fn try_reload(&self) -> Result<Reloaded, ScriptError> {
        let _one = self
            .reloading
            .try_lock()
            .map_err(|_| ScriptError::ReloadBusy {
                path: self.path.clone(),
            })?;
        if !self.from_file {
            return Err(ScriptError::Embedded {
                path: self.path.clone(),
            });
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| ScriptError::Read {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        drop(self.checked_vm(&text)?);
        let mut source = self.source.write().unwrap_or_else(|e| e.into_inner());
        let old = source.generation;
        *source = Arc::new(Source {
            text,
            generation: old + 1,
        });
        self.generation.store(old + 1, Ordering::Release);
        drop(source);
        Ok(Reloaded {
            file: self.path.clone(),
            old,
            new: old + 1,
        })
    }

    /// The counters of the script's runs (errors, missing functions):
    /// relaxed atomics, read at once.
    pub fn stats(&self) -> crate::ScriptStats {
        self.counters.get()
    }

    /// The router to give to [`sip::BoundHost::start`]. It holds the
    /// engine; no cycle follows, because the SIP host's handle (which the
    /// engine holds) does not hold the router: the host's threads own it and
    /// drop it at shutdown.
    pub fn sip_router(self: &Arc<Self>) -> Arc<dyn sip::Router> {
        Arc::new(crate::hooks::SipHooks::new(self))
    }

    /// The event handler to give to [`evapi::EventSocket::bind`].
    pub fn evapi_handler(self: &Arc<Self>) -> Arc<dyn evapi::EventHandler> {
        Arc::new(crate::hooks::EvapiHooks::new(self))
    }

    /// The handler to give to [`nats::Bound::start`]: worker answers and
    /// `evapi:no-responders` run the evapi `event_callback` as a TCP
    /// client's message does; `[[nats.subscribe]]` messages run it as
    /// `nats:<subject>`.
    pub fn nats_handler(self: &Arc<Self>) -> Arc<dyn nats::NatsHandler> {
        Arc::new(crate::hooks::NatsHooks::new(self))
    }

    /// A new VM with the KSR API, `text` loaded and its top level run.
    fn new_vm(&self, text: &str) -> Result<Lua, ScriptError> {
        let lua_err = |e: mlua::Error| ScriptError::Lua(lua_error_text(&e));
        let lua = self.packages.new_lua().map_err(lua_err)?;
        crate::limits::install(&lua, &self.limits).map_err(lua_err)?;
        crate::compat::install(&lua).map_err(lua_err)?;
        crate::context::install(&lua);
        lua.set_app_data(Arc::clone(&self.counters));
        crate::ksr::install(&lua, &self.handles).map_err(lua_err)?;
        lua.load(text)
            .set_name(format!("@{}", self.path.display()))
            .exec()
            .map_err(lua_err)?;
        Ok(lua)
    }

    /// This thread's VM, created on first use and rebuilt after a reload.
    pub(crate) fn vm(&self) -> Option<Lua> {
        let want = self.generation.load(Ordering::Acquire);
        let old = VMS.with(|v| {
            v.borrow()
                .get(&self.id)
                .map(|t| (t.generation, t.lua.clone()))
        });
        let old = match old {
            Some((generation, lua)) if generation == want => return Some(lua),
            other => other.map(|(_, lua)| lua),
        };
        let source = self.current();
        let (generation, lua) = match (self.new_vm(&source.text), old) {
            (Ok(lua), old) => {
                if let Some(old) = &old {
                    crate::ksr::carry_vars(old, &lua);
                }
                debug!(thread = ?std::thread::current().name(), generation = source.generation, "script loaded");
                (source.generation, lua)
            }
            // The reload was checked, but this thread's build failed (a
            // top level that depends on the thread or the moment): keep
            // the old VM rather than route nothing, and say so once.
            (Err(e), Some(old)) => {
                error!(error = %e, generation = source.generation, "cannot load the reloaded script on this thread; it keeps the previous one");
                (source.generation, old)
            }
            (Err(e), None) => {
                error!(error = %e, "cannot load the script on this thread");
                self.counters.count(crate::stats::Failure::Error);
                return None;
            }
        };
        VMS.with(|v| {
            v.borrow_mut().insert(
                self.id,
                ThreadVm {
                    generation,
                    lua: lua.clone(),
                },
            )
        });
        Some(lua)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksr::testing::{FakeEvents, FakeSip};

    fn config(source: &str, callback: &str) -> ScriptConfig {
        ScriptConfig {
            file: PathBuf::from("t.lua"),
            source: Some(source.into()),
            event_callback: callback.into(),
            ..Default::default()
        }
    }

    fn engine(source: &str) -> (Arc<Engine>, Arc<FakeSip>) {
        let sip = Arc::new(FakeSip::default());
        let engine = Engine::new(
            &config(source, ""),
            Arc::new(FakeEvents::default()),
            sip.clone(),
            rpc::Registry::new(),
        )
        .unwrap();
        (engine, sip)
    }

    #[test]
    fn check_reports_what_is_wrong() {
        assert!(Engine::check(&config("function ksr_request_route() end", "")).is_ok());
        let e = Engine::check(&config("function ksr_request_route() end", "cb")).unwrap_err();
        assert!(matches!(e, ScriptError::MissingFunction { ref name, .. } if name == "cb"));
        let e = Engine::check(&config("x = = 1", "")).unwrap_err();
        assert!(e.to_string().contains("t.lua:1:"), "{e}");
        // A top level using KSR while checking: the call fails (logged),
        // the script still loads.
        let src = r#"KSR.info("loading"); r = KSR.sl.send_reply(200, "OK")
                     function ksr_request_route() end"#;
        assert!(Engine::check(&config(src, "")).is_ok());
    }

    #[test]
    fn the_script_requires_through_lua_path() {
        let dir = std::env::temp_dir().join(format!("evapi-engine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("helpers.lua"), "return { code = 404 }").unwrap();
        let mut cfg = config(
            "local h = require('helpers')\nfunction ksr_request_route() end",
            "",
        );
        assert!(Engine::check(&cfg).is_err(), "not found without lua_path");
        cfg.lua_path = vec![format!("{}/?.lua", dir.display())];
        Engine::check(&cfg).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_top_level_can_use_the_handles_at_once() {
        // The handles are there from the start: no window where KSR.* is -1.
        let (engine, _) = engine(
            r#"started = KSR.evapi.relay("boot") == 1 and KSR.evapi.client_count() == 5
               function ksr_request_route() end"#,
        );
        let lua = engine.vm().unwrap();
        assert!(lua.globals().get::<bool>("started").unwrap());
    }

    #[test]
    fn one_vm_per_thread_keeps_var() {
        let (engine, _) = engine("function ksr_request_route() end");
        let a = engine.vm().unwrap();
        a.load(r#"KSR.pv.seti("$var(n)", 5)"#).exec().unwrap();
        let again = engine.vm().unwrap();
        let n: i64 = again.load(r#"KSR.pv.get("$var(n)")"#).eval().unwrap();
        assert_eq!(n, 5, "the same VM on the same thread");
        let other = engine.clone();
        let null = std::thread::spawn(move || {
            let lua = other.vm().unwrap();
            lua.load(r#"KSR.pv.is_null("$var(n)")"#)
                .eval::<bool>()
                .unwrap()
        })
        .join()
        .unwrap();
        assert!(null, "another thread has its own VM");
    }

    #[test]
    fn reload_rebuilds_each_thread_vm_once_keeping_var() {
        let dir = std::env::temp_dir().join(format!("evapi-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.lua");
        std::fs::write(&file, "v = 1\nfunction ksr_request_route() end").unwrap();
        let cfg = ScriptConfig {
            file: file.clone(),
            ..Default::default()
        };
        let engine = Engine::new(
            &cfg,
            Arc::new(FakeEvents::default()),
            Arc::new(FakeSip::default()),
            rpc::Registry::new(),
        )
        .unwrap();
        let old = engine.vm().unwrap();
        old.load(r#"KSR.pv.seti("$var(n)", 7)"#).exec().unwrap();
        std::fs::write(&file, "v = 2\nfunction ksr_request_route() end").unwrap();
        let r = engine.reload("test").unwrap();
        assert_eq!((r.old, r.new, engine.generation()), (1, 2, 2));
        let new = engine.vm().unwrap();
        assert_eq!(new.globals().get::<i64>("v").unwrap(), 2);
        let n: i64 = new.load(r#"KSR.pv.get("$var(n)")"#).eval().unwrap();
        assert_eq!(n, 7, "$var carried over");
        // The old VM is whole (a call in progress could still be in it).
        assert_eq!(old.globals().get::<i64>("v").unwrap(), 1);
        let again = engine.vm().unwrap();
        assert_eq!(again.globals().get::<i64>("v").unwrap(), 2);
        again.globals().set("mark", true).unwrap();
        assert!(
            engine.vm().unwrap().globals().get::<bool>("mark").unwrap(),
            "built once"
        );
        // Refused: the file gone, a broken one; the old script stays.
        std::fs::write(&file, "v = 3\nfunction ksr_request_route( end").unwrap();
        let e = engine.reload("test").unwrap_err();
        assert!(e.to_string().contains("r.lua:2:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            engine.reload("test"),
            Err(ScriptError::Read { .. })
        ));
        assert_eq!(engine.generation(), 2);
        assert_eq!(engine.vm().unwrap().globals().get::<i64>("v").unwrap(), 2);
    }

    #[test]
    fn an_embedded_script_is_not_reloaded() {
        let (engine, _) = engine("function ksr_request_route() end");
        let e = engine.reload("test").unwrap_err();
        assert!(matches!(e, ScriptError::Embedded { .. }), "{e}");
        let _busy = engine.reloading.lock().unwrap();
        assert!(matches!(
            engine.reload("test"),
            Err(ScriptError::ReloadBusy { .. })
        ));
    }

    #[test]
    fn failed_runs_and_missing_functions_are_counted() {
        use crate::call::{call, run_route, Outcome};
        use crate::context::RouteKind;
        let sip = Arc::new(FakeSip::default());
        let cfg = ScriptConfig {
            limits: crate::Limits {
                max_route_ms: 50,
                ..Default::default()
            },
            ..config(
                r#"function ksr_request_route()
                 if KSR.pv.get("$rm") == "INVITE" then error("boom") end
                 if KSR.pv.get("$rm") == "BYE" then KSR.x.exit() end
               end
               function spin() while true do end end"#,
                "",
            )
        };
        let engine = Engine::new(
            &cfg,
            Arc::new(FakeEvents::default()),
            sip.clone(),
            rpc::Registry::new(),
        )
        .unwrap();
        let lua = engine.vm().unwrap();
        let route = |method: &str| {
            let mut req = crate::ksr::testing::request(method, "");
            run_route(
                &lua,
                Some(&*sip as &dyn SipOps),
                "ksr_request_route",
                RouteKind::Request,
                &mut req,
            )
        };
        assert_eq!(engine.stats(), crate::ScriptStats::default());
        assert_eq!(route("OPTIONS"), Outcome::Done);
        assert_eq!(route("BYE"), Outcome::Done, "exit is no error");
        assert_eq!(engine.stats().errors, 0);
        assert_eq!(route("INVITE"), Outcome::Failed);
        assert_eq!(route("INVITE"), Outcome::Failed);
        assert_eq!(engine.stats().errors, 2);
        assert_eq!(call(&lua, "no_such_route", ()), Outcome::Missing);
        assert_eq!(engine.stats().missing_functions, 1);
        // The time limit ends a runaway route: an error too.
        assert_eq!(call(&lua, "spin", ()), Outcome::Failed);
        assert_eq!(
            engine.stats(),
            crate::ScriptStats {
                errors: 3,
                missing_functions: 1
            }
        );
    }

    #[test]
    fn the_hooks_are_the_only_owners_besides_the_caller() {
        let (engine, _) = engine("function ksr_request_route() end");
        let router = engine.sip_router();
        let handler = engine.evapi_handler();
        assert_eq!(Arc::strong_count(&engine), 3);
        let weak = Arc::downgrade(&engine);
        drop(engine);
        // The hooks keep routing after the caller let go of the engine.
        router.thread_started(0);
        assert!(weak.upgrade().is_some());
        drop((router, handler));
        assert!(weak.upgrade().is_none(), "nothing else holds the engine");
    }
}
