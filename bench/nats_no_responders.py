#!/usr/bin/env python3
"""How fast a call is refused when nobody listens over NATS (issue #14:
"within 100 ms", not after fr_inv_timer).

Starts nats-server and `evapi run` with the embedded default config and
script (ports moved, [nats] added), sends INVITEs one after the other with
no TCP client and no NATS worker, and times INVITE -> final reply (the
default script answers 503 on evapi:no-responders). Loopback only; both
processes are stopped by PID.

    python3 bench/nats_no_responders.py [--bin target/release/evapi] [--calls 200]
"""
import argparse, os, shutil, socket, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--bin", default="target/release/evapi")
ap.add_argument("--nats-server", default=shutil.which("nats-server") or "/usr/sbin/nats-server")
ap.add_argument("--calls", type=int, default=200)
a = ap.parse_args()

SIP, EV, HTTP, NATS = 26060, 26448, 26090, 26222
d = tempfile.mkdtemp(prefix="nats-nr-")
subprocess.run([a.bin, "defaults", "--write", d], check=True, capture_output=True)
cfg = os.path.join(d, "evapi.toml")
s = open(cfg).read()
s = (s.replace("127.0.0.1:5060", f"127.0.0.1:{SIP}").replace("127.0.0.1:8448", f"127.0.0.1:{EV}")
     .replace("127.0.0.1:9060", f"127.0.0.1:{HTTP}"))
open(cfg, "w").write(s + f'\n[nats]\nservers = ["nats://127.0.0.1:{NATS}"]\n')
nats = subprocess.Popen([a.nats_server, "-a", "127.0.0.1", "-p", str(NATS)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
log = open(os.path.join(d, "evapi.log"), "w")
ev = subprocess.Popen([a.bin, "run", "-c", cfg], stdout=subprocess.DEVNULL, stderr=log)
try:
    deadline = time.time() + 10
    while "NATS connected" not in open(os.path.join(d, "evapi.log")).read():
        if time.time() > deadline or ev.poll() is not None:
            sys.exit(f"evapi did not connect to NATS: see {d}/evapi.log")
        time.sleep(0.05)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    me = "%s:%d" % sock.getsockname()
    times, finals = [], {}
    for n in range(a.calls):
        common = (f"Via: SIP/2.0/UDP {me};branch=z9hG4bKnr{n};rport\r\nFrom: <sip:a@example.com>;tag=a{n}\r\n"
                  f"Call-ID: nr-{n}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n")
        inv = (f"INVITE sip:bob@127.0.0.1:{SIP} SIP/2.0\r\n{common}To: <sip:bob@example.com>\r\n"
               f"CSeq: 1 INVITE\r\nContact: <sip:a@{me}>\r\n\r\n")
        t = time.perf_counter()
        sock.sendto(inv.encode(), ("127.0.0.1", SIP))
        while True:
            text = sock.recvfrom(65535)[0].decode()
            first = text.split("\r\n")[0]
            if not first.startswith("SIP/2.0 1"):
                break
        times.append((time.perf_counter() - t) * 1000)
        finals[first] = finals.get(first, 0) + 1
        to = next(l for l in text.split("\r\n") if l.lower().startswith("to:"))
        ack = f"ACK sip:bob@127.0.0.1:{SIP} SIP/2.0\r\n{common}{to}\r\nCSeq: 1 ACK\r\n\r\n"
        sock.sendto(ack.encode(), ("127.0.0.1", SIP))
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(p / 100 * len(times)))]
    print(f"{len(times)} calls, final replies {finals}")
    print(f"INVITE -> final: p50 {pct(50):.2f} ms, p99 {pct(99):.2f} ms, max {times[-1]:.2f} ms")
finally:
    for p in (ev, nats):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(d, ignore_errors=True)
