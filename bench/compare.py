#!/usr/bin/env python3
"""Side-by-side benchmark: Kamailio 5.6.3 (evapi module) and our `evapi run`.

Run through bench/compare.sh, which checks the Debian packages and builds the
clients. Method and pass rule are those of the shared anchor harness
(../shared/bench/kamailio/bench.py), applied to both servers in turn, in one
invocation, with the same SIPp scenarios and the same evapi clients:

  * a run is one fresh server + its clients + one load generator, for
    `duration` seconds (SIPp -m rate*duration), stopped by PID;
  * rates are tried in ascending order until one fails; the highest passing
    rate is then repeated `repeat` times;
  * pass = no failed calls, no retransmissions, every call answered, achieved
    rate >= 95 % of the target, and every client received exactly one valid
    frame per answered request (responder: one event per answered call);
  * before each run it waits (bounded) for other sessions' processes to be
    quiet; a run during which they used more than 10 % of one CPU is flagged
    "contaminated" and redone (at most --retries times). Processes at nice >= 10
    (fuzzers) are counted apart ("niced"), not as contamination.

Figures: (1) stateless baseline, (2) relay to 1/4/8 clients, (3) async
round trip with SIPp, (4) latency with the probe (probe.c, or async_probe.py with --tools python) at 100/1000/2000
calls/s, (5) memory (PSS of all processes) at each rate, (6) event-socket
fan-out alone to 1/8/64 clients, (7) "basic": Kamailio's example KEMI Lua
script, unchanged, on both (bench/basic.py: register, record-routed calls),
(8) "dialog": dialog tracking on both, record-routed calls with BYE, calls/s,
CPU per call and memory per live dialog (bench/dialog.py).

Output: bench/results/<UTC stamp>/runs.jsonl (one JSON per run),
summary.json, tables.md, and the plot docs/bench/compare.png.
Ports (127.0.0.1 only): env SIP_PORT (15060), EVAPI_PORT (18448), SIPP_PORT (15070), HTTP_PORT (19060, our admin listener).
"""
import argparse
import csv
import glob
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import basic
import perf_breakdown
import dialog

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
COMMON = os.path.join(HERE, "common")
SIP_PORT = int(os.environ.get("SIP_PORT", "15060"))
EVAPI_PORT = int(os.environ.get("EVAPI_PORT", "18448"))
SIPP_PORT = int(os.environ.get("SIPP_PORT", "15070"))
HTTP_PORT = int(os.environ.get("HTTP_PORT", "19060"))
HZ = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------- helpers


