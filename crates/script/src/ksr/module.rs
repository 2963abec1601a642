//! The one way a `KSR` function is registered, and what it gets to work
//! with.
//!
//! A module file registers each function with [`Module::func`]: a closure
//! taking a [`Cx`] and its Lua arguments, returning `Result<R, Fail>`.
//! The helper does what every KEMI function would otherwise repeat:
//!
//! - the handles it acts through ([`Cx::sip`], [`Cx::events`],
//!   [`Cx::shared`]) are captured when the VM is built: no lookup, no
//!   weak reference that can fail at call time;
//! - a [`Fail`] is logged once, as `KSR.sl.send_reply: <why>`, and turned
//!   into the function's KEMI failure value ([`KemiReturn`]: -1, or -2
//!   where the function's convention says so; `false`; `nil`);
//! - a Lua error (`KSR.x.exit()`, a bad argument type) passes through.

use super::out::{MemoryLimit, Out};
use crate::context::{self, EvapiCurrent, NotHere};
use crate::ops::{EventOps, NatsOps, SipOps};
use crate::pv::PvValue;
use crate::route_state::TooManyValues;
use crate::shared::SharedVars;
use evapi::{SendError, TagError};
use mlua::{FromLuaMulti, IntoLuaMulti, Lua, Table, Value};
use sip::{EditError, Request, TmError};
use std::fmt::Display;
use std::rc::Rc;
use std::sync::Arc;

/// What the `KSR` functions act through, shared by every VM of an engine.
pub(crate) struct Handles {
    /// `None` only when the script is being checked.
    sip: Option<Arc<dyn SipOps>>,
    /// `None` only when the script is being checked.
    events: Option<Arc<dyn EventOps>>,
    /// `$shv` and `$sht`.
    shared: SharedVars,
    /// `[maxfwd] max_limit`.
    maxfwd_limit: u8,
    /// The admin RPC registry (`KSR.jsonrpcs.exec`); `None` only when the
    /// script is being checked.
    registry: Option<Arc<rpc::Registry>>,
    /// NATS (`[nats]`); `None` when it is off.
    nats: Option<Arc<dyn NatsOps>>,
    /// The limit `[script] memory_limit_mb` puts on each VM of the engine
    /// (see [`Out::text`]).
    memory_limit: MemoryLimit,
}

impl Handles {
    pub fn new(sip: Option<Arc<dyn SipOps>>, events: Option<Arc<dyn EventOps>>) -> Self {
        Handles::with_shared(sip, events, SharedVars::default())
    }

    /// With shared state configured by `[htable]` and `[pike]`.
    pub fn with_shared(
        sip: Option<Arc<dyn SipOps>>,
        events: Option<Arc<dyn EventOps>>,
        shared: SharedVars,
    ) -> Self {
        Handles {
            sip,
            events,
            shared,
            maxfwd_limit: crate::maxfwd_section::DEFAULT_MAX_LIMIT as u8,
            registry: None,
            nats: None,
            memory_limit: MemoryLimit::Unknown,
        }
    }

    /// With `[script] memory_limit_mb` set to `mb`: the limit
    /// [`crate::limits::install`] puts on every VM these handles serve.
    pub fn with_memory_limit_mb(mut self, mb: u64) -> Self {
        self.memory_limit = MemoryLimit::from_mb(mb);
        self
    }

    /// With NATS (`[nats]` on).
    pub fn with_nats(mut self, nats: Option<Arc<dyn NatsOps>>) -> Self {
        self.nats = nats;
        self
    }

    /// With the admin RPC registry `KSR.jsonrpcs.exec` calls.
    pub fn with_registry(mut self, registry: Option<Arc<rpc::Registry>>) -> Self {
        self.registry = registry;
        self
    }

    /// With `[maxfwd] max_limit` set to `limit`.
    pub fn with_maxfwd_limit(mut self, limit: u8) -> Self {
        self.maxfwd_limit = limit;
        self
    }

    /// `$shv`, `$sht` and pike's counters.
    pub fn shared(&self) -> &SharedVars {
        &self.shared
    }

    /// The SIP host, if there is one.
    pub fn sip(&self) -> Option<&dyn SipOps> {
        self.sip.as_deref()
    }
}

