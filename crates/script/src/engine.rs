//! The engine: the script's source, one Lua VM per thread, the current
//! message or event of each VM, and the calls into script functions.

use crate::ops::{EventOps, SipOps};
use crate::pv::PvValue;
use crate::shared::SharedVars;
use bytes::Bytes;
use evapi::{ClientRef, EventContext, EventHandler};
use mlua::{Function, Lua, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::{debug, error, warn};

/// Where the script comes from and what it is asked to provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptConfig {
    /// Path of the Lua file (for messages: errors name it with the line).
    pub file: PathBuf,
    /// The script's text. `None`: read `file`.
    pub source: Option<String>,
    /// Function run for the three evapi events; empty: none.
    pub event_callback: String,
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
}

static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// The routing script and everything its VMs share.
pub struct Engine {
    id: u64,
    path: PathBuf,
    source: String,
    event_callback: Option<String>,
    /// `None` only for [`Engine::check`].
    pub(crate) evapi: Option<Arc<dyn EventOps>>,
    /// `None` only for [`Engine::check`].
    pub(crate) sip: Option<Arc<dyn SipOps>>,
    pub(crate) shared: SharedVars,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish()
    }
}

/// What the current route or event is about, kept in the VM while a
/// script function runs, so `KSR.*` functions know what they act on.
#[derive(Default)]
pub(crate) struct Current {
    pub evapi: Option<EvapiCurrent>,
    pub sip: Option<crate::route::SipCurrent>,
}

/// The evapi event being handled.
pub(crate) struct EvapiCurrent {
    pub client: ClientRef,
    pub msg: Option<Bytes>,
}

/// `$var` values of one VM.
#[derive(Default)]
pub(crate) struct Vars(pub HashMap<String, PvValue>);

/// How a script function call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It returned (or called `KSR.x.exit()`).
    Done,
    /// `KSR.x.drop()`.
    Dropped,
    /// The function is not defined.
    Missing,
    /// It raised an error (logged).
    Failed,
}

/// Raised by `KSR.x.exit()` and `KSR.x.drop()` to unwind the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unwind {
    Exit,
    Drop,
}

impl std::fmt::Display for Unwind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unwind::Exit => "KSR.x.exit()",
            Unwind::Drop => "KSR.x.drop()",
        })
    }
}

impl std::error::Error for Unwind {}

fn unwind_of(err: &mlua::Error) -> Option<Unwind> {
    match err {
        mlua::Error::CallbackError { cause, .. } => unwind_of(cause),
        mlua::Error::WithContext { cause, .. } => unwind_of(cause),
        mlua::Error::ExternalError(e) => e.downcast_ref::<Unwind>().copied(),
        _ => None,
    }
}

/// The first line of a Lua error: "file.lua:12: message".
pub(crate) fn lua_error_text(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } => lua_error_text(cause),
        mlua::Error::WithContext { cause, context } => {
            format!("{context}: {}", lua_error_text(cause))
        }
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.lines().next().unwrap_or("").to_string(),
        other => other.to_string().lines().next().unwrap_or("").to_string(),
    }
}

thread_local! {
    /// This thread's VMs, by engine (tests run several engines in one
    /// process; a production process has one).
    static VMS: RefCell<HashMap<u64, Lua>> = RefCell::new(HashMap::new());
}

impl Engine {
    /// Read and check the script (it must compile, its top level must run,
    /// and the functions the configuration names must exist), with the
    /// event socket and the SIP host its `KSR` functions act through.
    pub fn new(
        config: &ScriptConfig,
        events: Arc<dyn EventOps>,
        sip: Arc<dyn SipOps>,
    ) -> Result<Arc<Engine>, ScriptError> {
        Self::build(config, Some(events), Some(sip))
    }

    /// Read and check the script as [`Engine::new`] does, without an event
    /// socket or a SIP host (`evapi check`): `KSR` functions run by the
    /// script's top level that need them fail with a log line.
    pub fn check(config: &ScriptConfig) -> Result<(), ScriptError> {
        Self::build(config, None, None).map(drop)
    }

