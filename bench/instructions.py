#!/usr/bin/env python3
"""User-space instructions per request of our server, counted by
valgrind's callgrind: a figure the host's noise does not move, for
comparing two binaries (or two commits) on one path.

    python3 bench/instructions.py [--bin BIN] [--script base|relay|async] [--requests N] [--top K]
    python3 bench/instructions.py --server kamailio [--script base|relay|async] [--requests N]

Starts BIN (default target-bench/release/evapi) under `valgrind
--tool=callgrind` with bench/evapi/bench.toml.in (one router thread, so
the count is one thread's), the given bench script (bench/evapi/
base.lua: a stateless 200; relay.lua: eight reads, a relay, a 200;
relay connects one event client that reads and drops the frames;
async.lua: the latency probe's calls, below), sends 1,000 OPTIONS to
warm up, zeroes the counters
(`callgrind_control -z`), sends N more one at a time (each waits for
its 200, so every request is routed alone, as at a low rate), dumps
the counters and prints the instructions per request and the K
functions with the most instructions (inclusive) per request.
The OPTIONS are written like bench/common/uac_options.xml's.

`--script async` counts the probe row's call instead (compare.py's
`probe` and `async` rows): an INVITE, suspended and announced to one
event client, which answers as bench/common/responder.c does; the
`t_continue` route replies 404; the call's ACK. A request is then one
call: the INVITE, the event client's answer and the ACK, each waiting
for the one before (1,000 calls warm up, as the OPTIONS do).

With `--server kamailio`, Kamailio runs bench/kamailio/kamailio.cfg in
the same mode (MODE_BASE, MODE_RELAY or MODE_ASYNC, as compare.py starts it, with
one UDP child and one evapi worker) under `valgrind --tool=callgrind
--trace-children=yes`: every process writes its own counts, all are
zeroed and dumped together, and the figure is their sum over the N
requests (ours is one process, all threads counted together), so both
count all the user-space work the server did while it answered them.

Instructions are not time: a change that saves instructions can still
cost cache misses. Time is measured with bench/compare.py; this tells
which of two builds does less work, without the host's noise. Needs
Debian's `valgrind`. Results and the callgrind file go to
/tmp/instructions-*/."""
import argparse, glob, json, os, re, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def options(i, port, lp):
    return (f"OPTIONS sip:evapi@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-{i}-1\r\n"
            f"From: <sip:sipp@127.0.0.1:{lp}>;tag=77T{i}\r\n"
            f"To: <sip:evapi@127.0.0.1:{port}>\r\n"
            f"Call-ID: {i}-77@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\n"
            f"Contact: <sip:sipp@127.0.0.1:{lp}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def invite(i, port, lp):
    return (f"INVITE sip:evapi@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-{i}-1\r\n"
            f"From: <sip:sipp@127.0.0.1:{lp}>;tag=77T{i}\r\n"
            f"To: <sip:evapi@127.0.0.1:{port}>\r\n"
            f"Call-ID: {i}-77@127.0.0.1\r\n"
            "CSeq: 1 INVITE\r\n"
            "Max-Forwards: 70\r\n"
            f"Contact: <sip:sipp@127.0.0.1:{lp}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def ack(i, port, lp, to):
    return (f"ACK sip:evapi@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-{i}-1\r\n"
            f"From: <sip:sipp@127.0.0.1:{lp}>;tag=77T{i}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {i}-77@127.0.0.1\r\n"
            "CSeq: 1 ACK\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def uac():
    """The load generator's UDP socket on 127.0.0.1, and its port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s, s.getsockname()[1]


def netstring_of(b):
    return str(len(b)).encode() + b":" + b + b","


def netstring(sock, buf):
    """One netstring's payload from `sock` (bytes already read in `buf`,
    a bytearray, which keeps what follows)."""
    while True:
        colon = buf.find(b":")
        if colon > 0:
            n = int(buf[:colon])
            if len(buf) >= colon + n + 2:
                payload = bytes(buf[colon + 1:colon + 1 + n])
                del buf[:colon + n + 2]
                return payload
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("the event socket closed")
        buf += chunk


def calls(n, start, port, client):
    """n calls of the async script, one at a time: INVITE, the event
    client's answer, 404 (100 skipped), ACK."""
    s, lp = uac()
    ev, buf = client
    for i in range(start, start + n):
        s.sendto(invite(i, port, lp), ("127.0.0.1", port))
        m = json.loads(netstring(ev, buf))
        ev.sendall(netstring_of(json.dumps({"tindex": m["tindex"], "tlabel": m["tlabel"],
                                            "action": "reply"}).encode()))
        while True:
            r, _ = s.recvfrom(4096)
            if not r.startswith(b"SIP/2.0 100"):
                break
        if not r.startswith(b"SIP/2.0 404"):
            sys.exit(f"call {i}: expected a 404, got {r[:40]!r}")
        to = re.search(rb"\r\nTo: ([^\r]*)\r\n", r).group(1).decode()
        s.sendto(ack(i, port, lp, to), ("127.0.0.1", port))
    s.close()


def send(n, start, port, expect=b"SIP/2.0 200"):
    s, lp = uac()
    for i in range(start, start + n):
        s.sendto(options(i, port, lp), ("127.0.0.1", port))
        r, _ = s.recvfrom(4096)
        if not r.startswith(expect):
            sys.exit(f"request {i}: expected {expect.decode()}, got {r[:40]!r}")
    s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target-bench", "release", "evapi"))
    ap.add_argument("--script", choices=["base", "relay", "async"], default="base")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--port", type=int, default=25060)
    ap.add_argument("--server", choices=["evapi", "kamailio"], default="evapi")
    ap.add_argument("--cache-sim", action="store_true",
                    help="also simulate the caches (valgrind's model of this CPU's L1 and last "
                         "level) and print the misses per request")
    a = ap.parse_args()
    rdir = f"/tmp/instructions-{a.server}-{a.script}-{int(time.time())}"
    os.makedirs(rdir)
    ev_port = a.port + 1
    out = rdir + "/callgrind.out"
    sim = ["--cache-sim=yes"] if a.cache_sim else []
    if a.server == "kamailio":
        mode = {"base": "MODE_BASE", "relay": "MODE_RELAY", "async": "MODE_ASYNC"}[a.script]
        cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes"] + sim + [
               f"--callgrind-out-file={out}.%p",
               "kamailio", "-f", os.path.join(HERE, "kamailio", "kamailio.cfg"), "-DD", "-E",
               "-m", "256", "-M", "16", "-Y", rdir, "-w", rdir, "-l", f"udp:127.0.0.1:{a.port}",
               "-A", f'EVAPI_BIND="127.0.0.1:{ev_port}"', "-A", "DBGLEVEL=1",
               "-A", "CHILDREN=1", "-A", mode, "-A", "EVAPI_WORKERS=1",
               "-A", "EVAPI_MAX_CLIENTS=8"]
    else:
        conf = (open(HERE + "/evapi/bench.toml.in").read()
                .replace("@SIP_PORT@", str(a.port)).replace("@EVAPI_PORT@", str(ev_port))
                .replace("@CHILDREN@", "1").replace("@EVAPI_WORKERS@", "0").replace("@EVAPI_MAX_CLIENTS@", "8")
                .replace("@SCRIPT@", f"{HERE}/evapi/{a.script}.lua").replace("@EVAPI_EXTRA@", ""))
        open(rdir + "/e.toml", "w").write(conf + "\n[http]\nenabled = false\n")
        cmd = ["valgrind", "--tool=callgrind"] + sim + [f"--callgrind-out-file={out}",
               a.bin, "run", "-c", rdir + "/e.toml"]
    p = subprocess.Popen(cmd, stdout=open(rdir + "/log", "w"), stderr=subprocess.STDOUT, cwd=rdir)
    # Kamailio's processes are all under valgrind: zero and dump them all.
    target = [] if a.server == "kamailio" else [str(p.pid)]
    client = None
    try:
        deadline = time.time() + 60
        while True:
            try:
                send(1, 0, a.port, b"SIP/2.0 ")  # any answer: the async script refuses OPTIONS
                break
            except (socket.timeout, ConnectionRefusedError):
                if time.time() > deadline or p.poll() is not None:
                    sys.exit(f"the server did not answer; see {rdir}/log")
        if a.script in ("relay", "async"):
            client = socket.create_connection(("127.0.0.1", ev_port), timeout=10)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            time.sleep(1)
        if a.script == "async":
            run = lambda n, start: calls(n, start, a.port, (client, bytearray()))
        else:
            run = lambda n, start: send(n, start, a.port)
        run(1000, 1)
        subprocess.run(["callgrind_control", "-z"] + target, check=True, capture_output=True)
        run(a.requests, 100000)
        subprocess.run(["callgrind_control", "-d"] + target, check=True, capture_output=True)
        time.sleep(1)
    finally:
        p.terminate()
        p.wait(timeout=60)
        if client:
            client.close()
    # The dumps asked for end in ".N" (ours: callgrind.out.1; Kamailio's:
    # callgrind.out.PID.1), the files written at exit do not.
    dumps = sorted(f for f in glob.glob(out + ".*") if re.search(r"\.\d+$", f)
                   and (a.server == "evapi" or re.search(r"\.\d+\.\d+$", f)))
    if not dumps:
        sys.exit(f"no dump written; see {rdir}/log")
    def counts(f):
        """{event: count} of a dump's summary line."""
        events = []
        for line in open(f):
            if line.startswith("events:"):
                events = line.split()[1:]
            if line.startswith("summary:"):
                return dict(zip(events, map(int, line.split()[1:])))
        return {}
    every = {f: counts(f) for f in dumps}
    totals = {f: c.get("Ir", 0) for f, c in every.items()}
    total = sum(totals.values())
    dump = max(totals, key=totals.get)
    per = total / a.requests
    print(f"{a.server} {a.script}: {per:,.0f} instructions per request in user space "
          f"({total:,} over {a.requests:,} requests; {len(dumps)} process(es), the busiest: {dump})")
    if len(dumps) > 1:
        for f, t in sorted(totals.items(), key=lambda x: -x[1]):
            print(f"{t / a.requests:>12,.0f}  {os.path.basename(f)}")
    if a.cache_sim:
        sum_of = lambda *names: sum(c.get(n, 0) for c in every.values() for n in names) / a.requests
        print(f"per request: data reads {sum_of('Dr'):,.0f}, writes {sum_of('Dw'):,.0f}; "
              f"L1 misses: instruction {sum_of('I1mr'):,.0f}, data {sum_of('D1mr', 'D1mw'):,.0f}; "
              f"last-level misses: instruction {sum_of('ILmr'):,.0f}, data {sum_of('DLmr', 'DLmw'):,.0f} "
              "(valgrind's cache model, not the CPU's counters)")
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                         capture_output=True, text=True).stdout
    rows = []
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \[[^\]]*\]$", "", m.group(2))
        # "file:function", where the file is a path (or ???): keep the function
        head, sep, tail = name.partition(":")
        if sep and ("/" in head or head.endswith(".rs") or head == "???"):
            name = tail
        rows.append((int(m.group(1).replace(",", "")), name))
    print(f"{'per request':>12}  function (inclusive)")
    shown, seen = 0, set()
    for ir, name in rows:
        if shown >= a.top:
            break
        if name in seen:
            continue
        seen.add(name)
        if ir > total or name.startswith(("std::", "core::ops::function", "<std::", "start_thread", "clone")):
            continue
        print(f"{ir / a.requests:>12,.0f}  {name[:150]}")
        shown += 1


if __name__ == "__main__":
    main()
