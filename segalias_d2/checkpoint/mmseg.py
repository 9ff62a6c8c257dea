"""Convert a released MMSegmentation 0.25 checkpoint of Seg-Aliasing (``NyResNet`` / ResNet-V1c + ``UPerHead`` +
``FCNHead``) into a Detectron2 checkpoint of our UPerNet model (``tools/convert_pretrained.py --format mmseg``).

Checks of ``shared/reference/upernet_recipes.md`` section 4.6:

1. ``state_dict`` unwrapped (fallback: the top level), ``module.`` stripped, ``optimizer`` ignored; the recipe in
   ``meta['config']`` is searched as text, never executed (backbone type, blur_type, freq_thres, channels, losses);
2. the architecture is inferred from the weights (depth, deep stem, K and head width from ``conv_seg``, pool scales,
   auxiliary head, FreqMix stages and SE reduction = C / hidden) and compared with the config, which must use the
   released FreqMix computation the weights were trained with (:mod:`.mmseg_config`; it also makes a config);
3. FreqMix exactly in whole stages of layer2-4; ``backbone.AdaD.*`` only as the identity ``blur_k=1`` baseline
   (all-ones ``filt``); other blur / adaptive-blur keys and older FreqMix variants are refused explicitly;
4. every key renamed (``stem.{0,3,6}`` -> ``stem.conv{1,2,3}``, ``layer{s}.{b}.conv{k}/bn{k}`` ->
   ``res{s+1}.{b}.conv{k}[.norm]``, ``downsample`` -> ``shortcut``, ``att.freq_weight_conv`` -> ``freqmix.spatial``,
   ``att.channel_att_{low,high}.{1,3}`` -> ``freqmix.se_{lo,hi}.fc{1,2}``; heads: ConvModule ``X.conv`` / ``X.bn``
   -> ``X`` / ``X.norm`` under ``sem_seg_head.decoder.`` / ``.aux.``, PPM order kept), BN counters dropped; every
   unused source key and unfilled model tensor is reported and nothing is written unless both lists are empty.
"""
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

__all__ = ["MMSegConversionError", "MMSegArchitecture", "MMSegConversionReport", "read_mmseg_checkpoint",
           "unwrap_mmseg_checkpoint", "infer_mmseg_architecture", "summarize_meta_config", "rename_mmseg_key",
           "convert_mmseg_state_dict", "convert_mmseg_checkpoint", "convert_mmseg_file", "cli_convert_mmseg"]

logger = logging.getLogger(__name__)

_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var")
_STEM_CONV = {"0": "conv1", "3": "conv2", "6": "conv3"}
_STEM_BN = {"1": "conv1", "4": "conv2", "7": "conv3"}
_SE = {"channel_att_low": "se_lo", "channel_att_high": "se_hi"}
_LEVEL_OF_CHANNELS = {256: "res2", 512: "res3", 1024: "res4", 2048: "res5"}


class MMSegConversionError(ValueError):
    """The checkpoint is not a convertible Seg-Aliasing MMSeg checkpoint, or does not match the config."""


@dataclass
class MMSegArchitecture:
    depth: int
    num_classes: int
    head_channels: int
    num_pool_scales: int
    aux: bool
    aux_channels: int = 0
    aux_num_convs: int = 0
    aux_in_feature: str = ""
    freqmix_stages: List[str] = field(default_factory=list)
    freqmix_reduction: Optional[int] = None
    identity_blur: bool = False  # backbone.AdaD.{1,2,3}.filt of blur_k=1 (the README baseline)


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
        out = [f"architecture: R{a.depth}-V1c, UPerNet c{a.head_channels}, {a.num_classes} classes, "
               f"{a.num_pool_scales} pool scales, aux FCN " + (f"c{a.aux_channels} x{a.aux_num_convs} on "
                                                               f"{a.aux_in_feature}" if a.aux else "none")
               + (f", FreqMix in {a.freqmix_stages} (SE reduction {a.freqmix_reduction})" if a.freqmix_stages
                  else ", no FreqMix") + (", identity blur (blur_k=1 baseline)" if a.identity_blur else "")]
        if self.meta:
            out.append("meta: " + ", ".join(f"{k}={v}" for k, v in self.meta.items()))
        out.append(f"renamed {len(self.renamed)} tensors; dropped {len(self.dropped_counters)} BN counters "
                   f"(num_batches_tracked); {len(self.identity_blur_keys)} identity-blur buffers (no parameters)")
        out.append(f"source keys not used ({len(self.unused_keys)}): {self.unused_keys}")
        out.append(f"model tensors not filled ({len(self.unfilled_keys)}): {self.unfilled_keys}")
        if self.shape_mismatches:
            out.append(f"shape mismatches ({len(self.shape_mismatches)}): {self.shape_mismatches}")
        return out


