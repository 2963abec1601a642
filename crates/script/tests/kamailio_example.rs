//! Kamailio's own example KEMI Lua script (kept outside the repository,
//! in the shared compat folder) loads: it compiles and its top level runs.

use script::{Engine, ScriptConfig};
use std::path::PathBuf;

#[test]
fn kamailio_basic_kemi_script_loads() {
    let file = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/compat/kamailio-basic-kemi-lua.lua"
    ));
    assert!(file.is_file(), "missing {}", file.display());
    let config = ScriptConfig {
        file,
        source: None,
        event_callback: String::new(),
        ..Default::default()
    };
    Engine::check(&config).expect("the example script loads");
}
