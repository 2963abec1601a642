//! `KSR.pike.pike_check_req()`: Kamailio's pike flood detection for the
//! current request's source address (`[pike]`): 1 while the address stays
//! within `reqs_density_per_unit` requests per `sampling_time_unit`
//! seconds, -1 once it went above (and for `remove_latency` units after its
//! flood stops). Needs a SIP request.

use super::module::{kemi_bool, Fail, Module};
use std::time::Instant;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("pike_check_req", |cx, ()| {
        let ip = cx.request(|req| req.source().remote.ip())?;
        let allowed = cx.shared().pike.check(ip, Instant::now());
        if !allowed {
            // The script decides what to do (the example bans the address);
            // say once in a while why.
            return Err(Fail::new(format_args!("{ip} is flooding ([pike] limits)")));
        }
        Ok(kemi_bool(allowed))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    #[test]
    fn a_flood_from_one_address_is_refused() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        // Kamailio's default density: 30 requests per 2 s unit.
        let results: Vec<i64> = (0..31)
            .map(|_| vm.in_request(&mut req, |vm| vm.eval::<i64>("KSR.pike.pike_check_req()")))
            .collect();
        assert!(results[..30].iter().all(|r| *r == 1));
        assert_eq!(results[30], -1);
        assert_eq!(
            vm.eval::<i64>("KSR.pike.pike_check_req()"),
            -1,
            "outside a request"
        );
    }
}
