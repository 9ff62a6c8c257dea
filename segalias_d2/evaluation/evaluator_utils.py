"""What segalias_d2's evaluators and result writers share: strict JSON and gathering a counter.

Metric values that could not be measured are NaN in Python (a class absent from the ground truth,
AP without detections). JSON has no NaN: :func:`to_strict_json` turns them (and infinities) into
``null``, and :func:`dump_json` refuses anything else that strict JSON cannot hold.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping

import numpy as np
from detectron2.utils import comm

__all__ = ["to_strict_json", "dump_json", "gather_counter"]


def to_strict_json(obj):
    """Copy of ``obj`` for strict JSON: NaN / +-inf -> None (not measured), numpy scalars and arrays
    -> Python numbers and lists, tuples -> lists; mappings and their keys are kept."""
    if isinstance(obj, Mapping):
        return {k: to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_strict_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dump_json(obj, f, **kwargs) -> None:
    """``json.dump`` of :func:`to_strict_json` ``(obj)`` with ``allow_nan=False`` (never a bare
    NaN)."""
    json.dump(to_strict_json(obj), f, allow_nan=False, **kwargs)


def gather_counter(counter, distributed: bool):
    """The sum of every process's streaming counter on the main process, None on the others.

    The local counter is left unchanged (the sum is a copy).
    """
    if not distributed:
        return counter
    comm.synchronize()
    parts = comm.all_gather(counter)
    if not comm.is_main_process():
        return None
    total = copy.deepcopy(parts[0])
    for p in parts[1:]:
        total.merge(p)
    return total