    fn build(
        config: &ScriptConfig,
        events: Option<Arc<dyn EventOps>>,
        sip: Option<Arc<dyn SipOps>>,
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
            source,
            event_callback: (!config.event_callback.is_empty())
                .then(|| config.event_callback.clone()),
            evapi: events,
            sip,
            shared: SharedVars::default(),
        });
        let lua = engine.new_vm()?;
        let globals = lua.globals();
        let need = |name: &str, why: &'static str| -> Result<(), ScriptError> {
            match globals.get::<Value>(name) {
                Ok(Value::Function(_)) => Ok(()),
                _ => Err(ScriptError::MissingFunction {
                    path: engine.path.clone(),
                    name: name.to_string(),
                    why,
                }),
            }
        };
        need("ksr_request_route", "run for every SIP request")?;
        if let Some(cb) = &engine.event_callback {
            need(cb, "the evapi event_callback")?;
        }
        Ok(engine)
    }

    /// The script file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The event handler to give to [`evapi::EventSocket::bind`].
    pub fn evapi_handler(self: &Arc<Self>) -> Arc<dyn EventHandler> {
        Arc::new(EvapiHooks(self.clone()))
    }

    /// A new VM with the KSR API, the script loaded and its top level run.
    fn new_vm(self: &Arc<Self>) -> Result<Lua, ScriptError> {
        let lua = Lua::new();
        let lua_err = |e: mlua::Error| ScriptError::Lua(lua_error_text(&e));
        crate::compat::install(&lua).map_err(lua_err)?;
        crate::ksr::install(&lua, self).map_err(lua_err)?;
        lua.set_app_data(Current::default());
        lua.set_app_data(Vars::default());
        lua.load(&self.source)
            .set_name(format!("@{}", self.path.display()))
            .exec()
            .map_err(lua_err)?;
        Ok(lua)
    }

    /// This thread's VM, created on first use.
    pub(crate) fn vm(self: &Arc<Self>) -> Option<Lua> {
        if let Some(lua) = VMS.with(|v| v.borrow().get(&self.id).cloned()) {
            return Some(lua);
        }
        match self.new_vm() {
            Ok(lua) => {
                VMS.with(|v| v.borrow_mut().insert(self.id, lua.clone()));
                debug!(thread = ?std::thread::current().name(), "script loaded");
                Some(lua)
            }
            Err(e) => {
                error!(error = %e, "cannot load the script on this thread");
                None
            }
        }
    }

    /// Call the global function `name` with `args`.
    pub(crate) fn call(&self, lua: &Lua, name: &str, args: impl mlua::IntoLuaMulti) -> Outcome {
        let f: Function = match lua.globals().get::<Value>(name) {
            Ok(Value::Function(f)) => f,
            _ => {
                warn!(function = name, "script function not defined");
                return Outcome::Missing;
            }
        };
        match f.call::<()>(args) {
            Ok(()) => Outcome::Done,
            Err(e) => match unwind_of(&e) {
                Some(Unwind::Exit) => Outcome::Done,
                Some(Unwind::Drop) => Outcome::Dropped,
                None => {
                    error!(function = name, error = %lua_error_text(&e), "script error");
                    debug!(function = name, error = %e, "script error with traceback");
                    Outcome::Failed
                }
            },
        }
    }

    fn run_event(self: &Arc<Self>, ctx: &EventContext<'_>) {
        let Some(cb) = &self.event_callback else {
            return;
        };
        let Some(lua) = self.vm() else {
            return;
        };
        let previous = with_current(&lua, |cur| {
            cur.evapi.replace(EvapiCurrent {
                client: ctx.client(),
                msg: ctx.message().cloned(),
            })
        });
        self.call(&lua, cb, ctx.event().name());
        with_current(&lua, |cur| cur.evapi = previous);
    }
}

/// Run `f` on the VM's current context (never across a call into Lua).
pub(crate) fn with_current<R>(lua: &Lua, f: impl FnOnce(&mut Current) -> R) -> R {
    let mut cur = lua
        .app_data_mut::<Current>()
        .expect("every VM has a current context");
    f(&mut cur)
}

/// Run `f` on the VM's `$var` store.
pub(crate) fn with_vars<R>(lua: &Lua, f: impl FnOnce(&mut Vars) -> R) -> R {
    let mut vars = lua.app_data_mut::<Vars>().expect("every VM has $var");
    f(&mut vars)
}

struct EvapiHooks(Arc<Engine>);

impl EventHandler for EvapiHooks {
    fn thread_started(&self, _worker: Option<usize>) {
        // Load the script now, so the first event does not pay for it.
        let _ = self.0.vm();
    }
    fn connection_new(&self, ctx: &EventContext<'_>) {
        self.0.run_event(ctx);
    }
    fn message_received(&self, ctx: &EventContext<'_>) {
        self.0.run_event(ctx);
    }
    fn connection_closed(&self, ctx: &EventContext<'_>) {
        self.0.run_event(ctx);
    }
}
