"""Tiny demo datasets in the LIS and Cityscapes layouts, built from labelme's example data.

Used by ``datasets/prepare_demo.py`` (the CLI) and by the test suite (``tests/conftest.py``); not
part of the segalias_d2 package. Source: the pinned ``labelme`` sdist (``labelme-6.3.1.tar.gz``,
sha256 in ``datasets/pinned_sources.py``), fetched with ``pip download`` into the cache
(``$SEGALIAS_CACHE`` or ~/.cache/segalias_d2):

* ``examples/instance_segmentation/data_dataset_coco``: 3 real PASCAL VOC photos with COCO polygons.
  Only LIS classes are kept, matched by name and written on their TRUE LIS ids (LIS issue #23):
  **car 1, bus 3, bottle 4, chair 5** (5 instances). The example's
  person (7) and sofa (1) instances are dropped (not LIS classes); LIS's other classes
  (bicycle, diningtable, motorbike, tvmonitor) stay in the category list with no instances.
* ``examples/video_annotation/data_annotated``: 5 street frames with car and "track" (truck)
  polygons -> Cityscapes trainIds 13 (car) and 14 (truck); every other pixel is 255 (ignore):
  the frames are not annotated for the other classes, so they must not count as background.

LIS demo (``<root>/lis_demo``): images are downscaled to a short side of 320 px (even sizes). Each
photo gives a pair, plus a horizontally flipped copy; **train = 3 originals + 3 flips (6 pairs),
test = the 3 originals** (test is a subset of train: the demo checks the pipeline, it does not
measure generalisation). Pair k (1-based) is numbered 2k-1 (normal) / 2k (dark), COCO image id =
file number - 1 (LIS convention). Modalities:

* ``RGB-normal/JPEGImages/<odd>.png``: the sRGB photo;
* ``RAW-normal/JPEGImages/<odd>.png``: clean synthetic raw-RGB, 16-bit;
* ``RAW-dark/JPEGImages/<even>.png``: noisy synthetic raw-RGB (PGRU, r ~ U(10, 100), amplified by
  r), 16-bit;
* ``RGB-dark/JPEGImages/<even>.JPG``: the same dark capture, **not** amplified, rendered back to
  sRGB with the inverse of the unprocess draw (WB, CCM, gamma, tone curve), 8-bit JPEG;
* ``RAW-dark-packed/JPEGImages/<even>.png``: the noisy packed Bayer ``[R, G1, B, G2]`` at half
  resolution as a 4-channel 16-bit PNG (for the ``raw_packed`` format);
* ``annotations/lis_coco_png_{train,test}.json`` (odd .png names),
  ``lis_coco_png_{train,test}+1.json`` and ``lis_coco_JPG_{train,test}+1.json`` (even names). LIS
  ships no non-``+1`` JPG file (RGB-normal is .png), so none is written. Categories are the REVISED
  LIS list (true names by id, :data:`LIS_CLASSES`), so loading them needs no renaming and logs no
  warning.

Cityscapes demo (``<root>/cityscapes_demo``): frames resized to 512x288; train = frames 100-102,
val = 103-104, city "labelme"; ``gtFine/<split>/labelme/*_gtFine_labelIds.png`` and the
``*_gtFine_labelTrainIds.png`` derived from them with the Cityscapes table; sRGB images in
``leftImg8bit`` and synthetic low-light raw-RGB (16-bit) in ``leftImg8bit_rawdark``.

Everything is deterministic (fixed seeds) and built once: a marker file records the build key, and a
second call returns immediately without touching the network. The key (:func:`build_key`) covers
what the data depends on: the source of this file and of every segalias_d2 module it imports
(transitively), the pinned input's sha256, the build parameters, and the numpy/OpenCV versions that
resize and encode the images. When any of them changes, the next call rebuilds.
"""

import ast
import hashlib
import json
import logging
import os
import sys
import time
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util

