//! Core-level functions of `KSR` on the current message: the method tests
//! `KSR.is_INVITE()`, `is_ACK`, `is_BYE`, `is_CANCEL`, `is_OPTIONS`,
//! `is_REGISTER`, `is_MESSAGE`, `is_SUBSCRIBE`, `is_NOTIFY`, `is_PUBLISH`,
//! `is_UPDATE`, `is_INFO`, `is_PRACK`, `is_REFER` (booleans; a reply is
//! tested by its CSeq method) and `KSR.is_method_in("IRB")` with
//! Kamailio's letters I A B C R O M S N P U.

use super::module::Module;
use crate::context;
use sip::Method;

const TESTS: [(&str, Method); 14] = [
    ("is_INVITE", Method::Invite),
    ("is_ACK", Method::Ack),
    ("is_BYE", Method::Bye),
    ("is_CANCEL", Method::Cancel),
    ("is_OPTIONS", Method::Options),
    ("is_REGISTER", Method::Register),
    ("is_MESSAGE", Method::Message),
    ("is_SUBSCRIBE", Method::Subscribe),
    ("is_NOTIFY", Method::Notify),
    ("is_PUBLISH", Method::Publish),
    ("is_UPDATE", Method::Update),
    ("is_INFO", Method::Info),
    ("is_PRACK", Method::Prack),
    ("is_REFER", Method::Refer),
];

/// Kamailio's letter for a method of `KSR.is_method_in` (others never
/// match).
fn method_letter(m: &Method) -> Option<char> {
    Some(match m {
        Method::Invite => 'I',
        Method::Ack => 'A',
        Method::Bye => 'B',
        Method::Cancel => 'C',
        Method::Register => 'R',
        Method::Options => 'O',
        Method::Message => 'M',
        Method::Subscribe => 'S',
        Method::Notify => 'N',
        Method::Publish => 'P',
        Method::Update => 'U',
        _ => return None,
    })
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    for (name, method) in TESTS {
        m.func(name, move |cx, ()| {
            Ok(context::method(cx.lua)?.as_ref() == Some(&method))
        })?;
    }
    m.func("is_method_in", |cx, letters: String| {
        Ok(context::method(cx.lua)?
            .as_ref()
            .and_then(method_letter)
            .is_some_and(|l| letters.contains(l)))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    #[test]
    fn method_tests_follow_the_current_request() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, bool, bool, bool)>(
                r#"KSR.is_INVITE(), KSR.is_BYE(), KSR.is_method_in("RIB"), KSR.is_method_in("AB")"#,
            )
        });
        assert_eq!(r, (true, false, true, false));
        let mut req = request("BYE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, bool)>(r#"KSR.is_BYE(), KSR.is_method_in("B")"#)
        });
        assert_eq!(r, (true, true));
        // No message: false (and a log line).
        assert!(!vm.eval::<bool>("KSR.is_INVITE()"));
    }
}
