"""Compatibility with old and new Detectron2, all in one place.

* ``d2_v06_backport.py``: provisioning of the pure-Python Detectron2 v0.6 backport and the source
  fixes applied to it at build time (numpy/Pillow/Python 3.11/caffe2/compiled-op fallbacks,
  optimizer state on resume). An official Detectron2 is never modified.
* this module: run-time feature detection, so segalias_d2 code never branches on
  ``detectron2.__version__`` (it is "0.6" on both the v0.6 tag and current main).
"""
import importlib
import importlib.util
from functools import lru_cache

__all__ = [
    "detectron2_source",
    "is_v06_backport",
    "has_compiled_ops",
    "compiled_op_status",
    "trainer_saves_optimizer_state",
]


def is_v06_backport() -> bool:
    """True when the importable Detectron2 is the pure-Python v0.6 backport built by segalias_d2."""
    return importlib.util.find_spec("detectron2._segalias_backport") is not None


def detectron2_source() -> str:
    """Human-readable origin of the importable Detectron2."""
    if is_v06_backport():
        from detectron2 import _segalias_backport as marker

        return f"v0.6 backport (pure Python, revision {marker.REVISION}, from {marker.SOURCE})"
    return "official build"


@lru_cache(maxsize=None)
def has_compiled_ops() -> bool:
    """Whether ``detectron2._C`` is the compiled extension (not the backport's stand-in)."""
    try:
        module = importlib.import_module("detectron2._C")
    except ImportError:
        return False
    return bool(getattr(module, "COMPILED", True))


def compiled_op_status():
    """List of (feature, status) for the ops that need Detectron2's compiled extension."""
    if has_compiled_ops():
        return [("compiled extension detectron2._C", "available (all ops)")]
    from detectron2 import _C

    rows = [
        ("deformable conv (DeformConv, ModulatedDeformConv)", "available via torchvision.ops.deform_conv2d"),
        ("COCO evaluation", "available via pycocotools COCOeval (no fast C++ path)"),
    ]
    seen = set()
    for op, user in _C.UNAVAILABLE_OPS.items():
        if user in seen or "low-level" in user or "fast COCOeval" in user:
            continue
        seen.add(user)
        rows.append((user, "unavailable: raises CompiledOpUnavailableError"))
    return rows


def trainer_saves_optimizer_state() -> bool:
    """Detectron2 main (and our backport) checkpoint the optimizer via ``DefaultTrainer.state_dict``."""
    from detectron2.engine import DefaultTrainer

    return "state_dict" in DefaultTrainer.__dict__
