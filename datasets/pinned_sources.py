#!/usr/bin/env python
"""Third-party files that the set-up, the demo datasets and the tests use, pinned by version and
sha256.

Each file is fetched once with pip (``pip download --no-deps --no-binary :all:`` with the sha256 as
a ``--hash`` requirement) into the cache, ``$SEGALIAS_CACHE`` or ``~/.cache/segalias_d2``, and
verified; once cached, nothing touches the network again. Nothing here is part of the segalias_d2
package, and the standard library is enough: dev/d2_backport/build_backport.py loads this file
before Detectron2 exists.

    python datasets/pinned_sources.py              # list the pins and whether each is cached
    python datasets/pinned_sources.py labelme      # fetch (if needed) and print the cached path

Without network (or when pip cannot download), :class:`PinnedFileUnavailable` says in one line which
``package==version`` and sha256 is missing, the pip command that fetches it, and where to place it.
"""

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PINS",
    "SONY_ARW",
    "PinnedSdist",
    "PinnedMember",
    "PinnedFileUnavailable",
    "cache_dir",
    "sha256_of",
    "sdist_path",
    "fetch_sdist",
    "fetch_member",
    "extract_member",
]


@dataclass(frozen=True)
class PinnedSdist:
    project: str
    version: str
    filename: str
    sha256: str
    why: str
    #: False: pip prepares the sdist's metadata in the calling environment (its setup.py imports
    #: torch)
    build_isolation: bool = True
    #: the pip release that downloads it (None: the environment's own pip)
    pip_version: str = None

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclass(frozen=True)
class PinnedMember:
    """One file inside a pinned source distribution, extracted to ``cache_path`` (relative to the
    cache)."""

    project: str
    member: str
    cache_path: str
    sha256: str


#: pip release used to download pb1-detectron2: pip >= 26 refuses to download any file from PyPI
#: whose metadata declares a direct-URL dependency, and pb1-detectron2's extra "all" names
#: panopticapi by URL. It runs from its wheel (``python pip-25.3-py3-none-any.whl/pip``), nothing is
#: installed.
PIP_FOR_DIRECT_URL_METADATA = (
    "25.3",
    "pip-25.3-py3-none-any.whl",
    "9655943313a94722b7774661c21049070f6bbb0a1516bf02f7c8d5d9201514cd",
)

PINS = {
    "pb1-detectron2": PinnedSdist(
        "pb1-detectron2",
        "0.6",
        "pb1-detectron2-0.6.tar.gz",
        "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29",
        "Detectron2 v0.6 Python sources for the pure-Python backport (dev/d2_backport/)",
        build_isolation=False,
        pip_version=PIP_FOR_DIRECT_URL_METADATA[0],
    ),
    "labelme": PinnedSdist(
        "labelme",
        "6.3.1",
        "labelme-6.3.1.tar.gz",
        "2947e0d8341a92faa7b3ee50cf4b672f838051c6bf24892526e95b64fd3a707e",
        "real photos with polygons for the demo datasets (datasets/demo_builder.py)",
    ),
    "libraw-cffi": PinnedSdist(
        "libraw-cffi",
        "0.19.0",
        "libraw_cffi-0.19.0.tar.gz",
        "c92b259c0a82a87e5e3636b8ffef84bcc3c0781c595994b09ceb9b87892ea930",
        "a real Sony ARW camera RAW file for the RAW-reading tests",
    ),
}

#: the real Sony ARW (from libraw-cffi's own tests) used by the RAW tests and benchmarks
SONY_ARW = PinnedMember(
    "libraw-cffi",
    "libraw_cffi-0.19.0/libraw_cffi/tests/_DSC2164.ARW",
    "raw_samples/_DSC2164.ARW",
    "42ec55eef6047c1bfbd1fd05fdcae78993f3513814138eff4cbcf9498c57d4e6",
)


class PinnedFileUnavailable(RuntimeError):
    """A pinned file is not in the cache and could not be fetched; the message is one line."""


def cache_dir() -> Path:
    """``$SEGALIAS_CACHE`` or ``~/.cache/segalias_d2`` (created)."""
    root = os.environ.get("SEGALIAS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "segalias_d2"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sdist_path(pin: PinnedSdist) -> Path:
    """Where ``pin`` lives in the cache (whether or not it is there yet)."""
    return cache_dir() / "sdists" / pin.filename


def _pip_download_args(pin: PinnedSdist, dest) -> list:
    args = ["download", "--no-deps", "--no-binary", ":all:"]
    if not pin.build_isolation:
        args.append("--no-build-isolation")
    return args + ["-d", str(dest)]


def fetch_command(pin: PinnedSdist) -> str:
    """The shell command that puts ``pin`` into the cache by hand (quoted, one line)."""
    dest = sdist_path(pin).parent
    download = " ".join(shlex.quote(a) for a in _pip_download_args(pin, dest))
    if pin.pip_version is None:
        return f"python -m pip {download} {pin.requirement}"
    version, wheel, _ = PIP_FOR_DIRECT_URL_METADATA
    return (
        f"python -m pip download --no-deps --only-binary :all: -d /tmp pip=={version} && "
        f"python /tmp/{wheel}/pip {download} {pin.requirement}"
    )


def _unavailable(pin: PinnedSdist, reason: str) -> PinnedFileUnavailable:
    return PinnedFileUnavailable(
        f"pinned file {pin.filename} ({pin.requirement}, sha256 {pin.sha256}) is not in the cache "
        f"and {reason}; fetch it where the package index is reachable with: {fetch_command(pin)}  "
        f"(or place the file at {sdist_path(pin)})"
    )


def _run_pip(argv, log_path: Path) -> bool:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(shlex.quote(str(a)) for a in argv) + "\n")
        log.flush()
        try:
            done = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError as e:
            log.write(f"cannot run pip: {e}\n")
            return False
    return done.returncode == 0


