"""Registering low-light COCO-style datasets (LIS and friends) and mapping classes by name.

``register_lowlight_dataset(name, json_file, image_root, image_format=...)`` registers a lazy
``DatasetCatalog`` entry and fills ``MetadataCatalog`` (thing_classes, evaluator_type="coco",
image_format, json_file, black/white levels, exposure ratio). The JSON is read at first use
(``DatasetCatalog.get``), once, where problems are reported as follows (the rules:
:mod:`.annotation_checks`, :mod:`.image_checks`; the table: ``docs/data.md``):

* missing JSON / image folder -> :class:`DatasetNotFoundError` listing the missing paths;
* a wrong structure (not an object, no "images" / "categories"), a missing key, a duplicate id, a
  non-finite or malformed value, a missing / unreadable image or one whose declared size does not
  fit the file -> :class:`AnnotationError` / :class:`ImageReadError` / ``ImageSizeError`` naming the
  JSON and the record; no or empty "annotations" -> a warning in the load summary;
* category names: the original (misnamed) LIS category list is renamed by id to the true
  classes :data:`LIS_CLASSES` with one warning per file (LIS issue #23, see
  :mod:`segalias_d2.data.categories`); an explicit ``category_names={id: name}`` overrides the
  JSON's names;
* an annotation whose category is not in ``categories``, or a category name that is not one of
  the requested ``thing_classes`` -> :class:`AnnotationError` naming the JSON and the record;
* polygons of odd length or with fewer than 3 points (dropped from their instance; an instance left
  without one is skipped, as Detectron2 does), annotations of no image of the file, boxes entirely
  outside the image or degenerate boxes -> skipped with a warning; boxes partly outside are clipped.
  The counts are logged in one summary line (a warning when anything was skipped) and kept in
  :data:`LOAD_SUMMARIES` [dataset name].

Clean twins (DSL training on real pairs, ``INPUT.SEGALIAS.CLEAN_TWIN "pair"``): a record's
``clean_file_name`` (set by ``register_lowlight_dataset(..., clean_image_root=...)``), or, for the
LIS layout, the normal-exposure image of the pair derived from the dark file
(:func:`lis_clean_twin_file_name`: ``RAW-dark/.../<n>.png`` -> ``RAW-normal/.../<n-1>.png``,
``RGB-dark/.../<n>.JPG`` -> ``RGB-normal/.../<n-1>.png``).
"""

import copy
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

from .annotation_checks import (
    LoadCounts,
    check_categories,
    check_images,
    check_top_level,
    clean_annotation,
    describe_image,
    group_annotations,
)
from .categories import (  # noqa: F401  (re-exported from here, as before the split)
    CLASS_NAME_ALIASES,
    LIS_CLASSES,
    LIS_ORIGINAL_JSON_CLASSES,
    AnnotationError,
    canonical_class_name,
    class_index_map,
    resolve_category_names,
    validate_category_names,
)
from .dataset_files import (  # noqa: F401  (re-exported from here, as before the split)
    LIS_NORMAL_TWIN_FOLDERS,
    DatasetNotFoundError,
    lis_clean_twin_file_name,
    remap_instances,
    require_paths,
)
from .image_checks import IMAGE_CHECK_MODES, check_record_files
from .raw_io import (
    IMAGE_FORMATS,
    UnsupportedFormatError,
    check_exposure_ratio,
    check_format,
    check_levels,
    lis_pair_file_name,
)

__all__ = [
    "LIS_CLASSES",
    "LIS_ORIGINAL_JSON_CLASSES",
    "CLASS_NAME_ALIASES",
    "DatasetNotFoundError",
    "AnnotationError",
    "LOAD_SUMMARIES",
    "canonical_class_name",
    "class_index_map",
    "remap_instances",
    "load_lowlight_json",
    "check_record_values",
    "register_lowlight_dataset",
    "require_paths",
    "LIS_NORMAL_TWIN_FOLDERS",
    "lis_clean_twin_file_name",
]

