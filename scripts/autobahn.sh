#!/usr/bin/env bash
# Autobahn|Testsuite fuzzing client (sections 1-10) against wsgate, twice:
#   wsgate-echo      backend.kind = "echo"
#   wsgate-upstream  backend.kind = "upstream" in front of `wstest -m echoserver`
# plus the echoserver alone as the reference. Fails (exit 1) when any case of
# any agent fails; see docs/conformance.md.
#
# Sections 12 and 13 (permessage-deflate) are excluded: wsgate negotiates no
# extension, so they can only report UNIMPLEMENTED, and they take ~11 minutes.
#
# Environment:
#   AUTOBAHN_DIR      where the suite is installed      (default /tmp/autobahn)
#   AUTOBAHN_PYTHON2  a Python 2.7 interpreter           (default: pyenv 2.7.18, else python2.7 on PATH)
#   AUTOBAHN_PROFILE  cargo profile of the gateway: debug | release (default debug)
#   AUTOBAHN_CASES    case pattern                       (default "*")
#   AUTOBAHN_OUT      report directory                   (default $AUTOBAHN_DIR/reports)
#   AUTOBAHN_NO_BUILD non-empty: use the already built target/<profile>/wsgate
# Without Python 2.7 the check is skipped (exit 0) with a message saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

D=${AUTOBAHN_DIR:-/tmp/autobahn}
PROFILE=${AUTOBAHN_PROFILE:-debug}
CASES=${AUTOBAHN_CASES:-*}
OUT=${AUTOBAHN_OUT:-$D/reports}
SUITE_VERSION=25.10.1

PY2=${AUTOBAHN_PYTHON2:-}
if [ -z "$PY2" ]; then
  for c in /root/.pyenv/versions/2.7.18/bin/python2.7 "$(command -v python2.7 || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then PY2=$c; break; fi
  done
fi
if [ -z "$PY2" ] || ! "$PY2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
  echo "autobahn: SKIPPED: no Python 2.7 interpreter (set AUTOBAHN_PYTHON2); autobahntestsuite runs only on Python 2.7"
  exit 0
fi

# --- install the suite (once) -------------------------------------------------
t0=$(date +%s)
if [ ! -x "$D/venv2/bin/wstest" ]; then
  echo "== installing autobahntestsuite $SUITE_VERSION into $D"
  mkdir -p "$D"
  export PIP_CACHE_DIR=$D/pipcache VIRTUALENV_OVERRIDE_APP_DATA=$D/vapp PIP_NO_PYTHON_VERSION_WARNING=1
  [ -x "$D/tools/bin/virtualenv" ] || {
    python3 -m venv "$D/tools"
    # The last virtualenv that still creates Python 2.7 environments.
    "$D/tools/bin/pip" install -q 'virtualenv<20.22'
  }
  rm -rf "$D/venv2"
  "$D/tools/bin/virtualenv" -q -p "$PY2" "$D/venv2"
  "$D/tools/bin/pip" download -q --no-deps -d "$D/dl" "autobahntestsuite==$SUITE_VERSION"
  tar -xzf "$D/dl/autobahntestsuite-$SUITE_VERSION.tar.gz" -C "$D"
  # Its requirements are pinned by the sdist itself (twisted, autobahn 0.x...).
  "$D/venv2/bin/pip" install -q -r "$D/autobahntestsuite-$SUITE_VERSION/autobahntestsuite.egg-info/requires.txt"
  "$D/venv2/bin/pip" install -q --no-deps "$D/dl/autobahntestsuite-$SUITE_VERSION.tar.gz"
fi
WSTEST=$D/venv2/bin/wstest
install_s=$(($(date +%s) - t0))
"$WSTEST" -a >/dev/null 2>&1 || { echo "autobahn: $WSTEST does not run"; exit 1; }