def sh(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def port_busy():
    u = sh(["ss", "-Huln", f"sport = :{SIP_PORT}"]).stdout.strip()
    t = sh(["ss", "-Htln", f"sport = :{EVAPI_PORT}"]).stdout.strip()
    return bool(u or t)


def udp_errors():
    """Kernel-wide UDP receive-buffer overflows and in-errors (/proc/net/snmp)."""
    lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Udp:")]
    d = dict(zip(lines[0][1:], (int(x) for x in lines[1][1:])))
    return d.get("RcvbufErrors", 0), d.get("InErrors", 0)


def children_of(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(x) for x in open(f"/proc/{pid}/task/{t}/children").read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def proc_tree(main):
    """{pid: (rss_kb, pss_kb)} for the server's main process and its children."""
    res = {}
    for pid in [main] + children_of(main):
        rss = pss = 0
        try:
            for l in open(f"/proc/{pid}/smaps_rollup"):
                if l.startswith("Rss:"):
                    rss = int(l.split()[1])
                elif l.startswith("Pss:"):
                    pss = int(l.split()[1])
        except OSError:
            continue
        res[pid] = (rss, pss)
    return res


def cpu_ticks(pids):
    tot = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            tot += int(f[11]) + int(f[12])
        except OSError:
            pass
    return tot


def threads(pids):
    """(pid, tid) of every thread of `pids` (processes gone are skipped)."""
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            yield p, t


def task_ns(pids):
    """Time on a CPU of every thread of `pids`, in nanoseconds, from each
    task's schedstat (the scheduler's own count, exact), as {(pid, tid): ns}.
    utime + stime in /proc/PID/stat come in 10 ms ticks: 12 or 13 of them
    for the probe row's 500 calls at 100 calls/s, a 20 µs step in its CPU
    per call; schedstat has no such step. It lags by the slice a thread is
    running at the moment it is read, so it is read with the server idle
    (before the load and after it)."""
    out = {}
    for p, t in threads(pids):
        try:
            out[(p, t)] = int(open(f"/proc/{p}/task/{t}/schedstat").read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return out


def cpu_s_exact(ns0, ns1):
    """Seconds on a CPU between two `task_ns` readings; None when a thread
    that was there at the start is gone at the end (its time went with it:
    the tick count, which keeps a dead thread's time, is used instead)."""
    if not ns0 or any(k not in ns1 for k in ns0):
        return None
    return sum(v - ns0.get(k, 0) for k, v in ns1.items()) / 1e9


def wakeups(pids):
    """Voluntary context switches (the thread slept and was woken) summed
    over every thread of `pids`: how often the server went to sleep."""
    tot = 0
    for p, t in threads(pids):
        try:
            for l in open(f"/proc/{p}/task/{t}/status"):
                if l.startswith("voluntary_ctxt_switches:"):
                    tot += int(l.split()[1])
        except OSError:
            pass
    return tot


def thread_ticks(pid, field=None):
    """CPU ticks per thread-name group of one process (our server's threads);
    with `field` (a /proc status key such as "voluntary_ctxt_switches"),
    that count per group instead."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            s = open(f"/proc/{pid}/task/{t}/stat").read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        f = s.rsplit(")", 1)[1].split()
        group = re.sub(r"[-_]?\d+$", "", name)
        if field is None:
            n = int(f[11]) + int(f[12])
        else:
            try:
                n = next(int(l.split()[1]) for l in open(f"/proc/{pid}/task/{t}/status")
                         if l.startswith(field + ":"))
            except (OSError, StopIteration):
                continue
        out[group] = out.get(group, 0) + n
    return out


class Sampler(threading.Thread):
    """Samples RSS and PSS (smaps_rollup) of the server's processes every 0.25 s (bounded)."""

    def __init__(self, main, max_s):
        super().__init__(daemon=True)
        self.main, self.max_s = main, max_s
        self.stop_ev = threading.Event()
        self.max_rss = self.max_pss = 0
        self.max_per_pid = {}
        self.pids = set()

    def run(self):
        t0 = time.time()
        while not self.stop_ev.is_set() and time.time() - t0 < self.max_s:
            tree = proc_tree(self.main)
            self.pids |= set(tree)
            self.max_rss = max(self.max_rss, sum(v[0] for v in tree.values()))
            self.max_pss = max(self.max_pss, sum(v[1] for v in tree.values()))
            for p, v in tree.items():
                self.max_per_pid[p] = max(self.max_per_pid.get(p, 0), v[0])
            self.stop_ev.wait(0.25)


def foreign_ticks(server_main=None):
    """CPU ticks (utime+stime+cutime+cstime) of every process that is not ours
    (not this runner or its descendants, not the server tree), as
    (normal priority, niced). Same method as the shared harness (/proc/stat
    under-reports CPU in this VM), with one refinement: processes at nice >= 10
    (other sessions' fuzzers) are counted apart, since the scheduler gives them
    ~1.5 % of a CPU against a runnable process of ours; they only use idle time."""
    me = os.getpid()
    info = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        info[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]), int(f[16]))

    def ours(pid):
        seen = 0
        while pid > 1 and seen < 64:
            if pid == me or (server_main and pid == server_main):
                return True
            pid = info.get(pid, (0, 0, 0))[0]
            seen += 1
        return False
    normal = niced = 0
    for pid, (pp, t, nice) in info.items():
        if ours(pid):
            continue
        if nice >= 10:
            niced += t
        else:
            normal += t
    return normal, niced


def steal_ticks():
    """Ticks the hypervisor gave this VM's CPUs to others (the `steal` column
    of /proc/stat, all CPUs): while it grows, every process here runs slower,
    ours and Kamailio's alike, and latency tails grow. Printed per run as
    `steal=` (seconds over the run, summed over CPUs)."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8])
    except (OSError, IndexError, ValueError):
        return 0


def stolen(steal_s, wall_s):
    """A run the host slowed: steal above 10 % of the CPUs' time over it."""
    return steal_s > 0.10 * (os.cpu_count() or 1) * wall_s


def steal_line(runs):
    """The tables' last line: how much CPU time the host took during the runs."""
    steals = [r["steal_s"] / ((os.cpu_count() or 1) * r["wall_s"]) for r in runs if "steal_s" in r and r.get("wall_s")]
    if not steals:
        return None
    return (f"CPU time taken by the hypervisor (steal, /proc/stat) during the runs: median "
            f"{statistics.median(steals) * 100:.1f} %, highest {max(steals) * 100:.1f} % of the CPUs' time; runs above 10 %: "
            f"{sum(x > 0.10 for x in steals)} of {len(steals)} (marked STOLEN in the log: the host gave this VM "
            f"less CPU than it asked for, which slows both servers and lengthens latency tails).")


def wait_quiet(max_wait, limit_s=0.10):
    """Wait (bounded) until other sessions' processes use < limit_s CPU-seconds per second."""
    t0 = time.time()
    while True:
        f0 = foreign_ticks()[0]
        time.sleep(1.0)
        used = (foreign_ticks()[0] - f0) / HZ
        if used < limit_s or time.time() - t0 > max_wait:
            return round(used, 3), round(time.time() - t0, 1)
        time.sleep(2.0)


def wait_ports(proc, timeout=15, evapi=True):
    """Until the server listens on SIP_PORT (and EVAPI_PORT unless evapi is False)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        u = sh(["ss", "-Huln", f"sport = :{SIP_PORT}"]).stdout.strip()
        t = sh(["ss", "-Htln", f"sport = :{EVAPI_PORT}"]).stdout.strip() if evapi else True
        if u and t:
            return True
        time.sleep(0.1)
    return False


def established(n, timeout=10):
    t0 = time.time()
    while time.time() - t0 < timeout:
        out = sh(["ss", "-Htn", "state", "established", f"( sport = :{EVAPI_PORT} )"]).stdout
        if len(out.strip().splitlines()) >= n:
            return True
        time.sleep(0.05)
    return False


def stop_proc(p, grace=15):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            print(f"  pid {p.pid} still alive after SIGTERM, sending KILL", flush=True)
            p.kill()
            p.wait(5)


def reap(p, timeout):
    """Read a client's stdout and reap it with wait4 (its CPU time is returned)."""
    out = ""
    t0 = time.time()
    if p.stdout:
        # the clients exit on their own (idle / max timers); bounded wait
        def rd():
            nonlocal out
            out = p.stdout.read()
        th = threading.Thread(target=rd, daemon=True)
        th.start()
        th.join(timeout)
        if th.is_alive():
            p.terminate()
            th.join(5)
    left = max(1.0, timeout - (time.time() - t0))
    deadline = time.time() + left
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return out, ru.ru_utime + ru.ru_stime
        if time.time() > deadline:
            p.kill()
            deadline = time.time() + 5
        time.sleep(0.02)


# ---------------------------------------------------------------- servers


def kam_buffer_args(a):
    """Kamailio's maxbuffer for the anchor cfg's modes: --udp-buffer, unless
    a --kam-arg already names KAM_MAXBUFFER."""
    if not a.udp_buffer or any("KAM_MAXBUFFER" in x for x in (a.kam_arg or [])):
        return []
    return ["-A", f"KAM_MAXBUFFER={a.udp_buffer}"]


class Kamailio:
    name = "kamailio"

    def __init__(self, a):
        self.a = a
        self.cfg = os.path.join(HERE, "kamailio", "kamailio.cfg")
        # short directories made for one run's sockets, removed by stop()
        self.tmpdirs = []

    def version(self):
        return sh(["kamailio", "-v"]).stdout.splitlines()[0].strip()

    def start(self, mode, rdir, clients_max):
        if mode == "basic":
            return self.start_basic(rdir)
        if mode in ("dialog", "dialog_off"):
            return self.start_dialog(rdir, mode == "dialog")
        defs = {"relay": "MODE_RELAY", "base": "MODE_BASE", "async": "MODE_ASYNC",
                "fanout": "MODE_FANOUT"}[mode]
        shm = self.a.kam_shm if mode == "async" else 256
        args = ["kamailio", "-f", self.cfg, "-DD", "-E", "-m", str(shm), "-M", "16",
                "-Y", rdir, "-w", rdir, "-l", f"udp:127.0.0.1:{SIP_PORT}",
                "-A", f'EVAPI_BIND="127.0.0.1:{EVAPI_PORT}"', "-A", "DBGLEVEL=1",
                "-A", f"CHILDREN={self.a.children}", "-A", defs,
                "-A", f"EVAPI_WORKERS={self.a.workers}",
                "-A", f"EVAPI_MAX_CLIENTS={max(8, clients_max)}"] + kam_buffer_args(self.a) + (self.a.kam_arg or [])
        self.log = open(os.path.join(rdir, "server.log"), "w")
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, cwd=rdir)
        if not wait_ports(self.p):
            stop_proc(self.p)
            raise RuntimeError(f"kamailio did not start, see {rdir}/server.log")
        out = sh(["ss", "-Htlnp", f"sport = :{EVAPI_PORT}"]).stdout
        m = re.search(r"pid=(\d+)", out)
        self.dispatcher = int(m.group(1)) if m else None
        return self.p.pid

    def start_basic(self, rdir):
        """Kamailio's example cfg + KEMI Lua script (bench/basic.py writes the copy)."""
        cfg = os.path.join(rdir, "kamailio-basic-kemi.cfg")
        open(cfg, "w").write(basic.kamailio_cfg(SIP_PORT, self.a.children, self.a.basic_kam_debug,
                                                 self.a.basic_kam_maxbuffer or self.a.udp_buffer))
        ok, out = basic.check_cfg(cfg)
        open(os.path.join(rdir, "check.log"), "w").write(out)
        if not ok:
            raise RuntimeError(f"kamailio -c -f {cfg} failed, see {rdir}/check.log")
        # shared memory as for async (--kam-shm): at 2000 calls/s, 256 MB runs out (each
        # INVITE and BYE transaction lives 5 s more, wait_timer)
        # The example cfg loads jsonrpcs, whose datagram socket goes into
        # the runtime directory (-Y), and Kamailio refuses a socket path
        # over 104 bytes ("socket path is too long"): a run directory under
        # a long --out makes one, so the runtime directory is a short one.
        run = tempfile.mkdtemp(prefix="krun-")
        self.tmpdirs.append(run)
        args = ["kamailio", "-f", cfg, "-DD", "-m", str(self.a.kam_shm), "-M", "16", "-Y", run, "-w", rdir]
        self.log = open(os.path.join(rdir, "server.log"), "w")
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, cwd=rdir)
        if not wait_ports(self.p, evapi=False):
            stop_proc(self.p)
            raise RuntimeError(f"kamailio did not start, see {rdir}/server.log")
        self.dispatcher = None
        return self.p.pid

    def start_dialog(self, rdir, dialogs):
        """The dialog row's cfg (bench/dialog.py writes it), checked with kamailio -c."""
        cfg, self.ctl = dialog.kamailio_cfg(rdir, SIP_PORT, self.a.children, SIPP_PORT + 300, dialogs,
                                            self.a.dialog_kam_script, self.a.udp_buffer)
        self.tmpdirs.append(os.path.dirname(self.ctl))
        ok, out = basic.check_cfg(cfg)
        open(os.path.join(rdir, "check.log"), "w").write(out)
        if not ok:
            raise RuntimeError(f"kamailio -c -f {cfg} failed, see {rdir}/check.log")
        args = ["kamailio", "-f", cfg, "-DD", "-m", str(self.a.kam_shm), "-M", "16", "-Y", rdir, "-w", rdir]
        self.log = open(os.path.join(rdir, "server.log"), "w")
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, cwd=rdir)
        if not wait_ports(self.p, evapi=False):
            stop_proc(self.p)
            raise RuntimeError(f"kamailio did not start, see {rdir}/server.log")
        self.dispatcher = None
        return self.p.pid

    def dialogs_active(self):
        """Kamailio's dlg.stats_active through kamcmd and the ctl socket ({} on failure)."""
        out = sh(["kamcmd", "-s", f"unix:{self.ctl}", "dlg.stats_active"], timeout=20).stdout
        return {k: int(v) for k, v in re.findall(r"(\w+):\s*(\d+)", out)}

    def extra_cpu(self):
        return {"dispatcher": cpu_ticks([self.dispatcher])} if self.dispatcher else {}

    def extra_wakeups(self):
        return {}

    def stop(self):
        stop_proc(self.p)
        self.log.close()
        for d in self.tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        self.tmpdirs = []


class Evapi:
    name = "evapi"

    def __init__(self, a):
        self.a = a
        self.bin = a.evapi_bin

    def version(self):
        # The binary's own word (`evapi 0.1.0 (commit X)`), not the checkout's:
        # --evapi-bin may be another build; older binaries name no commit.
        v = sh([self.bin, "--version"]).stdout.strip()
        return v if "commit" in v else f"{v} (no commit recorded; {os.path.basename(self.bin)})"

    def start(self, mode, rdir, clients_max):
        tpl = open(os.path.join(HERE, "evapi", "bench.toml.in")).read()
        if mode == "basic":
            conf = basic.evapi_conf(SIP_PORT, EVAPI_PORT, self.a.children)
        elif mode in ("dialog", "dialog_off"):
            conf = dialog.evapi_conf(rdir, SIP_PORT, EVAPI_PORT, self.a.children, SIPP_PORT + 300,
                                     mode == "dialog")
        else:
            conf = (tpl.replace("@SIP_PORT@", str(SIP_PORT)).replace("@EVAPI_PORT@", str(EVAPI_PORT))
                    .replace("@CHILDREN@", str(self.a.children))
                    .replace("@EVAPI_WORKERS@", str(self.a.evapi_workers))
                    .replace("@EVAPI_MAX_CLIENTS@", str(max(8, clients_max)))
                    .replace("@SCRIPT@", os.path.join(HERE, "evapi", mode + ".lua"))
                    .replace("@EVAPI_EXTRA@", FANOUT_EVAPI if mode == "fanout" else ""))
        if self.a.udp_buffer:
            # the same UDP receive buffer as Kamailio's maxbuffer (--udp-buffer)
            conf, n = re.subn(r"(?m)^(children = \d+)$", rf"\1\nudp_recv_buffer = {self.a.udp_buffer}", conf, count=1)
            assert n == 1, "no [sip] children line to put udp_recv_buffer after"
        conf += http_section(self.a.evapi_http)
        path = os.path.join(rdir, "evapi.toml")
        open(path, "w").write(conf)
        self.log = open(os.path.join(rdir, "server.log"), "w")
        self.p = subprocess.Popen([self.bin, "run", "-c", path], stdout=subprocess.DEVNULL,
                                  stderr=self.log, cwd=rdir)
        if not wait_ports(self.p):
            stop_proc(self.p)
            raise RuntimeError(f"evapi did not start, see {rdir}/server.log")
        self.scraper = None
        if self.a.evapi_http == "on" and self.a.scrape > 0:
            self.scraper = Scraper(f"http://127.0.0.1:{HTTP_PORT}/metrics", self.a.scrape)
        return self.p.pid

    def dialogs_active(self):
        """dlg.stats_active over our admin HTTP listener ({} without it)."""
        if self.a.evapi_http != "on":
            return {}
        import urllib.request
        body = json.dumps({"jsonrpc": "2.0", "method": "dlg.stats_active", "id": 1}).encode()
        try:
            r = urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/RPC", body, timeout=20).read()
            return json.loads(r).get("result", {})
        except (OSError, ValueError):
            return {}

    def extra_cpu(self):
        return thread_ticks(self.p.pid)

    def extra_wakeups(self):
        return thread_ticks(self.p.pid, "voluntary_ctxt_switches")

    def stop(self):
        if self.scraper:
            self.scraper.stop()
        stop_proc(self.p)
        self.log.close()


