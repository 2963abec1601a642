//! JSON for scripts: a `cjson` module (`require("cjson")`, the API Lua users
//! know) and the path lookup of Kamailio's jansson module.

use mlua::{Lua, Table, Value};
use serde_json::Value as Json;

mod decode;
mod fast;

/// Deepest nesting encoded: deep enough for any event, shallow enough for
/// the 2 MiB stack of a worker thread (a table containing itself hits it).
const MAX_DEPTH: usize = 128;

/// Build the `cjson` module table.
pub(crate) fn cjson_module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "encode",
        lua.create_function(|_, v: Value| {
            let json = to_json(&v, 0).map_err(mlua::Error::runtime)?;
            Ok(json.to_string())
        })?,
    )?;
    // SAFETY: `decode` follows the C function protocol (below).
    m.set("decode", unsafe { lua.create_c_function(decode::decode) }?)?;
    m.set("null", Value::NULL)?;
    // Accepted for compatibility with scripts that tune lua-cjson.
    m.set(
        "encode_empty_table_as_object",
        lua.create_function(|_, _: mlua::MultiValue| Ok(()))?,
    )?;
    m.set(
        "decode_max_depth",
        lua.create_function(|_, _: mlua::MultiValue| Ok(()))?,
    )?;
    m.set(
        "encode_max_depth",
        lua.create_function(|_, _: mlua::MultiValue| Ok(()))?,
    )?;
    Ok(m)
}

/// Lua value to JSON, as lua-cjson does it: a table whose keys are exactly
/// 1..n is an array, an empty table is an object, floats with no fraction
/// are written as integers, `cjson.null` (and nil in arrays) is null.
pub(crate) fn to_json(v: &Value, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err("cjson.encode: nesting deeper than 128 (a table that contains itself?)".into());
    }
    Ok(match v {
        Value::Nil => Json::Null,
        Value::LightUserData(p) if p.0.is_null() => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::from(*i),
        Value::Number(n) => {
            if !n.is_finite() {
                return Err(format!("cjson.encode: cannot encode number {n}"));
            }
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::from(*n as i64)
            } else {
                Json::from(*n)
            }
        }
        Value::String(s) => Json::String(s.to_string_lossy()),
        Value::Table(t) => {
            let len = t.raw_len();
            let mut count = 0usize;
            let mut array = len > 0;
            for pair in t.pairs::<Value, Value>() {
                let (k, _) = pair.map_err(|e| e.to_string())?;
                count += 1;
                if !matches!(k, Value::Integer(i) if i >= 1 && (i as usize) <= len) {
                    array = false;
                }
            }
            if array && count == len {
                let mut out = Vec::with_capacity(len);
                for i in 1..=len {
                    let item: Value = t.raw_get(i).map_err(|e| e.to_string())?;
                    out.push(to_json(&item, depth + 1)?);
                }
                Json::Array(out)
            } else {
                let mut out = serde_json::Map::new();
                for pair in t.pairs::<Value, Value>() {
                    let (k, item) = pair.map_err(|e| e.to_string())?;
                    let key = match &k {
                        Value::String(s) => s.to_string_lossy(),
                        Value::Integer(i) => i.to_string(),
                        Value::Number(n) => n.to_string(),
                        other => {
                            return Err(format!(
                                "cjson.encode: table key of type {} cannot be a JSON key",
                                other.type_name()
                            ))
                        }
                    };
                    out.insert(key, to_json(&item, depth + 1)?);
                }
                Json::Object(out)
            }
        }
        other => {
            return Err(format!(
                "cjson.encode: cannot encode a {}",
                other.type_name()
            ))
        }
    })
}

/// Follow a jansson-style path (`a.b[2].c`, also `a.b.2`) into `json`.
pub(crate) fn path_get<'a>(json: &'a Json, path: &str) -> Option<&'a Json> {
    let mut cur = json;
    if path.is_empty() {
        return Some(cur);
    }
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = match cur {
                Json::Object(m) => m.get(name)?,
                Json::Array(a) => a.get(name.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let idx: usize = r[..end].trim().parse().ok()?;
            cur = cur.as_array()?.get(idx)?;
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(cur)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A VM with the module as the global `cjson`.
    pub(crate) fn vm_with_cjson() -> Lua {
        let lua = Lua::new();
        let m = cjson_module(&lua).unwrap();
        lua.globals().set("cjson", m).unwrap();
        lua
    }

    #[test]
    fn round_trip_like_cjson() {
        let lua = vm_with_cjson();
        let out: String = lua
            .load(r#"return cjson.encode({a = 1, b = {1, 2, 3}, c = {}, d = 2.5, e = 3.0, f = "x\"y"})"#)
            .eval()
            .unwrap();
        let v: Json = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": [1, 2, 3], "c": {}, "d": 2.5, "e": 3, "f": "x\"y"})
        );
        let (idx, label, isnull, nested): (i64, i64, bool, String) = lua
            .load(
                r#"local t = cjson.decode('{"tindex": 12, "tlabel": 3456, "x": null, "n": {"k": ["v"]}}')
                return t.tindex, t.tlabel, t.x == cjson.null, t.n.k[1]"#,
            )
            .eval()
            .unwrap();
        assert_eq!((idx, label, isnull, nested.as_str()), (12, 3456, true, "v"));
        // An integer id survives as an integer (prints without ".0").
        let s: String = lua
            .load(r#"return tostring(cjson.decode('{"i": 7}').i)"#)
            .eval()
            .unwrap();
        assert_eq!(s, "7");
        let err = lua
            .load(r#"return cjson.decode('{bad')"#)
            .exec()
            .unwrap_err();
        assert!(err.to_string().contains("cjson.decode"), "{err}");
        let err = lua
            .load(r#"local t = {}; t.t = t; return cjson.encode(t)"#)
            .exec()
            .unwrap_err();
        assert!(err.to_string().contains("nesting"), "{err}");
    }

    #[test]
    fn jansson_paths() {
        let j = serde_json::json!({"a": {"b": [10, {"c": "x"}]}, "n": 5});
        assert_eq!(path_get(&j, "n"), Some(&Json::from(5)));
        assert_eq!(path_get(&j, "a.b[0]"), Some(&Json::from(10)));
        assert_eq!(path_get(&j, "a.b[1].c"), Some(&Json::from("x")));
        assert_eq!(path_get(&j, "a.b.1.c"), Some(&Json::from("x")));
        assert_eq!(path_get(&j, "a.x"), None);
        assert_eq!(path_get(&j, "a.b[9]"), None);
        assert_eq!(path_get(&j, "a.b[x]"), None);
    }
}
