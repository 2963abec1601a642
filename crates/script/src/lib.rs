//! KEMI-style Lua routing scripts: where the event socket and the SIP host
//! meet.
//!
//! A script is plain Lua that a Kamailio KEMI user would recognise: the
//! `KSR` object with Kamailio's function names, argument order and return
//! conventions, pseudo-variables read with `KSR.pv.get("$ru")`, and the
//! entry points `ksr_request_route()`, `ksr_reply_route()`, failure routes
//! named with `KSR.tm.t_on_failure`, and the evapi `event_callback`.
//!
//! This crate implements the hook traits of the two crates below it
//! ([`evapi::EventHandler`] and [`sip::Router`]); neither of them knows Lua.
//! Each Lua VM is owned by the one thread that runs it (a SIP child, the
//! evapi dispatcher or an evapi worker) and is created there on first use;
//! `$var` lives in it, so it is per worker and keeps its value between
//! messages, as in Kamailio. `$shv` and `$sht` are shared by all.
//!
//! The engine is given what the `KSR` functions act through when it is
//! built ([`Engine::new`] with an [`EventOps`] and a [`SipOps`]), so a
//! script never runs without them. Inside: `engine` owns the VMs, `call`
//! runs script functions, `context` owns the current message or event,
//! `hooks` implements the two traits, and `ksr/` has one file per `KSR`
//! module, each registering through one helper. `rpc` adds the engine's
//! admin RPC methods (`htable.*`, `app_lua.reload`) to the registry the
//! engine is built with; the script reaches that registry through
//! `KSR.jsonrpcs.exec`.

mod call;
mod compat;
mod context;
mod diag;
mod engine;
mod hooks;
mod json;
mod ksr;
mod limits;
mod lint;
mod maxfwd_section;
mod modparams;
mod ops;
mod packages;
pub mod pv;
mod pvx;
mod route_state;
pub mod rpc;
mod section;
mod shared;
mod stats;

pub use engine::{Engine, Reloaded, ScriptConfig, ScriptError};
pub use limits::Limits;
pub use lint::{lint, Finding, Severity};
pub use maxfwd_section::MaxfwdSection;
pub use modparams::{HtableSection, ModParamError, PikeSection};
pub use ops::{EventClient, EventOps, NatsOps, SipOps};
pub use section::{ScriptSection, SectionError};
pub use stats::ScriptStats;
