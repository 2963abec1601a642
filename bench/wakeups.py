#!/usr/bin/env python3
"""The latency-probe row by hand, for one server, with each thread's (or
process's) CPU time and wake-ups per call: starts the server in the async
mode (our bench/evapi/async.lua or the anchor cfg's MODE_ASYNC), the C
responder, then the C probe at RATE calls/s for SECONDS, and reads every
task's /proc stat, status and schedstat (utime, stime, voluntary and
involuntary context switches, time on a CPU in ns) before and after.

    python3 bench/wakeups.py evapi RATE SECONDS [BIN]
    python3 bench/wakeups.py kamailio RATE SECONDS

EVAPI_WORKERS (default 1) sets our `[evapi] workers`; compare.py runs ours
with 0 (the dispatcher runs the events itself). Kamailio keeps 1 worker.

Ports as compare.py's defaults (15060, 18448, 15070); the C tools must be
built (compare.py builds them into bench/build/). utime and stime
count 10 ms ticks (use enough calls for them to mean something); the
on-CPU time from schedstat is in nanoseconds.
Results go to /tmp/wakeups-*/ (config, logs)."""
import os, sys, subprocess, time, json, re, glob
HERE = os.path.dirname(os.path.abspath(__file__))
B = HERE + "/build"
srv, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
binp = sys.argv[4] if len(sys.argv) > 4 else os.path.join(HERE, "..", "target-bench", "release", "evapi")
rdir = f"/tmp/wakeups-{srv}-{rate}-{int(time.time())}"
os.makedirs(rdir)
if srv == "evapi":
    tpl = open(HERE + "/evapi/bench.toml.in").read()
    conf = (tpl.replace("@SIP_PORT@", "15060").replace("@EVAPI_PORT@", "18448").replace("@CHILDREN@", "2")
            .replace("@EVAPI_WORKERS@", os.environ.get("EVAPI_WORKERS", "1")).replace("@EVAPI_MAX_CLIENTS@", "8")
            .replace("@SCRIPT@", HERE + "/evapi/async.lua").replace("@EVAPI_EXTRA@", ""))
    conf = conf.replace("children = 2", "children = 2\nudp_recv_buffer = 4194304")
    open(rdir + "/e.toml", "w").write(conf + "\n[http]\nenabled = false\n")
    p = subprocess.Popen([binp, "run", "-c", rdir + "/e.toml"], stderr=open(rdir + "/log", "w"), cwd=rdir)
else:
    p = subprocess.Popen(["kamailio", "-f", HERE + "/kamailio/kamailio.cfg", "-DD", "-E", "-m", "1024", "-M", "16",
                          "-Y", rdir, "-w", rdir, "-l", "udp:127.0.0.1:15060", "-A", 'EVAPI_BIND="127.0.0.1:18448"',
                          "-A", "DBGLEVEL=1", "-A", "CHILDREN=2", "-A", "MODE_ASYNC", "-A", "EVAPI_WORKERS=1",
                          "-A", "EVAPI_MAX_CLIENTS=8", "-A", "KAM_MAXBUFFER=4194304"],
                         stderr=open(rdir + "/log", "w"), stdout=subprocess.DEVNULL, cwd=rdir)
time.sleep(2.5)
r = subprocess.Popen([B + "/responder", "-p", "18448", "-i", "2", "-t", str(secs + 30), "-n", "r0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
time.sleep(1)
def pids():
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    pp = {}
    for line in out.splitlines():
        a, b = line.split(); pp.setdefault(int(b), []).append(int(a))
    res, st = [], [p.pid]
    while st:
        x = st.pop(); res.append(x); st += pp.get(x, [])
    return res
def snap():
    d = {}
    for pid in pids():
        for t in glob.glob(f"/proc/{pid}/task/*"):
            try:
                s = open(t + "/stat").read(); st = open(t + "/status").read()
            except OSError: continue
            name = s[s.index("(")+1:s.rindex(")")]
            f = s[s.rindex(")")+2:].split()
            ut, stt = int(f[11]), int(f[12])
            v = int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", st).group(1))
            nv = int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", st).group(1))
            try:
                ns = int(open(t + "/schedstat").read().split()[0])
            except (OSError, ValueError, IndexError):
                ns = 0
            d[t] = (name, ut, stt, v, nv, ns)
    return d
s0 = snap(); t0 = time.time()
g = subprocess.run([B + "/probe", "-r", str(rate), "-c", str(rate * secs), "-p", "15060", "-l", "15070", "-t", "5"], capture_output=True, text=True, cwd=rdir)
s1 = snap(); wall = time.time() - t0
n = rate * secs
tot = [0, 0, 0, 0, 0]
print(f"{srv} rate={rate} wall={wall:.1f}")
for k, v in sorted(s1.items()):
    a = s0.get(k, (v[0], 0, 0, 0, 0, 0))
    dd = [v[i] - a[i] for i in range(1, 6)]
    if sum(dd) == 0: continue
    tot = [x + y for x, y in zip(tot, dd)]
    print(f"  {v[0]:18s} utime {dd[0]*10000/n:7.1f}us stime {dd[1]*10000/n:7.1f}us  on-CPU {dd[4]/1000/n:7.1f}us  "
          f"vcs/call {dd[2]/n:5.2f} nvcs/call {dd[3]/n:5.2f}")
print(f"  TOTAL cpu/call {(tot[0]+tot[1])*10000/n:.1f}us (on-CPU, schedstat: {tot[4]/1000/n:.1f}us)  "
      f"vcs/call {tot[2]/n:.2f} nvcs/call {tot[3]/n:.2f}")
try:
    j = json.loads(g.stdout); print("  probe:", {k: j[k] for k in j if k in ("p50_ms", "p99_ms", "ok", "failed", "sent", "answered")})
except Exception: print(g.stdout[-300:], g.stderr[-300:])
p.terminate(); p.wait(timeout=15); r.terminate()
