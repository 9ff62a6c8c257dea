"""Direct transcription of the released Seg-Aliasing forward pass on MMSeg-named weights (test code,
independent of the package's modules), and a synthetic checkpoint with the released key layout.

Written from ../shared/reference/upernet_recipes.md (sections 1.2, 1.3, 4.2-4.4) and
seg_aliasing_method.md (sections 1-3): MMSeg 0.25 ``EncoderDecoder`` = ``NyResNet`` (ResNet-50-V1c:
deep stem 3->32->32->64 + max-pool, pytorch-style bottlenecks with the stride on conv2, DAF = FFT
box low-pass on the inputs of layer2-4, FreqMix ``att`` after conv2 and before bn2 in every block of
layer2-4) -> ``UPerHead`` (PPM on C5, FPN fusion) and ``FCNHead`` on C4. Only plain torch ops on the
``state_dict`` tensors (``F.conv2d``, ``F.batch_norm`` in eval mode, ...). The released FreqMix /
DAF computations are the transcriptions in ``reference_fourier.py`` (fed with the MMSeg ``att``
tensors).
"""

from collections import OrderedDict
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from reference_fourier import reference_daf, reference_freqmix_released

__all__ = [
    "released_key_shapes",
    "synthetic_mmseg_state_dict",
    "reference_backbone",
    "reference_uper_head",
    "reference_fcn_head",
    "reference_encode_decode",
]

_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn_shapes(prefix, c):
    return [(f"{prefix}.{k}", () if k == "num_batches_tracked" else (c,)) for k in _BN_KEYS]


def released_key_shapes(
    num_classes=19, channels=128, reduction=16, freqmix=True, depth=50, aux_channels=256
):
    """Key -> shape of an MMSeg state_dict of NyResNet (or ResNetV1c without ``freqmix``) + UPerHead
    + FCNHead."""
    out = [("backbone.stem.0.weight", (32, 3, 3, 3))] + _bn_shapes("backbone.stem.1", 32)
    out += [("backbone.stem.3.weight", (32, 32, 3, 3))] + _bn_shapes("backbone.stem.4", 32)
    out += [("backbone.stem.6.weight", (64, 32, 3, 3))] + _bn_shapes("backbone.stem.7", 64)
    inplanes = 64
    for s, n in enumerate(_BLOCKS[depth], start=1):
        p = 64 * 2 ** (s - 1)
        for b in range(n):
            cin = inplanes if b == 0 else 4 * p
            pre = f"backbone.layer{s}.{b}"
            out += [(f"{pre}.conv1.weight", (p, cin, 1, 1))] + _bn_shapes(f"{pre}.bn1", p)
            out += [(f"{pre}.conv2.weight", (p, p, 3, 3))] + _bn_shapes(f"{pre}.bn2", p)
            out += [(f"{pre}.conv3.weight", (4 * p, p, 1, 1))] + _bn_shapes(f"{pre}.bn3", 4 * p)
            if b == 0:
                out += [(f"{pre}.downsample.0.weight", (4 * p, cin, 1, 1))] + _bn_shapes(
                    f"{pre}.downsample.1", 4 * p
                )
            if freqmix and s > 1:
                h = p // reduction
                out += [
                    (f"{pre}.att.freq_weight_conv.weight", (2, p, 3, 3)),
                    (f"{pre}.att.freq_weight_conv.bias", (2,)),
                ]
                for band in ("channel_att_low", "channel_att_high"):
                    out += [
                        (f"{pre}.att.{band}.1.weight", (h, p, 1, 1)),
                        (f"{pre}.att.{band}.1.bias", (h,)),
                        (f"{pre}.att.{band}.3.weight", (p, h, 1, 1)),
                        (f"{pre}.att.{band}.3.bias", (p,)),
                    ]
        inplanes = 4 * p
    c, k = channels, num_classes

    def conv_module(name, shape):
        return [(f"{name}.conv.weight", shape)] + _bn_shapes(f"{name}.bn", shape[0])

    out += [("decode_head.conv_seg.weight", (k, c, 1, 1)), ("decode_head.conv_seg.bias", (k,))]
    for i in range(4):
        out += conv_module(f"decode_head.psp_modules.{i}.1", (c, 2048, 1, 1))
    out += conv_module("decode_head.bottleneck", (c, 2048 + 4 * c, 3, 3))
    for i, cin in enumerate((256, 512, 1024)):
        out += conv_module(f"decode_head.lateral_convs.{i}", (c, cin, 1, 1))
    for i in range(3):
        out += conv_module(f"decode_head.fpn_convs.{i}", (c, c, 3, 3))
    out += conv_module("decode_head.fpn_bottleneck", (c, 4 * c, 3, 3))
    out += conv_module("auxiliary_head.convs.0", (aux_channels, 1024, 3, 3))
    out += [
        ("auxiliary_head.conv_seg.weight", (k, aux_channels, 1, 1)),
        ("auxiliary_head.conv_seg.bias", (k,)),
    ]
    return OrderedDict(out)


