//! Registrations through the real binary: `KSR.registrar.save` answers
//! REGISTERs from the location table, `lookup` routes calls to the
//! registered contact, and a REGISTER flood meets `[usrloc]`'s limits.

mod common;

use common::*;
use sip::testing::{branch, Call};
use sip::Method;

const SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.sanity.sanity_check(17895, 7) < 0 then
        KSR.x.exit()
    end
    if KSR.is_REGISTER() then
        KSR.registrar.save("location", 0)
        KSR.x.exit()
    end
    if KSR.is_INVITE() then
        if KSR.registrar.lookup("location") < 0 then
            KSR.sl.send_reply(404, "Not Found")
            KSR.x.exit()
        end
        KSR.tm.t_relay()
        KSR.x.exit()
    end
end

function ksr_evapi_event(evname)
end
"#;

fn start() -> Evapi {
    let cfg = format!("{}\n[usrloc]\nmax_contacts = 2\nmax_aors = 3\n", config(""));
    Evapi::start(&cfg, SCRIPT)
}

/// A REGISTER for `user`@example.com from `agent`, with `contact` lines.
fn register(
    agent: &Agent,
    to: std::net::SocketAddr,
    user: &str,
    call_id: &str,
    cseq: u32,
    contact: &str,
) {
    let msg = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={b};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.com>;tag=reg-{call_id}\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
         {contact}User-Agent: test-phone\r\nContent-Length: 0\r\n\r\n",
        me = agent.addr(),
        b = branch(),
    );
    agent.send(to, msg).unwrap();
}

/// The next final reply to a REGISTER, as text.
fn register_reply(agent: &mut Agent) -> String {
    let m = agent
        .expect(WAIT, |m| {
            m.status().is_some() && m.cseq().is_ok_and(|c| c.method == Method::Register)
        })
        .expect("a reply to the REGISTER in time");
    sip::testing::text(&m.0)
}

/// Alice calls bob@example.com through the router; the final status.
fn call_bob(alice: &mut Agent, to: std::net::SocketAddr, call_id: &str) -> (u16, String) {
    let call = Call::new(alice, call_id, "sip:bob@example.com");
    alice
        .send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    alice
        .recv_status(&[100], WAIT)
        .expect("a final reply in time")
}

#[test]
fn register_call_refresh_unregister_then_404() {
    let ev = start();
    let mut bob = Agent::udp("127.0.0.1:0").unwrap();
    let mut alice = Agent::udp("127.0.0.1:0").unwrap();
    let contact = format!("<sip:bob@{}>", bob.addr());

    register(
        &bob,
        ev.udp,
        "bob",
        "reg-bob",
        1,
        &format!("Contact: {contact};expires=300\r\n"),
    );
    let ok = register_reply(&mut bob);
    assert_eq!(status(&ok), Some(200), "{ok}");
    assert_eq!(
        header(&ok, "Contact").unwrap(),
        format!("{contact};expires=300")
    );

    // The call reaches bob at his registered contact.
    let call = Call::new(&alice, "call-1", "sip:bob@example.com");
    alice
        .send(ev.udp, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    let (invite, _) = bob
        .expect_request(Method::Invite, WAIT)
        .expect("the INVITE reaches bob");
    assert_eq!(
        invite.request_uri_raw().unwrap(),
        format!("sip:bob@{}", bob.addr()).as_bytes()
    );
    bob.send(
        ev.udp,
        sip::testing::reply(&invite, 486, "Busy Here", Some("b1")),
    )
    .unwrap();
    let (code, _) = alice.recv_status(&[100], WAIT).expect("the 486 in time");
    assert_eq!(code, 486);

    // Refresh: same Call-ID, newer CSeq.
    register(
        &bob,
        ev.udp,
        "bob",
        "reg-bob",
        2,
        &format!("Contact: {contact};expires=600\r\n"),
    );
    let ok = register_reply(&mut bob);
    assert_eq!(
        header(&ok, "Contact").unwrap(),
        format!("{contact};expires=600"),
        "{ok}"
    );

    // Un-register: 200 with no contact left, and the next call gets 404.
    register(
        &bob,
        ev.udp,
        "bob",
        "reg-bob",
        3,
        &format!("Contact: {contact};expires=0\r\n"),
    );
    let ok = register_reply(&mut bob);
    assert_eq!(status(&ok), Some(200), "{ok}");
    assert_eq!(header(&ok, "Contact"), None, "{ok}");
    assert_eq!(call_bob(&mut alice, ev.udp, "call-2").0, 404);

    // Too short: 423 with Min-Expires.
    register(
        &bob,
        ev.udp,
        "bob",
        "reg-bob",
        4,
        &format!("Contact: {contact};expires=10\r\n"),
    );
    let brief = register_reply(&mut bob);
    assert_eq!(status(&brief), Some(423), "{brief}");
    assert_eq!(header(&brief, "Min-Expires").as_deref(), Some("60"));
}

#[test]
fn a_register_flood_meets_max_contacts_and_max_aors() {
    let ev = start();
    let mut phone = Agent::udp("127.0.0.1:0").unwrap();
    let me = phone.addr();
    let three = format!("Contact: <sip:c1@{me}>, <sip:c2@{me}>, <sip:c3@{me}>\r\n");
    register(&phone, ev.udp, "carol", "flood-c", 1, &three);
    let refused = register_reply(&mut phone);
    assert_eq!(status(&refused), Some(503), "{refused}");
    assert_eq!(
        header(&refused, "P-Registrar-Error").as_deref(),
        Some("Too many registered contacts")
    );
    ev.wait_log("too many contacts for AoR");

    // Three AoRs fit; every further one is refused, the table stays at 3.
    for n in 0..40 {
        let user = format!("u{n}");
        register(
            &phone,
            ev.udp,
            &user,
            &format!("flood-{n}"),
            1,
            &format!("Contact: <sip:{user}@{me}>\r\n"),
        );
        let r = register_reply(&mut phone);
        let want = if n < 3 { 200 } else { 503 };
        assert_eq!(status(&r), Some(want), "{user}: {r}");
        if n >= 3 {
            assert_eq!(
                header(&r, "P-Registrar-Error").as_deref(),
                Some("Location table full")
            );
        }
    }
    ev.wait_log("location table full: 3 AoRs (max_aors)");
    // The ones admitted still work: a refresh of u0 is accepted.
    register(
        &phone,
        ev.udp,
        "u0",
        "flood-0",
        2,
        &format!("Contact: <sip:u0@{me}>\r\n"),
    );
    assert_eq!(status(&register_reply(&mut phone)), Some(200));
}
