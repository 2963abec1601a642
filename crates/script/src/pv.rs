//! Pseudo-variables: `$ru`, `$hdr(Name)`, `$var(x)`, `$evapi(msg)`, ...
//!
//! A name is parsed into a [`Pv`] once; reading and writing then go to the
//! current SIP message, the current evapi event, or the variable stores.

use crate::pvx::{auth_attr, AuthAttr};
use sip::SipMessage;
use std::fmt;
use std::net::SocketAddr;

/// A pseudo-variable's value. Integers stay integers, so a Lua script gets
/// `7`, not `7.0`, for `$T(id_index)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PvValue {
    /// An integer.
    Int(i64),
    /// A string (bytes; SIP is not always UTF-8).
    Str(Vec<u8>),
}

impl PvValue {
    /// The value as text.
    pub fn to_text(&self) -> String {
        match self {
            PvValue::Int(i) => i.to_string(),
            PvValue::Str(s) => String::from_utf8_lossy(s).into_owned(),
        }
    }
}

impl From<&str> for PvValue {
    fn from(s: &str) -> Self {
        PvValue::Str(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for PvValue {
    fn from(s: &[u8]) -> Self {
        PvValue::Str(s.to_vec())
    }
}

/// Fields of `$T(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TField {
    /// `$T(id_index)`
    IdIndex,
    /// `$T(id_label)`
    IdLabel,
    /// `$T(reply_code)`
    ReplyCode,
    /// `$T(reply_type)`: 1 for a reply made here (a timeout...), 0 for a
    /// received one
    ReplyType,
}

/// Fields of `$evapi(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvField {
    /// `$evapi(msg)`
    Msg,
    /// `$evapi(srcaddr)`
    SrcAddr,
    /// `$evapi(srcport)`
    SrcPort,
    /// `$evapi(conidx)`
    ConIdx,
}

/// Fields of `$jsonrpl(...)`: the last `KSR.jsonrpcs.exec` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonrplField {
    /// `$jsonrpl(code)`: 200 on success, else the error's code
    Code,
    /// `$jsonrpl(text)`: "OK" on success, else the error's message
    Text,
    /// `$jsonrpl(body)`: the whole JSON-RPC response
    Body,
}

/// Fields of `$dlg(...)`: the current dialog (Kamailio's names; `end_reason`
/// is ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlgField {
    /// `$dlg(h_entry)`
    HEntry,
    /// `$dlg(h_id)`
    HId,
    /// `$dlg(callid)`
    CallId,
    /// `$dlg(from_uri)`
    FromUri,
    /// `$dlg(to_uri)`
    ToUri,
    /// `$dlg(from_tag)`
    FromTag,
    /// `$dlg(to_tag)`
    ToTag,
    /// `$dlg(state)`: 1 unconfirmed, 2 early, 3 answered, 4 confirmed, 5
    /// ended
    State,
    /// `$dlg(start_ts)`: when it was answered (Unix seconds)
    StartTs,
    /// `$dlg(timeout)`: its lifetime once answered (seconds)
    Timeout,
    /// `$dlg(end_reason)`: `bye`, `timeout`, `command` or `failed` once it
    /// ended (an evapi extension)
    EndReason,
}

