#!/usr/bin/env bash
# spark-ota's protocol-level rollout simulation at full size (issue 5, "Proof"), outside CI:
# 2000 simulated devices (10-20 % offline) doing real mutual-TLS HTTPS check-ins and status
# reports against the real server, whose rollouts run on a time-compressed clock (x300).
#   - a release failing on 20 % of the devices pauses itself in wave 1 before more than
#     threshold x wave + sample devices failed, and nothing outside wave 1 is offered;
#   - a good release opens each wave of the fast plan on schedule and reaches every online device.
# CI runs the same code with 200 devices (tests/ota/sim.rs, sim_200_*). Figures go to
# ota-server/spark-ota/README.md.
#
#   ci/ota-sim.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUST_LOG="${RUST_LOG:-warn}" cargo test --locked -p spark-ota --test ota sim::sim_2000 -- \
    --ignored --nocapture --test-threads 1
