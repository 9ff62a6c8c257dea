"""Bad data found at load (``DatasetCatalog.get``): each case raises a named error (JSON file +
record) or, where Detectron2 skips the record, drops it with a warning and counts it in the load
summary (docs/data.md table)."""

import json
import logging
import math
import shutil

import cv2
import numpy as np
import pytest
from common import register_lis_json
from detectron2.data import DatasetCatalog

import segalias_d2  # noqa: F401
from segalias_d2.data import LIS_CLASSES, register_lowlight_dataset
from segalias_d2.data.image_checks import ImageSizeError
from segalias_d2.data.lowlight import LOAD_SUMMARIES, AnnotationError
from segalias_d2.data.raw_io import (
    ImageReadError,
    InvalidValueError,
    UnsupportedFormatError,
    read_lowlight_image,
)

CATS = [{"id": i, "name": n} for i, n in enumerate(LIS_CLASSES)]


def _ann(ann_id, image_id=0, **kw):
    a = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "area": 324.0,
        "bbox": [2, 2, 18, 18],
        "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20]],
    }
    a.update(kw)
    return a


def _image(image_id=0, file_name="1.png", height=40, width=60):
    return {"id": image_id, "file_name": file_name, "height": height, "width": width}


def _load(tmp_path, name, data, image_format="srgb", images=None, **kw):
    """Write ``data`` (a dict, or raw JSON text) and 8-bit 40x60 PNGs for ``images`` (default: every
    entry's file); register and load."""
    text = data if isinstance(data, str) else json.dumps(data)
    (tmp_path / "ann.json").write_text(text)
    if images is None and isinstance(data, dict):
        images = [
            im["file_name"]
            for im in data.get("images", [])
            if isinstance(im, dict) and "file_name" in im
        ]
    for f in images or []:
        cv2.imwrite(str(tmp_path / f), np.full((40, 60, 3), 90, np.uint8))
    register_lis_json(name, tmp_path / "ann.json", tmp_path, image_format, **kw)
    return DatasetCatalog.get(name)


def _coco(annotations, images=None):
    return {"images": images or [_image()], "annotations": annotations, "categories": CATS}


# ------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("bad", [math.nan, math.inf, "12"])
def test_non_finite_or_non_numeric_polygon_is_refused(tmp_path, bad):
    poly = [2, 2, 20, 2, bad, 20, 2, 20]
    with pytest.raises(
        AnnotationError
    ) as e:  # before: NaN reached the mask rasteriser (~24 GB, killed)
        _load(tmp_path, "bad_poly_value", _coco([_ann(1), _ann(7, segmentation=[poly])]))
    msg = str(e.value)
    assert "annotation id=7" in msg and "1.png" in msg and "ann.json" in msg and "polygon 0" in msg
    assert repr(bad) in msg


@pytest.mark.parametrize(
    "bbox,what",
    [
        ([2, math.nan, 18, 18], "finite numbers"),
        ([2, 2, math.inf, 18], "finite"),
        ([2, 2, 18], "4 numbers"),
        ("2 2 18 18", "4 numbers"),
    ],
)
def test_non_finite_or_malformed_box_is_refused(tmp_path, bbox, what):
    with pytest.raises(AnnotationError) as e:  # before: loaded, then dropped later without a word
        _load(tmp_path, "bad_box_value", _coco([_ann(3, bbox=bbox)]))
    msg = str(e.value)
    assert (
        "annotation id=3" in msg
        and "1.png" in msg
        and "ann.json" in msg
        and "bbox" in msg
        and what in msg
    )


