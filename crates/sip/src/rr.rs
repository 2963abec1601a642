//! Record-Route and loose routing (RFC 3261 §16.4, §16.6 step 4, §16.12),
//! as Kamailio's rr module does them, on a [`Request`]: nothing here
//! touches a socket.
//!
//! - [`Request::record_route`] asks for our Record-Route. It is built when
//!   a branch is sent, since only then is the outgoing socket known:
//!   `<sip:IP:PORT;lr;ftag=TAG>` for the socket the request came in on
//!   (`;transport=tcp` for TCP, as Kamailio writes it), and when the
//!   request leaves from another socket (other transport, address or
//!   port), two: first the outgoing socket's, then the incoming one's,
//!   each with `;r2=on` (Kamailio's `enable_double_rr`). `ftag` is the
//!   From tag (Kamailio's default `append_fromtag`), so
//!   [`Request::is_upstream`] can tell the direction of later requests.
//! - [`Request::loose_route`] processes the Route set of a request: the
//!   Route naming us is removed, the next one becomes the destination URI
//!   (`$du`), and a previous strict router is made up for. Its result is
//!   [`LooseRoute`], whose codes are Kamailio's.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::header::HeaderName;
use crate::request::{EditError, Request, Transport};
use crate::uri::Uri;
use crate::values::NameAddr;

/// What a request asked of record-routing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    /// Ours, built at send (`record_route`), with parameters of the call.
    Auto(String),
    /// Given addresses (`record_route_preset`): the outgoing side first.
    Preset(Vec<String>),
}

/// Record-Route and Route state of a request.
#[derive(Debug, Clone, Default)]
pub(crate) struct RrState {
    record: Option<Record>,
    /// Parameters of `add_rr_param`, in order, each with its `;`.
    params: String,
    /// The route set after loose routing (`None`: as received).
    routes: Option<Vec<String>>,
    /// Parameters of the Route that named us (with the leading `;`).
    pub(crate) routed_params: Option<String>,
}

impl RrState {
    /// The route set to write instead of the Route rows, when loose
    /// routing changed it.
    pub(crate) fn route_set(&self) -> Option<Vec<Bytes>> {
        self.routes.as_ref().map(|r| {
            r.iter()
                .map(|v| Bytes::copy_from_slice(v.as_bytes()))
                .collect()
        })
    }
}

/// What [`Request::loose_route`] did, with Kamailio's return codes
/// ([`LooseRoute::code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LooseRoute {
    /// The next hop comes from the route set: 1.
    Driven,
    /// No Route header, nothing done: -1.
    NotDriven,
    /// A preloaded route set (no To tag) whose only Route named us, now
    /// removed: -3 (Kamailio's `RR_PRELOADED`).
    Preloaded,
    /// A Route or the Request-URI does not parse: -1, nothing changed.
    Error(String),
}

impl LooseRoute {
    /// Kamailio's return value: 1, -1, or -3.
    pub fn code(&self) -> i64 {
        match self {
            LooseRoute::Driven => 1,
            LooseRoute::NotDriven | LooseRoute::Error(_) => -1,
            LooseRoute::Preloaded => -3,
        }
    }
}

/// Whether a URI's host and port name this host.
pub type IsMyself<'a> = &'a dyn Fn(&str, Option<u16>) -> bool;

fn uri_is_myself(uri: &Uri<'_>, myself: IsMyself<'_>) -> bool {
    std::str::from_utf8(uri.host).is_ok_and(|h| myself(h, uri.port))
}

/// The URI of a Route value (`<sip:...;lr>`).
fn route_uri(value: &str) -> Result<&str, String> {
    let na = NameAddr::parse(value.as_bytes()).map_err(|e| e.to_string())?;
    Uri::parse(na.uri).map_err(|e| e.to_string())?;
    std::str::from_utf8(na.uri).map_err(|e| e.to_string())
}

/// `;params` of a URI: what `check_route_param` matches.
fn params_of(uri: &str) -> String {
    match Uri::parse(uri.as_bytes()) {
        Ok(u) if !u.params.is_empty() => format!(";{}", String::from_utf8_lossy(u.params)),
        _ => String::new(),
    }
}