if (
    os.path.dirname(os.path.abspath(__file__)) not in sys.path
):  # run from anywhere: find pinned_sources.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pinned_sources import PINS, cache_dir, extract_member, fetch_sdist, sha256_of  # noqa: E402

from segalias_d2.data.categories import LIS_CLASSES, canonical_class_name  # noqa: E402
from segalias_d2.data.cityscapes import convert_label_id_files  # noqa: E402
from segalias_d2.data.synthesis import demosaic, process_srgb, synthesize_lowlight  # noqa: E402

__all__ = [
    "LABELME",
    "ensure_demo_datasets",
    "build_lis_demo",
    "build_cityscapes_demo",
    "demo_root",
    "build_key",
    "build_key_parts",
    "builder_source_files",
]

logger = logging.getLogger(__name__)

#: the pinned labelme sdist (project, version, file name, sha256)
LABELME = PINS["labelme"]
_EX = "labelme-6.3.1/examples/"
_COCO_DIR = _EX + "instance_segmentation/data_dataset_coco/"
_VIDEO_DIR = _EX + "video_annotation/data_annotated/"
_VIDEO_FRAMES = ["00000100", "00000101", "00000102", "00000103", "00000104"]
_VIDEO_SPLITS = {"train": _VIDEO_FRAMES[:3], "val": _VIDEO_FRAMES[3:]}
SHORT_SIDE = 320
CITYSCAPES_SIZE = (512, 288)  # (w, h)
SEED = 20240501
_CS_LABEL_IDS = {"car": 26, "truck": 27}


def demo_root(root=None):
    return os.path.expanduser(root or os.getenv("DETECTRON2_DATASETS", "datasets"))


def _log(msg):
    logger.info(msg)


def _module_file(name: str, package_root: Path):
    """File of the segalias_d2 module ``name`` (a .py or a package's __init__.py), or None."""
    if name != "segalias_d2" and not name.startswith("segalias_d2."):
        return None
    base = package_root.parent.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.resolve()
    return None


