"""The layout of a released Seg-Aliasing MMSeg 0.25 checkpoint: the architecture read from its
weights and the renaming of its keys to our UPerNet model (checks 2-4 of :mod:`.mmseg`)."""

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional

import torch

__all__ = [
    "MMSegConversionError",
    "MMSegArchitecture",
    "infer_mmseg_architecture",
    "rename_mmseg_key",
    "convert_mmseg_state_dict",
]

_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var")
_STEM_CONV = {"0": "conv1", "3": "conv2", "6": "conv3"}
_STEM_BN = {"1": "conv1", "4": "conv2", "7": "conv3"}
_SE = {"channel_att_low": "se_lo", "channel_att_high": "se_hi"}
_LEVEL_OF_CHANNELS = {256: "res2", 512: "res3", 1024: "res4", 2048: "res5"}


class MMSegConversionError(ValueError):
    """The checkpoint is not a convertible Seg-Aliasing MMSeg checkpoint, or does not match the
    config."""


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


# ------------------------------------------------------------------------------------- architecture
def _shape(sd, key):
    if key not in sd:
        raise MMSegConversionError(
            f"key {key!r} missing: not an MMSeg UPerHead + FCNHead checkpoint of a ResNet-V1c"
        )
    return tuple(sd[key].shape)


def infer_mmseg_architecture(sd):
    """Architecture of an unwrapped state dict; refuses structures this model cannot hold."""
    for k in sd:
        if not k.startswith(("backbone.", "decode_head.", "auxiliary_head.")):
            raise MMSegConversionError(
                f"unexpected key {k!r}: an MMSeg EncoderDecoder has only backbone./decode_head./"
                f"auxiliary_head. keys"
            )
        if re.match(r"backbone\.fm\d", k) or ".att.channel_att." in k:
            raise MMSegConversionError(
                f"key {k!r} belongs to an older FreqMix variant (ResNetFreqMix / FrequencyMix "
                f"at 3058960), not the released NyResNet; not convertible"
            )
        if k.startswith("auxiliary_head.conv_cat."):
            raise MMSegConversionError(
                f"key {k!r}: FCNHead with concat_input=True is not supported"
            )
    if (
        _shape(sd, "backbone.stem.0.weight")[:2] != (32, 3)
        or _shape(sd, "backbone.stem.6.weight")[0] != 64
    ):
        raise MMSegConversionError(
            "backbone.stem.*: expected the ResNet-V1c deep stem 3->32->32->64"
        )
    blocks = []
    for s in range(1, 5):
        n = len(
            {
                m.group(1)
                for k in sd
                for m in [re.match(rf"backbone\.layer{s}\.(\d+)\.conv1\.weight$", k)]
                if m
            }
        )
        blocks.append(n)
    if tuple(blocks) not in _DEPTHS:
        raise MMSegConversionError(f"blocks per layer {blocks}: not a ResNet-50/101/152")
    att_blocks = {}
    for k in sd:
        m = re.match(r"backbone\.layer(\d)\.(\d+)\.att\.", k)
        if m:
            att_blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if 1 in att_blocks:
        raise MMSegConversionError(
            "FreqMix ('att') keys in layer1: the released NyResNet has none there"
        )
    for s, bs in att_blocks.items():
        if bs != set(range(blocks[s - 1])):
            raise MMSegConversionError(
                f"FreqMix in blocks {sorted(bs)} of layer{s} only; expected every block"
            )
    reductions = set()
    for s, bs in att_blocks.items():
        for b in bs:
            for band in _SE:
                hidden, channels = _shape(sd, f"backbone.layer{s}.{b}.att.{band}.1.weight")[:2]
                if channels % hidden:
                    raise MMSegConversionError(
                        f"backbone.layer{s}.{b}.att.{band}.1.weight: {channels} channels are not"
                        f" a multiple of the SE width {hidden}"
                    )
                reductions.add(channels // hidden)
    if len(reductions) > 1:
        raise MMSegConversionError(
            f"FreqMix SE reductions differ between modules: {sorted(reductions)}"
        )
    adad = [k for k in sd if k.startswith("backbone.AdaD.")]
    identity_blur = False
    if adad:
        if any(not re.match(r"backbone\.AdaD\.[123]\.filt$", k) for k in adad):
            raise MMSegConversionError(
                f"keys {adad[:4]}: adaptive-blur (adablur) baselines are not convertible"
            )
        for k in adad:
            t = sd[k]
            if t.dim() != 4 or tuple(t.shape[1:]) != (1, 1, 1) or not torch.all(t == 1):
                raise MMSegConversionError(
                    f"{k} {tuple(t.shape)}: a BlurPool with kernel > 1 (blur_k > 1) is not "
                    f"convertible; only the identity blur_k=1 baseline is"
                )
        identity_blur = True
    k_dec, c = _shape(sd, "decode_head.conv_seg.weight")[:2]
    pools = len(
        {m.group(1) for k in sd for m in [re.match(r"decode_head\.psp_modules\.(\d+)\.", k)] if m}
    )
    arch = MMSegArchitecture(
        depth=_DEPTHS[tuple(blocks)],
        num_classes=k_dec,
        head_channels=c,
        num_pool_scales=pools,
        aux="auxiliary_head.conv_seg.weight" in sd,
        freqmix_stages=[f"res{s + 1}" for s in sorted(att_blocks)],
        freqmix_reduction=reductions.pop() if reductions else None,
        identity_blur=identity_blur,
    )
    if arch.aux:
        k_aux, arch.aux_channels = _shape(sd, "auxiliary_head.conv_seg.weight")[:2]
        if k_aux != k_dec:
            raise MMSegConversionError(
                f"auxiliary_head.conv_seg has {k_aux} classes, decode_head.conv_seg {k_dec}"
            )
        arch.aux_num_convs = len(
            {m.group(1) for k in sd for m in [re.match(r"auxiliary_head\.convs\.(\d+)\.", k)] if m}
        )
        in_ch = _shape(sd, "auxiliary_head.convs.0.conv.weight")[1]
        if in_ch not in _LEVEL_OF_CHANNELS:
            raise MMSegConversionError(
                f"auxiliary_head.convs.0 takes {in_ch} channels; not a ResNet stage output"
            )
        arch.aux_in_feature = _LEVEL_OF_CHANNELS[in_ch]
    return arch


# ----------------------------------------------------------------------------------------- renaming
def _conv_module(rest):
    """ConvModule ``X.conv.weight`` -> ``X.weight``, ``X.bn.<leaf>`` -> ``X.norm.<leaf>`` (None if
    not one)."""
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
    for pattern, fmt in (
        (r"^conv(\d)\.weight$", "conv{0}.weight"),
        (r"^bn(\d)\.(\w+)$", "conv{0}.norm.{1}"),
        (r"^downsample\.0\.weight$", "shortcut.weight"),
        (r"^downsample\.1\.(\w+)$", "shortcut.norm.{0}"),
        (r"^att\.freq_weight_conv\.(weight|bias)$", "freqmix.spatial.{0}"),
    ):
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
    for prefix, fn, target in (
        ("backbone.", _rename_backbone, "backbone."),
        ("decode_head.", _rename_decode, "sem_seg_head.decoder."),
        ("auxiliary_head.", _rename_aux, "sem_seg_head.aux."),
    ):
        if key.startswith(prefix):
            out = fn(key[len(prefix) :])
            return None if out is None else target + out
    return None


def convert_mmseg_state_dict(sd):
    """(converted OrderedDict of model keys, renamed map, dropped BN counters, identity-blur keys,
    unused keys)."""
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
