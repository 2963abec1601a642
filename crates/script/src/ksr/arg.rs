//! A string argument of a `KSR` function, read where it lies on Lua's
//! stack.
//!
//! mlua hands a string argument over as a [`LuaString`], a registry
//! reference made for the call and dropped after it, or as a `String`,
//! copied into a new allocation. The functions a script calls on every
//! request (`KSR.pv.get(name)`, `KSR.sl.send_reply(code, reason)`,
//! `KSR.evapi.relay(data)`...) only read the text while they run, and the
//! argument stays on the stack until the function returns: [`Text`]
//! borrows it there.

use mlua::state::RawLua;
use mlua::{ffi, FromLua, Lua, LuaString, Value};
use std::os::raw::c_int;

/// A string argument (a number is turned into a string, as Lua does).
///
/// Valid while the `KSR` function it was given to runs: it must not be
/// kept past the call (it is neither `Clone` nor `Send`).
pub(crate) struct Text(Held);

enum Held {
    /// A string on the calling function's stack: its bytes, which Lua
    /// keeps while the string is there.
    Stack(*const u8, usize),
    /// Anything else that converts (a number), held by a reference.
    Lua(LuaString),
}

impl Text {
    /// The bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: the string is on the stack of the running call (see
            // the type's comment), so Lua neither frees nor moves it.
            Held::Stack(p, len) => unsafe { std::slice::from_raw_parts(*p, *len) },
            Held::Lua(s) => {
                let b = s.as_bytes();
                // SAFETY: `s` holds the string; its bytes live as long.
                unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) }
            }
        }
    }

    /// The text, which must be UTF-8 (as a `String` argument must).
    pub(crate) fn to_str(&self) -> mlua::Result<&str> {
        std::str::from_utf8(self.as_bytes()).map_err(|e| mlua::Error::FromLuaConversionError {
            from: "string",
            to: "&str".into(),
            message: Some(e.to_string()),
        })
    }

    /// The text, invalid UTF-8 replaced.
    pub(crate) fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// Where its bytes are: a short string's (up to 40 bytes) is the same
    /// for every equal string while one exists (Lua interns them).
    pub(crate) fn addr(&self) -> usize {
        self.as_bytes().as_ptr() as usize
    }
}

impl FromLua for Text {
    fn from_lua(value: Value, lua: &Lua) -> mlua::Result<Text> {
        LuaString::from_lua(value, lua).map(|s| Text(Held::Lua(s)))
    }

    unsafe fn from_stack(idx: c_int, raw: &RawLua) -> mlua::Result<Text> {
        let state = raw.state();
        if ffi::lua_type(state, idx) == ffi::LUA_TSTRING {
            let mut len = 0;
            let p = ffi::lua_tolstring(state, idx, &mut len);
            return Ok(Text(Held::Stack(p.cast(), len)));
        }
        LuaString::from_stack(idx, raw).map(|s| Text(Held::Lua(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings and numbers come through; other types are refused as a
    /// `LuaString` argument is.
    #[test]
    fn strings_and_numbers_are_read_others_refused() {
        let lua = Lua::new();
        let f = lua
            .create_function(|_, (a, b, c): (Text, Text, Option<Text>)| {
                Ok((
                    String::from_utf8_lossy(a.as_bytes()).into_owned(),
                    b.to_str()?.to_owned(),
                    c.map(|c| c.as_bytes().len()),
                ))
            })
            .unwrap();
        lua.globals().set("f", f).unwrap();
        let r: (String, String, Option<usize>) = lua.load(r#"f("abc", 42, nil)"#).eval().unwrap();
        assert_eq!(r, ("abc".into(), "42".into(), None));
        let r: (String, String, Option<usize>) = lua
            .load(r#"f(string.rep("x", 100), "\xe2\x82\xac", "")"#)
            .eval()
            .unwrap();
        assert_eq!(r, ("x".repeat(100), "€".into(), Some(0)));
        let e = lua.load(r#"f({}, "b")"#).exec().unwrap_err().to_string();
        assert!(e.contains("string"), "{e}");
        let e = lua
            .load(r#"f("a", "\xff")"#)
            .exec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("utf"), "{e}");
    }
}
