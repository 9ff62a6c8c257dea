"""LR schedules: the semantic recipe's "WarmupPolyLR" (mmcv "poly" with a floor and linear warm-up)
as an fvcore ParamScheduler, so Detectron2's LRMultiplier drives it and its state survives --resume
on Detectron2 v0.6 and main alike; and the scheduler builder the Trainer calls (Detectron2's for
every other name)."""

from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier
from fvcore.common.param_scheduler import ParamScheduler

__all__ = ["WarmupPolyWithFloorParamScheduler", "build_segalias_lr_scheduler"]


class WarmupPolyWithFloorParamScheduler(ParamScheduler):
    """LR multiplier at training progress ``where`` in [0, 1):

        poly(where)  = (1 - floor) * (1 - where) ** power + floor
        warm(where)  = 1 - (1 - where / warmup_length) * (1 - warmup_factor)
                       while where < warmup_length
        value(where) = poly(where) * warm(where)          (warm = 1 after the warm-up)

    With floor = min_lr / base_lr this is mmcv's ``PolyLrUpdaterHook(power, min_lr)`` with
    ``warmup="linear"``: lr(it) = ((lr0 - min_lr) (1 - it/max_it)^power + min_lr) * warm(it).
    Note: LRMultiplier scales every param group by the same value, so a group with an LR
    multiplier m decays to m * min_lr rather than to min_lr (mmcv's floor is absolute).
    """

    def __init__(
        self,
        power: float = 0.9,
        floor: float = 0.0,
        warmup_length: float = 0.0,
        warmup_factor: float = 0.1,
    ):
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor (min_lr / base_lr) must be in [0, 1], got {floor}")
        if warmup_length < 0.0:
            raise ValueError(
                f"warmup_length (fraction of training) must be >= 0, got {warmup_length}"
            )
        self.power = power
        self.floor = floor
        self.warmup_length = warmup_length
        self.warmup_factor = warmup_factor

    def __call__(self, where: float) -> float:
        value = (1.0 - self.floor) * (1.0 - where) ** self.power + self.floor
        if where < self.warmup_length:
            value *= 1.0 - (1.0 - where / self.warmup_length) * (1.0 - self.warmup_factor)
        return value


def build_segalias_lr_scheduler(cfg, optimizer):
    """``SOLVER.LR_SCHEDULER_NAME`` "WarmupPolyLR" -> :class:`WarmupPolyWithFloorParamScheduler` in
    an ``LRMultiplier``; any other name -> Detectron2's ``build_lr_scheduler``. A multi-step warm-up
    that would outlast the first step is refused (Detectron2 would warm up towards the
    already-decayed LR)."""
    s = cfg.SOLVER
    if (
        s.LR_SCHEDULER_NAME == "WarmupMultiStepLR"
        and s.WARMUP_ITERS > 0
        and len(s.STEPS)
        and s.WARMUP_ITERS >= s.STEPS[0]
    ):
        raise ValueError(
            f"SOLVER.WARMUP_ITERS ({s.WARMUP_ITERS}) must end before the first of SOLVER.STEPS "
            f"{tuple(s.STEPS)}; otherwise the LR never reaches BASE_LR"
        )
    if s.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return build_d2_lr_scheduler(cfg, optimizer)
    if s.WARMUP_METHOD != "linear" and s.WARMUP_ITERS > 0:
        raise ValueError(
            "SOLVER.LR_SCHEDULER_NAME=WarmupPolyLR supports SOLVER.WARMUP_METHOD='linear' only"
        )
    schedule = WarmupPolyWithFloorParamScheduler(
        power=s.SEGALIAS.POLY_LR_POWER,
        floor=s.SEGALIAS.POLY_LR_MIN_LR / s.BASE_LR,
        warmup_length=s.WARMUP_ITERS / s.MAX_ITER,
        warmup_factor=s.WARMUP_FACTOR,
    )
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=s.MAX_ITER)
