//! `evapi check`'s reading of the script's source: what a porter from
//! Kamailio needs to know before the first call arrives.
//!
//! - every `KSR.module.function(...)` and `KSR.function(...)` the script
//!   calls that this program does not provide. The list of what it
//!   provides is read from the `KSR` table of a VM built the way the engine
//!   builds one, so it cannot drift from the code. A module missing here
//!   (auth, nathelper, rtpengine...) stays `nil` at run time, as in a
//!   Kamailio built without it: a call the script guards
//!   (`if not KSR.auth then return end`, `if KSR.permissions and ...`) is
//!   reported as a note, an unguarded one as a warning;
//! - every literal pseudo-variable name given to `KSR.pv.get` & co. that
//!   [`crate::pv::Pv::parse`] does not know;
//! - a function named by a string (`KSR.tm.t_on_failure("name")`,
//!   `KSR.tmx.t_continue(i, l, "name")`, `KSR.route("name")`) that the
//!   script does not define;
//! - an event callback the script defines that nothing will call.
//!
//! The source is read with a small tokenizer ([`lex`]) that knows Lua's
//! comments and strings; block structure is followed only as far as
//! guards need (`function`/`if`/`do`/`repeat` ... `end`).

mod lex;

use crate::ksr::Handles;
use crate::ScriptConfig;
use lex::{Tok, Token};
use mlua::{Lua, Table, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; nothing fails because of it.
    Note,
    /// Something that will not work as the script expects.
    Warning,
}

/// One thing `evapi check` has to say about the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The script file.
    pub file: PathBuf,
    /// The line the finding is about.
    pub line: usize,
    /// Note or warning.
    pub severity: Severity,
    /// What it is, in words a porter can act on.
    pub message: String,
}

impl fmt::Display for Finding {
    /// `file:line: warning: message` (or `note:`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Note => "note",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}: {level}: {}",
            self.file.display(),
            self.line,
            self.message
        )
    }
}

/// `KSR.pv` functions whose first argument is a pseudo-variable name.
const PV_FUNCTIONS: [&str; 9] = [
    "get", "gete", "getw", "getvn", "getvs", "sets", "seti", "unset", "is_null",
];

/// Functions that take the name of a script function, and which argument.
const NAMED_ROUTES: [(&str, usize); 5] = [
    ("tmx.t_continue", 2),
    ("tm.t_on_failure", 0),
    ("tm.t_on_reply", 0),
    ("tm.t_on_branch", 0),
    ("route", 0),
];

/// Callbacks a Kamailio script defines for a module's events, and where
/// Kamailio (or this program) is told their name.
const EVENT_CALLBACKS: [(&str, &str); 6] = [
    ("ksr_evapi_event", "evapi"),
    ("ksr_dialog_event", "dialog"),
    ("ksr_nats_event", "nats"),
    ("ksr_htable_event", "htable"),
    ("ksr_xhttp_event", "xhttp"),
    ("ksr_websocket_event", "websocket"),
];

/// What `KSR` has in a VM built by the engine.
struct Surface {
    /// `KSR.info`, `KSR.is_INVITE`...
    root: HashSet<String>,
    /// `KSR.sl` → `send_reply`, `sl_send_reply`...
    modules: HashMap<String, HashSet<String>>,
}

impl Surface {
    /// Walk the `KSR` table of a VM set up as the engine sets one up.
    fn read() -> mlua::Result<Surface> {
        let lua = Lua::new();
        crate::ksr::install(&lua, &Arc::new(Handles::new(None, None)))?;
        let ksr: Table = lua.globals().get("KSR")?;
        let mut surface = Surface {
            root: HashSet::new(),
            modules: HashMap::new(),
        };
        for pair in ksr.pairs::<String, Value>() {
            let (name, value) = pair?;
            match value {
                Value::Table(t) => {
                    let names = t.pairs::<String, Value>().filter_map(|p| p.ok());
                    let names = names.map(|(n, _)| n).collect();
                    surface.modules.insert(name, names);
                }
                _ => {
                    surface.root.insert(name);
                }
            }
        }
        Ok(surface)
    }