fn lr(uri: &str) -> bool {
    Uri::parse(uri.as_bytes()).is_ok_and(|u| u.lr())
}

fn r2(uri: &str) -> bool {
    Uri::parse(uri.as_bytes()).is_ok_and(|u| u.param("r2").is_some())
}

/// Refuse text that would not stay one URI part: what does not parse as
/// part of a SIP URI (whitespace, CR, LF, NUL and other controls are
/// refused by the URI parser), and the characters that end a name-addr.
/// `host`: `text` is a host (and more); else parameters.
fn uri_text(what: &str, text: &str, host: bool) -> Result<(), EditError> {
    let bad = || EditError::BadHeader(format!("{what} {text:?}"));
    if text.contains(['<', '>', '"', ',']) {
        return Err(bad());
    }
    // Parameters: `;name[=value]` each, none empty.
    if !host && text.split(';').skip(1).any(str::is_empty) {
        return Err(bad());
    }
    let probe = if host {
        format!("sip:{text}")
    } else {
        format!("sip:probe.invalid{text}")
    };
    Uri::parse(probe.as_bytes()).map(|_| ()).map_err(|_| bad())
}

/// `IP:PORT` as written in a URI (IPv6 in brackets), `;transport=tcp` for
/// TCP.
fn socket_text(t: Transport, a: SocketAddr) -> String {
    match t {
        Transport::Udp => a.to_string(),
        Transport::Tcp => format!("{a};transport=tcp"),
    }
}

impl Request {
    /// Add our Record-Route when the request is relayed (Kamailio's
    /// `record_route()`; `params`, e.g. `";nat=yes"`, as its
    /// `record_route_params`). Refused when one was asked for already
    /// ("double attempt", as Kamailio) or when `params` is not `;name` or
    /// `;name=value` text.
    pub fn record_route(&mut self, params: Option<&str>) -> Result<(), EditError> {
        let params = params.unwrap_or("");
        if !params.is_empty() {
            if !params.starts_with(';') {
                return Err(EditError::BadHeader(format!(
                    "Record-Route parameters {params:?} (expected \";name=value\")"
                )));
            }
            uri_text("Record-Route parameters", params, false)?;
        }
        self.no_record_yet()?;
        self.rr.record = Some(Record::Auto(params.to_owned()));
        Ok(())
    }

    /// Add Record-Route values with the given addresses (Kamailio's
    /// `record_route_preset`): `addr` (`host[:port][;params]`, no
    /// scheme) and, for a double Record-Route, `inbound` (then `addr` is
    /// the outgoing side, and both should carry `;r2=on`). `;lr`, `ftag`
    /// and the `add_rr_param` parameters are added to each.
    pub fn record_route_preset(
        &mut self,
        addr: &str,
        inbound: Option<&str>,
    ) -> Result<(), EditError> {
        let addrs: Vec<String> = std::iter::once(addr)
            .chain(inbound)
            .map(str::to_owned)
            .collect();
        for a in &addrs {
            uri_text("Record-Route address", a, true)?;
        }
        self.no_record_yet()?;
        self.rr.record = Some(Record::Preset(addrs));
        Ok(())
    }

    fn no_record_yet(&self) -> Result<(), EditError> {
        match self.rr.record {
            Some(_) => Err(EditError::BadHeader(
                "Record-Route: double attempt to record-route".into(),
            )),
            None => Ok(()),
        }
    }

    /// Whether a Record-Route was asked for.
    pub fn is_record_routed(&self) -> bool {
        self.rr.record.is_some()
    }

    /// Add a parameter (`";name=value"`) to our Record-Route, asked for
    /// before or after this call (Kamailio's `add_rr_param`).
    pub fn add_rr_param(&mut self, param: &str) -> Result<(), EditError> {
        if !param.starts_with(';') || param.len() < 2 {
            return Err(EditError::BadHeader(format!(
                "Record-Route parameter {param:?} (expected \";name=value\")"
            )));
        }
        uri_text("Record-Route parameters", param, false)?;
        self.rr.params.push_str(param);
        Ok(())
    }

