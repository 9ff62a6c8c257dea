"""Shared, computed-once pieces of the tests of the "use a trained model" tools (predictor,
predict.py, evaluate_predictions.py, README commands): tiny random-weight models on the demo data,
and what the in-training evaluator (Trainer.build_test_loader + Trainer.build_evaluator +
inference_on_dataset, as Trainer.test runs them) gives for them."""

import functools
import importlib.util
import os
import tempfile

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset

from segalias_d2.config import load_config
from segalias_d2.engine import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANCE_CFG = os.path.join(REPO, "configs/quick_schedules/mask_rcnn_R_50_AAFPN_instant_test.yaml")
SEMANTIC_CFG = os.path.join(REPO, "configs/quick_schedules/semantic_R_50_AAFPN_instant_test.yaml")
# small and fast; every detection kept (score threshold 0) and projected (INSTANCE_SCORE_THRESH 0.1)
# so that a random model's outputs are not empty
INSTANCE_OPTS = [
    "MODEL.WEIGHTS",
    "",
    "MODEL.DEVICE",
    "cpu",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
    "TEST.DETECTIONS_PER_IMAGE",
    "6",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "30",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "192",
    "TEST.SEGALIAS.INSTANCE_SCORE_THRESH",
    "0.1",
]
SEMANTIC_OPTS = [
    "MODEL.WEIGHTS",
    "",
    "MODEL.DEVICE",
    "cpu",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "INPUT.MAX_SIZE_TEST",
    "192",
    "TEST.SEGALIAS.SLIDING_WINDOW.SIZE",
    "[96, 128]",
    "TEST.SEGALIAS.SLIDING_WINDOW.STRIDE",
    "[64, 96]",
    "TEST.SEGALIAS.SEM_SEG_BOUNDARY_IOU",
    "True",
]
INSTANCE_DATASET = "lis_demo_raw_dark_test"
SEMANTIC_DATASET = "cityscapes_demo_sem_seg_dark_val"  # 16-bit raw-RGB PNGs


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f"_tool_{name}", os.path.join(REPO, "tools", f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def config(kind, extra=()):

    cfg_file, opts, dataset = (
        (INSTANCE_CFG, INSTANCE_OPTS, INSTANCE_DATASET)
        if kind == "instance"
        else (SEMANTIC_CFG, SEMANTIC_OPTS, SEMANTIC_DATASET)
    )
    cfg = load_config(cfg_file, list(opts) + ["DATASETS.TEST", f"('{dataset}',)"] + list(extra))
    return cfg


class _OutputRecorder:
    """A Detectron2 evaluator that keeps the model outputs it sees (CPU copies), in order."""

    def __init__(self):
        self.outputs = []

    def reset(self):
        self.outputs = []

    def process(self, inputs, outputs):
        self.outputs += [{k: v.to("cpu") for k, v in out.items()} for out in outputs]

    def evaluate(self):
        return {}


@functools.lru_cache(maxsize=None)
def trained_run(kind):
    """(cfg, model, dataset records, per-record model outputs of the test loader, evaluator results,
    output dir).

    The model has random weights (seeded); the evaluator is the one training uses
    (Trainer.build_evaluator), writing into the output dir (instances: Detectron2's
    coco_instances_results.json there)."""

    cfg = config(kind)
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    if kind == "semantic":
        # the random head's two most frequent classes (1, 4) swapped with the demo's annotated car /
        # truck (13, 14), so that the predictions overlap the ground truth and the metrics are not
        # all 0
        with torch.no_grad():
            for p in (model.sem_seg_head.predictor.weight, model.sem_seg_head.predictor.bias):
                p[[1, 13, 4, 14]] = p[[13, 1, 14, 4]].clone()
    name = cfg.DATASETS.TEST[0]
    records = DatasetCatalog.get(name)
    out_dir = tempfile.mkdtemp(prefix=f"segalias_{kind}_eval_")
    recorder = _OutputRecorder()
    evaluator = DatasetEvaluators([Trainer.build_evaluator(cfg, name, out_dir), recorder])
    results = inference_on_dataset(model, Trainer.build_test_loader(cfg, name), evaluator)
    assert len(recorder.outputs) == len(records)
    return cfg, model, records, recorder.outputs, results, out_dir


def save_checkpoint(model, path):

    os.makedirs(os.path.dirname(path), exist_ok=True)
    DetectionCheckpointer(model, save_dir=os.path.dirname(path)).save(
        os.path.splitext(os.path.basename(path))[0]
    )
    return path
