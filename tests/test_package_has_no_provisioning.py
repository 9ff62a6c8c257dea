"""The runtime package holds only runtime code: no module of segalias_d2 imports pip or a network
client.

Provisioning (the Detectron2 backport build, pinned downloads, the demo builder) lives in dev/ and
datasets/. Two independent checks: the source of every package module (imports inside functions
included), and a fresh interpreter that imports every submodule with an import hook recording what
our modules import. Third-party libraries may load network modules themselves (torch.hub, iopath);
only our imports count, except pip, which nothing imported by the package may load.
"""

import ast
import json
import os
import pkgutil
import subprocess
import sys

import segalias_d2

PACKAGE_DIR = os.path.dirname(os.path.abspath(segalias_d2.__file__))
#: modules that download, talk to a server or run pip
FORBIDDEN = (
    "pip",
    "urllib.request",
    "http",
    "socket",
    "ssl",
    "ftplib",
    "requests",
    "urllib3",
    "httpx",
)


def _forbidden(name):
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _imported_names(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            yield str(node.args[0].value)


def test_no_package_source_imports_pip_or_a_network_module():
    found = []
    for dirpath, _, filenames in os.walk(PACKAGE_DIR):
        for name in filenames:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                found += [
                    (os.path.relpath(path, PACKAGE_DIR), n)
                    for n in _imported_names(tree)
                    if _forbidden(n)
                ]
    assert found == []


_PROBE = r"""
import builtins, importlib, importlib.util, json, pkgutil, sys
FORBIDDEN = %r
def forbidden(name):
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
hits = []
real_import, real_import_module = builtins.__import__, importlib.import_module
def record(importer, name, fromlist=()):
    if importer.startswith("segalias_d2"):
        hits.extend([importer, n] for n in [name] + [name + "." + f for f in fromlist or ()] if forbidden(n))
def hooked_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = real_import(name, globals, locals, fromlist, level)
    importer = (globals or {}).get("__name__", "")
    full = importlib.util.resolve_name("." * level + name, (globals or {}).get("__package__")) if level else name
    record(importer, full, fromlist)
    return module
def hooked_import_module(name, package=None):
    record(sys._getframe(1).f_globals.get("__name__", ""), importlib.util.resolve_name(name, package))
    return real_import_module(name, package)
builtins.__import__, importlib.import_module = hooked_import, hooked_import_module
import segalias_d2
names = sorted(m.name for m in pkgutil.walk_packages(segalias_d2.__path__, "segalias_d2."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "hits": hits, "pip_loaded": sorted(m for m in sys.modules if m == "pip" or m.startswith("pip."))}))
"""


def test_importing_every_submodule_loads_no_pip_and_no_network_module_of_ours():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE % (FORBIDDEN,)],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(PACKAGE_DIR),
        env=dict(os.environ, MPLBACKEND="Agg"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = {name for _, name, _ in pkgutil.walk_packages(segalias_d2.__path__, "segalias_d2.")}
    assert set(result["modules"]) == expected and "segalias_d2.collect_env" in expected
    assert result["hits"] == []
    assert result["pip_loaded"] == []
