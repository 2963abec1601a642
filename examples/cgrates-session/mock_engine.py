#!/usr/bin/env python3
"""A stand-in for CGRateS's KamailioAgent, for the cgrates-session example.

It connects to the event socket as CGRateS does (netstrings over TCP),
prints every event it receives as one JSON line on stdout (flushed), and:

- answers CGR_AUTH_REQUEST with the event named by its reply_route
  (CGR_AUTH_REPLY without one), TransactionIndex/TransactionLabel copied,
  and MaxUsage in seconds: --max-usage for everyone, --usage NAME=SECONDS
  for an Account or Destination NAME, or an Error for --error NAME=TEXT;
  Attributes from --attributes ("Name:value,Name2:value2");
- after CGR_CALL_START of a call whose Account or Destination is NAME,
  with --disconnect NAME=SECONDS, sends CGR_SESSION_DISCONNECT for the
  call's h_entry/h_id after that many seconds;
- reads commands on stdin, one a line:
      disconnect H_ENTRY H_ID [REASON]   send CGR_SESSION_DISCONNECT
      dlglist                            send CGR_DLG_LIST
      quit                               close the connection and exit

What it sends goes to stderr as "sent: {...}" lines.

    python3 examples/cgrates-session/mock_engine.py [--addr 127.0.0.1:8448]
        [--max-usage 3600] [--usage short=1] [--error broke=INSUFFICIENT_CREDIT]
        [--disconnect cutoff=2] [--attributes RequestType:*prepaid]
"""
import argparse
import json
import socket
import sys
import threading


def send(sock, lock, obj):
    """One netstring: the JSON text's length in bytes, ':', the text, ','."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    with lock:
        sock.sendall(str(len(data)).encode() + b":" + data + b",")
    print("sent: " + json.dumps(obj), file=sys.stderr, flush=True)


def frames(sock):
    """The netstrings arriving on sock, as text, until it closes."""
    buf = b""
    while True:
        while True:
            colon = buf.find(b":")
            if colon < 0:
                break
            length = int(buf[:colon])
            if len(buf) < colon + 1 + length + 1:
                break
            payload = buf[colon + 1:colon + 1 + length]
            if buf[colon + 1 + length:colon + 2 + length] != b",":
                raise ValueError("netstring without its comma")
            buf = buf[colon + 2 + length:]
            yield payload.decode("utf-8", "replace")
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk


def rules(pairs, convert):
    """NAME=VALUE arguments as a dict."""
    out = {}
    for p in pairs:
        name, _, value = p.partition("=")
        out[name] = convert(value)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="127.0.0.1:8448", help="the evapi event socket")
    p.add_argument("--max-usage", type=int, default=3600, help="MaxUsage for everyone else (seconds)")
    p.add_argument("--usage", action="append", default=[], metavar="NAME=SECONDS",
                   help="MaxUsage for this Account or Destination")
    p.add_argument("--error", action="append", default=[], metavar="NAME=TEXT",
                   help="answer this Account or Destination with Error TEXT")
    p.add_argument("--disconnect", action="append", default=[], metavar="NAME=SECONDS",
                   help="CGR_SESSION_DISCONNECT this Account's or Destination's calls SECONDS after their start")
    p.add_argument("--attributes", default="", help="the Attributes digest of every auth reply")
    args = p.parse_args()
    usage = rules(args.usage, int)
    errors = rules(args.error, str)
    disconnect = rules(args.disconnect, float)

    host, port = args.addr.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)))
    lock = threading.Lock()

    def rule(table, ev):
        for key in (ev.get("Account"), ev.get("Destination")):
            if key in table:
                return table[key]
        return None

    def disconnect_call(h_entry, h_id, reason):
        send(sock, lock, {"Event": "CGR_SESSION_DISCONNECT", "HashEntry": str(h_entry),
                          "HashId": str(h_id), "Reason": reason})

    def commands():
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "disconnect" and len(words) >= 3:
                disconnect_call(words[1], words[2], " ".join(words[3:]) or "mock engine: disconnect")
            elif words[0] == "dlglist":
                send(sock, lock, {"Event": "CGR_DLG_LIST"})
            elif words[0] == "quit":
                break
            else:
                print("unknown command: " + line.strip(), file=sys.stderr, flush=True)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    threading.Thread(target=commands, daemon=True).start()

    for msg in frames(sock):
        print(msg.replace("\n", " "), flush=True)
        try:
            ev = json.loads(msg)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        name = ev.get("event")
        if name == "CGR_AUTH_REQUEST":
            # CGRateS's KamReply: every field, the Event named by reply_route.
            reply = {
                "Event": ev.get("reply_route") or "CGR_AUTH_REPLY",
                "TransactionIndex": ev.get("tr_index", ""),
                "TransactionLabel": ev.get("tr_label", ""),
                "Attributes": args.attributes,
                "ResourceAllocation": "",
                "MaxUsage": 0,
                "Routes": "",
                "Thresholds": "",
                "StatQueues": "",
                "Error": "",
            }
            err = rule(errors, ev)
            if err is not None:
                reply["Error"] = err
            else:
                max_usage = rule(usage, ev)
                reply["MaxUsage"] = args.max_usage if max_usage is None else max_usage
            send(sock, lock, reply)
        elif name == "CGR_CALL_START":
            after = rule(disconnect, ev)
            if after is not None:
                t = threading.Timer(after, disconnect_call,
                                    (ev.get("h_entry"), ev.get("h_id"), "mock engine: credit exhausted"))
                t.daemon = True
                t.start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
