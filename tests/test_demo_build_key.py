"""Demo data is rebuilt when what it depends on changes, and a missing pinned file is one clear
line.

datasets/demo_builder.py keys its build on the source of the builder and of the segalias_d2 modules
it imports, the pinned labelme sha256, its parameters and the numpy/OpenCV versions (issue 17.4);
datasets/pinned_sources.py fetches pinned files with pip download and says in one line what to fetch
and how when it cannot.
"""

import json
import os
import shutil

import demo_builder  # datasets/ (on sys.path via tests/conftest.py)
import pinned_sources
import prepare_demo
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_builder_sources_are_the_builder_and_the_package_modules_it_calls():
    files = {os.path.relpath(str(p), REPO) for p in demo_builder.builder_source_files()}
    # the modules whose functions produce the files: resize/polygons here, synthesis, categories,
    # Cityscapes ids
    assert {
        "datasets/demo_builder.py",
        "segalias_d2/data/synthesis.py",
        "segalias_d2/data/categories.py",
        "segalias_d2/data/cityscapes.py",
    } <= files
    # and not the whole package: models, evaluators and the package __init__ do not change the data
    assert not any(f.startswith(("segalias_d2/modeling", "segalias_d2/evaluation")) for f in files)
    assert "segalias_d2/__init__.py" not in files


def test_key_covers_code_pinned_input_parameters_and_libraries():
    parts = demo_builder.build_key_parts()
    assert parts["inputs"] == {"labelme-6.3.1.tar.gz": pinned_sources.PINS["labelme"].sha256}
    assert parts["code"]["segalias_d2/data/synthesis.py"] == pinned_sources.sha256_of(
        os.path.join(REPO, "segalias_d2/data/synthesis.py")
    )
    assert parts["parameters"]["short_side"] == 320 and set(parts["libraries"]) == {
        "numpy",
        "opencv",
    }
    key = demo_builder.build_key(parts)
    for section, item in (
        ("code", "segalias_d2/data/synthesis.py"),
        ("inputs", "labelme-6.3.1.tar.gz"),
        ("parameters", "seed"),
        ("libraries", "opencv"),
    ):
        changed = json.loads(json.dumps(parts))
        changed[section][item] = "something else"
        assert demo_builder.build_key(changed) != key, section


def _copy_lis_demo(demo_datasets, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(demo_datasets["lis_demo"], root / "lis_demo")
    return root, root / "lis_demo" / ".segalias_demo.json"


def test_up_to_date_demo_is_not_rebuilt_and_a_builder_change_rebuilds_it(
    demo_datasets, tmp_path, monkeypatch
):
    root, marker = _copy_lis_demo(demo_datasets, tmp_path)
    before = marker.stat().st_mtime_ns
    assert demo_builder.build_lis_demo(str(root)) == str(root / "lis_demo")
    assert marker.stat().st_mtime_ns == before  # same key: nothing done
    image = root / "lis_demo" / "RAW-dark" / "JPEGImages" / "2.png"
    original = image.read_bytes()

    # the synthesis code changed since the build (simulated: its file hash differs)
    real_sha = demo_builder.sha256_of
    synthesis = os.path.join(REPO, "segalias_d2", "data", "synthesis.py")
    monkeypatch.setattr(
        demo_builder, "sha256_of", lambda p: "edited" if str(p) == synthesis else real_sha(p)
    )
    demo_builder.build_key_parts.cache_clear()
    try:
        demo_builder.build_lis_demo(str(root))
        rebuilt = json.loads(marker.read_text())
        assert marker.stat().st_mtime_ns != before
        assert rebuilt["build_key"] == demo_builder.build_key()
        assert rebuilt["built_from"]["code"]["segalias_d2/data/synthesis.py"] == "edited"
        assert image.read_bytes() == original  # deterministic: the same code rebuilds the same file
    finally:
        demo_builder.build_key_parts.cache_clear()


def test_missing_pinned_file_is_one_line_saying_what_to_fetch_and_how(
    tmp_path, monkeypatch, capsys
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEGALIAS_CACHE", str(cache))  # nothing cached
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # and pip can reach no package index
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    assert prepare_demo.main(["--root", str(tmp_path / "data")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    pin = pinned_sources.PINS["labelme"]
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    line = err[0]
    assert "labelme==6.3.1" in line and f"sha256 {pin.sha256}" in line
    assert (
        f"python -m pip download --no-deps --no-binary :all: -d {cache / 'sdists'} labelme==6.3.1"
        in line
    )
    assert f"place the file at {cache / 'sdists' / 'labelme-6.3.1.tar.gz'}" in line
    assert (
        "pip download failed (log: " in line
        and (cache / "logs" / "pip-download-labelme-6.3.1.log").is_file()
    )
    assert not (tmp_path / "data" / "lis_demo" / ".segalias_demo.json").exists()


def test_wrong_file_in_the_cache_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGALIAS_CACHE", str(tmp_path))
    pin = pinned_sources.PINS["libraw-cffi"]
    path = pinned_sources.sdist_path(pin)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the sdist")
    with pytest.raises(pinned_sources.PinnedFileUnavailable) as e:
        pinned_sources.fetch_sdist(pin)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and pin.sha256 in message
    assert pinned_sources.sha256_of(path) in message and "delete it" in message


def test_the_backport_source_is_fetched_with_a_pip_that_accepts_its_metadata():
    # pb1-detectron2's extra "all" names panopticapi by URL, which pip >= 26 refuses from PyPI
    command = pinned_sources.fetch_command(pinned_sources.PINS["pb1-detectron2"])
    assert command.startswith(
        "python -m pip download --no-deps --only-binary :all: -d /tmp pip==25.3 && "
    )
    assert command.endswith(
        "--no-build-isolation -d "
        + str(pinned_sources.cache_dir() / "sdists")
        + " pb1-detectron2==0.6"
    )


def test_missing_pinned_member_fails_the_fixture_in_one_line_saying_what_to_fetch(
    tmp_path, monkeypatch
):
    # what the sony_arw fixture of tests/conftest.py turns into pytest.fail(...) when nothing can be
    # fetched
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEGALIAS_CACHE", str(cache))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(pinned_sources.PinnedFileUnavailable) as e:
        pinned_sources.fetch_member(pinned_sources.SONY_ARW)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(
        f"{cache / 'raw_samples' / '_DSC2164.ARW'} "
        "(libraw_cffi-0.19.0/libraw_cffi/tests/_DSC2164.ARW of libraw-cffi==0.19.0) is needed: "
    )
    assert (
        f"python -m pip download --no-deps --no-binary :all: -d {cache / 'sdists'} "
        "libraw-cffi==0.19.0" in message
    )
    assert f"place the file at {cache / 'sdists' / 'libraw_cffi-0.19.0.tar.gz'}" in message
