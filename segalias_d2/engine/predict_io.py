"""What ``tools/predict.py`` does around :class:`~.predictor.LowLightPredictor`: inputs, outputs,
progress, summary.

* inputs: files, glob patterns and folders (:func:`collect_inputs`); decoding options from the
  tool's flags (:func:`decode_options`);
* per image: the prediction, a visualisation PNG (``vis/<name>.png``: the input rendered
  display-ready by :mod:`.display`, predictions drawn by Detectron2's ``Visualizer``), and the
  machine-readable result: a label PNG ``labels/<name>.png`` (semantic models: ``argmax`` of
  ``sem_seg``, as the evaluator takes it) or the image's detections in
  ``coco_instances_results.json`` (instance models: Detectron2's ``instances_to_coco_json``, every
  detection, dataset category ids), with ``coco_images.json`` listing
  ``{id, file_name, height, width}``;
* a file that cannot be read or predicted is reported by name and skipped; :func:`run_predictions`
  returns the summary (written as ``summary.json``).

COCO ids (:class:`CocoIds`): with a ground truth (a COCO JSON or a registered dataset) image ids are
those of the GT images with the same file name (basename, or stem when unique), and category ids
those of the GT categories with the model's class names; files not in the GT are visualised but left
out of the results JSON (listed in the summary). Without one, image ids are 0..N-1 in input order
and category ids come from the config's dataset (``thing_dataset_id_to_contiguous_id``), else the
contiguous ids.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from PIL import Image

from ..data.categories import canonical_class_name
from ..data.raw_io import RAW_EXTENSIONS, lis_pair_file_name
from ..evaluation.evaluator_utils import dump_json
from ..evaluation.sem_seg_evaluation import prediction_to_label_map
from .display import display_image, display_white_balance, draw_predictions

__all__ = [
    "IMAGE_EXTENSIONS",
    "collect_inputs",
    "output_names",
    "decode_options",
    "CocoIds",
    "run_predictions",
    "format_summary",
    "write_label_png",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = tuple(
    sorted(set(RAW_EXTENSIONS) | {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy"})
)


def _is_image(path) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def collect_inputs(specs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """``(files, problems)`` for files, glob patterns (``**`` allowed) and folders (their image
    files).

    A named file is kept even if it does not exist (it fails, by name, when read); a pattern or
    folder without image files is a problem ``(spec, reason)``. Duplicates are dropped, the order is
    kept.
    """
    files, problems, seen = [], [], set()

    def add(path):
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(
                os.path.join(spec, f)
                for f in os.listdir(spec)
                if _is_image(f) and os.path.isfile(os.path.join(spec, f))
            )
            if not found:
                problems.append(
                    (spec, f"folder has no image files ({', '.join(IMAGE_EXTENSIONS)})")
                )
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not found:
                problems.append((spec, "no file matches this pattern"))
        else:
            found = [spec]
        for path in found:
            add(path)
    return files, problems


def output_names(paths: Sequence[str]) -> Dict[str, str]:
    """Output base name per input: its stem; stems that repeat get their extension (``2_ARW``), then
    an index."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names, used = {}, set()
    for path, stem in zip(paths, stems):
        name = stem if stems.count(stem) == 1 else f"{stem}_{os.path.splitext(path)[1].lstrip('.')}"
        base, k = name, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names[path] = name
    return names


def _level(text):
    if text is None or text == "":
        return None
    values = [float(v) for v in str(text).split(",")]
    if len(values) not in (1, 4):
        raise ValueError(
            f"a black level is one value or 4 comma-separated values (R, G1, B, G2), got {text!r}"
        )
    return values[0] if len(values) == 1 else values


def decode_options(
    image_format=None,
    exposure_ratio=None,
    pair_dir=None,
    black_level=None,
    white_level=None,
    raw_output=None,
) -> Callable[[str], dict]:
    """Per-file options of :meth:`LowLightPredictor.prepare` from the tool's flags.

    ``exposure_ratio``: None (the config's / dataset's default), ``"none"`` (ratio 1), a number, or
    ``"exif"``: ``t_normal / t_dark`` from the exposure times of the file and its normal-exposure
    partner, named by the LIS numbering (dark ``n`` <-> normal ``n - 1``) in ``pair_dir`` (default:
    the file's folder).
    """
    ratio = None
    if exposure_ratio is not None and str(exposure_ratio) != "":
        text = str(exposure_ratio).lower()
        ratio = 1.0 if text == "none" else "exif" if text == "exif" else float(text)
        if isinstance(ratio, float) and not ratio > 0:
            raise ValueError(
                f"--exposure-ratio must be > 0, 'exif' or 'none', got {exposure_ratio!r}"
            )
    black, white = _level(black_level), (None if white_level in (None, "") else float(white_level))
    fmt = None if image_format in (None, "", "auto") else image_format

    def options(path):
        opts = {
            "image_format": fmt,
            "raw_output": raw_output or None,
            "black_level": black,
            "white_level": white,
            "exposure_ratio": ratio,
        }
        if ratio == "exif":
            opts["pair_file_name"] = lis_pair_file_name(path, pair_dir)
        return opts

    return options


