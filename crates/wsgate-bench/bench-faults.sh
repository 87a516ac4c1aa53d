#!/usr/bin/env bash
# Store faults (docs/clustering.md, "Faults, one by one"): runs the fault
# tests of crates/wsgate/tests/faults.rs against real redis-servers and a
# fault-injecting proxy, and prints the figures they measure: recovery
# times, and the slot counts after each fault. Every test also asserts that
# no revoked token was admitted during its fault.
#
#   crates/wsgate-bench/bench-faults.sh
#
# Needs redis-server and redis-cli, and Redis on 127.0.0.1:6379 for the
# first test (scripts/test.sh starts one). A debug build: the figures are
# timers and round trips, not CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test -p wsgate --test faults -- --nocapture --test-threads 1 2>&1 |
    grep -oE 'fault [0-9]+:.*|test result.*|.*FAILED.*|.*panicked.*'
