"""The v0.6 backport build (dev/d2_backport/): its patches apply exactly to the pinned sources, a
patch that does not match is refused naming the file, and the installed backport is exactly this
build."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from segalias_d2 import compat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "dev" / "d2_backport"))
import build_backport  # noqa: E402


def _patch(rel, hunk):
    return f"What it fixes, one line.\n\n--- a/{rel}\n+++ b/{rel}\n{hunk}"


def test_patch_applies_at_its_line_and_refuses_text_that_does_not_match(tmp_path):
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    target = tree / "pkg" / "mod.py"
    target.write_text("a = 1\nb = 2\nc = 3\nd = 4\n")
    good = tmp_path / "good.patch"
    good.write_text(_patch("pkg/mod.py", "@@ -2,2 +2,3 @@\n b = 2\n-c = 3\n+c = 30\n+e = 5\n"))
    build_backport.apply_patch(good, tree)
    assert target.read_text() == "a = 1\nb = 2\nc = 30\ne = 5\nd = 4\n"
    assert build_backport.patch_summary(good) == "What it fixes, one line."

    stale = tmp_path / "stale.patch"  # written for other sources: its context line is not there
    stale.write_text(_patch("pkg/mod.py", "@@ -1,2 +1,2 @@\n a = 1\n-b = 3\n+b = 4\n"))
    with pytest.raises(
        build_backport.PatchError, match=r"stale.patch does not apply to pkg/mod.py"
    ):
        build_backport.apply_patch(stale, tree)
    missing = tmp_path / "missing.patch"
    missing.write_text(_patch("pkg/other.py", "@@ -1 +1 @@\n-x\n+y\n"))
    with pytest.raises(build_backport.PatchError, match=r"pkg/other.py does not exist"):
        build_backport.apply_patch(missing, tree)


@pytest.fixture(scope="module")
def backport_tree(tmp_path_factory):
    try:
        return build_backport.build_source_tree(tmp_path_factory.mktemp("backport"))
    except build_backport.pinned_sources.PinnedFileUnavailable as e:
        pytest.fail(str(e), pytrace=False)


def test_every_patch_applies_to_the_pinned_sources_and_is_recorded(backport_tree):

    record = json.loads((backport_tree / "detectron2" / "_segalias_backport.json").read_text())
    patches = build_backport.patch_files()
    assert len(patches) == 13 and record["revision"] == build_backport.BACKPORT_REVISION
    assert record["patches"] == [f"{p.stem}: {build_backport.patch_summary(p)}" for p in patches]
    assert record["build_key"] == build_backport.build_key()
    # spot checks of what the fixes put into the v0.6 sources
    text = (backport_tree / "detectron2" / "data" / "transforms" / "transform.py").read_text()
    assert "interp=Image.LINEAR" not in text and "interp=Image.BILINEAR" in text
    assert (
        "pkg_resources"
        not in (backport_tree / "detectron2" / "model_zoo" / "model_zoo.py").read_text()
    )
    assert (
        "np.float)"
        not in (backport_tree / "detectron2" / "evaluation" / "sem_seg_evaluation.py").read_text()
    )
    assert (
        (backport_tree / "detectron2" / "_C.py")
        .read_text()
        .startswith('"""Stand-in for Detectron2')
    )


def test_installed_backport_is_this_build(backport_tree):
    if not compat.is_v06_backport():
        pytest.skip(f"{compat.detectron2_source()} is installed: there is no backport to compare")
    installed = Path(importlib.util.find_spec("detectron2").submodule_search_locations[0])
    built = backport_tree / "detectron2"
    differ = [
        str(p.relative_to(built))
        for p in sorted(built.rglob("*.py"))
        if (installed / p.relative_to(built)).read_bytes() != p.read_bytes()
    ]
    assert differ == [], (
        f"the installed backport is another build; rerun: bash dev/setup_env.sh ({differ[:5]})"
    )
    assert build_backport.detectron2_status(sys.executable) == (
        f"backport-{build_backport.BACKPORT_REVISION}-{build_backport.build_key()}"
    )
    assert os.path.exists(installed / "_segalias_backport.json")