class CocoIds:
    """Image and category ids of the COCO results (see the module docstring)."""

    def __init__(
        self,
        image_ids: Optional[Dict[str, object]] = None,
        dataset_category: Optional[Dict[int, int]] = None,
        source: str = "",
    ):
        self.by_name = image_ids  # None: sequential ids
        self.dataset_category = dataset_category or {}
        self.source = source
        self._next = 0

    @staticmethod
    def _names(files_and_ids):
        out, stems = {}, {}
        for file_name, image_id in files_and_ids:
            base = os.path.basename(str(file_name))
            out[base] = image_id
            stems.setdefault(os.path.splitext(base)[0], []).append(image_id)
        out.update({f"stem:{s}": ids[0] for s, ids in stems.items() if len(ids) == 1})
        return out

    @classmethod
    def from_metadata(cls, metadata):
        d2c = (
            metadata.get("thing_dataset_id_to_contiguous_id", None)
            if metadata is not None
            else None
        )
        return cls(None, {c: d for d, c in d2c.items()} if d2c else None, "sequential")

    @classmethod
    def from_coco_json(cls, path, class_names: Optional[Sequence[str]]):
        with open(path) as f:
            data = json.load(f)
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        if not cats:
            raise ValueError(f"COCO ground truth '{path}' has no 'categories'")
        if class_names:
            by_name = {canonical_class_name(c["name"]): c["id"] for c in cats}
            missing = [n for n in class_names if canonical_class_name(n) not in by_name]
            if missing:
                raise ValueError(
                    f"COCO ground truth '{path}' has no category for the model's classes {missing} "
                    f"(its categories: {[c['name'] for c in cats]})"
                )
            mapping = {j: by_name[canonical_class_name(n)] for j, n in enumerate(class_names)}
        else:  # Detectron2's convention: contiguous ids = the sorted category ids
            mapping = {j: c["id"] for j, c in enumerate(cats)}
        return cls(
            cls._names((im["file_name"], im["id"]) for im in data.get("images", [])), mapping, path
        )

    @classmethod
    def from_dataset(cls, name):

        records = DatasetCatalog.get(name)
        d2c = MetadataCatalog.get(name).get("thing_dataset_id_to_contiguous_id", None)
        ids = cls._names((r["file_name"], r.get("image_id", i)) for i, r in enumerate(records))
        return cls(ids, {c: d for d, c in d2c.items()} if d2c else None, f"dataset '{name}'")

    def image_id(self, path):
        """The image id of ``path``, or None when a ground truth is used and has no such file."""
        if self.by_name is None:
            self._next += 1
            return self._next - 1
        base = os.path.basename(path)
        return self.by_name.get(base, self.by_name.get(f"stem:{os.path.splitext(base)[0]}"))

    def category_id(self, contiguous: int) -> int:
        return self.dataset_category.get(contiguous, contiguous)


def write_label_png(label: np.ndarray, path: str) -> None:
    """A label map as a single-channel PNG (8-bit when the labels fit, else 16-bit)."""
    label = np.asarray(label)
    if label.min(initial=0) < 0 or label.max(initial=0) > 65535:
        raise ValueError(
            f"labels of {path} do not fit a 16-bit PNG (min {label.min()}, max {label.max()})"
        )
    img = (
        Image.fromarray(label.astype(np.uint8))
        if label.max(initial=0) <= 255
        else Image.fromarray(label.astype(np.uint16))
    )
    img.save(path)


def _progress(paths, enabled):
    """tqdm over ``paths`` (ETA), or a plain iterator with a log line per image when tqdm is
    missing."""
    try:
        from tqdm import tqdm  # noqa: PLC0415  (optional dependency)
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(paths, unit="img", disable=not enabled, dynamic_ncols=True)
        return bar, bar.write
    start = time.perf_counter()

    def logged():
        for i, p in enumerate(paths):
            yield p
            done, elapsed = i + 1, time.perf_counter() - start
            eta = elapsed / done * (len(paths) - done)
            logger.info(f"[{done}/{len(paths)}] {p} ({elapsed:.1f} s elapsed, ETA {eta:.1f} s)")

    return logged(), logger.warning


