#!/usr/bin/env python3
"""An application worker for evapi's scale-out over NATS (docs/scale-out.md).

It answers the default script's events: every INVITE event published by any
evapi node on `evapi.relay` is taken by one worker of the queue group
`workers`, which decides and answers with msg.respond(): the answer goes to
the reply subject `evapi.node.<node>`, so the node that holds the call
resumes it.

    pip install nats-py
    python3 worker.py --servers nats://127.0.0.1:4222 --code 486 --reason "Busy Here"
    python3 worker.py --dst sip:127.0.0.1:5080      # relay every call there

Run as many copies as you like, on any machine that reaches NATS.
"""

import argparse
import asyncio
import json
import signal

import nats  # nats-py


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", default="nats://127.0.0.1:4222",
                   help="comma-separated NATS URLs")
    p.add_argument("--prefix", default="evapi", help="[nats] subject_prefix")
    p.add_argument("--queue", default="workers", help="the queue group")
    p.add_argument("--code", type=int, default=486)
    p.add_argument("--reason", default="Busy Here")
    p.add_argument("--dst", default="", help="relay the calls to this SIP URI instead")
    args = p.parse_args()

    nc = await nats.connect(servers=args.servers.split(","), name="evapi-worker")

    async def on_event(msg):
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        if event.get("event") != "invite" or not msg.reply:
            return
        answer = {"tindex": event["tindex"], "tlabel": event["tlabel"]}
        if args.dst:
            answer["dst"] = args.dst
        else:
            answer["code"] = args.code
            answer["reason"] = args.reason
        await msg.respond(json.dumps(answer).encode())

    # One worker of the group gets each event.
    await nc.subscribe(f"{args.prefix}.relay", queue=args.queue, cb=on_event)
    await nc.subscribe(f"{args.prefix}.unicast.*", queue=args.queue, cb=on_event)
    print(f"worker listening on {args.prefix}.relay and {args.prefix}.unicast.* "
          f"(queue {args.queue})", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
