#!/usr/bin/env python
"""Build official Detectron2 from source and install it into an environment (opt-in, used by
dev/setup_env.sh).

    python dev/official_d2.py SOURCE [--sha256 HEX] [--python PY]

SOURCE is a source folder, a source archive (.tar.gz/.tgz/.tar/.zip, e.g. a ``git archive``), or a
git URL (``https://github.com/facebookresearch/detectron2.git``, optionally
``@<commit|tag|branch>``; ``git+`` prefixes are accepted). ``--sha256`` (or ``$SEGALIAS_D2_SHA256``)
verifies an archive first.

The build is CPU-only unless CUDA can be built: Detectron2's setup.py compiles CUDA ops when
``FORCE_CUDA=1`` or when torch sees a GPU and a CUDA toolkit (nvcc) is present, and only the C++ CPU
ops otherwise; ``MAX_JOBS`` defaults to 2. The wheel is built with ``pip wheel --no-build-isolation
--no-deps`` in a writable copy of the source, with the local version label ``+g<commit>``
(Detectron2's own ``D2_VERSION_SUFFIX``) when the commit is known, so that ``python -m
segalias_d2.collect_env`` can name it.

Built wheels are cached in ``$SEGALIAS_CACHE/wheels`` (default ``~/.cache/segalias_d2/wheels``),
keyed on the source checksum (archive sha256, git commit, or a hash of a folder's files), the torch
and Python versions and CPU/CUDA, so a second set-up on the same machine installs without
rebuilding. Standard library only; torch must already be installed in the target environment.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
from pinned_sources import cache_dir, sha256_of  # noqa: E402

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_SKIP_DIRS = {".git", "build", "dist", "__pycache__", "detectron2.egg-info"}


class BuildError(RuntimeError):
    pass


def log(msg):
    print(f"[official-d2] {msg}", file=sys.stderr, flush=True)


def _run(argv, **kwargs):
    done = subprocess.run(argv, **kwargs)
    if done.returncode != 0:
        raise BuildError(f"command failed ({done.returncode}): {' '.join(map(str, argv))}")
    return done


def _is_git_url(source: str) -> bool:
    return source.startswith(("git+", "git@", "git://", "ssh://")) or bool(
        re.match(r"(https?|file)://", source)
    )


def _folder_checksum(root: Path) -> str:
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file() and not name.endswith((".so", ".pyc")):
                digest.update(
                    str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0"
                )
    return digest.hexdigest()


def _archive_commit(path: Path):
    """The commit a ``git archive`` tarball records in its pax header, else a hex suffix of its top
    folder."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            comment = z.comment.decode(errors="ignore").strip()
            names = z.namelist()
    else:
        with tarfile.open(path) as t:
            comment = t.pax_headers.get("comment", "").strip()
            names = t.getnames()[:1]
    if re.fullmatch(r"[0-9a-f]{40}", comment):
        return comment
    m = re.search(r"-([0-9a-f]{7,40})$", names[0].split("/")[0]) if names else None
    return m.group(1) if m else None


def _extract(path: Path, dest: Path) -> Path:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            z.extractall(dest)
    else:
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        with tarfile.open(path) as t:
            t.extractall(dest, **kwargs)
    tops = [p for p in dest.iterdir() if p.is_dir()]
    root = tops[0] if len(tops) == 1 and not (dest / "setup.py").exists() else dest
    if not (root / "setup.py").exists() or not (root / "detectron2").is_dir():
        raise BuildError(
            f"{path} does not look like Detectron2 sources (no setup.py + detectron2/ at its top)"
        )
    return root