def test_degenerate_and_odd_polygon_are_dropped_with_warning_and_counted(tmp_path, caplog):
    anns = [
        _ann(1),
        _ann(2, bbox=[5, 5, 0, 10]),  # zero width: Detectron2 cannot use it
        _ann(
            3, segmentation=[[2, 2, 20, 2, 20, 20, 2]]
        ),  # odd length, the only polygon: instance dropped
        _ann(4, segmentation=[[2, 2, 20, 2, 20, 20, 2, 20], [1, 1, 3]]),
    ]  # odd second polygon: polygon dropped
    with caplog.at_level(logging.WARNING):
        dicts = _load(tmp_path, "bad_skips", _coco(anns))
    kept = dicts[0]["annotations"]
    assert [len(a["segmentation"]) for a in kept] == [1, 1]
    s = LOAD_SUMMARIES["bad_skips"]
    assert (
        s["instances"],
        s["degenerate_box"],
        s["polygon_odd_length"],
        s["instance_without_valid_polygon"],
    ) == (2, 1, 2, 1)
    assert (
        "polygon_fewer_than_3_points" not in s
    )  # before: an odd polygon was reported as "fewer than 3 points"
    assert "odd number of coordinates (7)" in caplog.text and "annotation id=3" in caplog.text
    assert "degenerate box [5, 5, 0, 10]" in caplog.text and "annotation id=2" in caplog.text
    assert (
        "load summary" in caplog.text
    )  # the summary itself is a warning when anything was skipped


# ---------------------------------------------------------------------------------------------- ids
def test_duplicate_image_id_names_both_files(tmp_path):
    data = _coco([_ann(1), _ann(2)], images=[_image(0, "1.png"), _image(0, "2.png")])
    with pytest.raises(
        AnnotationError
    ) as e:  # before: one record, 2.png's annotations drawn on 1.png
        _load(tmp_path, "bad_dup_image", data)
    msg = str(e.value)
    assert (
        "'1.png'" in msg
        and "'2.png'" in msg
        and "image id=0" in msg
        and "ann.json" in msg
        and "unique" in msg
    )


def test_duplicate_annotation_id_is_refused(tmp_path):
    with pytest.raises(AnnotationError, match=r"annotation id=5 .*'1.png'.*ann.json.*used twice"):
        _load(tmp_path, "bad_dup_ann", _coco([_ann(5), _ann(5)]))


def test_annotation_of_unknown_image_is_dropped_and_counted(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        dicts = _load(tmp_path, "bad_orphan", _coco([_ann(1), _ann(2, image_id=99)]))
    assert len(dicts) == 1 and len(dicts[0]["annotations"]) == 1
    assert LOAD_SUMMARIES["bad_orphan"]["annotation_without_image"] == 1
    assert (
        "annotation id=2 (image id=99" in caplog.text and "not an image of the file" in caplog.text
    )


# ---------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize(
    "images,annotations,missing",
    [
        ([{"id": 0, "file_name": "1.png", "width": 60}], [], "['height']"),
        ([_image()], [{"id": 1, "image_id": 0, "category_id": 1}], "['bbox']"),
    ],
)
def test_missing_required_key_is_named(tmp_path, images, annotations, missing):
    with pytest.raises(AnnotationError) as e:  # before: a bare KeyError
        _load(tmp_path, "bad_key", _coco(annotations, images), images=["1.png"])
    assert (
        f"has no {missing}" in str(e.value)
        and "ann.json" in str(e.value)
        and "1.png" in str(e.value)
    )


def test_top_level_list_and_missing_sections(tmp_path):
    with pytest.raises(
        AnnotationError, match=r"ann.json' is a JSON list of 1 items; expected a COCO object"
    ):
        _load(
            tmp_path, "bad_list", json.dumps([_image()])
        )  # before: AttributeError 'list' has no 'get'
    with pytest.raises(AnnotationError, match=r"ann.json' has no 'images'"):
        _load(tmp_path, "bad_noimages", json.dumps({"annotations": [], "categories": CATS}))


def test_json_without_annotations_loads_with_a_warning(tmp_path, caplog):
    data = {"images": [_image()], "categories": CATS}
    with caplog.at_level(logging.INFO):
        dicts = _load(tmp_path, "bad_noanns", data)
    assert len(dicts) == 1 and dicts[0]["annotations"] == []
    warned = [r.getMessage() for r in caplog.records if "has no 'annotations'" in r.getMessage()]
    levels = {r.levelno for r in caplog.records if "has no 'annotations'" in r.getMessage()}
    assert levels == {logging.WARNING} and "ann.json" in warned[0]  # before: "0 instances" at INFO
    assert "load summary" in warned[-1]  # and it is in the (warning) load summary line
    assert (
        LOAD_SUMMARIES["bad_noanns"]["warnings"] and LOAD_SUMMARIES["bad_noanns"]["instances"] == 0
    )