    /// The tag `ftag` records: the From tag, or the To tag for a request
    /// going upstream (callee to caller), as Kamailio.
    fn ftag(&self) -> Option<String> {
        let m = self.msg();
        let tag = if self.is_upstream() {
            m.to().ok()?.tag
        } else {
            m.from().ok()?.tag
        }?;
        Some(String::from_utf8_lossy(tag).into_owned())
    }

    /// The Record-Route values to write on a relay leaving from `out`
    /// (`None`: from the socket the request came in on), top first.
    pub(crate) fn record_route_values(&self, out: Option<(Transport, SocketAddr)>) -> Vec<Bytes> {
        let Some(record) = &self.rr.record else {
            return Vec::new();
        };
        let ftag = self
            .ftag()
            .filter(|t| uri_text("ftag", &format!(";ftag={t}"), false).is_ok())
            .map(|t| format!(";ftag={t}"))
            .unwrap_or_default();
        let extra = &self.rr.params;
        let value = |v: String| Bytes::from(v.into_bytes());
        match record {
            Record::Preset(addrs) => addrs
                .iter()
                .map(|a| value(format!("<sip:{a}{ftag}{extra};lr>")))
                .collect(),
            Record::Auto(params) => {
                let src = self.source();
                let mut inbound = (src.transport, src.local);
                let outbound = out.unwrap_or(inbound);
                if inbound.1.ip().is_unspecified() && inbound.0 == outbound.0 {
                    // A wildcard listener: the address our Via advertises.
                    inbound.1 = SocketAddr::new(outbound.1.ip(), inbound.1.port());
                }
                let one = |sock: (Transport, SocketAddr), r2: &str| {
                    value(format!(
                        "<sip:{}{r2};lr{ftag}{params}{extra}>",
                        socket_text(sock.0, sock.1)
                    ))
                };
                if inbound == outbound {
                    vec![one(inbound, "")]
                } else {
                    vec![one(outbound, ";r2=on"), one(inbound, ";r2=on")]
                }
            }
        }
    }

