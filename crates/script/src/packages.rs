//! Where `require` looks: `[script] lua_path` and `lua_cpath`, and whether
//! it may load C modules at all (`[script] allow_c_modules`, off by
//! default: a C module runs with the process's rights, outside the Lua
//! state's memory and time limits, and a fault in it ends the process).

use mlua::{Lua, LuaOptions, StdLib};

/// How a VM's `require` is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Packages {
    /// Put before Lua's own `package.path`.
    pub lua_path: Vec<String>,
    /// Put before Lua's own `package.cpath` (only with `allow_c`).
    pub lua_cpath: Vec<String>,
    /// Whether C modules may be loaded.
    pub allow_c: bool,
}

/// When C modules are off: no `package.loadlib` at all (mlua's safe mode
/// leaves one that fails when called), and in place of the C searcher
/// (mlua's says only "can't load C modules in safe mode") one that says
/// which setting keeps the module out. Lua joins the searchers' messages.
const C_MODULES_OFF: &str = r#"
local cpath, searchpath = ...
package.loadlib = nil
package.searchers[3] = function(name)
    local found = searchpath(name, cpath)
    if found then
        return "\n\tC module " .. found .. " not loaded: C modules are off ([script] allow_c_modules = false)"
    end
    return "\n\tno C modules: [script] allow_c_modules = false"
end
"#;

impl Packages {
    /// A new VM with Lua's safe standard libraries and `require` set up.
    pub fn new_lua(&self) -> mlua::Result<Lua> {
        let lua = if self.allow_c {
            // SAFETY: the only unsafe capability this enables is loading C
            // code (package.loadlib and the C searchers), which the user
            // asked for with `allow_c_modules = true`; the debug library
            // stays out, as in a safe VM.
            unsafe { Lua::unsafe_new_with(StdLib::ALL_SAFE, LuaOptions::default()) }
        } else {
            Lua::new()
        };
        let package: mlua::Table = lua.globals().get("package")?;
        prepend(&package, "path", &self.lua_path)?;
        if self.allow_c {
            prepend(&package, "cpath", &self.lua_cpath)?;
        } else {
            let cpath = join(&self.lua_cpath, package.get::<String>("cpath").ok());
            let searchpath: mlua::Function = package.get("searchpath")?;
            lua.load(C_MODULES_OFF)
                .set_name("=packages")
                .call::<()>((cpath, searchpath))?;
        }
        Ok(lua)
    }
}

/// `patterns` then `rest`, as Lua's `;`-separated search path.
fn join(patterns: &[String], rest: Option<String>) -> String {
    let mut all: Vec<String> = patterns.to_vec();
    all.extend(rest.filter(|r| !r.is_empty()));
    all.join(";")
}

fn prepend(package: &mlua::Table, key: &str, patterns: &[String]) -> mlua::Result<()> {
    if patterns.is_empty() {
        return Ok(());
    }
    let now = package.get::<String>(key).ok();
    package.set(key, join(patterns, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("evapi-pkg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn lua_path_finds_a_pure_lua_module() {
        let dir = temp("lua");
        std::fs::write(dir.join("mylib.lua"), "return { answer = 42 }").unwrap();
        let p = Packages {
            lua_path: vec![format!("{}/?.lua", dir.display())],
            ..Default::default()
        };
        let lua = p.new_lua().unwrap();
        let n: i64 = lua
            .load(r#"return require("mylib").answer"#)
            .eval()
            .unwrap();
        assert_eq!(n, 42);
        // Without it, not found.
        let lua = Packages::default().new_lua().unwrap();
        assert!(lua.load(r#"require("mylib")"#).exec().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn c_modules_only_when_allowed() {
        let dir = temp("c");
        // Not a real library: enough for the searcher to find the file.
        std::fs::write(dir.join("fakec.so"), "not an ELF file").unwrap();
        let cpath = vec![format!("{}/?.so", dir.display())];
        let off = Packages {
            lua_cpath: cpath.clone(),
            ..Default::default()
        };
        let lua = off.new_lua().unwrap();
        assert!(lua
            .load("return package.loadlib == nil")
            .eval::<bool>()
            .unwrap());
        let e = lua.load(r#"require("fakec")"#).exec().unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(
                "fakec.so not loaded: C modules are off ([script] allow_c_modules = false)"
            ),
            "{text}"
        );
        let e = lua.load(r#"require("nosuchc")"#).exec().unwrap_err();
        assert!(e.to_string().contains("allow_c_modules = false"), "{e}");

        let on = Packages {
            lua_cpath: cpath,
            allow_c: true,
            ..Default::default()
        };
        let lua = on.new_lua().unwrap();
        assert!(lua
            .load("return type(package.loadlib) == 'function'")
            .eval::<bool>()
            .unwrap());
        assert!(lua
            .load("return package.cpath:find('fakec', 1, true) == nil and package.cpath:sub(1, 1) == '/'")
            .eval::<bool>()
            .unwrap());
        // The file is found and handed to the dynamic loader, which
        // refuses it: the attempt is made, unlike with C modules off.
        let e = lua.load(r#"require("fakec")"#).exec().unwrap_err();
        assert!(!e.to_string().contains("allow_c_modules"), "{e}");
        assert!(e.to_string().contains("fakec.so"), "{e}");
        // Still no debug library.
        assert!(lua.load("return debug == nil").eval::<bool>().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