def http_section(mode):
    """Our [http] section: `on` on HTTP_PORT, `off` (enabled = false), or
    `none` (no section: for a binary from before the HTTP listener)."""
    if mode == "on":
        return f'\n[http]\nlisten = "127.0.0.1:{HTTP_PORT}"\n'
    if mode == "off":
        return "\n[http]\nenabled = false\n"
    return ""


class Scraper:
    """GET /metrics every `every` seconds in a thread, as Prometheus
    would, while a run lasts; the count of scrapes and failures goes to
    stderr at the end."""

    def __init__(self, url, every):
        import threading
        self.url, self.every = url, every
        self.done = threading.Event()
        self.ok = self.failed = 0
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        import urllib.request
        while not self.done.wait(self.every):
            try:
                urllib.request.urlopen(self.url, timeout=5).read()
                self.ok += 1
            except OSError:
                self.failed += 1

    def stop(self):
        self.done.set()
        self.t.join(10)
        print(f"  /metrics scraped {self.ok} times ({self.failed} failed)", file=sys.stderr)


# ---------------------------------------------------------------- runs


def parse_stat(path):
    rows = list(csv.reader(open(path), delimiter=";"))
    hdr, last = rows[0], rows[-1]
    d = dict(zip(hdr, last))

    def epoch(v):  # "YYYY-MM-DD\tHH:MM:SS.usec\tEPOCH.usec"
        return float(v.split("\t")[-1])
    return {
        "successful": int(d["SuccessfulCall(C)"]),
        "failed": int(d["FailedCall(C)"]),
        "created": int(d["TotalCallCreated"]),
        "retrans": int(d["Retransmissions(C)"]),
        "dead_msgs": int(d["DeadCallMsgs(C)"]),
        "unexpected": int(d["FailedUnexpectedMessage(C)"]),
        "timeouts": int(d["FailedTimeoutOnRecv(C)"]),
        "elapsed_s": round(epoch(d["CurrentTime"]) - epoch(d["StartTime"]), 3),
    }