def _imported_files(path: Path, package_root: Path):
    """The segalias_d2 source files that ``path`` imports (attribute imports resolve to their
    module)."""
    module = None
    if package_root in path.parents:
        parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [_module_file(a.name, package_root) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                is_package = path.name == "__init__.py"
                anchor = module.split(".")[
                    : len(module.split(".")) - (node.level - (1 if is_package else 0))
                ]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = _module_file(f"{base}.{alias.name}", package_root)
                out.append(sub or _module_file(base, package_root))
    return [f for f in out if f is not None]


def builder_source_files():
    """This file and every segalias_d2 module it imports, transitively: the code the demo data
    depends on."""
    package_root = Path(sys.modules["segalias_d2"].__file__).resolve().parent  # imported above
    seen, todo = set(), [Path(__file__).resolve()]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _imported_files(path, package_root)
    return sorted(seen)


@lru_cache(maxsize=None)
def build_key_parts():
    """Everything the demo data depends on (see the module docstring), as a JSON-able dict."""
    repo = Path(__file__).resolve().parents[1]

    def name(path):
        return str(path.relative_to(repo)) if repo in path.parents else str(path)

    return {
        "code": {name(p): sha256_of(p) for p in builder_source_files()},
        "inputs": {LABELME.filename: LABELME.sha256},
        "parameters": {
            "short_side": SHORT_SIDE,
            "cityscapes_size": list(CITYSCAPES_SIZE),
            "seed": SEED,
            "cityscapes_frames": _VIDEO_SPLITS,
        },
        "libraries": {"numpy": np.__version__, "opencv": cv2.__version__},
    }


def build_key(parts=None) -> str:
    """sha256 of :func:`build_key_parts`: equal keys mean the same demo data."""
    blob = json.dumps(parts if parts is not None else build_key_parts(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _fetch(members):
    """Local paths of ``members`` of the pinned labelme sdist (downloaded/extracted once,
    cached)."""
    base = cache_dir() / "labelme-6.3.1-examples"
    out, archive = {}, None
    for m in members:
        dest = base / m[len(_EX) :]
        if not dest.exists():
            if archive is None:
                archive = fetch_sdist(LABELME, quiet=True)
                _log(f"extracting demo sources from {archive}")
            extract_member(archive, m, dest)
        out[m] = str(dest)
    return out


def _imread_rgb(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read '{path}'")
    return img[:, :, ::-1]


def _imwrite(path, img):
    """uint8/uint16 RGB (or 4-ch, stored as-is) -> file, atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = img[:, :, ::-1] if img.ndim == 3 and img.shape[2] == 3 else img
    ext = os.path.splitext(path)[1]
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr), params)
    if not ok:
        raise OSError(f"cannot encode '{path}'")
    tmp = path + ".tmp"
    buf.tofile(tmp)
    os.replace(tmp, path)


def _to16(x):
    return np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)


def _even_size(h, w, short):
    s = short / min(h, w)
    return int(round(h * s / 2)) * 2, int(round(w * s / 2)) * 2


def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _marker_ok(marker, expected):
    if not os.path.exists(marker):
        return False
    try:
        with open(marker) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return False
    if m.get("build_key") != build_key():
        _log(
            f"{os.path.dirname(marker)} was built from other code, inputs or parameters: rebuilding"
        )
        return False
    return all(os.path.exists(p) for p in expected)


def _marker(**extra):
    return {
        "build_key": build_key(),
        "built_from": build_key_parts(),
        "source": LABELME.filename,
        "sha256": LABELME.sha256,
        **extra,
    }


def _synth_pair(rgb_u8, seed):
    """One synthetic low-light draw: dict of uint16/uint8 images for every modality."""
    rng = np.random.default_rng([SEED, seed])
    res = synthesize_lowlight(rgb_u8, rng, return_clean=True, return_dark=True)
    ratio = res["params"]["ratio"]
    dark_packed = res["dark_packed"]
    srgb_dark = process_srgb(demosaic(dark_packed), res["meta"])
    return {
        "raw_normal": _to16(res["clean"]),
        "raw_dark": _to16(res["noisy"]),
        "raw_dark_packed": _to16(dark_packed * ratio),
        "srgb_dark": np.round(srgb_dark * 255.0).astype(np.uint8),
        "params": res["params"],
    }


def _polygon_area_bbox(polys, h, w):

    rles = mask_util.frPyObjects(polys, h, w)
    area = float(mask_util.area(mask_util.merge(rles)))
    xs = np.concatenate([np.asarray(p[0::2]) for p in polys])
    ys = np.concatenate([np.asarray(p[1::2]) for p in polys])
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())
    return area, [x0, y0, x1 - x0, y1 - y0]


def build_lis_demo(root=None, force=False):
    """Build ``<root>/lis_demo`` (see the module docstring); returns its path."""
    out = os.path.join(demo_root(root), "lis_demo")
    marker = os.path.join(out, ".segalias_demo.json")
    jsons = [
        os.path.join(out, "annotations", f"lis_coco_{k}_{s}{p}.json")
        for k, p in (("png", ""), ("png", "+1"), ("JPG", "+1"))
        for s in ("train", "test")
    ]
    if not force and _marker_ok(marker, jsons):
        return out
    t0 = time.time()
    _log(f"building the LIS-layout demo dataset in '{out}' ...")
    src_json = _fetch([_COCO_DIR + "annotations.json"])[_COCO_DIR + "annotations.json"]
    with open(src_json) as f:
        src = json.load(f)
    cats = {c["id"]: canonical_class_name(c["name"]) for c in src["categories"]}
    lis_id = {n: i for i, n in enumerate(LIS_CLASSES)}  # true class of each LIS id
    images = sorted(src["images"], key=lambda im: im["file_name"])
    paths = _fetch([_COCO_DIR + im["file_name"] for im in images])
    kept, dropped = {}, {}
    entries = []  # (k, split list, rgb, annotations)
    k = 0
    for flip in (False, True):
        for im in images:
            k += 1
            rgb = _imread_rgb(paths[_COCO_DIR + im["file_name"]])
            h0, w0 = rgb.shape[:2]
            h, w = _even_size(h0, w0, SHORT_SIDE)
            rgb = cv2.resize(np.ascontiguousarray(rgb), (w, h), interpolation=cv2.INTER_AREA)
            if flip:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
            sx, sy = w / w0, h / h0
            annos = []
            for a in src["annotations"]:
                if a["image_id"] != im["id"]:
                    continue
                name = cats[a["category_id"]]
                if name not in lis_id:
                    if not flip:
                        dropped[name] = dropped.get(name, 0) + 1
                    continue
                if not flip:
                    kept[name] = kept.get(name, 0) + 1
                polys = []
                for p in a["segmentation"]:
                    xy = np.asarray(p, dtype=np.float64).reshape(-1, 2) * [sx, sy]
                    if flip:
                        xy[:, 0] = w - xy[:, 0]
                    xy = np.clip(xy, 0.0, [w, h])
                    polys.append([round(float(v), 2) for v in xy.reshape(-1)])
                area, bbox = _polygon_area_bbox(polys, h, w)
                annos.append(
                    {
                        "category_id": lis_id[name],
                        "segmentation": polys,
                        "area": area,
                        "bbox": [round(v, 2) for v in bbox],
                        "iscrowd": 0,
                        "ignore": 0,
                    }
                )
            splits = ("train",) if flip else ("train", "test")
            entries.append((k, splits, rgb, annos))
    for k, _, rgb, _ in entries:
        normal, dark = 2 * k - 1, 2 * k
        syn = _synth_pair(rgb, k)
        _imwrite(os.path.join(out, "RGB-normal", "JPEGImages", f"{normal}.png"), rgb)
        _imwrite(os.path.join(out, "RAW-normal", "JPEGImages", f"{normal}.png"), syn["raw_normal"])
        _imwrite(os.path.join(out, "RAW-dark", "JPEGImages", f"{dark}.png"), syn["raw_dark"])
        _imwrite(
            os.path.join(out, "RAW-dark-packed", "JPEGImages", f"{dark}.png"),
            syn["raw_dark_packed"],
        )
        _imwrite(os.path.join(out, "RGB-dark", "JPEGImages", f"{dark}.JPG"), syn["srgb_dark"])
        _log(
            f"  pair {k}/{len(entries)}: {normal}.png / {dark}.png ({rgb.shape[1]}x{rgb.shape[0]}, "
            f"ratio {syn['params']['ratio']:.1f})"
        )
    categories = [{"id": i, "name": n, "supercategory": "lis"} for i, n in enumerate(LIS_CLASSES)]
    for kind, plus in (("png", ""), ("png", "+1"), ("JPG", "+1")):
        for split in ("train", "test"):
            ims, anns = [], []
            for k, splits, rgb, annos in entries:
                if split not in splits:
                    continue
                number = 2 * k if plus else 2 * k - 1
                ext = "JPG" if kind == "JPG" else "png"
                ims.append(
                    {
                        "id": number - 1,
                        "file_name": f"./JPEGImages/{number}.{ext}",
                        "height": rgb.shape[0],
                        "width": rgb.shape[1],
                    }
                )
                for a in annos:
                    anns.append(dict(a, id=len(anns) + 1, image_id=number - 1))
            _write_json(
                os.path.join(out, "annotations", f"lis_coco_{kind}_{split}{plus}.json"),
                {
                    "info": {
                        "description": "segalias_d2 LIS-layout demo from labelme-6.3.1 examples"
                    },
                    "images": ims,
                    "annotations": anns,
                    "categories": categories,
                },
            )
    _write_json(marker, _marker(kept_instances=kept, dropped_instances=dropped))
    _log(
        f"LIS demo done in {time.time() - t0:.1f}s: kept {kept}, dropped (not LIS classes) "
        f"{dropped}"
    )
    return out


def build_cityscapes_demo(root=None, force=False):
    """Build ``<root>/cityscapes_demo`` (see the module docstring); returns its path."""
    out = os.path.join(demo_root(root), "cityscapes_demo")
    marker = os.path.join(out, ".segalias_demo.json")

    def stem(frame):
        return f"labelme_000000_{frame[-6:]}"

    expected = [
        os.path.join(out, "gtFine", s, "labelme", stem(f) + "_gtFine_labelTrainIds.png")
        for s, fs in _VIDEO_SPLITS.items()
        for f in fs
    ]
    if not force and _marker_ok(marker, expected):
        return out
    t0 = time.time()
    _log(f"building the Cityscapes-layout demo dataset in '{out}' ...")
    members = [_VIDEO_DIR + f + ext for f in _VIDEO_FRAMES for ext in (".jpg", ".json")]
    paths = _fetch(members)
    w, h = CITYSCAPES_SIZE
    for split, frames in _VIDEO_SPLITS.items():
        for i, frame in enumerate(frames):
            rgb = _imread_rgb(paths[_VIDEO_DIR + frame + ".jpg"])
            with open(paths[_VIDEO_DIR + frame + ".json"]) as f:
                ann = json.load(f)
            sx, sy = w / rgb.shape[1], h / rgb.shape[0]
            rgb = cv2.resize(np.ascontiguousarray(rgb), (w, h), interpolation=cv2.INTER_AREA)
            label_ids = np.zeros((h, w), dtype=np.uint8)  # 0 = unlabeled -> trainId 255
            for shape in ann["shapes"]:
                lid = _CS_LABEL_IDS.get(canonical_class_name(shape["label"]))
                if lid is None or shape.get("shape_type", "polygon") != "polygon":
                    continue
                pts = np.round(np.asarray(shape["points"], dtype=np.float64) * [sx, sy]).astype(
                    np.int32
                )
                cv2.fillPoly(label_ids, [pts], int(lid))
            base = stem(frame)
            _imwrite(
                os.path.join(out, "leftImg8bit", split, "labelme", base + "_leftImg8bit.png"), rgb
            )
            gt = os.path.join(out, "gtFine", split, "labelme", base + "_gtFine_labelIds.png")
            os.makedirs(os.path.dirname(gt), exist_ok=True)
            cv2.imwrite(gt, label_ids)
            syn = _synth_pair(rgb, 1000 + int(frame))
            _imwrite(
                os.path.join(
                    out, "leftImg8bit_rawdark", split, "labelme", base + "_leftImg8bit.png"
                ),
                syn["raw_dark"],
            )
            _log(f"  {split} frame {frame}: {w}x{h}, ratio {syn['params']['ratio']:.1f}")
    convert_label_id_files(os.path.join(out, "gtFine"), overwrite=True)
    _write_json(marker, _marker())
    _log(f"Cityscapes demo done in {time.time() - t0:.1f}s")
    return out


def ensure_demo_datasets(root=None, force=False):
    """Build (once) and return the demo dataset paths: dict with "root", "lis_demo",
    "cityscapes_demo".

    The datasets are registered at import under the ``$DETECTRON2_DATASETS`` root; when building
    into another ``root``, point ``$DETECTRON2_DATASETS`` there before importing ``segalias_d2``
    (or register them yourself with :func:`segalias_d2.data.builtin.register_all_lis`). Raises
    :class:`pinned_sources.PinnedFileUnavailable` (one line: what to fetch and how) when the pinned
    labelme sdist is neither cached nor downloadable.
    """
    r = demo_root(root)
    return {
        "root": os.path.abspath(r),
        "lis_demo": os.path.abspath(build_lis_demo(r, force)),
        "cityscapes_demo": os.path.abspath(build_cityscapes_demo(r, force)),
    }
