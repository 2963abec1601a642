//! The table with a clock moved by hand.

use super::*;

const S: u64 = 1000;

fn cfg() -> UsrlocConfig {
    UsrlocConfig {
        max_contacts: 3,
        max_aors: 2,
        ..UsrlocConfig::default()
    }
}

fn c(uri: &str, expires: Option<u32>, q: Option<u16>) -> ContactIn {
    ContactIn {
        uri: uri.into(),
        expires,
        q,
    }
}

fn reg(aor: &str, call_id: &str, cseq: u32, contacts: Contacts) -> Register {
    Register {
        aor: aor.into(),
        contacts,
        call_id: call_id.into(),
        cseq,
        received: "192.0.2.1:5060".parse().unwrap(),
        transport: Transport::Udp,
        user_agent: "ua".into(),
    }
}

fn list(cs: Vec<ContactIn>) -> Contacts {
    Contacts::List(cs)
}

fn uris(b: &[Binding]) -> Vec<&str> {
    b.iter().map(|b| b.uri.as_str()).collect()
}

#[test]
fn save_lists_the_contacts_with_expires() {
    let mut t = Table::new(cfg());
    let r = reg("alice", "c1", 1, list(vec![c("sip:a@1", Some(120), None)]));
    let s = t.save(&r, false, 0).unwrap();
    assert_eq!(s.code, 1);
    assert_eq!(uris(&s.bindings), ["sip:a@1"]);
    assert_eq!(s.bindings[0].expires_in(0), 120);
    assert_eq!(s.bindings[0].expires_in(500), 120, "rounded up");
    // No expires anywhere: the default (3600), and max_expires cuts.
    let s = t
        .save(
            &reg(
                "bob",
                "c2",
                1,
                list(vec![
                    c("sip:b@1", None, None),
                    c("sip:b@2", Some(99_999), None),
                ]),
            ),
            false,
            0,
        )
        .unwrap();
    let by = |u: &str| {
        s.bindings
            .iter()
            .find(|b| b.uri == u)
            .unwrap()
            .expires_in(0)
    };
    assert_eq!((by("sip:b@1"), by("sip:b@2")), (3600, 3600));
    // Fetch: no Contact lists them, code 4.
    let s = t
        .save(&reg("alice", "c9", 1, Contacts::Fetch), false, 10 * S)
        .unwrap();
    assert_eq!((s.code, uris(&s.bindings)), (4, vec!["sip:a@1"]));
    assert_eq!(s.bindings[0].expires_in(10 * S), 110);
}

#[test]
fn refresh_with_a_newer_cseq_and_unregister_with_zero() {
    let mut t = Table::new(cfg());
    t.save(
        &reg("alice", "c1", 1, list(vec![c("sip:a@1", Some(60), None)])),
        false,
        0,
    )
    .unwrap();
    let s = t
        .save(
            &reg("alice", "c1", 2, list(vec![c("sip:a@1", Some(300), None)])),
            false,
            50 * S,
        )
        .unwrap();
    assert_eq!(s.code, 2, "refreshed");
    assert_eq!(s.bindings[0].expires_in(50 * S), 300);
    assert_eq!(s.bindings[0].cseq, 2);
    // Older CSeq on the same Call-ID: refused, nothing changed.
    let e = t
        .save(
            &reg("alice", "c1", 1, list(vec![c("sip:a@1", Some(0), None)])),
            false,
            51 * S,
        )
        .unwrap_err();
    assert_eq!((e.code(), e.info()), (400, "Invalid CSeq number"));
    // The same CSeq soon after: a retransmission, nothing changes.
    let s = t
        .save(
            &reg("alice", "c1", 2, list(vec![c("sip:a@1", Some(0), None)])),
            false,
            52 * S,
        )
        .unwrap();
    assert_eq!(uris(&s.bindings), ["sip:a@1"]);
    // ... and refused past 20 s.
    assert!(t
        .save(
            &reg("alice", "c1", 2, list(vec![c("sip:a@1", Some(0), None)])),
            false,
            80 * S
        )
        .is_err());
    // Another Call-ID (the phone restarted): accepted whatever the CSeq.
    let s = t
        .save(
            &reg("alice", "c2", 1, list(vec![c("sip:a@1", Some(0), None)])),
            false,
            81 * S,
        )
        .unwrap();
    assert_eq!((s.code, s.bindings.len()), (3, 0));
    assert_eq!((t.aor_count(), t.contact_count()), (0, 0));
    // Zero for a contact not held: skipped, no record made.
    let s = t
        .save(
            &reg("carol", "c3", 1, list(vec![c("sip:c@1", Some(0), None)])),
            false,
            82 * S,
        )
        .unwrap();
    assert_eq!((s.code, s.bindings.len(), t.aor_count()), (1, 0, 0));
}

