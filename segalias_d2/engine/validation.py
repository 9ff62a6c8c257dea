"""Checks run before any work starts, each failing with one clear line (SegAliasSetupError)."""
import difflib
import os

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.file_io import PathManager

from ..config import add_segalias_config

__all__ = ["SegAliasSetupError", "load_config", "check_datasets", "check_weights"]


class SegAliasSetupError(RuntimeError):
    """A configuration, dataset or weights problem found before training/evaluation started."""


def load_config(config_file: str, opts=()):
    """get_cfg + add_segalias_config + merge file and overrides, with one-line errors."""
    cfg = get_cfg()
    add_segalias_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise SegAliasSetupError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:  # yacs: "Non-existent config key: X"
            raise SegAliasSetupError(f"{config_file}: {e.args[0]} (check the spelling, or the _BASE_ chain)") from None
        except (ValueError, AssertionError, TypeError) as e:
            raise SegAliasSetupError(f"{config_file}: {e}") from None
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        msg = e.args[0] if e.args else str(e)
        raise SegAliasSetupError(f"command-line override: {msg}") from None
    return cfg


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
