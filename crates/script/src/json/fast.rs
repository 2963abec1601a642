//! `cjson.decode`'s own parser: JSON text straight onto a Lua stack, with
//! no document in between.
//!
//! It takes exactly the texts serde_json takes, and gives the same values:
//! integers that fit an `i64` as Lua integers, other numbers as floats,
//! `null` as `cjson.null` (the null light userdata). Anything it does not
//! take, [`Parser::document`] reports as [`Refused`], and the caller asks
//! serde_json, whose message says why (or, were the two ever to disagree,
//! whose value is pushed). So this parser only has to refuse everything
//! serde_json refuses; `decode::tests::the_same_texts_and_values_as_serde_json`
//! compares the two on generated texts.
//!
//! Lua raises its errors (out of memory, no room on the stack) with a
//! `longjmp`, which must not pass a Rust frame that still has a destructor
//! to run. The frames here hold only references and numbers: the scratch
//! buffer belongs to the caller, outside the protected call.

use mlua::ffi;

/// A C function for `lua_pcall`: parse and push the text of the
/// [`Parser`] whose address is the light userdata at index 1. Returns the
/// value, or nothing (the caller then sees nil) with `refused` set.
///
/// # Safety
/// Called only through `lua_pcall`, with the address of a `Parser` that
/// outlives the call; a C function starts with LUA_MINSTACK free slots.
pub(super) unsafe extern "C-unwind" fn push(l: *mut ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: as for this function.
    unsafe {
        let parser = &mut *ffi::lua_touserdata(l, 1).cast::<Parser>();
        match parser.document(l) {
            Ok(()) => 1,
            Err(Refused) => {
                parser.refused = true;
                0
            }
        }
    }
}

/// Deepest nesting taken: serde_json refuses the 128th level.
const MAX_NESTING: u32 = 127;

/// The text is not one this parser takes (see the module's comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Refused;

