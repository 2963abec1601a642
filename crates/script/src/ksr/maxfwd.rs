//! Max-Forwards: `KSR.maxfwd.process_maxfwd(limit)` adds the header with
//! `limit` when missing (2), refuses at 0 (-1), else caps at `limit` and
//! decrements (1); -2 for a limit outside 1 to 255, a header that cannot be
//! read, or no current request.

use super::module::{lua_int, Fail, Module};
use mlua::Value;
use sip::Request;

/// Kamailio's maxfwd on `req`. The value is relayed as set: the host does
/// not decrement it again.
fn process_maxfwd(req: &mut Request, limit: u8) -> Result<i64, Fail> {
    if !req.has_header("Max-Forwards") {
        req.set_max_forwards(limit);
        return Ok(2);
    }
    match req.max_forwards() {
        None => Err(Fail::new("the Max-Forwards header cannot be read").code(-2)),
        Some(0) => Ok(-1),
        Some(n) => {
            req.set_max_forwards(n.min(limit) - 1);
            Ok(1)
        }
    }
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("process_maxfwd", |cx, limit: Value| {
        let Some(limit) = lua_int(&limit).filter(|l| (1..=255).contains(l)) else {
            return Err(Fail::new("limit must be 1 to 255").code(-2));
        };
        cx.request(|req| process_maxfwd(req, limit as u8))
            .map_err(|e| e.code(-2))?
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    fn run(vm: &Vm, headers: &str, limit: &str) -> (i64, Option<u8>) {
        let mut req = request("INVITE", headers);
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(&format!("KSR.maxfwd.process_maxfwd({limit})"))
        });
        (r, req.max_forwards())
    }

    #[test]
    fn add_refuse_cap_and_decrement() {
        let vm = Vm::new();
        assert_eq!(run(&vm, "", "10"), (2, Some(10)));
        assert_eq!(run(&vm, "Max-Forwards: 0\r\n", "10"), (-1, Some(0)));
        assert_eq!(run(&vm, "Max-Forwards: 70\r\n", "10"), (1, Some(9)));
        assert_eq!(run(&vm, "Max-Forwards: 5\r\n", "10"), (1, Some(4)));
        assert_eq!(run(&vm, "Max-Forwards: 5\r\n", "0").0, -2);
        assert_eq!(run(&vm, "Max-Forwards: 5\r\n", "256").0, -2);
        assert_eq!(run(&vm, "Max-Forwards: lots\r\n", "10").0, -2);
        assert_eq!(vm.eval::<i64>("KSR.maxfwd.process_maxfwd(10)"), -2);
    }
}
