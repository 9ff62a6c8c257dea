"""Survivor counts per module of a finished mutmut run (used by dev/run_mutation_tests.sh).

Usage: python dev/mutation_summary.py WORK_DIR [--survivors FILE] [--baseline EARLIER_WORK_DIR]

Reads ``mutmut results --all true`` in WORK_DIR (the scratch copy the run used) and prints, per
mutated module, the number of mutants, killed, survived, timeouts and others, and how many survivors
change only a string literal (error messages, log text: a weaker signal than a survivor that changes
a number or an operator). Those are told apart by comparing each surviving mutant's function with
its original in mutmut's trampolined copy (``mutants/<module>.py``), string constants blanked.

``--baseline`` compares with an earlier run (e.g. one whose survivors were rerun with
``run_mutation_tests.sh --mutants``): per module, the earlier survivors, how many of them the later
run killed, how many still survive, and how many it did not check (not rerun, or the mutated
function changed so the name is gone).
"""

import argparse
import ast
import collections
import os
import re
import subprocess
import sys

_NAME = re.compile(r"^\s*(?P<name>\S+): (?P<status>.+?)\s*$")
_MODULE = re.compile(r"^(?P<module>.*?)\.x(?:_|\u01c1)")


def _results(work_dir):
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        m = _NAME.match(line)
        if m and "__mutmut_" in m["name"]:
            rows.append((m["name"], m["status"]))
    return rows


class _BlankStrings(ast.NodeTransformer):
    def visit_Constant(self, node):
        return ast.Constant("") if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node):  # f-strings: keep the expressions, blank the text
        return ast.JoinedStr(
            [self.visit(v) for v in node.values if not isinstance(v, ast.Constant)]
        )


def _function_bodies(path):
    """{function name: (exact dump, dump with string constants blanked)} of the mutant / original
    copies."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name:
            body = ast.Module(body=[node.args, *node.body], type_ignores=[])
            blank = _BlankStrings().visit(
                ast.parse(ast.unparse(ast.Module(body=node.body, type_ignores=[])))
            )
            out[node.name] = (ast.dump(body), ast.dump(node.args) + ast.dump(blank))
    return out


def _string_only(work_dir, module, names):
    path = os.path.join(work_dir, "mutants", *module.split(".")) + ".py"
    if not os.path.exists(path):
        return 0
    bodies = _function_bodies(path)
    count = 0
    for full in names:
        fn = full[len(module) + 1 :]
        orig = fn.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
        if fn in bodies and orig in bodies and bodies[fn][1] == bodies[orig][1]:
            count += 1
    return count


def _module(name):
    m = _MODULE.match(name)
    return m["module"] if m else name.rsplit(".", 1)[0]


def _compare(before, after):
    after = dict(after)
    print(
        f"{'module':45s} {'survived before':>15s} {'killed now':>10s} {'survive now':>11s} "
        f"{'not checked now':>15s}"
    )
    totals = collections.Counter()
    rows = collections.OrderedDict()
    for name, status in before:
        if status == "survived":
            now = after.get(name, "not checked")
            key = {"killed": "killed", "survived": "survived"}.get(now, "other")
            rows.setdefault(_module(name), collections.Counter()).update(["before", key])
    for module, c in sorted(rows.items()):
        totals.update(c)
        print(
            f"{module:45s} {c['before']:15d} {c['killed']:10d} {c['survived']:11d} {c['other']:15d}"
        )
    print(
        f"{'total':45s} {totals['before']:15d} {totals['killed']:10d} {totals['survived']:11d} "
        f"{totals['other']:15d}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work_dir")
    ap.add_argument("--survivors", help="write the surviving mutant names here, one a line")
    ap.add_argument("--baseline", help="an earlier run's WORK_DIR: what became of its survivors")
    args = ap.parse_args(argv)
    if args.baseline:
        _compare(_results(args.baseline), _results(args.work_dir))
        return
    rows = _results(args.work_dir)
    by_module = collections.OrderedDict()
    for name, status in rows:
        by_module.setdefault(_module(name), []).append((name, status))
    header = (
        f"{'module':45s} {'mutants':>7s} {'killed':>7s} {'survived':>8s} {'(string only)':>13s} "
        f"{'timeout':>7s} {'other':>6s}"
    )
    print(header)
    totals = collections.Counter()
    survivors = []
    for module, items in sorted(by_module.items()):
        c = collections.Counter(status for _, status in items)
        surv = [n for n, s in items if s == "survived"]
        survivors += surv
        strings = _string_only(args.work_dir, module, surv)
        other = len(items) - c["killed"] - c["survived"] - c["timeout"]
        row = dict(
            mutants=len(items),
            killed=c["killed"],
            survived=c["survived"],
            strings=strings,
            timeout=c["timeout"],
            other=other,
        )
        totals.update(row)
        print(
            f"{module:45s} {row['mutants']:7d} {row['killed']:7d} {row['survived']:8d} "
            f"{strings:13d} {row['timeout']:7d} {other:6d}"
        )
    print(
        f"{'total':45s} {totals['mutants']:7d} {totals['killed']:7d} {totals['survived']:8d} "
        f"{totals['strings']:13d} {totals['timeout']:7d} {totals['other']:6d}"
    )
    print(
        "other = mutmut's 'no tests', 'suspicious', 'segfault', 'not checked', ... (see mutmut "
        "results --all true)"
    )
    if args.survivors:
        with open(args.survivors, "w") as f:
            f.write("".join(n + "\n" for n in survivors))


if __name__ == "__main__":
    main()
