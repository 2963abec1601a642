//! Max-Forwards, as Kamailio's maxfwd: `KSR.maxfwd.process_maxfwd(limit)`
//! adds the header with `limit` when missing (2); refuses a request whose
//! Max-Forwards is already 0 (-1: the script replies 483 itself); else
//! decrements it (1), lowering a value above `[maxfwd] max_limit` to that
//! limit. -1 for a limit outside 0 to 255 (as Kamailio), -2 for a header
//! that cannot be read or no current request.

use super::module::{lua_int, Fail, Module};
use mlua::Value;
use sip::Request;

/// Kamailio's maxfwd on `req`. The value is relayed as set: the host does
/// not decrement it again.
fn process_maxfwd(req: &mut Request, limit: u8, max_limit: u8) -> Result<i64, Fail> {
    if !req.has_header("Max-Forwards") {
        req.set_max_forwards(limit);
        return Ok(2);
    }
    match req.max_forwards() {
        None => Err(Fail::new("the Max-Forwards header cannot be read").code(-2)),
        Some(0) => Ok(-1),
        // Above max_limit: relayed as max_limit, as Kamailio does (it
        // raises the value to max_limit + 1 before the decrement).
        Some(n) if n > max_limit => {
            req.set_max_forwards(max_limit);
            Ok(1)
        }
        Some(n) => {
            req.set_max_forwards(n - 1);
            Ok(1)
        }
    }
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("process_maxfwd", |cx, limit: Value| {
        let Some(limit) = lua_int(&limit).filter(|l| (0..=255).contains(l)) else {
            return Err(Fail::new("limit must be 0 to 255"));
        };
        let max_limit = cx.maxfwd_limit();
        cx.request(|req| process_maxfwd(req, limit as u8, max_limit))
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
    fn add_refuse_and_decrement_as_kamailio() {
        let vm = Vm::new();
        assert_eq!(run(&vm, "", "10"), (2, Some(10)));
        assert_eq!(run(&vm, "Max-Forwards: 0\r\n", "10"), (-1, Some(0)));
        // The argument is only the value of a missing header: a received
        // 70 is relayed as 69, not capped at the argument.
        assert_eq!(run(&vm, "Max-Forwards: 70\r\n", "10"), (1, Some(69)));
        assert_eq!(run(&vm, "Max-Forwards: 5\r\n", "10"), (1, Some(4)));
        assert_eq!(run(&vm, "Max-Forwards: 1\r\n", "10"), (1, Some(0)));
        // Above [maxfwd] max_limit (70): lowered to it.
        assert_eq!(run(&vm, "Max-Forwards: 71\r\n", "10"), (1, Some(70)));
        assert_eq!(run(&vm, "Max-Forwards: 200\r\n", "10"), (1, Some(70)));
        assert_eq!(run(&vm, "", "0"), (2, Some(0)));
        assert_eq!(run(&vm, "Max-Forwards: 5\r\n", "-1").0, -1);
        assert_eq!(run(&vm, "Max-Forwards: 5\r\n", "256").0, -1);
        assert_eq!(run(&vm, "Max-Forwards: lots\r\n", "10").0, -2);
        assert_eq!(vm.eval::<i64>("KSR.maxfwd.process_maxfwd(10)"), -2);
    }

    #[test]
    fn max_limit_comes_from_the_config() {
        let vm = Vm::with_maxfwd_limit(16);
        assert_eq!(run(&vm, "Max-Forwards: 70\r\n", "10"), (1, Some(16)));
        assert_eq!(run(&vm, "Max-Forwards: 16\r\n", "10"), (1, Some(15)));
        assert_eq!(run(&vm, "Max-Forwards: 17\r\n", "10"), (1, Some(16)));
    }
}
