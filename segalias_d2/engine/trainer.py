"""The Detectron2 trainer of segalias_d2 (used by tools/train_net.py)."""

import itertools
import json
import logging
import math
import os
import random

import numpy as np
import torch
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.utils import comm
from detectron2.utils.events import JSONWriter

from .. import compat
from ..checkpoint.safe_checkpointer import SafeDetectionCheckpointer, atomic_open
from ..data import LowLightDatasetMapper
from ..data.augmentation import build_sem_seg_train_aug
from ..evaluation.build import build_segalias_evaluator
from ..evaluation.evaluator_utils import dump_json
from ..solver import build_segalias_lr_scheduler, build_segalias_optimizer
from ..solver.schedule import apply_epoch_schedule
from .validation import weights_match_policy

__all__ = [
    "Trainer",
    "SeedEveryIterationHook",
    "write_results_json",
    "FiniteInputMapper",
    "NonFiniteInputError",
]

logger = logging.getLogger(__name__)


class SeedEveryIterationHook(HookBase):
    """Re-seed python/numpy/torch RNGs from (SEED, iteration, rank) before each step.

    Random augmentations (in the main process) and RPN/ROI sampling then depend only on the
    iteration, so a run resumed from a checkpoint replays exactly what the uninterrupted run did.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        seed = (self.seed * 1_000_003 + self.trainer.iter * 101 + comm.get_rank()) % (2**31)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class _SkipFirst(torch.utils.data.Sampler):
    """An infinite sampler without its first ``count`` indices (data order continues on resume)."""

    def __init__(self, sampler, count: int):
        self.sampler = sampler
        self.count = count

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.count, None)


def _is_semantic(dataset_names) -> bool:
    return any(MetadataCatalog.get(n).get("evaluator_type", "") == "sem_seg" for n in dataset_names)


def write_results_json(results, path):
    """Strict JSON: metrics that were not measured (NaN) are written as null; written atomically
    (temp + rename)."""
    with atomic_open(path, "w") as f:
        dump_json(results, f, indent=2, sort_keys=True)
    logger.info("Evaluation results written to %s", path)


class NonFiniteInputError(FloatingPointError):
    """A model input with NaN/inf pixels (it would poison every loss and gradient of its batch)."""


class FiniteInputMapper:
    """The dataset mapper, refusing an image (or clean twin) with non-finite pixels, naming its
    file."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __getattr__(self, name):  # augmentations, is_train, ... of the wrapped mapper
        if name == "mapper":
            raise AttributeError(name)
        return getattr(self.mapper, name)

    def __call__(self, dataset_dict):
        out = self.mapper(dataset_dict)
        for key in ("image", "clean_image"):
            t = out.get(key) if isinstance(out, dict) else None
            if (
                isinstance(t, torch.Tensor)
                and t.is_floating_point()
                and not bool(torch.isfinite(t).all())
            ):
                bad = int((~torch.isfinite(t)).sum())
                raise NonFiniteInputError(
                    f"{key} of {dataset_dict.get('file_name', '?')}: {bad} of {t.numel()} values "
                    "are NaN/inf after "
                    "reading and augmentation (check the file and the exposure ratio / black and "
                    "white levels)"
                )
        return out


class _StrictJSONLines:
    """metrics.json lines as strict JSON (NaN/inf -> null): JSONWriter writes bare NaN otherwise."""

    def __init__(self, f):
        self._f = f

    def __getattr__(self, name):
        return getattr(self._f, name)

    def write(self, text):
        lines = [
            json.dumps(_none_if_not_finite(json.loads(line)), sort_keys=True, allow_nan=False)
            for line in text.splitlines()
            if line.strip()
        ]
        return self._f.write("".join(line + "\n" for line in lines))


def _none_if_not_finite(d):
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class _EpochScheduleRecord:
    """Checkpointed record of an epoch schedule's conversion; a resume with other iterations is an
    error."""

    def __init__(self, cfg):
        s = cfg.SOLVER
        self.state = {
            "num_images": int(s.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES),
            "max_iter": int(s.MAX_ITER),
            "steps": [int(x) for x in s.STEPS],
        }

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, saved):
        if dict(saved) != self.state:
            raise ValueError(
                f"--resume: the checkpoint's epoch schedule was converted with {saved}, this run "
                f"with {self.state}. "
                f"Resume with SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES {saved['num_images']} "
                f"(as in the run's config.yaml)."
            )


