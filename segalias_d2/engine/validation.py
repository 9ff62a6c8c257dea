"""Checks run before any work starts, each failing with one clear line (SegAliasSetupError). The config loader
itself is :func:`segalias_d2.config.load_config` (re-exported here for the tools)."""
import difflib

from detectron2.data import DatasetCatalog
from detectron2.utils.file_io import PathManager

from ..config import SegAliasSetupError, load_config

__all__ = ["SegAliasSetupError", "load_config", "check_datasets", "check_weights"]


def check_datasets(cfg, train: bool = True):
    """Every dataset named in DATASETS.TEST (and TRAIN when training) is registered."""
    registered = DatasetCatalog.list()
    keys = (["DATASETS.TRAIN"] if train else []) + ["DATASETS.TEST"]
    for key in keys:
        for name in cfg.DATASETS[key.split(".")[1]]:
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SegAliasSetupError(
                    f"unknown dataset '{name}' in {key}{hint} (register it first, e.g. with "
                    "segalias_d2.data.register_lowlight_dataset)"
                )


def check_weights(cfg):
    """MODEL.WEIGHTS, when a local path, exists."""
    path = cfg.MODEL.WEIGHTS
    if path and "://" not in path and not PathManager.exists(path):
        raise SegAliasSetupError(f"MODEL.WEIGHTS file not found: {path}")
