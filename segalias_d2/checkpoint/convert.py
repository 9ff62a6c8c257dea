"""Convert ImageNet ResNet checkpoints to Detectron2 format for the segalias backbones, and load
them (whole COCO detectors: :mod:`.detector`).

Supported sources (``fmt``):

* ``torchvision``: ``torchvision.models.resnet{50,101,152}`` state dicts (RGB, stride in the 3x3
  conv: use ``MODEL.RESNETS.STRIDE_IN_1X1 = False``, ``STEM_TYPE: basic``, ``INPUT.FORMAT: RGB`` and
  the ImageNet mean/std in 0-255 units).
* ``mmcv_v1c``: mmcv/mmseg ResNet-V1c (deep stem), e.g. ``resnet50_v1c-2cccc1ad.pth`` (RGB,
  ``STEM_TYPE: deep``, ``STRIDE_IN_1X1: False``). A full mmseg checkpoint (``backbone.*`` keys) also
  works; non-backbone keys and keys without a Detectron2 counterpart (e.g. the paper's FreqMix
  ``att`` modules) are dropped and listed.
* ``d2_pkl``: Detectron2/MSRA ``.pkl`` files: Caffe2 blob names (``R-50.pkl``: BGR,
  ``STRIDE_IN_1X1: True``), renamed by Detectron2's own ``convert_basic_c2_names``, or Detectron2
  names (``{"model": ...}``); only ResNet-body keys are kept. ``DetectionCheckpointer`` loads such
  files into a 3-channel model by itself; the format is for the packed-Bayer stem
  (``bayer_pattern``) and for files with exact names.
* ``d2_coco_detector`` (CLI / :mod:`.detector`): a whole COCO-80 Detectron2 Mask R-CNN R50-FPN
  (model zoo ``mask_rcnn_R_50_FPN_3x``) with its class layers reduced to the 8 LIS classes by true
  class.

Output names are relative to the ResNet body (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``,
...) with a prefix prepended when saving: ``backbone.bottom_up.`` (default) for FPN models built
with ``build_segalias_resnet_fpn_backbone``, ``backbone.`` for ``build_segalias_resnet_backbone``
models, ``""`` for a bare backbone module. Files are written as Detectron2 checkpoints: ``.pkl`` =
pickle of ``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": False}``;
``.pth`` = the same dict saved with ``torch.save`` (tensors).
"""

import argparse
import logging
import os
import pickle
import re
from collections import OrderedDict

import torch
from detectron2.checkpoint.c2_model_loading import convert_basic_c2_names

from .loading import (  # noqa: F401  (re-exported: the conversion module's public names)
    LoadReport,
    _short,
    _to_tensor,
    _unwrap,
    load_backbone_weights,
    read_checkpoint_file,
)

__all__ = [
    "FORMATS",
    "convert_state_dict",
    "convert_torchvision_resnet",
    "convert_mmcv_v1c",
    "convert_d2_pkl",
    "adapt_stem_to_packed_bayer",
    "read_checkpoint_file",
    "save_d2_checkpoint",
    "convert_file",
    "load_backbone_weights",
    "LoadReport",
    "main",
]

logger = logging.getLogger(__name__)

FORMATS = ("torchvision", "mmcv_v1c", "d2_pkl")
DEFAULT_PREFIX = "backbone.bottom_up."

_BN = {
    "weight": "weight",
    "bias": "bias",
    "running_mean": "running_mean",
    "running_var": "running_var",
}


def _bn_leaf(leaf):
    """torchvision/mmcv BN leaf -> d2 norm leaf; None for num_batches_tracked (not used by d2
    norms)."""
    return _BN.get(leaf)


