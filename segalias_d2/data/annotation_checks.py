"""Validation of COCO-style annotation files, in one place (used by
:func:`.lowlight.load_lowlight_json`).

The rules, and what happens to a record that breaks them (``docs/data.md``, "What happens to bad
data"):

* **structure**: the file is a JSON object with an ``"images"`` list and a non-empty
  ``"categories"`` list (otherwise :class:`AnnotationError`); a missing or empty ``"annotations"``
  list is allowed (test-set files) and reported as a warning in the load summary;
* **required keys**: images ``id, file_name, height, width``; annotations
  ``id, image_id, category_id, bbox``; categories ``id, name``: a missing key is an
  :class:`AnnotationError` naming the file and the record;
* **ids**: image, annotation and category ids unique (a duplicate image id would merge two images
  into one record): error. An annotation whose ``image_id`` is no image of the file is dropped with
  a warning and counted (``annotation_without_image``), as Detectron2 drops it;
* **values**: sizes positive integers, every box / polygon / keypoint coordinate and ``area`` a
  finite number, boxes 4 numbers, RLE sizes equal to the image's, ``iscrowd`` 0 or 1, ``ignore`` 0:
  error otherwise;
* **skipped with a warning and counted** where Detectron2 skips (or cannot use) them: polygons of
  odd length (``polygon_odd_length``) or with fewer than 3 points (``polygon_fewer_than_3_points``)
  are dropped from their instance, an instance left without a polygon is dropped
  (``instance_without_valid_polygon``); boxes with a width or height <= 0 (``degenerate_box``) or
  entirely outside the image (``box_outside_image``); boxes partly outside are clipped
  (``box_clipped`` when by more than 1 px);
* crowd regions (``iscrowd: 1``) are kept, as Detectron2 keeps them (evaluation uses them, the
  training mapper drops them) and counted (``crowd``) in the summary without a warning.

Records are built as Detectron2's ``load_coco_json`` builds them (sorted by image id; ``file_name``
joined to the image root; polygons with < 3 points filtered; uncompressed RLE compressed; keypoint
coordinates + 0.5; ``bbox_mode`` XYWH_ABS), from the one parsed JSON, so the file is read once.
"""

import logging
import math
import os
from collections import Counter

from detectron2.structures import BoxMode

from .categories import AnnotationError

__all__ = [
    "LoadCounts",
    "check_top_level",
    "check_categories",
    "check_images",
    "group_annotations",
    "clean_annotation",
    "describe_image",
    "REQUIRED_IMAGE_KEYS",
    "REQUIRED_ANNOTATION_KEYS",
]

logger = logging.getLogger(__name__)

REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
REQUIRED_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")


class LoadCounts:
    """Counts of skipped / clipped records and warnings of one load; each skip is logged as a
    warning."""

    def __init__(self, name):
        self.name = name
        self.counts = Counter()
        self.notes = Counter()  # ordinary records worth a count, not a warning (crowd regions)
        self.warnings = []

    def skip(self, key, message):
        self.counts[key] += 1
        logger.warning(f"[{self.name}] skipping {message}")

    def count(self, key):
        self.counts[key] += 1

    def note(self, key):
        self.notes[key] += 1

    def warn(self, message):
        self.warnings.append(message)
        logger.warning(f"[{self.name}] {message}")


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v):
    return _is_number(v) and math.isfinite(v)


def _is_id(v):
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str)


def describe_image(im, json_file, index=None):
    at = f", entry {index} of 'images'" if index is not None else ""
    return f"image id={im.get('id')!r} (file '{im.get('file_name')}'{at}) in '{json_file}'"


def check_top_level(data, json_file, counts):
    """``(images, annotations, categories)`` lists of a parsed COCO file; errors for a wrong
    structure."""
    if not isinstance(data, dict):
        kind = (
            f"a JSON list of {len(data)} items"
            if isinstance(data, list)
            else f"a JSON {type(data).__name__}"
        )
        raise AnnotationError(
            f"annotation file '{json_file}' is {kind}; expected a COCO object "
            '{"images": [...], "annotations": [...], "categories": [...]}'
        )
    for key in ("images", "categories"):
        if key not in data:
            raise AnnotationError(
                f"annotation file '{json_file}' has no '{key}' (keys: {sorted(data)}); a COCO file "
                'needs "images", "annotations" and "categories"'
            )
        if not isinstance(data[key], list):
            raise AnnotationError(
                f"'{key}' of '{json_file}' is a {type(data[key]).__name__}, expected a list"
            )
    if not data["categories"]:
        raise AnnotationError(
            f"annotation file '{json_file}' has no 'categories' (the list is empty)"
        )
    if not data["images"]:
        raise AnnotationError(
            f"annotation file '{json_file}' has no images (its 'images' list is empty)"
        )
    annotations = data.get("annotations")
    if annotations is None:
        counts.warn(
            f"'{json_file}' has no 'annotations': all {len(data['images'])} images load without "
            "instances"
        )
        annotations = []
    elif not isinstance(annotations, list):
        raise AnnotationError(
            f"'annotations' of '{json_file}' is a {type(annotations).__name__}, expected a list"
        )
    elif not annotations:
        counts.warn(
            f"'{json_file}' has an empty 'annotations' list: all {len(data['images'])} images load "
            "without instances"
        )
    return data["images"], annotations, data["categories"]


