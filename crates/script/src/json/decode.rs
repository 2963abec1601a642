//! `cjson.decode`: JSON text to Lua values, through Lua's C API.

use serde_json::Value as Json;

use super::fast;

/// `cjson.decode(text)`, a C function: JSON to Lua, integers staying
/// integers, null as `cjson.null`. Raises "bad argument #1 to 'decode'"
/// for a value that is not a string (numbers are taken as their text,
/// as lua-cjson's `luaL_checklstring` takes them), and "cjson.decode:
/// <why>" for text that is not JSON.
///
/// Written against Lua's C API rather than as an mlua function: mlua
/// makes every table, string and `raw_set` a protected call of its own,
/// which cost about 10,700 instructions for the three fields of an evapi
/// client's answer (`bench/instructions.py --script async`). The text is
/// parsed straight onto the stack in one protected call ([`fast::push`]);
/// building serde_json's document first, and freeing it, cost another
/// 4,000 or so. A text that parser does not take
/// goes to serde_json, for its message or (were the two ever to disagree)
/// its document, pushed by [`push_doc`].
///
/// A Lua error is a `longjmp`, which must not pass a Rust frame with a
/// destructor still to run: the scratch buffer and the document are
/// dropped before any error is raised from this frame, and the frames
/// the protected calls pass hold only references.
pub(super) unsafe extern "C-unwind" fn decode(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    // SAFETY: called by Lua as a C function, with its arguments on `l`'s
    // stack and at least LUA_MINSTACK (20) free slots.
    unsafe {
        let mut len = 0usize;
        let text = ffi::lua_tolstring(l, 1, &mut len);
        if text.is_null() {
            let got = std::ffi::CStr::from_ptr(ffi::luaL_typename(l, 1));
            let msg = format!(
                "bad argument #1 to 'decode' (string expected, got {})",
                got.to_string_lossy()
            );
            ffi::lua_pushlstring(l, msg.as_ptr().cast(), msg.len());
            drop(msg);
            ffi::lua_error(l);
        }
        let bytes = std::slice::from_raw_parts(text.cast::<u8>(), len);
        let mut scratch = Vec::new();
        let (status, refused) = {
            let mut parser = fast::Parser::new(bytes, &mut scratch);
            ffi::lua_pushcfunction(l, fast::push);
            ffi::lua_pushlightuserdata(l, (&raw mut parser).cast());
            (ffi::lua_pcall(l, 1, 1, 0), parser.refused)
        };
        drop(scratch);
        if status != ffi::LUA_OK {
            // The error value (out of memory, most likely) is on top.
            ffi::lua_error(l);
        }
        if !refused {
            return 1;
        }
        // Not JSON (or not as the parser reads it): serde_json says why.
        ffi::lua_settop(l, -2);
        #[cfg(test)]
        tests::SERDE_CALLS.with(|n| n.set(n.get() + 1));
        let doc = match serde_json::from_slice::<Json>(bytes) {
            Ok(doc) => doc,
            Err(e) => {
                let msg = format!("cjson.decode: {e}");
                drop(e);
                ffi::lua_pushlstring(l, msg.as_ptr().cast(), msg.len());
                drop(msg);
                ffi::lua_error(l);
            }
        };
        ffi::lua_pushcfunction(l, push_doc);
        ffi::lua_pushlightuserdata(l, (&raw const doc).cast_mut().cast());
        let status = ffi::lua_pcall(l, 1, 1, 0);
        drop(doc);
        if status != ffi::LUA_OK {
            // The error value (out of memory, most likely) is on top.
            ffi::lua_error(l);
        }
        1
    }
}

/// Push the document whose address is the light userdata at index 1.
unsafe extern "C-unwind" fn push_doc(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called only by `decode`'s `lua_pcall`, with the address of
    // a document that outlives the call.
    unsafe {
        let doc = &*mlua::ffi::lua_touserdata(l, 1).cast::<Json>();
        push_json(l, doc);
    }
    1
}