class Trainer(DefaultTrainer):
    """DefaultTrainer plus: segalias evaluators, optimizer param groups with LR multipliers, the
    WarmupPolyLR schedule, epoch-based schedules, the low-light dataset mapper, exact resume, and
    results as JSON."""

    def __init__(self, cfg):
        cfg = self.resolve_epoch_schedule(cfg)
        with compat.cpu_models_get_no_ddp_device_ids():  # CPU multi-process (GLOO) training
            super().__init__(cfg)
        compat.start_data_loader_iterator(self._trainer)  # exact resume: not inside the first step
        if not compat.trainer_saves_optimizer_state():  # Detectron2 older than Nov 2021
            self.checkpointer.add_checkpointable("optimizer", self.optimizer)
            self.checkpointer.add_checkpointable("scheduler", self.scheduler)
        if cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.ENABLED:
            self.checkpointer.add_checkpointable("epoch_schedule", _EpochScheduleRecord(cfg))
            if comm.is_main_process() and cfg.OUTPUT_DIR:
                # default_setup dumped the config before the conversion: dump the iterations
                # actually used
                os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
                with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
                    f.write(cfg.dump())

    # ------------------------------------------------------------------ building blocks
    @classmethod
    def resolve_epoch_schedule(cls, cfg):
        """``cfg`` with SOLVER.SEGALIAS.EPOCH_SCHEDULE converted to MAX_ITER/STEPS (unchanged when
        not ENABLED).

        ``NUM_IMAGES`` 0 counts the training set as the train loader will see it
        (FILTER_EMPTY_ANNOTATIONS).
        """
        es = cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE
        if not es.ENABLED:
            return cfg
        num_images = int(es.NUM_IMAGES)
        if num_images <= 0:
            num_images = len(
                get_detection_dataset_dicts(
                    cfg.DATASETS.TRAIN,
                    filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
                    min_keypoints=0,
                    proposal_files=None,
                )
            )
        out = apply_epoch_schedule(cfg, num_images)
        logger.info(
            "Epoch schedule: %d training images at batch %d -> %d it/epoch; MAX_ITER %d, STEPS %s",
            num_images,
            cfg.SOLVER.IMS_PER_BATCH,
            out.SOLVER.MAX_ITER // es.MAX_EPOCHS,
            out.SOLVER.MAX_ITER,
            tuple(out.SOLVER.STEPS),
        )
        return out

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_segalias_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_segalias_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_mapper(cls, cfg, is_train: bool):
        if is_train and _is_semantic(cfg.DATASETS.TRAIN):
            return LowLightDatasetMapper(
                cfg, is_train=True, augmentations=build_sem_seg_train_aug(cfg)
            )
        return LowLightDatasetMapper(cfg, is_train=is_train)

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int = 0):
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=0,
            proposal_files=None,
        )
        seed = cfg.SEED if cfg.SEED >= 0 else None
        if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
            sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed)
        elif cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
            factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dataset, cfg.DATALOADER.REPEAT_THRESHOLD
            )
            sampler = RepeatFactorTrainingSampler(factors, shuffle=True, seed=seed)
        else:
            raise ValueError(
                f"DATALOADER.SAMPLER_TRAIN '{cfg.DATALOADER.SAMPLER_TRAIN}' is not supported "
                "(TrainingSampler or RepeatFactorTrainingSampler)"
            )
        if start_iter > 0:
            per_rank = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
            sampler = _SkipFirst(sampler, start_iter * per_rank)
        return build_detection_train_loader(
            dataset,
            mapper=FiniteInputMapper(cls.build_mapper(cfg, True)),
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=FiniteInputMapper(cls.build_mapper(cfg, False))
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_segalias_evaluator(cfg, dataset_name, output_folder)

    def build_writers(self):
        writers = super().build_writers()
        for w in writers:
            if isinstance(w, JSONWriter):
                w._file_handle = _StrictJSONLines(w._file_handle)
        return writers

    def build_hooks(self):
        # DefaultTrainer made its checkpointer just before; its hooks (PeriodicCheckpointer) get the
        # safe one
        self.checkpointer = SafeDetectionCheckpointer.from_checkpointer(self.checkpointer)
        ret = super().build_hooks()
        if self.cfg.SEED >= 0:
            ret.insert(0, SeedEveryIterationHook(self.cfg.SEED))
        return ret

    # ------------------------------------------------------------------ resume & results
    def resume_or_load(self, resume=True):
        if isinstance(self.checkpointer, SafeDetectionCheckpointer):
            self.checkpointer.match_policy = weights_match_policy(self.cfg, eval_only=False)
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:
            # continue the data stream where the checkpointed run was, instead of replaying it
            loader = self.build_train_loader(self.cfg, start_iter=self.start_iter)
            if hasattr(self._trainer, "reset_data_loader"):  # Detectron2 main
                self._trainer.reset_data_loader(lambda: loader)
                compat.start_data_loader_iterator(self._trainer)
            else:
                self._trainer.data_loader = loader
                self._trainer._data_loader_iter = iter(loader)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            # DefaultTrainer.test un-nests a single dataset; the JSON is always {dataset: results}
            keyed = {cfg.DATASETS.TEST[0]: results} if len(cfg.DATASETS.TEST) == 1 else results
            write_results_json(keyed, os.path.join(cfg.OUTPUT_DIR, "eval_results.json"))
        return results
