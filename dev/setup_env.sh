#!/usr/bin/env bash
# One-step, idempotent set-up of the development environment:
#   1. a virtual environment at $SEGALIAS_VENV (default: .venv) with requirements/dev.txt,
#   2. Detectron2: an importable official build is used untouched; otherwise the pure-Python
#      v0.6 backport is installed (segalias_d2/compat/d2_v06_backport.py),
#   3. segalias_d2 itself, editable.
# A second run only checks a stamp and the imports (seconds) and changes nothing.
#
# To use an existing environment (e.g. one with an official CUDA Detectron2), set
# SEGALIAS_PYTHON=/path/to/python: no venv is created and no requirement is reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

if [[ -n "${SEGALIAS_PYTHON:-}" ]]; then
  PY="$SEGALIAS_PYTHON"
  STAMP_DIR="$ROOT/.cache"
  USE_OWN_VENV=0
else
  VENV="${SEGALIAS_VENV:-$ROOT/.venv}"
  PY="$VENV/bin/python"
  STAMP_DIR="$VENV"
  USE_OWN_VENV=1
fi
mkdir -p "$STAMP_DIR"
LOG="$STAMP_DIR/segalias_setup.log"
# quiet unless something fails: then show the log
run() { if ! "$@" >>"$LOG" 2>&1; then echo "[setup] FAILED: $*  (log: $LOG)"; tail -n 40 "$LOG"; exit 1; fi; }
STAMP_FILE="$STAMP_DIR/.segalias_setup_stamp"
STAMP="$(cat requirements/dev.txt setup.py segalias_d2/compat/d2_v06_backport.py | sha256sum | cut -d' ' -f1) $PY"

if [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP" ]] \
   && "$PY" -c "import detectron2, segalias_d2" >/dev/null 2>&1; then
  echo "[setup] environment up to date ($PY)"
  exit 0
fi

if [[ "$USE_OWN_VENV" == 1 ]]; then
  if [[ ! -x "$PY" ]]; then
    echo "[setup] creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  echo "[setup] installing pinned requirements (requirements/dev.txt)"
  : >"$LOG"
  run "$PY" -m pip install --upgrade "pip>=23" "setuptools==84.2.1" wheel
  run "$PY" -m pip install -r requirements/dev.txt
fi

run "$PY" segalias_d2/compat/d2_v06_backport.py --install
echo "[setup] Detectron2: $("$PY" segalias_d2/compat/d2_v06_backport.py --status) (official = used untouched)"
echo "[setup] installing segalias_d2 (editable)"
run "$PY" -m pip install --no-deps --no-build-isolation -e .
run "$PY" -c "import detectron2, segalias_d2"
echo "$STAMP" > "$STAMP_FILE"
echo "[setup] done ($PY)"
