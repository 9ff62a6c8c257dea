"""Class names and ids: the 8 LIS classes, spellings across COCO / VOC / LIS, and index maps.

**LIS class ids (LIS issue #23).** The distributed LIS JSON files name 7 of their 8 categories
wrongly; the author confirmed it and published a revised file. The true class of each id is
:data:`LIS_CLASSES` (id order 0..7); the original files say :data:`LIS_ORIGINAL_JSON_CLASSES`.
MMDetection assigns labels in JSON id order and the official SynCOCO/COCO -> LIS configs name them
with the true classes, so the released pipeline was consistent: COCO-8 label k meets LIS id k.
Matching by the original names is wrong (a COCO car would land on LIS id 5, truly a chair).
:func:`resolve_category_names` therefore recognises the original category list and renames it by id
(one warning per file); the revised file (true names) is used as it is; any other file keeps its
names; an explicit id -> name mapping overrides all of that.
"""

import logging
import os

import numpy as np

from .raw_io import LowLightDataError

__all__ = [
    "LIS_CLASSES",
    "LIS_ORIGINAL_JSON_CLASSES",
    "CLASS_NAME_ALIASES",
    "AnnotationError",
    "canonical_class_name",
    "class_index_map",
    "is_lis_original_categories",
    "resolve_category_names",
    "validate_category_names",
]

logger = logging.getLogger(__name__)

#: The true LIS classes, by category id 0..7 (LIS issue #23; the revised JSON uses these names).
LIS_CLASSES = ["bicycle", "car", "motorbike", "bus", "bottle", "chair", "diningtable", "tvmonitor"]

#: The names the ORIGINAL distributed LIS JSON files give to ids 0..7 (wrong for ids 1..7).
LIS_ORIGINAL_JSON_CLASSES = [
    "bicycle",
    "chair",
    "diningtable",
    "bottle",
    "motorbike",
    "car",
    "tvmonitor",
    "bus",
]

#: Different spellings of the same class (COCO / VOC / LIS). Keys and values are canonical
#: lower-case names; :func:`canonical_class_name` maps every spelling to the LIS/VOC one.
CLASS_NAME_ALIASES = {
    "motorcycle": "motorbike",
    "dining table": "diningtable",
    "tv": "tvmonitor",
    "tv/monitor": "tvmonitor",
    "tv monitor": "tvmonitor",
    "airplane": "aeroplane",
    "couch": "sofa",
    "potted plant": "pottedplant",
    "track": "truck",  # labelme's video-annotation example spells truck "track"
}

# files already warned about (the original LIS names are reported once per file and process)
_RENAME_WARNED = set()


class AnnotationError(LowLightDataError, ValueError):
    """An annotation file contains a record that cannot be used."""


def canonical_class_name(name):
    n = " ".join(str(name).strip().lower().replace("_", " ").split())
    return CLASS_NAME_ALIASES.get(n, n)


def class_index_map(src_classes, dst_classes, strict=False):
    """Index map from ``src_classes`` to ``dst_classes`` matched BY NAME (aliases applied).

    Returns an int64 array ``m`` with ``m[i]`` = index in ``dst_classes`` of ``src_classes[i]``,
    or -1 when it has no counterpart (``strict=True`` raises instead). Example: a COCO-80 model
    evaluated on LIS: ``class_index_map(coco_thing_classes, LIS_CLASSES)`` maps the COCO-80
    contiguous indices bicycle 1, car 2, motorcycle 3, bus 5, bottle 39, chair 56, dining table 60,
    tv 62 to LIS 0..7.
    """
    dst = {canonical_class_name(n): j for j, n in enumerate(dst_classes)}
    if len(dst) != len(dst_classes):
        raise ValueError(
            f"dst_classes has duplicate names after canonicalisation: {list(dst_classes)}"
        )
    out = np.full(len(src_classes), -1, dtype=np.int64)
    for i, n in enumerate(src_classes):
        j = dst.get(canonical_class_name(n))
        if j is None and strict:
            raise AnnotationError(
                f"class '{n}' has no counterpart (by name) in {list(dst_classes)}"
            )
        out[i] = -1 if j is None else j
    return out


