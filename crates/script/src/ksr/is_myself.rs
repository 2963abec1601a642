//! Kamailio's `myself` tests on `KSR`: `is_myself(uri)` (a `sip:` or
//! `sips:` URI, or a bare host), `is_myself_ruri()` (the Request-URI as
//! routing changed it; false for a reply), `is_myself_duri()` (`$du`;
//! false when unset), `is_myself_nhuri()` (`$du`, else the Request-URI),
//! `is_myself_furi()`, `is_myself_turi()` and `is_myself_srcip()` (the
//! packet's source address, any port). All booleans, as in Kamailio.
//!
//! The answer comes from the SIP host's listen addresses
//! ([`crate::SipOps::is_myself`]): a URI's port, when written, must be a
//! listener's; with no port any listener's port matches, as in Kamailio.

use super::module::{Cx, Fail, Module};
use crate::pv::IpText;

/// Whether `uri` names this host: a `sip:`/`sips:` URI by its host and
/// port, anything else taken as a bare host (Kamailio's reading).
fn uri_is_myself(cx: &Cx<'_>, uri: &[u8]) -> Result<bool, Fail> {
    let host = cx.sip()?;
    let is_sip = uri.starts_with(b"sip:") || uri.starts_with(b"sips:");
    if !is_sip {
        return Ok(host.is_myself(&String::from_utf8_lossy(uri), None));
    }
    let Ok(parsed) = sip::Uri::parse(uri) else {
        return Err(Fail::new(format_args!(
            "cannot parse URI {:?}",
            String::from_utf8_lossy(uri)
        )));
    };
    Ok(host.is_myself(&String::from_utf8_lossy(parsed.host), parsed.port))
}

/// A URI of the current message, by `pick`; false when it has none.
fn msg_uri_is_myself(
    cx: &Cx<'_>,
    pick: fn(&dyn crate::pv::MsgView) -> Option<&[u8]>,
) -> Result<bool, Fail> {
    match cx.here().with_view(|v| pick(v).map(<[u8]>::to_vec))? {
        Some(uri) => uri_is_myself(cx, &uri),
        None => Ok(false),
    }
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("is_myself", |cx, uri: mlua::LuaString| {
        uri_is_myself(cx, &uri.as_bytes())
    })?;
    m.func("is_myself_ruri", |cx, ()| {
        msg_uri_is_myself(cx, |v| v.ruri())
    })?;
    m.func("is_myself_duri", |cx, ()| {
        msg_uri_is_myself(cx, |v| v.dst_uri())
    })?;
    m.func("is_myself_nhuri", |cx, ()| {
        msg_uri_is_myself(cx, |v| v.dst_uri().or_else(|| v.ruri()))
    })?;
    m.func("is_myself_furi", |cx, ()| {
        msg_uri_is_myself(cx, |v| Some(v.msg().from().ok()?.uri))
    })?;
    m.func("is_myself_turi", |cx, ()| {
        msg_uri_is_myself(cx, |v| Some(v.msg().to().ok()?.uri))
    })?;
    m.func("is_myself_srcip", |cx, ()| {
        let host = cx.sip()?;
        let src = cx.here().with_view(|v| v.source().map(|s| s.1.ip()))?;
        // The address as text without a heap string (this runs for every
        // request of Kamailio's example script).
        Ok(src.is_some_and(|ip| host.is_myself(IpText::new(ip).as_str(), None)))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    // The fake host listens on 127.0.0.1:5060 and 192.0.2.10:5060.

    #[test]
    fn uris_and_hosts_are_checked_against_the_listeners() {
        let vm = Vm::new();
        let r = vm.eval::<(bool, bool, bool, bool, bool, bool, bool)>(
            r#"KSR.is_myself("sip:alice@192.0.2.10"), KSR.is_myself("sip:192.0.2.10:5060;lr"),
               KSR.is_myself("sips:bob@192.0.2.10:5061"), KSR.is_myself("192.0.2.10"),
               KSR.is_myself("sip:x@localhost"), KSR.is_myself("sip:x@example.com"),
               KSR.is_myself("sip:bad uri")"#,
        );
        assert_eq!(r, (true, true, false, true, true, false, false));
    }

    #[test]
    fn message_uris_follow_the_current_request() {
        let vm = Vm::new();
        // R-URI sip:bob@example.com:5070, From a.example, To example.com,
        // source 192.0.2.1.
        let mut req = request("OPTIONS", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, bool, bool, bool, bool, bool)>(
                r#"KSR.is_myself_ruri(), KSR.is_myself_furi(), KSR.is_myself_turi(),
                   KSR.is_myself_srcip(), KSR.is_myself_duri(), KSR.is_myself_nhuri()"#,
            )
        });
        assert_eq!(r, (false, false, false, false, false, false));
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, bool, bool, i64, bool, bool)>(
                r#"KSR.pv.sets("$du", "sip:127.0.0.1:5060"), KSR.is_myself_duri(),
                   KSR.is_myself_nhuri(), KSR.pv.sets("$ru", "sip:bob@192.0.2.10"),
                   KSR.is_myself_ruri(), KSR.is_myself_srcip()"#,
            )
        });
        assert_eq!(r, (1, true, true, 1, true, false));
        // Outside a route, and without a SIP host: false.
        assert!(!vm.eval::<bool>("KSR.is_myself_ruri()"));
        let detached = Vm::detached();
        assert!(!detached.eval::<bool>(r#"KSR.is_myself("sip:127.0.0.1")"#));
    }
}
