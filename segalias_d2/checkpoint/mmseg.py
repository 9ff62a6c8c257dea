"""Convert a released MMSegmentation 0.25 checkpoint of Seg-Aliasing (``NyResNet`` / ResNet-V1c +
``UPerHead`` + ``FCNHead``) into a Detectron2 checkpoint of our UPerNet model
(``tools/convert_pretrained.py --format mmseg``).

Checks of ``shared/reference/upernet_recipes.md`` section 4.6:

1. ``state_dict`` unwrapped (fallback: the top level), ``module.`` stripped, ``optimizer`` ignored;
   the recipe in ``meta['config']`` is searched as text, never executed (backbone type, blur_type,
   freq_thres, channels, losses);
2. the architecture is inferred from the weights (depth, deep stem, K and head width from
   ``conv_seg``, pool scales, auxiliary head, FreqMix stages and SE reduction = C / hidden) and
   compared with the config, which must use the released FreqMix computation the weights were
   trained with (:mod:`.mmseg_config`; it also makes a config);
3. FreqMix exactly in whole stages of layer2-4; ``backbone.AdaD.*`` only as the identity
   ``blur_k=1`` baseline (all-ones ``filt``); other blur / adaptive-blur keys and older FreqMix
   variants are refused explicitly;
4. every key renamed (``stem.{0,3,6}`` -> ``stem.conv{1,2,3}``, ``layer{s}.{b}.conv{k}/bn{k}`` ->
   ``res{s+1}.{b}.conv{k}[.norm]``, ``downsample`` -> ``shortcut``, ``att.freq_weight_conv`` ->
   ``freqmix.spatial``, ``att.channel_att_{low,high}.{1,3}`` -> ``freqmix.se_{lo,hi}.fc{1,2}``;
   heads: ConvModule ``X.conv`` / ``X.bn`` -> ``X`` / ``X.norm`` under ``sem_seg_head.decoder.`` /
   ``.aux.``, PPM order kept), BN counters dropped; every unused source key and unfilled model
   tensor is reported and nothing is written unless both lists are empty.
"""

import logging
import os
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
from detectron2.modeling import build_model

from ..config import load_config
from .convert import save_d2_checkpoint
from .mmseg_layout import (  # noqa: F401  (re-exported: the converter's public names)
    MMSegArchitecture,
    MMSegConversionError,
    convert_mmseg_state_dict,
    infer_mmseg_architecture,
    rename_mmseg_key,
)

__all__ = [
    "MMSegConversionError",
    "MMSegArchitecture",
    "MMSegConversionReport",
    "read_mmseg_checkpoint",
    "unwrap_mmseg_checkpoint",
    "infer_mmseg_architecture",
    "summarize_meta_config",
    "rename_mmseg_key",
    "convert_mmseg_state_dict",
    "convert_mmseg_checkpoint",
    "convert_mmseg_file",
    "cli_convert_mmseg",
]

logger = logging.getLogger(__name__)


@dataclass
class MMSegConversionReport:
    architecture: MMSegArchitecture
    meta: Dict[str, object]
    renamed: Dict[str, str]  # source key -> model key
    dropped_counters: List[str]
    identity_blur_keys: List[str]
    unused_keys: List[str]
    unfilled_keys: List[str] = field(default_factory=list)
    shape_mismatches: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self):
        return not (self.unused_keys or self.unfilled_keys or self.shape_mismatches)

    def lines(self):
        a = self.architecture
        out = [
            f"architecture: R{a.depth}-V1c, UPerNet c{a.head_channels}, {a.num_classes} classes, "
            f"{a.num_pool_scales} pool scales, aux FCN "
            + (f"c{a.aux_channels} x{a.aux_num_convs} on {a.aux_in_feature}" if a.aux else "none")
            + (
                f", FreqMix in {a.freqmix_stages} (SE reduction {a.freqmix_reduction})"
                if a.freqmix_stages
                else ", no FreqMix"
            )
            + (", identity blur (blur_k=1 baseline)" if a.identity_blur else "")
        ]
        if self.meta:
            out.append("meta: " + ", ".join(f"{k}={v}" for k, v in self.meta.items()))
        out.append(
            f"renamed {len(self.renamed)} tensors; dropped {len(self.dropped_counters)} BN "
            "counters "
            f"(num_batches_tracked); {len(self.identity_blur_keys)} identity-blur buffers (no "
            "parameters)"
        )
        out.append(f"source keys not used ({len(self.unused_keys)}): {self.unused_keys}")
        out.append(f"model tensors not filled ({len(self.unfilled_keys)}): {self.unfilled_keys}")
        if self.shape_mismatches:
            out.append(f"shape mismatches ({len(self.shape_mismatches)}): {self.shape_mismatches}")
        return out


