"""Detectron2-style SGD with the Seg-Aliasing LR multipliers (FreqMix and semantic head parameters).

Paper recipe (mmseg ``paramwise_cfg.custom_keys = {'head': lr x2, 'att': lr x2}``): FreqMix
parameters and all head parameters train with twice the base LR. Here:

* parameters whose name contains ``.freqmix.`` (or starts with ``freqmix.``):
  lr x ``SOLVER.SEGALIAS.FREQMIX_LR_MULTIPLIER``;
* parameters under ``sem_seg_head.``: lr x ``SOLVER.SEGALIAS.HEAD_LR_MULTIPLIER`` (only applied when
  != 1);
* LIS modules, parameters whose name contains ``.awd.`` or ``.scb.`` (AWD, SCB branches; AWD's BN
  affine included): lr x ``SOLVER.SEGALIAS.AWD_SCB_LR_MULTIPLIER`` (released SynCOCO2LIS: 2).

Everything else follows Detectron2's ``build_optimizer``: ``BASE_LR``, ``MOMENTUM``, ``NESTEROV``,
``WEIGHT_DECAY``, ``WEIGHT_DECAY_NORM`` (norm layers), ``BIAS_LR_FACTOR`` / ``WEIGHT_DECAY_BIAS``
(params named ``bias``), frozen parameters skipped, shared parameters counted once, and gradient
clipping through ``detectron2.solver.build.maybe_add_gradient_clipping``. Multipliers compose (a
FreqMix bias gets ``BASE_LR * BIAS_LR_FACTOR * FREQMIX_LR_MULTIPLIER``).
"""

from collections import OrderedDict

import torch
from detectron2.solver.build import maybe_add_gradient_clipping

__all__ = [
    "build_segalias_optimizer",
    "get_segalias_param_groups",
    "is_freqmix_param",
    "is_head_param",
    "is_awd_scb_param",
]

# same set as Detectron2's get_default_optimizer_params (NaiveSyncBatchNorm subclasses BatchNorm2d)
_NORM_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)


def _strip_wrappers(name):
    # DistributedDataParallel / DataParallel prefix
    while name.startswith("module."):
        name = name[len("module.") :]
    return name


def is_freqmix_param(name):
    name = _strip_wrappers(name)
    return ".freqmix." in name or name.startswith("freqmix.")


def is_awd_scb_param(name):
    name = _strip_wrappers(name)
    return any(f".{t}." in name or name.startswith(f"{t}.") for t in ("awd", "scb"))


def is_head_param(name):
    return _strip_wrappers(name).startswith("sem_seg_head.")


def get_segalias_param_groups(
    model,
    base_lr,
    weight_decay,
    weight_decay_norm=None,
    bias_lr_factor=1.0,
    weight_decay_bias=None,
    freqmix_lr_multiplier=1.0,
    head_lr_multiplier=1.0,
    awd_scb_lr_multiplier=1.0,
):
    """Param groups (one per distinct (lr, weight_decay)), Detectron2 rules plus the LR
    multipliers."""
    groups = OrderedDict()
    memo = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or p in memo:
                continue
            memo.add(p)
            full = f"{module_name}.{pname}" if module_name else pname
            lr, wd = base_lr, weight_decay
            if isinstance(module, _NORM_TYPES) and weight_decay_norm is not None:
                wd = weight_decay_norm
            if pname == "bias":
                lr = lr * bias_lr_factor
                if weight_decay_bias is not None:
                    wd = weight_decay_bias
            if is_freqmix_param(full):
                lr = lr * freqmix_lr_multiplier
            if is_awd_scb_param(full):
                lr = lr * awd_scb_lr_multiplier
            if head_lr_multiplier != 1.0 and is_head_param(full):
                lr = lr * head_lr_multiplier
            groups.setdefault((lr, wd), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def build_segalias_optimizer(cfg, model):
    """SGD with Detectron2's solver keys and
    ``SOLVER.SEGALIAS.{FREQMIX,HEAD,AWD_SCB}_LR_MULTIPLIER``."""
    s = cfg.SOLVER
    if "SEGALIAS" not in s:
        raise KeyError(
            "cfg.SOLVER.SEGALIAS is missing: call segalias_d2.add_segalias_config(cfg) first"
        )
    for key in ("FREQMIX_LR_MULTIPLIER", "HEAD_LR_MULTIPLIER", "AWD_SCB_LR_MULTIPLIER"):
        if float(s.SEGALIAS[key]) <= 0:
            raise ValueError(f"SOLVER.SEGALIAS.{key} must be > 0, got {s.SEGALIAS[key]}")
    params = get_segalias_param_groups(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        bias_lr_factor=s.BIAS_LR_FACTOR,
        weight_decay_bias=s.get("WEIGHT_DECAY_BIAS", None),
        freqmix_lr_multiplier=float(s.SEGALIAS.FREQMIX_LR_MULTIPLIER),
        head_lr_multiplier=float(s.SEGALIAS.HEAD_LR_MULTIPLIER),
        awd_scb_lr_multiplier=float(s.SEGALIAS.AWD_SCB_LR_MULTIPLIER),
    )
    if not params:
        raise ValueError("build_segalias_optimizer: the model has no trainable parameters")
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        params,
        lr=s.BASE_LR,
        momentum=s.MOMENTUM,
        nesterov=s.NESTEROV,
        weight_decay=s.WEIGHT_DECAY,
    )
