#!/usr/bin/env python3
"""Where a request's microseconds go: `perf` around one benchmark run.

bench/compare.py --perf calls `start(pids, rdir)` when the load starts and
`stop(...)` when it ends, for each server run: `perf stat` counts system
calls, context switches and CPU time of the server's threads, `perf record`
samples them (999 Hz, kernel call chains). `breakdown(rdir, requests)` then
sorts every sample into one part of a request's life:

  receive      kernel, inside recvfrom/recvmsg/recvmmsg
  send         kernel, inside sendto/sendmsg/sendmmsg/writev/write to a socket
               (on loopback this includes delivering to the peer's socket)
  wait/wake    kernel, epoll_wait, futex, eventfd, the scheduler
  other kernel any other system call, interrupts
  parse        our SIP parser (sip::message, header, lex, values, uri)
  transactions sip::tm, sip::dialog
  host         the rest of sip:: (router threads, transport, replies)
  Lua          the Lua VM (lua*, luaV_*, luaH_* ...)
  script       mlua and script:: (the KSR bridge)
  event socket evapi::
  runtime      tokio, mio, flume
  alloc        malloc/free and friends
  copy/search  memcpy, memmove, memchr, memcmp
  other        anything else (Kamailio's own code, for Kamailio runs)

User-space samples are classed by their leaf symbol (release builds have no
frame pointers, so only the leaf is reliable); kernel samples by the system
call found in their (always complete) kernel chain.

By hand, on any running server:

    perf record -F 999 -g -p PID -o DIR/perf.data -- sleep 5
    perf stat -e raw_syscalls:sys_enter,context-switches,task-clock,syscalls:sys_enter_futex,... \
        -x, -o DIR/perf-stat.txt -p PID -- sleep 5   (the events are STAT_EVENTS below)
    python3 bench/perf_breakdown.py DIR REQUESTS_IN_THOSE_5_S
"""

import os
import re
import signal
import subprocess
import sys

PERF = "perf"

# System calls counted one by one (per request in the output): where the
# waiting and the hand-offs go.
KINDS = ["futex", "epoll_wait", "epoll_pwait", "recvfrom", "recvmmsg", "sendto", "sendmmsg", "read", "write"]
STAT_EVENTS = ",".join(["raw_syscalls:sys_enter", "context-switches", "task-clock"]
                       + [f"syscalls:sys_enter_{k}" for k in KINDS])

KERNEL = [
    ("receive", re.compile(r"__sys_recv|__x64_sys_recv|udp_recvmsg|tcp_recvmsg")),
    ("send", re.compile(r"__sys_send|__x64_sys_send|udp_sendmsg|tcp_sendmsg|do_writev|__x64_sys_writev")),
    ("wait/wake", re.compile(r"epoll_wait|epoll_pwait|futex|eventfd|__x64_sys_poll|do_sys_poll|"
                             r"schedule|finish_task_switch|__x64_sys_sched_yield")),
]
USER = [
    ("alloc", re.compile(r"^(__libc_)?(malloc|free|cfree|realloc|calloc)\b|^_int_(malloc|free|realloc)|"
                         r"^malloc_consolidate|^tcache|^__rust_(alloc|dealloc|realloc)|^alloc::alloc")),
    ("copy/search", re.compile(r"^__mem|^mem(cpy|move|set|chr|cmp|rchr)|^__strlen|^strlen|^__strchr|"
                               r"^memchr::|^__nss_database")),
    ("parse", re.compile(r"^<?sip::(message|header|lex|values|uri|key)|^core::str::converts::from_utf8|"
                         r"^<core::net::parser")),
    ("transactions", re.compile(r"^<?sip::(tm|dialog)")),
    ("host", re.compile(r"^<?sip::|^core::ptr::drop_in_place<sip::|^<?bytes::")),
    ("Lua", re.compile(r"^(lua|luaV_|luaH_|luaG_|luaD_|luaC_|luaF_|luaK_|luaS_|luaT_|luaL_|luaE_|luaM_|"
                       r"luaO_|luaB_|luaU_|luaX_|luaY_|luaZ_|luaI_|index2value|str_|tconcat|"
                       r"sweeplist|propagatemark|singlestep|GCTM|mainpositionTV|getgeneric)")),
    ("script", re.compile(r"^(mlua::|script::|<mlua::|<script::|core::ptr::drop_in_place<mlua::|"
                          r"core::ptr::drop_in_place<script::)")),
    ("event socket", re.compile(r"^(evapi::|<evapi::)")),
    ("runtime", re.compile(r"^(tokio::|<tokio::|mio::|flume::|<flume::|std::sys::.*(thread|futex)|"
                           r"parking_lot|crossbeam|__vdso_clock_gettime|<std::sys::pal::unix::time)")),
]
ORDER = ["receive", "parse", "host", "transactions", "script", "Lua", "event socket", "send",
         "wait/wake", "runtime", "alloc", "copy/search", "other kernel", "other"]


