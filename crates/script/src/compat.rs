//! Lua 5.1 names that Kamailio scripts in the wild still use.
//!
//! Kamailio's Debian packages run KEMI scripts on Lua 5.1; we run Lua 5.4
//! (mlua, vendored). The 5.1 functions that 5.4 dropped or renamed are
//! provided as globals so such scripts run unchanged. Numbers: 5.4 has
//! integers, which print without ".0"; values that are integers on the
//! Kamailio side (`$T(id_index)`, `$sp`, ...) are given to Lua as integers
//! so that string building gives the same text as under 5.1.

use mlua::Lua;

const COMPAT: &str = r#"
unpack = unpack or table.unpack
loadstring = loadstring or load
table.getn = table.getn or function(t) return #t end
table.maxn = table.maxn or function(t)
    local n = 0
    for k in pairs(t) do
        if type(k) == "number" and k > n then n = k end
    end
    return n
end
math.pow = math.pow or function(x, y) return x ^ y end
math.mod = math.mod or math.fmod
math.log10 = math.log10 or function(x) return math.log(x, 10) end
string.gfind = string.gfind or string.gmatch
"#;

pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    lua.load(COMPAT).set_name("=compat").exec()
}

#[cfg(test)]
mod tests {
    #[test]
    fn lua51_names_work() {
        let lua = mlua::Lua::new();
        super::install(&lua).unwrap();
        let ok: bool = lua
            .load(
                r#"
                local a, b = unpack({1, 2})
                local f = loadstring("return 5")
                local words = {}
                for w in string.gfind("a b c", "%a") do words[#words + 1] = w end
                return a == 1 and b == 2 and f() == 5 and table.getn({1, 2, 3}) == 3
                    and math.pow(2, 10) == 1024 and #words == 3 and math.mod(7, 3) == 1
                    and table.maxn({[1] = 1, [5] = 2}) == 5
                "#,
            )
            .eval()
            .unwrap();
        assert!(ok);
    }
}