logger = logging.getLogger(__name__)

#: name -> per-dataset load summary (counts of skipped / clipped annotations)
LOAD_SUMMARIES = {}


def _read_json(json_file):

    with PathManager.open(json_file, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"annotation file '{json_file}' is not valid JSON: {e}") from e


def _category_mapping(cat_names, thing_classes):
    """(classes, {category id: contiguous id}, {category id: name not in thing_classes})."""
    ids = sorted(cat_names)
    if thing_classes is None:
        return [cat_names[i] for i in ids], {cid: j for j, cid in enumerate(ids)}, {}
    wanted = {canonical_class_name(n): i for i, n in enumerate(thing_classes)}
    id_map, unknown = {}, {}
    for cid in ids:
        j = wanted.get(canonical_class_name(cat_names[cid]))
        if j is None:
            unknown[cid] = cat_names[cid]
        else:
            id_map[cid] = j
    return list(thing_classes), id_map, unknown


def check_record_values(rec, where):
    """The per-record reading options (``black_level``, ``white_level``, ``exposure_ratio``) are
    usable."""
    check_levels(rec.get("black_level"), rec.get("white_level"), where)
    ratio = rec.get("exposure_ratio")
    if ratio != "exif":
        check_exposure_ratio(ratio, f"{where}: exposure_ratio")


def _add_extra_fields(rec, extra_fields, image_root):
    rec.update(copy.deepcopy(extra_fields))
    if rec.get("exposure_ratio") == "exif":
        pair_root = rec.pop("pair_image_root", None)
        if pair_root:
            pair_root = os.path.join(
                pair_root, os.path.dirname(os.path.relpath(rec["file_name"], image_root))
            )
        rec["pair_file_name"] = lis_pair_file_name(rec["file_name"], pair_root)
    clean_root = rec.pop("clean_image_root", None)
    if clean_root:
        twin = lis_pair_file_name(
            rec["file_name"],
            os.path.join(
                clean_root, os.path.dirname(os.path.relpath(rec["file_name"], image_root))
            ),
        )
        ext = rec.pop("clean_ext", None)
        rec["clean_file_name"] = os.path.splitext(twin)[0] + ext if ext else twin
    rec.pop("clean_ext", None)