/// A parsed pseudo-variable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pv {
    /// `$rm` request method (or the CSeq method of a reply)
    Method,
    /// `$ru` Request-URI (w)
    Ruri,
    /// `$rU` user of the Request-URI (w)
    RuriUser,
    /// `$rd` host of the Request-URI (w)
    RuriHost,
    /// `$rp` port of the Request-URI
    RuriPort,
    /// `$rs` reply status
    Status,
    /// `$rr` reply reason
    Reason,
    /// `$ci` Call-ID
    CallId,
    /// `$cs` CSeq number
    CSeqNum,
    /// `$fu` From URI
    FromUri,
    /// `$fU` From user
    FromUser,
    /// `$fd` From host
    FromHost,
    /// `$fn` From display name
    FromName,
    /// `$ft` From tag
    FromTag,
    /// `$tu` To URI
    ToUri,
    /// `$tU` To user
    ToUser,
    /// `$td` To host
    ToHost,
    /// `$tt` To tag
    ToTag,
    /// `$si` source IP
    SrcIp,
    /// `$sp` source port
    SrcPort,
    /// `$Ri` local IP the message arrived on
    LocalIp,
    /// `$Rp` local port the message arrived on
    LocalPort,
    /// `$pr` transport protocol
    Proto,
    /// `$du` destination URI (w)
    DstUri,
    /// `$ua` User-Agent
    UserAgent,
    /// `$mb` the whole message
    Buffer,
    /// `$hdr(Name)`
    Hdr(String),
    /// `$T(...)`
    T(TField),
    /// `$var(x)` per worker (w)
    Var(String),
    /// `$shv(x)` shared (w)
    Shv(String),
    /// `$sht(table=>key)` shared table (w)
    Sht(String, String),
    /// `$evapi(...)`
    Evapi(EvField),
    /// `$natsData`: the payload of a `nats:<subject>` event
    NatsData,
    /// `$rb` the message body
    Body,
    /// `$ct` the first Contact header's value
    Contact,
    /// `$cl` Content-Length
    ContentLength,
    /// `$au` user of the credentials' username
    AuthUser,
    /// `$ar` realm of the credentials
    AuthRealm,
    /// `$TS` the current Unix time
    TimeNow,
    /// `$Ts` the Unix time of the message (fixed at first read)
    MsgTime,
    /// `$T_branch_idx` the branch being routed (0 outside branch routes)
    TBranchIdx,
    /// `$T_reply_code` the reply's code (reply and failure routes)
    TReplyCode,
    /// `$T_reply_reason` the reply's reason phrase (reply and failure
    /// routes)
    TReplyReason,
    /// `$avp(name)` per route run (w)
    Avp(String),
    /// `$xavp(name=>key)` per route run (w)
    Xavp(String, String),
    /// `$jsonrpl(code|text|body)` the last `KSR.jsonrpcs.exec` answer,
    /// per VM
    Jsonrpl(JsonrplField),
    /// `$dlg(...)` the current dialog
    Dlg(DlgField),
    /// `$dlg_var(name)` a value kept with the current dialog (w)
    DlgVar(String),
}

/// A name that is not a pseudo-variable we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pseudo-variable {0:?}")]
pub struct UnknownPv(pub String);