/// Why a `KSR` function did not act.
#[derive(Debug)]
pub(crate) enum Fail {
    /// Refused: logged, and the function returns its failure value for
    /// `code` (-1 unless the function's convention says otherwise).
    Refused { code: i64, why: String },
    /// A Lua error to raise as is (`KSR.x.exit()`, a failed allocation).
    Lua(mlua::Error),
}

impl Fail {
    /// Refused with -1.
    pub fn new(why: impl Display) -> Fail {
        Fail::Refused {
            code: -1,
            why: why.to_string(),
        }
    }

    /// Refused with another failure code (-2 after a suspension, ...).
    pub fn code(self, code: i64) -> Fail {
        match self {
            Fail::Refused { why, .. } => Fail::Refused { code, why },
            lua => lua,
        }
    }
}

macro_rules! fail_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Fail {
                Fail::new(e)
            }
        }
    )*};
}
fail_from!(
    nats::SendError,
    TmError,
    SendError,
    TagError,
    EditError,
    NotHere,
    TooManyValues
);

impl From<mlua::Error> for Fail {
    fn from(e: mlua::Error) -> Fail {
        Fail::Lua(e)
    }
}

/// A KEMI return value, and what the function returns when it fails.
pub(crate) trait KemiReturn: IntoLuaMulti {
    /// The value for a failure with `code`.
    fn failed(code: i64) -> Self;
}

impl KemiReturn for i64 {
    fn failed(code: i64) -> Self {
        code
    }
}

impl KemiReturn for bool {
    fn failed(_: i64) -> Self {
        false
    }
}

impl KemiReturn for () {
    fn failed(_: i64) -> Self {}
}

impl KemiReturn for Value {
    fn failed(_: i64) -> Self {
        Value::Nil
    }
}

/// 1 for true, -1 for false: Kamailio's usual answer.
pub(crate) fn kemi_bool(ok: bool) -> i64 {
    if ok {
        1
    } else {
        -1
    }
}

/// What a `KSR` function gets: the VM, its own name (for log lines) and
/// the handles.
pub(crate) struct Cx<'a> {
    pub lua: &'a Lua,
    name: &'a str,
    handles: &'a Handles,
    /// The VM's context and message, held (no app data lookup).
    here: &'a context::Here,
}

impl<'a> Cx<'a> {
    /// The SIP host.
    pub fn sip(&self) -> Result<&'a dyn SipOps, Fail> {
        self.handles
            .sip()
            .ok_or_else(|| Fail::new("no SIP host (the script is only being checked)"))
    }

    /// The event socket.
    pub fn events(&self) -> Result<&'a dyn EventOps, Fail> {
        self.handles
            .events
            .as_deref()
            .ok_or_else(|| Fail::new("no event socket (the script is only being checked)"))
    }

    /// NATS, when `[nats]` is on.
    pub fn nats(&self) -> Option<&'a dyn NatsOps> {
        self.handles.nats.as_deref()
    }

    /// The admin RPC registry.
    pub fn registry(&self) -> Result<&'a rpc::Registry, Fail> {
        self.handles
            .registry
            .as_deref()
            .ok_or_else(|| Fail::new("no RPC registry (the script is only being checked)"))
    }

    /// `[maxfwd] max_limit`.
    pub fn maxfwd_limit(&self) -> u8 {
        self.handles.maxfwd_limit
    }

    /// `text` as the function's result, pushed straight onto Lua's stack
    /// when it can be ([`Out::text`]); call it last.
    pub fn text(&self, text: &[u8]) -> mlua::Result<Out> {
        Out::text(self.lua, self.handles.memory_limit, text)
    }

    /// A pseudo-variable value as the function's result: nil for none, an
    /// integer, or a string as [`Cx::text`] pushes it; call it last.
    pub fn value(&self, v: Option<PvValue>) -> mlua::Result<Out> {
        match v {
            None => Ok(Out::Value(Value::Nil)),
            Some(PvValue::Int(i)) => Ok(Out::Value(Value::Integer(i))),
            Some(PvValue::Str(s)) => self.text(&s),
        }
    }

    /// `$shv` and `$sht`.
    pub fn shared(&self) -> &'a SharedVars {
        &self.handles.shared
    }

    /// Run `f` on the current request.
    pub fn request<R>(&self, f: impl FnOnce(&mut Request) -> R) -> Result<R, Fail> {
        Ok(self.here.with_request(f)?)
    }

    /// The VM's context and message: `cx.here().with_view(f)` does what
    /// `context::with_view(cx.lua, f)` does, without the lookup.
    pub fn here(&self) -> &'a context::Here {
        self.here
    }

    /// The current evapi event.
    pub fn event(&self) -> Result<Rc<EvapiCurrent>, Fail> {
        Ok(self.here.event()?)
    }

    /// Record `e` as the route's last internal error, the one
    /// `KSR.sl.sl_reply_error()` answers with (no effect outside a SIP
    /// route).
    pub fn record_error(&self, e: &TmError) {
        let _ = self.here.with_state(|s| s.set_error(e));
    }

    /// Record that the route replied, relayed or suspended.
    pub fn mark_handled(&self) {
        self.here.mark_handled();
    }

    /// Log a problem that does not end the function.
    /// The line names the function, the script line that called it and
    /// the Call-ID, and is rate-limited per script line.
    pub fn warn(&self, why: impl Display) {
        let msg = format_args!("{}: {why}", self.name);
        crate::diag::emit(self.lua, crate::diag::Level::Warn, &msg);
    }

    /// Log a refusal the function recovers from (it returns a value of
    /// its own choosing); a Lua error is still raised.
    pub fn warn_fail(&self, fail: Fail) -> mlua::Result<()> {
        match fail {
            Fail::Refused { why, .. } => {
                self.warn(why);
                Ok(())
            }
            Fail::Lua(e) => Err(e),
        }
    }
}