#[test]
fn star_removes_every_contact() {
    let mut t = Table::new(cfg());
    t.save(
        &reg(
            "alice",
            "c1",
            1,
            list(vec![c("sip:a@1", None, None), c("sip:a@2", None, None)]),
        ),
        false,
        0,
    )
    .unwrap();
    let s = t
        .save(&reg("alice", "c2", 1, Contacts::Star), false, S)
        .unwrap();
    assert_eq!((s.code, s.bindings.len()), (3, 0));
    assert!(t.lookup("alice", S).is_empty());
    assert_eq!(t.contact_count(), 0);
}

#[test]
fn expired_contacts_are_gone_and_reaped_with_bounded_work() {
    let mut t = Table::new(UsrlocConfig {
        max_aors: 1000,
        ..cfg()
    });
    for n in 0..200 {
        let aor = format!("u{n}");
        t.save(
            &reg(&aor, "c", 1, list(vec![c("sip:x@1", Some(60), None)])),
            false,
            0,
        )
        .unwrap();
    }
    t.save(
        &reg("late", "c", 1, list(vec![c("sip:l@1", Some(120), None)])),
        false,
        0,
    )
    .unwrap();
    assert_eq!(t.lookup("u7", 59 * S).len(), 1);
    // Expired: never returned, even before it is reaped.
    assert!(t.lookup("u7", 60 * S).is_empty());
    assert_eq!(t.lookup("late", 60 * S).len(), 1);
    // Each call reaps at most REAP_BUDGET of the others.
    let before = t.contact_count();
    assert_eq!(t.reap(60 * S, REAP_BUDGET), REAP_BUDGET);
    assert_eq!(t.contact_count(), before - REAP_BUDGET);
    for _ in 0..10 {
        t.lookup("nobody", 61 * S);
    }
    assert_eq!(
        (t.aor_count(), t.contact_count()),
        (1, 1),
        "only 'late' is left"
    );
    assert!(t.lookup("late", 120 * S).is_empty());
    assert_eq!(t.contact_count(), 0);
}

#[test]
fn max_contacts_is_per_aor_and_refuses_whole_requests() {
    let mut t = Table::new(cfg());
    let three = (1..=3)
        .map(|n| c(&format!("sip:a@{n}"), None, None))
        .collect();
    t.save(&reg("alice", "c1", 1, list(three)), false, 0)
        .unwrap();
    let e = t
        .save(
            &reg("alice", "c2", 1, list(vec![c("sip:a@4", None, None)])),
            false,
            S,
        )
        .unwrap_err();
    assert_eq!(
        (e.code(), e.reason(), e.kemi()),
        (503, "Service Unavailable", -2)
    );
    assert_eq!(e.info(), "Too many registered contacts");
    assert_eq!(t.lookup("alice", S).len(), 3, "nothing changed");
    // One out, one in: within the limit.
    let s = t
        .save(
            &reg(
                "alice",
                "c2",
                1,
                list(vec![c("sip:a@1", Some(0), None), c("sip:a@4", None, None)]),
            ),
            false,
            S,
        )
        .unwrap();
    assert_eq!(s.bindings.len(), 3);
    // A new AoR asking for too many at once.
    let four = (1..=4)
        .map(|n| c(&format!("sip:b@{n}"), None, None))
        .collect();
    assert!(matches!(
        t.save(&reg("bob", "c3", 1, list(four)), false, S),
        Err(RegError::TooManyContacts {
            want: 4,
            max: 3,
            ..
        })
    ));
    // Replace mode keeps one contact and ignores the limit.
    let s = t
        .save(
            &reg("alice", "c4", 1, list(vec![c("sip:a@9", None, None)])),
            true,
            2 * S,
        )
        .unwrap();
    assert_eq!(uris(&s.bindings), ["sip:a@9"]);
    assert_eq!(t.contact_count(), 1);
}