impl Pv {
    /// Parse `$name` or `$name(arg)`.
    pub fn parse(s: &str) -> Result<Pv, UnknownPv> {
        let unknown = || UnknownPv(s.to_string());
        let body = s.strip_prefix('$').ok_or_else(unknown)?;
        let (name, arg) = match body.find('(') {
            Some(i) => {
                let arg = body[i + 1..].strip_suffix(')').ok_or_else(unknown)?;
                (&body[..i], Some(arg))
            }
            None => (body, None),
        };
        Ok(match (name, arg) {
            ("rm", None) => Pv::Method,
            ("ru", None) => Pv::Ruri,
            ("rU", None) => Pv::RuriUser,
            ("rd", None) => Pv::RuriHost,
            ("rp", None) => Pv::RuriPort,
            ("rs", None) => Pv::Status,
            ("rr", None) => Pv::Reason,
            ("ci", None) => Pv::CallId,
            ("cs", None) => Pv::CSeqNum,
            ("fu", None) => Pv::FromUri,
            ("fU", None) => Pv::FromUser,
            ("fd", None) => Pv::FromHost,
            ("fn", None) => Pv::FromName,
            ("ft", None) => Pv::FromTag,
            ("tu", None) => Pv::ToUri,
            ("tU", None) => Pv::ToUser,
            ("td", None) => Pv::ToHost,
            ("tt", None) => Pv::ToTag,
            ("si", None) => Pv::SrcIp,
            ("sp", None) => Pv::SrcPort,
            ("Ri", None) => Pv::LocalIp,
            ("Rp", None) => Pv::LocalPort,
            ("pr" | "proto", None) => Pv::Proto,
            ("du", None) => Pv::DstUri,
            ("ua", None) => Pv::UserAgent,
            ("mb", None) => Pv::Buffer,
            ("hdr", Some(h)) if !h.is_empty() => Pv::Hdr(h.to_string()),
            ("T", Some("id_index")) => Pv::T(TField::IdIndex),
            ("T", Some("id_label")) => Pv::T(TField::IdLabel),
            ("T", Some("reply_code")) => Pv::T(TField::ReplyCode),
            ("T", Some("reply_type")) => Pv::T(TField::ReplyType),
            ("T_reply_code", None) => Pv::TReplyCode,
            ("T_reply_reason", None) => Pv::TReplyReason,
            ("var", Some(v)) if !v.is_empty() => Pv::Var(v.to_string()),
            ("shv", Some(v)) if !v.is_empty() => Pv::Shv(v.to_string()),
            ("sht", Some(v)) => {
                let (t, k) = v.split_once("=>").ok_or_else(unknown)?;
                if t.is_empty() {
                    return Err(unknown());
                }
                Pv::Sht(t.to_string(), k.to_string())
            }
            ("rb", None) => Pv::Body,
            ("ct", None) => Pv::Contact,
            ("cl", None) => Pv::ContentLength,
            ("au", None) => Pv::AuthUser,
            ("ar", None) => Pv::AuthRealm,
            ("TS", None) => Pv::TimeNow,
            ("Ts", None) => Pv::MsgTime,
            ("T_branch_idx", None) => Pv::TBranchIdx,
            // Kamailio's `s:` prefix names a string AVP: the same name.
            ("avp", Some(v)) if !v.is_empty() && v != "s:" => {
                Pv::Avp(v.strip_prefix("s:").unwrap_or(v).to_string())
            }
            ("xavp", Some(v)) => match v.split_once("=>") {
                Some((n, k)) if !n.is_empty() && !k.is_empty() => Pv::Xavp(n.into(), k.into()),
                _ => return Err(unknown()),
            },
            ("evapi", Some("msg")) => Pv::Evapi(EvField::Msg),
            ("evapi", Some("srcaddr")) => Pv::Evapi(EvField::SrcAddr),
            ("evapi", Some("srcport")) => Pv::Evapi(EvField::SrcPort),
            ("evapi", Some("conidx")) => Pv::Evapi(EvField::ConIdx),
            ("natsData", None) => Pv::NatsData,
            ("jsonrpl", Some("code")) => Pv::Jsonrpl(JsonrplField::Code),
            ("jsonrpl", Some("text")) => Pv::Jsonrpl(JsonrplField::Text),
            ("jsonrpl", Some("body")) => Pv::Jsonrpl(JsonrplField::Body),
            ("dlg", Some(f)) => Pv::Dlg(match f {
                "h_entry" => DlgField::HEntry,
                "h_id" => DlgField::HId,
                "callid" => DlgField::CallId,
                "from_uri" => DlgField::FromUri,
                "to_uri" => DlgField::ToUri,
                "from_tag" => DlgField::FromTag,
                "to_tag" => DlgField::ToTag,
                "state" => DlgField::State,
                "start_ts" => DlgField::StartTs,
                "timeout" => DlgField::Timeout,
                "end_reason" => DlgField::EndReason,
                _ => return Err(unknown()),
            }),
            ("dlg_var", Some(v)) if !v.is_empty() => Pv::DlgVar(v.to_string()),
            _ => return Err(unknown()),
        })
    }
}

impl fmt::Display for Pv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The current SIP message as the pseudo-variables see it: the parsed
/// message plus what routing has changed (Request-URI, destination URI,
/// added and removed headers) and what the transaction knows.
pub trait MsgView {
    /// The message as received.
    fn msg(&self) -> &SipMessage;
    /// The Request-URI after edits.
    fn ruri(&self) -> Option<&[u8]> {
        self.msg().request_uri_raw()
    }
    /// The destination URI (`$du`), if set.
    fn dst_uri(&self) -> Option<&[u8]> {
        None
    }
    /// Transport name (`udp`, `tcp`), remote and local address.
    fn source(&self) -> Option<(&'static str, SocketAddr, SocketAddr)>;
    /// The transaction's index and label, once it exists.
    fn tx(&self) -> Option<(u32, u32)> {
        None
    }
    /// The final reply code known to the transaction (failure route).
    fn reply_code(&self) -> Option<u16> {
        None
    }
    /// The reason phrase of that reply (failure and reply routes).
    fn reply_reason(&self) -> Option<&[u8]> {
        None
    }
    /// Whether that reply was made here (a timeout...) rather than
    /// received; `None` where there is no such reply.
    fn reply_local(&self) -> Option<bool> {
        None
    }
    /// First value of a header, seeing routing's edits.
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.msg().header(name)
    }
}

