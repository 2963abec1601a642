#!/usr/bin/env python3
"""A null SIP UAS: the latency probes' own floor, with no server between.

Answers every INVITE on 127.0.0.1:PORT with 200 at once (Via, From, To,
Call-ID and CSeq copied), ignores everything else, and stops on a datagram
reading "quit". A probe pointed at it measures itself plus this loop:

    python3 bench/common/null_uas.py 15099 &
    bench/build/probe -r 2000 -c 10000 -p 15099                        # C
    python3 bench/common/async_probe.py --rate 2000 --count 10000 --port 15099
    python3 -c 'import socket; socket.socket(2, 2).sendto(b"quit", ("127.0.0.1", 15099))'

usage: null_uas.py [PORT]   (default 15099; 127.0.0.1 only)
"""
import socket
import sys

KEEP = (b"via:", b"v:", b"from:", b"f:", b"to:", b"t:", b"call-id:", b"i:", b"cseq:")


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 15099
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    while True:
        data, addr = s.recvfrom(65535)
        if data == b"quit":
            break
        if not data.startswith(b"INVITE "):
            continue
        lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        keep = [l for l in lines if l.lower().replace(b" ", b"").startswith(KEEP)]
        s.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", addr)


if __name__ == "__main__":
    main()
