#!/bin/bash
# Soak: the async round trip (INVITE suspended, event out, responder
# answers, t_continue, 404, ACK) at a steady rate for a long time, with a
# copy of every event relayed to 7 monitoring clients (8 event clients in
# all). At the end every event and call is counted: zero lost, zero failed,
# and the server's memory (PSS) is sampled every 10 s to show it stays flat.
#
#   bench/soak.sh [SECONDS] [CALLS_PER_SECOND]     # default: 600 s at 3000 calls/s
#
# Needs: sip-tester (SIPp), gcc, python3, a Rust toolchain. 127.0.0.1 only;
# ports 25060 (SIP) and 28448 (events). Stops only the processes it started.
set -euo pipefail
DURATION=${1:-600}
RATE=${2:-3000}
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
for c in sipp cc python3; do
  command -v $c >/dev/null || { echo "soak: $c is missing (Debian: sip-tester, gcc, python3)" >&2; exit 2; }
done
OUT="$HERE/results/soak-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$OUT" "$HERE/build"
cc -O2 -o "$HERE/build/counter" "$HERE/common/counter.c"
BIN=${EVAPI_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$REPO" && CARGO_TARGET_DIR="$REPO/target-bench" cargo build --release -q -p evapi-cli)
  BIN="$REPO/target-bench/release/evapi"
fi
cat > "$OUT/evapi.toml" <<CFG
[sip]
listen = ["udp:127.0.0.1:25060"]
children = 2
[script]
file = "$HERE/evapi/soak.lua"
[evapi]
bind_addr = "127.0.0.1:28448"
event_callback = "ksr_evapi_event"
max_clients = 16
[tm]
fr_timer = 30000
fr_inv_timer = 30000
[log]
level = "warn"
CFG
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$BIN" run -c "$OUT/evapi.toml" 2> "$OUT/evapi.log" & EPID=$!; pids+=($EPID)
sleep 1
python3 "$HERE/common/responder.py" --port 28448 --max-seconds $((DURATION + 120)) --idle 10 --name responder > "$OUT/responder.out" & pids+=($!)
sleep 0.5
for i in 1 2 3 4 5 6 7; do
  "$HERE/build/counter" -p 28448 -t $((DURATION + 120)) -i 10 -n monitor$i > "$OUT/monitor$i.out" & pids+=($!)
done
sleep 1
CALLS=$((DURATION * RATE))
( while kill -0 $EPID 2>/dev/null; do
    echo "$(date -u +%s) $(awk '/^Pss:/ {print $2}' /proc/$EPID/smaps_rollup 2>/dev/null)"; sleep 10
  done ) > "$OUT/pss.txt" & pids+=($!)
echo "soak: $CALLS calls at $RATE/s for $DURATION s; results in $OUT"
(cd "$OUT" && sipp -sf "$HERE/common/uac_invite.xml" -i 127.0.0.1 -p 25070 -r "$RATE" -m "$CALLS" \
   -l 100000 -nostdin -timeout $((DURATION + 120))s -timeout_error -trace_stat -stf uac.csv \
   127.0.0.1:25060 > sipp.out 2>&1) && sipp_rc=0 || sipp_rc=$?
sleep 12   # the clients exit after 10 s without events
python3 - "$OUT" "$CALLS" "$sipp_rc" <<'PY'
import sys, os, re
out, calls, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = open(os.path.join(out, "uac.csv")).read().strip().splitlines()
head, last = rows[0].split(";"), rows[-1].split(";")
col = lambda n: int(last[head.index(n)])
ok, failed, retrans = col("SuccessfulCall(C)"), col("FailedCall(C)"), col("Retransmissions(C)")
def kv(path):
    text = open(os.path.join(out, path)).read()
    return dict(re.findall(r"(\w+)=([\w.\-]+)", text))
resp = kv("responder.out")
mons = [kv(f"monitor{i}.out") for i in range(1, 8)]
pss = [int(l.split()[1]) for l in open(os.path.join(out, "pss.txt")) if len(l.split()) == 2]
first_min = pss[min(6, len(pss) - 1)] if pss else 0
print(f"calls: {ok} successful, {failed} failed, {retrans} retransmissions (of {calls}; SIPp exit {rc})")
print(f"responder: events={resp.get('events')} replies={resp.get('replies')} bad={resp.get('bad')}")
for i, m in enumerate(mons, 1):
    print(f"monitor{i}: frames={m.get('frames')} bad={m.get('bad')} partial_tail={m.get('partial_tail')}")
if pss:
    print(f"evapi PSS kB: start {pss[0]}, after 1 min {first_min}, peak {max(pss)}, end {pss[-1]} ({len(pss)} samples)")
bad = []
if rc != 0 or failed or ok != calls: bad.append("failed calls")
if int(resp.get("events", -1)) != calls or int(resp.get("replies", -1)) != calls: bad.append("responder count")
for i, m in enumerate(mons, 1):
    if int(m.get("frames", -1)) != calls or int(m.get("bad", 1)) != 0: bad.append(f"monitor{i} count")
print("SOAK PASS" if not bad else "SOAK FAIL: " + ", ".join(bad))
sys.exit(1 if bad else 0)
PY
