use super::*;

fn lint_src(src: &str, callback: &str) -> Vec<String> {
    lint(&ScriptConfig {
        file: PathBuf::from("r.lua"),
        source: Some(src.into()),
        event_callback: callback.into(),
        ..Default::default()
    })
    .iter()
    .map(|f| f.to_string())
    .collect()
}

#[test]
fn the_surface_is_read_from_a_vm() {
    let s = Surface::read().unwrap();
    assert!(s.has(&["sl".into(), "send_reply".into()]));
    assert!(s.has(&["info".into()]));
    assert!(!s.has(&["auth".into()]));
    assert!(!s.has(&["sl".into(), "no_such".into()]));
    assert!(s.has(&["jsonrpcs".into(), "exec".into()]));
}

#[test]
fn jsonrpcs_exec_and_jsonrpl_are_known() {
    let src = r#"function ksr_request_route()
        KSR.jsonrpcs.exec('{"jsonrpc":"2.0","method":"tm.list","id":1}')
        KSR.info(KSR.pv.get("$jsonrpl(code)") .. KSR.pv.get("$jsonrpl(text)") .. KSR.pv.get("$jsonrpl(body)"))
        KSR.pv.get("$jsonrpl(nope)")
    end"#;
    let found = lint_src(src, "");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("$jsonrpl(nope)"), "{found:?}");
}

#[test]
fn unguarded_absent_module_is_a_warning_guarded_a_note() {
    let src = "\
function ksr_request_route()
  KSR.dispatcher.ds_select_dst(1, 4) -- KSR.nope.x() in a comment
  local s = 'KSR.nope.y()'
  if KSR.permissions and KSR.is_INVITE() then
    KSR.permissions.allow_source_address(1)
  end
  if not KSR.auth then
    return 1
  end
  KSR.auth_db.auth_check('a', 'b', 1)
  KSR.auth.auth_challenge('a', 0)
end
function calls_are_not_tests()
  if KSR.is_myself_nope() then return 1 end
  if (not KSR.is_myself_nope2()) then return 1 end
  KSR.nathelper.fix_nated_register()
end
function other()
  KSR.auth.consume_credentials()
end
";
    let got = lint_src(src, "");
    let expect = [
        "r.lua:2: warning: KSR.dispatcher.ds_select_dst: module dispatcher is absent here, as in \
         a Kamailio built without it, and nothing guards this call: it fails with \"attempt to \
         index a nil value\" (test for it first: `if KSR.dispatcher then ... end`)",
        "r.lua:5: note: KSR.permissions.allow_source_address: module permissions is absent here, \
         as in a Kamailio built without it; the script tests for it at line 4",
        "r.lua:10: note: KSR.auth_db.auth_check: module auth_db is absent here, as in a Kamailio \
         built without it; not reached here: the script tests for KSR.auth at line 7",
        "r.lua:11: note: KSR.auth.auth_challenge: module auth is absent here, as in a Kamailio \
         built without it; the script tests for it at line 7",
        "r.lua:14: warning: KSR.is_myself_nope is not provided by this program: calling it \
         fails with \"attempt to call a nil value\"",
        "r.lua:15: warning: KSR.is_myself_nope2 is not provided by this program: calling it \
         fails with \"attempt to call a nil value\"",
        "r.lua:16: warning: KSR.nathelper.fix_nated_register: module nathelper is absent here, \
         as in a Kamailio built without it, and nothing guards this call: it fails with \
         \"attempt to index a nil value\" (test for it first: `if KSR.nathelper then ... end`)",
        "r.lua:19: note: KSR.auth.consume_credentials: module auth is absent here, as in a \
         Kamailio built without it; the script tests for it at line 7",
    ];
    assert_eq!(got, expect);
}

