"""Registering low-light COCO-style datasets (LIS and friends) and mapping classes by name.

``register_lowlight_dataset(name, json_file, image_root, image_format=...)`` registers a lazy
``DatasetCatalog`` entry and fills ``MetadataCatalog`` (thing_classes, evaluator_type="coco",
image_format, json_file, black/white levels, exposure ratio). The JSON is read at first use
(``DatasetCatalog.get``), where problems are reported as follows:

* missing JSON / image folder -> :class:`DatasetNotFoundError` listing the missing paths;
* category names: the original (misnamed) LIS category list is renamed by id to the true
  classes :data:`LIS_CLASSES` with one warning per file (LIS issue #23, see
  :mod:`segalias_d2.data.categories`); an explicit ``category_names={id: name}`` overrides the
  JSON's names;
* an annotation whose category is not in ``categories``, or a category name that is not one of
  the requested ``thing_classes`` -> :class:`AnnotationError` naming the JSON and the record;
* polygons with fewer than 3 points (Detectron2 skips those instances), boxes entirely outside
  the image or degenerate boxes -> skipped with a warning; boxes partly outside are clipped. The
  counts are logged in one summary line and kept in :data:`LOAD_SUMMARIES` [dataset name].

Clean twins (DSL training on real pairs, ``INPUT.SEGALIAS.CLEAN_TWIN "pair"``): a record's ``clean_file_name``
(set by ``register_lowlight_dataset(..., clean_image_root=...)``), or, for the LIS layout, the normal-exposure
image of the pair derived from the dark file (:func:`lis_clean_twin_file_name`: ``RAW-dark/.../<n>.png`` ->
``RAW-normal/.../<n-1>.png``, ``RGB-dark/.../<n>.JPG`` -> ``RGB-normal/.../<n-1>.png``).
"""
import copy
import json
import logging
import os
from collections import Counter

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
from .raw_io import IMAGE_FORMATS, LowLightDataError, check_format, lis_pair_file_name

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
    "register_lowlight_dataset",
    "require_paths",
    "LIS_NORMAL_TWIN_FOLDERS",
    "lis_clean_twin_file_name",
]

logger = logging.getLogger(__name__)

#: name -> per-dataset load summary (counts of skipped / clipped annotations)
LOAD_SUMMARIES = {}


class DatasetNotFoundError(LowLightDataError, FileNotFoundError):
    """Files of a registered dataset are missing (raised at first use, not at registration)."""


def remap_instances(instances, index_map):
    """Relabel a Detectron2 ``Instances`` with ``pred_classes`` (or ``gt_classes``) by ``index_map``.

    Instances whose class maps to -1 are dropped. Returns a new ``Instances``.
    """
    import torch

    field = "pred_classes" if instances.has("pred_classes") else "gt_classes"
    classes = instances.get(field)
    m = torch.as_tensor(index_map, device=classes.device)
    new = m[classes]
    keep = new >= 0
    out = instances[keep]
    out.set(field, new[keep])
    return out


#: LIS dark-image folder -> (folder of its normal-exposure twins, their extension); LIS README layout
LIS_NORMAL_TWIN_FOLDERS = {"RAW-dark": ("RAW-normal", ".png"), "RGB-dark": ("RGB-normal", ".png")}


def lis_clean_twin_file_name(dark_file_name):
    """The normal-exposure twin of a LIS dark image: ``<root>/RAW-dark/JPEGImages/<n>.png`` ->
    ``<root>/RAW-normal/JPEGImages/<n-1>.png`` (:data:`LIS_NORMAL_TWIN_FOLDERS`; pairs are numbered normal n - 1,
    dark n). Raises :class:`LowLightDataError` for a file outside those folders."""
    path = os.path.normpath(str(dark_file_name))
    parts = path.split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in LIS_NORMAL_TWIN_FOLDERS:
            folder, ext = LIS_NORMAL_TWIN_FOLDERS[parts[i]]
            normal = lis_pair_file_name(os.sep.join(parts[:i] + [folder] + parts[i + 1:]))
            return os.path.splitext(normal)[0] + ext
    raise LowLightDataError(
        f"cannot derive the clean twin of '{dark_file_name}': it is not under a LIS dark folder "
        f"{sorted(LIS_NORMAL_TWIN_FOLDERS)}; register the dataset with clean_image_root=... (or give each record a "
        "'clean_file_name')"
    )