def run_predictions(
    predictor,
    paths: Sequence[str],
    output_dir: str,
    *,
    options: Callable[[str], dict] = None,
    score_thresh: float = 0.5,
    brightness="auto",
    coco_ids: Optional[CocoIds] = None,
    input_problems: Sequence[Tuple[str, str]] = (),
    progress: bool = True,
    vis_max_size: int = 1600,
) -> dict:
    """Predict every file of ``paths`` into ``output_dir`` (layout in the module docstring); returns
    the summary."""
    options = options or (lambda path: {})
    coco_ids = coco_ids or CocoIds.from_metadata(predictor.metadata)
    names = output_names(paths)
    for sub in ("vis", "labels"):
        os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
    failed = [{"file": spec, "reason": reason} for spec, reason in input_problems]
    done, not_in_gt, results, images, kind = [], [], [], [], None
    iterator, report = _progress(list(paths), progress)
    for path in iterator:
        name = names[path]
        try:
            opts = options(path)
            fmt = predictor.record(path, **opts)["image_format"]
            outputs, decoded = predictor.predict(path, **opts)
            display = display_image(
                decoded, fmt, white_balance=display_white_balance(path, fmt), brightness=brightness
            )
            drawn = draw_predictions(
                display, outputs, predictor.metadata, score_thresh, vis_max_size
            )
            Image.fromarray(drawn).save(os.path.join(output_dir, "vis", f"{name}.png"))
            if "instances" in outputs:
                kind = "instances"
                h, w = outputs["instances"].image_size
                image_id = coco_ids.image_id(path)
                if image_id is None:
                    not_in_gt.append(path)
                else:
                    results += _coco_results(outputs["instances"], image_id, coco_ids)
                    images.append(
                        {
                            "id": image_id,
                            "file_name": os.path.abspath(path),
                            "height": h,
                            "width": w,
                        }
                    )
            else:
                kind = "sem_seg"
                label = prediction_to_label_map(outputs, int(outputs["sem_seg"].shape[0]), path)
                write_label_png(label, os.path.join(output_dir, "labels", f"{name}.png"))
            done.append({"file": path, "name": name})
        except Exception as e:  # noqa: BLE001  (reported by name, the run goes on)
            failed.append({"file": path, "reason": f"{type(e).__name__}: {e}"})
            report(f"predict: skipped {path}: {type(e).__name__}: {e}")
    files = {"vis": os.path.join(output_dir, "vis")}
    if kind == "sem_seg":
        files["labels"] = os.path.join(output_dir, "labels")
    else:
        if not os.listdir(os.path.join(output_dir, "labels")):
            os.rmdir(os.path.join(output_dir, "labels"))
        if kind == "instances":
            files["coco_results"] = os.path.join(output_dir, "coco_instances_results.json")
            files["coco_images"] = os.path.join(output_dir, "coco_images.json")
            with open(files["coco_results"], "w") as f:
                dump_json(results, f)
            with open(files["coco_images"], "w") as f:
                dump_json({"images": images, "ids_from": coco_ids.source}, f, indent=1)
    summary = {
        "output_dir": output_dir,
        "done": len(done),
        "failed": len(failed),
        "failures": failed,
        "not_in_ground_truth": not_in_gt,
        "kind": kind,
        "files": files,
        "images": done,
    }
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        dump_json(summary, f, indent=1)
    return summary


def _coco_results(instances, image_id, coco_ids: CocoIds) -> List[dict]:

    out = instances_to_coco_json(instances.to("cpu"), image_id)
    for r in out:
        r["category_id"] = coco_ids.category_id(r["category_id"])
    return out


def format_summary(summary: dict) -> str:
    """The closing lines of a run: counts, where the outputs are, every failure with its reason."""
    lines = [
        f"predict: {summary['done']} done, {summary['failed']} failed (output: "
        f"{summary['output_dir']})"
    ]
    for key, path in summary["files"].items():
        lines.append(f"  {key}: {path}")
    if summary["not_in_ground_truth"]:
        lines.append(
            f"  {len(summary['not_in_ground_truth'])} file(s) not in the ground truth, left out of "
            f"the COCO results: " + ", ".join(summary["not_in_ground_truth"])
        )
    for item in summary["failures"]:
        lines.append(f"  FAILED {item['file']}: {item['reason']}")
    return "\n".join(lines)
