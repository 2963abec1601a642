#!/usr/bin/env python3
"""A stand-in for CGRateS's evapi agent, for trying the cgrates-auth example.

It answers each CGR_AUTH_REQUEST: account "broke" gets error
INSUFFICIENT_CREDIT_FUNDS, account "zero" gets max_usage 0, anyone else gets
max_usage 3600 and, with --dst, a destination to relay to.

    python3 examples/cgrates-auth/mock_cgrates.py [--addr 127.0.0.1:8448] [--dst sip:127.0.0.1:5080]
"""
import argparse
import json
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "default"))
from client import frames, send  # noqa: E402  (the netstring helpers)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="127.0.0.1:8448")
    p.add_argument("--dst", default="")
    p.add_argument("--count", type=int, default=0, help="exit after this many answers")
    args = p.parse_args()
    host, port = args.addr.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)))
    answered = 0
    for msg in frames(sock):
        req = json.loads(msg)
        print(json.dumps(req), flush=True)
        if req.get("event") != "CGR_AUTH_REQUEST":
            continue
        reply = {"event": "CGR_AUTH_REPLY", "tr_index": req["tr_index"], "tr_label": req["tr_label"]}
        account = req.get("cgr_account")
        if account == "broke":
            reply["error"] = "INSUFFICIENT_CREDIT_FUNDS"
        elif account == "zero":
            reply["max_usage"] = 0
        else:
            reply["max_usage"] = 3600
            if args.dst:
                reply["dst"] = args.dst
        send(sock, reply)
        answered += 1
        if args.count and answered >= args.count:
            return


if __name__ == "__main__":
    main()
