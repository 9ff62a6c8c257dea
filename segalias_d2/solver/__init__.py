"""Optimizer with the Seg-Aliasing LR multipliers (FreqMix params, semantic head params); LR
schedules (WarmupPolyLR and the scheduler builder); epoch schedules."""

from .lr_scheduler import WarmupPolyWithFloorParamScheduler, build_segalias_lr_scheduler  # noqa: F401
from .optimizer import (  # noqa: F401
    build_segalias_optimizer,
    get_segalias_param_groups,
    is_awd_scb_param,
    is_freqmix_param,
    is_head_param,
)
from .schedule import apply_epoch_schedule, epoch_schedule_iterations  # noqa: F401
