"""DNS that never answers: 12 calls routed to sip:callee@blackhole.test,
whose DNS server (a UDP socket here that reads queries and answers none)
is silent, beside a healthy caller at 50 calls/s for 20 s whose calls the
script answers itself. Prints the healthy caller's completed calls per
second, and how many of the 12 ended with 478 Unresolvable Destination.

Self-contained (python3 standard library, loopback only, bounded): starts
BINARY with a config and script of its own on free ports, stops it by its
PID at the end.

Usage: python3 bench/attacks/dns_blackhole.py BINARY [--legacy]
  --legacy: for a binary older than dns_servers / dns_timeout_ms (it
  refuses unknown keys and asks the system's resolver): the keys are left
  out, the silent server listens on 127.0.0.1:53, and the binary runs in
  a mount namespace of its own (`unshare -m`, so root) whose
  /etc/resolv.conf names only that server. Nothing outside loopback is
  ever asked.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

STUCK = 12
RATE = 50
SECONDS = 20
DNS_TIMEOUT_MS = 3000

SCRIPT = """
function ksr_request_route()
    if KSR.is_ACK() then
        return
    end
    if KSR.pv.get("$rd") == "blackhole.test" then
        KSR.tm.t_relay()
        return
    end
    KSR.tm.t_reply(200, "OK")
end
function ksr_evapi_event(evname) end
"""


def silent_dns(stop, port=0):
    """A DNS server that reads every query and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.settimeout(0.1)
    count = [0]

    def run():
        while not stop.is_set():
            try:
                s.recvfrom(4096)
                count[0] += 1
            except socket.timeout:
                pass
        s.close()

    threading.Thread(target=run, daemon=True).start()
    return s.getsockname(), count


def start(binary, dns, legacy, tmp):
    dns_keys = "" if legacy else (
        f'dns_timeout_ms = {DNS_TIMEOUT_MS}\ndns_servers = ["{dns[0]}:{dns[1]}"]\n')
    cfg = os.path.join(tmp, "evapi.toml")
    with open(os.path.join(tmp, "router.lua"), "w") as f:
        f.write(SCRIPT)
    with open(cfg, "w") as f:
        f.write(f"""[sip]
listen = ["udp:127.0.0.1:0"]
{dns_keys}
[script]
file = "router.lua"

[evapi]
bind_addr = "127.0.0.1:0"

[log]
level = "info"
""")
    log = open(os.path.join(tmp, "evapi.log"), "w+")
    cmd = [binary, "run", "-c", cfg]
    if legacy:
        resolv = os.path.join(tmp, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver 127.0.0.1\n")
        cmd = ["unshare", "-m", "sh", "-c",
               f'mount --bind "{resolv}" /etc/resolv.conf && exec "$0" run -c "$1"',
               binary, cfg]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 15
    while time.time() < deadline:
        log.seek(0)
        m = re.search(r"evapi running.*?udp:([0-9.]+):(\d+)", log.read())
        if m:
            return proc, (m.group(1), int(m.group(2)))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    log.seek(0)
    sys.exit("the binary did not start:\n" + log.read())


def invite(to, me, call_id):
    return (f"INVITE sip:{call_id}@{to[0]}:{to[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bK{call_id};rport\r\n"
            f"From: <sip:a@{me[0]}>;tag=f{call_id}\r\nTo: <sip:b@{to[0]}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{me[0]}:{me[1]}>\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def header(text, name):
    m = re.search(rf"^{name}:\s*(.*?)\r$", text, re.M | re.I)
    return m.group(1) if m else None


def ack(to, reply):
    """The ACK of a final reply (the request's Via, From, Call-ID; the
    reply's To)."""
    cid = header(reply, "Call-ID")
    return (f"ACK sip:{cid}@{to[0]}:{to[1]} SIP/2.0\r\nVia: {header(reply, 'Via')}\r\n"
            f"From: {header(reply, 'From')}\r\nTo: {header(reply, 'To')}\r\n"
            f"Call-ID: {cid}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def status(text):
    m = re.match(r"SIP/2\.0 (\d{3}) ", text)
    return int(m.group(1)) if m else None


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary, legacy = sys.argv[1], "--legacy" in sys.argv[2:]
    stop = threading.Event()
    dns, queries = silent_dns(stop, 53 if legacy else 0)
    with tempfile.TemporaryDirectory() as tmp:
        proc, sip = start(binary, dns, legacy, tmp)
        try:
            run(sip, queries)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            stop.set()


def run(sip, queries):
    bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bad.bind(("127.0.0.1", 0))
    me = bad.getsockname()
    for n in range(STUCK):
        bad.sendto(invite(sip, me, f"blackhole-{n}").replace(
            f"sip:blackhole-{n}@{sip[0]}:{sip[1]}", "sip:callee@blackhole.test", 1)
            .encode(), sip)
    ended = {}
    t0 = time.time()

    def watch_bad():
        bad.settimeout(0.2)
        while time.time() - t0 < SECONDS + 5 and len(ended) < STUCK:
            try:
                text = bad.recv(65536).decode("utf-8", "replace")
            except socket.timeout:
                continue
            code = status(text)
            if code and code >= 200:
                bad.sendto(ack(sip, text).encode(), sip)
                ended.setdefault(header(text, "Call-ID"), (code, time.time() - t0))

    watcher = threading.Thread(target=watch_bad)
    watcher.start()
    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac.bind(("127.0.0.1", 0))
    uac.settimeout(0.005)
    me = uac.getsockname()
    per_second = [0] * (SECONDS + 5)
    sent, done = 0, set()
    while time.time() - t0 < SECONDS + 2:
        now = time.time() - t0
        if now < SECONDS and sent < int(now * RATE) + 1:
            uac.sendto(invite(sip, me, f"healthy-{sent}").encode(), sip)
            sent += 1
        try:
            text = uac.recv(65536).decode("utf-8", "replace")
        except socket.timeout:
            continue
        if status(text) == 200:
            cid = header(text, "Call-ID")
            uac.sendto(ack(sip, text).encode(), sip)
            if cid not in done:
                done.add(cid)
                per_second[min(int(time.time() - t0), len(per_second) - 1)] += 1
    watcher.join()
    print(f"healthy caller: {sent} calls sent at {RATE}/s for {SECONDS} s, {len(done)} completed")
    print("completed per second: " + " ".join(str(c) for c in per_second[:SECONDS + 2]))
    codes = [c for c, _ in ended.values()]
    at = sorted(round(t, 1) for _, t in ended.values())
    print(f"calls to blackhole.test: {STUCK} sent, {codes.count(478)} ended with 478, "
          f"{len(ended) - codes.count(478)} with another final, {STUCK - len(ended)} unanswered; "
          f"finals at {at} s")
    print(f"queries the silent DNS server read: {queries[0]}")


if __name__ == "__main__":
    main()