def test_json_is_read_once(tmp_path, monkeypatch):
    calls = []
    real_load = json.load
    monkeypatch.setattr(
        json,
        "load",
        lambda f, *a, **k: calls.append(getattr(f, "name", f)) or real_load(f, *a, **k),
    )
    _load(tmp_path, "read_once", _coco([_ann(1)]))
    assert [c for c in calls if str(c).endswith("ann.json")] == [
        str(tmp_path / "ann.json")
    ]  # before: twice


# ------------------------------------------------------------------------------------------ images
def test_declared_size_mismatch_srgb_and_raw_rgb(tmp_path):
    with pytest.raises(ImageSizeError) as e:  # an 8-bit sRGB PNG of 60x40 declared 61x40
        _load(tmp_path, "bad_size_srgb", _coco([_ann(1)], [_image(width=61)]))
    assert "1.png' declares 61x40 (width x height) but the file is 60x40" in str(e.value)
    assert "image id=0" in str(e.value) and "ann.json" in str(e.value)
    cv2.imwrite(
        str(tmp_path / "r.png"), np.full((40, 60, 3), 3000, np.uint16)
    )  # a 16-bit raw-RGB rendering
    with pytest.raises(
        ImageSizeError, match=r"r.png' declares 60x41 \(width x height\) but the file is 60x40"
    ):
        _load(
            tmp_path,
            "bad_size_rawrgb",
            _coco([_ann(1)], [_image(file_name="r.png", height=41)]),
            "raw_rgb",
            images=[],
        )
    assert (
        len(
            _load(
                tmp_path,
                "ok_size_rawrgb",
                _coco([_ann(1)], [_image(file_name="r.png")]),
                "raw_rgb",
                images=[],
            )
        )
        == 1
    )


def test_declared_size_raw_packed(tmp_path):
    cv2.imwrite(
        str(tmp_path / "p.png"), np.full((20, 30, 4), 3000, np.uint16)
    )  # packed: half of a 60x40 frame
    ok = _load(
        tmp_path,
        "ok_packed",
        _coco([_ann(1)], [_image(file_name="p.png")]),
        "raw_packed",
        images=[],
    )
    assert ok[0]["height"] == 40
    with pytest.raises(ImageSizeError) as e:  # a transposed frame: x and y scaled differently
        _load(
            tmp_path,
            "bad_packed",
            _coco([_ann(1)], [_image(file_name="p.png", height=60, width=40)]),
            "raw_packed",
            images=[],
        )
    assert "p.png' declares 40x60 (width x height) but the file decodes to 30x20" in str(e.value)


def test_declared_size_camera_raw(
    tmp_path, sony_arw
):  # the real Sony ARW: 5184x3464 visible -> 2592x1732
    shutil.copy(sony_arw, tmp_path / "a.ARW")
    ok = _load(
        tmp_path,
        "ok_arw",
        _coco([_ann(1)], [_image(file_name="a.ARW", height=3464, width=5184)]),
        "raw",
        images=[],
    )
    assert (ok[0]["height"], ok[0]["width"]) == (3464, 5184)
    with pytest.raises(ImageSizeError) as e:
        _load(
            tmp_path,
            "bad_arw",
            _coco([_ann(1)], [_image(file_name="a.ARW", height=5184, width=3464)]),
            "raw",
            images=[],
        )
    assert "a.ARW' declares 3464x5184 (width x height) but the file decodes to 2592x1732" in str(
        e.value
    )