def require_paths(dataset_name, paths, env_var="DETECTRON2_DATASETS", hint=""):
    """Raise :class:`DatasetNotFoundError` listing every path in ``paths`` that does not exist."""
    from detectron2.utils.file_io import PathManager

    missing = [p for p in paths if not PathManager.exists(p)]
    if missing:
        root = os.environ.get(env_var)
        where = f"${env_var}='{root}'" if root else f"${env_var} is not set, so the default 'datasets' was used"
        raise DatasetNotFoundError(
            f"dataset '{dataset_name}' is missing {len(missing)} path(s):\n  "
            + "\n  ".join(os.path.abspath(p) for p in missing)
            + f"\n(looked under the dataset root; {where}). See datasets/README.md for the expected layout."
            + (f" {hint}" if hint else "")
        )


def _read_json(json_file):
    from detectron2.utils.file_io import PathManager

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


def load_lowlight_json(json_file, image_root, dataset_name=None, image_format="srgb", thing_classes=None,
                       extra_fields=None, unknown_category="error", category_names=None):
    """Load a COCO-format JSON into Detectron2 dicts, validated and mapped to ``thing_classes`` by name.

    Args:
        thing_classes: class list defining the contiguous ids (by name, aliases applied); None ->
            the JSON's categories sorted by id (Detectron2's convention).
        category_names: optional ``{category id: class name}`` that replaces the JSON's names of
            those ids (see :func:`register_lowlight_dataset`). Without it, the original LIS category
            list is renamed by id to the true classes (one warning per file, LIS issue #23).
        extra_fields: dict added to every record (e.g. image_format, black_level, exposure_ratio).
        unknown_category: "error" (default) raises :class:`AnnotationError` when an annotation uses a
            category whose name is not in ``thing_classes``; "skip" drops those annotations (counted).
    """
    from detectron2.data.datasets.coco import load_coco_json

    check_format(image_format)
    name = dataset_name or os.path.basename(json_file)
    data = _read_json(json_file)
    if not data.get("categories"):
        raise AnnotationError(f"annotation file '{json_file}' has no 'categories'")
    category_names = validate_category_names(category_names, thing_classes)
    cat_names, names_source = resolve_category_names(data["categories"], json_file, category_names)
    classes, id_map, unknown = _category_mapping(cat_names, thing_classes)
    files = {im["id"]: im.get("file_name") for im in data.get("images", [])}
    counts = Counter()
    for ann in data.get("annotations", []):
        cid = ann.get("category_id")
        where = (f"annotation id={ann.get('id')} (image id={ann.get('image_id')}, "
                 f"file '{files.get(ann.get('image_id'))}') in '{json_file}'")
        if cid not in cat_names:
            raise AnnotationError(f"{where} uses category_id={cid}, which is not in the file's 'categories'")
        if cid in unknown and unknown_category == "error":
            raise AnnotationError(
                f"{where} has category '{unknown[cid]}' (id {cid}), which is not one of the dataset's "
                f"classes {classes} (names are matched after aliases: {CLASS_NAME_ALIASES})"
            )
        segm = ann.get("segmentation")
        if isinstance(segm, list) and segm and not any(len(p) >= 6 and len(p) % 2 == 0 for p in segm):
            counts["polygon_fewer_than_3_points"] += 1
            logger.warning(f"[{name}] skipping {where}: polygon with fewer than 3 points")

    dicts = load_coco_json(json_file, image_root, dataset_name=None)
    out = []
    for rec in dicts:
        rec = dict(rec)
        h, w = rec["height"], rec["width"]
        annos = []
        for obj in rec.get("annotations", []):
            cid = obj["category_id"]
            if cid not in id_map:
                counts["unknown_category"] += 1
                continue
            obj = dict(obj, category_id=id_map[cid])
            x, y, bw, bh = [float(v) for v in obj["bbox"]]
            if bw <= 0 or bh <= 0:
                counts["degenerate_box"] += 1
                logger.warning(f"[{name}] skipping a degenerate box {obj['bbox']} of '{rec['file_name']}'")
                continue
            x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
            if x1 <= x0 or y1 <= y0:
                counts["box_outside_image"] += 1
                logger.warning(
                    f"[{name}] skipping box {obj['bbox']} entirely outside the {w}x{h} image '{rec['file_name']}' "
                    f"(image id={rec['image_id']}, json '{json_file}')"
                )
                continue
            # float boxes: Detectron2's transforms write coordinates in place, so an int box
            # (common in hand-made COCO JSONs) would be truncated by every resize
            obj["bbox"] = [x, y, bw, bh]
            if isinstance(obj.get("segmentation"), list):
                obj["segmentation"] = [[float(v) for v in poly] for poly in obj["segmentation"]]
            if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
                # sub-pixel overshoot (rounding of polygon coordinates) is clipped silently
                if max(x0 - x, y0 - y, x + bw - x1, y + bh - y1) > 1.0:
                    counts["box_clipped"] += 1
                obj["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            annos.append(obj)
        rec["annotations"] = annos
        rec["image_format"] = image_format
        if extra_fields:
            rec.update(copy.deepcopy(extra_fields))
            if rec.get("exposure_ratio") == "exif":
                pair_root = rec.pop("pair_image_root", None)
                if pair_root:
                    pair_root = os.path.join(pair_root, os.path.dirname(os.path.relpath(rec["file_name"], image_root)))
                rec["pair_file_name"] = lis_pair_file_name(rec["file_name"], pair_root)
            clean_root = rec.pop("clean_image_root", None)
            if clean_root:
                twin = lis_pair_file_name(rec["file_name"], os.path.join(
                    clean_root, os.path.dirname(os.path.relpath(rec["file_name"], image_root))))
                ext = rec.pop("clean_ext", None)
                rec["clean_file_name"] = os.path.splitext(twin)[0] + ext if ext else twin
            rec.pop("clean_ext", None)
        out.append(rec)
    summary = {"images": len(out), "instances": sum(len(r["annotations"]) for r in out), **dict(counts)}
    if names_source != "json":
        summary["category_names"] = names_source
    LOAD_SUMMARIES[name] = summary
    skipped = {k: v for k, v in counts.items()}
    if skipped:
        logger.warning(f"[{name}] load summary for '{json_file}': {summary}")
    else:
        logger.info(f"[{name}] load summary: {summary}")
    if dataset_name is not None:
        from detectron2.data import MetadataCatalog

        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
            meta.thing_dataset_id_to_contiguous_id = dict(id_map)
        if not hasattr(meta, "thing_classes"):
            meta.thing_classes = classes
    return out


def register_lowlight_dataset(name, json_file, image_root, image_format="srgb", thing_classes=None,
                              raw_output="raw_rgb", black_level=None, white_level=None, exposure_ratio=None,
                              unknown_category="error", pair_image_root=None, category_names=None,
                              clean_image_root=None, clean_image_format=None, clean_ext=None, **metadata):
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
        clean_image_root / clean_image_format / clean_ext: clean twins of dark images for DSL training on real
            pairs: record n gets ``clean_file_name`` = file n - 1 under ``clean_image_root`` (same sub-folder,
            extension ``clean_ext`` or the same) and ``clean_image_format`` (default: ``image_format``). Without
            it, LIS-layout dark files derive their twin (:func:`lis_clean_twin_file_name`).
        metadata: extra MetadataCatalog fields.
    Each record carries ``image_format``, ``raw_output``, ``black_level``, ``white_level`` and
    ``exposure_ratio`` so the mapper can read it without the metadata.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    check_format(image_format)
    if raw_output not in ("raw_rgb", "packed"):
        from .raw_io import UnsupportedFormatError

        raise UnsupportedFormatError(f"raw_output must be 'raw_rgb' or 'packed', got '{raw_output}'")
    extra = {
        "raw_output": raw_output,
        "black_level": black_level,
        "white_level": white_level,
        "exposure_ratio": exposure_ratio,
    }
    if isinstance(exposure_ratio, str) and exposure_ratio != "exif":
        raise ValueError(f"exposure_ratio must be a number, None or 'exif', got '{exposure_ratio}'")
    if exposure_ratio == "exif":
        extra["pair_image_root"] = pair_image_root
    if clean_image_root:
        check_format(clean_image_format or image_format)
        extra.update(clean_image_root=clean_image_root, clean_ext=clean_ext,
                     clean_image_format=clean_image_format or image_format)
    classes = list(thing_classes) if thing_classes is not None else None
    names_by_id = validate_category_names(category_names, classes, where=f"dataset '{name}': category_names")
    hint = metadata.pop("missing_hint", "")

    def _load(json_file=json_file, image_root=image_root, name=name):
        require_paths(name, [json_file, image_root], hint=hint)
        return load_lowlight_json(json_file, image_root, name, image_format, classes, extra, unknown_category,
                                  names_by_id)

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
