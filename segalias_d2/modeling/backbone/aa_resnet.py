"""Anti-aliased ResNet and ResNet-FPN backbones (Seg-Aliasing, ICLR 2024) for Detectron2.

Registered in ``BACKBONE_REGISTRY``:

* ``build_segalias_resnet_backbone``     -> :class:`AAResNet` (res2..res5, Detectron2 names/strides)
* ``build_segalias_resnet_fpn_backbone`` -> Detectron2 ``FPN`` on top of it, with ``LastLevelMaxPool``

What differs from Detectron2's ResNet:

* DAF (or the BlurPool baseline) filters the *input* of the configured stages (paper: res3, res4, res5), i.e.
  the copy that flows into the next stage; the features returned to FPN/heads are the unfiltered stage outputs.
* :class:`AABottleneckBlock` puts FreqMix after conv2 and before conv2's norm (paper: every bottleneck of
  res3-res5). State-dict keys are those of Detectron2's ``BottleneckBlock`` plus ``*.freqmix.*``, so stock
  Detectron2/MSRA/torchvision conversions load unchanged.
* Optional ResNet-V1c "deep" stem (3x3 convs 32/32/64 + max-pool), as in the paper's ResNet-50-V1c.
"""
import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from torch import nn

from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, BasicStem, BottleneckBlock, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ..fourier_filters import BlurPool, DeAliasingFilter, FreqMix, check_freqmix_gate
from .norm import check_head_norms, resolve_norm

__all__ = [
    "AABottleneckBlock",
    "DeepStem",
    "AAResNet",
    "build_segalias_resnet_backbone",
    "build_segalias_resnet_fpn_backbone",
]

STAGE_NAMES = ("res2", "res3", "res4", "res5")
STEM_TYPES = ("basic", "deep")
_BLOCKS_PER_DEPTH = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class _ConvNormAfter(Conv2d):
    """Detectron2 ``Conv2d`` whose forward is the convolution only: the block applies ``.norm`` itself, after
    FreqMix. Keeping the norm as the ``conv2.norm`` attribute keeps Detectron2's state-dict keys."""

    def forward(self, x):
        return nn.Conv2d.forward(self, x)


class AABottleneckBlock(BottleneckBlock):
    """Detectron2's ``BottleneckBlock`` with optional FreqMix between conv2 and conv2's norm.

    conv1 -> norm -> ReLU -> conv2 -> [FreqMix] -> norm -> ReLU -> conv3 -> norm -> (+ shortcut) -> ReLU.
    Detectron2 builds and initialises every layer; the block adds ``self.freqmix`` (PyTorch's default init,
    paper: "allno0init"; the name puts ".freqmix." in its parameter names for the LR multiplier), so
    state-dict keys are those of ``BottleneckBlock`` plus ``freqmix.*``. With ``freqmix=False`` it is
    Detectron2's block unchanged.
    """

    def __init__(self, in_channels, out_channels, *, freqmix=False, freqmix_cutoff=0.35, freqmix_reduction=16,
                 freqmix_gate="released", **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        self.freqmix = None
        if freqmix:
            # conv2 stays the module Detectron2 built and initialised (weights, norm, RNG draws); re-classing it
            # changes only its forward, so its norm can run after FreqMix
            self.conv2.__class__ = _ConvNormAfter
            self.freqmix = FreqMix(self.conv2.out_channels, freqmix_cutoff, freqmix_reduction, freqmix_gate)

    def forward(self, x):
        if self.freqmix is None:
            return super().forward(x)
        out = F.relu_(self.conv1(x))
        out = self.freqmix(self.conv2(out))
        if self.conv2.norm is not None:
            out = self.conv2.norm(out)
        out = F.relu_(out)
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class DeepStem(CNNBlockBase):
    """ResNet-V1c deep stem: 3x3 s2 (in->out/2), 3x3 (out/2->out/2), 3x3 (out/2->out), each norm+ReLU, then
    max-pool 3x3 s2 p1. Stride 4. With ``out_channels=64`` this is mmcv's ResNetV1c stem (32/32/64)."""

    def __init__(self, in_channels=3, out_channels=64, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        if out_channels % 2:
            raise ValueError(f"DeepStem out_channels must be even, got {out_channels}")
        mid = out_channels // 2
        self.in_channels = in_channels
        self.conv1 = Conv2d(in_channels, mid, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, mid))
        self.conv2 = Conv2d(mid, mid, 3, stride=1, padding=1, bias=False, norm=get_norm(norm, mid))
        self.conv3 = Conv2d(mid, out_channels, 3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3):
            weight_init.c2_msra_fill(layer)

    def forward(self, x):
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class AAResNet(ResNet):
    """Detectron2 ``ResNet`` whose stage inputs can be low-pass filtered (DAF or BlurPool).

    Args:
        stem, stages, num_classes, out_features, freeze_at: as in Detectron2's ``ResNet``.
        stage_filters (dict[str, nn.Module]): stage name -> filter applied to that stage's input. Filters for
            stages not built (because of ``out_features``) are dropped.
    """

    def __init__(self, stem, stages, num_classes=None, out_features=None, freeze_at=0, stage_filters=None):
        super().__init__(stem, stages, num_classes=num_classes, out_features=out_features, freeze_at=freeze_at)
        stage_filters = dict(stage_filters or {})
        for name in stage_filters:
            if name not in STAGE_NAMES:
                raise ValueError(f"stage_filters: unknown stage {name!r}; expected one of {STAGE_NAMES}")
        self.aa_filters = nn.ModuleDict({k: v for k, v in stage_filters.items() if k in self.stage_names})

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"AAResNet takes an input of shape (N, C, H, W). Got {tuple(x.shape)} instead!")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            if name in self.aa_filters:
                # only the copy flowing into the stage is filtered; `outputs` keeps the raw features
                x = self.aa_filters[name](x)
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        if self.num_classes is not None:
            x = self.avgpool(x).flatten(1)
            x = self.linear(x)
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs


