"""LIS class ids (LIS issue #23): original misnamed JSON, revised JSON, explicit id->name mapping,
COCO files.

Expectations are written out by hand from the issue thread (true class by id 0..7: bicycle, car,
motorbike, bus, bottle, chair, diningtable, tvmonitor) and from COCO's category table; they do
not read the package's constants.
"""

import json
import logging

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

import segalias_d2  # noqa: F401  (registers the builtin datasets)
from segalias_d2.data import LIS_CLASSES, class_index_map, register_lowlight_dataset
from segalias_d2.data.builtin import register_lis
from segalias_d2.data.lowlight import LIS_ORIGINAL_JSON_CLASSES, LOAD_SUMMARIES, AnnotationError

TRUE = ["bicycle", "car", "motorbike", "bus", "bottle", "chair", "diningtable", "tvmonitor"]
ORIGINAL = ["bicycle", "chair", "diningtable", "bottle", "motorbike", "car", "tvmonitor", "bus"]
WARNING = "original LIS category names"


def _unregister(*names):
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        if n in MetadataCatalog.list():
            MetadataCatalog.remove(n)


def _write(folder, categories, category_ids, file="ann.json", image="./JPEGImages/2.png"):
    """One 60x40 image with one 10x10 box per entry of ``category_ids`` (in that order)."""

    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / image), np.full((40, 60, 3), 50, np.uint8))
    anns = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": c,
            "iscrowd": 0,
            "area": 100.0,
            "bbox": [i, i, 10, 10],
            "segmentation": [[i, i, i + 10, i, i + 10, i + 10, i, i + 10]],
        }
        for i, c in enumerate(category_ids)
    ]
    data = {
        "images": [{"id": 1, "file_name": image, "height": 40, "width": 60}],
        "annotations": anns,
        "categories": categories,
    }
    (folder / file).write_text(json.dumps(data))
    return str(folder / file)


def _cats(names, ids=None):
    return [
        {"id": i, "name": n, "supercategory": "lis"}
        for i, n in zip(ids or range(len(names)), names)
    ]


def _load(name, json_file, root, **kw):
    _unregister(name)
    register_lowlight_dataset(
        name, json_file, root, thing_classes=kw.pop("thing_classes", LIS_CLASSES), **kw
    )
    return DatasetCatalog.get(name)


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and WARNING in r.getMessage()]


def test_constants():
    assert LIS_CLASSES == TRUE
    assert LIS_ORIGINAL_JSON_CLASSES == ORIGINAL


def test_original_file_is_renamed_by_id_with_one_warning(tmp_path, caplog):
    # annotation k uses JSON id k (whose ORIGINAL name is wrong except for id 0)
    f = _write(tmp_path, _cats(ORIGINAL), [0, 1, 2, 3, 4, 5, 6, 7])
    with caplog.at_level(logging.WARNING):
        for name in ("test_lisc_orig_a", "test_lisc_orig_b"):  # two datasets on the same file
            for _ in range(2):  # and each loaded twice
                dicts = _load(name, f, str(tmp_path))
                assert [a["category_id"] for a in dicts[0]["annotations"]] == [
                    0,
                    1,
                    2,
                    3,
                    4,
                    5,
                    6,
                    7,
                ]
                meta = MetadataCatalog.get(name)
                assert list(meta.thing_classes) == TRUE
                assert meta.thing_dataset_id_to_contiguous_id == {k: k for k in range(8)}
    warned = _warnings(caplog)
    assert len(warned) == 1 and "ann.json" in warned[0].getMessage()
    assert "1 car" in warned[0].getMessage()  # says what id 1 really is
    assert LOAD_SUMMARIES["test_lisc_orig_a"]["category_names"] == "lis_original_renamed"
    # without thing_classes the true names come out as well, in id order
    _unregister("test_lisc_orig_none")
    register_lowlight_dataset("test_lisc_orig_none", f, str(tmp_path))
    DatasetCatalog.get("test_lisc_orig_none")
    assert list(MetadataCatalog.get("test_lisc_orig_none").thing_classes) == TRUE
    # another file with the original list gets its own (single) warning
    g = _write(tmp_path, _cats(ORIGINAL), [5], file="other.json")
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        _load("test_lisc_orig_c", g, str(tmp_path))
        _load("test_lisc_orig_c", g, str(tmp_path))
    warned = _warnings(caplog)
    assert len(warned) == 1 and "other.json" in warned[0].getMessage()
    _unregister("test_lisc_orig_a", "test_lisc_orig_b", "test_lisc_orig_none", "test_lisc_orig_c")