# --- build the gateway ----------------------------------------------------------
t0=$(date +%s)
WSGATE=$(cargo metadata --format-version 1 --no-deps |
  "$D/venv2/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$PROFILE/wsgate
if [ -n "${AUTOBAHN_NO_BUILD:-}" ]; then
  # scripts/test.sh: `cargo test` has just built it (with the dev-dependencies'
  # features unified in, which a plain `cargo build` would rebuild without).
  [ -x "$WSGATE" ] || { echo "autobahn: AUTOBAHN_NO_BUILD is set but $WSGATE is missing"; exit 1; }
  echo "== using $WSGATE"
else
  echo "== cargo build -p wsgate ($PROFILE)"
  if [ "$PROFILE" = release ]; then
    cargo build --quiet --release -p wsgate --bin wsgate
  else
    cargo build --quiet -p wsgate --bin wsgate
  fi
fi
build_s=$(($(date +%s) - t0))

# --- run ---------------------------------------------------------------------
WORK=$(mktemp -d)
# A private copy: another checkout sharing CARGO_TARGET_DIR may rebuild the
# binary under us.
cp "$WSGATE" "$WORK/wsgate"
WSGATE=$WORK/wsgate
PIDS=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  "$D/venv2/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # port, what, log
  for _ in $(seq 1 100); do
    if "$D/venv2/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "autobahn: $2 did not listen on 127.0.0.1:$1"; cat "$3"; exit 1
}

WSGATE_JWT_SECRET=$("$D/venv2/bin/python" -c 'import os,binascii; print(binascii.hexlify(os.urandom(32)).decode())')
WSGATE_IDENTITY_SECRET=$("$D/venv2/bin/python" -c 'import os,binascii; print(binascii.hexlify(os.urandom(32)).decode())')
export WSGATE_JWT_SECRET WSGATE_IDENTITY_SECRET
# One long-lived token: the suite opens one connection per case with the same
# subprotocol credential (it cannot send headers or redeem tickets).
TOKEN=$("$WSGATE" token --sub autobahn --ttl 2h)

UP_PORT=$(free_port)
"$WSTEST" -m echoserver -w "ws://127.0.0.1:$UP_PORT" -u 0 >"$WORK/echoserver.log" 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT" "wstest echoserver" "$WORK/echoserver.log"

# Limits out of the suite's way: it opens ~300 sockets in a row from one IP,
# sends thousands of frames per case and messages up to 16 MiB (section 9).
# messages_per_sec must be > 0 (config.rs); 10^7 is effectively unlimited.
start_gateway() { # name, backend toml; sets GW_PORT
  local name=$1 port admin
  port=$(free_port)
  admin=$(free_port)
  cat >"$WORK/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
path = "/ws"

[admin]
listen = "127.0.0.1:$admin"

[auth]
transports = ["subprotocol"]

[tickets]
enabled = false

[[auth.keys]]
alg = "HS256"
secret_env = "WSGATE_JWT_SECRET"

[origins]
allow_missing = true

[limits]
handshakes_per_ip_per_sec = 100000
handshake_burst_per_ip = 100000
connections_per_user = 0
max_message_bytes = 67108864
messages_per_sec = 10000000
idle_timeout = "600s"
ping_interval = "300s"

[log]
level = "info"

$2
EOF
  "$WSGATE" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" "wsgate ($name)" "$WORK/$name.log"
  GW_PORT=$port
}
start_gateway echo $'[backend]\nkind = "echo"'
ECHO_PORT=$GW_PORT
start_gateway upstream "[backend]
kind = \"upstream\"
upstream = \"ws://127.0.0.1:$UP_PORT\"
identity_secret_env = \"WSGATE_IDENTITY_SECRET\""
PROXY_PORT=$GW_PORT

mkdir -p "$OUT"
# Only what a previous run wrote (OUT may be a directory with other things).
find "$OUT" -maxdepth 1 \( -name 'index.*' -o -name '*_case_*' \) -delete
rm -rf "$OUT/logs"
cat >"$WORK/spec.json" <<EOF
{"outdir": "$OUT",
 "servers": [
   {"agent": "wsgate-echo", "url": "ws://127.0.0.1:$ECHO_PORT/ws", "protocols": ["jwt", "$TOKEN"]},
   {"agent": "wsgate-upstream", "url": "ws://127.0.0.1:$PROXY_PORT/ws", "protocols": ["jwt", "$TOKEN"]},
   {"agent": "reference-echoserver", "url": "ws://127.0.0.1:$UP_PORT"}
 ],
 "cases": ["$CASES"],
 "exclude-cases": ["12.*", "13.*"],
 "exclude-agent-cases": {}}