def _convert_layers(key):
    """``layer{i}.{j}.{conv,bn}{k}.*`` / ``downsample.{0,1}.*`` (torchvision and mmcv naming)."""
    m = re.match(r"^layer(\d+)\.(\d+)\.(.+)$", key)
    if not m:
        return None
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    base = f"res{stage}.{block}."
    m2 = re.match(r"^conv(\d)\.(weight|bias)$", rest)
    if m2:
        return base + f"conv{m2.group(1)}.{m2.group(2)}"
    m2 = re.match(r"^bn(\d)\.(\w+)$", rest)
    if m2:
        leaf = _bn_leaf(m2.group(2))
        return None if leaf is None else base + f"conv{m2.group(1)}.norm.{leaf}"
    m2 = re.match(r"^downsample\.0\.(weight|bias)$", rest)
    if m2:
        return base + f"shortcut.{m2.group(1)}"
    m2 = re.match(r"^downsample\.1\.(\w+)$", rest)
    if m2:
        leaf = _bn_leaf(m2.group(1))
        return None if leaf is None else base + f"shortcut.norm.{leaf}"
    return None


def _apply(state_dict, fn):
    out, dropped = OrderedDict(), []
    for k, v in state_dict.items():
        nk = fn(k)
        if nk is None:
            if not k.endswith("num_batches_tracked"):  # BN counters: unused by Detectron2 norms
                dropped.append(k)
        else:
            out[nk] = v
    return out, dropped


def _strip(key, prefixes):
    for p in prefixes:
        if key.startswith(p):
            return key[len(p) :]
    return key


def convert_torchvision_resnet(state_dict):
    """torchvision ResNet names -> Detectron2 ResNet names. Returns (converted, dropped_keys)."""

    def fn(k):
        k = _strip(k, ("module.",))
        if k == "conv1.weight":
            return "stem.conv1.weight"
        m = re.match(r"^bn1\.(\w+)$", k)
        if m:
            leaf = _bn_leaf(m.group(1))
            return None if leaf is None else f"stem.conv1.norm.{leaf}"
        return _convert_layers(k)

    return _apply(state_dict, fn)


_MMCV_STEM = {"0": "conv1", "3": "conv2", "6": "conv3"}
_MMCV_STEM_BN = {"1": "conv1", "4": "conv2", "7": "conv3"}


def convert_mmcv_v1c(state_dict):
    """mmcv ResNet-V1c names (deep stem ``stem.{0..7}``) -> Detectron2 names (with ``DeepStem``)."""

    def fn(k):
        k = _strip(k, ("module.", "backbone."))
        m = re.match(r"^stem\.(\d+)\.(\w+)$", k)
        if m:
            idx, leaf = m.group(1), m.group(2)
            if idx in _MMCV_STEM and leaf in ("weight", "bias"):
                return f"stem.{_MMCV_STEM[idx]}.{leaf}"
            if idx in _MMCV_STEM_BN:
                leaf = _bn_leaf(leaf)
                return None if leaf is None else f"stem.{_MMCV_STEM_BN[idx]}.norm.{leaf}"
            return None
        return _convert_layers(k)

    return _apply(state_dict, fn)


# a ResNet-body parameter in Detectron2 names; anything else converted from Caffe2 names (fc1000,
# heads) is dropped
_BODY_KEY = re.compile(
    r"^(stem\.conv1|res[2-5]\.\d+\.(conv[123]|shortcut))\.(weight|bias|norm\.(weight|bias|running_mean|running_var))$"
)


def _convert_c2_names(state_dict):
    """Caffe2/MSRA blob names (``R-50.pkl``) -> Detectron2 ResNet names, with Detectron2's own table
    (``convert_basic_c2_names``, what ``DetectionCheckpointer`` applies to such files); non-body
    keys dropped."""
    keys = list(state_dict)
    renamed = dict(zip(keys, convert_basic_c2_names(keys)))
    seen = {}
    for k, name in renamed.items():
        if name in seen and _BODY_KEY.match(name):
            raise ValueError(f"Caffe2 blobs {seen[name]!r} and {k!r} both convert to {name!r}")
        seen[name] = k
    return _apply(state_dict, lambda k: renamed[k] if _BODY_KEY.match(renamed[k]) else None)


def _convert_d2_name(k):
    m = re.search(r"(?:^|\.)((?:stem|res[2-5])\..+)$", k)
    if not m:
        return None
    # only keys of the ResNet body: drop e.g. "roi_heads.res5.*" (C4 heads) and FPN/head keys
    head = k[: m.start(1)]
    if head not in (
        "",
        "backbone.",
        "backbone.bottom_up.",
        "bottom_up.",
        "module.",
        "module.backbone.",
        "module.backbone.bottom_up.",
    ):
        return None
    return m.group(1)


