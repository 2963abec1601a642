"""Attack 8: one SIP/TCP request with 5,000 header lines, then one with
10,000, sent one byte per write (TCP_NODELAY), about 30 us apart so that
the server reads them one at a time. Prints the server's CPU time (user +
system) for each and whether each was answered: a framing that rescans the
buffer on every read costs about four times as much for twice the bytes,
one that resumes costs twice as much. (Both stay under the
10 s tcp_message_timeout_ms of the new build.)
Usage: python3 bench/attacks/framing.py BINARY"""

import socket
import time

from common import HealthyCaller, Server, binary_from_argv, options, status

with Server(binary_from_argv(), sip="max_message_size = 262144") as srv:
    healthy = HealthyCaller(srv)
    for n, headers in enumerate((5_000, 10_000)):
        s = socket.create_connection(srv.tcp)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        extra = "".join(f"X-{i}: v\r\n" for i in range(headers))
        req = options(srv.tcp, s.getsockname(), n, extra=extra, transport="TCP")
        cpu0, start = srv.cpu_s(), time.time()
        for i in range(len(req)):
            s.send(req[i:i + 1])
            t = time.perf_counter() + 30e-6
            while time.perf_counter() < t:
                pass
        s.settimeout(30)
        try:
            reply = s.recv(65536)
        except OSError:
            reply = b""
        print(f"{headers} headers, {len(req)} bytes one per write in {time.time() - start:.1f} s: "
              f"server CPU {srv.cpu_s() - cpu0:.2f} s, reply {status(reply)}")
        s.close()
    print(healthy.stop())