#[test]
fn missing_functions_pvs_and_named_routes() {
    let src = "\
function ksr_request_route()
  KSR.sl.no_such_reply(200, 'OK')
  KSR.no_such_root()
  local u = KSR.pv.get(\"$no_such_pv\") .. KSR.pv.get(\"$ru\") .. KSR.pv.get(\"$var(\" .. x .. \")\")
  KSR.tm.t_on_failure(\"failed\")
  KSR.tm.t_on_branch(\"branch\")
  KSR.tmx.t_continue(1, 2, [[later]])
  KSR.route(\"nowhere\")
end
function branch() end
local function failed() end
";
    let got = lint_src(src, "");
    let has = |want: &str| got.iter().any(|g| g.starts_with(want));
    for want in [
        "r.lua:2: warning: KSR.sl.no_such_reply is not provided by this program: calling it fails",
        "r.lua:3: warning: KSR.no_such_root is not provided",
        "r.lua:4: warning: KSR.pv.get(\"$no_such_pv\"): pseudo-variable $no_such_pv is not provided",
        "r.lua:5: warning: KSR.tm.t_on_failure: the script defines no function failed()",
        "r.lua:7: warning: KSR.tmx.t_continue: the script defines no function later()",
        "r.lua:8: warning: KSR.route: the script defines no function nowhere()",
    ] {
        assert!(has(want), "{want}\n{got:#?}");
    }
    // A known pv, a name built at run time, a defined route: nothing.
    assert!(
        !got.iter().any(|g| g.contains("$ru") || g.contains("$var")),
        "{got:#?}"
    );
    assert!(!got.iter().any(|g| g.contains("branch()")), "{got:#?}");
    // Other helpers may add KSR.route and t_on_branch: at most one line
    // each for them.
    assert!(got.len() <= 8, "{got:#?}");
}

#[test]
fn event_callbacks_nothing_calls() {
    let src = "function ksr_request_route() end\nfunction ksr_evapi_event(e) end\nfunction ksr_dialog_event(e) end\n";
    let got = lint_src(src, "");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with(
            "r.lua:2: warning: ksr_evapi_event() is defined but [evapi] event_callback is empty"
        ),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains("ksr_dialog_event() is defined but [dialog] event_callback is empty"),
        "{}",
        got[1]
    );
    let named = lint(&ScriptConfig {
        file: PathBuf::from("r.lua"),
        source: Some(src.into()),
        event_callback: "ksr_evapi_event".into(),
        dialog_event_callback: "ksr_dialog_event".into(),
        ..Default::default()
    });
    assert!(named.is_empty(), "{named:#?}");
    let got = lint_src(src, "ksr_evapi_event");
    assert_eq!(got.len(), 1, "{got:#?}");
    // Kamailio's nats module calls ksr_nats_event; here its events go to
    // the evapi event_callback.
    let got = lint_src(
        "function ksr_request_route() end\nfunction ksr_nats_event(e) end\n",
        "",
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("ksr_nats_event() is defined but never runs: here the `nats:<subject>`"),
        "{}",
        got[0]
    );
}

#[test]
fn kamailio_example_script() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/compat/kamailio-basic-kemi-lua.lua"
    );
    let got = lint(&ScriptConfig {
        file: PathBuf::from(path),
        ..Default::default()
    });
    let text: Vec<String> = got.iter().map(|f| f.to_string()).collect();
    let find = |what: &str| {
        got.iter()
            .filter(|f| f.message.starts_with(what))
            .collect::<Vec<_>>()
    };
    // Guarded by `if not KSR.auth then return 1; end`: notes.
    let challenge = find("KSR.auth.auth_challenge:");
    assert!(!challenge.is_empty(), "{text:#?}");
    for f in &challenge {
        assert_eq!(f.severity, Severity::Note, "{f}");
        assert!(
            f.message.contains("the script tests for it at line 291"),
            "{f}"
        );
    }
    let auth_db = find("KSR.auth_db.auth_check:");
    assert_eq!(auth_db.len(), 1, "{text:#?}");
    assert_eq!(auth_db[0].severity, Severity::Note);
    assert!(auth_db[0]
        .message
        .contains("tests for KSR.auth at line 291"));
    // `if not KSR.rtpproxy and not KSR.rtpengine then return 1; end`.
    for f in find("KSR.rtpengine.")
        .into_iter()
        .chain(find("KSR.rtpproxy."))
    {
        assert_eq!(f.severity, Severity::Note, "{f}");
    }
    // `if not KSR.nathelper then return 1; end`, and the uses of nathelper
    // in natmanage after the rtpproxy/rtpengine guard.
    let nathelper = find("KSR.nathelper.");
    assert!(nathelper.len() >= 5, "{text:#?}");
    assert!(
        nathelper.iter().all(|f| f.severity == Severity::Note),
        "{text:#?}"
    );
    // pike (unguarded in the script, line 177) is provided: nothing to say.
    assert!(find("KSR.pike.").is_empty(), "{text:#?}");
    // Every warning is about something unguarded that is missing today:
    // no module the script guards is warned about.
    for f in got.iter().filter(|f| f.severity == Severity::Warning) {
        for guarded in [
            "KSR.auth.",
            "KSR.auth_db.",
            "KSR.nathelper.",
            "KSR.rtpengine.",
            "KSR.rtpproxy.",
            "KSR.permissions.",
        ] {
            assert!(!f.message.starts_with(guarded), "{f}");
        }
    }
    // The route names given to t_on_* are all defined.
    assert!(
        !text.iter().any(|t| t.contains("defines no function")),
        "{text:#?}"
    );
}

#[test]
fn dialog_functions_and_pvs_are_known() {
    let src = r#"function ksr_request_route()
        KSR.dialog.dlg_manage()
        if KSR.dialog.is_known_dlg() > 0 then KSR.dialog.dlg_bye("all") end
        KSR.dialog.dlg_set_timeout(60)
        KSR.dialog.dlg_set_timeout_id(60, 1, 2)
        KSR.dialog.set_dlg_profile("caller", "alice")
        KSR.dialog.get_profile_size("caller", "alice", "$var(n)")
        KSR.pv.sets("$dlg_var(account)", "1001")
        KSR.info(KSR.pv.get("$dlg(h_entry)") .. KSR.pv.get("$dlg(h_id)") .. KSR.pv.get("$dlg(callid)")
          .. KSR.pv.get("$dlg(from_uri)") .. KSR.pv.get("$dlg(to_uri)") .. KSR.pv.get("$dlg(state)")
          .. KSR.pv.get("$dlg(start_ts)") .. KSR.pv.get("$dlg(end_reason)"))
        KSR.pv.get("$dlg(nope)")
    end"#;
    let found = lint_src(src, "");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("$dlg(nope)"), "{found:?}");
}