def _hash_requirement_file(directory, requirement: str, sha256: str) -> Path:
    path = Path(directory) / f"requirement-{requirement.split('==')[0]}.txt"
    path.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    return path


def _pip_tool(python: str, pin: PinnedSdist, workdir: Path) -> list:
    """The pip command line (prefix) that downloads ``pin``."""
    if pin.pip_version is None:
        return [python, "-m", "pip"]
    version, wheel, sha = PIP_FOR_DIRECT_URL_METADATA
    path = cache_dir() / "tools" / wheel
    if not (path.exists() and sha256_of(path) == sha):
        req = _hash_requirement_file(workdir, f"pip=={version}", sha)
        log = cache_dir() / "logs" / f"pip-download-pip-{version}.log"
        ok = _run_pip(
            [
                python,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--require-hashes",
                "-r",
                str(req),
                "-d",
                str(workdir),
            ],
            log,
        )
        got = workdir / wheel
        if not ok or not got.exists() or sha256_of(got) != sha:
            raise _unavailable(
                pin, f"pip=={version} (needed to download it) could not be fetched (log: {log})"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, path)
    return [python, str(path / "pip")]


def fetch_sdist(pin, python: str = None, quiet: bool = False) -> Path:
    """Cached, sha256-verified path of the pinned sdist ``pin`` (a :data:`PINS` key or a
    PinnedSdist).

    ``python`` is the interpreter whose pip downloads it (default: this one); for a pin with
    ``build_isolation=False`` it must have the sdist's build requirements (torch for
    pb1-detectron2).
    """
    pin = PINS[pin] if isinstance(pin, str) else pin
    dest = sdist_path(pin)
    if dest.exists():
        got = sha256_of(dest)
        if got == pin.sha256:
            return dest
        raise PinnedFileUnavailable(
            f"{dest} has sha256 {got}, not the pinned {pin.sha256} of {pin.requirement}: delete it "
            "to re-fetch"
        )
    python = python or sys.executable
    dest.parent.mkdir(parents=True, exist_ok=True)
    log = cache_dir() / "logs" / f"pip-download-{pin.project}-{pin.version}.log"
    if not quiet:
        print(
            f"[segalias_d2] fetching {pin.requirement} with pip download (log: {log}) ...",
            file=sys.stderr,
            flush=True,
        )
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        pip = _pip_tool(python, pin, tmp)
        req = _hash_requirement_file(tmp, pin.requirement, pin.sha256)
        argv = pip + _pip_download_args(pin, tmp) + ["--require-hashes", "-r", str(req)]
        ok = _run_pip(argv, log)
        got = tmp / pin.filename
        if not ok or not got.exists():
            raise _unavailable(pin, f"pip download failed (log: {log})")
        if sha256_of(got) != pin.sha256:
            raise _unavailable(pin, f"pip downloaded a file with another sha256 (log: {log})")
        os.replace(got, dest)
    return dest


def extract_member(archive, member: str, dest, sha256: str = None) -> Path:
    """Extract the file ``member`` of the tar ``archive`` to ``dest`` (idempotent; verified if
    ``sha256``)."""
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        try:
            src = tar.extractfile(member)
        except KeyError:
            src = None
        if src is None:
            raise FileNotFoundError(f"'{member}' is not a file in {archive}")
        tmp = dest.with_name(dest.name + ".tmp")
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
    if sha256 is not None and sha256_of(tmp) != sha256:
        got = sha256_of(tmp)
        tmp.unlink()
        raise RuntimeError(
            f"checksum mismatch for {member} from {archive}: expected {sha256}, got {got}"
        )
    os.replace(tmp, dest)
    return dest


def fetch_member(member: PinnedMember, python: str = None) -> Path:
    """Cached path of one file of a pinned sdist (the sdist is fetched only if the file is not
    cached)."""
    dest = cache_dir() / member.cache_path
    if dest.exists() and sha256_of(dest) == member.sha256:
        return dest
    needed = f"{dest} ({member.member} of {PINS[member.project].requirement}) is needed: "
    try:
        return extract_member(
            fetch_sdist(member.project, python=python), member.member, dest, sha256=member.sha256
        )
    except PinnedFileUnavailable as e:  # say which file the caller wanted, still in one line
        raise PinnedFileUnavailable(needed + str(e)) from e


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"pins to fetch: {', '.join(PINS)}")
    args = parser.parse_args(argv)
    if not args.names:
        for name, pin in PINS.items():
            state = "cached" if sdist_path(pin).exists() else "not cached"
            print(f"{pin.requirement:24s} sha256 {pin.sha256}  {state}  ({pin.why})")
        return 0
    for name in args.names:
        if name not in PINS:
            parser.error(f"unknown pin '{name}' (known: {', '.join(PINS)})")
        try:
            print(fetch_sdist(name))
        except PinnedFileUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