def start(pids, rdir):
    """Start perf stat and perf record on these PIDs (their threads)."""
    plist = ",".join(str(p) for p in pids)
    stat = subprocess.Popen([PERF, "stat", "-e", STAT_EVENTS,
                             "-x", ",", "-o", os.path.join(rdir, "perf-stat.txt"), "-p", plist],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec = subprocess.Popen([PERF, "record", "-F", "999", "-g", "-q", "-o", os.path.join(rdir, "perf.data"),
                            "-p", plist], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [stat, rec]


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def classify(stack):
    """stack: [(symbol, dso)] leaf first."""
    kernel = [s for s, d in stack if "kernel" in d]
    if kernel:
        chain = " ".join(kernel)
        for name, rx in KERNEL:
            if rx.search(chain):
                return name
        return "other kernel"
    leaf = stack[0][0] if stack else "?"
    for name, rx in USER:
        if rx.search(leaf):
            return name
    return "other"


def samples(rdir):
    out = subprocess.run([PERF, "script", "-i", os.path.join(rdir, "perf.data"), "-F", "ip,sym,dso"],
                         capture_output=True, text=True).stdout
    stack = []
    for line in out.splitlines() + [""]:
        line = line.strip()
        if not line:
            if stack:
                yield stack
            stack = []
            continue
        m = re.match(r"[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)$", line)
        if m:
            stack.append((m.group(1), m.group(2)))


def read_stat(rdir):
    st = {}
    try:
        for line in open(os.path.join(rdir, "perf-stat.txt")):
            f = line.strip().split(",")
            if len(f) > 3 and f[0] and not line.startswith("#"):
                try:
                    st[f[2]] = float(f[0])
                except ValueError:
                    pass
    except OSError:
        pass
    return st


def breakdown(rdir, requests):
    """{part: share}, with per-request µs, syscalls and context switches."""
    counts = {}
    n = 0
    for s in samples(rdir):
        c = classify(s)
        counts[c] = counts.get(c, 0) + 1
        n += 1
    st = read_stat(rdir)
    cpu_ms = st.get("task-clock", 0.0)
    res = {"samples": n, "cpu_ms": round(cpu_ms, 1), "requests": requests}
    if requests:
        res["cpu_us_per_req"] = round(cpu_ms * 1000 / requests, 2)
        res["syscalls_per_req"] = round(st.get("raw_syscalls:sys_enter", 0) / requests, 2)
        res["ctx_switches_per_req"] = round(st.get("context-switches", 0) / requests, 3)
        res["syscalls_by_kind_per_req"] = {k: round(st[f"syscalls:sys_enter_{k}"] / requests, 3)
                                           for k in KINDS if st.get(f"syscalls:sys_enter_{k}")}
    res["parts"] = {k: round(counts.get(k, 0) / n, 4) for k in ORDER if n}
    return res


def table(res):
    lines = [f"{res['samples']} samples, {res.get('cpu_us_per_req', '?')} µs CPU, "
             f"{res.get('syscalls_per_req', '?')} system calls and "
             f"{res.get('ctx_switches_per_req', '?')} context switches per request",
             "system calls per request by kind: " + (", ".join(
                 f"{k} {v}" for k, v in res.get("syscalls_by_kind_per_req", {}).items()) or "–"),
             "| part | share | µs per request |", "|---|---|---|"]
    per = res.get("cpu_us_per_req") or 0
    for k, v in res.get("parts", {}).items():
        if v:
            lines.append(f"| {k} | {v * 100:.1f} % | {v * per:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(table(breakdown(sys.argv[1], int(sys.argv[2]))))
