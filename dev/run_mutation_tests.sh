#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (not part of CI: it takes tens of minutes on 2 cores).
#
#   bash dev/run_mutation_tests.sh                       # the working tree as it is
#   bash dev/run_mutation_tests.sh --rev e9029f9         # a commit (package and tests)
#   bash dev/run_mutation_tests.sh --package-rev e9029f9 # the package of a commit, the tests of the working tree
#   bash dev/run_mutation_tests.sh --max-children 1      # mutmut workers (default 2)
#   bash dev/run_mutation_tests.sh --mutants FILE        # only these mutants (names or fnmatch globs, one a line),
#                                                        # e.g. the survivors.txt of an earlier run
#
# What is mutated and which tests run: dev/mutation.cfg (mutmut's [mutmut] section; test files that the tree does
# not have are left out with a note). mutmut itself is pinned in requirements/mutation.txt and installed into the
# environment of dev/setup_env.sh on first use. The run happens in a scratch copy (default output/mutation/run,
# or $SEGALIAS_MUTATION_DIR), never in the repository: mutmut writes its trampolined copy under mutants/ there.
# At the end it prints survivors per module (dev/mutation_summary.py) and writes them to summary.txt and
# survivors.txt in the scratch copy. Look at one with:
#   cd output/mutation/run && ../../../.venv/bin/python -m mutmut show <mutant name>
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source dev/_python.sh

REV="" PACKAGE_REV="" CHILDREN=2 MUTANTS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rev) REV="$2"; shift 2 ;;
    --package-rev) PACKAGE_REV="$2"; shift 2 ;;
    --max-children) CHILDREN="$2"; shift 2 ;;
    --mutants) MUTANTS=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run_mutation_tests.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

[[ -x "$PY" ]] || bash dev/setup_env.sh
want=$(sed -n 's/^mutmut==//p' requirements/mutation.txt)
have=$("$PY" -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null || true)
if [[ "$have" != "$want" ]]; then
  echo "[mutation] installing requirements/mutation.txt (mutmut $want) into $("$PY" -c 'import sys; print(sys.prefix)')"
  "$PY" -m pip install -q -r requirements/mutation.txt
fi

WORK="${SEGALIAS_MUTATION_DIR:-$ROOT/output/mutation/run}"
rm -rf "$WORK"
mkdir -p "$WORK"
if [[ -n "$REV" ]]; then
  git archive "$REV" | tar -x -C "$WORK"
else  # tracked and untracked-but-not-ignored files: what a commit of the working tree would hold
  git ls-files -z -c -o --exclude-standard | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
    | tar -c --null -T - | tar -x -C "$WORK"
fi
if [[ -n "$PACKAGE_REV" ]]; then
  rm -rf "$WORK/segalias_d2"
  git archive "$PACKAGE_REV" segalias_d2 | tar -x -C "$WORK"
fi
# the config, without the test files this tree does not have
"$PY" - "$ROOT/dev/mutation.cfg" "$WORK" <<'EOF'
import configparser, os, sys
src, work = sys.argv[1], sys.argv[2]
cfg = configparser.ConfigParser()
cfg.read(src)
tests = [t for t in cfg["mutmut"]["pytest_add_cli_args_test_selection"].split() if t]
kept = [t for t in tests if os.path.exists(os.path.join(work, t))]
for t in sorted(set(tests) - set(kept)):
    print(f"[mutation] not in this tree, left out: {t}")
cfg["mutmut"]["pytest_add_cli_args_test_selection"] = "\n" + "\n".join(kept)
with open(os.path.join(work, "setup.cfg"), "w") as f:
    cfg.write(f)
EOF

echo "[mutation] tree: ${REV:-working tree}${PACKAGE_REV:+, package from $PACKAGE_REV}; scratch copy: $WORK"
cd "$WORK"
export MPLBACKEND=Agg OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
start=$(date +%s)
status=0
names=()
[[ -z "$MUTANTS" ]] || mapfile -t names < <(grep -v '^[[:space:]]*$' "$MUTANTS")
"$PY" -m mutmut run --max-children "$CHILDREN" "${names[@]}" > mutmut_run.log 2>&1 || status=$?
echo "[mutation] mutmut run exited $status after $(( $(date +%s) - start )) s (log: $WORK/mutmut_run.log)"
"$PY" "$ROOT/dev/mutation_summary.py" "$WORK" --survivors "$WORK/survivors.txt" | tee "$WORK/summary.txt"
exit "$status"
