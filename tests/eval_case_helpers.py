"""Small hand-made evaluation cases shared by tests/test_mutation_gaps_evaluation.py and
tests/test_mutation_gaps_instance_eval.py: dataset registration, one-hot score maps, box masks, COCO
RLE annotations, Instances, Cheng et al.'s inner boundary written out pixel by pixel, and two
simulated processes."""

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import evaluator as d2_evaluator
from detectron2.structures import BitMasks, BoxMode, Instances
from detectron2.utils import comm


def register(name, records, **meta):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(**meta)
    return name


def unregister(name):
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def scores(label, num_classes):
    t = torch.zeros((num_classes,) + label.shape)
    t.scatter_(0, torch.as_tensor(label, dtype=torch.long)[None], 1.0)
    return {"sem_seg": t}


def instance_record(image_id, h, w, annotations, file_name=None):
    return {
        "file_name": file_name or f"im{image_id}.png",
        "image_id": image_id,
        "height": h,
        "width": w,
        "annotations": annotations,
    }


def rle_annotation(mask, category_id, iscrowd=0):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    ys, xs = np.nonzero(mask)
    return {
        "segmentation": rle,
        "category_id": category_id,
        "iscrowd": iscrowd,
        "bbox_mode": BoxMode.XYWH_ABS,
        "bbox": [
            float(xs.min()),
            float(ys.min()),
            float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1),
        ],
    }


def instances(h, w, masks, classes, scores):
    inst = Instances((h, w))
    inst.pred_masks = torch.as_tensor(np.stack(masks))
    inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes)
    return {"instances": inst}


def box(h, w, rows, cols):
    m = np.zeros((h, w), bool)
    m[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return m


def inner_boundary_by_hand(mask, d=1):
    """Cheng et al.: mask pixels within Chebyshev distance d of a background pixel or of the
    outside."""
    padded = np.pad(mask.astype(bool), d, constant_values=False)
    h, w = mask.shape
    out = np.zeros_like(mask, bool)
    for y in range(h):
        for x in range(w):
            out[y, x] = mask[y, x] and not padded[y : y + 2 * d + 1, x : x + 2 * d + 1].all()
    return out


def simulate_two_ranks(monkeypatch, ranks, gather_part, all_gather_part):
    """Evaluate rank 1 (returns nothing) then rank 0 (the merge), as Detectron2's comm would under
    launch."""
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [gather_part(r) for r in ranks])
    monkeypatch.setattr(comm, "all_gather", lambda data: [all_gather_part(r) for r in ranks])
    for main in (False, True):
        monkeypatch.setattr(comm, "is_main_process", lambda main=main: main)
        monkeypatch.setattr(d2_evaluator, "is_main_process", lambda main=main: main)
        result = ranks[0 if main else 1].evaluate()
        if not main:
            assert not result  # {} or None on the other ranks
    return result