/// Push `json` as a Lua value. Raises (a `longjmp`) when Lua runs out of
/// memory or stack; its frames hold only references.
unsafe fn push_json(l: *mut mlua::ffi::lua_State, json: &Json) {
    use mlua::ffi;
    // SAFETY: `l` is a state inside a C function's protected call; every
    // push is preceded by a check for room (serde_json refuses documents
    // nested deeper than 128, so the recursion is bounded too).
    unsafe {
        match json {
            Json::Null => ffi::lua_pushlightuserdata(l, std::ptr::null_mut()),
            Json::Bool(b) => ffi::lua_pushboolean(l, (*b).into()),
            Json::Number(n) => match n.as_i64() {
                Some(i) => ffi::lua_pushinteger(l, i),
                None => ffi::lua_pushnumber(l, n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => {
                ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
            }
            Json::Array(items) => {
                ffi::luaL_checkstack(l, 2, c"cjson.decode: nesting too deep".as_ptr());
                ffi::lua_createtable(l, c_size(items.len()), 0);
                for (i, item) in items.iter().enumerate() {
                    push_json(l, item);
                    ffi::lua_rawseti(l, -2, i as ffi::lua_Integer + 1);
                }
            }
            Json::Object(map) => {
                ffi::luaL_checkstack(l, 3, c"cjson.decode: nesting too deep".as_ptr());
                ffi::lua_createtable(l, 0, c_size(map.len()));
                for (k, item) in map {
                    ffi::lua_pushlstring(l, k.as_ptr().cast(), k.len());
                    push_json(l, item);
                    ffi::lua_rawset(l, -3);
                }
            }
        }
    }
}

/// A table size hint for `lua_createtable`.
fn c_size(n: usize) -> std::ffi::c_int {
    n.min(std::ffi::c_int::MAX as usize) as std::ffi::c_int
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::tests::vm_with_cjson;
    use mlua::Value;
    use std::cell::Cell;

    thread_local! {
        /// Texts `decode` handed to serde_json on this thread.
        pub(super) static SERDE_CALLS: Cell<usize> = const { Cell::new(0) };
    }

    /// Every JSON type through `decode`'s C API path, compared with what
    /// the same text gives through serde_json and back through `encode`.
    #[test]
    fn decode_builds_every_kind_of_value() {
        let lua = vm_with_cjson();
        let text = r#"{"a": [1, -2, 3.5, null, true, false, "x\u00e9\n"],
            "big": 18446744073709551615, "neg": -9007199254740993,
            "o": {"p": {"q": [[], {}]}}, "dup": 1, "dup": 2, "": "empty key"}"#;
        let (kinds, big, neg, null_at_4, n, dup, empty, again): (
            String,
            f64,
            i64,
            bool,
            i64,
            i64,
            String,
            String,
        ) = lua
            .load(format!(
                r#"local t = cjson.decode([==[{text}]==])
                local kinds = {{}}
                for i = 1, 7 do kinds[i] = math.type(t.a[i]) or type(t.a[i]) end
                return table.concat(kinds, ","), t.big, t.neg, t.a[4] == cjson.null,
                    #t.a, t.dup, t[""], cjson.encode(t)"#
            ))
            .eval()
            .unwrap();
        assert_eq!(
            kinds, "integer,integer,float,userdata,boolean,boolean,string",
            "the array's values"
        );
        assert_eq!(big, 18446744073709551615.0);
        assert_eq!(neg, -9007199254740993);
        assert!(null_at_4, "null is cjson.null");
        assert_eq!(n, 7, "a null inside an array keeps its place");
        assert_eq!(dup, 2, "the last of two equal keys wins");
        assert_eq!(empty, "empty key");
        let back: Json = serde_json::from_str(&again).unwrap();
        let want: Json = serde_json::from_str(text).unwrap();
        // encode writes `{}` and `[]` alike as `{}` (lua-cjson's rule for an
        // empty table), and an integer past i64 is a float in Lua (as
        // lua-cjson, which reads every number as a double): the rest
        // round-trips exactly.
        let mut want = want;
        want["o"]["p"]["q"][0] = serde_json::json!({});
        want["big"] = serde_json::json!(18446744073709551615.0_f64);
        assert_eq!(back, want);
        let s: String = lua
            .load(r#"return cjson.decode([["caf\u00e9"]]) .. cjson.decode("12") + 1"#)
            .eval()
            .unwrap();
        assert_eq!(s, "café13", "a bare string and a bare number decode too");
    }

    /// What `decode` raises: an argument that is not a string (a number is
    /// taken as its text, as lua-cjson takes it), text that is not JSON,
    /// nesting past serde_json's limit; the VM goes on after each.
    #[test]
    fn decode_refuses_with_a_message_that_says_why() {
        let lua = vm_with_cjson();
        let cases = [
            (
                "cjson.decode()",
                "bad argument #1 to 'decode' (string expected, got no value)",
            ),
            (
                "cjson.decode(nil)",
                "bad argument #1 to 'decode' (string expected, got nil)",
            ),
            (
                "cjson.decode({})",
                "bad argument #1 to 'decode' (string expected, got table)",
            ),
            (
                "cjson.decode('{bad')",
                "cjson.decode: key must be a string at line 1 column 2",
            ),
            (
                "cjson.decode('[1] x')",
                "cjson.decode: trailing characters at line 1 column 5",
            ),
            (
                "cjson.decode(string.rep('[', 200))",
                "cjson.decode: recursion limit exceeded",
            ),
        ];
        for (call, want) in cases {
            let (ok, err): (bool, String) = lua
                .load(format!(
                    "local ok, e = pcall(function() return {call} end) return ok, tostring(e)"
                ))
                .eval()
                .unwrap();
            assert!(!ok, "{call} must fail");
            assert!(err.contains(want), "{call}: {err}");
        }
        let n: i64 = lua.load("return cjson.decode(42)").eval().unwrap();
        assert_eq!(n, 42);
    }

    /// Out of memory while the table is built: the error reaches the
    /// script as Lua's own, and the VM is still usable once there is room.
    #[test]
    fn decode_out_of_memory_is_an_error_not_a_crash() {
        let lua = vm_with_cjson();
        let text = format!(
            "[{}]",
            vec!["\"a longer string than a short one\""; 20_000].join(",")
        );
        lua.globals().set("text", text).unwrap();
        lua.gc_collect().unwrap();
        let used = lua.used_memory();
        lua.set_memory_limit(used + 256 * 1024).unwrap();
        let (ok, err): (bool, String) = lua
            .load("local ok, e = pcall(cjson.decode, text) return ok, tostring(e)")
            .eval()
            .unwrap();
        assert!(!ok, "20,000 entries do not fit in 256 KiB");
        assert!(err.contains("not enough memory"), "{err}");
        lua.set_memory_limit(0).unwrap();
        let n: i64 = lua.load("return #cjson.decode(text)").eval().unwrap();
        assert_eq!(n, 20_000);
    }

    /// A tiny xorshift generator: the same texts on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    /// A random JSON text: nested containers, strings with escapes and
    /// raw UTF-8, integers at the edges of `i64` and `u64`, floats that
    /// both parsers round the same way (short mantissas, small exponents).
    fn random_json(rng: &mut Rng, depth: u32, out: &mut String) {
        let ws = [" ", "", "\n", "\t", "  \r\n"];
        match rng.below(if depth > 3 { 4 } else { 6 }) {
            0 => out.push_str(rng.pick(&[
                "0",
                "-0",
                "7",
                "-12",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551615",
                "18446744073709551616",
                "123456789012345678901234567890",
                "1.5",
                "-2.25e3",
                "1E2",
                "0.1",
                "3e-7",
                "-0.0",
                "2.5E+10",
                "1e308",
                "5e-324",
            ])),
            1 => out.push_str(rng.pick(&["true", "false", "null"])),
            2 | 3 => {
                out.push('"');
                for _ in 0..rng.below(6) {
                    out.push_str(rng.pick(&[
                        "a",
                        "tindex",
                        " ",
                        "\\\"",
                        "\\\\",
                        "\\/",
                        "\\n",
                        "\\t",
                        "\\b\\f\\r",
                        "\\u00e9",
                        "\\u0000",
                        "\\ud83d\\ude00",
                        "é",
                        "日本",
                        "\\uFFFF",
                    ]));
                }
                out.push('"');
            }
            kind => {
                let object = kind == 4;
                out.push(if object { '{' } else { '[' });
                for i in 0..rng.below(5) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(rng.pick(&ws));
                    if object {
                        out.push_str(rng.pick(&["\"k\"", "\"tlabel\"", "\"\"", "\"k\\u0041\""]));
                        out.push_str(rng.pick(&ws));
                        out.push(':');
                    }
                    random_json(rng, depth + 1, out);
                    out.push_str(rng.pick(&ws));
                }
                out.push(if object { '}' } else { ']' });
            }
        }
    }

    /// Whether the Lua value is the one serde_json reads: integers as
    /// integers, other numbers as floats, null as the null light
    /// userdata, containers entry by entry. A float may be one unit in
    /// the last place away: `decode` rounds correctly (as lua-cjson's
    /// `strtod` does), serde_json without `float_roundtrip` not always
    /// (30-digit integers, for one).
    fn same(lua_value: &Value, json: &Json) -> bool {
        match (lua_value, json) {
            (Value::LightUserData(p), Json::Null) => p.0.is_null(),
            (Value::Boolean(a), Json::Bool(b)) => a == b,
            (Value::Integer(a), Json::Number(n)) => n.as_i64() == Some(*a),
            (Value::Number(a), Json::Number(n)) => {
                let b = n.as_f64().unwrap_or(f64::NAN);
                n.as_i64().is_none()
                    && a.is_sign_negative() == b.is_sign_negative()
                    && a.to_bits().abs_diff(b.to_bits()) <= 1
            }
            (Value::String(a), Json::String(b)) => a.as_bytes().as_ref() == b.as_bytes(),
            (Value::Table(t), Json::Array(items)) => {
                t.clone().pairs::<Value, Value>().count() == items.len()
                    && items
                        .iter()
                        .enumerate()
                        .all(|(i, j)| same(&t.raw_get::<Value>(i + 1).unwrap(), j))
            }
            (Value::Table(t), Json::Object(map)) => {
                t.clone().pairs::<Value, Value>().count() == map.len()
                    && map
                        .iter()
                        .all(|(k, j)| same(&t.raw_get::<Value>(k.as_str()).unwrap(), j))
            }
            _ => false,
        }
    }

    /// `decode`'s own parser against serde_json, on hand-picked edges and
    /// on generated texts and their one-byte mutations: the same texts
    /// taken, the same values, and for a refused text serde_json's own
    /// message. A text serde_json takes must never have needed it.
    #[test]
    fn the_same_texts_and_values_as_serde_json() {
        let lua = vm_with_cjson();
        let decode: mlua::Function = lua
            .load("return function(t) return pcall(cjson.decode, t) end")
            .eval()
            .unwrap();
        let mut texts: Vec<Vec<u8>> = [
            "",
            " ",
            "-",
            "01",
            "-01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\u00zz\"",
            "\"\\x\"",
            "1e400",
            "-1e400",
            "tru",
            "nul",
            "falsey",
            "\"a\u{1}\"",
            "\"abc",
            "[",
            "{",
            "{\"a\":",
            "\u{feff}1",
            "  {\"a\" : [ 1 , 2 ] }  ",
            "[[]]x",
            "{\"tindex\":12,\"tlabel\":3456,\"action\":\"reply\"}",
            "1 2",
            "\"\\/\"",
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect();
        texts.push(b"\"\xff\"".to_vec());
        texts.push(b"\"\xc3\x28\"".to_vec());
        texts.push(b"[\"\\u00e9\xe9\"]".to_vec());
        for n in [126, 127, 128, 129] {
            let mut t = "[".repeat(n);
            t.push_str(&"]".repeat(n));
            texts.push(t.into_bytes());
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let noise: &[u8] = b"{}[]\",:\\ -+0123e.tfnu\x01\xff\xc3\t";
        for _ in 0..3_000 {
            let mut text = String::new();
            random_json(&mut rng, 0, &mut text);
            let text = text.into_bytes();
            for _ in 0..3 {
                let mut m = text.clone();
                let at = rng.below(m.len() + 1);
                match rng.below(3) {
                    0 if at < m.len() => {
                        m.remove(at);
                    }
                    1 if at < m.len() => m[at] = noise[rng.below(noise.len())],
                    _ => m.insert(at, noise[rng.below(noise.len())]),
                }
                texts.push(m);
            }
            texts.push(text);
        }
        let (mut taken, mut refused) = (0, 0);
        for text in &texts {
            let shown = String::from_utf8_lossy(text);
            let before = SERDE_CALLS.with(Cell::get);
            let (ok, got): (bool, Value) = decode.call(lua.create_string(text).unwrap()).unwrap();
            let asked_serde = SERDE_CALLS.with(Cell::get) > before;
            match serde_json::from_slice::<Json>(text) {
                Ok(want) => {
                    taken += 1;
                    assert!(ok, "{shown:?} is JSON: {got:?}");
                    assert!(same(&got, &want), "{shown:?}: {got:?} against {want:?}");
                    assert!(!asked_serde, "{shown:?} is JSON, yet needed serde_json");
                }
                Err(e) => {
                    refused += 1;
                    assert!(!ok, "{shown:?} is not JSON ({e}), yet decoded");
                    let msg = got.to_string().unwrap();
                    assert!(
                        msg.contains(&format!("cjson.decode: {e}")),
                        "{shown:?}: {msg}"
                    );
                }
            }
        }
        assert!(
            taken > 3_000 && refused > 3_000,
            "{taken} taken, {refused} refused"
        );
    }
}