def _stage_list(value, key):
    if isinstance(value, str):
        raise ValueError(f"{key} must be a list of stage names such as ['res3', 'res4'], got the string {value!r}")
    names = list(value)
    for n in names:
        if n not in STAGE_NAMES:
            raise ValueError(f"{key}: unknown stage {n!r}; expected a subset of {list(STAGE_NAMES)}")
    return names


def _check_cutoff_key(value, key):
    if not isinstance(value, (int, float)) or not (0.0 < float(value) <= 0.5):
        raise ValueError(f"{key} must be a cut-off in (0, 0.5] cycles/pixel, got {value!r}")
    return float(value)


def _segalias_node(cfg):
    if "SEGALIAS" not in cfg.MODEL:
        raise KeyError(
            "cfg.MODEL.SEGALIAS is missing: call segalias_d2.add_segalias_config(cfg) before building the backbone"
        )
    return cfg.MODEL.SEGALIAS


@BACKBONE_REGISTRY.register()
def build_segalias_resnet_backbone(cfg, input_shape=None):
    """Anti-aliased ResNet (DAF / BlurPool on stage inputs, FreqMix in bottlenecks) from config.

    Input channels come from ``input_shape.channels`` (Detectron2 sets it to ``len(cfg.MODEL.PIXEL_MEAN)``,
    e.g. 4 for packed Bayer RAW).
    """
    sa = _segalias_node(cfg)
    in_ch = input_shape.channels if input_shape is not None else len(cfg.MODEL.PIXEL_MEAN)
    # our names (e.g. "FrozenStatsBN", the released LIS BN) become callables; Detectron2 names pass through
    norm = resolve_norm(cfg.MODEL.RESNETS.NORM)
    check_head_norms(cfg)
    stem_out = cfg.MODEL.RESNETS.STEM_OUT_CHANNELS

    stem_type = sa.STEM_TYPE
    if stem_type == "basic":
        stem = BasicStem(in_channels=in_ch, out_channels=stem_out, norm=norm)
    elif stem_type == "deep":
        stem = DeepStem(in_channels=in_ch, out_channels=stem_out, norm=norm)
    else:
        raise ValueError(f"MODEL.SEGALIAS.STEM_TYPE must be one of {STEM_TYPES}, got {stem_type!r}")

    depth = cfg.MODEL.RESNETS.DEPTH
    if depth not in _BLOCKS_PER_DEPTH:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(_BLOCKS_PER_DEPTH)} (bottleneck ResNets), "
                         f"got {depth}")
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE is not supported by the segalias backbone; "
                         "expected all False")
    res5_dilation = cfg.MODEL.RESNETS.RES5_DILATION
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation}")

    daf_on = bool(sa.DAF.ENABLED)
    blur_on = bool(sa.BLURPOOL.ENABLED)
    fm_on = bool(sa.FREQMIX.ENABLED)
    daf_stages = _stage_list(sa.DAF.STAGES, "MODEL.SEGALIAS.DAF.STAGES") if daf_on else []
    blur_stages = _stage_list(sa.BLURPOOL.STAGES, "MODEL.SEGALIAS.BLURPOOL.STAGES") if blur_on else []
    fm_stages = _stage_list(sa.FREQMIX.STAGES, "MODEL.SEGALIAS.FREQMIX.STAGES") if fm_on else []
    both = sorted(set(daf_stages) & set(blur_stages))
    if both:
        raise ValueError(f"MODEL.SEGALIAS.DAF and MODEL.SEGALIAS.BLURPOOL both filter stage(s) {both}; "
                         f"expected at most one filter per stage input")
    daf_cutoff = _check_cutoff_key(sa.DAF.CUTOFF, "MODEL.SEGALIAS.DAF.CUTOFF") if daf_on else None
    fm_cutoff = _check_cutoff_key(sa.FREQMIX.CUTOFF, "MODEL.SEGALIAS.FREQMIX.CUTOFF") if fm_on else 0.35
    fm_gate = sa.FREQMIX.GATE
    if fm_on:
        check_freqmix_gate(fm_gate, "MODEL.SEGALIAS.FREQMIX.GATE")
    fm_red = sa.FREQMIX.REDUCTION
    if fm_on and (not isinstance(fm_red, int) or fm_red < 1):
        raise ValueError(f"MODEL.SEGALIAS.FREQMIX.REDUCTION must be a positive int, got {fm_red!r}")
    blur_k = sa.BLURPOOL.KERNEL_SIZE
    if blur_on and (not isinstance(blur_k, int) or blur_k < 1):
        raise ValueError(f"MODEL.SEGALIAS.BLURPOOL.KERNEL_SIZE must be a positive int, got {blur_k!r}")

    num_groups = cfg.MODEL.RESNETS.NUM_GROUPS
    bottleneck_channels = num_groups * cfg.MODEL.RESNETS.WIDTH_PER_GROUP
    in_channels = stem_out
    out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    stages, filters = [], {}
    for idx, name in enumerate(STAGE_NAMES):
        n = _BLOCKS_PER_DEPTH[depth][idx]
        dilation = res5_dilation if name == "res5" else 1
        first_stride = 1 if idx == 0 or (name == "res5" and dilation == 2) else 2
        blocks = ResNet.make_stage(
            block_class=AABottleneckBlock,
            num_blocks=n,
            stride_per_block=[first_stride] + [1] * (n - 1),
            in_channels=in_channels,
            out_channels=out_channels,
            bottleneck_channels=bottleneck_channels,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=cfg.MODEL.RESNETS.STRIDE_IN_1X1,
            dilation=dilation,
            freqmix=name in fm_stages,
            freqmix_cutoff=fm_cutoff,
            freqmix_reduction=fm_red,
            freqmix_gate=fm_gate,
        )
        stages.append(blocks)
        if name in daf_stages:
            filters[name] = DeAliasingFilter(daf_cutoff)
        elif name in blur_stages:
            filters[name] = BlurPool(in_channels, blur_k)
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return AAResNet(
        stem, stages, out_features=cfg.MODEL.RESNETS.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        stage_filters=filters,
    )


@BACKBONE_REGISTRY.register()
def build_segalias_resnet_fpn_backbone(cfg, input_shape=None):
    """FPN (LastLevelMaxPool, p2..p6) on the anti-aliased ResNet, like Detectron2's build_resnet_fpn_backbone.

    Parameter names are ``bottom_up.res*`` inside the backbone (``backbone.bottom_up.res*`` in a model).
    """
    bottom_up = build_segalias_resnet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=resolve_norm(cfg.MODEL.FPN.NORM),
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
