use super::super::testing::{reply, reply_source as source, request, Vm};
use crate::call::run_onreply_route;

#[test]
fn routes_are_armed_on_the_request() {
    let vm = Vm::new();
    let mut req = request("INVITE", "");
    let r = vm.in_request(&mut req, |vm| {
        vm.eval::<(i64, i64, i64, i64, i64, i64, i64, i64)>(
            r#"KSR.tm.t_is_set("branch_route"), KSR.tm.t_is_set("onreply_route"),
               KSR.tm.t_is_set("failure_route"), KSR.tm.t_on_branch("b"),
               KSR.tm.t_on_reply("r"), KSR.tm.t_on_failure("f"),
               KSR.tm.t_is_set("onreply_route"), KSR.tm.t_is_set("nonsense")"#,
        )
    });
    assert_eq!(r, (-1, -1, -1, 1, 1, 1, 1, -1));
    assert_eq!(
        (req.branch_route(), req.reply_route(), req.failure_route()),
        (Some("b"), Some("r"), Some("f"))
    );
    // Outside a route there is no request to arm.
    assert_eq!(vm.eval::<i64>(r#"KSR.tm.t_on_reply("r")"#), -1);
}

#[test]
fn the_branch_route_edits_only_its_branch() {
    let vm = Vm::new();
    vm.run(
        r#"function br()
             KSR.pv.sets("$var(b)", KSR.pv.get("$T_branch_idx") .. KSR.tmx.t_is_branch_route()
               .. KSR.tm.t_is_set("branch_route"))
             KSR.hdr.append("X-Branch: 0")
             KSR.pv.sets("$du", "sip:192.0.2.50:5090")
             KSR.rr.add_rr_param(";br=1")
           end"#,
    );
    let mut req = request("INVITE", "");
    let r = vm.in_request(&mut req, |vm| {
        vm.eval::<(i64, i64, i64, i64, i64)>(
            r#"KSR.tm.t_on_branch("br"), KSR.tm.t_on_failure("f"), KSR.rr.record_route(),
               KSR.tm.t_relay(), KSR.tm.t_is_set("failure_route")"#,
        )
    });
    assert_eq!(r, (1, 1, 1, 1, -1));
    // 0: the first branch; in a branch route; used up.
    assert_eq!(vm.eval::<String>(r#"KSR.pv.get("$var(b)")"#), "01-1");
    assert_eq!(vm.sip.take(), ["t_newtran", "t_relay"]);
    let relayed = vm.sip.take_relayed();
    assert_eq!(relayed.len(), 1);
    let b = &relayed[0];
    assert_eq!(b.header("X-Branch"), Some(&b"0"[..]));
    assert_eq!(b.dst_uri(), Some("sip:192.0.2.50:5090"));
    assert_eq!(
        b.failure_route(),
        Some("f"),
        "the branch keeps the failure route"
    );
    assert!(b.branch_route().is_none());
    // The request route's own request is untouched by the branch route.
    assert_eq!(req.header("X-Branch"), None);
    assert_eq!(req.dst_uri(), None);
    assert!(req.branch_route().is_none());
    // Without a branch route: relayed as is.
    let mut plain = request("INVITE", "");
    vm.in_request(&mut plain, |vm| vm.eval::<i64>("KSR.tm.t_relay()"));
    assert_eq!(vm.sip.take(), ["t_relay"]);
    assert_eq!(vm.sip.take_relayed().len(), 1);
}

#[test]
fn a_dropped_branch_is_not_relayed() {
    let vm = Vm::new();
    vm.run(r#"function br() KSR.x.drop() end"#);
    let mut req = request("INVITE", "");
    let r = vm.in_request(&mut req, |vm| {
        vm.eval::<(i64, i64)>(r#"KSR.tm.t_on_branch("br"), KSR.tm.t_relay()"#)
    });
    assert_eq!(r, (1, -1));
    assert_eq!(vm.sip.take(), ["t_newtran"]);
    assert!(vm.sip.take_relayed().is_empty());
}

#[test]
fn a_reply_route_sees_the_reply_and_may_drop_it() {
    let vm = Vm::new();
    vm.run(
        r#"function onrep()
             KSR.pv.sets("$var(r)", KSR.pv.get("$T_reply_code") .. "|" .. KSR.pv.get("$T_reply_reason")
               .. "|" .. KSR.pv.get("$T_branch_idx") .. "|" .. KSR.pv.get("$T(reply_type)")
               .. "|" .. KSR.tm.t_check_status("^18[0-9]$") .. KSR.tm.t_check_status("8")
               .. KSR.tm.t_check_status("^4") .. "|" .. KSR.tm.t_get_status_code()
               .. "|" .. KSR.tmx.t_is_reply_route() .. KSR.tmx.t_is_branch_route())
             if KSR.pv.get("$rs") == 183 then KSR.x.drop() end
           end"#,
    );
    assert!(run_onreply_route(
        &vm.lua,
        "onrep",
        &reply(180, "Ringing"),
        &source(),
        2
    ));
    assert_eq!(
        vm.eval::<String>(r#"KSR.pv.get("$var(r)")"#),
        "180|Ringing|2|0|11-1|180|1-1"
    );
    assert!(!run_onreply_route(
        &vm.lua,
        "onrep",
        &reply(183, "Progress"),
        &source(),
        0
    ));
    // An undefined route lets the reply pass.
    assert!(run_onreply_route(
        &vm.lua,
        "nowhere",
        &reply(200, "OK"),
        &source(),
        0
    ));
    // Outside reply and failure routes there is no status.
    let mut req = request("INVITE", "");
    let r = vm.in_request(&mut req, |vm| {
        vm.eval::<(i64, i64, bool)>(
            r#"KSR.tm.t_get_status_code(), KSR.tm.t_check_status("."),
               KSR.pv.is_null("$T_reply_reason")"#,
        )
    });
    assert_eq!(r, (-1, -1, true));
}
