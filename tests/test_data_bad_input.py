"""Bad input: clear, typed errors naming the file and record (or warn + count where Detectron2
skips)."""

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from common import register_lis_json, segalias_cfg
from detectron2.data import DatasetCatalog

import segalias_d2  # noqa: F401
from segalias_d2.data import LIS_CLASSES, register_lowlight_dataset
from segalias_d2.data.dataset_mapper import LowLightDatasetMapper
from segalias_d2.data.lowlight import LOAD_SUMMARIES, AnnotationError
from segalias_d2.data.raw_io import (
    ImageReadError,
    LowLightDataError,
    RawDecodeError,
    UnsupportedFormatError,
    read_camera_raw,
    read_lowlight_image,
)


def _register(
    tmp_path, name, annotations, categories=None, image_format="srgb", write_image=True, **kw
):

    (tmp_path / "JPEGImages").mkdir(exist_ok=True)
    if write_image:
        cv2.imwrite(str(tmp_path / "JPEGImages" / "1.png"), np.full((40, 60, 3), 100, np.uint8))
    cats = categories or [{"id": i, "name": n} for i, n in enumerate(LIS_CLASSES)]
    data = {
        "images": [{"id": 0, "file_name": "./JPEGImages/1.png", "height": 40, "width": 60}],
        "annotations": [
            dict(a, id=i + 1, image_id=0, iscrowd=0) for i, a in enumerate(annotations)
        ],
        "categories": cats,
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return register_lis_json(name, tmp_path / "ann.json", tmp_path, image_format, **kw)


def _good(cat=5):
    return {
        "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20]],
        "bbox": [2, 2, 18, 18],
        "area": 324,
        "category_id": cat,
    }


def _mapper(is_train=True):
    cfg = segalias_cfg(MODEL__MASK_ON=True, INPUT__MIN_SIZE_TRAIN=(40,), INPUT__MIN_SIZE_TEST=40)
    return LowLightDatasetMapper(cfg, is_train)


def test_corrupt_raw_file(tmp_path):
    bad = tmp_path / "corrupt.ARW"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(RawDecodeError) as e:
        read_camera_raw(str(bad))
    assert "corrupt.ARW" in str(e.value) and e.value.__cause__ is not None  # chained LibRaw error
    assert isinstance(e.value, LowLightDataError)


def test_truncated_raw_file(
    tmp_path, sony_arw
):  # sony_arw: the pinned real ARW (tests/conftest.py)
    dest = Path(sony_arw)
    trunc = tmp_path / "truncated.ARW"
    trunc.write_bytes(dest.read_bytes()[:300_000])
    with pytest.raises(RawDecodeError, match="truncated.ARW"):
        read_camera_raw(str(trunc))
    # and through the mapper, the record is named too (a record whose file was replaced after
    # loading)
    name = _register(tmp_path, "test_bad_trunc", [_good()])
    d = dict(DatasetCatalog.get(name)[0], file_name=str(trunc), image_format="raw")
    with pytest.raises(
        RawDecodeError, match=r"image_id=0.*truncated.ARW|truncated.ARW.*image_id=0"
    ):
        _mapper()(d)


def test_unsupported_format(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="jpeg2000"):
        read_lowlight_image(str(tmp_path / "x.png"), "jpeg2000")
    with pytest.raises(UnsupportedFormatError):
        register_lowlight_dataset("test_bad_fmt", "a.json", ".", image_format="exr")
    name = _register(tmp_path, "test_bad_fmt_record", [_good()])
    d = dict(DatasetCatalog.get(name)[0], image_format="tiff16")
    with pytest.raises(UnsupportedFormatError):
        _mapper()(d)


def test_missing_image(tmp_path):
    # found at load (every image is stat-ed), naming the dataset, the JSON, the record and the file
    name = _register(tmp_path, "test_bad_missing", [_good()], write_image=False)
    with pytest.raises(ImageReadError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert (
        "test_bad_missing" in msg
        and "ann.json" in msg
        and "image id=0" in msg
        and "1.png' does not exist" in msg
    )
    # and a file removed after loading: the mapper names the record
    name = _register(tmp_path, "test_bad_missing_later", [_good()])
    d = DatasetCatalog.get(name)[0]
    (tmp_path / "JPEGImages" / "1.png").unlink()
    with pytest.raises(ImageReadError) as e:
        _mapper()(d)
    assert "1.png" in str(e.value) and "image_id=0" in str(e.value)


def test_corrupt_png(tmp_path):
    name = _register(tmp_path, "test_bad_png", [_good()])
    (tmp_path / "JPEGImages" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageReadError, match="1.png"):
        _mapper()(DatasetCatalog.get(name)[0])


def test_polygon_with_fewer_than_3_points_is_skipped_with_warning(tmp_path, caplog):
    bad = {"segmentation": [[2, 2, 20, 2]], "bbox": [2, 2, 18, 1], "area": 1, "category_id": 1}
    name = _register(tmp_path, "test_bad_poly", [_good(), bad])
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get(name)
    assert len(dicts[0]["annotations"]) == 1
    assert LOAD_SUMMARIES[name]["polygon_fewer_than_3_points"] == 1
    assert "fewer than 3 points" in caplog.text and "annotation id=2" in caplog.text


def test_box_outside_image_is_skipped_with_warning(tmp_path, caplog):
    outside = {
        "segmentation": [[100, 100, 120, 100, 120, 120]],
        "bbox": [100, 100, 20, 20],
        "area": 200,
        "category_id": 2,
    }
    partly = {
        "segmentation": [[50, 30, 70, 30, 70, 50]],
        "bbox": [50, 30, 20, 20],
        "area": 200,
        "category_id": 3,
    }
    name = _register(tmp_path, "test_bad_box", [_good(), outside, partly])
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get(name)
    annos = dicts[0]["annotations"]
    assert len(annos) == 2 and annos[1]["bbox"] == [
        50.0,
        30.0,
        10.0,
        10.0,
    ]  # clipped to the 60x40 image
    s = LOAD_SUMMARIES[name]
    assert s["box_outside_image"] == 1 and s["box_clipped"] == 1 and s["instances"] == 2
    assert "entirely outside" in caplog.text and "1.png" in caplog.text
    batch = _mapper()(dicts[0])  # the remaining annotations map fine
    assert len(batch["instances"]) == 2


def test_unknown_category_name(tmp_path):
    cats = [{"id": 0, "name": "car"}, {"id": 1, "name": "zebra"}]
    name = _register(tmp_path, "test_bad_cat", [_good(0), _good(1)], categories=cats)
    with pytest.raises(AnnotationError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert "zebra" in msg and "annotation id=2" in msg and "ann.json" in msg and "1.png" in msg
    # an annotation whose category id is not in 'categories' at all
    name = _register(tmp_path, "test_bad_cat_id", [_good(42)])
    with pytest.raises(AnnotationError, match="category_id=42"):
        DatasetCatalog.get(name)
