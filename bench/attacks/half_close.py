"""Attack 7: a SIP/TCP peer sends 5 INVITEs, then shuts down its sending
side; the default script suspends each INVITE and an event client answers
486 only after the half-close. The peer reads (up to 5 s) what comes back
on the same connection. Usage: python3 bench/attacks/half_close.py BINARY"""

import json
import os
import socket
import time

from common import HealthyCaller, Server, binary_from_argv, status

SCRIPT = open(os.path.join(os.path.dirname(__file__), "../../examples/default/router.lua")).read()


def netstrings(sock, count):
    """Read `count` netstrings (LEN:DATA,) off an event socket."""
    buf, out = b"", []
    while len(out) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while b":" in buf:
            n, rest = buf.split(b":", 1)
            if len(rest) < int(n) + 1:
                break
            out.append(rest[:int(n)])
            buf = rest[int(n) + 1:]
    return out


with Server(binary_from_argv(), script=SCRIPT) as srv:
    healthy = HealthyCaller(srv)
    events = socket.create_connection(srv.events)
    events.settimeout(5)
    time.sleep(0.3)
    s = socket.create_connection(srv.tcp)
    me = "%s:%d" % s.getsockname()
    to = "%s:%d" % srv.tcp
    for n in range(5):
        s.sendall((f"INVITE sip:bob@{to} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKhc{n}\r\n"
                   f"From: <sip:a@{me}>;tag=hc{n}\r\nTo: <sip:bob@{to}>\r\nCall-ID: hc-{n}\r\n"
                   f"CSeq: 1 INVITE\r\nContact: <sip:a@{me}>\r\nMax-Forwards: 70\r\n"
                   f"Content-Length: 0\r\n\r\n").encode())
    s.shutdown(socket.SHUT_WR)
    for e in netstrings(events, 5):
        ev = json.loads(e)
        answer = json.dumps({"tindex": ev["tindex"], "tlabel": ev["tlabel"], "code": 486,
                             "reason": "Busy Here"}).encode()
        events.sendall(b"%d:%s," % (len(answer), answer))
    s.settimeout(5)
    data, deadline = b"", time.time() + 5
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    codes = [status(r) for r in data.split(b"\r\n\r\n") if status(r)]
    print(f"replies on the half-closed connection: {codes.count(486)} of 5 finals "
          f"({codes.count(100)} of 5 provisionals); {healthy.stop()}")