/// A SIP pseudo-variable's value as read, borrowed from the message where
/// it is there as it is, so that a read copies it once, into whatever
/// wants it (a Lua string, for `KSR.pv.get`).
#[derive(Debug, PartialEq, Eq)]
pub enum PvRef<'a> {
    /// An integer.
    Int(i64),
    /// Bytes of the message (or of its edits).
    Bytes(&'a [u8]),
    /// Bytes made for the read (an address written out, a value unquoted).
    Owned(Vec<u8>),
    /// An IP address written out, without an allocation.
    Ip(IpText),
}

impl PvRef<'_> {
    /// The value's bytes, or `None` for an integer.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            PvRef::Int(_) => None,
            PvRef::Bytes(b) => Some(b),
            PvRef::Owned(v) => Some(v),
            PvRef::Ip(t) => Some(t.as_bytes()),
        }
    }

    /// The value, owned.
    pub fn into_owned(self) -> PvValue {
        match self {
            PvRef::Int(i) => PvValue::Int(i),
            PvRef::Owned(v) => PvValue::Str(v),
            other => PvValue::Str(other.bytes().unwrap_or_default().to_vec()),
        }
    }
}

/// An IP address as text, in a buffer of its own (the longest IPv6 text,
/// with an IPv4 tail, is 45 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpText {
    buf: [u8; 48],
    len: u8,
}

impl IpText {
    /// `ip` as `Display` writes it. An IPv4 address, the usual `$si`, is
    /// written digit by digit: through the formatter it cost about a
    /// thousand instructions (bench/instructions.py, the relay script).
    pub fn new(ip: std::net::IpAddr) -> Self {
        let mut t = IpText {
            buf: [0; 48],
            len: 0,
        };
        if let std::net::IpAddr::V4(v4) = ip {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    t.buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    t.buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    t.buf[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                t.buf[n] = b'0' + o % 10;
                n += 1;
            }
            t.len = n as u8;
            return t;
        }
        let mut w = &mut t.buf[..];
        // Cannot fail: the buffer holds the longest form.
        let _ = std::io::Write::write_fmt(&mut w, format_args!("{ip}"));
        let left = w.len();
        t.len = (48 - left) as u8;
        t
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The text (an address is written in ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for IpText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Read a SIP pseudo-variable from `view`; None is null.
pub fn get_sip(pv: &Pv, view: &dyn MsgView) -> Option<PvValue> {
    get_sip_ref(pv, view).map(PvRef::into_owned)
}

/// Read a SIP pseudo-variable from `view` in place; None is null.
pub fn get_sip_ref<'a>(pv: &Pv, view: &'a dyn MsgView) -> Option<PvRef<'a>> {
    let m = view.msg();
    let uri_part = |raw: Option<&'a [u8]>, part: fn(sip::Uri<'a>) -> Option<PvRef<'a>>| {
        part(sip::Uri::parse(raw?).ok()?)
    };
    let user = |u: sip::Uri<'a>| u.user.map(PvRef::Bytes);
    let host = |u: sip::Uri<'a>| Some(PvRef::Bytes(u.host));
    Some(match pv {
        Pv::Method => match m.method() {
            Some(method) => PvRef::Bytes(method.as_bytes()),
            None => PvRef::Owned(m.cseq().ok()?.method.as_bytes().to_vec()),
        },
        Pv::Ruri => PvRef::Bytes(view.ruri()?),
        Pv::RuriUser => return uri_part(view.ruri(), user),
        Pv::RuriHost => return uri_part(view.ruri(), host),
        Pv::RuriPort => return uri_part(view.ruri(), |u| u.port.map(|p| PvRef::Int(p.into()))),
        Pv::Status => PvRef::Int(m.status()?.into()),
        Pv::Reason => PvRef::Bytes(m.reason()?),
        Pv::CallId => PvRef::Bytes(m.call_id().ok()?),
        Pv::CSeqNum => PvRef::Int(m.cseq().ok()?.number.into()),
        Pv::FromUri => PvRef::Bytes(m.from().ok()?.uri),
        Pv::FromUser => return uri_part(Some(m.from().ok()?.uri), user),
        Pv::FromHost => return uri_part(Some(m.from().ok()?.uri), host),
        Pv::FromName => PvRef::Bytes(display_name(m.from().ok()?.display?)),
        Pv::FromTag => PvRef::Bytes(m.from().ok()?.tag?),
        Pv::ToUri => PvRef::Bytes(m.to().ok()?.uri),
        Pv::ToUser => return uri_part(Some(m.to().ok()?.uri), user),
        Pv::ToHost => return uri_part(Some(m.to().ok()?.uri), host),
        Pv::ToTag => PvRef::Bytes(m.to().ok()?.tag?),
        Pv::SrcIp => PvRef::Ip(IpText::new(view.source()?.1.ip())),
        Pv::SrcPort => PvRef::Int(view.source()?.1.port().into()),
        Pv::LocalIp => PvRef::Ip(IpText::new(view.source()?.2.ip())),
        Pv::LocalPort => PvRef::Int(view.source()?.2.port().into()),
        Pv::Proto => PvRef::Bytes(view.source()?.0.as_bytes()),
        Pv::DstUri => PvRef::Bytes(view.dst_uri()?),
        Pv::UserAgent => PvRef::Bytes(view.header("User-Agent")?),
        Pv::Buffer => PvRef::Bytes(&m.buffer()[..]),
        Pv::Hdr(name) => PvRef::Bytes(view.header(name)?),
        Pv::T(TField::IdIndex) => PvRef::Int(view.tx()?.0.into()),
        Pv::T(TField::IdLabel) => PvRef::Int(view.tx()?.1.into()),
        Pv::T(TField::ReplyCode) | Pv::TReplyCode => PvRef::Int(view.reply_code()?.into()),
        Pv::T(TField::ReplyType) => PvRef::Int(view.reply_local()?.into()),
        Pv::TReplyReason => PvRef::Bytes(view.reply_reason()?),
        Pv::Body => PvRef::Bytes(m.body()),
        Pv::Contact => PvRef::Bytes(view.header("Contact")?),
        Pv::ContentLength => PvRef::Int(i64::try_from(m.content_length()?).ok()?),
        Pv::AuthUser => PvRef::Owned(auth_attr(view, AuthAttr::User)?),
        Pv::AuthRealm => PvRef::Owned(auth_attr(view, AuthAttr::Realm)?),
        _ => return None,
    })
}

