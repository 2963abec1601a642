"""Attack 5: 4,100 SIP/TCP connections from 127.0.0.1 each send one byte
every 2 s and never finish a message, for 16 s; meanwhile a healthy TCP
caller from 127.0.0.2 opens a new connection each second and sends an
OPTIONS. Prints how many slow connections the server still holds at 5,
12 s and 16 s, and how many of the new TCP callers were answered.
Usage: python3 bench/attacks/slowloris.py BINARY"""

import socket
import time

from common import HealthyCaller, Server, binary_from_argv, options, status

SLOW = 4100
TEXT = b"OPTIONS sip:slow@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKslow\r\n"


def closed(s):
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def tcp_call(srv, n):
    try:
        c = socket.socket()
        c.bind(("127.0.0.2", 0))
        c.settimeout(2)
        c.connect(srv.tcp)
        c.sendall(options(srv.tcp, c.getsockname(), n, transport="TCP"))
        ok = status(c.recv(65536)) == 200
        c.close()
        return ok
    except OSError:
        return False


with Server(binary_from_argv()) as srv:
    healthy = HealthyCaller(srv)
    slow = []
    for _ in range(SLOW):
        s = socket.create_connection(srv.tcp)
        s.setblocking(False)
        slow.append(s)
    start, sent_bytes, calls, answered, held = time.time(), 0, 0, 0, {}
    while time.time() - start < 16:
        second = time.time()
        if int(second - start) % 2 == 0:
            for s in slow:
                if s.fileno() >= 0:
                    try:
                        s.send(TEXT[sent_bytes % len(TEXT):][:1])
                    except OSError:
                        s.close()
            sent_bytes += 1
        calls += 1
        answered += tcp_call(srv, calls)
        for s in slow:
            if s.fileno() >= 0 and closed(s):
                s.close()
        held[round(time.time() - start)] = sum(1 for s in slow if s.fileno() >= 0)
        time.sleep(max(0.0, 1 - (time.time() - second)))
    at = lambda t: held[min(held, key=lambda k: abs(k - t))]
    print(f"slow connections still held: {at(5)} at 5 s, {at(12)} at 12 s, {at(16)} at 16 s "
          f"(of {SLOW}); new TCP callers from 127.0.0.2 answered: {answered}/{calls}; "
          f"message-deadline cuts logged: {srv.count('did not arrive whole')} line(s), "
          f"refusals logged: {srv.count('refusing TCP connection')} line(s); {healthy.stop()}")
    for s in slow:
        s.close()
