#!/bin/bash
# Build `evapi` with profile-guided optimisation (PGO; issue #15).
#
#   bench/pgo.sh            # the binary: target-pgo/<host>/release/evapi
#                           # (<host> as rustc -vV says, e.g. x86_64-unknown-linux-gnu)
#   bench/pgo.sh --deb      # the Debian package instead (cargo deb's `deb`
#                           # profile, trained as itself), into target-pgo/debian/
#   EVAPI_BIN=target-pgo/x86_64-unknown-linux-gnu/release/evapi bench/compare.sh --quick
#
# Four steps:
#   1. an instrumented release build (-Cprofile-generate), into target-pgo/;
#   2. training: that binary under the load of bench/compare.py's rows, ours
#      only, at rates it passes even instrumented (stateless, relay to 1 and
#      8 clients, the async round trip, the latency probe, Kamailio's example
#      script, dialogs): the paths a router spends its time on. The raw
#      profile goes to target-pgo/profile/raw/, the training's output to
#      target-pgo/profile/train/;
#   3. llvm-profdata merges it into target-pgo/profile/evapi-<hash>.profdata
#      (named by its content, so that a new profile rebuilds what it changes);
#   4. the same build again with that profile (-Cprofile-use).
# The instrumented and the final build use the same cargo profile: a Rust
# function's name in the profile carries its crate's hash, which differs
# between cargo profiles, so a profile taken from a `release` build would
# miss nearly every Rust function of a `deb` build.
# The profile covers our Rust code and the Rust crates, and Lua's
# interpreter (C, built by the cc crate) when a clang of rustc's own LLVM
# version is installed (clang-22 for rustc 1.95: Debian's package clang-22):
# Lua is then compiled by that clang, instrumented and trained with the rest.
# Without it, Lua is compiled by the system's cc as in any build. PGO_CC
# names another clang; PGO_CC=none keeps the system's cc.
#
# What it gives, per request, on this project's 2-core machine (BENCHMARKS.md,
# "Profile-guided optimisation"): about 16 % fewer user-space instructions on
# both the stateless and the relay script, and 6 % / 12 % less CPU.
#
# Needs: rustup's llvm-tools component (its llvm-profdata matches rustc's
# LLVM; `rustup component add llvm-tools`), and what compare.py needs for our
# rows: sip-tester, gcc, python3; clang-22 for Lua's part. cargo-deb for --deb. Takes about
# 25 minutes on 2 cores: two release builds (fat LTO) and three minutes of
# load. Ports as compare.py's (127.0.0.1 only).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
TARGET=$(rustc -vV | sed -n 's/^host: //p')
OUT="$REPO/target-pgo"
PROF="$OUT/profile"

deb=false
profile=release
for arg in "$@"; do
  case "$arg" in
    --deb) deb=true; profile=deb ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench/pgo.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

BIN="$OUT/$TARGET/$profile/evapi"

fail() { echo "bench/pgo.sh: $*" >&2; exit 1; }
step() { echo "== pgo: $*" >&2; }

sysroot="$(rustc --print sysroot)"
profdata="$sysroot/lib/rustlib/$TARGET/bin/llvm-profdata"
[ -x "$profdata" ] || fail "no llvm-profdata at $profdata: install it with 'rustup component add llvm-tools'"
missing=()
command -v sipp >/dev/null || missing+=(sip-tester)
command -v cc >/dev/null || missing+=(gcc)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  fail "missing Debian packages: ${missing[*]} (apt-get install -y ${missing[*]})"
fi
if $deb && ! command -v cargo-deb >/dev/null; then
  fail "--deb needs cargo-deb (cargo install cargo-deb --locked)"
fi

# Lua's C with the profile: a clang whose LLVM reads and writes rustc's
# profile format (the same major version).
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
lua_cc="${PGO_CC:-clang-$llvm_major}"
if [ "$lua_cc" = none ] || ! command -v "$lua_cc" >/dev/null; then
  [ "$lua_cc" = none ] || echo "note: no $lua_cc: Lua's C is built by the system's cc, without the profile" >&2
  lua_cc=""
fi
# The cc crate's variables for the target (set only for it, as RUSTFLAGS).
cc_var="CC_${TARGET//-/_}"
cflags_var="CFLAGS_${TARGET//-/_}"

# cargo in the repository with rustc's flag $1 and, when Lua's C has its
# clang, the C compiler's flag $2; the rest are cargo's arguments.
cargo_with() {
  local rustflags=$1 cflags=$2 cenv=()
  shift 2
  [ -n "$lua_cc" ] && cenv=("$cc_var=$lua_cc" "$cflags_var=$cflags")
  (cd "$REPO" && env "${cenv[@]}" RUSTFLAGS="$rustflags" CARGO_TARGET_DIR="$OUT" cargo "$@")
}

# --target keeps RUSTFLAGS off build scripts and proc macros: only the
# program is instrumented, and only it reads the profile. $1: rustc's flag,
# $2: the C compiler's.
build() {
  cargo_with "$1" "$2" build --profile "$profile" -q --target "$TARGET" -p evapi-cli --bin evapi
}

step "1/4 instrumented build"
rm -rf "$PROF"
mkdir -p "$PROF/raw"
build "-Cprofile-generate=$PROF/raw" "-fprofile-generate=$PROF/raw"

step "2/4 training under load (about three minutes)"
# A row that fails its pass rule still trains; a server that never ran does
# not (checked below by the profile's size).
python3 "$HERE/compare.py" --quick --servers evapi \
  --only base,relay1,relay8,async,probe,basic,dialog \
  --rates base=10000 --rates relay1=8000 --rates relay8=4000 --rates async=2000 \
  --rates basic=500 --rates dialog=500 --retries 0 --steal-retries 0 \
  --evapi-bin "$BIN" --out "$PROF/train" >"$PROF/train.log" 2>&1 ||
  echo "note: the training run exited non-zero (see $PROF/train.log); its profile is used" >&2
shopt -s nullglob
raw=("$PROF"/raw/*.profraw)
[ ${#raw[@]} -gt 0 ] && [ -s "${raw[0]}" ] ||
  fail "the training left no profile in $PROF/raw (see $PROF/train.log)"

step "3/4 merging ${#raw[@]} raw profile(s)"
"$profdata" merge -o "$PROF/merged.profdata" "${raw[@]}"
# Cargo does not watch a file named in RUSTFLAGS: the name changes with
# the content instead.
merged="$PROF/evapi-$(sha256sum "$PROF/merged.profdata" | cut -c1-16).profdata"
mv "$PROF/merged.profdata" "$merged"

step "4/4 $profile build with the profile"
use_c="-fprofile-use=$merged -Wno-profile-instr-unprofiled -Wno-profile-instr-out-of-date"
build "-Cprofile-use=$merged" "$use_c"
echo "$BIN"

if $deb; then
  step "the Debian package with the profile"
  cargo_with "-Cprofile-use=$merged" "$use_c" deb -p evapi-cli --profile deb --target "$TARGET" \
    --output "$OUT/debian/"
fi
