"""Shared by the attack replays: start a given evapi binary on free
loopback ports with a config and script of its own, a healthy UDP caller,
process figures from /proc, and stopping the binary by its PID.
Python 3 standard library only; loopback only; every wait is bounded."""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# OPTIONS answered 200 (the reply copies every Via), anything else 404.
OPTIONS_SCRIPT = """
function ksr_request_route()
    if KSR.is_OPTIONS() then
        KSR.sl.send_reply(200, "OK")
        return
    end
    KSR.sl.send_reply(404, "Not Found")
end
function ksr_evapi_event(evname) end
"""

CONFIG = """
[sip]
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
children = 2
{sip}

[script]
file = "router.lua"

[evapi]
bind_addr = "127.0.0.1:0"
event_callback = "ksr_evapi_event"

[log]
level = "info"
"""


def binary_from_argv():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} PATH_TO_EVAPI_BINARY")
    return sys.argv[1]


class Server:
    """`evapi run` with its own config; stopped by PID on exit."""

    def __init__(self, binary, sip="", script=OPTIONS_SCRIPT):
        self.dir = tempfile.TemporaryDirectory(prefix="evapi-attack-")
        cfg = os.path.join(self.dir.name, "evapi.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(sip=sip))
        with open(os.path.join(self.dir.name, "router.lua"), "w") as f:
            f.write(script)
        self.log_path = os.path.join(self.dir.name, "stderr.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "run", "-c", cfg], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.pid = self.proc.pid
        deadline = time.time() + 15
        while time.time() < deadline:
            m = re.search(r"udp:127\.0\.0\.1:(\d+).*tcp:127\.0\.0\.1:(\d+)", self.logs())
            if m:
                self.udp = ("127.0.0.1", int(m.group(1)))
                self.tcp = ("127.0.0.1", int(m.group(2)))
                ev = re.search(r"events=127\.0\.0\.1:(\d+)", self.logs())
                self.events = ("127.0.0.1", int(ev.group(1))) if ev else None
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        logs = self.logs()
        self.stop()
        sys.exit(f"{binary} did not start:\n{logs}")

    def logs(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def count(self, text):
        return sum(text in line for line in self.logs().splitlines())

    def rss_mb(self):
        with open(f"/proc/{self.pid}/status") as f:
            kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        return kb / 1024

    def cpu_s(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
            self.dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def options(to, me, n, vias=1, extra="", transport="UDP"):
    """An OPTIONS from `me` to `to` with `vias` Via headers (ours first)."""
    host, port = to
    m = f"OPTIONS sip:ping@{host}:{port} SIP/2.0\r\n"
    for v in range(vias):
        t = transport if v == 0 else "UDP"
        m += f"Via: SIP/2.0/{t} {me[0]}:{me[1]};branch=z9hG4bKa{n}x{v}{'p' * (170 if vias > 1 else 0)}\r\n"
    m += (f"From: <sip:a@{me[0]}>;tag=a{n}\r\nTo: <sip:ping@{host}>\r\nCall-ID: attack-{n}\r\n"
          f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n")
    return m.encode()


def status(reply):
    m = re.match(rb"SIP/2\.0 (\d{3})", reply)
    return int(m.group(1)) if m else None


class HealthyCaller(threading.Thread):
    """One OPTIONS over UDP every 100 ms, each waiting up to 2 s for its
    200: counts sent and answered until stopped."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.sent, self.answered = server, 0, 0
        self.done = threading.Event()
        self.start()

    def run(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        while not self.done.is_set():
            self.sent += 1
            s.sendto(options(self.server.udp, s.getsockname(), 10_000_000 + self.sent),
                     self.server.udp)
            try:
                while status(s.recvfrom(65536)[0]) != 200:
                    pass
                self.answered += 1
            except OSError:
                pass
            self.done.wait(0.1)

    def stop(self):
        self.done.set()
        self.join(5)
        return f"healthy UDP caller: {self.answered}/{self.sent} answered"
