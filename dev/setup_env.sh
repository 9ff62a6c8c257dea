#!/usr/bin/env bash
# One-step, idempotent set-up of the development environment:
#   1. a virtual environment at $SEGALIAS_VENV (default: .venv) with the pinned build tools
#      (requirements/build.txt) and requirements/dev.txt,
#   2. Detectron2:
#      - default: an importable official build is used untouched; otherwise the pure-Python v0.6
#        backport is built and installed (dev/d2_backport/build_backport.py);
#      - SEGALIAS_D2_SOURCE=<source folder | source archive | git URL>: official Detectron2 is built
#        from that source (CPU-only unless FORCE_CUDA=1 or torch sees a GPU and nvcc is present;
#        MAX_JOBS=2 by default) and installed, replacing a backport (dev/official_d2.py). The wheel is
#        cached in ~/.cache/segalias_d2/wheels, keyed on the source checksum and the torch version.
#        SEGALIAS_D2_SHA256=<hex> verifies an archive first.
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
D2_SOURCE="${SEGALIAS_D2_SOURCE:-}"
mkdir -p "$STAMP_DIR"
LOG="$STAMP_DIR/segalias_setup.log"
# quiet unless something fails: then show the log
run() { if ! "$@" >>"$LOG" 2>&1; then echo "[setup] FAILED: $*  (log: $LOG)"; tail -n 40 "$LOG"; exit 1; fi; }
STAMP_FILE="$STAMP_DIR/.segalias_setup_stamp"
STAMP="$( (cat requirements/*.txt setup.py dev/official_d2.py datasets/pinned_sources.py;
           find dev/d2_backport -type f -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs cat;
           echo "$D2_SOURCE ${SEGALIAS_D2_SHA256:-}") | sha256sum | cut -d' ' -f1) $PY"

if [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP" ]] \
   && "$PY" -c "import detectron2, segalias_d2" >/dev/null 2>&1; then
  echo "[setup] environment up to date ($PY)"
  exit 0
fi
: >"$LOG"

if [[ "$USE_OWN_VENV" == 1 ]]; then
  if [[ ! -x "$PY" ]]; then
    echo "[setup] creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  echo "[setup] installing pinned requirements (requirements/build.txt, requirements/dev.txt)"
  run "$PY" -m pip install -r requirements/build.txt
  run "$PY" -m pip install -r requirements/dev.txt
fi

if [[ -n "$D2_SOURCE" ]]; then
  echo "[setup] Detectron2: official, from SEGALIAS_D2_SOURCE=$D2_SOURCE (first build: minutes; then cached)"
  if ! "$PY" dev/official_d2.py "$D2_SOURCE" --python "$PY" >>"$LOG" 2>&1; then
    echo "[setup] FAILED: official Detectron2 build (log: $LOG)"; grep "^error" "$LOG" || tail -n 40 "$LOG"; exit 1
  fi
  grep "^\[official-d2\]" "$LOG" | sed 's/^/[setup] /'
else
  if ! "$PY" dev/d2_backport/build_backport.py --install --python "$PY" >>"$LOG" 2>&1; then
    echo "[setup] FAILED: Detectron2 v0.6 backport (log: $LOG)"; grep "^error" "$LOG" || tail -n 20 "$LOG"; exit 1
  fi
fi
echo "[setup] Detectron2: $("$PY" dev/d2_backport/build_backport.py --status --python "$PY") (official = used untouched)"
echo "[setup] installing segalias_d2 (editable)"
run "$PY" -m pip install --no-deps --no-build-isolation -e .
run "$PY" -c "import detectron2, segalias_d2"
# official Detectron2's model zoo imports pkg_resources, which setuptools >= 81 no longer ships
if ! "$PY" -W ignore -c "import detectron2.model_zoo" >>"$LOG" 2>&1; then
  echo "[setup] WARNING: detectron2.model_zoo does not import (log: $LOG); with an official Detectron2 this is" \
       "setuptools >= 81 (no pkg_resources): $PY -m pip install -r requirements/build.txt"
fi
echo "$STAMP" > "$STAMP_FILE"
echo "[setup] done ($PY)"
