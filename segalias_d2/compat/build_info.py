"""Which Detectron2 is importable, and what it can compute: detected by feature, never by version
string.

``detectron2.__version__`` is "0.6" on both the v0.6 tag and current main, so the origin comes from
the distribution's metadata (``pip`` records a VCS commit in ``direct_url.json``; dev/setup_env.sh
builds official sources with the local version label ``+g<commit>``) and the capabilities from
probes.
"""

import importlib
import importlib.util
import json
import re
from functools import lru_cache
from importlib import metadata

import detectron2
import torch
from detectron2 import _C
from detectron2.layers import DeformConv, FrozenBatchNorm2d, ModulatedDeformConv
from torch import nn

__all__ = [
    "is_v06_backport",
    "detectron2_build_info",
    "detectron2_source",
    "has_compiled_ops",
    "compiled_op_status",
    "deform_conv_cpu_support",
    "frozen_batchnorm_keeps_bn_counter",
]


def is_v06_backport() -> bool:
    """True when the importable Detectron2 is the pure-Python v0.6 backport built by
    dev/d2_backport/."""
    return importlib.util.find_spec("detectron2._segalias_backport") is not None


def _distribution_info():
    """(distribution version, direct_url.json dict) of the installed 'detectron2', or (None, {})."""

    try:
        dist = metadata.distribution("detectron2")
    except metadata.PackageNotFoundError:
        return None, {}
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    return dist.version, direct


@lru_cache(maxsize=None)
def detectron2_build_info() -> dict:
    """kind ('v0.6 backport' or 'official'), version, distribution version, commit, source and
    compiled ops."""

    dist_version, direct = _distribution_info()
    info = {
        "version": detectron2.__version__,
        "distribution": dist_version,
        "commit": None,
        "source": direct.get("url"),
        "compiled_ops": has_compiled_ops(),
    }
    if is_v06_backport():
        from detectron2 import _segalias_backport as marker  # noqa: PLC0415  (exists only in the v0.6 backport)

        info.update(
            kind="v0.6 backport",
            revision=marker.REVISION,
            source=marker.SOURCE,
            build_key=getattr(marker, "BUILD_KEY", None),
        )
        return info
    info["kind"] = "official"
    commit = (direct.get("vcs_info") or {}).get("commit_id")
    if not commit and dist_version:
        m = re.search(
            r"\+g([0-9a-f]{7,40})\b", dist_version
        )  # local label written by dev/setup_env.sh
        commit = m.group(1) if m else None
    info["commit"] = commit
    return info


def detectron2_source() -> str:
    """One human-readable line: which Detectron2 this is."""
    info = detectron2_build_info()
    if info["kind"] == "v0.6 backport":
        return f"v0.6 backport (pure Python, revision {info['revision']}, from {info['source']})"
    parts = [f"version {info['version']}"]
    if info["distribution"] and info["distribution"] != info["version"]:
        parts.append(f"distribution {info['distribution']}")
    parts.append(f"commit {info['commit']}" if info["commit"] else "commit unknown")
    ops = (
        "with compiled ops"
        if info["compiled_ops"]
        else "WITHOUT compiled ops (detectron2._C missing)"
    )
    return f"official build ({', '.join(parts)}), {ops}"


@lru_cache(maxsize=None)
def has_compiled_ops() -> bool:
    """Whether ``detectron2._C`` is the compiled extension (not the backport's stand-in)."""
    try:
        module = importlib.import_module("detectron2._C")
    except ImportError:
        return False
    return bool(getattr(module, "COMPILED", True))


@lru_cache(maxsize=None)
def deform_conv_cpu_support() -> dict:
    """Which deformable-convolution features this Detectron2 computes on CPU tensors (probed on a
    tiny input).

    Official Detectron2 runs ``DeformConv`` forward on CPU through torchvision only with
    ``deformable_groups == 1`` and raises NotImplementedError for its backward and for
    ``ModulatedDeformConv``; the v0.6 backport routes all of them through torchvision.
    """

    x = torch.zeros(1, 2, 3, 3, requires_grad=True)

    def forward():
        DeformConv(2, 2, 1)(x, torch.zeros(1, 2, 3, 3))

    def deformable_groups():
        DeformConv(2, 2, 1, deformable_groups=2)(x, torch.zeros(1, 4, 3, 3))

    def backward():
        DeformConv(2, 2, 1)(x, torch.zeros(1, 2, 3, 3)).sum().backward()

    def modulated():
        ModulatedDeformConv(2, 2, 1)(x, torch.zeros(1, 2, 3, 3), torch.ones(1, 1, 3, 3))

    probes = {
        "forward": forward,
        "deformable_groups > 1": deformable_groups,
        "backward": backward,
        "modulated": modulated,
    }
    support = {}
    for name, probe in probes.items():
        try:
            probe()
            support[name] = True
        except NotImplementedError:
            support[name] = False
    return support


@lru_cache(maxsize=None)
def frozen_batchnorm_keeps_bn_counter() -> bool:
    """Whether a BatchNorm2d converted to Detectron2's FrozenBatchNorm2d keeps its
    ``num_batches_tracked``.

    Detectron2 main's FrozenBatchNorm2d registers the buffer and ``convert_frozen_batchnorm`` copies
    it (so the stages that ``MODEL.BACKBONE.FREEZE_AT`` freezes in a BatchNorm backbone carry the
    counter in their state dict); v0.6 drops it. The counter is never used by FrozenBatchNorm2d, but
    a checkpoint without it (every model-zoo file) then reports it as missing for those stages on
    main.
    """

    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(nn.BatchNorm2d(1))
    return "num_batches_tracked" in converted.state_dict()


def compiled_op_status():
    """List of (feature, status) for the ops that need Detectron2's compiled extension."""
    cpu = deform_conv_cpu_support()
    cpu_text = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu.items())
    if has_compiled_ops():
        return [
            ("compiled extension detectron2._C", "present (all compiled ops)"),
            ("deformable conv on CPU tensors", cpu_text),
        ]

    rows = [
        ("compiled extension detectron2._C", "absent (pure-Python stand-in)"),
        (
            "deformable conv (DeformConv, ModulatedDeformConv)",
            f"via torchvision.ops.deform_conv2d: {cpu_text}",
        ),
        ("COCO evaluation", "available via pycocotools COCOeval (no fast C++ path)"),
    ]
    seen = set()
    for _op, user in getattr(_C, "UNAVAILABLE_OPS", {}).items():
        if user in seen or "low-level" in user or "fast COCOeval" in user:
            continue
        seen.add(user)
        rows.append((user, "unavailable: raises CompiledOpUnavailableError"))
    return rows