    /// The Route values, as loose routing left them.
    fn current_routes(&self) -> Vec<String> {
        if let Some(r) = &self.rr.routes {
            return r.clone();
        }
        self.msg()
            .elements_of(HeaderName::Route)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Loose routing (Kamailio's `loose_route`): with no Route header, -1
    /// and nothing changes. Without a To tag (a preloaded route set), or
    /// when the Request-URI is not us: a top Route naming us (`myself`)
    /// is removed, with the next one too when ours were a double
    /// Record-Route (`r2`); if none is left, the Request-URI is the
    /// target (for a preloaded set: [`LooseRoute::Preloaded`]); else the
    /// next Route is the destination URI when it is a loose router (`lr`),
    /// or, a strict router, becomes the Request-URI and the Request-URI
    /// goes to the end of the route set. With a To tag and the
    /// Request-URI us, the previous hop was a strict router: the
    /// Request-URI's parameters are ours, and the last Route holds the
    /// real target, which becomes the Request-URI again.
    pub fn loose_route(&mut self, myself: IsMyself<'_>) -> LooseRoute {
        let mut routes = self.current_routes();
        if routes.is_empty() || self.is_removed_routes() {
            return LooseRoute::NotDriven;
        }
        let preloaded = self.msg().to().map(|t| t.tag.is_none()).unwrap_or(true);
        let ruri = String::from_utf8_lossy(self.ruri()).into_owned();
        let Ok(ru) = Uri::parse(ruri.as_bytes()) else {
            return LooseRoute::Error(format!("bad Request-URI {ruri:?}"));
        };
        let mut copy = self.clone();
        let done = if !preloaded && uri_is_myself(&ru, myself) {
            copy.after_strict(&mut routes, &ruri, myself)
        } else {
            copy.after_loose(&mut routes, preloaded, myself)
        };
        match done {
            Ok(r) => {
                copy.rr.routes = Some(routes);
                *self = copy;
                r
            }
            Err(e) => LooseRoute::Error(e),
        }
    }

    fn is_removed_routes(&self) -> bool {
        self.is_removed(HeaderName::Route, "Route")
    }

    fn after_loose(
        &mut self,
        routes: &mut Vec<String>,
        preloaded: bool,
        myself: IsMyself<'_>,
    ) -> Result<LooseRoute, String> {
        let top = route_uri(&routes[0])?.to_owned();
        let parsed = Uri::parse(top.as_bytes()).map_err(|e| e.to_string())?;
        if uri_is_myself(&parsed, myself) {
            self.rr.routed_params = Some(params_of(&top));
            routes.remove(0);
            if r2(&top) && !routes.is_empty() {
                routes.remove(0);
            }
            if routes.is_empty() {
                return Ok(if preloaded {
                    LooseRoute::Preloaded
                } else {
                    LooseRoute::Driven
                });
            }
        } else {
            self.rr.routed_params = None;
        }
        let next = route_uri(&routes[0])?.to_owned();
        if lr(&next) {
            self.set_dst_uri(Some(&next)).map_err(|e| e.to_string())?;
        } else {
            // A strict router next: it wants the target in the
            // Request-URI, so ours goes to the end of the route set.
            let ruri = String::from_utf8_lossy(self.ruri()).into_owned();
            routes.remove(0);
            routes.push(format!("<{ruri}>"));
            self.set_ruri(&next).map_err(|e| e.to_string())?;
        }
        Ok(LooseRoute::Driven)
    }

    fn after_strict(
        &mut self,
        routes: &mut Vec<String>,
        ruri: &str,
        myself: IsMyself<'_>,
    ) -> Result<LooseRoute, String> {
        self.rr.routed_params = Some(params_of(ruri));
        let mut first = route_uri(&routes[0])?.to_owned();
        let parsed = Uri::parse(first.as_bytes()).map_err(|e| e.to_string())?;
        if r2(&first) && uri_is_myself(&parsed, myself) {
            routes.remove(0);
            if routes.is_empty() {
                return Ok(LooseRoute::NotDriven);
            }
            first = route_uri(&routes[0])?.to_owned();
        }
        if !lr(&first) {
            // The next hop is a strict router too: it gets the Request-URI.
            routes.remove(0);
            self.set_ruri(&first).map_err(|e| e.to_string())?;
            return Ok(LooseRoute::Driven);
        }
        self.set_dst_uri(Some(&first)).map_err(|e| e.to_string())?;
        // The last Route is the target the strict router replaced.
        if routes.len() < 2 {
            return Err("no Route left for the remote target".into());
        }
        let last = routes.pop().unwrap_or_default();
        let target = route_uri(&last)?.to_owned();
        self.set_ruri(&target).map_err(|e| e.to_string())?;
        Ok(LooseRoute::Driven)
    }

    /// The parameters (with their leading `;`) of the Route that named us,
    /// found by [`Request::loose_route`] (after a strict router: of the
    /// Request-URI); `None` before it, or when the top Route was not ours.
    /// What Kamailio's `check_route_param` matches.
    pub fn routed_params(&self) -> Option<&str> {
        self.rr.routed_params.as_deref()
    }

    /// Whether this request flows upstream, callee to caller (Kamailio's
    /// `is_direction("upstream")`): the Route that named us carries an
    /// `ftag` that is not the From tag. Downstream when there is no `ftag`,
    /// no From tag, or loose routing found no Route of ours.
    pub fn is_upstream(&self) -> bool {
        let Some(params) = self.routed_params() else {
            return false;
        };
        let probe = format!("sip:probe.invalid{params}");
        let Some(ftag) = Uri::parse(probe.as_bytes())
            .ok()
            .and_then(|u| u.param("ftag").flatten())
            .filter(|t| !t.is_empty())
            .map(<[u8]>::to_vec)
        else {
            return false;
        };
        match self.msg().from().ok().and_then(|f| f.tag) {
            Some(tag) if !tag.is_empty() => tag != ftag.as_slice(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