def check_categories(categories, json_file):
    """The ``categories`` list checked: dicts with an id and a string name, ids unique."""
    seen = {}
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise AnnotationError(
                f"category entry {i} of '{json_file}' is {c!r}; expected "
                f'{{"id": ..., "name": ...}}'
            )
        if not _is_id(c["id"]) or not isinstance(c["name"], str):
            raise AnnotationError(
                f"category entry {i} of '{json_file}' ({c!r}): the id must be an integer and the "
                "name a string"
            )
        if c["id"] in seen:
            raise AnnotationError(
                f"category id {c['id']!r} of '{json_file}' is used twice ('{seen[c['id']]}' and "
                f"'{c['name']}'); category ids must be unique"
            )
        seen[c["id"]] = c["name"]
    return categories


def _positive_int(v):
    if _finite(v) and v == int(v) and v > 0:
        return int(v)
    return None


def check_images(images, json_file):
    """``{image id: image entry}`` with required keys, integer sizes and unique ids (else
    :class:`AnnotationError`)."""
    by_id = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise AnnotationError(
                f"entry {i} of 'images' in '{json_file}' is {im!r}, expected an object"
            )
        where = describe_image(im, json_file, i)
        missing = [k for k in REQUIRED_IMAGE_KEYS if k not in im]
        if missing:
            raise AnnotationError(
                f"{where} has no {missing} (COCO images need {list(REQUIRED_IMAGE_KEYS)})"
            )
        if not _is_id(im["id"]):
            raise AnnotationError(
                f"{where}: the id must be an integer (or a string), got {im['id']!r}"
            )
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise AnnotationError(f"{where}: file_name must be a non-empty string")
        h, w = _positive_int(im["height"]), _positive_int(im["width"])
        if h is None or w is None:
            raise AnnotationError(
                f"{where}: height and width must be positive integers, got "
                f"height={im['height']!r}, width={im['width']!r}"
            )
        if im["id"] in by_id:
            raise AnnotationError(
                f"{where} has the same id as {describe_image(by_id[im['id']], json_file)}; image "
                "ids must be unique (one record per id: the two images would be merged)"
            )
        by_id[im["id"]] = dict(im, height=h, width=w)
    if len({type(k) for k in by_id}) > 1:
        raise AnnotationError(f"'{json_file}' mixes integer and string image ids")
    return by_id


def _describe_ann(ann, images, json_file):
    im = images.get(ann.get("image_id"), {})
    return (
        f"annotation id={ann.get('id')} (image id={ann.get('image_id')}, file "
        f"'{im.get('file_name')}') in '{json_file}'"
    )


def group_annotations(annotations, images, json_file, counts):
    """``{image id: [annotation, ...]}`` (file order) of the annotations with required keys and
    unique ids; annotations of unknown images are dropped (warned, counted). Detectron2 tolerates
    duplicate annotation ids only in COCO 2014 ``minival`` files (known bug there): warned and
    counted for those, an error for any other file."""
    by_image = {i: [] for i in images}
    seen = set()
    minival = "minival" in os.path.basename(str(json_file))
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise AnnotationError(
                f"entry {i} of 'annotations' in '{json_file}' is {ann!r}, expected an object"
            )
        where = _describe_ann(ann, images, json_file)
        missing = [k for k in REQUIRED_ANNOTATION_KEYS if k not in ann]
        if missing:
            raise AnnotationError(
                f"{where} (entry {i}) has no {missing} (COCO annotations need "
                f"{list(REQUIRED_ANNOTATION_KEYS)})"
            )
        if ann["id"] in seen:
            if not minival:
                raise AnnotationError(
                    f"{where}: annotation id {ann['id']!r} is used twice; annotation ids must be "
                    "unique"
                )
            counts.count("duplicate_annotation_id")
        seen.add(ann["id"])
        if ann["image_id"] not in by_image:
            counts.skip(
                "annotation_without_image", f"{where}: its image_id is not an image of the file"
            )
            continue
        by_image[ann["image_id"]].append(ann)
    return by_image


_NUMBER_TYPES = {int, float}


def _check_coordinates(values, what, where):
    # fast path (COCO: ~40M coordinates): the types by C-level map, finiteness by one sum (NaN / inf
    # propagate); anything else is looked at value by value, which also names the bad values
    if (
        isinstance(values, (list, tuple))
        and set(map(type, values)) <= _NUMBER_TYPES
        and math.isfinite(sum(values))
    ):
        return list(map(float, values))
    if not isinstance(values, (list, tuple)) or not all(_finite(v) for v in values):
        bad = (
            values
            if not isinstance(values, (list, tuple))
            else [v for v in values if not _finite(v)][:3]
        )
        raise AnnotationError(f"{where}: {what} must be a list of finite numbers, got {bad!r}")
    return [float(v) for v in values]  # finite values whose sum overflowed