/// One text being pushed.
pub(super) struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    depth: u32,
    /// Unescaped strings are built here.
    scratch: &'a mut Vec<u8>,
    /// Set by [`push`] when [`Parser::document`] refused the text.
    pub(super) refused: bool,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a [u8], scratch: &'a mut Vec<u8>) -> Self {
        Parser {
            text,
            at: 0,
            depth: 0,
            scratch,
            refused: false,
        }
    }

    /// Push the value of the whole text (one value, whitespace around it).
    /// On `Err`, what was pushed is left on the stack for the caller to
    /// drop.
    ///
    /// # Safety
    /// `l` is a Lua state inside a protected call, with `LUA_MINSTACK`
    /// free slots.
    pub(super) unsafe fn document(&mut self, l: *mut ffi::lua_State) -> Result<(), Refused> {
        // SAFETY: as for this function.
        unsafe { self.value(l)? };
        self.skip_ws();
        if self.at == self.text.len() {
            Ok(())
        } else {
            Err(Refused)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Step past `c` after any whitespace, or refuse.
    fn expect(&mut self, c: u8) -> Result<(), Refused> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// # Safety
    /// As for [`Parser::document`]; pushes one value on `Ok`.
    unsafe fn value(&mut self, l: *mut ffi::lua_State) -> Result<(), Refused> {
        self.skip_ws();
        // SAFETY: the caller's promise; each push below takes one slot
        // of the LUA_MINSTACK a C function starts with, and `container`
        // asks for room before it nests.
        unsafe {
            match self.peek().ok_or(Refused)? {
                b'{' => self.container(l, true)?,
                b'[' => self.container(l, false)?,
                b'"' => {
                    let s = self.string()?;
                    ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
                }
                b't' => {
                    self.word(b"true")?;
                    ffi::lua_pushboolean(l, 1);
                }
                b'f' => {
                    self.word(b"false")?;
                    ffi::lua_pushboolean(l, 0);
                }
                b'n' => {
                    self.word(b"null")?;
                    ffi::lua_pushlightuserdata(l, std::ptr::null_mut());
                }
                b'-' | b'0'..=b'9' => self.number(l)?,
                _ => return Err(Refused),
            }
        }
        Ok(())
    }

    fn word(&mut self, w: &[u8]) -> Result<(), Refused> {
        if self.text[self.at..].starts_with(w) {
            self.at += w.len();
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// An object (`{`) or an array (`[`) at `self.at`, as a table.
    ///
    /// # Safety
    /// As for [`Parser::value`].
    unsafe fn container(&mut self, l: *mut ffi::lua_State, object: bool) -> Result<(), Refused> {
        if self.depth == MAX_NESTING {
            return Err(Refused);
        }
        self.depth += 1;
        self.at += 1;
        let close = if object { b'}' } else { b']' };
        // SAFETY: the caller's promise; `luaL_checkstack` raises (a
        // `longjmp` through frames without destructors) when Lua cannot
        // grow the stack. Four slots in either part of the table: an
        // answer's few fields fit without a rehash.
        unsafe {
            ffi::luaL_checkstack(l, 3, c"cjson.decode: nesting too deep".as_ptr());
            if object {
                ffi::lua_createtable(l, 0, 4);
            } else {
                ffi::lua_createtable(l, 4, 0);
            }
            self.skip_ws();
            if self.peek() == Some(close) {
                self.at += 1;
            } else {
                let mut n: ffi::lua_Integer = 0;
                loop {
                    if object {
                        self.skip_ws();
                        if self.peek() != Some(b'"') {
                            return Err(Refused);
                        }
                        let key = self.string()?;
                        ffi::lua_pushlstring(l, key.as_ptr().cast(), key.len());
                        self.expect(b':')?;
                        self.value(l)?;
                        ffi::lua_rawset(l, -3);
                    } else {
                        self.value(l)?;
                        n += 1;
                        ffi::lua_rawseti(l, -2, n);
                    }
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(c) if c == close => {
                            self.at += 1;
                            break;
                        }
                        _ => return Err(Refused),
                    }
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// The string whose opening quote is at `self.at`, unescaped and
    /// checked to be UTF-8 (serde_json's rule for a text given as bytes).
    fn string(&mut self) -> Result<&[u8], Refused> {
        let start = self.at + 1;
        let rest = &self.text[start..];
        let plain = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .ok_or(Refused)?;
        if rest[plain] == b'"' {
            let s = &rest[..plain];
            std::str::from_utf8(s).map_err(|_| Refused)?;
            self.at = start + plain + 1;
            return Ok(s);
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&rest[..plain]);
        let mut i = start + plain;
        loop {
            let b = *self.text.get(i).ok_or(Refused)?;
            i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = *self.text.get(i).ok_or(Refused)?;
                    i += 1;
                    let c = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let ch = self.unicode_escape(&mut i)?;
                            let mut buf = [0u8; 4];
                            self.scratch
                                .extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(Refused),
                    };
                    self.scratch.push(c);
                }
                0..=0x1f => return Err(Refused),
                _ => self.scratch.push(b),
            }
        }
        std::str::from_utf8(self.scratch).map_err(|_| Refused)?;
        self.at = i;
        Ok(self.scratch)
    }

    /// The character of a `\u` escape whose four hex digits start at `*i`
    /// (a surrogate pair takes both escapes); a lone surrogate is refused.
    fn unicode_escape(&self, i: &mut usize) -> Result<char, Refused> {
        let hi = self.hex4(*i)?;
        *i += 4;
        let code = match hi {
            0xd800..=0xdbff => {
                if self.text.get(*i..*i + 2) != Some(b"\\u") {
                    return Err(Refused);
                }
                let lo = self.hex4(*i + 2)?;
                if !(0xdc00..=0xdfff).contains(&lo) {
                    return Err(Refused);
                }
                *i += 6;
                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(Refused),
            _ => hi,
        };
        char::from_u32(code).ok_or(Refused)
    }

    fn hex4(&self, at: usize) -> Result<u32, Refused> {
        let digits = self.text.get(at..at + 4).ok_or(Refused)?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + char::from(d).to_digit(16).ok_or(Refused)?;
        }
        Ok(v)
    }

    /// A number at `self.at`: an integer that fits an `i64` as a Lua
    /// integer, any other number as a float, as serde_json gives them
    /// (`-0` is the float -0.0 there too). A float is read by Rust's
    /// parser, correctly rounded; serde_json without its
    /// `float_roundtrip` feature can be one unit in the last place off.
    ///
    /// # Safety
    /// As for [`Parser::value`].
    unsafe fn number(&mut self, l: *mut ffi::lua_State) -> Result<(), Refused> {
        let t = self.text;
        let start = self.at;
        let digits_from = |mut i: usize| {
            while let Some(b'0'..=b'9') = t.get(i) {
                i += 1;
            }
            i
        };
        let negative = t[start] == b'-';
        let int_start = start + usize::from(negative);
        let int_end = match t.get(int_start) {
            Some(b'0') => int_start + 1,
            Some(b'1'..=b'9') => digits_from(int_start + 1),
            _ => return Err(Refused),
        };
        let mut i = int_end;
        let mut integer = true;
        if t.get(i) == Some(&b'.') {
            let end = digits_from(i + 1);
            if end == i + 1 {
                return Err(Refused);
            }
            i = end;
            integer = false;
        }
        if let Some(b'e' | b'E') = t.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = t.get(i) {
                i += 1;
            }
            let end = digits_from(i);
            if end == i {
                return Err(Refused);
            }
            i = end;
            integer = false;
        }
        self.at = i;
        if integer {
            let magnitude = t[int_start..int_end].iter().try_fold(0u64, |m, &d| {
                m.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            if let Some(m) = magnitude {
                // SAFETY: the caller's promise (one slot).
                unsafe {
                    match (negative, i64::try_from(m)) {
                        (false, Ok(v)) => ffi::lua_pushinteger(l, v),
                        (false, Err(_)) => ffi::lua_pushnumber(l, m as f64),
                        (true, _) if m == 0 => ffi::lua_pushnumber(l, -0.0),
                        (true, _) if m <= 1 << 63 => {
                            ffi::lua_pushinteger(l, (m as i64).wrapping_neg())
                        }
                        (true, _) => ffi::lua_pushnumber(l, -(m as f64)),
                    }
                }
                return Ok(());
            }
        }
        // The text is ASCII digits, signs, '.' and 'e' by now.
        let s = std::str::from_utf8(&t[start..i]).map_err(|_| Refused)?;
        let v: f64 = s.parse().map_err(|_| Refused)?;
        if !v.is_finite() {
            // serde_json: "number out of range"
            return Err(Refused);
        }
        // SAFETY: the caller's promise (one slot).
        unsafe { ffi::lua_pushnumber(l, v) };
        Ok(())
    }
}
