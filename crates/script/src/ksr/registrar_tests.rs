//! `KSR.registrar.*` against the fake host and its location table (2
//! contacts per AoR, 3 AoRs, a clock moved by hand).

use super::super::testing::{request, Vm};
use crate::context;
use sip::{Request, SipMessage, Source};

/// A REGISTER for `user` from 192.0.2.1:5061 with `extra` header lines.
fn register(user: &str, call_id: &str, cseq: u32, extra: &str) -> Request {
    let raw = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK{cseq}\r\n\
         From: <sip:{user}@example.com>;tag=r1\r\nTo: <sip:{user}@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    Request::new(
        SipMessage::parse(bytes::Bytes::from(raw)).unwrap(),
        Source {
            transport: sip::Transport::Udp,
            remote: "192.0.2.1:5061".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        },
    )
}

fn reply_header(req: &Request, name: &str) -> Option<String> {
    req.reply_headers()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
}

fn save(vm: &Vm, req: &mut Request, flags: i64) -> i64 {
    vm.in_request(req, |vm| {
        vm.eval::<i64>(&format!(r#"KSR.registrar.save("location", {flags})"#))
    })
}

/// `lookup` for an INVITE to bob: (return code, `$ru` after it).
fn lookup_bob(vm: &Vm) -> (i64, String) {
    let mut inv = request("INVITE", "");
    vm.in_request(&mut inv, |vm| {
        vm.eval::<(i64, String)>(r#"KSR.registrar.lookup("location"), KSR.pv.get("$ru")"#)
    })
}

#[test]
fn save_answers_200_with_the_contacts_and_lookup_routes_to_the_best() {
    let vm = Vm::new();
    let mut reg = register(
        "bob",
        "r1",
        1,
        "Contact: <sip:bob@192.0.2.1:5061>;expires=120\r\nUser-Agent: phone\r\n",
    );
    assert_eq!(save(&vm, &mut reg, 0), 1);
    assert_eq!(vm.sip.take(), ["sl_reply 200 OK"]);
    assert_eq!(
        reply_header(&reg, "Contact").as_deref(),
        Some("<sip:bob@192.0.2.1:5061>;expires=120")
    );
    // A second phone with a higher q wins the lookup.
    let mut reg2 = register("bob", "r2", 1, "Contact: <sip:bob@192.0.2.2>;q=1\r\n");
    vm.sip.usrloc.0.advance(1000);
    assert_eq!(save(&vm, &mut reg2, 0), 1);
    assert_eq!(
        reply_header(&reg2, "Contact").as_deref(),
        Some("<sip:bob@192.0.2.2>;q=1;expires=3600, <sip:bob@192.0.2.1:5061>;expires=119")
    );
    assert_eq!(vm.sip.take(), ["sl_reply 200 OK"]);
    let mut inv = request("INVITE", "");
    let r = vm.in_request(&mut inv, |vm| {
        vm.run(r#"KSR.pv.sets("$du", "sip:proxy.example.com")"#);
        vm.eval::<(i64, String, bool, i64)>(
            r#"KSR.registrar.lookup("location"), KSR.pv.get("$ru"), KSR.pv.is_null("$du"),
               KSR.registrar.registered("location")"#,
        )
    });
    assert_eq!(r, (1, "sip:bob@192.0.2.2".into(), true, 1));
    assert!(vm.sip.take().is_empty(), "lookup sends nothing");
}

#[test]
fn refresh_unregister_star_and_expiry() {
    let vm = Vm::new();
    let c = "Contact: <sip:bob@192.0.2.1:5061>\r\n";
    assert_eq!(save(&vm, &mut register("bob", "r1", 1, c), 0), 1);
    assert_eq!(
        save(&vm, &mut register("bob", "r1", 2, c), 0),
        2,
        "refreshed"
    );
    let mut zero = register(
        "bob",
        "r1",
        3,
        "Contact: <sip:bob@192.0.2.1:5061>;expires=0\r\n",
    );
    assert_eq!(save(&vm, &mut zero, 0), 3);
    assert_eq!(reply_header(&zero, "Contact"), None, "no contact left");
    assert_eq!(lookup_bob(&vm), (-1, "sip:bob@example.com:5070".into()));
    // Star removes them all.
    save(&vm, &mut register("bob", "r2", 1, c), 0);
    let mut star = register("bob", "r3", 1, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(save(&vm, &mut star, 0), 3);
    assert_eq!(lookup_bob(&vm).0, -1);
    // Expiry: found until the clock passes it.
    save(
        &vm,
        &mut register("bob", "r4", 1, "Contact: <sip:bob@h>;expires=60\r\n"),
        0,
    );
    vm.sip.usrloc.0.advance(59_000);
    assert_eq!(lookup_bob(&vm), (1, "sip:bob@h".into()));
    vm.sip.usrloc.0.advance(1_000);
    assert_eq!(lookup_bob(&vm).0, -1);
    // No Contact: the bindings are listed (4).
    assert_eq!(save(&vm, &mut register("bob", "r5", 1, ""), 0), 4);
    // unregister by URI.
    save(&vm, &mut register("bob", "r6", 1, c), 0);
    assert_eq!(
        vm.eval::<(i64, i64)>(
            r#"KSR.registrar.unregister("location", "sip:bob@example.com"),
               KSR.registrar.unregister("location", "not a uri")"#
        ),
        (1, -1)
    );
    assert_eq!(lookup_bob(&vm).0, -1);
}

#[test]
fn refusals_reply_as_kamailio_and_set_the_last_error() {
    let vm = Vm::new();
    let mut brief = register("bob", "r1", 1, "Contact: <sip:bob@h>;expires=30\r\n");
    let (rc, last) = vm.in_request(&mut brief, |vm| {
        let rc = vm.eval::<i64>(r#"KSR.registrar.save("location", 0)"#);
        (rc, context::last_error(&vm.lua))
    });
    assert_eq!(rc, -1);
    assert_eq!(last, Some((423, "Interval Too Brief".to_string())));
    assert_eq!(vm.sip.take(), ["sl_reply 423 Interval Too Brief"]);
    assert_eq!(reply_header(&brief, "Min-Expires").as_deref(), Some("60"));
    assert_eq!(
        reply_header(&brief, "P-Registrar-Error").as_deref(),
        Some("Interval too brief")
    );
    // max_contacts (2 in the fake): -2 and 503.
    let three = "Contact: <sip:bob@h1>, <sip:bob@h2>, <sip:bob@h3>\r\n";
    let mut many = register("bob", "r2", 1, three);
    assert_eq!(save(&vm, &mut many, 0), -2);
    assert_eq!(vm.sip.take(), ["sl_reply 503 Service Unavailable"]);
    assert_eq!(
        reply_header(&many, "P-Registrar-Error").as_deref(),
        Some("Too many registered contacts")
    );
    // max_aors (3 in the fake): the fourth AoR is refused.
    for user in ["u1", "u2", "u3"] {
        assert_eq!(
            save(
                &vm,
                &mut register(user, "a", 1, "Contact: <sip:x@h>\r\n"),
                0
            ),
            1
        );
    }
    let mut fourth = register("u4", "a", 1, "Contact: <sip:x@h>\r\n");
    assert_eq!(save(&vm, &mut fourth, 0), -1);
    assert_eq!(
        vm.sip.take().last().unwrap(),
        "sl_reply 503 Service Unavailable"
    );
    // A malformed one: 400.
    let mut bad = register("bob", "r3", 1, "Contact: <sip:bob@h>;q=7\r\n");
    assert_eq!(save(&vm, &mut bad, 0), -1);
    assert_eq!(vm.sip.take(), ["sl_reply 400 Bad Request"]);
}

#[test]
fn flags_tables_and_places() {
    let vm = Vm::new();
    let c = "Contact: <sip:bob@h>\r\n";
    // 0x02: no reply, no header; 0x12: the Contact line for the script's reply.
    let mut quiet = register("bob", "r1", 1, c);
    assert_eq!(save(&vm, &mut quiet, 2), 1);
    assert!(vm.sip.take().is_empty());
    assert_eq!(reply_header(&quiet, "Contact"), None);
    let mut prepared = register("bob", "r1", 2, c);
    assert_eq!(save(&vm, &mut prepared, 0x12), 2);
    assert!(vm.sip.take().is_empty());
    assert_eq!(
        reply_header(&prepared, "Contact").as_deref(),
        Some("<sip:bob@h>;expires=3600")
    );
    // 0x04: one contact per AoR.
    let mut other = register("bob", "r2", 1, "Contact: <sip:bob@other>\r\n");
    assert_eq!(save(&vm, &mut other, 4), 1);
    assert_eq!(vm.sip.take(), ["sl_reply 200 OK"]);
    assert_eq!(
        reply_header(&other, "Contact").as_deref(),
        Some("<sip:bob@other>;expires=3600")
    );
    // Another table, bad flags, outside a request: -1, nothing sent.
    let mut reg = register("bob", "r3", 1, c);
    let r = vm.in_request(&mut reg, |vm| {
        vm.eval::<(i64, i64, i64)>(
            r#"KSR.registrar.save("aliases", 0), KSR.registrar.save("location", "x"),
               KSR.registrar.lookup("aliases")"#,
        )
    });
    assert_eq!(r, (-1, -1, -1));
    assert_eq!(
        vm.eval::<(i64, i64)>(
            r#"KSR.registrar.save("location", 0), KSR.registrar.lookup("location")"#
        ),
        (-1, -1)
    );
    assert!(vm.sip.take().is_empty());
    // Checking a script: no host, -1.
    let detached = Vm::detached();
    let mut reg = register("bob", "r4", 1, c);
    assert_eq!(save(&detached, &mut reg, 0), -1);
}

#[test]
fn lookup_without_a_user_is_not_found_and_a_bad_uri_is_minus_3() {
    let vm = Vm::new();
    let mut inv = request("INVITE", "");
    let r = vm.in_request(&mut inv, |vm| {
        vm.eval::<(i64, i64)>(
            r#"(function() KSR.pv.sets("$ru", "sip:example.com"); return KSR.registrar.lookup("location") end)(),
               KSR.registrar.registered("location")"#,
        )
    });
    assert_eq!(r, (-1, -1));
    let raw = "INVITE sip:bob@[::1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
               From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
               Content-Length: 0\r\n\r\n";
    let mut bad = Request::new(
        SipMessage::parse(bytes::Bytes::from(raw)).unwrap(),
        request("INVITE", "").source().clone(),
    );
    let r = vm.in_request(&mut bad, |vm| {
        vm.eval::<i64>(r#"KSR.registrar.lookup("location")"#)
    });
    assert_eq!(r, -3);
}
