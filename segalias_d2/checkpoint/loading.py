"""Reading checkpoint files (``.pkl`` / torch) and loading converted or Detectron2 ResNet weights
into a segalias backbone or model by name, with a report of what was filled, what is new (FreqMix,
AWD/SCB) and what did not match. Re-exported by :mod:`.convert`."""

import logging
import os
import pickle
from collections import OrderedDict, namedtuple

import numpy as np
import torch

logger = logging.getLogger(
    __package__ + ".convert"
)  # the public module's logger name, as before the split


def _unwrap(obj):
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
    return obj


def _to_tensor(v):
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    return torch.as_tensor(np.asarray(v))


def read_checkpoint_file(path):
    """Read a ``.pkl`` (pickle, latin1) or a torch checkpoint file on CPU."""
    if str(path).endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        return torch.load(path, map_location="cpu")


def _short(keys, n=8):
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


LoadReport = namedtuple(
    "LoadReport",
    ["loaded", "missing_freqmix", "missing", "unexpected", "shape_mismatch", "missing_lis_modules"],
    defaults=((),),
)
# tensors of modules no source network has: they keep their new initialisation (reported, not warned
# about)
_NEW_MODULE_TOKENS = {"FreqMix": ("freqmix",), "AWD/SCB (LIS)": ("awd", "scb")}


def _is_new_module_key(key, tokens):
    return any(f".{t}." in key or key.startswith(f"{t}.") for t in tokens)


_STRIP = ("", "module.", "backbone.bottom_up.", "backbone.", "bottom_up.")
_ADD = ("", "bottom_up.", "backbone.", "backbone.bottom_up.")


def load_backbone_weights(module, checkpoint, log=None):
    """Load a converted checkpoint (path, or ``{"model": ...}`` / plain state dict) into ``module``.

    ``module`` may be a bare ResNet body, an FPN backbone (``bottom_up.*``) or a full model
    (``backbone.[bottom_up.]*``): the key prefix is matched automatically. Shape mismatches are
    skipped. FreqMix, AWD and SCB tensors absent from the checkpoint are reported as newly
    initialised (expected for ImageNet/COCO weights: the source networks have none, as in the
    papers); other missing/unexpected keys are logged as warnings.
    Returns a :class:`LoadReport`.
    """
    log = log or logger
    obj = (
        read_checkpoint_file(checkpoint)
        if isinstance(checkpoint, (str, os.PathLike))
        else checkpoint
    )
    sd = _unwrap(obj)
    sd = {k: _to_tensor(v) for k, v in sd.items()}
    target = module.state_dict()

    best = ("", "", -1)
    for s in _STRIP:
        for a in _ADD:
            n = sum(1 for k in sd if k.startswith(s) and (a + k[len(s) :]) in target)
            if n > best[2]:
                best = (s, a, n)
    s, a, _ = best
    renamed = OrderedDict()
    unexpected = []
    for k, v in sd.items():
        nk = a + k[len(s) :] if k.startswith(s) else None
        if nk is None or nk not in target:
            unexpected.append(k)
        else:
            renamed[nk] = v
    shape_mismatch = []
    for k in list(renamed):
        if tuple(renamed[k].shape) != tuple(target[k].shape):
            shape_mismatch.append((k, tuple(renamed[k].shape), tuple(target[k].shape)))
            del renamed[k]
    module.load_state_dict(renamed, strict=False)

    missing = [k for k in target if k not in renamed and not k.endswith("num_batches_tracked")]
    missing_fm = [k for k in missing if _is_new_module_key(k, _NEW_MODULE_TOKENS["FreqMix"])]
    missing_lis = [k for k in missing if _is_new_module_key(k, _NEW_MODULE_TOKENS["AWD/SCB (LIS)"])]
    missing_other = [
        k
        for k in missing
        if k not in missing_fm
        and k not in missing_lis
        and not any(k == m[0] for m in shape_mismatch)
    ]
    log.info(
        "Loaded %d/%d tensors into %s (checkpoint prefix %r -> %r)",
        len(renamed),
        len(target),
        type(module).__name__,
        s,
        a,
    )
    if missing_fm:
        log.info(
            "%d FreqMix tensors are not in the checkpoint and keep their new initialisation "
            "(expected: the source network has no FreqMix): %s",
            len(missing_fm),
            _short(missing_fm, 4),
        )
    if missing_lis:
        log.info(
            "%d AWD/SCB tensors are not in the checkpoint and keep their new initialisation "
            "(expected: the source network has no AWD/SCB): %s",
            len(missing_lis),
            _short(missing_lis, 4),
        )
    if missing_other:
        log.warning("Missing in checkpoint (%d): %s", len(missing_other), _short(missing_other))
    if unexpected:
        log.warning(
            "Unexpected in checkpoint, not loaded (%d): %s", len(unexpected), _short(unexpected)
        )
    for k, src_shape, dst_shape in shape_mismatch:
        log.warning(
            "Shape mismatch, not loaded: %s checkpoint %s vs model %s", k, src_shape, dst_shape
        )
    return LoadReport(
        sorted(renamed), missing_fm, missing_other, unexpected, shape_mismatch, missing_lis
    )
