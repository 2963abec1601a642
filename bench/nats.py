#!/usr/bin/env python3
"""Scale-out over NATS: the async round trip through NATS with two `evapi`
nodes and two workers on this box, against the direct TCP path.

Run through bench/compare.sh --only nats (which checks the packages and
builds our binary and the worker), or directly:

  python3 bench/nats.py --evapi-bin target-bench/release/evapi \
      --worker-bin target-bench/release/examples/bench_worker [--quick]

Both paths use the bench's async mode (bench/evapi/async.lua, the script of
compare.py's async row, unchanged): each INVITE is suspended and announced
with async_relay; the answer {"tindex":..,"tlabel":..,"action":"reply"}
resumes it into a 404.

  * nats: a nats-server on loopback, two nodes with [nats] on (node names
    n0 and n1), no TCP event client, and two workers in one queue group on
    evapi.relay (crates/nats/examples/bench_worker.rs: Rust, async-nats,
    answers each event on its reply subject);
  * tcp: the same two nodes without [nats], each with the async row's TCP
    client (common/responder.py) on its event socket.

Load, always against both nodes, half the total rate each:

  (1) throughput (nats): two SIPp (common/uac_invite.xml), rates ascending
      until one fails; the highest passing total rate is repeated
      (--repeat). Pass = compare.py's rule for each SIPp (no failed call, no
      retransmission, every call answered, achieved >= 95 % of its rate)
      and the workers answered exactly one event per call, none bad.
  (2) latency at --probe-rate calls/s in total: two async_probe.py (one per
      node), tcp and nats interleaved in the same invocation (tcp, nats,
      tcp, nats ... --probe-repeat times each). The p99 of a run is the
      higher of its two probes' p99 (each probe sends half the calls).

Every run waits (bounded) for other sessions to be quiet and is flagged
"contaminated" (and redone up to --retries times) when they used more than
10 % of a CPU during it: compare.py's method and functions. A run during
which the host took more than 10 % of the CPUs' time (steal) is flagged
"stolen"; a stolen latency run is redone after --steal-pause seconds (up
to --retries times). The latency medians are over the runs flagged
neither way, when there are any. CPU per call is
given for each part: the two evapi nodes, nats-server, the workers (or the
TCP clients), and the load generators.

Output: bench/results/nats-<UTC stamp>/runs.jsonl and tables.md.
Ports (127.0.0.1 only, env): NATS_SIP_PORT (16060, +1 for the second
node), NATS_EVAPI_PORT (18548, +1), NATS_SIPP_PORT (16070, +1; +100 and
+200 for SIPp's control and media ports), NATS_PORT (14222; +1 for its
monitoring port).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from compare import (HZ, cpu_ticks, foreign_ticks, steal_line, steal_ticks, stolen, med, parse_client,
                     parse_rtt, parse_stat,
                     proc_tree, reap, sh, stop_proc, udp_errors, wait_quiet)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
COMMON = os.path.join(HERE, "common")
SIP_PORT = int(os.environ.get("NATS_SIP_PORT", "16060"))
EVAPI_PORT = int(os.environ.get("NATS_EVAPI_PORT", "18548"))
SIPP_PORT = int(os.environ.get("NATS_SIPP_PORT", "16070"))
NATS_PORT = int(os.environ.get("NATS_PORT", "14222"))
MON_PORT = NATS_PORT + 1
NODES = 2

FULL_RATES = [4000, 6000, 8000, 10000, 12000, 14000, 16000]
QUICK_RATES = [4000, 8000, 10000, 12000]


def listening(proto, port):
    return bool(sh(["ss", f"-H{proto}ln", f"sport = :{port}"]).stdout.strip())


def wait_until(cond, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} (waited {timeout} s)")


def connz():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{MON_PORT}/connz?subs=1", timeout=2) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def nats_connections():
    c = connz()
    return -1 if c is None else c.get("num_connections", 0)


def relay_subscribers():
    """Connections subscribed to evapi.relay (the workers, once their SUB is in)."""
    c = connz() or {}
    return sum("evapi.relay" in (x.get("subscriptions_list") or []) for x in c.get("connections") or [])


class Setup:
    """One run's processes: nats-server (path nats), two nodes, their
    answerers (workers or responders); all stopped by PID."""

    def __init__(self, a, path, rdir):
        self.a, self.path, self.rdir = a, path, rdir
        self.nats = None
        self.nodes = []
        self.logs = []
        self.answerers = []

    def node_conf(self, i):
        tpl = open(os.path.join(HERE, "evapi", "bench.toml.in")).read()
        conf = (tpl.replace("@SIP_PORT@", str(SIP_PORT + i)).replace("@EVAPI_PORT@", str(EVAPI_PORT + i))
                .replace("@CHILDREN@", str(self.a.children)).replace("@EVAPI_WORKERS@", str(self.a.workers))
                .replace("@EVAPI_MAX_CLIENTS@", "8")
                .replace("@SCRIPT@", os.path.join(HERE, "evapi", "async.lua"))
                .replace("@EVAPI_EXTRA@", ""))
        conf += "\n[http]\nenabled = false\n"
        if self.path == "nats":
            conf += f'\n[nats]\nservers = ["nats://127.0.0.1:{NATS_PORT}"]\nnode = "n{i}"\n'
        return conf

    def start(self, duration):
        for port in [SIP_PORT + i for i in range(NODES)]:
            if listening("u", port):
                raise RuntimeError(f"port {port}/udp already in use")
        for port in [EVAPI_PORT + i for i in range(NODES)] + [NATS_PORT, MON_PORT]:
            if listening("t", port):
                raise RuntimeError(f"port {port}/tcp already in use")
        if self.path == "nats":
            self.natslog = open(os.path.join(self.rdir, "nats-server.log"), "w")
            env = dict(os.environ)
            if self.a.nats_gomaxprocs:
                env["GOMAXPROCS"] = str(self.a.nats_gomaxprocs)
            self.nats = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(NATS_PORT),
                                          "-m", str(MON_PORT)],
                                         stdout=self.natslog, stderr=subprocess.STDOUT, env=env)
            wait_until(lambda: nats_connections() == 0, 10, "nats-server did not start")
        for i in range(NODES):
            path = os.path.join(self.rdir, f"evapi{i}.toml")
            open(path, "w").write(self.node_conf(i))
            log = open(os.path.join(self.rdir, f"evapi{i}.log"), "w")
            self.logs.append(log)
            self.nodes.append(subprocess.Popen([self.a.evapi_bin, "run", "-c", path], stdout=subprocess.DEVNULL,
                                               stderr=log, cwd=self.rdir))
        for i, p in enumerate(self.nodes):
            wait_until(lambda: p.poll() is not None or (listening("u", SIP_PORT + i)
                                                       and listening("t", EVAPI_PORT + i)),
                       15, f"node {i} did not start")
            if p.poll() is not None:
                raise RuntimeError(f"node {i} exited, see {self.rdir}/evapi{i}.log")
        if self.path == "nats":
            wait_until(lambda: nats_connections() == NODES, 10, "the nodes did not connect to NATS")
        for i in range(NODES):
            if self.path == "nats":
                cmd = [self.a.worker_bin, "--url", f"nats://127.0.0.1:{NATS_PORT}", "--name", f"w{i}",
                       "--idle", "2", "--max-seconds", str(duration + 90)]
            else:
                cmd = [sys.executable, os.path.join(COMMON, "responder.py"), "--port", str(EVAPI_PORT + i),
                       "--idle", "2", "--max-seconds", str(duration + 90), "--name", f"resp{i}"]
            self.answerers.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                                   text=True))
        if self.path == "nats":
            wait_until(lambda: relay_subscribers() == NODES, 10, "the workers did not subscribe")
        else:
            def both():
                out = sh(["ss", "-Htn", "state", "established"]).stdout
                return all(f":{EVAPI_PORT + i} " in out for i in range(NODES))
            wait_until(both, 10, "the TCP clients did not connect")
        time.sleep(0.3)

    def server_pids(self):
        pids = []
        for p in self.nodes:
            pids += list(proc_tree(p.pid))
        return pids

    def nats_pids(self):
        return [self.nats.pid] if self.nats else []

    def stop(self):
        for c in self.answerers:
            if c.poll() is None:
                c.terminate()
                try:
                    c.wait(5)
                except subprocess.TimeoutExpired:
                    c.kill()
        for p in self.nodes:
            stop_proc(p)
        if self.nats:
            stop_proc(self.nats)
            self.natslog.close()
        for log in self.logs:
            log.close()


class Runner:
    def __init__(self, a, outdir):
        self.a, self.outdir = a, outdir
        self.jsonl = open(os.path.join(outdir, "runs.jsonl"), "a")

    def run_once(self, path, load, rate, attempt=0):
        """path: nats | tcp; load: sipp | probe; rate: calls/s in total (half per node)."""
        a = self.a
        tag = f"{path}_{load}_r{rate}_{int(time.time())}"
        rdir = os.path.join(self.outdir, "run", tag)
        os.makedirs(rdir, exist_ok=True)
        quiet_busy, quiet_wait = wait_quiet(a.quiet_wait)
        per = rate / NODES
        ncalls = int(per * a.duration)
        s = Setup(a, path, rdir)
        gens = []
        try:
            s.start(a.duration)
            pids = s.server_pids()
            npids = s.nats_pids()
            cpu0, ncpu0 = cpu_ticks(pids), cpu_ticks(npids)
            fz0 = foreign_ticks()
            sz0 = steal_ticks()
            ue0 = udp_errors()
            t0 = time.time()
            for i in range(NODES):
                if load == "probe":
                    cmd = [sys.executable, os.path.join(COMMON, "async_probe.py"), "--rate", str(per),
                           "--count", str(ncalls), "--port", str(SIP_PORT + i),
                           "--local-port", str(SIPP_PORT + i), "--timeout", "5"]
                else:
                    cmd = ["sipp", "-sf", os.path.join(COMMON, "uac_invite.xml"), "-r", str(per), "-rp", "1000",
                           "-m", str(ncalls), "-l", "30000", "-i", "127.0.0.1", "-p", str(SIPP_PORT + i),
                           f"127.0.0.1:{SIP_PORT + i}", "-nostdin", "-trace_stat", "-stf", f"stat{i}.csv",
                           "-fd", "1", "-trace_rtt", "-rtt_freq", "1", "-cp", str(SIPP_PORT + 100 + i),
                           "-mp", str(SIPP_PORT + 200 + i * 10), "-buff_size", "4194304",
                           "-timeout", f"{a.duration + 40}s", "-timeout_error"]
                gens.append(subprocess.Popen(cmd, cwd=rdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True))
            gouts, gen_cpu = [], 0.0
            for i, g in enumerate(gens):
                out, c = reap(g, a.duration * 3 + 60)
                gouts.append(out)
                gen_cpu += c
                open(os.path.join(rdir, f"generator{i}.out"), "w").write(out)
                open(os.path.join(rdir, f"generator{i}.err"), "w").write(g.stderr.read() if g.stderr else "")
            gens = []
            wall = time.time() - t0
            cpu1, ncpu1 = cpu_ticks(pids), cpu_ticks(npids)
            fz1 = foreign_ticks()
            sz1 = steal_ticks()
            ue1 = udp_errors()
            outs, ans_cpu = [], 0.0
            for c in s.answerers:
                out, cc = reap(c, 30)
                outs.append(out.strip())
                ans_cpu += cc
            s.answerers = []
        finally:
            for g in gens:
                stop_proc(g, 5)
            s.stop()
        cl = [parse_client(o) for o in outs]
        per_gen = []
        if load == "probe":
            for i, o in enumerate(gouts):
                pj = json.loads(o.strip().splitlines()[-1])
                per_gen.append({"successful": pj["answered"], "failed": pj["lost"], "created": pj["sent"],
                                "retrans": 0, "codes": pj["codes"], "elapsed_s": pj["send_s"],
                                "rtt": {k: pj[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")}})
            rtt = {k: max(g["rtt"][k] for g in per_gen if g["rtt"][k] is not None) for k in
                   ("p50_ms", "p90_ms", "p99_ms", "max_ms")}
        else:
            for i in range(NODES):
                try:
                    per_gen.append(parse_stat(os.path.join(rdir, f"stat{i}.csv")))
                except (OSError, IndexError, KeyError, ValueError):
                    per_gen.append({"created": 0, "successful": 0, "failed": 0, "retrans": 0, "elapsed_s": 0})
            rtt = parse_rtt(rdir)
        served = sum(g["successful"] for g in per_gen)
        ok = True
        for g in per_gen:
            ach = g["successful"] / g["elapsed_s"] if g["elapsed_s"] else 0
            g["achieved"] = round(ach, 1)
            ok = ok and g["failed"] == 0 and g["retrans"] == 0 and g["successful"] == ncalls and ach >= 0.95 * per
            if load == "probe":
                ok = ok and set(g["codes"]) == {"404"}
        ok = ok and all(c.get("bad") == 0 for c in cl)
        if path == "nats":
            ok = ok and sum(c.get("events", 0) for c in cl) == served
        else:
            ok = ok and all(c.get("events") == g["successful"] for c, g in zip(cl, per_gen))
        foreign = (fz1[0] - fz0[0]) / HZ
        us = (lambda sec: round(sec * 1e6 / served, 1) if served else None)
        res = {
            "path": path, "load": load, "rate": rate, "duration": a.duration, "gen": per_gen, "rtt": rtt,
            "client_out": cl, "achieved": round(sum(g["achieved"] for g in per_gen), 1),
            "evapi_cpu_s": round((cpu1 - cpu0) / HZ, 2), "nats_cpu_s": round((ncpu1 - ncpu0) / HZ, 2),
            "answerers_cpu_s": round(ans_cpu, 2), "gen_cpu_s": round(gen_cpu, 2),
            "udp_rcvbuf_errors": ue1[0] - ue0[0], "wall_s": round(wall, 2),
            "quiet_wait_s": quiet_wait, "busy_before": quiet_busy,
            "foreign_cpu_s": round(foreign, 2), "foreign_niced_cpu_s": round((fz1[1] - fz0[1]) / HZ, 2),
            "steal_s": round((sz1 - sz0) / HZ, 2),
            "stolen": stolen((sz1 - sz0) / HZ, wall),
            "contaminated": foreign > 0.10 * wall, "pass": bool(ok), "attempt": attempt,
        }
        res["us_per_call"] = {k: us(res[f"{k}_cpu_s"]) for k in ("evapi", "nats", "answerers", "gen")}
        res["us_per_call"]["total"] = us(res["evapi_cpu_s"] + res["nats_cpu_s"] + res["answerers_cpu_s"]
                                         + res["gen_cpu_s"])
        self.jsonl.write(json.dumps(res) + "\n")
        self.jsonl.flush()
        gs = " ".join(f"[{g['successful']}/{ncalls} failed={g['failed']} retrans={g['retrans']} "
                      f"{g['achieved']:.0f}/s]" for g in per_gen)
        cs = " ".join(f"{c.get('name')}:{c.get('events')}bad={c.get('bad')}" for c in cl)
        rt = (f" p50={rtt['p50_ms']:.2f} p99={rtt['p99_ms']:.2f} max={rtt['max_ms']:.1f}ms" if rtt else "")
        print(f"  {path:4} {load:5} rate={rate:<6} {'PASS' if ok else 'FAIL'} {gs}{rt} {cs} "
              f"us/call {res['us_per_call']} udp_drops={res['udp_rcvbuf_errors']} "
              f"foreign={res['foreign_cpu_s']}s steal={res['steal_s']}s"
              f"{' STOLEN' if res['stolen'] else ''}"
              f"{' CONTAMINATED' if res['contaminated'] else ''}", flush=True)
        if res["contaminated"] and attempt < a.retries:
            return self.run_once(path, load, rate, attempt + 1)
        if load == "probe" and res["stolen"] and attempt < a.retries:
            # a latency run the host slowed measures the host: redo it after a pause
            # (the stolen run stays in runs.jsonl, flagged, out of the medians)
            time.sleep(a.steal_pause)
            return self.run_once(path, load, rate, attempt + 1)
        return res


def fmt(v, nd=1):
    return "–" if v is None else f"{v:,.{nd}f}"


def summarize(runs, meta, outdir):
    lines = []
    out = lines.append
    out(f"Run {meta['stamp']} on {meta['machine']}; {meta['evapi']}; {meta['nats_server']}; {meta['sipp']}; "
        f"{meta['duration']} s per run; two nodes ({meta['children']} SIP workers, {meta['workers']} evapi "
        f"worker each), half the total rate against each.")
    out("")
    out("| (1) throughput, NATS, SIPp against both nodes | runs passed | achieved calls/s | "
        "CPU µs/call: evapi (2 nodes) | nats-server | workers | SIPp (2) | total | SIPp p99 ms | note |")
    out("|---|---|---|---|---|---|---|---|---|---|")
    tp = [r for r in runs if r["load"] == "sipp"]
    for rate in sorted({r["rate"] for r in tp}):
        rs = [r for r in tp if r["rate"] == rate]
        good = [r for r in rs if r["pass"]] or rs
        u = {k: med([r["us_per_call"][k] for r in good if r["us_per_call"][k] is not None])
             for k in ("evapi", "nats", "answerers", "gen", "total")}
        note = []
        for r in rs:
            if not r["pass"]:
                g = r["gen"]
                note.append(f"failed: {sum(x['successful'] for x in g)}/{int(rate * r['duration'])} ok, "
                            f"{sum(x['failed'] for x in g)} failed, {sum(x['retrans'] for x in g)} retrans, "
                            f"{r['achieved']:.0f}/s")
            if r["contaminated"]:
                note.append("contaminated")
        out(f"| {rate:,} calls/s | {sum(r['pass'] for r in rs)}/{len(rs)} | "
            f"{fmt(med([r['achieved'] for r in good]), 0)} | {fmt(u['evapi'])} | {fmt(u['nats'])} | "
            f"{fmt(u['answerers'])} | {fmt(u['gen'])} | {fmt(u['total'])} | "
            f"{fmt(med([r['rtt']['p99_ms'] for r in good if r.get('rtt')]), 0)} | {'; '.join(note)} |")
    rates_ok = sorted({r["rate"] for r in tp if 2 * sum(x["pass"] for x in tp if x["rate"] == r["rate"])
                       > sum(1 for x in tp if x["rate"] == r["rate"])})
    best = rates_ok[-1] if rates_ok else None
    out("")
    out(f"Highest passing total rate through NATS: {fmt(best, 0) if best else 'none'} calls/s "
        f"(goal 10,000: {'met' if best and best >= 10000 else 'not met'}).")
    out("")
    pr = [r for r in runs if r["load"] == "probe"]
    out(f"| (2) latency at {meta['probe_rate']:,} calls/s in total, async_probe.py on both nodes | runs (passed) | "
        "p50 / p90 / p99 / max ms (median over runs not flagged) | p99 of each run ((c): contaminated, (s): stolen) | CPU µs/call: evapi | nats-server | "
        "workers or TCP clients | lost |")
    out("|---|---|---|---|---|---|---|---|")
    p99 = {}
    for path, label in (("tcp", "direct TCP (responder.py)"), ("nats", "NATS (2 bench_workers)")):
        rs = [r for r in pr if r["path"] == path]
        # the medians are over the runs nobody else's CPU disturbed, when there are any: a
        # flagged run measures the other session (or the host, for a stolen one) as much
        # as us (each run's p99 is listed)
        flagged = (lambda r: r["contaminated"] or r.get("stolen", False))
        clean = [r for r in rs if not flagged(r)] or rs
        q = {k: med([r["rtt"][k] for r in clean if r.get("rtt")]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")}
        p99[path] = q["p99_ms"]
        u = {k: med([r["us_per_call"][k] for r in clean if r["us_per_call"][k] is not None])
             for k in ("evapi", "nats", "answerers")}
        each = ", ".join(fmt(r["rtt"]["p99_ms"], 2) + (" (c)" if r["contaminated"] else "")
                         + (" (s)" if r.get("stolen") else "") for r in rs)
        out(f"| {label} | {len(rs)} ({sum(r['pass'] for r in rs)}; {len(rs) - sum(map(flagged, rs))} not flagged) | "
            f"{' / '.join(fmt(q[k], 2) for k in ('p50_ms', 'p90_ms', 'p99_ms', 'max_ms'))} | {each} | "
            f"{fmt(u['evapi'])} | {fmt(u['nats'])} | {fmt(u['answerers'])} | "
            f"{sum(sum(g['failed'] for g in r['gen']) for r in rs)} |")
    out("")
    if p99.get("tcp") is not None and p99.get("nats") is not None:
        d = p99["nats"] - p99["tcp"]
        out(f"p99 through NATS minus p99 direct: {d:+.2f} ms (goal at most +1 ms: {'met' if d <= 1.0 else 'not met'}).")
        out("")
    n, c = len(runs), sum(r["contaminated"] for r in runs)
    out(f"Runs: {n}, flagged contaminated by other sessions' CPU: {c} (redone up to {meta['retries']} times; "
        f"the tables use every run, flagged or not; a rate passes when more than half of its runs passed).")
    line = steal_line(runs)
    if line:
        out(line)
    text = "\n".join(lines)
    open(os.path.join(outdir, "tables.md"), "w").write(text + "\n")
    return text


def on_term(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    # SIGTERM stops the run as Ctrl-C does: the processes of the run are stopped by PID
    signal.signal(signal.SIGTERM, on_term)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rates, 5 s runs, no repeats")
    ap.add_argument("--only", default="nats", help="accepted for compare.sh: nats")
    ap.add_argument("--duration", type=float)
    ap.add_argument("--rates", help="total calls/s for (1), comma list")
    ap.add_argument("--repeat", type=int, help="repeats of the highest passing rate (default 1, quick 0)")
    ap.add_argument("--probe-rate", type=int, default=2000, help="total calls/s for (2)")
    ap.add_argument("--probe-repeat", type=int, help="runs per path for (2) (default 3, quick 2)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: throughput, latency")
    ap.add_argument("--children", type=int, default=2, help="SIP workers per node")
    ap.add_argument("--workers", type=int, default=1, help="evapi workers per node")
    ap.add_argument("--quiet-wait", type=float, default=45, help="max s to wait for other sessions to be quiet")
    ap.add_argument("--retries", type=int, default=1,
                    help="redo a contaminated run (or a stolen latency run) at most this often")
    ap.add_argument("--nats-gomaxprocs", type=int, default=0,
                    help="GOMAXPROCS for nats-server (0: Go's default, one per CPU)")
    ap.add_argument("--steal-pause", type=float, default=20.0,
                    help="seconds to wait before redoing a latency run the host's steal flagged")
    ap.add_argument("--evapi-bin", default=os.environ.get("EVAPI_BIN", os.path.join(REPO, "target-bench", "release",
                                                                                    "evapi")))
    ap.add_argument("--worker-bin", default=os.environ.get("WORKER_BIN", os.path.join(
        REPO, "target-bench", "release", "examples", "bench_worker")))
    ap.add_argument("--out", help="results folder (default bench/results/nats-<stamp>)")
    ap.add_argument("--resummarize", help="only rebuild the tables from this results folder")
    a = ap.parse_args()
    if a.only != "nats":
        raise SystemExit("bench/nats.py: --only nats (the other rows are compare.py's)")
    if a.resummarize:
        runs = [json.loads(line) for line in open(os.path.join(a.resummarize, "runs.jsonl"))]
        meta = json.load(open(os.path.join(a.resummarize, "meta.json")))
        print(summarize(runs, meta, a.resummarize))
        return
    a.duration = a.duration or (5 if a.quick else 10)
    a.repeat = a.repeat if a.repeat is not None else (0 if a.quick else 1)
    a.probe_repeat = a.probe_repeat or (2 if a.quick else 3)
    rates = [int(x) for x in a.rates.split(",")] if a.rates else (QUICK_RATES if a.quick else FULL_RATES)
    for b in (a.evapi_bin, a.worker_bin):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"bench/nats.py: {b} is not an executable (bench/compare.sh --only nats builds it)")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    outdir = a.out or os.path.join(HERE, "results", f"nats-{stamp}")
    os.makedirs(outdir, exist_ok=True)
    cpu = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    mem_gb = int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024
    meta = {"stamp": stamp, "duration": a.duration, "repeat": a.repeat, "retries": a.retries,
            "machine": f"{len(cpu)} x {cpu[0] if cpu else '?'}, {mem_gb:.0f} GiB, Linux {os.uname().release}",
            "evapi": sh([a.evapi_bin, "--version"]).stdout.strip() + f" ({a.evapi_bin})",
            "nats_server": "nats-server " + sh(["nats-server", "--version"]).stdout.strip().split()[-1],
            "sipp": sh(["sipp", "-v"]).stdout.strip().splitlines()[0],
            "rates": rates, "probe_rate": a.probe_rate, "probe_repeat": a.probe_repeat,
            "children": a.children, "workers": a.workers, "argv": sys.argv[1:], "quick": a.quick}
    json.dump(meta, open(os.path.join(outdir, "meta.json"), "w"), indent=1)
    print(f"== {stamp}: {meta['evapi']}, {meta['nats_server']}; results in {outdir}", flush=True)
    R = Runner(a, outdir)
    t0 = time.time()
    skip = set(a.skip.split(","))
    if "latency" not in skip:
        print(f"-- (2) latency at {a.probe_rate} calls/s in total: tcp and nats interleaved", flush=True)
        for _ in range(a.probe_repeat):
            for path in ("tcp", "nats"):
                try:
                    R.run_once(path, "probe", a.probe_rate)
                except RuntimeError as e:
                    print(f"  {path} probe: ERROR {e}", flush=True)
    if "throughput" not in skip:
        print("-- (1) throughput through NATS (SIPp against both nodes)", flush=True)
        best = None
        for rate in rates:
            try:
                r = R.run_once("nats", "sipp", rate)
            except RuntimeError as e:
                print(f"  nats sipp rate={rate}: ERROR {e}", flush=True)
                break
            if not r["pass"]:
                break
            best = rate
        if best is not None:
            for _ in range(a.repeat):
                R.run_once("nats", "sipp", best)
    print(f"== done in {(time.time() - t0) / 60:.1f} min", flush=True)
    runs = [json.loads(line) for line in open(os.path.join(outdir, "runs.jsonl"))]
    print(summarize(runs, meta, outdir))


if __name__ == "__main__":
    main()
