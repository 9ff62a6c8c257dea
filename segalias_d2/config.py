"""Config keys of segalias_d2.

``add_segalias_config(cfg)`` must be called after ``get_cfg()`` and before ``merge_from_file``.
It is idempotent: calling it twice leaves the config unchanged (keys a user already set keep
their values).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_segalias_config"]


def _add_backbone_config(cfg):
    """Anti-aliased ResNet / ResNet-FPN keys (DAF, FreqMix, BlurPool, stem)."""


def _add_data_config(cfg):
    """Low-light data keys (RAW reading, synthesis, mapper)."""


def _add_evaluation_config(cfg):
    """Boundary-error evaluator keys."""


def _add_solver_config(cfg):
    """Optimizer / schedule / inference keys used by the trainer."""


def add_segalias_config(cfg):
    """Add all segalias_d2 keys to ``cfg`` (in place). Safe to call more than once."""
    if getattr(cfg, "_SEGALIAS_CONFIG_ADDED", False):
        return cfg
    frozen = cfg.is_frozen()
    cfg.defrost()
    _add_backbone_config(cfg)
    _add_data_config(cfg)
    _add_evaluation_config(cfg)
    _add_solver_config(cfg)
    # not a config key: yacs keeps attributes starting with "_" out of dumps and merges
    object.__setattr__(cfg, "_SEGALIAS_CONFIG_ADDED", True)
    if frozen:
        cfg.freeze()
    return cfg
