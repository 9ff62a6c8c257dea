#!/usr/bin/env bash
# Set up the environment if needed (idempotent), then run the whole test suite on CPU.
# Extra arguments go to pytest, e.g.: bash dev/run_tests.sh -k backbone
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup_env.sh
source dev/_python.sh
export MPLBACKEND=Agg
exec "$PY" -m pytest tests -q -p no:cacheprovider "$@"
