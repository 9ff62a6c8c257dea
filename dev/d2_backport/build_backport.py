#!/usr/bin/env python
"""Build and install the pure-Python Detectron2 v0.6 backport (used when no official Detectron2 is
importable).

Detectron2 is not on the package index. The only copy there is the ``pb1-detectron2==0.6`` source
distribution, whose Python files are identical to the official v0.6 tag but which has no C++ sources
(its setup.py cannot build). This script turns it into a pure-Python distribution named
``detectron2`` (so ``pip show``/``pip uninstall detectron2`` behave normally):

1. fetch the pinned sdist (datasets/pinned_sources.py: pip download + sha256) and extract
   ``detectron2/``;
2. apply every fix in ``patches/*.patch``, in name order (unified diffs; the first line of each file
   says what it fixes, and each must apply exactly);
3. copy ``files/`` over the tree (``detectron2/_C.py``, a stand-in for the compiled extension; the
   marker module ``detectron2/_segalias_backport.py``; ``setup.py``) and write the build record
   ``detectron2/_segalias_backport.json``;
4. ``pip install --no-deps --no-build-isolation`` the tree into the target environment.

Fixing at build time, not by monkeypatching at import, keeps the fixes independent of import order,
never touches numpy/PIL globally, and never modifies an official Detectron2: ``--install`` does
nothing when one is importable. Standard library only (it runs before Detectron2 exists)::

    # no-op if an official Detectron2 is there
    python dev/d2_backport/build_backport.py --install
    # missing / official / backport-REV-KEY
    python dev/d2_backport/build_backport.py --status
    # only write the patched tree
    python dev/d2_backport/build_backport.py --source-tree DIR

To change a fix: write the tree with ``--source-tree``, edit it, and ``diff -u`` the file against
the unpatched one into a patch here. Any change to this folder changes the build key, and set-up
reinstalls.
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import pinned_sources  # noqa: E402  (datasets/pinned_sources.py, standard library only)

PIN = pinned_sources.PINS["pb1-detectron2"]
TOP = "pb1-detectron2-0.6"
#: bump when the kind of build changes (the build key covers every file of this folder anyway)
BACKPORT_REVISION = 3
DIST_VERSION = f"0.6+segalias.backport{BACKPORT_REVISION}"
MARKER_MODULE = "_segalias_backport"
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(RuntimeError):
    pass


def patch_files():
    return sorted((HERE / "patches").glob("*.patch"))


def build_key() -> str:
    """sha256 of the pinned source and of every file that makes the build (this script, patches,
    files/)."""
    digest = hashlib.sha256(PIN.sha256.encode())
    for path in sorted(p for p in HERE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def patch_summary(path: Path) -> str:
    return path.read_text().split("\n", 1)[0].strip()


def _parse_patch(path: Path):
    """[(relative file, [(old_start, old_lines, new_lines)])] of a unified diff (text before it is
    ignored)."""
    files, hunks, lines = [], None, path.read_text().splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            target = lines[i + 1][4:].strip().split("\t")[0]
            hunks = []
            files.append((target[2:] if target.startswith("b/") else target, hunks))
            i += 2
            continue
        m = _HUNK.match(line)
        if m and hunks is not None:
            old_len = int(m.group(2) or 1)
            new_len = int(m.group(4) or 1)
            old, new = [], []
            i += 1
            while (len(old) < old_len or len(new) < new_len) and i < len(lines):
                body = lines[i]
                tag, text = body[:1], body[1:]
                if tag == " ":
                    old.append(text)
                    new.append(text)
                elif tag == "-":
                    old.append(text)
                elif tag == "+":
                    new.append(text)
                elif (
                    body.rstrip("\n") == ""
                ):  # an empty context line whose leading space was stripped
                    old.append("\n")
                    new.append("\n")
                else:
                    raise PatchError(f"{path.name}: malformed hunk line {i + 1}: {body!r}")
                i += 1
            if len(old) != old_len or len(new) != new_len:
                raise PatchError(f"{path.name}: truncated hunk '{line.strip()}'")
            hunks.append((int(m.group(1)), old, new))
            continue
        i += 1
    if not files:
        raise PatchError(f"{path.name}: no file diff found")
    return files


def apply_patch(path: Path, root: Path):
    """Apply the unified diff ``path`` to the tree ``root``; every hunk must match its text
    exactly."""
    for rel, hunks in _parse_patch(path):
        target = root / rel
        if not target.is_file():
            raise PatchError(f"{path.name}: {rel} does not exist in the source tree")
        text = target.read_text().splitlines(keepends=True)
        offset = 0
        for start, old, new in hunks:
            at = max(start - 1 + offset, 0)
            if text[at : at + len(old)] != old:
                found = [
                    k for k in range(len(text) - len(old) + 1) if text[k : k + len(old)] == old
                ]
                if len(found) != 1:
                    raise PatchError(
                        f"{path.name} does not apply to {rel}: hunk at line {start} "
                        f"{'not found' if not found else 'ambiguous'}"
                    )
                at = found[0]
            text[at : at + len(old)] = new
            offset = at + len(new) - (start - 1) - len(old)
        target.write_text("".join(text))


def build_source_tree(dest: Path, python: str = None) -> Path:
    """Fetch the pinned sdist, extract ``detectron2/``, apply the patches and copy ``files/`` into
    ``dest``."""
    archive = pinned_sources.fetch_sdist(PIN, python=python)
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # refuses unsafe paths
    with tarfile.open(archive) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.name.startswith(f"{TOP}/detectron2/") or m.name == f"{TOP}/LICENSE"
        ]
        tar.extractall(dest, members=members, **kwargs)
    root = Path(dest) / TOP
    patches = patch_files()
    for patch in patches:
        apply_patch(patch, root)
    for src in sorted(
        p for p in (HERE / "files").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ):
        out = root / src.relative_to(HERE / "files")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    record = {
        "source": f"{PIN.filename} (sha256 {PIN.sha256})",
        "revision": BACKPORT_REVISION,
        "dist_version": DIST_VERSION,
        "build_key": build_key(),
        "patches": [f"{p.stem}: {patch_summary(p)}" for p in patches],
    }
    (root / "detectron2" / f"{MARKER_MODULE}.json").write_text(json.dumps(record, indent=1) + "\n")
    return root


def detectron2_status(python: str = sys.executable) -> str:
    """'missing', 'official', or 'backport-<revision>-<build key>' for the Detectron2 importable by
    ``python``."""
    code = (
        "import importlib.util, sys\n"
        "if importlib.util.find_spec('detectron2') is None: print('missing'); sys.exit()\n"
        f"if importlib.util.find_spec('detectron2.{MARKER_MODULE}') is None: print('official'); "
        f"sys.exit()\nfrom detectron2 import {MARKER_MODULE} as m\n"
        "print('backport-%s-%s' % (m.REVISION, getattr(m, 'BUILD_KEY', 'none')))\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/")
    if out.returncode != 0:
        raise RuntimeError(f"could not inspect Detectron2 with {python}:\n{out.stderr}")
    return out.stdout.strip()


def install(python: str = sys.executable, force: bool = False) -> str:
    """Install the backport into ``python``'s environment unless an official Detectron2 is there.

    An official Detectron2 is never touched. A backport built from other inputs is replaced.
    """
    status = detectron2_status(python)
    if status == "official" and not force:
        print(
            "[segalias_d2] an official Detectron2 is importable: using it untouched",
            file=sys.stderr,
        )
        return status
    if status == f"backport-{BACKPORT_REVISION}-{build_key()}" and not force:
        return status
    with tempfile.TemporaryDirectory(prefix="segalias_d2_backport_") as tmp:
        root = build_source_tree(Path(tmp), python=python)
        print(
            f"[segalias_d2] installing Detectron2 {DIST_VERSION} (pure-Python backport)",
            file=sys.stderr,
        )
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                str(root),
            ],
            check=True,
        )
    return detectron2_status(python)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--install",
        action="store_true",
        help="install the backport unless an official Detectron2 exists",
    )
    parser.add_argument(
        "--force", action="store_true", help="(re)install even over an existing Detectron2"
    )
    parser.add_argument(
        "--status", action="store_true", help="print missing / official / backport-REV-KEY"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter whose environment to use"
    )
    parser.add_argument(
        "--source-tree", metavar="DIR", help="only write the patched source tree to DIR"
    )
    args = parser.parse_args(argv)
    try:
        if args.source_tree:
            print(build_source_tree(Path(args.source_tree), python=args.python))
        elif args.install or args.force:
            print(install(args.python, force=args.force))
        else:
            print(detectron2_status(args.python))
    except (pinned_sources.PinnedFileUnavailable, PatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