EOF
echo "== wstest -m fuzzingclient (sections 1-10; 12/13 excluded: no permessage-deflate)"
t0=$(date +%s)
# The suite's own log names every case; keep it out of the way unless it fails.
if ! (cd "$WORK" && "$WSTEST" -m fuzzingclient -s spec.json >"$WORK/fuzzingclient.log" 2>&1); then
  tail -n 50 "$WORK/fuzzingclient.log"
  echo "autobahn: wstest failed"; exit 1
fi
fuzz_s=$(($(date +%s) - t0))
mkdir -p "$OUT/logs"
cp "$WORK"/*.log "$OUT/logs/"

# The reports quote each handshake, token included. The token is worthless
# once this run's random key is gone, but keep it out of artifacts anyway;
# the gateway must never log it at all.
if grep -lF "$TOKEN" "$OUT/logs/echo.log" "$OUT/logs/upstream.log"; then
  echo "autobahn: FAILED: the gateway logged the token (files above)"; exit 1
fi
grep -rlF "$TOKEN" "$OUT" | xargs -r sed -i "s/$TOKEN/<token>/g"

# --- verdict -------------------------------------------------------------------
# A case passes when behavior is OK / NON-STRICT / INFORMATIONAL / UNIMPLEMENTED
# and behaviorClose is OK / INFORMATIONAL.
status=0
"$D/venv2/bin/python" - "$OUT/index.json" <<'EOF' || status=1
from __future__ import print_function
import json, sys
from collections import Counter
index = json.load(open(sys.argv[1]))
PASS = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
PASS_CLOSE = {"OK", "INFORMATIONAL"}
def key(case):
    return [int(p) for p in case.split(".")]
bad = False
agents = ["reference-echoserver", "wsgate-echo", "wsgate-upstream"]
counts = dict((a, len(index.get(a, {}))) for a in agents)
if len(set(counts.values())) != 1 or not counts[agents[0]]:
    # A gateway that refused every handshake must not pass by having no cases.
    print("autobahn: case counts differ or are zero:", counts)
    bad = True
for agent in sorted(index):
    cases = index[agent]
    counts = Counter(r["behavior"] for r in cases.values())
    failed = sorted((c for c, r in cases.items()
                     if r["behavior"] not in PASS or r["behaviorClose"] not in PASS_CLOSE), key=key)
    summary = ", ".join("%s %d" % (b, counts[b]) for b in
                        ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "WRONG CODE", "UNCLEAN"] if counts[b])
    other = sorted(set(counts) - {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "WRONG CODE", "UNCLEAN"})
    summary += "".join(", %s %d" % (b, counts[b]) for b in other)
    print("%-22s %3d cases: %s" % (agent, len(cases), summary))
    for b in ("NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"):
        ids = sorted((c for c, r in cases.items() if r["behavior"] == b), key=key)
        if ids:
            print("  %s: %s" % (b, " ".join(ids)))
    if failed:
        bad = True
        print("  FAILED:", " ".join("%s(%s/%s)" % (c, cases[c]["behavior"], cases[c]["behaviorClose"]) for c in failed))
sys.exit(1 if bad else 0)
EOF
echo "autobahn: reports in $OUT/index.html (logs in $OUT/logs)"
echo "autobahn: install ${install_s}s, build ${build_s}s, fuzzing ${fuzz_s}s, total $(($(date +%s) - start))s"
if [ "$status" -ne 0 ]; then
  echo "autobahn: FAILED (details per case in $OUT/<agent>_case_<id>.json)"
  for f in "$OUT"/logs/echo.log "$OUT"/logs/upstream.log; do echo "-- $f (last 20 lines)"; tail -n 20 "$f"; done
fi
exit "$status"
