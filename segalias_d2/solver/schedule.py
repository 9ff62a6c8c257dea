"""Epoch-based schedules (MMDetection ``runner=EpochBasedRunner``, ``lr_config.step=[9, 11]``, 12
epochs) as Detectron2 iterations.

Detectron2 counts iterations; the released LIS recipes count epochs. With
``SOLVER.SEGALIAS.EPOCH_SCHEDULE.ENABLED`` the trainer converts, once the training set is known (at
setup, after ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``):

    E         = ceil(NUM_IMAGES / IMS_PER_BATCH)        iterations per epoch
    MAX_ITER  = MAX_EPOCHS * E
    STEPS     = (e * E for e in STEP_EPOCHS)            LR x GAMMA from the first iteration of
                                                        epoch e + 1
    CHECKPOINT_PERIOD = CHECKPOINT_EPOCHS * E           when CHECKPOINT_EPOCHS > 0

MMDetection's GroupSampler pads every aspect-ratio group to a multiple of the batch, which gives at
most one more iteration per group and epoch than E (none for LIS, whose images are all landscape
1200x800). Warm-up stays in iterations (``WARMUP_ITERS``), as in MMDetection.
"""

import math

__all__ = ["epoch_schedule_iterations", "apply_epoch_schedule"]


def epoch_schedule_iterations(num_images, ims_per_batch, max_epochs, step_epochs):
    """Return ``(iters_per_epoch, max_iter, steps)`` for an epoch schedule; errors name the config
    key."""
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(
            "SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES: expected a positive number of training "
            f"images, got {num_images!r}"
        )
    if not isinstance(ims_per_batch, int) or ims_per_batch < 1:
        raise ValueError(f"SOLVER.IMS_PER_BATCH must be a positive int, got {ims_per_batch!r}")
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(
            f"SOLVER.SEGALIAS.EPOCH_SCHEDULE.MAX_EPOCHS must be a positive int, got {max_epochs!r}"
        )
    steps = list(step_epochs)
    if (
        any(not isinstance(e, int) for e in steps)
        or steps != sorted(set(steps))
        or any(not 0 < e < max_epochs for e in steps)
    ):
        raise ValueError(
            f"SOLVER.SEGALIAS.EPOCH_SCHEDULE.STEP_EPOCHS must be increasing ints in (0, MAX_EPOCHS="
            f"{max_epochs}), got {tuple(step_epochs)!r}"
        )
    per_epoch = math.ceil(num_images / ims_per_batch)
    return per_epoch, max_epochs * per_epoch, tuple(e * per_epoch for e in steps)


def apply_epoch_schedule(cfg, num_images):
    """A copy of ``cfg`` with ``MAX_ITER``, ``STEPS`` (and ``CHECKPOINT_PERIOD``) converted from
    epochs.

    ``NUM_IMAGES`` is written into the copy, so the run's dumped ``config.yaml`` reproduces the same
    iterations (e.g. for ``--resume``) without counting the dataset again. ``cfg`` itself is not
    modified.
    """
    es = cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE
    per_epoch, max_iter, steps = epoch_schedule_iterations(
        num_images, cfg.SOLVER.IMS_PER_BATCH, es.MAX_EPOCHS, es.STEP_EPOCHS
    )
    out = cfg.clone()
    out.defrost()
    out.SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES = num_images
    out.SOLVER.MAX_ITER = max_iter
    out.SOLVER.STEPS = steps
    if es.CHECKPOINT_EPOCHS > 0:
        out.SOLVER.CHECKPOINT_PERIOD = es.CHECKPOINT_EPOCHS * per_epoch
    if cfg.is_frozen():
        out.freeze()
    return out
