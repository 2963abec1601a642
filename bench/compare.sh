#!/bin/bash
# Side by side: Kamailio 5.6.3 (evapi module) and our `evapi run`, same box,
# same SIPp scenarios, same evapi clients, one invocation.
#
#   bench/compare.sh            # full run (~45-60 min on a quiet 2-core box)
#   bench/compare.sh --quick    # fewer rates, 5 s runs, no repeats (~15-20 min)
#   bench/compare.sh --only relay8,async --servers evapi   # a subset
#   bench/compare.sh --only basic   # Kamailio's example KEMI Lua script on both (needs app_lua:
#                                   # kamailio-lua-modules; and KSR.rr in our binary)
#   bench/compare.sh --only dialog  # dialog tracking on both (Kamailio's dialog module), calls/s and
#                                   # memory per live dialog (bench/dialog.py)
#   bench/compare.sh --only nats [--quick]   # scale-out over NATS: two nodes, two workers,
#                                            # against the TCP path (bench/nats.py; needs nats-server)
#   bench/compare.sh --help     # every option (bench/compare.py)
#
# Both servers get the same UDP receive buffer, 1 MB (Kamailio's maxbuffer, our
# [sip] udp_recv_buffer); --udp-buffer BYTES changes it, --udp-buffer 0 leaves each
# its own default (Kamailio 256 KB, ours 1 MB).
#
# Needs (Debian packages; nothing is installed by this script):
#   kamailio kamailio-extra-modules kamailio-json-modules   (Kamailio 5.6.3 with evapi, jansson)
#   kamailio-lua-modules                                    (app_lua, for the basic row)
#   sip-tester                                              (SIPp)
#   gcc libc6-dev python3                                   (the frame counter, the C probe and
#                                                           # responder, the Python clients)
#   python3-matplotlib or `pip install matplotlib`          (the plot; optional)
# and a Rust toolchain (our binary is built in release into target-bench/,
# unless EVAPI_BIN names one). Ports (127.0.0.1 only): SIP_PORT (15060),
# EVAPI_PORT (18448), SIPP_PORT (15070; +100 and +200 for SIPp control and media), HTTP_PORT
# (19060, our admin HTTP listener; --evapi-http off|none and --scrape S: see --help).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"

# which rows: --only (app_lua only for the basic row; the nats row is bench/nats.py)
only=""; prev=""
for arg in "$@"; do
  case "$arg" in --only=*) only="${arg#--only=}" ;; esac
  [ "$prev" = "--only" ] && only="$arg"
  prev="$arg"
done
# The NATS row (bench/nats.py): two evapi nodes and two workers over a
# nats-server, against the direct TCP path; no Kamailio.
if [ "$only" = "nats" ]; then
  missing=()
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
  command -v sipp >/dev/null || missing+=(sip-tester)
  command -v python3 >/dev/null || missing+=(python3)
  command -v ss >/dev/null || missing+=(iproute2)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/compare.sh: missing Debian packages: ${missing[*]}" >&2
    echo "install them (as root) with: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  export PATH="$PATH:/usr/sbin"
  if [ -z "${EVAPI_BIN:-}" ] || [ -z "${WORKER_BIN:-}" ]; then
    echo "building evapi and the NATS bench worker (release, target-bench/) ..." >&2
    (cd "$REPO" && CARGO_TARGET_DIR="$REPO/target-bench" cargo build --release -q -p evapi-cli -p nats \
      --bin evapi --example bench_worker)
    export EVAPI_BIN="${EVAPI_BIN:-$REPO/target-bench/release/evapi}"
    export WORKER_BIN="${WORKER_BIN:-$REPO/target-bench/release/examples/bench_worker}"
  fi
  exec python3 "$HERE/nats.py" "$@"
fi

missing=()
command -v kamailio >/dev/null || missing+=(kamailio)
for m in evapi jansson; do
  compgen -G "/usr/lib/*/kamailio/modules/$m.so" >/dev/null || compgen -G "/usr/lib/kamailio/modules/$m.so" >/dev/null || \
    missing+=("kamailio-$( [ $m = evapi ] && echo extra || echo json )-modules")
done
if [ -z "$only" ] || [[ ",$only," == *",basic,"* ]]; then
  compgen -G "/usr/lib/*/kamailio/modules/app_lua.so" >/dev/null || missing+=(kamailio-lua-modules)
fi
command -v sipp >/dev/null || missing+=(sip-tester)
command -v cc >/dev/null || missing+=(gcc)
command -v python3 >/dev/null || missing+=(python3)
command -v ss >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/compare.sh: missing Debian packages: ${missing[*]}" >&2
  echo "install them (as root) with: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 2
fi
kv=$(kamailio -v | head -1)
case "$kv" in
  *"kamailio 5.6."*) ;;
  *) echo "note: the anchor is Kamailio 5.6.3; found: $kv" >&2 ;;
esac
python3 -c 'import matplotlib' 2>/dev/null || \
  echo "note: python3 matplotlib not found (apt-get install python3-matplotlib, or pip install matplotlib): no plot" >&2

# The C clients (counter, probe, responder) are built by compare.py when
# missing or older than their source (c_tool), into bench/build/.
if [ -z "${EVAPI_BIN:-}" ]; then
  echo "building evapi (release, target-bench/) ..." >&2
  (cd "$REPO" && CARGO_TARGET_DIR="$REPO/target-bench" cargo build --release -q -p evapi-cli)
  export EVAPI_BIN="$REPO/target-bench/release/evapi"
fi
exec python3 "$HERE/compare.py" "$@"