def prepare_source(source: str, workdir: Path, sha256: str = None):
    """(writable source tree, source checksum, commit or None) for a folder, an archive or a git
    URL."""
    if _is_git_url(source):
        url, rev = source[4:] if source.startswith("git+") else source, ""
        head, sep, tail = url.rpartition("@")
        if sep and "/" not in tail and ":" not in tail:  # URL@<commit|tag|branch>
            url, rev = head, tail
        tree = workdir / "detectron2-git"
        log(f"cloning {url}{' at ' + rev if rev else ''}")
        _run(["git", "clone", "--quiet"] + ([] if rev else ["--depth", "1"]) + [url, str(tree)])
        if rev:
            _run(["git", "-C", str(tree), "checkout", "--quiet", rev])
        commit = _run(
            ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        return tree, f"git-{commit}", commit
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        commit = None
        if (path / ".git").exists():
            out = subprocess.run(
                ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
            )
            commit = out.stdout.strip() if out.returncode == 0 else None
        checksum = f"dir-{_folder_checksum(path)}"
        tree = workdir / "detectron2-src"
        shutil.copytree(
            path, tree, ignore=shutil.ignore_patterns(*_SKIP_DIRS, "*.so"), symlinks=True
        )
        return tree, checksum, commit
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        got = sha256_of(path)
        if sha256 and got != sha256.lower():
            raise BuildError(f"{path} has sha256 {got}, expected {sha256}")
        return _extract(path, workdir), f"sha256-{got}", _archive_commit(path)
    raise BuildError(
        f"SEGALIAS_D2_SOURCE={source!r}: not a folder, a source archive "
        f"({', '.join(ARCHIVE_SUFFIXES)}) or a git URL"
    )


def _torch_facts(python: str) -> dict:
    code = (
        "import json, os, sys, torch\nfrom torch.utils.cpp_extension import CUDA_HOME\n"
        "cuda = os.environ.get('FORCE_CUDA', '0') == '1' or (torch.cuda.is_available() and "
        "CUDA_HOME is not None)\n"
        "print(json.dumps({'torch': torch.__version__, 'python': '%d.%d' % sys.version_info[:2], "
        "'cuda': bool(cuda)}))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(
            f"torch is not importable with {python}; install the requirements "
            f"first:\n{out.stderr[-2000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_and_install(source: str, python: str, sha256: str = None) -> dict:
    facts = _torch_facts(python)
    with tempfile.TemporaryDirectory(prefix="segalias_official_d2_") as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        tree, checksum, commit = prepare_source(source, tmp / "src", sha256)
        mode = "cuda" if facts["cuda"] else "cpu"
        digest = checksum.split("-", 1)[1][:16]
        key = f"{checksum.split('-')[0]}-{digest}-torch{facts['torch']}-py{facts['python']}-{mode}"
        wheel_dir = cache_dir() / "wheels" / f"detectron2-{key}"
        wheels = sorted(wheel_dir.glob("detectron2-*.whl"))
        if wheels:
            log(
                f"using the cached wheel {wheels[0]} (source {checksum[:23]}..., torch "
                f"{facts['torch']}, {mode})"
            )
        else:
            env = dict(os.environ, MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
            if commit:
                env["D2_VERSION_SUFFIX"] = f"+g{commit[:12]}"
            log(
                f"building Detectron2 {('commit ' + commit[:12]) if commit else checksum[:23]} "
                f"({mode.upper()} ops, "
                f"MAX_JOBS={env['MAX_JOBS']}, torch {facts['torch']}); a few minutes on 2 cores"
            )
            out_dir = tmp / "wheel"
            _run(
                [
                    python,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-build-isolation",
                    "--no-deps",
                    "-w",
                    str(out_dir),
                    str(tree),
                ],
                env=env,
            )
            built = sorted(out_dir.glob("detectron2-*.whl"))
            if not built:
                raise BuildError(f"pip wheel produced no detectron2 wheel in {out_dir}")
            wheel_dir.mkdir(parents=True, exist_ok=True)
            staged = wheel_dir / (built[0].name + ".tmp")
            shutil.copyfile(built[0], staged)
            os.replace(staged, wheel_dir / built[0].name)
            (wheel_dir / "build.json").write_text(
                json.dumps(
                    {"source": source, "checksum": checksum, "commit": commit, **facts}, indent=1
                )
                + "\n"
            )
            wheels = [wheel_dir / built[0].name]
    log(f"installing {wheels[0].name}")
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--force-reinstall",
            str(wheels[0]),
        ]
    )
    check = subprocess.run(
        [python, "-c", "import detectron2, detectron2._C; print(detectron2.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    if check.returncode != 0:
        raise BuildError(
            "the installed Detectron2 does not import with its compiled "
            f"ops:\n{check.stderr[-2000:]}"
        )
    return {"wheel": str(wheels[0]), "checksum": checksum, "commit": commit, **facts}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="source folder, source archive or git URL")
    parser.add_argument(
        "--sha256", default=os.environ.get("SEGALIAS_D2_SHA256"), help="expected archive sha256"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter of the target environment"
    )
    args = parser.parse_args(argv)
    try:
        result = build_and_install(args.source, args.python, args.sha256)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
