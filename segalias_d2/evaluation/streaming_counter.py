"""What the two streaming metric counters share (pure numpy, no Detectron2 import).

:class:`~.boundary_errors.BoundaryErrorCounter` (Seg-Aliasing band error types) and
:class:`~.boundary_iou_metric.BoundaryIoUCounter` (Cheng et al. Boundary IoU) follow one protocol,
defined by :class:`StreamingCounter`:

* ``update(pred, gt, name)`` adds one image (label maps checked: 2-D, integer, same shape, GT labels
  in ``[0, K)`` or the ignore label; ``name`` appears in the errors);
* ``merge(other)`` / ``+=`` adds a counter with the same settings (processes are merged this way);
* ``state_dict()`` / ``load_state_dict(state)`` / ``from_state_dict(state)`` save and restore the
  exact state (settings, ``num_images`` and integer count arrays);
* ``reset()``; ``metrics(class_names)`` returns fractions, NaN where undefined.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

__all__ = [
    "StreamingCounter",
    "as_label_map",
    "validated_pair",
    "check_gt_labels",
    "check_num_classes",
    "check_ignore_label",
    "check_class_names",
    "safe_div",
    "nanmean",
]


def as_label_map(label, what: str = "label map") -> np.ndarray:
    """``label`` as a numpy array, checked to be a 2-D integer (or bool) map."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D label map (H, W), got shape {label.shape}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise ValueError(f"{what}: expected an integer label map, got dtype {label.dtype}")
    return label


def validated_pair(pred, gt, name: str):
    """Prediction and ground-truth label maps of one image, checked to be 2-D and the same shape."""
    pred = as_label_map(pred, f"prediction of {name}")
    gt = as_label_map(gt, f"ground truth of {name}")
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction and ground-truth shapes differ for {name}: pred {pred.shape} vs gt "
            f"{gt.shape}"
        )
    return pred, gt


def check_gt_labels(
    gt: np.ndarray, num_classes: int, ignore: np.ndarray, ignore_label: int, name: str
) -> None:
    """Raise if ``gt`` has labels outside ``[0, num_classes)`` other than the ignore label."""
    if gt.dtype.kind == "u" and num_classes <= np.iinfo(gt.dtype).max:
        bad = gt >= num_classes
    else:
        bad = (gt < 0) | (gt >= num_classes)
    bad &= ~ignore
    if bad.any():
        vals = np.unique(gt[bad])[:10].tolist()
        raise ValueError(
            f"ground truth of {name} has labels {vals} outside [0, {num_classes}) that are not the "
            f"ignore label {ignore_label}"
        )


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_num_classes(num_classes) -> int:
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return int(num_classes)


def check_ignore_label(ignore_label) -> int:
    if not _is_int(ignore_label):
        raise ValueError(f"ignore_label must be an integer (e.g. 255), got {ignore_label!r}")
    return int(ignore_label)


def check_class_names(class_names: Optional[Sequence[str]], num_classes: int):
    """``class_names`` as a list of ``num_classes`` names (``"0", "1", ...`` when None)."""
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(class_names, str) or len(class_names) != num_classes:
        got = "a string" if isinstance(class_names, str) else f"{len(class_names)} class names"
        raise ValueError(f"got {got} for {num_classes} classes")
    return list(class_names)


def safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` element-wise, NaN where ``b == 0``."""
    out = np.full(a.shape, np.nan, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


class StreamingCounter:
    """Base of the streaming counters: state handling shared by both metric families.

    Subclasses name their constructor settings in ``_settings`` (constructor argument = attribute)
    and their integer count arrays in ``_arrays``, and implement ``update`` and ``metrics``.
    """

    _settings: tuple = ()
    _arrays: tuple = ()

    num_images: int

    def settings(self) -> Dict[str, object]:
        return {k: getattr(self, k) for k in self._settings}

    def reset(self):
        for a in self._arrays:
            getattr(self, a)[...] = 0
        self.num_images = 0

    def state_dict(self) -> dict:
        state = dict(self.settings())
        state["num_images"] = self.num_images
        state.update({a: getattr(self, a).copy() for a in self._arrays})
        return state

    def load_state_dict(self, state: dict):
        """Replace the counts by a saved state (settings must equal this counter's)."""
        kind = type(self).__name__
        if not isinstance(state, dict):
            raise TypeError(
                f"{kind}.load_state_dict expects a dict from state_dict(), got "
                f"{type(state).__name__}"
            )
        missing = [k for k in (*self._settings, "num_images", *self._arrays) if k not in state]
        if missing:
            raise KeyError(
                f"{kind}.load_state_dict: the state has no {missing} (expected a dict from "
                "state_dict())"
            )
        self._check_same_settings({k: state[k] for k in self._settings}, "load a state of")
        arrays = {}
        for a in self._arrays:
            value = np.asarray(state[a])
            current = getattr(self, a)
            if value.shape != current.shape or not np.issubdtype(value.dtype, np.integer):
                raise ValueError(
                    f"{kind}.load_state_dict: '{a}' must be an integer array of shape "
                    f"{current.shape}, got {value.dtype} {value.shape}"
                )
            arrays[a] = value
        if not _is_int(state["num_images"]) or state["num_images"] < 0:
            raise ValueError(
                f"{kind}.load_state_dict: num_images must be an integer >= 0, got "
                f"{state['num_images']!r}"
            )
        for a, value in arrays.items():
            getattr(self, a)[...] = value
        self.num_images = int(state["num_images"])
        return self

    @classmethod
    def from_state_dict(cls, state: dict):
        missing = [k for k in cls._settings if k not in state]
        if missing:
            raise KeyError(f"{cls.__name__}.from_state_dict: the state has no {missing}")
        return cls(**{k: state[k] for k in cls._settings}).load_state_dict(state)

    def merge(self, other):
        """Add the counts of ``other`` (same class and settings) to this counter; returns self."""
        if not isinstance(other, type(self)):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        self._check_same_settings(other.settings(), "merge")
        for a in self._arrays:
            getattr(self, a)[...] += getattr(other, a)
        self.num_images += other.num_images
        return self

    __iadd__ = merge

    def _check_same_settings(self, other: Dict[str, object], action: str):
        mine = self.settings()
        diff = [f"{k}: {mine[k]!r} here vs {other[k]!r}" for k in mine if mine[k] != other[k]]
        if diff:
            raise ValueError(
                f"cannot {action} {type(self).__name__}s with different settings "
                f"({'; '.join(diff)})"
            )
