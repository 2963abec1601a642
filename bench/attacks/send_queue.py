"""Attack 1: one SIP/TCP peer that never reads its replies (receive buffer
4 KB) sends 64 kB requests with 280 Via headers; each is answered with a
64 kB reply. Runs at most 6 s, stops early if the server passes 1 GB.
Prints the server's RSS before and at its peak, and whether the peer was
cut. Usage: python3 bench/attacks/send_queue.py BINARY"""

import socket
import time

from common import HealthyCaller, Server, binary_from_argv, options

with Server(binary_from_argv()) as srv:
    healthy = HealthyCaller(srv)
    time.sleep(0.5)
    before = peak = srv.rss_mb()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(srv.tcp)
    s.settimeout(2)
    start, sent, cut = time.time(), 0, False
    while time.time() - start < 6 and peak < 1024:
        try:
            s.sendall(options(srv.tcp, s.getsockname(), sent, vias=280, transport="TCP"))
            sent += 1
        except OSError:
            cut = True
            break
        if sent % 20 == 0:
            peak = max(peak, srv.rss_mb())
    took = time.time() - start
    time.sleep(0.5)
    peak = max(peak, srv.rss_mb())
    print(f"RSS before {before:.0f} MB, peak {peak:.0f} MB; {sent} requests "
          f"({sent * 64 / 1024:.0f} MB) sent in {took:.1f} s; peer cut: {cut}; "
          f"cut logged {srv.count('cutting TCP connection')} time(s); {healthy.stop()}")