/// `"Alice Smith"` → `Alice Smith`, as `$fn` gives it.
fn display_name(d: &[u8]) -> &[u8] {
    let d = d.trim_ascii();
    d.strip_prefix(b"\"")
        .and_then(|d| d.strip_suffix(b"\""))
        .unwrap_or(d)
}

/// Replace the user part of a SIP URI (`None` removes it).
pub fn with_user(uri: &[u8], user: Option<&[u8]>) -> Option<Vec<u8>> {
    let parsed = sip::Uri::parse(uri).ok()?;
    let colon = uri.iter().position(|&b| b == b':')?;
    let host_at = parsed.host.as_ptr() as usize - uri.as_ptr() as usize;
    let mut out = uri[..=colon].to_vec();
    if let Some(u) = user {
        out.extend_from_slice(u);
        if let Some(p) = parsed.password {
            out.push(b':');
            out.extend_from_slice(p);
        }
        out.push(b'@');
    }
    out.extend_from_slice(&uri[host_at..]);
    Some(out)
}

/// Replace the host part of a SIP URI.
pub fn with_host(uri: &[u8], host: &[u8]) -> Option<Vec<u8>> {
    let parsed = sip::Uri::parse(uri).ok()?;
    let start = parsed.host.as_ptr() as usize - uri.as_ptr() as usize;
    let end = start + parsed.host.len();
    let mut out = uri[..start].to_vec();
    out.extend_from_slice(host);
    out.extend_from_slice(&uri[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        assert_eq!(Pv::parse("$ru").unwrap(), Pv::Ruri);
        assert_eq!(Pv::parse("$rU").unwrap(), Pv::RuriUser);
        assert_eq!(Pv::parse("$hdr(X-Foo)").unwrap(), Pv::Hdr("X-Foo".into()));
        assert_eq!(Pv::parse("$T(id_index)").unwrap(), Pv::T(TField::IdIndex));
        assert_eq!(Pv::parse("$var(a)").unwrap(), Pv::Var("a".into()));
        assert_eq!(
            Pv::parse("$sht(t=>k)").unwrap(),
            Pv::Sht("t".into(), "k".into())
        );
        assert_eq!(
            Pv::parse("$evapi(conidx)").unwrap(),
            Pv::Evapi(EvField::ConIdx)
        );
        assert_eq!(Pv::parse("$avp(s:a)").unwrap(), Pv::Avp("a".into()));
        assert_eq!(
            Pv::parse("$xavp(r=>k)").unwrap(),
            Pv::Xavp("r".into(), "k".into())
        );
        assert_eq!(Pv::parse("$T_branch_idx").unwrap(), Pv::TBranchIdx);
        for bad in ["$avp()", "$avp(s:)", "$xavp(r)", "$xavp(=>k)", "$xavp(r=>)"] {
            assert!(Pv::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "ru",
            "$nope",
            "$var()",
            "$hdr(",
            "$sht(t)",
            "$T(x)",
            "$evapi(foo)",
        ] {
            let e = Pv::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn uri_parts_are_replaced() {
        assert_eq!(
            with_user(b"sip:alice@example.com;lr", Some(b"bob")).unwrap(),
            b"sip:bob@example.com;lr"
        );
        assert_eq!(
            with_user(b"sip:example.com:5060", Some(b"bob")).unwrap(),
            b"sip:bob@example.com:5060"
        );
        assert_eq!(
            with_user(b"sip:alice@example.com", None).unwrap(),
            b"sip:example.com"
        );
        assert_eq!(
            with_host(b"sip:alice@example.com:5070;x=y", b"10.0.0.1").unwrap(),
            b"sip:alice@10.0.0.1:5070;x=y"
        );
        assert_eq!(with_host(b"sips:[::1]", b"host").unwrap(), b"sips:host");
    }

    struct Plain(SipMessage);
    impl MsgView for Plain {
        fn msg(&self) -> &SipMessage {
            &self.0
        }
        fn source(&self) -> Option<(&'static str, SocketAddr, SocketAddr)> {
            Some((
                "udp",
                "192.0.2.1:5061".parse().unwrap(),
                "127.0.0.1:5060".parse().unwrap(),
            ))
        }
    }

    /// An address written on the stack reads as `Display` writes it, the
    /// longest forms included.
    #[test]
    fn ip_text_is_display() {
        for ip in [
            "192.0.2.1",
            "255.255.255.255",
            "0.0.0.0",
            "10.100.9.99",
            "127.0.0.1",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "2001:db8::255.255.255.255",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
        // Every octet's value, in each place.
        for o in 0..=255u8 {
            for ip in [[o, 0, 0, 0], [1, o, 2, 3], [9, 99, o, 100], [255, 1, 10, o]] {
                let ip = std::net::IpAddr::from(ip);
                assert_eq!(IpText::new(ip).as_str(), ip.to_string());
            }
        }
    }

    #[test]
    fn sip_values() {
        let raw = "INVITE sip:bob@example.com:5070 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK1\r\n\
            From: \"Alice A\" <sip:alice@a.example>;tag=ft1\r\n\
            To: <sip:bob@example.com>\r\n\
            Call-ID: cid-1\r\n\
            CSeq: 42 INVITE\r\n\
            User-Agent: tester\r\n\
            X-Foo: bar\r\n\
            Content-Length: 0\r\n\r\n";
        let v = Plain(SipMessage::parse(bytes::Bytes::from(raw)).unwrap());
        let get = |s: &str| get_sip(&Pv::parse(s).unwrap(), &v);
        assert_eq!(get("$rm"), Some("INVITE".into()));
        assert_eq!(get("$ru"), Some("sip:bob@example.com:5070".into()));
        assert_eq!(get("$rU"), Some("bob".into()));
        assert_eq!(get("$rd"), Some("example.com".into()));
        assert_eq!(get("$rp"), Some(PvValue::Int(5070)));
        assert_eq!(get("$ci"), Some("cid-1".into()));
        assert_eq!(get("$cs"), Some(PvValue::Int(42)));
        assert_eq!(get("$fU"), Some("alice".into()));
        assert_eq!(get("$fn"), Some("Alice A".into()));
        assert_eq!(get("$ft"), Some("ft1".into()));
        assert_eq!(get("$tt"), None);
        assert_eq!(get("$si"), Some("192.0.2.1".into()));
        assert_eq!(get("$sp"), Some(PvValue::Int(5061)));
        assert_eq!(get("$pr"), Some("udp".into()));
        assert_eq!(get("$ua"), Some("tester".into()));
        assert_eq!(get("$hdr(x-foo)"), Some("bar".into()));
        assert_eq!(get("$hdr(X-None)"), None);
        assert_eq!(get("$T(id_index)"), None);
        assert_eq!(get("$rs"), None);
    }
}