    /// Whether `KSR.<path>` (`auth`, `tm.t_relay`) exists.
    fn has(&self, path: &[String]) -> bool {
        match path {
            [one] => self.root.contains(one) || self.modules.contains_key(one),
            [m, f] => self.modules.get(m).is_some_and(|fs| fs.contains(f)),
            _ => true,
        }
    }
}

/// Why a line is not reached here: the script tested `what` (absent here)
/// at `line` and returns, or skips the block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reason {
    line: usize,
    what: String,
}

/// One open block while following the structure.
enum Block {
    /// A function body (or the chunk): dead from where a guard returned.
    Func { dead: Option<Reason> },
    /// An `if`: its `then` part may be dead; it may be an early-return
    /// guard for the rest of the function.
    If {
        then_dead: Option<Reason>,
        in_then: bool,
        guard: Option<Reason>,
    },
    /// `do`, `repeat`: no effect on guards.
    Other,
}

fn name(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Name(n)) => Some(n),
        _ => None,
    }
}

fn is_sym(t: Option<&Token>, s: &str) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::Sym(x)) if x == s)
}

/// `KSR.a.b` starting at `i`: the path after `KSR` and the index after it.
fn ksr_path(toks: &[Token], i: usize) -> Option<(Vec<String>, usize)> {
    if name(toks.get(i)) != Some("KSR") || (i > 0 && is_sym(toks.get(i - 1), ".")) {
        return None;
    }
    let mut path = Vec::new();
    let mut j = i + 1;
    while is_sym(toks.get(j), ".") {
        path.push(name(toks.get(j + 1))?.to_string());
        j += 2;
    }
    Some((path, j))
}

