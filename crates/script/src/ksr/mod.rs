//! The `KSR` object: Kamailio's KEMI functions, with their names, argument
//! order and return conventions (positive: success, negative: failure).
//!
//! One file per `KSR` module; each registers its functions through
//! [`module::Module::func`], which holds what they have in common (the
//! handles, logging a failure with the function's name, the KEMI failure
//! value). Adding a module: a new file with a `register` function, and its
//! line in [`MODULES`].

mod arg;
mod core;
mod dialog;
mod evapi;
mod flags;
mod hdr;
mod htable;
mod is_myself;
mod jansson;
mod jsonrpcs;
mod kx;
mod log;
mod maxfwd;
mod module;
mod nats;
mod out;
mod pike;
mod pv;
mod registrar;
mod reply;
mod rr;
mod sanity;
mod siputils;
mod sl;
mod textops;
mod tm;
mod tm_routes;
mod tmx;
mod x;

#[cfg(test)]
pub(crate) mod testing;

pub(crate) use jsonrpcs::reply_field as jsonrpl;
pub(crate) use module::Handles;
use module::Module;
pub(crate) use pv::carry_vars;

use mlua::{Lua, Table};
use std::sync::Arc;

type Register = fn(&Module<'_>) -> mlua::Result<()>;

/// Every module: the table it fills (`None`: `KSR` itself) and how.
const MODULES: &[(Option<&str>, Register)] = &[
    (None, log::register),
    (None, core::register),
    (Some("x"), x::register),
    (Some("pv"), pv::register),
    (Some("sl"), sl::register),
    (Some("tm"), tm::register),
    (Some("tmx"), tmx::register),
    (Some("hdr"), hdr::register),
    (Some("maxfwd"), maxfwd::register),
    (Some("evapi"), evapi::register),
    (Some("htable"), htable::register),
    (Some("pike"), pike::register),
    (Some("jansson"), jansson::register),
    (Some("jsonrpcs"), jsonrpcs::register),
    (None, flags::register),
    (None, is_myself::register),
    (Some("kx"), kx::register),
    (Some("siputils"), siputils::register),
    (Some("corex"), siputils::register_corex),
    (Some("textops"), textops::register),
    (Some("registrar"), registrar::register),
    (Some("sanity"), sanity::register),
    (Some("rr"), rr::register),
    (Some("dialog"), dialog::register),
    (Some("nats"), nats::register),
];

/// Install `KSR` and `package.preload.cjson` on a new VM.
pub(crate) fn install(lua: &Lua, handles: &Arc<Handles>) -> mlua::Result<()> {
    let ksr = lua.create_table()?;
    let root = Module::root(lua, ksr.clone(), handles);
    for (name, register) in MODULES {
        match name {
            None => register(&root)?,
            Some(name) => register(&root.sub(name)?)?,
        }
    }
    lua.globals().set("KSR", ksr)?;

    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    let loader = lua.create_function(|lua, _: mlua::MultiValue| crate::json::cjson_module(lua))?;
    preload.set("cjson", loader.clone())?;
    preload.set("cjson.safe", loader)?;
    Ok(())
}