def parse_rtt(dirpath):
    vals = []
    for f in glob.glob(os.path.join(dirpath, "*_rtt.csv")):
        for row in csv.reader(open(f), delimiter=";"):
            if len(row) >= 2:
                try:
                    vals.append(float(row[1]))
                except ValueError:
                    pass
        os.remove(f)
    if not vals:
        return None
    vals.sort()

    def pct(p):
        return vals[min(len(vals) - 1, int(p / 100.0 * len(vals)))]
    return {"n": len(vals), "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "max_ms": vals[-1]}


def c_tool(name):
    """bench/build/NAME, compiled from bench/common/NAME.c when missing or
    older than its source."""
    src = os.path.join(COMMON, name + ".c")
    exe = os.path.join(HERE, "build", name)
    if not os.path.exists(exe) or os.path.getmtime(src) > os.path.getmtime(exe):
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", exe, src], check=True)
    return exe


def parse_client(o):
    d = {"name": o.split()[0] if o else "?"}
    for kv in o.split()[1:]:
        if "=" in kv:
            k, v = kv.split("=", 1)
            d[k] = float(v) if "." in v else int(v)
    return d


def send_fanout_trigger(count, timeout):
    """One MESSAGE with X-Count: count; waits for the final reply (no retransmission)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", SIPP_PORT))
    s.settimeout(timeout)
    msg = (f"MESSAGE sip:fanout@127.0.0.1:{SIP_PORT} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{SIPP_PORT};branch=z9hG4bK-fanout-{time.time_ns()}\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=f1\r\nTo: <sip:fanout@127.0.0.1>\r\n"
           f"Call-ID: fanout-{time.time_ns()}\r\nCSeq: 1 MESSAGE\r\nX-Count: {count}\r\n"
           "Content-Length: 0\r\n\r\n")
    t0 = time.time()
    s.sendto(msg.encode(), ("127.0.0.1", SIP_PORT))
    code = None
    try:
        while True:
            data, _ = s.recvfrom(65535)
            c = int(data.split(b" ", 2)[1])
            if c >= 200:
                code = c
                break
    except (socket.timeout, ValueError, IndexError):
        pass
    s.close()
    return code, time.time() - t0


class Runner:
    def __init__(self, a, outdir):
        self.a = a
        self.outdir = outdir
        self.jsonl = open(os.path.join(outdir, "runs.jsonl"), "a")

    def record(self, res):
        self.jsonl.write(json.dumps(res) + "\n")
        self.jsonl.flush()

    def run_once(self, server, kind, rate, clients, tag, attempt=0):
        """kind: base | relay | async | probe | fanout | basic. rate: target calls/s (fanout: frames per client)."""
        a = self.a
        name = f"{server.name}_{tag}_r{rate}_{int(time.time())}"
        rdir = os.path.join(self.outdir, "run", name)
        os.makedirs(rdir, exist_ok=True)
        if port_busy():
            raise RuntimeError(f"port {SIP_PORT}/udp or {EVAPI_PORT}/tcp already in use")
        quiet_busy, quiet_wait = wait_quiet(a.quiet_wait)
        load0 = open("/proc/loadavg").read().split()[0]
        mode = {"base": "base", "relay": "relay", "async": "async", "probe": "async",
                "fanout": "fanout", "basic": "basic", "dialog": "dialog"}[kind]
        main = server.start(mode, rdir, clients)
        clist = []
        uas = None
        uas_port = SIPP_PORT + 300
        res = {}
        perf = None
        try:
            if kind == "basic":
                # bob registers (contact: the UAS), then the UAS waits for the calls
                basic.register(rdir, SIP_PORT, SIPP_PORT, uas_port, a.basic_register)
                uas = basic.start_uas(rdir, int(rate * a.duration), a.duration, uas_port)
            elif kind == "dialog":
                # the callee the script relays to (no registration: the R-URI is rewritten)
                uas = basic.start_uas(rdir, int(rate * a.duration), a.duration, uas_port)
            for i in range(clients):
                if kind in ("relay", "fanout"):
                    cmd = [c_tool("counter"), "-p", str(EVAPI_PORT), "-i", "2",
                           "-t", str(a.duration + 120), "-n", f"c{i}"]
                elif a.tools == "c":
                    cmd = [c_tool("responder"), "-p", str(EVAPI_PORT), "-i", "2",
                           "-t", str(a.duration + 90), "-n", f"resp{i}"]
                else:
                    cmd = [sys.executable, os.path.join(COMMON, "responder.py"), "--port", str(EVAPI_PORT),
                           "--idle", "2", "--max-seconds", str(a.duration + 90), "--name", f"resp{i}"]
                clist.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                              text=True))
            if clients and not established(clients):
                raise RuntimeError("clients did not connect")
            time.sleep(0.3)
            sampler = Sampler(main, a.duration * 3 + 200)
            sampler.start()
            pids0 = list(proc_tree(main))
            cpu0 = cpu_ticks(pids0)
            ns0 = task_ns(pids0)
            wk0 = wakeups(pids0)
            x0 = server.extra_cpu()
            xw0 = server.extra_wakeups()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            fz0 = foreign_ticks(main)
            sz0 = steal_ticks()
            ue0 = udp_errors()
            t0 = time.time()
            gen_cpu = 0.0
            perf = perf_breakdown.start(pids0, rdir) if a.perf else None
            if kind == "fanout":
                code, took = send_fanout_trigger(rate, a.duration * 3 + 300)
                st = {"trigger_code": code, "trigger_s": round(took, 3)}
                ncalls = rate
            else:
                ncalls = int(rate * a.duration)
                if kind == "probe" and a.tools == "c":
                    cmd = [c_tool("probe"), "-r", str(rate), "-c", str(ncalls), "-p", str(SIP_PORT),
                           "-l", str(SIPP_PORT), "-t", "5"]
                elif kind == "probe":
                    cmd = [sys.executable, os.path.join(COMMON, "async_probe.py"), "--rate", str(rate),
                           "--count", str(ncalls), "--port", str(SIP_PORT), "--local-port", str(SIPP_PORT),
                           "--timeout", "5"]
                elif kind in ("basic", "dialog"):
                    cmd = basic.uac_cmd(rate, ncalls, a.duration, SIP_PORT, SIPP_PORT)
                else:
                    scen = os.path.join(COMMON, "uac_invite.xml" if kind == "async" else "uac_options.xml")
                    cmd = ["sipp", "-sf", scen, "-r", str(rate), "-rp", "1000", "-m", str(ncalls),
                           "-l", "30000", "-i", "127.0.0.1", "-p", str(SIPP_PORT), f"127.0.0.1:{SIP_PORT}",
                           "-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_rtt",
                           "-rtt_freq", "1", "-cp", str(SIPP_PORT + 100), "-mp", str(SIPP_PORT + 200),
                           "-buff_size", "4194304", "-timeout", f"{a.duration + 40}s", "-timeout_error"]
                gp = subprocess.Popen(cmd, cwd=rdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                gout, gen_cpu = reap(gp, a.duration * 3 + 60)
                open(os.path.join(rdir, "generator.out"), "w").write(gout)
                gerr = gp.stderr.read() if gp.stderr else ""
                open(os.path.join(rdir, "generator.err"), "w").write(gerr)
                if kind == "probe":
                    open(os.path.join(rdir, "probe.json"), "w").write(gout)
                if uas is not None:
                    # the UAS ends by itself after its last BYE (bounded: killed past 30 s)
                    _, uas_cpu = reap(uas, 30)
                    uas = None
                    gen_cpu += uas_cpu
            wall = time.time() - t0
            if perf:
                perf_breakdown.stop(perf)
            ue1 = udp_errors()
            fz1 = foreign_ticks(main)
            sz1 = steal_ticks()
            cpu1 = cpu_ticks(pids0)
            ns1 = task_ns(pids0)
            wk1 = wakeups(pids0)
            x1 = server.extra_cpu()
            xw1 = server.extra_wakeups()
            outs = []
            for c in clist:
                out, _ = reap(c, 30)
                outs.append(out.strip())
            clist = []
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            sampler.stop_ev.set()
            sampler.join(2)
        finally:
            if perf:
                perf_breakdown.stop(perf)  # no-op when already stopped
            if uas is not None:
                stop_proc(uas, 5)
            for c in clist:
                c.terminate()
                try:
                    c.wait(5)
                except subprocess.TimeoutExpired:
                    c.kill()
            server.stop()
        children_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        cl = [parse_client(o) for o in outs]
        rtt = None
        if kind == "probe":
            pj = json.loads(gout.strip().splitlines()[-1])
            st = {"successful": pj["answered"], "failed": pj["lost"], "created": pj["sent"], "retrans": 0,
                  "codes": pj["codes"], "elapsed_s": pj["send_s"]}
            rtt = {k: pj[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")}
        elif kind != "fanout":
            try:
                st = parse_stat(os.path.join(rdir, "stat.csv"))
            except (OSError, IndexError, KeyError, ValueError):
                st = {"created": 0}
            if not st.get("created"):
                # the load generator did not run (a port taken by someone else?): not a result
                msg = f"{server.name} {tag} rate={rate}: SIPp did not run, see {rdir}/generator.err"
                if attempt < 1:
                    print(f"  {msg}; once more in 5 s", flush=True)
                    time.sleep(5)
                    return self.run_once(server, kind, rate, clients, tag, attempt + 1)
                raise RuntimeError(msg)
            rtt = parse_rtt(rdir)
            if kind in ("basic", "dialog"):
                try:
                    st["uas"] = parse_stat(os.path.join(rdir, "uas_stat.csv"))
                except (OSError, IndexError, KeyError, ValueError):
                    st["uas"] = {}
        served = st.get("successful", 0) if kind != "fanout" else rate
        res = {
            "server": server.name, "tag": tag, "kind": kind, "rate": rate, "clients": clients,
            "duration": a.duration, "load1_before": load0, "gen": st, "rtt": rtt, "client_out": cl,
            "pss_max_kb": sampler.max_pss, "rss_max_kb": sampler.max_rss,
            "rss_max_proc_kb": max(sampler.max_per_pid.values()) if sampler.max_per_pid else 0,
            "nprocs": len(sampler.pids),
            "server_cpu_ticks_s": round((cpu1 - cpu0) / HZ, 2),
            "server_cpu_parts_s": {k: round((x1.get(k, 0) - v) / HZ, 2) for k, v in x0.items()},
            "gen_cpu_s": round(gen_cpu, 2), "clients_cpu_s": round(children_cpu - gen_cpu, 2),
            "udp_rcvbuf_errors": ue1[0] - ue0[0], "udp_in_errors": ue1[1] - ue0[1],
            "wall_s": round(wall, 2), "quiet_wait_s": quiet_wait, "busy_before": quiet_busy,
        }
        # CPU time: exact from schedstat when every thread lived through the
        # run, else the tick count (both recorded).
        exact = cpu_s_exact(ns0, ns1)
        res["server_cpu_source"] = "schedstat" if exact is not None else "ticks"
        res["server_cpu_s"] = round(exact, 4) if exact is not None else res["server_cpu_ticks_s"]
        if perf:
            res["perf"] = perf_breakdown.breakdown(rdir, served)
            print(perf_breakdown.table(res["perf"]), flush=True)
        foreign = (fz1[0] - fz0[0]) / HZ
        res["foreign_cpu_s"] = round(foreign, 2)
        res["foreign_niced_cpu_s"] = round((fz1[1] - fz0[1]) / HZ, 2)
        res["steal_s"] = round((sz1 - sz0) / HZ, 2)
        res["contaminated"] = foreign > 0.10 * wall
        if kind == "fanout":
            frames = [c.get("frames", 0) for c in cl]
            firsts = [c["first_s"] for c in cl if c.get("first_s")]
            lasts = [c["last_s"] for c in cl if c.get("last_s")]
            span = (max(lasts) - min(firsts)) if firsts and lasts else 0
            res["frames_total"] = sum(frames)
            res["frames_per_s_total"] = round(sum(frames) / span, 1) if span > 0 else 0
            res["frames_per_s_client_median"] = statistics.median([c.get("rate", 0) for c in cl]) if cl else 0
            ok = st["trigger_code"] == 200 and all(f == rate for f in frames) and \
                all(c.get("bad") == 0 for c in cl)
            achieved = res["frames_per_s_total"]
        else:
            achieved = served / st["elapsed_s"] if st["elapsed_s"] else 0
            ok = (st["failed"] == 0 and st["retrans"] == 0 and st["successful"] == ncalls
                  and achieved >= 0.95 * rate)
            if kind == "relay":
                ok = ok and all(c.get("frames") == st["successful"] and c.get("bad") == 0 for c in cl)
            if kind in ("async", "probe"):
                ok = ok and all(c.get("bad") == 0 and c.get("events") == st["successful"] for c in cl)
            if kind == "probe":
                ok = ok and set(st["codes"]) == {"404"}
            if kind in ("basic", "dialog"):
                # the callee too: every call answered, nothing retransmitted (a lost ACK
                # would make it resend its 200)
                u = st["uas"]
                ok = ok and u.get("successful") == ncalls and u.get("failed") == 0 and u.get("retrans") == 0
        res["achieved"] = round(achieved, 1)
        res["server_cpu_us_per_req"] = round(res["server_cpu_s"] * 1e6 / served, 1) if served else None
        res["gen_cpu_us_per_req"] = round(res["gen_cpu_s"] * 1e6 / served, 1) if served else None
        res["server_wakeups_per_req"] = round((wk1 - wk0) / served, 2) if served else None
        res["server_wakeups_parts_per_req"] = (
            {k: round((xw1.get(k, 0) - v) / served, 2) for k, v in xw0.items()} if served else {})
        res["pass"] = bool(ok)
        res["attempt"] = attempt
        was_stolen = stolen(res["steal_s"], res["wall_s"])
        # A run another session's CPU spoiled is redone; so is one the host
        # slowed, when that failed it (a rate passed under steal passed) or
        # when it measured latency. The redone one is left out of the
        # tables (kept in runs.jsonl).
        redo = ((res["contaminated"] and attempt < a.retries)
                or (was_stolen and (not ok or kind == "probe") and attempt < a.steal_retries))
        res["redone"] = redo
        self.record(res)
        cs = " ".join(f"{c.get('name')}:{c.get('frames', c.get('events'))}bad={c.get('bad')}" for c in cl[:8])
        if len(cl) > 8:
            cs += f" ...({len(cl)} clients)"
        rt = (f" rtt p50={rtt['p50_ms']:.2f} p99={rtt['p99_ms']:.2f} max={rtt['max_ms']:.1f}ms" if rtt else "")
        if kind == "fanout":
            head = f"frames/client={rate} total={res['frames_total']} {res['frames_per_s_total']:.0f} frames/s"
        else:
            head = (f"ok={st['successful']}/{ncalls} failed={st['failed']} retrans={st['retrans']} "
                    f"achieved={achieved:.0f}/s")
        print(f"  {server.name:8} {tag:8} rate={rate:<6} {'PASS' if ok else 'FAIL'} {head}{rt} "
              f"[{cs}] pss={sampler.max_pss}kB cpu={res['server_cpu_s']}s{'' if res['server_cpu_source'] == 'schedstat' else ' (ticks)'} "
              f"({res['server_cpu_us_per_req']} us/req, {res['server_wakeups_per_req']} wake-ups/req; "
              f"gen {res['gen_cpu_us_per_req']} us/req) "
              f"udp_drops={res['udp_rcvbuf_errors']} foreign={res['foreign_cpu_s']}s niced={res['foreign_niced_cpu_s']}s steal={res['steal_s']}s"
              f"{' STOLEN' if was_stolen else ''}"
              f"{' CONTAMINATED' if res['contaminated'] else ''}",
              flush=True)
        if redo:
            if was_stolen:
                print(f"  (stolen run: once more after {a.steal_pause:g} s)", flush=True)
                time.sleep(a.steal_pause)
            return self.run_once(server, kind, rate, clients, tag, attempt + 1)
        return res

    def hold(self, server, dialogs, attempt=0):
        """Memory per live dialog (bench/dialog.py): PSS idle, then with N calls held up
        at once (N = --dialog-hold, started at --dialog-hold-rate, each held between ACK
        and BYE long enough for every INVITE transaction to have left the table), then
        the calls end. dialogs=False runs the same script without dlg_manage."""
        a = self.a
        n, rate = a.dialog_hold, a.dialog_hold_rate
        ramp = n / rate
        # after the last INVITE: its transaction's 5 s wait, and margin; then sample
        settle = ramp + 5 + 4
        sample_s = 4.0
        hold_ms = int((settle + sample_s + 2) * 1000)
        tag = "dlghold" if dialogs else "dlghold_off"
        name = f"{server.name}_{tag}_n{n}_{int(time.time())}"
        rdir = os.path.join(self.outdir, "run", name)
        os.makedirs(rdir, exist_ok=True)
        if port_busy():
            raise RuntimeError(f"port {SIP_PORT}/udp or {EVAPI_PORT}/tcp already in use")
        quiet_busy, quiet_wait = wait_quiet(a.quiet_wait)
        main = server.start("dialog" if dialogs else "dialog_off", rdir, 0)
        uas = gp = None
        timeout_s = int(ramp + hold_ms / 1000 + ramp + 60)
        try:
            uas = basic.start_uas(rdir, n, timeout_s, SIPP_PORT + 300)
            time.sleep(1.0)

            def pss_samples(secs):
                vals = []
                t_end = time.time() + secs
                while time.time() < t_end:
                    vals.append(sum(v[1] for v in proc_tree(main).values()))
                    time.sleep(0.25)
                return vals
            idle = pss_samples(2.0)
            fz0 = foreign_ticks(main)
            t0 = time.time()
            gp = subprocess.Popen(dialog.hold_uac_cmd(rate, n, hold_ms, timeout_s, SIP_PORT, SIPP_PORT),
                                  cwd=rdir, stdout=subprocess.DEVNULL, stderr=open(os.path.join(rdir, "generator.err"), "w"))
            time.sleep(max(0.0, settle - (time.time() - t0)))
            active = server.dialogs_active() if dialogs else {}
            live = pss_samples(sample_s)
            active_after = server.dialogs_active() if dialogs else {}
            in_hold = time.time() - t0 < hold_ms / 1000
            fz1 = foreign_ticks(main)
            wall = time.time() - t0
            _, gen_cpu = reap(gp, timeout_s + 30)
            gp = None
            _, _ = reap(uas, 60)
            uas = None
        finally:
            for p in (gp, uas):
                if p is not None:
                    stop_proc(p, 5)
            server.stop()
        try:
            st = parse_stat(os.path.join(rdir, "stat.csv"))
        except (OSError, IndexError, KeyError, ValueError):
            st = {"created": 0, "successful": 0, "failed": -1}
        try:
            st["uas"] = parse_stat(os.path.join(rdir, "uas_stat.csv"))
        except (OSError, IndexError, KeyError, ValueError):
            st["uas"] = {}
        pss_idle, pss_live = statistics.median(idle), statistics.median(live)
        ok = (st.get("successful") == n and st.get("failed") == 0 and st["uas"].get("successful") == n
              and in_hold and (not dialogs or active.get("all") == n))
        foreign = (fz1[0] - fz0[0]) / HZ
        res = {"server": server.name, "tag": tag, "kind": "hold", "dialogs": dialogs, "n": n, "rate": rate,
               "hold_ms": hold_ms, "gen": st, "pss_idle_kb": pss_idle, "pss_live_kb": pss_live,
               "pss_live_samples": live, "active": active, "active_after": active_after,
               "kb_per_dialog": round((pss_live - pss_idle) / n, 3), "pass": bool(ok),
               "gen_cpu_s": round(gen_cpu, 2), "wall_s": round(wall, 2), "quiet_wait_s": quiet_wait,
               "busy_before": quiet_busy, "foreign_cpu_s": round(foreign, 2),
               "contaminated": foreign > 0.10 * wall, "attempt": attempt}
        self.record(res)
        print(f"  {server.name:8} {tag:11} n={n} rate={rate} {'PASS' if ok else 'FAIL'} "
              f"ok={st.get('successful')}/{n} uas={st['uas'].get('successful')} active={active.get('all')} "
              f"pss idle={pss_idle:.0f}kB live={pss_live:.0f}kB -> {res['kb_per_dialog'] * 1024:.0f} B/dialog "
              f"foreign={res['foreign_cpu_s']}s{' CONTAMINATED' if res['contaminated'] else ''}", flush=True)
        if res["contaminated"] and attempt < a.retries:
            return self.hold(server, dialogs, attempt + 1)
        return res

    def ladder(self, servers, kind, rates, clients, tag):
        """Ascending rates for every server, interleaved: at each rate every
        server still climbing runs once before the next rate, so the servers'
        runs at one rate are seconds apart, not the length of a whole ladder
        (this host's speed drifts by tens of percent over minutes). With
        `--rounds N` each rate is run N times in turns (K, e, K, e, ...), and
        a server passes it when more than half of its runs did. A server
        stops climbing at its first failing rate; then each server's best is
        repeated, again in turns. Returns the runs."""
        runs, best, climbing = [], {}, list(servers)
        for r in rates:
            passed = {s.name: 0 for s in climbing}
            broken = set()
            for _ in range(self.a.rounds):
                for server in climbing:
                    if server.name in broken:
                        continue
                    print(f"-- {tag} / {server.name} / {r}", flush=True)
                    try:
                        res = self.run_once(server, kind, r, clients, tag)
                    except RuntimeError as e:
                        # This server could not run (e.g. did not start): it
                        # stops climbing; the other goes on.
                        print(f"  {server.name} {tag}: ERROR {e}", flush=True)
                        broken.add(server.name)
                        continue
                    runs.append(res)
                    passed[server.name] += bool(res["pass"])
            for server in list(climbing):
                if server.name not in broken and 2 * passed[server.name] > self.a.rounds:
                    best[server.name] = r
                else:
                    climbing.remove(server)
            if not climbing:
                break
        for _ in range(self.a.repeat):
            for server in servers:
                if server.name in best:
                    try:
                        runs.append(self.run_once(server, kind, best[server.name], clients, tag))
                    except RuntimeError as e:
                        print(f"  {server.name} {tag}: ERROR {e}", flush=True)
        return runs


# ---------------------------------------------------------------- summary


def med(v):
    return statistics.median(v) if v else None


def fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, float) and nd:
        return f"{v:,.{nd}f}"
    return f"{v:,.0f}"


def ratio(ours, theirs, inverse=False):
    if not ours or not theirs:
        return "–"
    r = theirs / ours if inverse else ours / theirs
    return f"{r:.2f}×"


def summarize(all_runs, meta, outdir):
    S = {"meta": meta, "figures": {}}
    by = {}
    for r in all_runs:
        if not r.get("redone"):
            by.setdefault((r["tag"], r["server"]), []).append(r)
    lines = []
    out = lines.append
    out(f"Run {meta['stamp']} on {meta['machine']}; {meta['kamailio']} vs {meta['evapi']}; "
        f"duration {meta['duration']} s per run, repeats {meta['repeat']}.")
    out("")
    # rate figures
    out("| figure | Kamailio highest passing rate (runs passed) | evapi highest passing rate (runs passed) | ratio | "
        "Kamailio CPU µs/req | evapi CPU µs/req | SIPp CPU µs/req (K / e) | next rate up, Kamailio | next rate up, evapi |")
    out("|---|---|---|---|---|---|---|---|---|")
    for tag, label in [("base", "(1) stateless baseline, no evapi"), ("relay1", "(2) relay, 1 client"),
                       ("relay4", "(2) relay, 4 clients"), ("relay8", "(2) relay, 8 clients"),
                       ("async", "(3) async round trip (SIPp)"),
                       ("basic", "(7) Kamailio's basic KEMI Lua script on both (calls/s)"),
                       ("dialog", "(8) dialog tracking, record-route, BYE (calls/s)")]:
        row = {}
        for srv in ("kamailio", "evapi"):
            runs = [r for r in by.get((tag, srv), []) if not r["contaminated"] or True]
            # a rate passes when more than half of its runs (retries of contaminated runs
            # included) passed; the figure is the highest such rate
            rates_ok = sorted({r["rate"] for r in runs
                               if 2 * sum(x["pass"] for x in runs if x["rate"] == r["rate"])
                               > sum(1 for x in runs if x["rate"] == r["rate"])})
            best = rates_ok[-1] if rates_ok else None
            passing = [r for r in runs if r["pass"]]
            atbest = [r for r in passing if r["rate"] == best]
            fails = sorted([r for r in runs if not r["pass"] and (best is None or r["rate"] > best)],
                           key=lambda r: r["rate"])
            nxt = "–"
            if fails:
                f = fails[0]
                g = f["gen"]
                nxt = (f"{f['rate']}: {g.get('successful')}/{int(f['rate'] * f['duration'])} ok, "
                       f"{g.get('failed')} failed, {g.get('retrans')} retrans, {f['achieved']:.0f}/s"
                       + (", contaminated" if f["contaminated"] else ""))
            elif runs and best == max(r["rate"] for r in runs):
                nxt = "not reached (top of the list)"
            allbest = [r for r in runs if r["rate"] == best]
            row[srv] = {"best": best, "runs_at_best": f"{len(atbest)}/{len(allbest)}",
                        "achieved": med([r["achieved"] for r in atbest]),
                        "cpu_us": med([r["server_cpu_us_per_req"] for r in atbest]),
                        "gen_cpu_us": med([r["gen_cpu_us_per_req"] for r in atbest]),
                        "pss_kb": med([r["pss_max_kb"] for r in atbest]),
                        "p99_ms": med([r["rtt"]["p99_ms"] for r in atbest if r.get("rtt")]),
                        "parts": atbest[0]["server_cpu_parts_s"] if atbest else {},
                        "next": nxt}
        S["figures"][tag] = row
        k, e = row["kamailio"], row["evapi"]
        out(f"| {label} | {fmt(k['best'])} ({k['runs_at_best']}) | {fmt(e['best'])} ({e['runs_at_best']}) | "
            f"{ratio(e['best'], k['best'])} | "
            f"{fmt(k['cpu_us'], 1)} | {fmt(e['cpu_us'], 1)} | {fmt(k['gen_cpu_us'], 1)} / {fmt(e['gen_cpu_us'], 1)} | "
            f"{k['next']} | {e['next']} |")
    out("")
    # latency
    out(f"| (4) latency, {'probe.c' if meta.get('tools', 'python') == 'c' else 'async_probe.py'} | Kamailio p50 / p90 / p99 / max ms | evapi p50 / p90 / p99 / max ms | "
        "p99 ratio (K / e) | Kamailio CPU µs/call | evapi CPU µs/call | lost (K / e) |")
    out("|---|---|---|---|---|---|---|")
    S["figures"]["probe"] = {}
    for rate in meta["probe_rates"]:
        row = {}
        for srv in ("kamailio", "evapi"):
            runs = [r for r in by.get(("probe", srv), []) if r["rate"] == rate]
            row[srv] = {k: med([r["rtt"][k] for r in runs if r.get("rtt") and r["rtt"][k] is not None])
                        for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")}
            row[srv]["cpu_us"] = med([r["server_cpu_us_per_req"] for r in runs])
            row[srv]["lost"] = sum(r["gen"]["failed"] for r in runs)
            row[srv]["runs"] = len(runs)
            row[srv]["pss_kb"] = med([r["pss_max_kb"] for r in runs])
        S["figures"]["probe"][rate] = row
        k, e = row["kamailio"], row["evapi"]

        def q(x):
            return " / ".join("–" if x[p] is None else f"{x[p]:.2f}" for p in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        out(f"| {rate} calls/s ({k['runs']} / {e['runs']} runs) | {q(k)} | {q(e)} | "
            f"{ratio(e['p99_ms'], k['p99_ms'], inverse=True)} | {fmt(k['cpu_us'], 1)} | {fmt(e['cpu_us'], 1)} | "
            f"{k['lost']} / {e['lost']} |")
    out("")
    # memory
    out("| (5) memory: peak PSS of all server processes | Kamailio MB | evapi MB | ratio (e / K) |")
    out("|---|---|---|---|")
    mem = {}
    for tag, label in [("base", "baseline at its best rate"), ("relay8", "relay, 8 clients, at its best rate")]:
        k = S["figures"][tag]["kamailio"]["pss_kb"]
        e = S["figures"][tag]["evapi"]["pss_kb"]
        out(f"| {label} | {fmt(k and k / 1024, 1)} | {fmt(e and e / 1024, 1)} | {ratio(k, e, inverse=True) if k and e else '–'} |")
    for srv in ("kamailio", "evapi"):
        for r in by.get(("async", srv), []):
            if r["pass"]:
                mem.setdefault(r["rate"], {}).setdefault(srv, []).append(r["pss_max_kb"])
    S["figures"]["memory_async"] = {}
    for rate in sorted(mem):
        k = med(mem[rate].get("kamailio", []))
        e = med(mem[rate].get("evapi", []))
        S["figures"]["memory_async"][rate] = {"kamailio": k, "evapi": e}
        out(f"| async (SIPp) at {rate} calls/s, passing runs | {fmt(k and k / 1024, 1)} | {fmt(e and e / 1024, 1)} | "
            f"{(f'{e / k:.3f}' if k and e else '–')} |")
    out("")
    # fanout
    out("| (6) fan-out alone (one relaying loop, C counters) | Kamailio frames/s delivered (total) | "
        "evapi frames/s delivered (total) | ratio | Kamailio per client/s | evapi per client/s | pass (K / e) |")
    out("|---|---|---|---|---|---|---|")
    S["figures"]["fanout"] = {}
    for n in meta["fanout_clients"]:
        row = {}
        for srv in ("kamailio", "evapi"):
            runs = by.get((f"fan{n}", srv), [])
            row[srv] = {"total": med([r["frames_per_s_total"] for r in runs if r["pass"]]),
                        "per_client": med([r["frames_per_s_client_median"] for r in runs if r["pass"]]),
                        "pass": f"{sum(r['pass'] for r in runs)}/{len(runs)}",
                        "cpu_us_per_frame": med([r["server_cpu_s"] * 1e6 / max(1, r["frames_total"]) for r in runs if r["pass"]])}
        S["figures"]["fanout"][n] = row
        k, e = row["kamailio"], row["evapi"]
        out(f"| {n} client{'s' if n > 1 else ''} | {fmt(k['total'])} | {fmt(e['total'])} | {ratio(e['total'], k['total'])} | "
            f"{fmt(k['per_client'])} | {fmt(e['per_client'])} | {k['pass']} / {e['pass']} |")
    def per_rate_table(title, kind, key):
        """One row per rate tried of `kind`: passes, CPU per call, PSS."""
        out("")
        out(f"| {title}, each rate | Kamailio pass | evapi pass | Kamailio CPU µs/call | evapi CPU µs/call | "
            "ratio (K / e) | Kamailio PSS MB | evapi PSS MB |")
        out("|---|---|---|---|---|---|---|---|")
        S["figures"][key] = {}
        rates = sorted({r["rate"] for srv in ("kamailio", "evapi") for r in by.get((kind, srv), [])})
        for rate in rates:
            row = {}
            for srv in ("kamailio", "evapi"):
                runs = [r for r in by.get((kind, srv), []) if r["rate"] == rate]
                row[srv] = {"pass": f"{sum(r['pass'] for r in runs)}/{len(runs)}" if runs else "–",
                            "cpu_us": med([r["server_cpu_us_per_req"] for r in runs if r["server_cpu_us_per_req"]]),
                            "pss_kb": med([r["pss_max_kb"] for r in runs])}
            S["figures"][key][rate] = row
            k, e = row["kamailio"], row["evapi"]
            out(f"| {rate} calls/s | {k['pass']} | {e['pass']} | {fmt(k['cpu_us'], 1)} | {fmt(e['cpu_us'], 1)} | "
                f"{ratio(e['cpu_us'], k['cpu_us'], inverse=True)} | {fmt(k['pss_kb'] and k['pss_kb'] / 1024, 1)} | "
                f"{fmt(e['pss_kb'] and e['pss_kb'] / 1024, 1)} |")

    # (7) the basic script and (8) dialogs: CPU per call and memory at each rate tried
    per_rate_table("(7) basic script", "basic", "basic_rates")
    per_rate_table("(8) dialogs", "dialog", "dialog_rates")

    # (9) every row at every rate both servers ran: ours / Kamailio's CPU per
    # request (issue #15 asks for at most 0.7x on every row) and wake-ups.
    out("")
    out("| (9) CPU per request at equal rates (median of the runs) | rate | Kamailio CPU µs/req | evapi CPU µs/req | "
        "ratio (e / K) | wake-ups per request (K / e) | runs (K / e) |")
    out("|---|---|---|---|---|---|---|")
    S["figures"]["equal_rates"] = {}
    for tag in ("base", "relay1", "relay4", "relay8", "async", "probe", "basic", "dialog"):
        rates = sorted({r["rate"] for r in by.get((tag, "kamailio"), [])} &
                       {r["rate"] for r in by.get((tag, "evapi"), [])})
        for rate in rates:
            row = {}
            for srv in ("kamailio", "evapi"):
                runs = [r for r in by.get((tag, srv), []) if r["rate"] == rate]
                row[srv] = {"runs": len(runs),
                            "cpu_us": med([r["server_cpu_us_per_req"] for r in runs if r.get("server_cpu_us_per_req")]),
                            "wakeups": med([r["server_wakeups_per_req"] for r in runs
                                            if r.get("server_wakeups_per_req") is not None])}
            S["figures"]["equal_rates"].setdefault(tag, {})[rate] = row
            k, e = row["kamailio"], row["evapi"]
            out(f"| {tag} | {rate:,} | {fmt(k['cpu_us'], 1)} | {fmt(e['cpu_us'], 1)} | {ratio(e['cpu_us'], k['cpu_us'])} | "
                f"{fmt(k['wakeups'], 2)} / {fmt(e['wakeups'], 2)} | {k['runs']} / {e['runs']} |")
    out("")
    out("| (8) memory per live dialog (PSS, all server processes) | Kamailio | evapi | ratio (e / K) |")
    out("|---|---|---|---|")
    S["figures"]["dialog_hold"] = {}
    hold = {}
    for srv in ("kamailio", "evapi"):
        for tag in ("dlghold", "dlghold_off"):
            runs = [r for r in by.get((tag, srv), []) if r["pass"]]
            if runs:
                hold[(srv, tag)] = runs[-1]
    for srv in ("kamailio", "evapi"):
        on, off = hold.get((srv, "dlghold")), hold.get((srv, "dlghold_off"))
        S["figures"]["dialog_hold"][srv] = {
            "n": on and on["n"], "pss_idle_kb": on and on["pss_idle_kb"], "pss_live_kb": on and on["pss_live_kb"],
            "bytes_per_dialog": on and on["kb_per_dialog"] * 1024,
            "ref_pss_idle_kb": off and off["pss_idle_kb"], "ref_pss_live_kb": off and off["pss_live_kb"],
            "net_bytes_per_dialog": (on and off and
                                     ((on["pss_live_kb"] - on["pss_idle_kb"]) - (off["pss_live_kb"] - off["pss_idle_kb"]))
                                     * 1024 / on["n"]) or None}
    H = S["figures"]["dialog_hold"]
    k, e = H["kamailio"], H["evapi"]

    def mb(v):
        return fmt(v and v / 1024, 1)

    def div(x, y):
        return f"{x / y:.2f}" if x and y else "–"
    out(f"| calls up at once (N) | {fmt(k['n'])} | {fmt(e['n'])} | |")
    out(f"| PSS idle, MB | {mb(k['pss_idle_kb'])} | {mb(e['pss_idle_kb'])} | |")
    out(f"| PSS with N dialogs up, MB | {mb(k['pss_live_kb'])} | {mb(e['pss_live_kb'])} | |")
    out(f"| (PSS up − PSS idle) / N, bytes | {fmt(k['bytes_per_dialog'])} | {fmt(e['bytes_per_dialog'])} | "
        f"{div(e['bytes_per_dialog'], k['bytes_per_dialog'])} |")
    out(f"| same calls without dlg_manage: PSS idle / up, MB | {mb(k['ref_pss_idle_kb'])} / {mb(k['ref_pss_live_kb'])} | "
        f"{mb(e['ref_pss_idle_kb'])} / {mb(e['ref_pss_live_kb'])} | |")
    out(f"| net: minus the run without dlg_manage, bytes per dialog | {fmt(k['net_bytes_per_dialog'])} | "
        f"{fmt(e['net_bytes_per_dialog'])} | "
        f"{div(e['net_bytes_per_dialog'], k['net_bytes_per_dialog'])} |")
    nrun = len(all_runs)
    ncont = sum(r["contaminated"] for r in all_runs)
    nredone = sum(bool(r.get("redone")) for r in all_runs)
    out("")
    out(f"Runs: {nrun}, flagged contaminated by other sessions' CPU: {ncont} (redone up to {meta['retries']} times); "
        f"redone because contaminated or stolen (up to {meta.get('steal_retries', 0)} times, after "
        f"{meta.get('steal_pause', 0):g} s): {nredone}, left out of the tables; the tables use every other run, "
        f"flagged or not; a rate passes when more than half of its runs passed.")
    line = steal_line(all_runs)
    if line:
        out(line)
    text = "\n".join(lines)
    open(os.path.join(outdir, "tables.md"), "w").write(text + "\n")
    json.dump(S, open(os.path.join(outdir, "summary.json"), "w"), indent=1, default=str)
    return S, text


def plot(S, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install matplotlib): no plot", flush=True)
        return False
    F = S["figures"]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8.5))
    col = {"kamailio": "#c0504d", "evapi": "#4f81bd"}
    tags = [t for t in ("base", "relay1", "relay4", "relay8", "async") if t in F]
    labels = {"base": "baseline", "relay1": "relay 1", "relay4": "relay 4", "relay8": "relay 8", "async": "async RT"}
    x = range(len(tags))
    for i, srv in enumerate(("kamailio", "evapi")):
        vals = [F[t][srv]["best"] or 0 for t in tags]
        ax[0][0].bar([j + (i - 0.5) * 0.4 for j in x], vals, 0.4, label=srv, color=col[srv])
    ax[0][0].set_xticks(list(x))
    ax[0][0].set_xticklabels([labels[t] for t in tags])
    ax[0][0].set_ylabel("highest passing rate (req/s or calls/s)")
    ax[0][0].set_title("(1)-(3) highest passing rate")
    ax[0][0].legend()
    pr = sorted(F.get("probe", {}), key=int)
    for srv in ("kamailio", "evapi"):
        for p, ls in (("p50_ms", "--"), ("p99_ms", "-")):
            ax[0][1].plot([int(r) for r in pr], [(F["probe"][r][srv][p] or 0) * 1000 for r in pr], ls,
                          marker="o", color=col[srv], label=f"{srv} {p[:3]}")
    ax[0][1].set_xlabel("calls/s")
    ax[0][1].set_ylabel("INVITE→final reply, µs")
    ax[0][1].set_title("(4) async round-trip latency (probe)")
    ax[0][1].legend()
    mem = F.get("memory_async", {})
    for srv in ("kamailio", "evapi"):
        pts = sorted((int(r), v[srv] / 1024) for r, v in mem.items() if v.get(srv))
        if pts:
            ax[1][0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=col[srv], label=srv)
    ax[1][0].set_xlabel("async calls/s")
    ax[1][0].set_ylabel("peak PSS, all processes (MB)")
    ax[1][0].set_title("(5) memory under async load")
    ax[1][0].legend()
    fo = F.get("fanout", {})
    ns = sorted(fo, key=int)
    for i, srv in enumerate(("kamailio", "evapi")):
        vals = [fo[n][srv]["total"] or 0 for n in ns]
        ax[1][1].bar([j + (i - 0.5) * 0.4 for j in range(len(ns))], vals, 0.4, label=srv, color=col[srv])
    ax[1][1].set_yscale("log")
    ax[1][1].set_xticks(list(range(len(ns))))
    ax[1][1].set_xticklabels([f"{n} clients" for n in ns])
    ax[1][1].set_ylabel("frames/s delivered (total, log)")
    ax[1][1].set_title("(6) event-socket fan-out alone")
    ax[1][1].legend()
    m = S["meta"]
    fig.suptitle(f"Kamailio 5.6.3 vs evapi, same 2-core box, same load ({m['stamp']})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    return True


# ---------------------------------------------------------------- main

FULL = {
    "base": [20000, 25000, 27500, 30000, 32500, 35000, 37500, 40000],
    "relay1": [15000, 17500, 20000, 25000, 30000, 35000, 40000],
    "relay4": [10000, 12500, 15000, 20000, 25000, 30000, 35000, 40000],
    "relay8": [6000, 7500, 10000, 12500, 15000, 18000, 20000, 25000, 30000, 35000, 40000],
    "async": [2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 14000, 16000, 18000, 20000, 22000],
    "probe": [100, 1000, 2000],
    "basic": [500, 1000, 1500, 2000, 2500, 3000, 3250, 3500, 4000, 5000, 5500, 6000, 6500, 7000, 8000, 10000],
    "dialog": [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12000],
}
QUICK = {
    "base": [20000, 25000, 27500, 30000],
    "relay1": [15000, 20000, 25000],
    "relay4": [10000, 15000, 20000],
    "relay8": [6000, 12000, 15000, 18000],
    "async": [3000, 5000, 6000, 8000, 10000],
    "probe": [100, 1000, 2000],
    "basic": [500, 1000, 2000, 3000, 4000, 6000],
    "dialog": [1000, 2000, 4000, 6000, 8000, 10000],
}
# Fan-out mode: the relaying loop runs far ahead of the clients. Kamailio's
# worker then blocks writing to its dispatcher's socketpair; ours is given the
# same back-pressure (a relay waits up to 1 s for room once 1000 relays are
# pending) instead of queueing the whole run and cutting the client at
# client_queue_limit (8 MB) as a slow consumer.
FANOUT_EVAPI = "context_mlimit = 1000\nsend_task_timeout = 1000000"
FANOUT_FRAMES = {"kamailio": 240000, "evapi": 2400000}   # frames in total, split over the clients


def on_term(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    signal.signal(signal.SIGTERM, on_term)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rates, 5 s runs, no repeats (~15 min)")
    ap.add_argument("--only", default="base,relay1,relay4,relay8,async,probe,fanout,basic,dialog",
                    help="comma list of: base relay1 relay4 relay8 async probe fanout basic dialog")
    ap.add_argument("--servers", default="kamailio,evapi")
    ap.add_argument("--duration", type=float)
    ap.add_argument("--repeat", type=int, help="repeats of the highest passing rate (default 1, quick 0)")
    ap.add_argument("--probe-repeat", type=int, help="runs per latency cell (default 2, quick 1)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each server at every rate of a ladder, in turns (default 1); a rate passes "
                         "when more than half of a server's runs at it passed, and the tables take the "
                         "median: use 3 or 5 on a host whose speed moves from one run to the next")
    ap.add_argument("--rates", action="append", default=[], help="override, e.g. relay8=15000,18000")
    ap.add_argument("--children", type=int, default=2, help="SIP workers, both servers (shared harness: 2)")
    ap.add_argument("--workers", type=int, default=1,
                    help="Kamailio's evapi workers (5.6.3 runs evapi:message-received in its dispatcher "
                         "process whatever this is; its workers idle)")
    ap.add_argument("--evapi-workers", type=int, default=0,
                    help="our evapi workers; 0 (the default here) runs message-received on the event "
                         "socket's dispatcher thread, inline, the model of Kamailio 5.6.3's dispatcher")
    ap.add_argument("--kam-shm", type=int, default=1024, help="Kamailio -m (MB) for async and basic (anchor best: 1024)")
    ap.add_argument("--kam-arg", action="append", help="extra kamailio argument (repeatable)")
    ap.add_argument("--basic-kam-debug", type=int, default=0,
                    help="basic: Kamailio's debug level (cfg: 2 = a log line per request and an acc "
                         "record per INVITE/BYE; default 0 = warnings, as our side)")
    ap.add_argument("--basic-kam-maxbuffer", type=int, default=0,
                    help="basic: Kamailio's maxbuffer (UDP receive buffer, bytes); default: --udp-buffer")
    ap.add_argument("--perf", action="store_true",
                    help="record each server run with perf (bench/perf_breakdown.py): system calls, context "
                         "switches and where the CPU goes per request (perf's own overhead is in those runs)")
    ap.add_argument("--udp-buffer", type=int, default=1048576,
                    help="the UDP receive buffer both servers get, bytes (Kamailio's maxbuffer, our "
                         "[sip] udp_recv_buffer); default 1 MB, ours by default; 0 = each its own default "
                         "(Kamailio 256 KB, ours 1 MB)")
    ap.add_argument("--basic-register", default=basic.REGISTER_XML,
                    help="basic: the SIPp REGISTER scenario (default tests/sipp/register.xml)")
    ap.add_argument("--dialog-kam-script", choices=["cfg", "lua"], default="cfg",
                    help="dialog: Kamailio's routing as native cfg (default) or the same KEMI Lua script "
                         "as ours under app_lua (needs kamailio-lua-modules)")
    ap.add_argument("--dialog-hold", type=int, default=10000,
                    help="dialog: calls held up at once for the memory per live dialog (0: skip)")
    ap.add_argument("--dialog-hold-rate", type=int, default=1000,
                    help="dialog: calls/s at which the held calls are set up")
    ap.add_argument("--no-dialog-ref", dest="dialog_hold_ref", action="store_false",
                    help="dialog: skip the reference hold run without dlg_manage")
    ap.add_argument("--fanout-clients", default="1,8,64")
    ap.add_argument("--quiet-wait", type=float, default=45, help="max s to wait for other sessions to be quiet")
    ap.add_argument("--retries", type=int, default=1, help="redo a contaminated run at most this often")
    ap.add_argument("--tools", choices=["c", "python"], default="c",
                    help="the latency probe and the evapi responder (async and probe rows): c "
                         "(bench/common/probe.c and responder.c, built into bench/build/) or python "
                         "(async_probe.py and responder.py, as in runs before 2026-12-02, whose own "
                         "asyncio loops add ~0.6 ms to the probe's p50 on this box)")
    ap.add_argument("--steal-retries", type=int, default=2,
                    help="redo a run the hypervisor slowed (steal above 10 %% of the CPUs' time) that failed its "
                         "rate, or measured latency, at most this often; the redone run is left out of the "
                         "tables (0: keep stolen runs, marked)")
    ap.add_argument("--steal-pause", type=float, default=20,
                    help="seconds to wait before redoing a stolen run (the host's bursts last minutes)")
    ap.add_argument("--evapi-http", choices=["on", "off", "none"], default="on",
                    help="our admin HTTP listener: on (127.0.0.1:HTTP_PORT, 19060), off "
                         "([http] enabled = false), none (no [http] section: a binary from before it)")
    ap.add_argument("--scrape", type=float, default=0,
                    help="with --evapi-http on: GET /metrics every this many seconds during our runs "
                         "(0: never), to measure what metrics cost")
    ap.add_argument("--evapi-bin", default=os.environ.get("EVAPI_BIN", os.path.join(REPO, "target-bench", "release", "evapi")))
    ap.add_argument("--plot", default=os.path.join(REPO, "docs", "bench", "compare.png"))
    ap.add_argument("--out", help="results folder (default bench/results/<stamp>); a new one: a folder that already holds a runs.jsonl is refused")
    ap.add_argument("--resummarize", help="only rebuild tables and plot from this results folder")
    a = ap.parse_args()
    # The servers run in their own folders: a relative binary path would
    # name nothing there.
    a.evapi_bin = os.path.abspath(a.evapi_bin)
    if a.resummarize:
        runs = [json.loads(l) for l in open(os.path.join(a.resummarize, "runs.jsonl"))]
        meta = json.load(open(os.path.join(a.resummarize, "meta.json")))
        S, text = summarize(runs, meta, a.resummarize)
        print(text)
        plot(S, a.plot)
        return
    rates = dict(QUICK if a.quick else FULL)
    for o in a.rates:
        k, v = o.split("=", 1)
        rates[k] = [int(x) for x in v.split(",")]
    a.duration = a.duration or (5 if a.quick else 10)
    a.repeat = a.repeat if a.repeat is not None else (0 if a.quick else 1)
    a.probe_repeat = a.probe_repeat or (1 if a.quick else 2)
    only = a.only.split(",")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    outdir = a.out or os.path.join(HERE, "results", stamp)
    # The run's tables are built from every line of runs.jsonl: a folder
    # that already holds one would mix another run's results into them.
    if os.path.exists(os.path.join(outdir, "runs.jsonl")):
        sys.exit(f"compare.py: {outdir} already holds a runs.jsonl from another run; "
                 "give --out a new folder (or --resummarize it to rebuild its tables)")
    os.makedirs(outdir, exist_ok=True)
    servers = {"kamailio": Kamailio(a), "evapi": Evapi(a)}
    servers = [servers[s] for s in a.servers.split(",")]
    cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
    mem_gb = int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024
    meta = {"stamp": stamp, "duration": a.duration, "repeat": a.repeat, "rounds": a.rounds, "retries": a.retries,
            "steal_retries": a.steal_retries, "steal_pause": a.steal_pause, "tools": a.tools,
            "machine": f"{len(cpu)} x {cpu[0] if cpu else '?'}, {mem_gb:.0f} GiB, Linux {os.uname().release}",
            "kamailio": Kamailio(a).version(), "evapi": Evapi(a).version(),
            "sipp": sh(["sipp", "-v"]).stdout.strip().splitlines()[0] if shutil.which("sipp") else "?",
            "probe_rates": rates["probe"], "fanout_clients": [int(x) for x in a.fanout_clients.split(",")],
            "rates": rates, "children": a.children, "workers": a.workers, "evapi_workers": a.evapi_workers, "kam_shm_async": a.kam_shm,
            "argv": sys.argv[1:], "quick": a.quick, "udp_buffer": a.udp_buffer}
    json.dump(meta, open(os.path.join(outdir, "meta.json"), "w"), indent=1)
    print(f"== {stamp}: {meta['kamailio']} vs {meta['evapi']}; results in {outdir}", flush=True)
    print("== UDP receive buffer: " + (f"{a.udp_buffer} bytes for both servers (--udp-buffer)" if a.udp_buffer
          else "each server's own default (Kamailio 256 KB, ours 1 MB; --udp-buffer 0)"), flush=True)
    R = Runner(a, outdir)
    all_runs = []
    t_start = time.time()
    ladders = {"base": ("base", 0), "relay1": ("relay", 1), "relay4": ("relay", 4), "relay8": ("relay", 8),
               "async": ("async", 1), "basic": ("basic", 0), "dialog": ("dialog", 0)}
    for fig in only:
        # The rate ladders and the probe run the servers in turns, rate by
        # rate (Runner.ladder); the dialog hold and the fan-out, server by
        # server.
        if fig in ladders:
            kind, n = ladders[fig]
            all_runs += R.ladder(servers, kind, rates[fig], n, fig)
        elif fig == "probe":
            for _ in range(a.probe_repeat):
                for r in rates["probe"]:
                    for srv in servers:
                        try:
                            all_runs.append(R.run_once(srv, "probe", r, 1, "probe"))
                        except RuntimeError as e:
                            print(f"  {srv.name} probe: ERROR {e}", flush=True)
        if (fig in ladders and fig != "dialog") or fig == "probe":
            continue
        for srv in servers:
            print(f"-- {fig} / {srv.name}", flush=True)
            try:
                if fig == "dialog":
                    runs = []
                    if a.dialog_hold > 0:
                        runs.append(R.hold(srv, True))
                        if a.dialog_hold_ref:
                            runs.append(R.hold(srv, False))
                elif fig == "fanout":
                    runs = []
                    for n in meta["fanout_clients"]:
                        per = FANOUT_FRAMES[srv.name] // n // (4 if a.quick else 1)
                        runs.append(R.run_once(srv, "fanout", per, n, f"fan{n}"))
                else:
                    raise SystemExit(f"unknown figure {fig}")
            except RuntimeError as e:
                print(f"  {srv.name} {fig}: ERROR {e}", flush=True)
                runs = []
            all_runs += runs
    print(f"== done in {(time.time() - t_start) / 60:.1f} min", flush=True)
    runs = [json.loads(l) for l in open(os.path.join(outdir, "runs.jsonl"))]
    S, text = summarize(runs, meta, outdir)
    print(text)
    if plot(S, a.plot):
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