/// The tokens of each argument of the call whose `(` is at `open`.
fn call_args(toks: &[Token], open: usize) -> Vec<&[Token]> {
    let mut args = Vec::new();
    let (mut depth, mut start) = (0usize, open + 1);
    for (k, t) in toks.iter().enumerate().skip(open + 1) {
        match &t.tok {
            Tok::Sym(s) if s == "(" || s == "[" || s == "{" => depth += 1,
            Tok::Sym(s) if (s == ")" || s == "]" || s == "}") && depth > 0 => depth -= 1,
            Tok::Sym(s) if s == ")" => {
                if k > start {
                    args.push(&toks[start..k]);
                }
                break;
            }
            Tok::Sym(s) if s == "," && depth == 0 => {
                args.push(&toks[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    args
}

/// A lone string literal argument.
fn literal(arg: &[Token]) -> Option<&str> {
    match arg {
        [Token {
            tok: Tok::Str(s), ..
        }] => Some(s),
        _ => None,
    }
}

/// Global functions the script defines, with their line:
/// `function name(`, `name = function`.
fn definitions(toks: &[Token]) -> HashMap<String, usize> {
    let mut defs = HashMap::new();
    for (i, t) in toks.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| toks.get(p));
        let declared = name(Some(t)) == Some("function")
            && name(prev) != Some("local")
            && !is_sym(toks.get(i + 2), ".")
            && !is_sym(toks.get(i + 2), ":");
        if declared {
            if let Some(n) = name(toks.get(i + 1)) {
                defs.entry(n.to_string()).or_insert(t.line);
            }
        }
        let assigned = is_sym(toks.get(i + 1), "=")
            && name(toks.get(i + 2)) == Some("function")
            && name(prev) != Some("local")
            && !is_sym(prev, ".");
        if let (true, Some(n)) = (assigned, name(Some(t))) {
            defs.entry(n.to_string()).or_insert(t.line);
        }
    }
    defs
}

/// For each token, why it is not reached here (if it is not).
fn dead_code(toks: &[Token], surface: &Surface) -> Vec<Option<Reason>> {
    let mut stack = vec![Block::Func { dead: None }];
    let mut dead = Vec::with_capacity(toks.len());
    for (i, t) in toks.iter().enumerate() {
        let now = stack.iter().find_map(|b| match b {
            Block::Func { dead: Some(r) } => Some(r.clone()),
            Block::If {
                then_dead: Some(r),
                in_then: true,
                ..
            } => Some(r.clone()),
            _ => None,
        });
        dead.push(now);
        match name(Some(t)) {
            Some("function") => stack.push(Block::Func { dead: None }),
            Some("do") | Some("repeat") => stack.push(Block::Other),
            Some("if") => {
                let then = (i + 1..toks.len()).find(|&k| name(toks.get(k)) == Some("then"));
                let cond = &toks[i + 1..then.unwrap_or(i + 1)];
                let (then_dead, guard) = match then {
                    Some(k) => guard_of(cond, toks, k, t.line, surface),
                    None => (None, None),
                };
                stack.push(Block::If {
                    then_dead,
                    in_then: true,
                    guard,
                });
            }
            Some("elseif") | Some("else") => {
                if let Some(Block::If { in_then, guard, .. }) = stack.last_mut() {
                    *in_then = false;
                    *guard = None;
                }
            }
            Some("end") | Some("until") if stack.len() > 1 => {
                if let Some(Block::If { guard: Some(r), .. }) = stack.pop() {
                    let func = stack.iter_mut().rev().find_map(|b| match b {
                        Block::Func { dead } => Some(dead),
                        _ => None,
                    });
                    if let Some(dead @ None) = func {
                        *dead = Some(r);
                    }
                }
            }
            _ => {}
        }
    }
    dead
}

/// What an `if` at `line` with condition `cond` (its `then` at `then`)
/// means here: its `then` part not reached (`if KSR.m and ...` with `m`
/// absent), or the rest of the function not reached (`if not KSR.m then
/// return`, `m` absent).
fn guard_of(
    cond: &[Token],
    toks: &[Token],
    then: usize,
    line: usize,
    surface: &Surface,
) -> (Option<Reason>, Option<Reason>) {
    let cond = without_parens(cond);
    let absent = |path: &[String]| !surface.has(path);
    let reason = |path: &[String]| Reason {
        line,
        what: format!("KSR.{}", path.join(".")),
    };
    // `KSR.m and ...`, `KSR.m then`, `KSR.m ~= nil`
    if let Some((path, j)) = ksr_path(&cond, 0) {
        let next = cond.get(j);
        let positive = next.is_none()
            || name(next) == Some("and")
            || (is_sym(next, "~=") && name(cond.get(j + 1)) == Some("nil"));
        if positive && absent(&path) {
            return (Some(reason(&path)), None);
        }
        return (None, None);
    }
    // `not KSR.a and not KSR.b`, `not KSR.a or not KSR.b`, then return.
    let mut tested = Vec::new();
    let mut k = 0;
    let mut joiner = None;
    while name(cond.get(k)) == Some("not") {
        let Some((path, j)) = ksr_path(&cond, k + 1) else {
            return (None, None);
        };
        tested.push(path);
        k = j;
        match name(cond.get(k)) {
            None => break,
            Some(w @ ("and" | "or")) if joiner.is_none() || joiner == Some(w) => {
                joiner = Some(w);
                k += 1;
            }
            _ => return (None, None),
        }
    }
    if tested.is_empty() || k < cond.len() {
        return (None, None);
    }
    let exits = name(toks.get(then + 1)) == Some("return")
        || ksr_path(toks, then + 1).is_some_and(|(p, _)| {
            p.len() == 2 && p[0] == "x" && (p[1] == "exit" || p[1] == "drop")
        });
    let returns_here = match joiner {
        Some("or") => tested.iter().any(|p| absent(p)),
        _ => tested.iter().all(|p| absent(p)),
    };
    if exits && returns_here {
        let first = tested.iter().find(|p| absent(p)).unwrap_or(&tested[0]);
        return (None, Some(reason(first)));
    }
    (None, None)
}

/// `cond` without grouping parentheses, and with each call's argument list
/// replaced by one `()` token: `(not KSR.a)` is a test of `KSR.a`,
/// `KSR.a()` is not.
fn without_parens(cond: &[Token]) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    let mut k = 0;
    while k < cond.len() {
        let t = &cond[k];
        let after_name = matches!(
            out.last().map(|t| &t.tok),
            Some(Tok::Name(n)) if !matches!(n.as_str(), "not" | "and" | "or")
        );
        if is_sym(Some(t), "(") && after_name {
            let mut depth = 0usize;
            while k < cond.len() {
                if is_sym(cond.get(k), "(") {
                    depth += 1;
                } else if is_sym(cond.get(k), ")") {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                k += 1;
            }
            out.push(Token {
                tok: Tok::Sym("()".into()),
                line: t.line,
            });
        } else if !is_sym(Some(t), "(") && !is_sym(Some(t), ")") {
            out.push(t.clone());
        }
        k += 1;
    }
    out
}

/// Everything `evapi check` says about the script of `config`, in line
/// order. An unreadable script gives nothing here ([`crate::Engine::check`]
/// reports it).
pub fn lint(config: &ScriptConfig) -> Vec<Finding> {
    let source = match &config.source {
        Some(s) => s.clone(),
        None => match std::fs::read_to_string(&config.file) {
            Ok(s) => s,
            Err(_) => return Vec::new(),
        },
    };
    let Ok(surface) = Surface::read() else {
        return Vec::new();
    };
    let mut found = BTreeSet::new();
    let callbacks = [
        ("evapi", config.event_callback.as_str()),
        ("dialog", config.dialog_event_callback.as_str()),
    ];
    analyse(&source, &callbacks, &surface, &mut found);
    found
        .into_iter()
        .map(|(line, severity, message)| Finding {
            file: config.file.clone(),
            line,
            severity,
            message,
        })
        .collect()
}

type Found = BTreeSet<(usize, Severity, String)>;

/// `callbacks`: the event callback each section of ours names
/// (`[evapi]`, `[dialog]`), "" for none.
fn analyse(source: &str, callbacks: &[(&str, &str)], surface: &Surface, found: &mut Found) {
    let toks = lex::tokens(source);
    let defs = definitions(&toks);
    let dead = dead_code(&toks, surface);
    let is_call = |j: usize| {
        is_sym(toks.get(j), "(")
            || is_sym(toks.get(j), "{")
            || matches!(toks.get(j).map(|t| &t.tok), Some(Tok::Str(_)))
    };
    // Where the script tests a KSR name as a value (`if KSR.auth`,
    // `local has = KSR.auth ~= nil`), anywhere in the file.
    let mut tests: HashMap<Vec<String>, usize> = HashMap::new();
    for i in 0..toks.len() {
        let Some((path, j)) = ksr_path(&toks, i) else {
            continue;
        };
        if !is_call(j) && !is_sym(toks.get(j), ":") && !is_sym(toks.get(j), "[") {
            tests.entry(path).or_insert(toks[i].line);
        }
    }
    for i in 0..toks.len() {
        let Some((path, j)) = ksr_path(&toks, i) else {
            continue;
        };
        if !is_call(j) {
            continue;
        }
        let line = toks[i].line;
        let guard = dead[i].clone().or_else(|| {
            (1..=path.len()).find_map(|n| {
                tests.get(&path[..n]).map(|&l| Reason {
                    line: l,
                    what: format!("KSR.{}", path[..n].join(".")),
                })
            })
        });
        if !surface.has(&path) && path.len() <= 2 {
            missing(&path, line, guard.as_ref(), surface, found);
        }
        if !is_sym(toks.get(j), "(") {
            continue;
        }
        let args = call_args(&toks, j);
        let full = path.join(".");
        if path.len() == 2 && path[0] == "pv" && PV_FUNCTIONS.contains(&path[1].as_str()) {
            if let Some(pv) = args.first().and_then(|a| literal(a)) {
                if let Err(e) = crate::pv::Pv::parse(pv) {
                    let (severity, tail) = severity(guard.as_ref(), None);
                    let msg = format!(
                        "KSR.{full}(\"{pv}\"): pseudo-variable {pv} is not provided by \
                         this program ({e}){tail}"
                    );
                    found.insert((line, severity, msg));
                }
            }
        }
        if let Some(&(_, n)) = NAMED_ROUTES.iter().find(|(f, _)| *f == full) {
            if let Some(fname) = args.get(n).and_then(|a| literal(a)) {
                if !defs.contains_key(fname) {
                    let msg = format!(
                        "KSR.{full}: the script defines no function {fname}() \
                         (a global function of that name is needed)"
                    );
                    found.insert((line, Severity::Warning, msg));
                }
            }
        }
    }
    for (cb, module) in EVENT_CALLBACKS {
        let Some(&line) = defs.get(cb) else { continue };
        let ours = callbacks.iter().find(|(m, _)| *m == module);
        let msg = if let Some((_, named)) = ours {
            if module == "evapi" && !named.is_empty() || *named == cb {
                continue;
            }
            format!(
                "{cb}() is defined but [{module}] event_callback is {}, so it never runs \
                 (set event_callback = \"{cb}\" in [{module}])",
                if named.is_empty() {
                    "empty".to_string()
                } else {
                    format!("{named:?}")
                }
            )
        } else if module == "nats" {
            format!(
                "{cb}() is defined but never runs: here the `nats:<subject>` events of \
                 [[nats.subscribe]] go to the [evapi] event_callback (payload in $natsData)"
            )
        } else {
            format!(
                "{cb}() is defined but this program has no {module} module to call it \
                 (in Kamailio: modparam(\"{module}\", \"event_callback\", \"{cb}\")); it never runs"
            )
        };
        found.insert((line, Severity::Warning, msg));
    }
}

/// Note or warning, and the end of the message saying why.
fn severity(guard: Option<&Reason>, own: Option<&str>) -> (Severity, String) {
    match guard {
        Some(r) if Some(r.what.as_str()) == own => (
            Severity::Note,
            format!("; the script tests for it at line {}", r.line),
        ),
        Some(r) => (
            Severity::Note,
            format!(
                "; not reached here: the script tests for {} at line {}",
                r.what, r.line
            ),
        ),
        None => (Severity::Warning, String::new()),
    }
}

/// A call of `KSR.<path>` that does not exist here.
fn missing(path: &[String], line: usize, guard: Option<&Reason>, s: &Surface, found: &mut Found) {
    let full = format!("KSR.{}", path.join("."));
    let module_absent = path.len() == 2 && !s.modules.contains_key(&path[0]);
    let msg = if module_absent {
        let module = format!("KSR.{}", path[0]);
        let (severity, tail) = severity(guard, Some(&module));
        let unguarded = if severity == Severity::Warning {
            format!(
                ", and nothing guards this call: it fails with \"attempt to index a nil \
                 value\" (test for it first: `if {module} then ... end`)"
            )
        } else {
            String::new()
        };
        (
            severity,
            format!(
                "{full}: module {} is absent here, as in a Kamailio built without it{unguarded}{tail}",
                path[0]
            ),
        )
    } else {
        let (severity, tail) = severity(guard, Some(&full));
        let fails = if severity == Severity::Warning {
            ": calling it fails with \"attempt to call a nil value\""
        } else {
            ""
        };
        (
            severity,
            format!("{full} is not provided by this program{fails}{tail}"),
        )
    };
    found.insert((line, msg.0, msg.1));
}

#[cfg(test)]
mod tests;
