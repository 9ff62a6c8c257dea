"""dev/official_d2.py takes official Detectron2 sources as a folder, a source archive or a git URL,
and keys its wheel cache on a checksum of what it was given (the CI lane builds and tests the real
tarball end to end)."""

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "dev"))
import official_d2  # noqa: E402

COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"


def _fake_tree(root: Path) -> Path:
    (root / "detectron2").mkdir(parents=True)
    (root / "detectron2" / "__init__.py").write_text('__version__ = "0.6"\n')
    (root / "setup.py").write_text("# stands in for Detectron2's setup.py\n")
    return root


def _git_archive_like(path: Path, top: str, commit=None):
    """A .tar.gz laid out like ``git archive --prefix=top/`` (which records the commit in a pax
    header)."""
    with tarfile.open(
        path, "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": commit} if commit else {}
    ) as t:
        for name, text in ((f"{top}/setup.py", "# setup\n"), (f"{top}/detectron2/__init__.py", "")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            t.addfile(info, io.BytesIO(text.encode()))
    return path


def test_archive_gives_its_sha256_and_the_commit_git_archive_recorded(tmp_path):
    archive = _git_archive_like(
        tmp_path / "detectron2-02b5c4e.tar.gz", "detectron2-02b5c4e", COMMIT
    )
    tree, checksum, commit = official_d2.prepare_source(str(archive), tmp_path / "work")
    assert (tree / "setup.py").is_file() and tree.name == "detectron2-02b5c4e"
    assert checksum == "sha256-" + official_d2.sha256_of(archive) and commit == COMMIT
    # without the pax header, the hex suffix of the top folder is the (short) commit
    plain = _git_archive_like(tmp_path / "d2.tar.gz", "detectron2-02b5c4e")
    assert official_d2.prepare_source(str(plain), tmp_path / "work2")[2] == "02b5c4e"
    with pytest.raises(official_d2.BuildError, match="expected 00"):
        official_d2.prepare_source(str(archive), tmp_path / "work3", sha256="00" * 32)


def test_folder_is_copied_and_keyed_on_its_files(tmp_path):
    src = _fake_tree(tmp_path / "src")
    tree, checksum, commit = official_d2.prepare_source(str(src), tmp_path / "work")
    assert tree != src and (tree / "detectron2" / "__init__.py").is_file() and commit is None
    (src / "detectron2" / "__init__.py").write_text('__version__ = "0.6"\n# edited\n')
    assert official_d2.prepare_source(str(src), tmp_path / "work2")[1] != checksum
    with pytest.raises(official_d2.BuildError, match="not a folder, a source archive"):
        official_d2.prepare_source(str(tmp_path / "missing"), tmp_path / "work3")


def test_git_url_with_a_revision_is_cloned_at_that_commit(tmp_path):
    src = _fake_tree(tmp_path / "repo")

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(src), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "first")
    first = git("rev-parse", "HEAD")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "second")
    tree, checksum, commit = official_d2.prepare_source(
        f"git+file://{src}@{first}", tmp_path / "work"
    )
    assert commit == first and checksum == f"git-{first}" and not (tree / "setup.py").exists()
    head = official_d2.prepare_source(f"file://{src}", tmp_path / "work2")[2]
    assert head == git("rev-parse", "HEAD") != first