def _clean_polygons(segm, where, counts):
    """The usable polygons (float lists) of a polygon segmentation; bad ones dropped (warned,
    counted)."""
    kept = []
    for k, poly in enumerate(segm):
        coords = _check_coordinates(poly, f"polygon {k}", where)
        if len(coords) % 2:
            counts.skip(
                "polygon_odd_length",
                f"polygon {k} of {where}: odd number of coordinates ({len(coords)}); "
                "a polygon is a flat list [x1, y1, x2, y2, ...]",
            )
        elif len(coords) < 6:
            counts.skip(
                "polygon_fewer_than_3_points",
                f"polygon {k} of {where}: fewer than 3 points ({len(coords) // 2})",
            )
        else:
            kept.append(coords)
    return kept


def _check_rle(segm, h, w, where):
    size, rle_counts = segm.get("size"), segm.get("counts")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(_positive_int(v) for v in size)
        or not isinstance(rle_counts, (list, str, bytes))
    ):
        raise AnnotationError(
            f"{where}: an RLE segmentation needs 'size' [height, width] and 'counts' (a list or a "
            f"string), got keys {sorted(segm)}"
        )
    if [int(size[0]), int(size[1])] != [h, w]:
        raise AnnotationError(
            f"{where}: RLE size {list(size)} differs from the image's declared size [{h}, {w}]"
        )
    if isinstance(rle_counts, list):
        import pycocotools.mask as mask_util  # noqa: PLC0415  (optional dependency)

        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in rle_counts):
            raise AnnotationError(f"{where}: RLE counts must be non-negative integers")
        return mask_util.frPyObjects(segm, h, w)  # as Detectron2: uncompressed -> compressed RLE
    return segm


def clean_annotation(ann, image, json_file, counts, where):
    """A Detectron2 annotation dict (``category_id`` still the JSON id) of one COCO annotation, or
    None if it is skipped (warned, counted). Raises :class:`AnnotationError` for values that cannot
    be used."""

    h, w = image["height"], image["width"]
    if ann.get("ignore", 0) != 0:
        raise AnnotationError(
            f'{where} has "ignore": {ann["ignore"]!r}, which Detectron2 does not support; mark '
            "such regions iscrowd=1 or remove them"
        )
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
        raise AnnotationError(f"{where}: iscrowd must be 0 or 1, got {iscrowd!r}")
    bbox = ann["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise AnnotationError(
            f"{where}: bbox must be [x, y, width, height] (4 numbers), got {bbox!r}"
        )
    x, y, bw, bh = _check_coordinates(bbox, "bbox", where)
    if "area" in ann and not _finite(ann["area"]):
        raise AnnotationError(f"{where}: area must be a finite number, got {ann['area']!r}")
    obj = {key: ann[key] for key in ("iscrowd", "category_id") if key in ann}
    segm = ann.get("segmentation")
    if segm:
        if isinstance(segm, dict):
            segm = _check_rle(segm, h, w, where)
        elif isinstance(segm, list):
            segm = _clean_polygons(segm, where, counts)
            if not segm:
                counts.skip("instance_without_valid_polygon", f"{where}: no usable polygon left")
                return None
        else:
            raise AnnotationError(
                f"{where}: segmentation must be a list of polygons or an RLE object, got a "
                f"{type(segm).__name__}"
            )
        obj["segmentation"] = segm
    keypoints = ann.get("keypoints")
    if keypoints:
        coords = _check_coordinates(keypoints, "keypoints", where)
        if len(coords) % 3:
            raise AnnotationError(
                f"{where}: keypoints must be triples [x, y, visibility, ...], got {len(coords)} "
                "values"
            )
        # Detectron2: integer pixel indices -> continuous coordinates (+0.5), visibility kept
        obj["keypoints"] = [v + 0.5 if k % 3 != 2 else v for k, v in enumerate(coords)]
    if bw <= 0 or bh <= 0:
        counts.skip("degenerate_box", f"a degenerate box {list(bbox)} of {where}")
        return None
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
    if x1 <= x0 or y1 <= y0:
        counts.skip(
            "box_outside_image", f"box {list(bbox)} entirely outside the {w}x{h} image: {where}"
        )
        return None
    # float boxes: Detectron2's transforms write coordinates in place, so an int box (common in
    # hand-made COCO JSONs) would be truncated by every resize
    obj["bbox"] = [x, y, bw, bh]
    if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
        # sub-pixel overshoot (rounding of polygon coordinates) is clipped silently
        if max(x0 - x, y0 - y, x + bw - x1, y + bh - y1) > 1.0:
            counts.count("box_clipped")
        obj["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    obj["bbox_mode"] = BoxMode.XYWH_ABS
    if iscrowd:  # kept, as Detectron2 keeps it: the evaluators use it, the training mapper drops it
        counts.note("crowd")
    return obj