#[test]
fn max_aors_refuses_new_aors_only() {
    let mut t = Table::new(cfg());
    for aor in ["a", "b"] {
        t.save(
            &reg(aor, "c", 1, list(vec![c("sip:x@1", Some(60), None)])),
            false,
            0,
        )
        .unwrap();
    }
    let e = t
        .save(
            &reg("c", "c", 1, list(vec![c("sip:x@1", None, None)])),
            false,
            S,
        )
        .unwrap_err();
    assert_eq!(
        (e.code(), e.info(), e.kemi()),
        (503, "Location table full", -1)
    );
    // Known AoRs still refresh; a fetch or un-register of a new one is fine.
    assert!(t
        .save(
            &reg("a", "c", 2, list(vec![c("sip:x@1", Some(60), None)])),
            false,
            S
        )
        .is_ok());
    assert!(t.save(&reg("c", "c", 1, Contacts::Fetch), false, S).is_ok());
    assert_eq!(t.aor_count(), 2);
    // Once "b" expires, there is room again.
    assert!(t
        .save(
            &reg("c", "c", 1, list(vec![c("sip:x@1", None, None)])),
            false,
            60 * S
        )
        .is_ok());
    assert_eq!(t.aor_count(), 2);
}

#[test]
fn lookup_orders_by_q_then_most_recent() {
    let mut t = Table::new(UsrlocConfig {
        max_contacts: 10,
        ..cfg()
    });
    t.save(
        &reg(
            "a",
            "c",
            1,
            list(vec![
                c("sip:none@1", None, None),
                c("sip:low@1", None, Some(100)),
                c("sip:old@1", None, Some(500)),
            ]),
        ),
        false,
        0,
    )
    .unwrap();
    t.save(
        &reg(
            "a",
            "d",
            1,
            list(vec![
                c("sip:new@1", None, Some(500)),
                c("sip:zero@1", None, Some(0)),
            ]),
        ),
        false,
        S,
    )
    .unwrap();
    assert_eq!(
        uris(&t.lookup("a", 2 * S)),
        [
            "sip:new@1",
            "sip:old@1",
            "sip:low@1",
            "sip:zero@1",
            "sip:none@1"
        ]
    );
    // Refreshing the older one makes it the most recent.
    t.save(
        &reg("a", "c", 2, list(vec![c("sip:old@1", None, Some(500))])),
        false,
        3 * S,
    )
    .unwrap();
    assert_eq!(uris(&t.lookup("a", 4 * S))[..2], ["sip:old@1", "sip:new@1"]);
}

#[test]
fn min_expires_refuses_with_423_and_changes_nothing() {
    let mut t = Table::new(cfg());
    let e = t
        .save(
            &reg(
                "a",
                "c",
                1,
                list(vec![
                    c("sip:x@1", Some(600), None),
                    c("sip:y@1", Some(30), None),
                ]),
            ),
            false,
            0,
        )
        .unwrap_err();
    assert_eq!(
        (e.code(), e.reason(), e.min_expires()),
        (423, "Interval Too Brief", Some(60))
    );
    assert_eq!(t.aor_count(), 0, "all or nothing");
    // Zero is an un-register, never too brief.
    assert!(t
        .save(
            &reg("a", "c", 1, list(vec![c("sip:x@1", Some(0), None)])),
            false,
            0
        )
        .is_ok());
}