# ------------------------------------------------------------------------------------------ reading
def read_mmseg_checkpoint(path, unsafe_load=False):
    """``torch.load`` on CPU with ``weights_only=True``; ``unsafe_load`` (trusted files only) allows
    the full pickle that an mmcv ``meta`` with NumPy scalars may need."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_load)
    except TypeError:  # torch < 1.13: no weights_only
        return torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001  (pickle errors have many types)
        if unsafe_load:
            raise
        raise MMSegConversionError(
            f"{path}: not loadable with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); "
            f"if you trust the file, pass --unsafe-load (mmcv meta may hold NumPy scalars)"
        ) from None


def unwrap_mmseg_checkpoint(obj):
    """(state_dict without ``module.``, meta dict) of an mmcv checkpoint (``optimizer`` ignored)."""
    if not isinstance(obj, dict):
        raise MMSegConversionError(f"expected a dict checkpoint, got {type(obj).__name__}")
    sd = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    out = OrderedDict()
    for k, v in sd.items():
        if sd is obj and k in ("meta", "optimizer"):
            continue
        k = k[len("module.") :] if k.startswith("module.") else k
        if not isinstance(v, torch.Tensor):
            raise MMSegConversionError(
                f"state_dict entry {k!r} is a {type(v).__name__}, expected a tensor"
            )
        out[k] = v
    return out, meta


def summarize_meta_config(meta):
    """What ``meta`` says about the recipe (from ``meta['config']`` text, searched, not
    executed)."""
    out = OrderedDict()
    for key in ("exp_name", "mmseg_version", "iter"):
        if key in meta:
            out[key] = meta[key]
    text = meta.get("config")
    if not isinstance(text, str):
        return out
    m = re.search(r"backbone\s*=\s*dict\(\s*type\s*=\s*['\"](\w+)['\"]", text)
    if m:
        out["backbone_type"] = m.group(1)
    m = re.search(r"blur_type\s*=\s*['\"](\w+)['\"]", text)
    if m:
        out["blur_type"] = m.group(1)
    m = re.search(r"freq_thres\s*=\s*([0-9.]+(?:\s*\*\s*[0-9.]+)*)", text)
    if m:
        value = 1.0
        for factor in m.group(1).split("*"):
            value *= float(factor)
        out["freq_thres"] = round(value, 10)
    for key in ("channels", "num_classes"):
        found = re.findall(rf"\b{key}\s*=\s*(\d+)", text)
        if found:
            out[key] = sorted({int(v) for v in found})
    losses = sorted(set(re.findall(r"type\s*=\s*['\"](\w+Loss)['\"]", text)))
    if losses:
        out["loss_types"] = losses
    return out


def _model_state_shapes(cfg, build_model):
    """The model's state dict for names and shapes only: built on the meta device (no memory, no
    init), on CPU if a module cannot be."""
    meta = cfg.clone()
    meta.MODEL.DEVICE = "meta"
    try:
        with torch.device("meta"):
            return build_model(meta).state_dict()
    except Exception:  # noqa: BLE001  (a module that needs real tensors at construction)
        meta.MODEL.DEVICE = "cpu"
        return build_model(meta).state_dict()


def convert_mmseg_checkpoint(obj, cfg=None, config_name="the config"):
    """Convert a loaded MMSeg checkpoint. Returns ``(converted state dict, report, cfg)``; ``cfg``
    is the given config (checked) or one made by :func:`mmseg_model_config`. The model is built (on
    the meta device) to check that every tensor is filled with the right shape."""

    from .mmseg_config import (  # here: mmseg_config imports this module  # noqa: PLC0415  (import cycle)
        check_config,
        mmseg_model_config,
    )

    sd, meta = unwrap_mmseg_checkpoint(obj)
    meta_summary = summarize_meta_config(meta)
    arch = infer_mmseg_architecture(sd)
    if cfg is None:
        cfg = mmseg_model_config(arch, meta_summary)
    else:
        check_config(arch, cfg, meta_summary, config_name)
    converted, renamed, counters, blur, unused = convert_mmseg_state_dict(sd)
    report = MMSegConversionReport(arch, meta_summary, renamed, counters, blur, unused)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    target = _model_state_shapes(cfg, build_model)
    report.unfilled_keys = [
        k
        for k in target
        if k not in converted
        and not k.endswith(".num_batches_tracked")
        and not k.startswith(("pixel_mean", "pixel_std"))
    ]
    report.unused_keys += [renamed_from for renamed_from, k in renamed.items() if k not in target]
    report.shape_mismatches = [
        (k, tuple(v.shape), tuple(target[k].shape))
        for k, v in converted.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    return converted, report, cfg


def convert_mmseg_file(src, dst, config_file=None, opts=(), unsafe_load=False):
    """Convert ``src`` into a Detectron2 checkpoint at ``dst`` (written only when the report is
    clean)."""

    cfg = load_config(config_file, opts) if config_file else None
    converted, report, cfg = convert_mmseg_checkpoint(
        read_mmseg_checkpoint(src, unsafe_load), cfg, config_file or "the config"
    )
    for line in report.lines():
        logger.info(line)
    if not report.ok:
        raise MMSegConversionError(
            f"{src}: conversion incomplete, nothing written:\n  " + "\n  ".join(report.lines())
        )
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save_d2_checkpoint(converted, dst, prefix="", author="segalias_d2 convert_pretrained (mmseg)")
    return converted, report, cfg


def cli_convert_mmseg(src, dst, config_file="", unsafe_load=False):
    """``convert_pretrained.py --format mmseg``: print the report, return the exit code (1 on a
    conversion error)."""

    try:
        sd, report, _ = convert_mmseg_file(src, dst, config_file or None, unsafe_load=unsafe_load)
    except MMSegConversionError as e:
        print(f"convert_pretrained.py: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    print(f"Converted {len(sd)} tensors (mmseg) -> {dst}")
    return 0
