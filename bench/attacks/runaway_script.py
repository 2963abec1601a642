#!/usr/bin/env python3
"""Replay the runaway-script attacks against an `evapi` binary, beside a
healthy caller (RELIABILITY.md, "Attacks, before and after").

    python3 bench/attacks/runaway_script.py --bin target/release/evapi --attack loop
    python3 bench/attacks/runaway_script.py --bin target/release/evapi --attack hog

loop: 8 requests whose route never returns (`while true do end`), sent at
      t = 2 s, while a healthy caller sends 50 OPTIONS/s for 15 s; then
      SIGTERM, and how long the process takes to exit (SIGKILL after 20 s).
hog:  one request whose route allocates without end, sent at t = 2 s; the
      process runs under a 2 GiB address-space limit (so the old binary
      aborts instead of waking the machine's OOM killer).
Prints the healthy caller's answered requests per second, what the attack
requests got, whether the process survived, and its exit. Loopback only,
bounded in count and time; the binary is started and stopped by its PID.
Uses only the defaults of `[script]`, so old and new binaries read the
same config.
"""
import argparse, os, resource, signal, socket, subprocess, sys, tempfile, time

SCRIPT = r'''
function ksr_request_route()
    if KSR.hdr.is_present("X-Loop") > 0 then
        while true do end
    end
    if KSR.hdr.is_present("X-Hog") > 0 then
        local t = {}
        while true do t[#t + 1] = string.rep("x", 4096) .. #t end
    end
    KSR.sl.send_reply(200, "OK")
end
function ksr_evapi_event(evname) end
'''

def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

def options(port, me, cid, extra=""):
    return (f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{cid};rport\r\n"
            f"From: <sip:a@127.0.0.1:{me}>;tag={cid}\r\nTo: <sip:ping@127.0.0.1:{port}>\r\n"
            f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Length: 0\r\n\r\n").encode()

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--attack", choices=["loop", "hog"], required=True)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--max-route-ms", type=int,
                    help="set [script] max_route_ms (new binaries only; default: the binary's default)")
    a = ap.parse_args()
    sip, ev = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    d = tempfile.mkdtemp(prefix="evapi-attack-")
    open(os.path.join(d, "router.lua"), "w").write(SCRIPT)
    open(os.path.join(d, "evapi.toml"), "w").write(
        f'[sip]\nlisten = ["udp:127.0.0.1:{sip}"]\nchildren = 4\n'
        f'[script]\nfile = "router.lua"\n'
        + (f'max_route_ms = {a.max_route_ms}\n' if a.max_route_ms is not None else '') +
        f'[evapi]\nbind_addr = "127.0.0.1:{ev}"\nevent_callback = "ksr_evapi_event"\n'
        f'[log]\nlevel = "warn"\n')
    log = open(os.path.join(d, "log.txt"), "w")
    limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    proc = subprocess.Popen([a.bin, "run", "-c", os.path.join(d, "evapi.toml")],
                            stdout=log, stderr=log, preexec_fn=limit)
    time.sleep(1.0)
    healthy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    healthy.bind(("127.0.0.1", 0)); healthy.settimeout(0.005)
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0)); attacker.settimeout(0.005)
    me, am = healthy.getsockname()[1], attacker.getsockname()[1]
    sent, answered = {}, {}
    attack_replies, t0, n, attacked = [], time.time(), 0, False
    while time.time() - t0 < a.seconds:
        now = time.time() - t0
        if not attacked and now >= 2:
            attacked = True
            hdr = "X-Loop: 1\r\n" if a.attack == "loop" else "X-Hog: 1\r\n"
            for i in range(8 if a.attack == "loop" else 1):
                attacker.sendto(options(sip, am, f"attack-{i}", hdr), ("127.0.0.1", sip))
        if n < now * 50:
            sec = int(now)
            healthy.sendto(options(sip, me, f"ok-{n}"), ("127.0.0.1", sip))
            sent[sec] = sent.get(sec, 0) + 1
            n += 1
        for s, into in ((healthy, None), (attacker, attack_replies)):
            try:
                data = s.recv(65535).decode(errors="replace")
            except (socket.timeout, ConnectionRefusedError):
                continue
            code = data.split(" ", 2)[1] if data.startswith("SIP/2.0") else "?"
            if into is None:
                sec = int(time.time() - t0)
                answered[sec] = answered.get(sec, 0) + 1
            else:
                into.append(code)
    alive = proc.poll() is None
    print(f"binary: {a.bin}\nattack: {a.attack}")
    print("healthy caller, answered/sent per second:",
          " ".join(f"{answered.get(s, 0)}/{sent.get(s, 0)}" for s in range(a.seconds)))
    print(f"attack requests got: {attack_replies or 'nothing'}")
    print(f"process alive after the attack: {alive}" + ("" if alive else f" (exit {proc.returncode})"))
    if alive:
        t = time.time()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
            print(f"SIGTERM: exited after {time.time() - t:.1f} s (status {proc.returncode})")
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait()
            print("SIGTERM: still running after 20 s; killed")
    log.close()
    tail = [l for l in open(os.path.join(d, "log.txt")).read().splitlines()
            if "max_route_ms" in l or "memory" in l or "still busy" in l][:3]
    for l in tail:
        print("log:", l[:200])

if __name__ == "__main__":
    sys.exit(main())