def load_lowlight_json(
    json_file,
    image_root,
    dataset_name=None,
    image_format="srgb",
    thing_classes=None,
    extra_fields=None,
    unknown_category="error",
    category_names=None,
    image_checks="header",
):
    """Load a COCO-format JSON into Detectron2 dicts, validated and mapped to ``thing_classes`` by
    name.

    The JSON is read once; its structure and every value are checked by :mod:`.annotation_checks`
    and the image files by :func:`.image_checks.check_record_files` (errors name the JSON and the
    record; what Detectron2 skips is skipped with a warning and counted in the load summary,
    :data:`LOAD_SUMMARIES`).

    Args:
        thing_classes: class list defining the contiguous ids (by name, aliases applied); None ->
            the JSON's categories sorted by id (Detectron2's convention).
        category_names: optional ``{category id: class name}`` that replaces the JSON's names of
            those ids (see :func:`register_lowlight_dataset`). Without it, the original LIS category
            list is renamed by id to the true classes (one warning per file, LIS issue #23).
        extra_fields: dict added to every record (e.g. image_format, black_level, exposure_ratio).
        unknown_category: "error" (default) raises :class:`AnnotationError` when an annotation uses
            a category whose name is not in ``thing_classes``; "skip" drops those annotations
            (counted).
        image_checks: "header" (default: every image exists, is a file, and its header's size fits
            the declared one), "exists" (``stat`` only; see :mod:`.image_checks` for the costs) or
            "none" (ground truth only: the images are never read, e.g. scoring saved predictions).
    """
    check_format(image_format)
    name = dataset_name or os.path.basename(json_file)
    counts = LoadCounts(name)
    images, annotations, categories = check_top_level(_read_json(json_file), json_file, counts)
    check_categories(categories, json_file)
    category_names = validate_category_names(category_names, thing_classes)
    cat_names, names_source = resolve_category_names(categories, json_file, category_names)
    classes, id_map, unknown = _category_mapping(cat_names, thing_classes)
    images_by_id = check_images(images, json_file)
    anns_by_image = group_annotations(annotations, images_by_id, json_file, counts)

    out = []
    for image_id in sorted(images_by_id):  # Detectron2's order
        im = images_by_id[image_id]
        rec = {
            "file_name": os.path.join(image_root, im["file_name"]),
            "height": im["height"],
            "width": im["width"],
            "image_id": image_id,
        }
        annos = []
        for ann in anns_by_image[image_id]:
            where = (
                f"annotation id={ann['id']} (image id={image_id}, file '{im['file_name']}') "
                f"in '{json_file}'"
            )
            cid = ann["category_id"]
            if cid not in cat_names:
                raise AnnotationError(
                    f"{where} uses category_id={cid}, which is not in the file's 'categories'"
                )
            if cid in unknown and unknown_category == "error":
                raise AnnotationError(
                    f"{where} has category '{unknown[cid]}' (id {cid}), which is not one of the "
                    "dataset's "
                    f"classes {classes} (names are matched after aliases: {CLASS_NAME_ALIASES})"
                )
            if (
                cid not in id_map
            ):  # unknown_category="skip": dropped (counted) before its values are looked at
                counts.count("unknown_category")
                continue
            obj = clean_annotation(ann, im, json_file, counts, where)
            if obj is None:
                continue
            obj["category_id"] = id_map[cid]
            annos.append(obj)
        rec["annotations"] = annos
        rec["image_format"] = image_format
        if extra_fields:
            _add_extra_fields(rec, extra_fields, image_root)
        check_record_values(rec, describe_image(im, json_file))
        out.append(rec)
    check_record_files(
        out,
        image_format,
        f"dataset '{name}' ('{json_file}', image root '{image_root}')",
        image_checks,
    )

    summary = {
        "images": len(out),
        "instances": sum(len(r["annotations"]) for r in out),
        **dict(counts.notes),
        **dict(counts.counts),
    }
    if counts.warnings:
        summary["warnings"] = list(counts.warnings)
    if names_source != "json":
        summary["category_names"] = names_source
    LOAD_SUMMARIES[name] = summary
    if counts.counts or counts.warnings:
        logger.warning(f"[{name}] load summary for '{json_file}': {summary}")
    else:
        logger.info(f"[{name}] load summary: {summary}")
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
            meta.thing_dataset_id_to_contiguous_id = dict(id_map)
        if not hasattr(meta, "thing_classes"):
            meta.thing_classes = classes
    return out


