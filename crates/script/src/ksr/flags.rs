//! Message and branch flags of `KSR`: `setflag(n)`, `resetflag(n)`,
//! `isflagset(n)`, and for branch 0 `setbflag(n)`, `resetbflag(n)`,
//! `isbflagset(n)`, and Kamailio's forms naming the branch,
//! `setbiflag(n, branch)`, `resetbiflag(n, branch)`,
//! `isbiflagset(n, branch)`. Flags are 0 to 31; all return booleans, as
//! Kamailio's KEMI exports do (so `if KSR.isflagset(5) then` works).
//!
//! The flags are kept on the request ([`sip::Request::flags`]), so the
//! transaction's copy carries them into a failure route and a resumed
//! route, as Kamailio keeps them with the transaction. There is one
//! branch (index 0) until the router forks: another index is refused
//! (false, logged).

use super::module::{lua_int, Fail, Module};
use mlua::Value;
use sip::Request;

/// Which flag word a function works on.
#[derive(Clone, Copy)]
enum Word {
    Message,
    Branch,
}

impl Word {
    fn get(self, req: &Request) -> u32 {
        match self {
            Word::Message => req.flags(),
            Word::Branch => req.branch_flags(),
        }
    }
    fn set(self, req: &mut Request, v: u32) {
        match self {
            Word::Message => req.set_flags(v),
            Word::Branch => req.set_branch_flags(v),
        }
    }
}

/// What a function does to its flag.
#[derive(Clone, Copy)]
enum Op {
    Set,
    Reset,
    Test,
}

/// The bit for flag `v` (0 to 31).
fn bit(v: &Value) -> Result<u32, Fail> {
    match lua_int(v) {
        Some(n @ 0..=31) => Ok(1 << n),
        _ => Err(Fail::new(format_args!(
            "flag {} is not an integer from 0 to 31",
            v.to_string().unwrap_or_else(|_| format!("{v:?}"))
        ))),
    }
}

/// The branch index argument: only branch 0 exists.
fn branch(v: &Value) -> Result<(), Fail> {
    match lua_int(v) {
        Some(0) => Ok(()),
        _ => Err(Fail::new(format_args!(
            "branch {} does not exist (only branch 0 does)",
            v.to_string().unwrap_or_else(|_| format!("{v:?}"))
        ))),
    }
}

fn apply(req: &mut Request, word: Word, op: Op, bit: u32) -> bool {
    let cur = word.get(req);
    match op {
        Op::Set => word.set(req, cur | bit),
        Op::Reset => word.set(req, cur & !bit),
        Op::Test => return cur & bit != 0,
    }
    true
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    const FUNCS: [(&str, &str, Word, Op); 6] = [
        ("setflag", "", Word::Message, Op::Set),
        ("resetflag", "", Word::Message, Op::Reset),
        ("isflagset", "", Word::Message, Op::Test),
        ("setbflag", "setbiflag", Word::Branch, Op::Set),
        ("resetbflag", "resetbiflag", Word::Branch, Op::Reset),
        ("isbflagset", "isbiflagset", Word::Branch, Op::Test),
    ];
    for (name, indexed, word, op) in FUNCS {
        m.func(name, move |cx, flag: Value| {
            let bit = bit(&flag)?;
            cx.request(|req| apply(req, word, op, bit))
        })?;
        if !indexed.is_empty() {
            m.func(indexed, move |cx, (flag, idx): (Value, Value)| {
                let bit = bit(&flag)?;
                branch(&idx)?;
                cx.request(|req| apply(req, word, op, bit))
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    #[test]
    fn message_flags_are_set_tested_and_reset_on_the_request() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, bool, bool, bool, bool, bool)>(
                r#"KSR.isflagset(5), KSR.setflag(5), KSR.isflagset(5), KSR.setflag(31.0),
                   KSR.resetflag(5), KSR.isflagset(5)"#,
            )
        });
        assert_eq!(r, (false, true, true, true, true, false));
        assert_eq!(req.flags(), 1 << 31);
        // A later route on the same request (as a failure route gets the
        // transaction's copy) sees them.
        let mut copy = req.clone();
        let r = vm.in_request(&mut copy, |vm| vm.eval::<bool>("KSR.isflagset(31)"));
        assert!(r);
    }

    #[test]
    fn branch_flags_are_separate_and_only_branch_0_exists() {
        let vm = Vm::new();
        let mut req = request("REGISTER", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, bool, bool, bool, bool, bool)>(
                r#"KSR.setbflag(6), KSR.isbflagset(6), KSR.isflagset(6),
                   KSR.isbiflagset(6, 0), KSR.setbiflag(7, 1), KSR.resetbiflag(6, 0)"#,
            )
        });
        assert_eq!(r, (true, true, false, true, false, true));
        assert_eq!((req.flags(), req.branch_flags()), (0, 0));
    }

    #[test]
    fn bad_flags_and_no_request_are_false() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, bool, bool, bool)>(
                r#"KSR.setflag(32), KSR.setflag(-1), KSR.setflag("x"), KSR.isflagset(1.5)"#,
            )
        });
        assert_eq!(r, (false, false, false, false));
        assert_eq!(req.flags(), 0);
        assert!(!vm.eval::<bool>("KSR.setflag(1)"), "outside a route");
    }
}
