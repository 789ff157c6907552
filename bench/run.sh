#!/usr/bin/env bash
# run.sh - the benchmark suite in one command.
#   bash bench/run.sh            full run (~10 min) -> bench/RESULTS.md
#   bash bench/run.sh --smoke    tiny sizes (< 60 s once built), for CI: proves it runs
# Options: --out FILE, --build-dir DIR, --no-peers, --check (smoke: verify the figures exist).
# Reuses the broker and Redis of FP_SERVICES_ENV if set, else starts private ones with
# tests/harness/services.sh and stops them at the end. Peers need bench/.venv (created here
# from PyPI on first use: confluent-kafka, redis, quixstreams).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec python3 "$HERE/run.py" "$@"