def convert_d2_pkl(obj):
    """Detectron2 / MSRA ``.pkl`` content (Caffe2 blob names or Detectron2 names) -> Detectron2
    ResNet names."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
    elif isinstance(obj, dict) and "blobs" in obj:
        sd = obj["blobs"]
    else:
        sd = obj
    sd = {k: v for k, v in sd.items() if not k.endswith("_momentum")}
    c2 = any(k == "conv1_w" or re.match(r"^res\d_\d+_branch", k) for k in sd)
    return _convert_c2_names(sd) if c2 else _apply(sd, _convert_d2_name)


_CONVERTERS = {
    "torchvision": convert_torchvision_resnet,
    "mmcv_v1c": convert_mmcv_v1c,
    "d2_pkl": convert_d2_pkl,
}
# channel order each source stem expects
SOURCE_CHANNEL_ORDER = {"torchvision": "RGB", "mmcv_v1c": "RGB", "d2_pkl": "BGR"}


def convert_state_dict(obj, fmt):
    """Convert a loaded checkpoint object. Returns (OrderedDict of torch tensors, list of dropped
    keys)."""
    if fmt not in _CONVERTERS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "d2_pkl":
        sd, dropped = convert_d2_pkl(obj)
    else:
        sd, dropped = _CONVERTERS[fmt](_unwrap(obj))
    sd = OrderedDict((k, _to_tensor(v)) for k, v in sd.items())
    if not sd:
        raise ValueError(
            f"no ResNet weights recognised in the checkpoint for format {fmt!r} "
            f"(first keys: {list(_unwrap(obj))[:5]})"
        )
    return sd, dropped


def adapt_stem_to_packed_bayer(state_dict, pattern="RGGB", source_order="RGB"):
    """Make an RGB/BGR stem accept 4-channel packed Bayer input (channels in ``pattern`` order).

    A packed Bayer pixel (R, G1, G2, B) corresponds to the colour pixel (R, (G1+G2)/2, B), so the
    first conv's R/B slices are copied and the G slice is split in half over the two green channels.
    ``state_dict`` uses Detectron2 body names (``stem.conv1.weight``), without prefix.
    """
    pattern = pattern.upper()
    if sorted(pattern) != sorted("RGGB"):
        raise ValueError(
            f"bayer pattern must be a permutation of RGGB (e.g. RGGB, BGGR, GRBG), got {pattern!r}"
        )
    if source_order not in ("RGB", "BGR"):
        raise ValueError(f"source_order must be 'RGB' or 'BGR', got {source_order!r}")
    key = "stem.conv1.weight"
    w = state_dict[key]
    if w.shape[1] != 3:
        raise ValueError(
            f"{key} has {w.shape[1]} input channels; expected 3 to adapt to packed Bayer"
        )
    out = OrderedDict(state_dict)
    idx = {c: source_order.index(c) for c in "RGB"}
    out[key] = torch.stack([w[:, idx[c]] * (0.5 if c == "G" else 1.0) for c in pattern], dim=1)
    return out


def save_d2_checkpoint(
    state_dict, dst, prefix=DEFAULT_PREFIX, author="segalias_d2 convert_pretrained"
):
    """Write a Detectron2 checkpoint with exact names (``matching_heuristics: False``)."""
    model = OrderedDict((prefix + k, v) for k, v in state_dict.items())
    if str(dst).endswith(".pkl"):
        payload = {
            "model": OrderedDict((k, v.numpy()) for k, v in model.items()),
            "__author__": author,
            "matching_heuristics": False,
        }
        with open(dst, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save({"model": model, "__author__": author, "matching_heuristics": False}, dst)
    return dst


def convert_file(src, dst, fmt, prefix=DEFAULT_PREFIX, bayer_pattern=None):
    """Convert ``src`` (format ``fmt``) into a Detectron2 checkpoint at ``dst``. Returns the
    converted dict."""
    sd, dropped = convert_state_dict(read_checkpoint_file(src), fmt)
    if dropped:
        logger.info(
            "Dropped %d key(s) without a ResNet-body counterpart: %s", len(dropped), _short(dropped)
        )
    if bayer_pattern:
        sd = adapt_stem_to_packed_bayer(sd, bayer_pattern, SOURCE_CHANNEL_ORDER[fmt])
    d = os.path.dirname(os.path.abspath(dst))
    os.makedirs(d, exist_ok=True)
    save_d2_checkpoint(sd, dst, prefix=prefix, author=f"segalias_d2 convert_pretrained ({fmt})")
    logger.info("Wrote %d tensors with prefix %r to %s", len(sd), prefix, dst)
    return sd


def main(argv=None):
    """CLI: ``python tools/convert_pretrained.py SRC DST --format
    {torchvision,mmcv_v1c,d2_pkl,d2_coco_detector,mmseg}``."""
    parser = argparse.ArgumentParser(
        description="Convert ImageNet ResNet weights (or a COCO Mask R-CNN) into a Detectron2 "
        "checkpoint for the segalias models.",
        epilog="Prefix: 'backbone.bottom_up.' for build_segalias_resnet_fpn_backbone models "
        "(default), "
        "'backbone.' for build_segalias_resnet_backbone models, '' for a bare backbone module.",
    )
    parser.add_argument("src", help="source checkpoint (.pth/.pt/.pkl)")
    parser.add_argument("dst", help="output file: .pkl (numpy, Detectron2 style) or .pth")
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS + ("d2_coco_detector", "mmseg"),
        dest="fmt",
        help="torchvision: torchvision resnet; mmcv_v1c: mmcv ResNet-V1c (deep stem); "
        "d2_pkl: Detectron2/MSRA .pkl (Caffe2 or Detectron2 names); d2_coco_detector: a whole "
        "COCO-80 Detectron2 Mask R-CNN R50-FPN (model zoo .pkl) -> the 8 LIS classes; mmseg: a "
        "released Seg-Aliasing MMSeg UPerNet checkpoint -> the whole model (checkpoint/mmseg.py)",
    )
    parser.add_argument(
        "--config-file", default="", help="mmseg: the config the weights are for (checked)"
    )
    parser.add_argument(
        "--unsafe-load", action="store_true", help="mmseg: weights_only=False (trusted files only)"
    )
    parser.add_argument(
        "--class-layers",
        default="reinit",
        choices=("slice", "reinit"),
        help="d2_coco_detector only: 'reinit' = drop the class layers, they start new (default: "
        "the released "
        "MMDetection load_from); 'slice' = variant, pick the COCO rows of the LIS classes by true "
        "class",
    )
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default {DEFAULT_PREFIX!r})"
    )
    parser.add_argument(
        "--bayer-pattern",
        default=None,
        metavar="RGGB",
        help="adapt the stem to 4-channel packed Bayer input in this channel order",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.fmt == "mmseg":
        from .mmseg import cli_convert_mmseg  # noqa: PLC0415  (import cycle)

        if args.prefix != DEFAULT_PREFIX or args.bayer_pattern:
            parser.error(
                "--prefix/--bayer-pattern apply to backbone formats, not to mmseg (whole-model "
                "names)"
            )
        return cli_convert_mmseg(args.src, args.dst, args.config_file, args.unsafe_load)
    if args.fmt == "d2_coco_detector":
        from .detector import convert_detector_file  # here: detector.py imports this module  # noqa: PLC0415  (import cycle)

        if args.prefix != DEFAULT_PREFIX or args.bayer_pattern:
            parser.error(
                "--prefix/--bayer-pattern apply to backbone formats, not to d2_coco_detector"
            )
        sd = convert_detector_file(args.src, args.dst, class_layers=args.class_layers)
        print(
            f"Converted {len(sd)} tensors (d2_coco_detector, class layers: {args.class_layers}) -> "
            f"{args.dst}"
        )
        return 0
    sd = convert_file(
        args.src, args.dst, args.fmt, prefix=args.prefix, bayer_pattern=args.bayer_pattern
    )
    print(f"Converted {len(sd)} tensors ({args.fmt}) -> {args.dst} with prefix {args.prefix!r}")
    return 0
