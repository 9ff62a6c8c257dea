#!/usr/bin/env bash
# Run Detectron2's own unit tests (the tests/ folder of a Detectron2 source tree) against the Detectron2
# installed in the set-up environment; not part of CI (minutes). Extra arguments go to pytest.
#
#   bash dev/run_d2_unit_tests.sh                 # default: Detectron2 v0.6's own tests (git tag v0.6)
#   D2_TESTS_SOURCE=../detectron2-v0.6.tar.gz bash dev/run_d2_unit_tests.sh -k config
#   SEGALIAS_VENV=.venv-d2main D2_TESTS_SOURCE=<the source it was built from> bash dev/run_d2_unit_tests.sh
#
# D2_TESTS_SOURCE is a source folder, a source archive or a git URL[@rev] (as SEGALIAS_D2_SOURCE). The
# tests run from a temporary copy of tests/ only, so the installed Detectron2 (the v0.6 backport or an
# official build), not the source tree, is what is tested. Expected failures on the backport: tests that
# download model-zoo weights (no network), caffe2 export, and rotated/compiled ops (no detectron2._C);
# run a newer Detectron2's tests and its new features fail on v0.6 too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup_env.sh
source dev/_python.sh
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute: the tests run from a temporary folder
SOURCE="${D2_TESTS_SOURCE:-https://github.com/facebookresearch/detectron2.git@v0.6}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" - "$SOURCE" "$WORK" <<'PY'
import shutil, sys
from pathlib import Path

sys.path.insert(0, "dev")
from official_d2 import prepare_source  # noqa: E402  (folder / archive / git URL)

source, work = sys.argv[1], Path(sys.argv[2])
(work / "src").mkdir()
tree, checksum, commit = prepare_source(source, work / "src")
shutil.copytree(tree / "tests", work / "tests")
print(f"[d2-tests] tests/ of {source} (commit {commit or 'unknown'}, {checksum[:23]}...)", file=sys.stderr)
shutil.rmtree(work / "src")
PY
echo "[d2-tests] against: $("$PY" -m segalias_d2.collect_env 2>/dev/null | grep '^detectron2 source')"
cd "$WORK"
export MPLBACKEND=Agg
"$PY" -m pytest tests -q -p no:cacheprovider -rfE --continue-on-collection-errors -W ignore::DeprecationWarning "$@"
