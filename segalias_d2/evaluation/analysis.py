"""Shared logic of ``tools/visualize_errors.py`` and ``tools/analyze_aliasing.py``.

Per-image label maps for both dataset kinds:

* semantic datasets (records with ``sem_seg_file_name``, metadata ``stuff_classes``):
  prediction = ``outputs["sem_seg"].argmax(0)``, GT = the label PNG;
* instance datasets (records with ``annotations``, metadata ``thing_classes``): semantic
  projections (see :func:`.instance_evaluation.instances_to_label_map`), background = extra class.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..checkpoint.safe_checkpointer import SafeDetectionCheckpointer
from ..config import load_config
from ..data import LowLightDatasetMapper  # reads RAW / 16-bit raw-RGB records as training did
from .instance_evaluation import annotations_to_label_map, instances_to_label_map
from .sem_seg_evaluation import load_sem_seg_gt, prediction_to_label_map

__all__ = [
    "setup_cfg",
    "select_records",
    "DatasetKind",
    "run_model",
    "load_predictions",
]

logger = logging.getLogger(__name__)


def setup_cfg(config_file: str, opts: Sequence[str]):
    """The frozen config of the analysis tools: :func:`segalias_d2.config.load_config`, CPU without
    CUDA."""
    cfg = load_config(config_file, opts, cpu_if_no_cuda=True)
    cfg.freeze()
    return cfg


def select_records(
    records: List[dict], selection: Optional[Sequence[str]], default_count: int = 4
) -> List[dict]:
    """Pick records by index (``"3"``), file basename (``"frankfurt_000000_000294"``) or image_id.

    ``None``/empty -> the first ``default_count``; ``["all"]`` -> every record.
    """
    if not selection:
        return records[:default_count]
    if list(selection) == ["all"]:
        return list(records)
    out = []
    for s in selection:
        s = str(s)
        hit = None
        if s.isdigit() and int(s) < len(records):
            hit = records[int(s)]
        else:
            for r in records:
                base = os.path.splitext(os.path.basename(r.get("file_name", "")))[0]
                if s in (base, os.path.basename(r.get("file_name", "")), str(r.get("image_id"))):
                    hit = r
                    break
        if hit is None:
            raise KeyError(
                f"--images: no image matches {s!r} (use an index, a file basename or an image_id)"
            )
        out.append(hit)
    return out


class DatasetKind:
    """Label-map construction for a registered dataset (semantic or instance)."""

    def __init__(self, dataset_name: str, score_thresh: float = 0.5):
        self.name = dataset_name
        self.meta = MetadataCatalog.get(dataset_name)
        self.records = DatasetCatalog.get(dataset_name)
        self.score_thresh = float(score_thresh)
        if self.records and "sem_seg_file_name" in self.records[0]:
            self.kind = "sem_seg"
            self.classes = list(self.meta.stuff_classes)
            self.ignore_label = int(self.meta.get("ignore_label", 255))
        elif self.records and "annotations" in self.records[0]:
            self.kind = "instance"
            self.classes = list(self.meta.thing_classes) + ["background"]
            self.ignore_label = 255 if len(self.classes) <= 255 else -1
            d2c = self.meta.get("thing_dataset_id_to_contiguous_id", None)
            self.d2c = dict(d2c) if d2c else {i: i for i in range(len(self.classes) - 1)}
        else:
            raise ValueError(
                f"dataset '{dataset_name}': records need 'sem_seg_file_name' (semantic) or "
                "'annotations' (instances)"
            )

    @property
    def num_classes(self):
        return len(self.classes)

    def gt_map(self, record) -> np.ndarray:
        if self.kind == "sem_seg":
            return load_sem_seg_gt(record["sem_seg_file_name"])
        return annotations_to_label_map(
            record["annotations"],
            int(record["height"]),
            int(record["width"]),
            len(self.classes) - 1,
            self.ignore_label,
        )

    def pred_map_from_output(self, record, output) -> np.ndarray:
        if self.kind == "sem_seg":
            return prediction_to_label_map(
                output, self.num_classes, record.get("file_name", "image")
            )
        inst = output["instances"].to("cpu")
        h, w = inst.image_size
        masks = (
            inst.pred_masks.numpy().astype(bool)
            if inst.has("pred_masks")
            else np.zeros((0, h, w), bool)
        )
        return instances_to_label_map(
            masks,
            inst.pred_classes.numpy(),
            inst.scores.numpy(),
            h,
            w,
            self.score_thresh,
            background=len(self.classes) - 1,
        )


def load_predictions(path: str, kind: DatasetKind) -> Dict[object, np.ndarray]:
    """Saved predictions -> ``{key: label map}``.

    * a directory of label PNGs named ``<file basename>.png`` (semantic), keyed by basename;
    * a Detectron2 ``coco_instances_results.json`` (instances; dataset category ids, RLE masks),
      keyed by image_id, projected with the score threshold.
    """
    if PathManager.isdir(path):
        out = {}
        for fn in PathManager.ls(path):
            if fn.lower().endswith(".png"):
                with PathManager.open(os.path.join(path, fn), "rb") as f:
                    out[os.path.splitext(fn)[0]] = np.asarray(Image.open(f))
        if not out:
            raise FileNotFoundError(f"--predictions {path}: no .png label maps found")
        return out
    if path.endswith(".json"):
        if kind.kind != "instance":
            raise ValueError(
                f"--predictions {path}: a JSON file is only supported for instance datasets"
            )
        with PathManager.open(path) as f:
            results = json.load(f)
        by_img: Dict[object, list] = {}
        for r in results:
            by_img.setdefault(r["image_id"], []).append(r)
        sizes = {r.get("image_id"): (int(r["height"]), int(r["width"])) for r in kind.records}
        out = {}
        for img_id, rs in by_img.items():
            if img_id not in sizes:
                continue
            h, w = sizes[img_id]
            masks = [
                mask_util.decode(
                    {
                        "size": r["segmentation"]["size"],
                        "counts": r["segmentation"]["counts"].encode("ascii")
                        if isinstance(r["segmentation"]["counts"], str)
                        else r["segmentation"]["counts"],
                    }
                ).astype(bool)
                for r in rs
            ]
            classes = [kind.d2c[r["category_id"]] for r in rs]
            scores = [r["score"] for r in rs]
            out[img_id] = instances_to_label_map(
                masks, classes, scores, h, w, kind.score_thresh, background=kind.num_classes - 1
            )
        return out
    raise ValueError(
        f"--predictions {path}: expected a directory of label PNGs or a coco_instances_results.json"
    )


def prediction_key(kind: DatasetKind, record):
    if kind.kind == "sem_seg":
        return os.path.splitext(os.path.basename(record["file_name"]))[0]
    return record.get("image_id")


def build_model_from_cfg(cfg):

    from ..engine.validation import weights_match_policy  # late: engine imports evaluation  # noqa: PLC0415  (import cycle: engine imports evaluation)

    model = build_model(cfg)
    if (
        cfg.MODEL.WEIGHTS
    ):  # weights matching too little of the model are refused (--eval-only's rule)
        SafeDetectionCheckpointer(
            model, match_policy=weights_match_policy(cfg, eval_only=True)
        ).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: running a randomly initialised model")
    model.eval()
    return model


def run_model(cfg, records: List[dict], model=None) -> Iterator[Tuple[dict, dict, dict]]:
    """Yield ``(record, model input, model output)`` for each record (batch size 1, test mapper)."""

    if model is None:
        model = build_model_from_cfg(cfg)
    loader = build_detection_test_loader(
        records, mapper=LowLightDatasetMapper(cfg, is_train=False), num_workers=0
    )
    with torch.no_grad():
        for rec, batch in zip(records, loader):
            outputs = model(batch)
            yield rec, batch[0], outputs[0]