def is_lis_original_categories(categories):
    """True if ``categories`` (COCO ``categories`` list) is exactly the original, misnamed LIS
    list."""
    try:
        got = {int(c["id"]): canonical_class_name(c["name"]) for c in categories}
    except (KeyError, TypeError, ValueError):
        return False
    return len(categories) == len(LIS_ORIGINAL_JSON_CLASSES) and got == dict(
        enumerate(LIS_ORIGINAL_JSON_CLASSES)
    )


def validate_category_names(category_names, thing_classes=None, where="category_names"):
    """Check an explicit ``{category id: class name}`` mapping; returns it with int keys.

    Raises ``ValueError`` for non-integer ids, duplicate names (after aliases) or, when
    ``thing_classes`` is given, names that are not among them.
    """
    if category_names is None:
        return None
    if not hasattr(category_names, "items"):
        raise ValueError(
            f"{where} must be a mapping {{category id: class name}}, got "
            f"{type(category_names).__name__}"
        )
    out, seen = {}, {}
    for k, name in category_names.items():
        # ids may come as strings from a JSON/YAML config; anything else non-integer is an error
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            cid = int(k)
        elif isinstance(k, str) and k.strip().lstrip("-").isdigit():
            cid = int(k)
        else:
            raise ValueError(f"{where}: category id {k!r} is not an integer")
        if cid in out:
            raise ValueError(f"{where}: category id {cid} is given twice")
        canon = canonical_class_name(name)
        if canon in seen:
            raise ValueError(
                f"{where}: ids {seen[canon]} and {cid} are both named '{name}' (names must be "
                "unique)"
            )
        seen[canon] = cid
        out[cid] = str(name)
    if thing_classes is not None:
        wanted = {canonical_class_name(n) for n in thing_classes}
        bad = {cid: n for cid, n in out.items() if canonical_class_name(n) not in wanted}
        if bad:
            raise ValueError(
                f"{where}: name(s) {bad} are not in thing_classes {list(thing_classes)}"
            )
    return out


def resolve_category_names(categories, json_file, category_names=None):
    """The class name of every category id of a COCO ``categories`` list, LIS ids fixed.

    Returns ``(names, source)``: ``names`` = {id: name}; ``source`` is "explicit"
    (``category_names`` given: it overrides the JSON's names by id), "lis_original_renamed" (the
    original LIS list, renamed by id to :data:`LIS_CLASSES`; warned once per file) or "json" (used
    as it is: the revised LIS file, COCO, anything else).
    """
    names = {c["id"]: c["name"] for c in categories}
    if category_names is not None:
        unknown = sorted(set(category_names) - set(names))
        if unknown:
            raise AnnotationError(
                f"category_names maps id(s) {unknown} that are not in the 'categories' of "
                f"'{json_file}' (its ids: {sorted(names)})"
            )
        names.update(category_names)
        by_name = {}
        for cid in sorted(names):
            canon = canonical_class_name(names[cid])
            if canon in by_name:
                raise AnnotationError(
                    f"after applying category_names, ids {by_name[canon]} and {cid} of "
                    f"'{json_file}' are both "
                    f"named '{names[cid]}'; map every id whose name must change"
                )
            by_name[canon] = cid
        return names, "explicit"
    if is_lis_original_categories(categories):
        key = os.path.abspath(json_file) if "://" not in str(json_file) else str(json_file)
        if key not in _RENAME_WARNED:
            _RENAME_WARNED.add(key)
            logger.warning(
                f"'{json_file}' has the original LIS category names, which are wrong for 7 of the "
                f"8 ids (LIS issue #23); using the true class of each id instead: "
                + ", ".join(f"{i} {n}" for i, n in enumerate(LIS_CLASSES))
                + " (the author's revised annotation file needs no renaming; pass category_names= "
                "to override)"
            )
        return dict(enumerate(LIS_CLASSES)), "lis_original_renamed"
    return names, "json"