def test_revised_file_is_used_as_is(tmp_path, caplog):
    f = _write(tmp_path, _cats(TRUE), [1, 5, 7, 0])
    with caplog.at_level(logging.WARNING):
        dicts = _load("test_lisc_revised", f, str(tmp_path))
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1, 5, 7, 0]
    assert list(MetadataCatalog.get("test_lisc_revised").thing_classes) == TRUE
    assert not _warnings(caplog) and "category_names" not in LOAD_SUMMARIES["test_lisc_revised"]
    # the revised list in shuffled JSON order / spelled the COCO way is still matched by name
    cats = [
        {"id": 3, "name": "bus"},
        {"id": 1, "name": "car"},
        {"id": 2, "name": "motorcycle"},
        {"id": 7, "name": "tv"},
        {"id": 6, "name": "dining table"},
        {"id": 0, "name": "bicycle"},
        {"id": 4, "name": "bottle"},
        {"id": 5, "name": "chair"},
    ]
    g = _write(tmp_path, cats, [2, 6, 7], file="revised_coco_spelling.json")
    assert [
        a["category_id"] for a in _load("test_lisc_revised", g, str(tmp_path))[0]["annotations"]
    ] == [2, 6, 7]
    _unregister("test_lisc_revised")


def test_file_that_is_neither_follows_the_name_rules(tmp_path, caplog):
    # the original order but id 7 renamed: not the original list, so nothing is renamed
    names = ORIGINAL[:7] + ["truck"]
    f = _write(tmp_path, _cats(names), [1, 7])
    with caplog.at_level(logging.WARNING), pytest.raises(AnnotationError) as e:
        _load("test_lisc_neither", f, str(tmp_path))
    assert (
        "truck" in str(e.value) and "annotation id=2" in str(e.value) and "ann.json" in str(e.value)
    )
    assert not _warnings(caplog)
    # the same file without an annotation of the unknown class: matched by the JSON names
    g = _write(tmp_path, _cats(names), [1, 5], file="neither_ok.json")
    dicts = _load("test_lisc_neither", g, str(tmp_path))
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [5, 1]  # "chair" -> 5, "car" -> 1
    _unregister("test_lisc_neither")


def test_explicit_category_names(tmp_path, caplog):
    cats = [{"id": 10, "name": "a"}, {"id": 20, "name": "b"}, {"id": 30, "name": "c"}]
    f = _write(tmp_path, cats, [10, 20, 30, 20])
    dicts = _load(
        "test_lisc_map", f, str(tmp_path), category_names={10: "car", "20": "bus", 30: "chair"}
    )
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1, 3, 5, 3]
    assert MetadataCatalog.get("test_lisc_map").thing_dataset_id_to_contiguous_id == {
        10: 1,
        20: 3,
        30: 5,
    }
    assert LOAD_SUMMARIES["test_lisc_map"]["category_names"] == "explicit"
    # an explicit mapping wins over the original-list detection (and then nothing is warned)
    g = _write(tmp_path, _cats(ORIGINAL), [1, 5], file="orig_with_map.json")
    with caplog.at_level(logging.WARNING):
        dicts = _load("test_lisc_map", g, str(tmp_path), category_names=dict(enumerate(ORIGINAL)))
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [
        5,
        1,
    ]  # the user said id 1 is a chair
    assert not _warnings(caplog)
    # without thing_classes the mapping gives the class list (sorted by id)
    _unregister("test_lisc_map")
    register_lowlight_dataset(
        "test_lisc_map", f, str(tmp_path), category_names={10: "x", 20: "y", 30: "z"}
    )
    assert [a["category_id"] for a in DatasetCatalog.get("test_lisc_map")[0]["annotations"]] == [
        0,
        1,
        2,
        1,
    ]
    assert list(MetadataCatalog.get("test_lisc_map").thing_classes) == ["x", "y", "z"]
    _unregister("test_lisc_map")