def test_16_bit_png_registered_as_srgb_is_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "r.png"), np.full((40, 60, 3), 3000, np.uint16))
    with pytest.raises(
        UnsupportedFormatError,
        match=r"r.png' is a 16-bit image registered as image_format 'srgb'.*raw_rgb",
    ):
        _load(tmp_path, "bad_16bit", _coco([_ann(1)], [_image(file_name="r.png")]), images=[])
    with pytest.raises(
        UnsupportedFormatError, match=r"r.png' is a 16-bit image.*'raw_rgb'"
    ):  # at read time too
        read_lowlight_image(str(tmp_path / "r.png"), "srgb")


def test_directory_as_image(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageReadError, match=r"d.png' is a directory, not an image file"):
        read_lowlight_image(str(tmp_path / "d.png"), "srgb")  # before: a bare IsADirectoryError
    with pytest.raises(ImageReadError, match=r"image id=0: '.*d.png' is a directory"):
        _load(tmp_path, "bad_dir", _coco([_ann(1)], [_image(file_name="d.png")]), images=[])


def test_png_read_as_camera_raw(tmp_path):
    cv2.imwrite(str(tmp_path / "r.png"), np.full((4, 6, 3), 3000, np.uint16))
    with pytest.raises(UnsupportedFormatError, match=r"r.png' is not a camera RAW file.*'raw_rgb'"):
        read_lowlight_image(str(tmp_path / "r.png"), "raw")  # before: a bare KeyError


# ---------------------------------------------------------------------------------- numeric options
@pytest.mark.parametrize("ratio", [math.nan, -2.0, 0, math.inf])
def test_bad_exposure_ratio(tmp_path, ratio):
    with pytest.raises(
        InvalidValueError, match=r"dataset 'bad_ratio': exposure_ratio must be a finite number > 0"
    ):
        register_lowlight_dataset(
            "bad_ratio", "a.json", ".", image_format="raw_rgb", exposure_ratio=ratio
        )
    cv2.imwrite(str(tmp_path / "r.png"), np.full((4, 6, 3), 3000, np.uint16))
    with pytest.raises(
        InvalidValueError, match=r"exposure_ratio for '.*r.png' must be a finite number > 0"
    ):
        read_lowlight_image(str(tmp_path / "r.png"), "raw_rgb", exposure_ratio=ratio)


@pytest.mark.parametrize(
    "black,white,what",
    [
        (512, 512, "must be above the black level"),
        (100, 50, "must be above the black level"),
        (math.nan, 1000, "black_level must be a finite number"),
        (0, math.nan, "white_level must be a finite number"),
    ],
)
def test_bad_levels(tmp_path, black, white, what):
    with pytest.raises(InvalidValueError, match=rf"dataset 'bad_levels': .*{what}"):
        register_lowlight_dataset(
            "bad_levels",
            "a.json",
            ".",
            image_format="raw_rgb",
            black_level=black,
            white_level=white,
        )
    cv2.imwrite(str(tmp_path / "r.png"), np.full((4, 6, 3), 3000, np.uint16))
    with pytest.raises(InvalidValueError, match=rf"reading '.*r.png': .*{what}"):
        read_lowlight_image(
            str(tmp_path / "r.png"), "raw_rgb", black_level=black, white_level=white
        )


def test_crowd_region_is_kept_and_counted_without_warning(tmp_path, caplog):
    crowd = _ann(
        2,
        iscrowd=1,
        segmentation={"size": [40, 60], "counts": [100, 20, 2280]},
        bbox=[2, 20, 1, 20],
    )
    with caplog.at_level(logging.INFO, logger="segalias_d2.data"):
        dicts = _load(tmp_path, "crowd_kept", _coco([_ann(1), crowd]))
    annos = dicts[0]["annotations"]
    assert [a["iscrowd"] for a in annos] == [0, 1] and isinstance(
        annos[1]["segmentation"]["counts"], bytes
    )
    assert LOAD_SUMMARIES["crowd_kept"] == {"images": 1, "instances": 2, "crowd": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(
        AnnotationError, match=r"annotation id=2 .*RLE size \[40, 61\] differs from the image's"
    ):
        _load(
            tmp_path,
            "crowd_bad_size",
            _coco([_ann(1), dict(crowd, segmentation={"size": [40, 61], "counts": [100, 2340]})]),
        )
