"""Session fixtures for data that lives outside the package: the demo datasets and the pinned real
RAW file.

Both are built or fetched once per session by code under datasets/ (demo_builder.py,
pinned_sources.py), which this file puts on sys.path. When a pinned third-party file is neither
cached nor downloadable, the tests that need it fail with one line saying what to fetch and how.
"""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS_DIR = os.path.join(REPO, "datasets")
if DATASETS_DIR not in sys.path:
    sys.path.insert(0, DATASETS_DIR)

from pinned_sources import SONY_ARW, PinnedFileUnavailable, fetch_member  # noqa: E402


@pytest.fixture(scope="session")
def demo_datasets():
    """{"root", "lis_demo", "cityscapes_demo"} paths, built once into $DETECTRON2_DATASETS (default
    ./datasets), where the built-in dataset names point."""
    from demo_builder import ensure_demo_datasets

    try:
        return ensure_demo_datasets()
    except PinnedFileUnavailable as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def sony_arw():
    """Path of the real Sony ARW from the pinned libraw-cffi sdist (cached)."""
    try:
        return str(fetch_member(SONY_ARW))
    except PinnedFileUnavailable as e:
        pytest.fail(str(e), pytrace=False)
