"""Config keys of segalias_d2, and the one config loader of train_net and the tools.

``add_segalias_config(cfg)`` must be called after ``get_cfg()`` and before ``merge_from_file``.
It is idempotent: calling it twice leaves the config unchanged (keys a user already set keep
their values). Every key it adds lives under a ``SEGALIAS`` node of the Detectron2 node it
configures (``MODEL.SEGALIAS``, ``INPUT.SEGALIAS``, ``DATALOADER.SEGALIAS``, ``SOLVER.SEGALIAS``,
``TEST.SEGALIAS``).

``load_config(config_file, opts)`` = ``get_cfg`` + ``add_segalias_config`` + merge file and
overrides, with one-line errors; a key of an older layout (``RENAMED_KEYS``) is reported with its
new name.
"""

import os

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .config_defaults import (  # noqa: F401  (_default and the node builders, re-exported for tests)
    _add_backbone_config,
    _add_data_config,
    _add_evaluation_config,
    _add_semantic_config,
    _add_solver_config,
    _default,
)

__all__ = [
    "add_segalias_config",
    "load_config",
    "SegAliasSetupError",
    "UnknownConfigKeyError",
    "RENAMED_KEYS",
]

#: keys (or nodes) of an older layout -> where they live now
RENAMED_KEYS = {
    "SOLVER.FREQMIX_LR_MULTIPLIER": "SOLVER.SEGALIAS.FREQMIX_LR_MULTIPLIER",
    "SOLVER.HEAD_LR_MULTIPLIER": "SOLVER.SEGALIAS.HEAD_LR_MULTIPLIER",
    "SOLVER.POLY_LR_POWER": "SOLVER.SEGALIAS.POLY_LR_POWER",
    "SOLVER.POLY_LR_MIN_LR": "SOLVER.SEGALIAS.POLY_LR_MIN_LR",
    "SOLVER.EPOCH_SCHEDULE": "SOLVER.SEGALIAS.EPOCH_SCHEDULE",
    "INPUT.RESIZE_SCALE": "INPUT.SEGALIAS.RESIZE_SCALE",
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": "INPUT.SEGALIAS.CROP_SINGLE_CATEGORY_MAX_AREA",
    "TEST.SLIDING_WINDOW": "TEST.SEGALIAS.SLIDING_WINDOW",
}


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
    _add_semantic_config(cfg)
    _register_renamed_keys(cfg)
    # not a config key: yacs keeps attributes starting with "_" out of dumps and merges
    object.__setattr__(cfg, "_SEGALIAS_CONFIG_ADDED", True)
    if frozen:
        cfg.freeze()
    return cfg


class SegAliasSetupError(RuntimeError):
    """A configuration, dataset or weights problem found before training/evaluation started (one
    line)."""


class UnknownConfigKeyError(SegAliasSetupError, KeyError):
    """A key the config does not have (yacs' "Non-existent config key"); names the new key of a
    renamed one."""

    def __str__(self):  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


def _message(e):
    return str(e.args[0]) if e.args else str(e)


def _spelling_hint(e):
    return "" if "was renamed to" in _message(e) else " (check the spelling, or the _BASE_ chain)"


def _register_renamed_keys(cfg):
    """Register ``RENAMED_KEYS`` with yacs, which then raises "Key OLD was renamed to NEW" on
    merging OLD.

    yacs checks the full key: a file reports the first missing node (``SOLVER.EPOCH_SCHEDULE``), an
    override its leaf (``SOLVER.EPOCH_SCHEDULE.ENABLED``), so the leaves under a renamed node are
    registered too.
    """
    registry = cfg.__dict__[CN.RENAMED_KEYS]
    for old, new in RENAMED_KEYS.items():
        node = cfg
        for part in new.split("."):
            node = node[part]
        names = [(old, new)]
        if isinstance(node, CN):
            names += [(f"{old}.{leaf}", f"{new}.{leaf}") for leaf in _leaves(node)]
        for old_name, new_name in names:
            # a key another project defines (e.g. DeepLab's INPUT.CROP.SINGLE_CATEGORY_MAX_AREA)
            # stays usable
            if old_name not in registry and not _has_key(cfg, old_name):
                cfg.register_renamed_key(
                    old_name, new_name, "segalias_d2 keys live under SEGALIAS nodes"
                )


def _has_key(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, CN) or part not in node:
            return False
        node = node[part]
    return True


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, CN):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def load_config(config_file, opts=(), *, cpu_if_no_cuda=False):
    """``get_cfg`` + :func:`add_segalias_config` + ``merge_from_file(config_file)`` (skipped when
    empty) + ``merge_from_list(opts)``; the config of ``tools/train_net.py`` and every tool.
    Returned unfrozen.

    ``cpu_if_no_cuda``: a ``cuda`` MODEL.DEVICE becomes ``cpu`` on a machine without CUDA (the
    configs target GPUs). Errors are :class:`SegAliasSetupError` with one line naming the file or
    the override; an unknown key is an :class:`UnknownConfigKeyError` (also a ``KeyError``) that
    names the new key of a renamed one.
    """
    cfg = get_cfg()
    add_segalias_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise SegAliasSetupError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:  # yacs: "Non-existent config key: X" / "Key X was renamed to Y; ..."
            raise UnknownConfigKeyError(
                f"{config_file}: {_message(e)}{_spelling_hint(e)}"
            ) from None
        except (ValueError, AssertionError, TypeError) as e:
            raise SegAliasSetupError(f"{config_file}: {e}") from None
    try:
        cfg.merge_from_list(list(opts or ()))
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        # yacs raises KeyError for a renamed key and asserts "Non-existent key: X" for an unknown
        # one
        unknown = isinstance(e, KeyError) or "Non-existent key" in _message(e)
        raise (UnknownConfigKeyError if unknown else SegAliasSetupError)(
            f"command-line override: {_message(e)}"
        ) from None
    if cpu_if_no_cuda and cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg
