"""Fetch pinned source distributions from the configured Python package index.

Standard library only: the Detectron2 provisioning step loads this file by path before
Detectron2 (and therefore the ``segalias_d2`` package) is importable.

Every file is pinned by name and sha256 and cached under :func:`cache_dir`; once cached,
nothing touches the network again.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = ["cache_dir", "fetch_sdist", "extract_member", "sha256_of"]


def cache_dir() -> Path:
    """``$SEGALIAS_CACHE`` or ``~/.cache/segalias_d2``."""
    root = os.environ.get("SEGALIAS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "segalias_d2")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _index_url() -> str:
    """The index pip would use: $PIP_INDEX_URL, pip's config, else pip's default index."""
    url = os.environ.get("PIP_INDEX_URL")
    if url:
        return url
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True, text=True, timeout=60,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from pip._internal.models.index import PyPI  # pip's own default, so no index is hard-coded here

    return PyPI.simple_url


def _file_url(project: str, filename: str) -> str:
    index = _index_url().rstrip("/")
    page = f"{index}/{project}/"
    request = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read().decode("utf-8")
        ctype = response.headers.get("Content-Type", "")
    if "json" in ctype:
        for entry in json.loads(body).get("files", []):
            if entry["filename"] == filename:
                return urllib.parse.urljoin(page, entry["url"])
    else:
        for href in re.findall(r'href="([^"]+)"', body):
            if urllib.parse.unquote(href.split("#")[0]).rsplit("/", 1)[-1] == filename:
                return urllib.parse.urljoin(page, href)
    raise FileNotFoundError(f"{filename} is not listed on the package index page for '{project}' ({page})")


def fetch_sdist(project: str, filename: str, sha256: str, quiet: bool = False) -> Path:
    """Return the cached path of ``filename`` (a file of ``project`` on the index), verifying sha256.

    Raises RuntimeError if the downloaded bytes do not match the pinned checksum.
    """
    dest = cache_dir() / "sdists" / filename
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = _file_url(project, filename)
    if not quiet:
        print(f"[segalias_d2] downloading {filename} ...", file=sys.stderr, flush=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        with urllib.request.urlopen(url, timeout=300) as response:
            shutil.copyfileobj(response, tmp)
    got = sha256_of(tmp.name)
    if got != sha256:
        os.unlink(tmp.name)
        raise RuntimeError(f"checksum mismatch for {filename}: expected sha256 {sha256}, got {got}")
    os.replace(tmp.name, dest)
    return dest


def extract_member(archive, member: str, dest, sha256: str = None) -> Path:
    """Extract one file ``member`` (path inside the tar archive) to ``dest`` (idempotent)."""
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
        with open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    if sha256 is not None and sha256_of(dest) != sha256:
        got = sha256_of(dest)
        dest.unlink()
        raise RuntimeError(f"checksum mismatch for {member} from {archive}: expected {sha256}, got {got}")
    return dest
