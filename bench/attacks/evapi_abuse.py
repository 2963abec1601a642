#!/usr/bin/env python3
"""Replay the event-socket attacks against an `evapi` binary running the
default script (RELIABILITY.md, "Attacks, before and after").

    python3 bench/attacks/evapi_abuse.py --bin target/release/evapi --attack squat [--auth-token T]
    python3 bench/attacks/evapi_abuse.py --bin target/release/evapi --attack flood

squat: 8 idle connections (the default max_clients) are opened first; then
       the application connects (sending --auth-token first when given:
       new binaries only) and 10 INVITEs are placed; the application
       answers each event 486. Prints whether the application became a
       client and the final code of each call (408 after fr_inv_timer = 3 s
       when nobody answered).
flood: 100 MB of bad event messages (500,000 of 200 bytes, no tindex) from
       one client while a second client answers 10 INVITEs; prints the log
       size and the calls' final codes.
Loopback only, bounded; the binary is started and stopped by its PID.
"""
import argparse, json, os, signal, socket, subprocess, sys, tempfile, time

ROUTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "examples", "default", "router.lua")

def free_port(kind):
    s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]; s.close(); return p

def frame(text):
    b = text.encode(); return str(len(b)).encode() + b":" + b + b","

class Client:
    def __init__(self, port, first=None):
        self.s = socket.create_connection(("127.0.0.1", port)); self.buf = b""
        if first: self.s.sendall(frame(first))
    def recv(self, timeout):
        self.s.settimeout(timeout)
        while True:
            if b":" in self.buf:
                n, rest = self.buf.split(b":", 1)
                if len(rest) > int(n):
                    self.buf = rest[int(n) + 1:]; return rest[:int(n)].decode()
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                return None
            if not d: return None
            self.buf += d

def invite(port, me, cid):
    return (f"INVITE sip:bob@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{cid};rport\r\n"
            f"From: <sip:alice@127.0.0.1:{me}>;tag=f{cid}\r\nTo: <sip:bob@127.0.0.1:{port}>\r\nCall-ID: {cid}\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{me}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()

def calls(sip, app, n=10):
    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); uac.bind(("127.0.0.1", 0))
    me, codes = uac.getsockname()[1], []
    for i in range(n):
        uac.sendto(invite(sip, me, f"call-{i}"), ("127.0.0.1", sip))
        ev = app.recv(1.0) if app else None
        if ev:
            e = json.loads(ev)
            app.s.sendall(frame(json.dumps({"tindex": e["tindex"], "tlabel": e["tlabel"], "code": 486})))
        deadline, code = time.time() + 5, None
        uac.settimeout(0.5)
        while time.time() < deadline and code is None:
            try:
                msg = uac.recv(65535).decode(errors="replace")
            except socket.timeout:
                continue
            c = msg.split(" ", 2)[1]
            if c != "100": code = c
        codes.append(code or "none")
    return codes

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True); ap.add_argument("--attack", choices=["squat", "flood"], required=True)
    ap.add_argument("--auth-token")
    a = ap.parse_args()
    sip, ev = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    d = tempfile.mkdtemp(prefix="evapi-attack-")
    open(os.path.join(d, "router.lua"), "w").write(open(ROUTER).read())
    auth = f'auth_token = "{a.auth_token}"\n' if a.auth_token else ""
    open(os.path.join(d, "evapi.toml"), "w").write(
        f'[sip]\nlisten = ["udp:127.0.0.1:{sip}"]\n[script]\nfile = "router.lua"\n'
        f'[evapi]\nbind_addr = "127.0.0.1:{ev}"\nevent_callback = "ksr_evapi_event"\n{auth}'
        f'[tm]\nfr_inv_timer = 3000\n')
    logpath = os.path.join(d, "log.txt"); log = open(logpath, "w")
    proc = subprocess.Popen([a.bin, "run", "-c", os.path.join(d, "evapi.toml")], stdout=log, stderr=log)
    time.sleep(1.0)
    print(f"binary: {a.bin}\nattack: {a.attack}" + (" (auth_token set)" if a.auth_token else ""))
    if a.attack == "squat":
        squatters = [socket.create_connection(("127.0.0.1", ev)) for _ in range(8)]
        time.sleep(0.3)
        app = Client(ev, a.auth_token)
        app.s.settimeout(0.5)
        try:
            closed = app.s.recv(1, socket.MSG_PEEK) == b""
        except socket.timeout:
            closed = False
        print(f"application became a client: {not closed}")
        print("calls:", " ".join(calls(sip, None if closed else app)))
        del squatters
    else:
        flooder, app = Client(ev), Client(ev)
        time.sleep(0.3)
        junk = "x" * 170
        batch = b"".join(frame(json.dumps({"junk": junk, "n": i})) for i in range(1000))
        t = time.time()
        for _ in range(500):
            flooder.s.sendall(batch)
        print(f"sent {500 * len(batch) / 1e6:.0f} MB of bad messages in {time.time() - t:.1f} s")
        print("calls beside it:", " ".join(calls(sip, app)))
        time.sleep(2)
        print(f"log size: {os.path.getsize(logpath) / 1e6:.2f} MB")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill(); proc.wait()
    log.close()

if __name__ == "__main__":
    sys.exit(main())