def register_lowlight_dataset(
    name,
    json_file,
    image_root,
    image_format="srgb",
    thing_classes=None,
    raw_output="raw_rgb",
    black_level=None,
    white_level=None,
    exposure_ratio=None,
    unknown_category="error",
    pair_image_root=None,
    category_names=None,
    clean_image_root=None,
    clean_image_format=None,
    clean_ext=None,
    image_checks="header",
    **metadata,
):
    """Register a COCO-format low-light instance-segmentation dataset (lazy).

    Args:
        name: dataset name (e.g. "lis_raw_dark_test").
        json_file: COCO JSON. image_root: folder that ``file_name`` entries are relative to.
        image_format: "raw" (camera RAW via rawpy), "raw_rgb" (LIS RAW-* PNGs, 8- or 16-bit),
            "raw_packed" (4-channel [R, G1, B, G2]), or "srgb" (camera JPEG/PNG).
        thing_classes: classes defining the contiguous ids, matched BY NAME to the JSON categories
            (default: the JSON categories sorted by id). For LIS pass :data:`LIS_CLASSES`.
        category_names: ``{category id: class name}`` overriding the JSON's category names by id
            (for files whose names are wrong; ids may be ints or digit strings). Checked here
            (integer ids, unique names, names in ``thing_classes``: ``ValueError``) and at load
            (ids missing from the JSON, a name then used by two ids: :class:`AnnotationError`).
            Without it, the original LIS category list is renamed by id to :data:`LIS_CLASSES`
            with one warning per file; the revised LIS file is used as it is.
        raw_output: for "raw": "raw_rgb" (3-ch) or "packed" (4-ch, half resolution).
        black_level / white_level: in the file's DN (see :func:`raw_io.read_lowlight_image`).
        exposure_ratio: amplification for dark frames (float), None, or "exif": per image
            ``t_normal / t_dark`` from the exposure times of the camera RAW pair (dark n <-> normal
            n - 1 in ``pair_image_root``, default ``image_root``), computed lazily by the mapper.
        clean_image_root / clean_image_format / clean_ext: clean twins of dark images for DSL
            training on real pairs: record n gets ``clean_file_name`` = file n - 1 under
            ``clean_image_root`` (same sub-folder, extension ``clean_ext`` or the same) and
            ``clean_image_format`` (default: ``image_format``). Without it, LIS-layout dark files
            derive their twin (:func:`lis_clean_twin_file_name`).
        image_checks: what is checked of every image at load: "header" (default: exists, is a file,
            its header's size fits the declared one, no 16-bit file registered as sRGB), "exists"
            (``stat`` only, for slow file systems) or "none" (ground-truth-only use: no file is
            looked at); decoding every image is the check pass (``tools/check_dataset.py``).
        metadata: extra MetadataCatalog fields.
    Each record carries ``image_format``, ``raw_output``, ``black_level``, ``white_level`` and
    ``exposure_ratio`` so the mapper can read it without the metadata.
    """

    check_format(image_format)
    if raw_output not in ("raw_rgb", "packed"):
        raise UnsupportedFormatError(
            f"raw_output must be 'raw_rgb' or 'packed', got '{raw_output}'"
        )
    extra = {
        "raw_output": raw_output,
        "black_level": black_level,
        "white_level": white_level,
        "exposure_ratio": exposure_ratio,
    }
    if isinstance(exposure_ratio, str) and exposure_ratio != "exif":
        raise ValueError(f"exposure_ratio must be a number, None or 'exif', got '{exposure_ratio}'")
    if exposure_ratio != "exif":
        check_exposure_ratio(exposure_ratio, f"dataset '{name}': exposure_ratio")
    check_levels(black_level, white_level, f"dataset '{name}'")
    if image_checks not in IMAGE_CHECK_MODES:
        raise ValueError(
            f"dataset '{name}': image_checks must be one of {IMAGE_CHECK_MODES}, got "
            f"{image_checks!r}"
        )
    if exposure_ratio == "exif":
        extra["pair_image_root"] = pair_image_root
    if clean_image_root:
        check_format(clean_image_format or image_format)
        extra.update(
            clean_image_root=clean_image_root,
            clean_ext=clean_ext,
            clean_image_format=clean_image_format or image_format,
        )
    classes = list(thing_classes) if thing_classes is not None else None
    names_by_id = validate_category_names(
        category_names, classes, where=f"dataset '{name}': category_names"
    )
    hint = metadata.pop("missing_hint", "")

    def _load(json_file=json_file, image_root=image_root, name=name):
        require_paths(name, [json_file, image_root], hint=hint)
        return load_lowlight_json(
            json_file,
            image_root,
            name,
            image_format,
            classes,
            extra,
            unknown_category,
            names_by_id,
            image_checks,
        )

    DatasetCatalog.register(name, _load)
    fields = dict(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        image_format=image_format,
        raw_output=raw_output,
        levels={"black": black_level, "white": white_level},
        exposure_ratio=exposure_ratio,
    )
    if classes is not None:
        fields["thing_classes"] = classes
    fields.update(metadata)
    MetadataCatalog.get(name).set(**fields)
    return name


assert set(IMAGE_FORMATS) == {"raw", "raw_rgb", "raw_packed", "srgb"}
