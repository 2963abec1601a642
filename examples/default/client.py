#!/usr/bin/env python3
"""A minimal event client for the default script of `evapi run`.

It connects to the event socket, prints every event, and answers each INVITE
event: with --dst it relays the call there, otherwise it replies --code and
--reason. Only the Python standard library is used.

    python3 examples/default/client.py                       # answer 486 Busy Here
    python3 examples/default/client.py --code 404 --reason "Not Found"
    python3 examples/default/client.py --dst sip:127.0.0.1:5080   # relay to a UAS
"""
import argparse
import json
import socket
import sys


def frames(sock):
    """Yield each netstring message received on sock."""
    buf = b""
    while True:
        while True:
            colon = buf.find(b":")
            if colon < 0:
                break
            length = int(buf[:colon].strip())
            if len(buf) < colon + 2 + length:
                break
            if buf[colon + 1 + length:colon + 2 + length] != b",":
                raise ValueError("netstring not closed by ','")
            yield buf[colon + 1:colon + 1 + length]
            buf = buf[colon + 2 + length:].lstrip(b" \r\n\t")
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk


def send(sock, obj):
    data = json.dumps(obj).encode()
    sock.sendall(b"%d:%s," % (len(data), data))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="127.0.0.1:8448", help="event socket (host:port)")
    p.add_argument("--code", type=int, default=486, help="reply code when not relaying")
    p.add_argument("--reason", default="Busy Here", help="reply reason when not relaying")
    p.add_argument("--dst", help="relay calls to this SIP URI instead of replying")
    p.add_argument("--count", type=int, default=0, help="exit after answering this many calls")
    args = p.parse_args()
    host, port = args.addr.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)))
    print(f"connected to {args.addr}", file=sys.stderr)
    answered = 0
    for msg in frames(sock):
        event = json.loads(msg)
        print(json.dumps(event), flush=True)
        if event.get("event") != "invite":
            continue
        answer = {"tindex": event["tindex"], "tlabel": event["tlabel"]}
        if args.dst:
            answer["dst"] = args.dst
        else:
            answer["code"] = args.code
            answer["reason"] = args.reason
        send(sock, answer)
        answered += 1
        if args.count and answered >= args.count:
            return


if __name__ == "__main__":
    main()