# ----------------------------------------------------------------------------------------------------- reading
def read_mmseg_checkpoint(path, unsafe_load=False):
    """``torch.load`` on CPU with ``weights_only=True``; ``unsafe_load`` (trusted files only) allows the full pickle
    that an mmcv ``meta`` with NumPy scalars may need."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_load)
    except TypeError:  # torch < 1.13: no weights_only
        return torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001  (pickle errors have many types)
        if unsafe_load:
            raise
        raise MMSegConversionError(
            f"{path}: not loadable with torch.load(weights_only=True) ({type(e).__name__}: {str(e).splitlines()[0]}); "
            f"if you trust the file, pass --unsafe-load (mmcv meta may hold NumPy scalars)") from None


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
        k = k[len("module."):] if k.startswith("module.") else k
        if not isinstance(v, torch.Tensor):
            raise MMSegConversionError(f"state_dict entry {k!r} is a {type(v).__name__}, expected a tensor")
        out[k] = v
    return out, meta


def summarize_meta_config(meta):
    """What ``meta`` says about the recipe (from ``meta['config']`` text, searched, not executed)."""
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


# ------------------------------------------------------------------------------------------------ architecture
def _shape(sd, key):
    if key not in sd:
        raise MMSegConversionError(f"key {key!r} missing: not an MMSeg UPerHead + FCNHead checkpoint of a ResNet-V1c")
    return tuple(sd[key].shape)


def infer_mmseg_architecture(sd):
    """Architecture of an unwrapped state dict; refuses structures this model cannot hold."""
    for k in sd:
        if not k.startswith(("backbone.", "decode_head.", "auxiliary_head.")):
            raise MMSegConversionError(f"unexpected key {k!r}: an MMSeg EncoderDecoder has only backbone./decode_head./"
                                       f"auxiliary_head. keys")
        if re.match(r"backbone\.fm\d", k) or ".att.channel_att." in k:
            raise MMSegConversionError(f"key {k!r} belongs to an older FreqMix variant (ResNetFreqMix / FrequencyMix "
                                       f"at 3058960), not the released NyResNet; not convertible")
        if k.startswith("auxiliary_head.conv_cat."):
            raise MMSegConversionError(f"key {k!r}: FCNHead with concat_input=True is not supported")
    if _shape(sd, "backbone.stem.0.weight")[:2] != (32, 3) or _shape(sd, "backbone.stem.6.weight")[0] != 64:
        raise MMSegConversionError("backbone.stem.*: expected the ResNet-V1c deep stem 3->32->32->64")
    blocks = []
    for s in range(1, 5):
        n = len({m.group(1) for k in sd for m in [re.match(rf"backbone\.layer{s}\.(\d+)\.conv1\.weight$", k)] if m})
        blocks.append(n)
    if tuple(blocks) not in _DEPTHS:
        raise MMSegConversionError(f"blocks per layer {blocks}: not a ResNet-50/101/152")
    att_blocks = {}
    for k in sd:
        m = re.match(r"backbone\.layer(\d)\.(\d+)\.att\.", k)
        if m:
            att_blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if 1 in att_blocks:
        raise MMSegConversionError("FreqMix ('att') keys in layer1: the released NyResNet has none there")
    for s, bs in att_blocks.items():
        if bs != set(range(blocks[s - 1])):
            raise MMSegConversionError(f"FreqMix in blocks {sorted(bs)} of layer{s} only; expected every block")
    reductions = set()
    for s, bs in att_blocks.items():
        for b in bs:
            for band in _SE:
                hidden, channels = _shape(sd, f"backbone.layer{s}.{b}.att.{band}.1.weight")[:2]
                if channels % hidden:
                    raise MMSegConversionError(f"backbone.layer{s}.{b}.att.{band}.1.weight: {channels} channels are not"
                                               f" a multiple of the SE width {hidden}")
                reductions.add(channels // hidden)
    if len(reductions) > 1:
        raise MMSegConversionError(f"FreqMix SE reductions differ between modules: {sorted(reductions)}")
    adad = [k for k in sd if k.startswith("backbone.AdaD.")]
    identity_blur = False
    if adad:
        if any(not re.match(r"backbone\.AdaD\.[123]\.filt$", k) for k in adad):
            raise MMSegConversionError(f"keys {adad[:4]}: adaptive-blur (adablur) baselines are not convertible")
        for k in adad:
            t = sd[k]
            if t.dim() != 4 or tuple(t.shape[1:]) != (1, 1, 1) or not torch.all(t == 1):
                raise MMSegConversionError(f"{k} {tuple(t.shape)}: a BlurPool with kernel > 1 (blur_k > 1) is not "
                                           f"convertible; only the identity blur_k=1 baseline is")
        identity_blur = True
    k_dec, c = _shape(sd, "decode_head.conv_seg.weight")[:2]
    pools = len({m.group(1) for k in sd for m in [re.match(r"decode_head\.psp_modules\.(\d+)\.", k)] if m})
    arch = MMSegArchitecture(depth=_DEPTHS[tuple(blocks)], num_classes=k_dec, head_channels=c, num_pool_scales=pools,
                             aux="auxiliary_head.conv_seg.weight" in sd,
                             freqmix_stages=[f"res{s + 1}" for s in sorted(att_blocks)],
                             freqmix_reduction=reductions.pop() if reductions else None, identity_blur=identity_blur)
    if arch.aux:
        k_aux, arch.aux_channels = _shape(sd, "auxiliary_head.conv_seg.weight")[:2]
        if k_aux != k_dec:
            raise MMSegConversionError(f"auxiliary_head.conv_seg has {k_aux} classes, decode_head.conv_seg {k_dec}")
        arch.aux_num_convs = len({m.group(1) for k in sd
                                  for m in [re.match(r"auxiliary_head\.convs\.(\d+)\.", k)] if m})
        in_ch = _shape(sd, "auxiliary_head.convs.0.conv.weight")[1]
        if in_ch not in _LEVEL_OF_CHANNELS:
            raise MMSegConversionError(f"auxiliary_head.convs.0 takes {in_ch} channels; not a ResNet stage output")
        arch.aux_in_feature = _LEVEL_OF_CHANNELS[in_ch]
    return arch


# ------------------------------------------------------------------------------------------------------ renaming
def _conv_module(rest):
    """ConvModule ``X.conv.weight`` -> ``X.weight``, ``X.bn.<leaf>`` -> ``X.norm.<leaf>`` (None if not one)."""
    m = re.match(r"^(.+)\.conv\.weight$", rest)
    if m:
        return f"{m.group(1)}.weight"
    m = re.match(r"^(.+)\.bn\.(\w+)$", rest)
    if m and m.group(2) in _BN_LEAVES:
        return f"{m.group(1)}.norm.{m.group(2)}"
    return None


def _rename_backbone(rest):
    m = re.match(r"^stem\.(\d)\.(\w+)$", rest)
    if m:
        if m.group(1) in _STEM_CONV and m.group(2) == "weight":
            return f"stem.{_STEM_CONV[m.group(1)]}.weight"
        if m.group(1) in _STEM_BN and m.group(2) in _BN_LEAVES:
            return f"stem.{_STEM_BN[m.group(1)]}.norm.{m.group(2)}"
        return None
    m = re.match(r"^layer(\d)\.(\d+)\.(.+)$", rest)
    if not m:
        return None
    base, tail = f"res{int(m.group(1)) + 1}.{m.group(2)}.", m.group(3)
    for pattern, fmt in ((r"^conv(\d)\.weight$", "conv{0}.weight"), (r"^bn(\d)\.(\w+)$", "conv{0}.norm.{1}"),
                         (r"^downsample\.0\.weight$", "shortcut.weight"),
                         (r"^downsample\.1\.(\w+)$", "shortcut.norm.{0}"),
                         (r"^att\.freq_weight_conv\.(weight|bias)$", "freqmix.spatial.{0}")):
        mm = re.match(pattern, tail)
        if mm:
            if "norm" in fmt and mm.groups()[-1] not in _BN_LEAVES:
                return None
            return base + fmt.format(*mm.groups())
    mm = re.match(r"^att\.(channel_att_low|channel_att_high)\.([13])\.(weight|bias)$", tail)
    if mm:
        return base + f"freqmix.{_SE[mm.group(1)]}.fc{1 if mm.group(2) == '1' else 2}.{mm.group(3)}"
    return None


def _rename_decode(rest):
    if rest in ("conv_seg.weight", "conv_seg.bias"):
        return "predictor." + rest.split(".")[1]
    m = re.match(r"^psp_modules\.(\d+)\.1\.(.+)$", rest)
    if m:
        out = _conv_module("x." + m.group(2))
        return None if out is None else f"ppm.convs.{m.group(1)}" + out[1:]
    m = re.match(r"^bottleneck\.(.+)$", rest)
    if m:
        out = _conv_module("x." + m.group(1))
        return None if out is None else "ppm_bottleneck" + out[1:]
    if re.match(r"^(lateral_convs\.\d+|fpn_convs\.\d+|fpn_bottleneck)\.", rest):
        return _conv_module(rest)
    return None


def _rename_aux(rest):
    if rest in ("conv_seg.weight", "conv_seg.bias"):
        return "predictor." + rest.split(".")[1]
    if re.match(r"^convs\.\d+\.", rest):
        return _conv_module(rest)
    return None


def rename_mmseg_key(key):
    """Model key for an MMSeg key, or None if it has none (BN counters included)."""
    if key.endswith(".num_batches_tracked"):
        return None
    for prefix, fn, target in (("backbone.", _rename_backbone, "backbone."),
                               ("decode_head.", _rename_decode, "sem_seg_head.decoder."),
                               ("auxiliary_head.", _rename_aux, "sem_seg_head.aux.")):
        if key.startswith(prefix):
            out = fn(key[len(prefix):])
            return None if out is None else target + out
    return None


def convert_mmseg_state_dict(sd):
    """(converted OrderedDict of model keys, renamed map, dropped BN counters, identity-blur keys, unused keys)."""
    converted, renamed, counters, blur, unused = OrderedDict(), OrderedDict(), [], [], []
    for k, v in sd.items():
        if k.endswith(".num_batches_tracked"):
            counters.append(k)
            continue
        if re.match(r"backbone\.AdaD\.[123]\.filt$", k):
            blur.append(k)  # identity (checked by infer_mmseg_architecture): nothing to load
            continue
        new = rename_mmseg_key(k)
        if new is None:
            unused.append(k)
            continue
        if new in converted:
            raise MMSegConversionError(f"{renamed[new]!r} and {k!r} both convert to {new!r}")
        converted[new] = v.detach().cpu()
        renamed[k] = new
    return converted, renamed, counters, blur, unused


def _model_state_shapes(cfg, build_model):
    """The model's state dict for names and shapes only: built on the meta device (no memory, no init), on CPU
    if a module cannot be."""
    meta = cfg.clone()
    meta.MODEL.DEVICE = "meta"
    try:
        with torch.device("meta"):
            return build_model(meta).state_dict()
    except Exception:  # noqa: BLE001  (a module that needs real tensors at construction)
        meta.MODEL.DEVICE = "cpu"
        return build_model(meta).state_dict()


def convert_mmseg_checkpoint(obj, cfg=None, config_name="the config"):
    """Convert a loaded MMSeg checkpoint. Returns ``(converted state dict, report, cfg)``; ``cfg`` is the given
    config (checked) or one made by :func:`mmseg_model_config`. The model is built (on the meta device) to check
    that every tensor is filled with the right shape."""
    from detectron2.modeling import build_model

    from .mmseg_config import check_config, mmseg_model_config  # here: mmseg_config imports this module

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
    report.unfilled_keys = [k for k in target if k not in converted and not k.endswith(".num_batches_tracked")
                            and not k.startswith(("pixel_mean", "pixel_std"))]
    report.unused_keys += [renamed_from for renamed_from, k in renamed.items() if k not in target]
    report.shape_mismatches = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in converted.items()
                               if k in target and tuple(v.shape) != tuple(target[k].shape)]
    return converted, report, cfg


def convert_mmseg_file(src, dst, config_file=None, opts=(), unsafe_load=False):
    """Convert ``src`` into a Detectron2 checkpoint at ``dst`` (written only when the report is clean)."""
    import os

    from ..config import load_config
    from .convert import save_d2_checkpoint

    cfg = load_config(config_file, opts) if config_file else None
    converted, report, cfg = convert_mmseg_checkpoint(read_mmseg_checkpoint(src, unsafe_load), cfg,
                                                      config_file or "the config")
    for line in report.lines():
        logger.info(line)
    if not report.ok:
        raise MMSegConversionError(f"{src}: conversion incomplete, nothing written:\n  " + "\n  ".join(report.lines()))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save_d2_checkpoint(converted, dst, prefix="", author="segalias_d2 convert_pretrained (mmseg)")
    return converted, report, cfg


def cli_convert_mmseg(src, dst, config_file="", unsafe_load=False):
    """``convert_pretrained.py --format mmseg``: print the report, return the exit code (1 on a conversion error)."""
    import sys

    try:
        sd, report, _ = convert_mmseg_file(src, dst, config_file or None, unsafe_load=unsafe_load)
    except MMSegConversionError as e:
        print(f"convert_pretrained.py: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    print(f"Converted {len(sd)} tensors (mmseg) -> {dst}")
    return 0
