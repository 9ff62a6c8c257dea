"""The semantic recipe's schedule (mmcv "poly" with a floor and linear warm-up) as an fvcore
ParamScheduler, so Detectron2's LRMultiplier drives it and its state survives --resume on
Detectron2 v0.6 and main alike."""
from fvcore.common.param_scheduler import ParamScheduler

__all__ = ["WarmupPolyWithFloorParamScheduler"]


class WarmupPolyWithFloorParamScheduler(ParamScheduler):
    """LR multiplier at training progress ``where`` in [0, 1):

        poly(where)  = (1 - floor) * (1 - where) ** power + floor
        warm(where)  = 1 - (1 - where / warmup_length) * (1 - warmup_factor)   while where < warmup_length
        value(where) = poly(where) * warm(where)          (warm = 1 after the warm-up)

    With floor = min_lr / base_lr this is mmcv's ``PolyLrUpdaterHook(power, min_lr)`` with
    ``warmup="linear"``: lr(it) = ((lr0 - min_lr) (1 - it/max_it)^power + min_lr) * warm(it).
    Note: LRMultiplier scales every param group by the same value, so a group with an LR
    multiplier m decays to m * min_lr rather than to min_lr (mmcv's floor is absolute).
    """

    def __init__(self, power: float = 0.9, floor: float = 0.0, warmup_length: float = 0.0, warmup_factor: float = 0.1):
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor (min_lr / base_lr) must be in [0, 1], got {floor}")
        if warmup_length < 0.0:
            raise ValueError(f"warmup_length (fraction of training) must be >= 0, got {warmup_length}")
        self.power = power
        self.floor = floor
        self.warmup_length = warmup_length
        self.warmup_factor = warmup_factor

    def __call__(self, where: float) -> float:
        value = (1.0 - self.floor) * (1.0 - where) ** self.power + self.floor
        if where < self.warmup_length:
            value *= 1.0 - (1.0 - where / self.warmup_length) * (1.0 - self.warmup_factor)
        return value