/// A `KSR` table being filled: `KSR` itself or one module (`KSR.sl`).
pub(crate) struct Module<'a> {
    lua: &'a Lua,
    table: Table,
    prefix: String,
    handles: &'a Arc<Handles>,
    here: context::Here,
}

impl<'a> Module<'a> {
    /// `KSR` itself (functions such as `KSR.info`, `KSR.is_INVITE`).
    pub fn root(lua: &'a Lua, ksr: Table, handles: &'a Arc<Handles>) -> Module<'a> {
        Module {
            lua,
            table: ksr,
            prefix: "KSR".into(),
            handles,
            here: context::here(lua),
        }
    }

    /// A module table `KSR.<name>`, created now.
    pub fn sub(&self, name: &str) -> mlua::Result<Module<'a>> {
        let table = self.lua.create_table()?;
        self.table.set(name, &table)?;
        Ok(Module {
            lua: self.lua,
            table,
            prefix: format!("{}.{name}", self.prefix),
            handles: self.handles,
            here: self.here.clone(),
        })
    }

    /// The VM being built.
    pub fn lua(&self) -> &'a Lua {
        self.lua
    }

    /// Register `name` as a function written in Lua (for the few that must
    /// run as Lua code, such as `KSR.x.exit`).
    pub fn lua_func(&self, name: &str, f: mlua::Function) -> mlua::Result<()> {
        self.table.set(name, f)
    }

    /// Register `name`: `f` runs with a [`Cx`] and the arguments; a
    /// [`Fail`] is logged with the function's full name and becomes the
    /// function's failure value.
    pub fn func<A, R, F>(&self, name: &str, f: F) -> mlua::Result<()>
    where
        A: FromLuaMulti,
        R: KemiReturn + 'static,
        F: Fn(&Cx<'_>, A) -> Result<R, Fail> + 'static,
    {
        let full = format!("{}.{name}", self.prefix);
        let handles = self.handles.clone();
        let here = self.here.clone();
        let func = self.lua.create_function(move |lua, args: A| {
            let cx = Cx {
                lua,
                name: &full,
                handles: &handles,
                here: &here,
            };
            match f(&cx, args) {
                Ok(r) => Ok(r),
                Err(Fail::Lua(e)) => Err(e),
                Err(Fail::Refused { code, why }) => {
                    cx.warn(why);
                    Ok(R::failed(code))
                }
            }
        })?;
        self.table.set(name, func)
    }
}

/// An integer argument that Lua may hand over as a float (5.1 scripts) or
/// a numeric string.
pub(crate) fn lua_int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 && n.is_finite() => Some(*n as i64),
        Value::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}