def synthetic_mmseg_state_dict(seed=0, dtype=torch.float64, **kwargs):
    """Random tensors in the released layout: convs He-scaled, BN statistics and affines around
    identity."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for key, shape in released_key_shapes(**kwargs).items():
        leaf = key.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            sd[key] = torch.tensor(80000, dtype=torch.int64)
        elif leaf == "running_var":
            sd[key] = torch.rand(shape, generator=g, dtype=dtype) * 1.5 + 0.5
        elif leaf == "running_mean" or leaf == "bias":
            sd[key] = torch.randn(shape, generator=g, dtype=dtype) * 0.1
        elif len(shape) == 1:  # BN weight
            sd[key] = torch.rand(shape, generator=g, dtype=dtype) + 0.5
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = torch.randn(shape, generator=g, dtype=dtype) * (2.0 / fan_in) ** 0.5
    return sd


# ------------------------------------------------------------------------------------------ forward
def _bn(x, sd, p):
    return F.batch_norm(
        x,
        sd[p + ".running_mean"],
        sd[p + ".running_var"],
        sd[p + ".weight"],
        sd[p + ".bias"],
        training=False,
        momentum=0.0,
        eps=1e-5,
    )


def _conv_module(x, sd, name, padding=0):
    """MMSeg ConvModule: conv (no bias) -> BN -> ReLU."""
    return F.relu(_bn(F.conv2d(x, sd[name + ".conv.weight"], padding=padding), sd, name + ".bn"))


def _att(sd, pre, cutoff):
    ns = SimpleNamespace
    lin = lambda band, i: ns(  # noqa: E731  (kept as transcribed)
        weight=sd[f"{pre}.att.{band}.{i}.weight"], bias=sd[f"{pre}.att.{band}.{i}.bias"]
    )  # noqa
    return ns(
        spatial=ns(
            weight=sd[f"{pre}.att.freq_weight_conv.weight"],
            bias=sd[f"{pre}.att.freq_weight_conv.bias"],
        ),
        se_lo=ns(fc1=lin("channel_att_low", 1), fc2=lin("channel_att_low", 3)),
        se_hi=ns(fc1=lin("channel_att_high", 1), fc2=lin("channel_att_high", 3)),
        cutoff=cutoff,
    )


def reference_backbone(x, sd, daf_cutoff=0.35, freqmix_cutoff=0.35):
    """[C2, C3, C4, C5] of NyResNet (``daf_cutoff`` None = no DAF; FreqMix wherever ``att`` keys
    exist)."""
    x = F.relu(
        _bn(F.conv2d(x, sd["backbone.stem.0.weight"], stride=2, padding=1), sd, "backbone.stem.1")
    )
    x = F.relu(_bn(F.conv2d(x, sd["backbone.stem.3.weight"], padding=1), sd, "backbone.stem.4"))
    x = F.relu(_bn(F.conv2d(x, sd["backbone.stem.6.weight"], padding=1), sd, "backbone.stem.7"))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    for s in range(1, 5):
        if s > 1 and daf_cutoff is not None:
            x = reference_daf(
                x, daf_cutoff
            )  # AdaD[s-1]: on the stage input only; the stage output stays raw
        b = 0
        while f"backbone.layer{s}.{b}.conv1.weight" in sd:
            pre = f"backbone.layer{s}.{b}"
            stride = 2 if (b == 0 and s > 1) else 1
            out = F.relu(_bn(F.conv2d(x, sd[pre + ".conv1.weight"]), sd, pre + ".bn1"))
            out = F.conv2d(out, sd[pre + ".conv2.weight"], stride=stride, padding=1)
            if pre + ".att.freq_weight_conv.weight" in sd:  # after conv2, before bn2
                out = reference_freqmix_released(out, _att(sd, pre, freqmix_cutoff))
            out = F.relu(_bn(out, sd, pre + ".bn2"))
            out = _bn(F.conv2d(out, sd[pre + ".conv3.weight"]), sd, pre + ".bn3")
            identity = x
            if pre + ".downsample.0.weight" in sd:
                identity = _bn(
                    F.conv2d(x, sd[pre + ".downsample.0.weight"], stride=stride),
                    sd,
                    pre + ".downsample.1",
                )
            x = F.relu(out + identity)
            b += 1
        outs.append(x)
    return outs


def _resize(x, size, align_corners=False):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def reference_uper_head(feats, sd, pool_scales=(1, 2, 3, 6), align_corners=False):
    """UPerHead logits (stride 4), eval mode (dropout is the identity)."""
    c5 = feats[3]
    psp = [c5] + [
        _resize(
            _conv_module(F.adaptive_avg_pool2d(c5, s), sd, f"decode_head.psp_modules.{i}.1"),
            c5.shape[2:],
            align_corners,
        )
        for i, s in enumerate(pool_scales)
    ]
    laterals = [_conv_module(feats[i], sd, f"decode_head.lateral_convs.{i}") for i in range(3)]
    laterals.append(_conv_module(torch.cat(psp, 1), sd, "decode_head.bottleneck", padding=1))
    for i in range(3, 0, -1):
        laterals[i - 1] = laterals[i - 1] + _resize(
            laterals[i], laterals[i - 1].shape[2:], align_corners
        )
    outs = [
        _conv_module(laterals[i], sd, f"decode_head.fpn_convs.{i}", padding=1) for i in range(3)
    ] + [laterals[3]]
    outs = [outs[0]] + [_resize(o, outs[0].shape[2:], align_corners) for o in outs[1:]]
    fused = _conv_module(torch.cat(outs, 1), sd, "decode_head.fpn_bottleneck", padding=1)
    return F.conv2d(fused, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])


def reference_fcn_head(c4, sd):
    """FCNHead (one 3x3 ConvModule, no concat) logits at C4's stride, eval mode."""
    x = _conv_module(c4, sd, "auxiliary_head.convs.0", padding=1)
    return F.conv2d(x, sd["auxiliary_head.conv_seg.weight"], sd["auxiliary_head.conv_seg.bias"])


def reference_encode_decode(img, sd, daf_cutoff=0.35, align_corners=False):
    """EncoderDecoder.encode_decode: backbone -> UPerHead -> logits resized to the input size."""
    logits = reference_uper_head(
        reference_backbone(img, sd, daf_cutoff), sd, align_corners=align_corners
    )
    return _resize(logits, img.shape[2:], align_corners)