def test_explicit_category_names_are_validated(tmp_path):
    f = _write(tmp_path, [{"id": 10, "name": "a"}, {"id": 20, "name": "car"}], [10, 20])
    root = str(tmp_path)
    with pytest.raises(
        ValueError, match=r"test_lisc_bad.*ids 10 and 20 are both named"
    ):  # duplicate names
        register_lowlight_dataset(
            "test_lisc_bad",
            f,
            root,
            thing_classes=LIS_CLASSES,
            category_names={10: "bicycle", 20: "Bicycle"},
        )
    with pytest.raises(ValueError, match="zebra.*thing_classes"):  # not a thing class
        register_lowlight_dataset(
            "test_lisc_bad", f, root, thing_classes=LIS_CLASSES, category_names={10: "zebra"}
        )
    with pytest.raises(ValueError, match="'ten' is not an integer"):
        register_lowlight_dataset("test_lisc_bad", f, root, category_names={"ten": "car"})
    assert "test_lisc_bad" not in DatasetCatalog.list()  # nothing registered by a rejected call
    with pytest.raises(
        AnnotationError, match=r"id\(s\) \[99\].*ann.json.*\[10, 20\]"
    ):  # unknown id, at load
        _load("test_lisc_bad", f, root, category_names={10: "bus", 99: "car"})
    with pytest.raises(AnnotationError, match="ids 10 and 20.*'car'"):  # id 20 is already named car
        _load("test_lisc_bad", f, root, category_names={10: "car"})
    _unregister("test_lisc_bad")


def test_coco_classes_land_on_true_lis_ids():

    coco80 = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
    m = class_index_map(coco80, LIS_CLASSES)
    # COCO-80 contiguous: bicycle 1, car 2, motorcycle 3, bus 5, bottle 39, chair 56, dining table
    # 60, tv 62
    expected = np.full(80, -1)
    expected[[1, 2, 3, 5, 39, 56, 60, 62]] = [0, 1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_array_equal(m, expected)
    # COCO-8 (COCO id order, as the official SynCOCO/COCO -> LIS labels come out) is the identity
    coco8 = ["bicycle", "car", "motorcycle", "bus", "bottle", "chair", "dining table", "tv"]
    np.testing.assert_array_equal(class_index_map(coco8, LIS_CLASSES), np.arange(8))


def test_lis_traintest_split_with_original_names(tmp_path, caplog):
    """The whole-LIS split is registered for every modality and loads the original file with true
    classes."""
    ann = tmp_path / "LIS" / "annotations"
    folders = {
        "raw_dark": ("RAW-dark", "lis_coco_png_traintest+1.json", "./JPEGImages/2.png"),
        "raw_normal": ("RAW-normal", "lis_coco_png_traintest.json", "./JPEGImages/1.png"),
        "srgb_dark": ("RGB-dark", "lis_coco_JPG_traintest+1.json", "./JPEGImages/2.JPG"),
        "srgb_normal": ("RGB-normal", "lis_coco_png_traintest.json", "./JPEGImages/1.png"),
    }
    for folder, file, image in folders.values():
        ann.mkdir(parents=True, exist_ok=True)
        # JSON ids 5, 1, 4 (originally named car, chair, motorbike; truly chair, car, bottle)
        _write(
            tmp_path / "LIS" / folder,
            _cats(ORIGINAL),
            [5, 1, 4],
            file=f"../annotations/{file}",
            image=image,
        )
    names = [f"test_wlis_{m}_{s}" for m in folders for s in ("train", "test", "traintest")]
    _unregister(*names)
    register_lis(str(tmp_path), prefix="test_wlis")
    assert set(names) <= set(DatasetCatalog.list())
    with caplog.at_level(logging.WARNING):
        for m, (folder, file, image) in folders.items():
            name = f"test_wlis_{m}_traintest"
            meta = MetadataCatalog.get(name)
            assert meta.json_file == str(ann / file) and meta.image_root == str(
                tmp_path / "LIS" / folder
            )
            rec = DatasetCatalog.get(name)[0]
            assert rec["file_name"].endswith(image[2:]) and rec["image_format"] == meta.image_format
            assert [a["category_id"] for a in rec["annotations"]] == [5, 1, 4]
            assert [meta.thing_classes[a["category_id"]] for a in rec["annotations"]] == [
                "chair",
                "car",
                "bottle",
            ]
    # one warning per annotation file: the png traintest file is shared by raw_normal and
    # srgb_normal
    assert sorted(
        r.getMessage().split("'")[1].rsplit("/", 1)[-1] for r in _warnings(caplog)
    ) == sorted(
        [
            "lis_coco_png_traintest+1.json",
            "lis_coco_JPG_traintest+1.json",
            "lis_coco_png_traintest.json",
        ]
    )
    _unregister(*names)
