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
* LIS modules (:mod:`.lis_modules`, docs/lis_modules.md): AWD (``awd.resN.*``) runs on a stage's input after the
  DAF/BlurPool slot; with stride 2 it takes over the stage's stride (the released caffe-style R50). SCB
  (``resN.i.scb.*``) adds its low-pass branch to conv2's output, before FreqMix and conv2's norm.
"""
import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from torch import nn

from detectron2.layers import CNNBlockBase, Conv2d, FrozenBatchNorm2d, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, BasicStem, BottleneckBlock, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ..fourier_filters import BlurPool, DeAliasingFilter, FreqMix, check_freqmix_gate
from .lis_modules import SCB_FOLDED_MARKER, SCB_INITS, AdaptiveWeightedDownsample, SmoothBranch
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
    """Detectron2's ``BottleneckBlock`` with optional SCB and FreqMix between conv2 and conv2's norm.

    conv1 -> norm -> ReLU -> conv2 [+ SCB branch] -> [FreqMix] -> norm -> ReLU -> conv3 -> norm -> (+ shortcut)
    -> ReLU. Detectron2 builds and initialises every layer; the block adds ``self.freqmix`` (PyTorch's default
    init, paper: "allno0init") and ``self.scb`` (:class:`SmoothBranch`, released init), so state-dict keys are
    those of ``BottleneckBlock`` plus ``freqmix.*`` / ``scb.*`` (tokens for the LR multipliers). SCB sits before
    FreqMix so that it stays foldable into conv2. ``scb_fused`` (default) runs conv2 with the folded weight
    ``W2 + W1 K_i`` (one conv, mathematically the released two-branch sum); ``False`` runs the two branches.
    With neither module it is Detectron2's block unchanged.
    """

    def __init__(self, in_channels, out_channels, *, freqmix=False, freqmix_cutoff=0.35, freqmix_reduction=16,
                 freqmix_gate="released", scb=False, scb_init="released", scb_fused=True, **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        self.freqmix = None
        self.scb = None
        self.scb_fused = scb_fused
        if freqmix or scb:
            # conv2 stays the module Detectron2 built and initialised (weights, norm, RNG draws); re-classing it
            # changes only its forward, so its norm can run after SCB/FreqMix
            self.conv2.__class__ = _ConvNormAfter
        if scb:
            c = self.conv2
            if c.groups != 1 or c.dilation != (1, 1) or c.padding != (1, 1):
                raise ValueError(f"SCB needs a plain 3x3 conv2 (groups 1, dilation 1, padding 1) to stay foldable; "
                                 f"got groups={c.groups}, dilation={c.dilation}")
            self.scb = SmoothBranch(c.in_channels, c.out_channels, stride=c.stride[0], init=scb_init)
        if freqmix:
            self.freqmix = FreqMix(self.conv2.out_channels, freqmix_cutoff, freqmix_reduction, freqmix_gate)

    def _conv2(self, x):
        c = self.conv2
        if self.scb is None:
            return c(x)  # the convolution only (_ConvNormAfter)
        if self.scb_fused:  # one conv with W2 + W1 K_i (conv2's forward hooks do not fire here)
            return F.conv2d(x, self.scb.fold(c.weight), c.bias, c.stride, c.padding, c.dilation, c.groups)
        return c(x) + self.scb(x)

    def forward(self, x):
        if self.freqmix is None and self.scb is None:
            return super().forward(x)
        out = self._conv2(F.relu_(self.conv1(x)))
        if self.freqmix is not None:
            out = self.freqmix(out)
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
    """Detectron2 ``ResNet`` whose stage inputs can be low-pass filtered (DAF or BlurPool) and downsampled (AWD).

    Args:
        stem, stages, num_classes, out_features, freeze_at: as in Detectron2's ``ResNet``.
        stage_filters (dict[str, nn.Module]): stage name -> filter applied to that stage's input. Filters for
            stages not built (because of ``out_features``) are dropped.
        stage_downsamplers (dict[str, nn.Module]): stage name -> module with a ``stride`` attribute (AWD) applied
            to that stage's input after its filter; its stride counts towards the stage's output stride. Frozen
            with its stage (``freeze_at``).
    """

    def __init__(self, stem, stages, num_classes=None, out_features=None, freeze_at=0, stage_filters=None,
                 stage_downsamplers=None):
        super().__init__(stem, stages, num_classes=num_classes, out_features=out_features, freeze_at=freeze_at)
        built = {}
        for kind, modules in (("stage_filters", stage_filters), ("stage_downsamplers", stage_downsamplers)):
            modules = dict(modules or {})
            for name in modules:
                if name not in STAGE_NAMES:
                    raise ValueError(f"{kind}: unknown stage {name!r}; expected one of {STAGE_NAMES}")
            built[kind] = {k: v for k, v in modules.items() if k in self.stage_names}
        self.aa_filters = nn.ModuleDict(built["stage_filters"])
        self.awd = nn.ModuleDict(built["stage_downsamplers"])
        stride = self.stem.stride
        for name, stage in zip(self.stage_names, self.stages):
            stride *= getattr(self.awd[name], "stride", 1) if name in self.awd else 1
            for block in stage:
                stride *= block.stride
            self._out_feature_strides[name] = stride  # FPN names its levels from these
        for idx, name in enumerate(self.stage_names, start=2):
            if name in self.awd and freeze_at >= idx:  # Detectron2's rule: freeze_at >= 2 freezes res2, ...
                for p in self.awd[name].parameters():
                    p.requires_grad_(False)
                self.awd[name] = FrozenBatchNorm2d.convert_frozen_batchnorm(self.awd[name])
        self._has_scb = any(getattr(b, "scb", None) is not None for stage in self.stages for b in stage)

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
            if name in self.awd:
                x = self.awd[name](x)
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        if self.num_classes is not None:
            x = self.avgpool(x).flatten(1)
            x = self.linear(x)
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # SCB checkpoints: a folded one (marker) loads into the plain model only, an unfolded one into SCB only
        marker = prefix + SCB_FOLDED_MARKER
        if self._has_scb and marker in state_dict:
            raise ValueError(f"the checkpoint has its SCB branches folded into conv2 ('{marker}'): load it with "
                             "MODEL.SEGALIAS.SCB.ENABLED False (this model has SCB on and would add the branch twice)")
        if not self._has_scb:
            state_dict.pop(marker, None)
            branch = next((k for k in state_dict if k.startswith(prefix) and ".scb." in k), None)
            if branch is not None:
                raise ValueError(f"the checkpoint has SCB branches ('{branch}') but this model has SCB off: build "
                                 "it with MODEL.SEGALIAS.SCB.ENABLED True, or fold the checkpoint first "
                                 "(tools/fold_scb.py) and load the folded file")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


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


def _lis_module_options(sa, res5_dilation, num_groups):
    """(AWD stages, AWD stride, SCB stages, SCB init) from MODEL.SEGALIAS.AWD / SCB, checked."""
    awd_stages, scb_stages = [], []
    awd_stride = int(sa.AWD.STRIDE)
    if sa.AWD.ENABLED:
        awd_stages = _stage_list(sa.AWD.STAGES, "MODEL.SEGALIAS.AWD.STAGES")
        if "res2" in awd_stages:
            raise ValueError("MODEL.SEGALIAS.AWD.STAGES: res2 has no stride to take over (the stem's max-pool "
                             "stays, as released); expected a subset of ['res3', 'res4', 'res5']")
        if awd_stride not in (1, 2):
            raise ValueError(f"MODEL.SEGALIAS.AWD.STRIDE must be 2 (downsampler, released caffe R50) or 1 "
                             f"(pre-filter), got {sa.AWD.STRIDE!r}")
        if awd_stride == 2 and "res5" in awd_stages and res5_dilation == 2:
            raise ValueError("MODEL.SEGALIAS.AWD with STRIDE 2 on res5 and MODEL.RESNETS.RES5_DILATION 2: a dilated "
                             "res5 has no stride to take over; use AWD.STRIDE 1 or leave res5 out of AWD.STAGES")
    if sa.SCB.ENABLED:
        scb_stages = _stage_list(sa.SCB.STAGES, "MODEL.SEGALIAS.SCB.STAGES")
        if sa.SCB.INIT not in SCB_INITS:
            raise ValueError(f"MODEL.SEGALIAS.SCB.INIT must be one of {SCB_INITS}, got {sa.SCB.INIT!r}")
        if num_groups != 1:
            raise ValueError(f"MODEL.SEGALIAS.SCB needs MODEL.RESNETS.NUM_GROUPS 1 (its dense 1x1 branch cannot "
                             f"fold into a grouped conv2), got {num_groups}")
        if "res5" in scb_stages and res5_dilation == 2:
            raise ValueError("MODEL.SEGALIAS.SCB on res5 with MODEL.RESNETS.RES5_DILATION 2: the branch cannot "
                             "fold into a dilated conv2; leave res5 out of SCB.STAGES")
    return awd_stages, awd_stride, scb_stages, sa.SCB.INIT


@BACKBONE_REGISTRY.register()
def build_segalias_resnet_backbone(cfg, input_shape=None):
    """Anti-aliased ResNet (DAF / BlurPool and AWD on stage inputs, SCB and FreqMix in bottlenecks) from config.

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
    awd_stages, awd_stride, scb_stages, scb_init = _lis_module_options(sa, res5_dilation, num_groups)
    bottleneck_channels = num_groups * cfg.MODEL.RESNETS.WIDTH_PER_GROUP
    in_channels = stem_out
    out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    stages, filters, downsamplers = [], {}, {}
    for idx, name in enumerate(STAGE_NAMES):
        n = _BLOCKS_PER_DEPTH[depth][idx]
        dilation = res5_dilation if name == "res5" else 1
        first_stride = 1 if idx == 0 or (name == "res5" and dilation == 2) else 2
        if name in awd_stages:
            # AWD in front of the stage; with stride 2 it takes the stage's stride (the released caffe-style R50:
            # every conv of the stage, shortcut included, runs at stride 1, so STRIDE_IN_1X1 has no effect here)
            downsamplers[name] = AdaptiveWeightedDownsample(in_channels, stride=awd_stride)
            first_stride //= awd_stride
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
            scb=name in scb_stages,
            scb_init=scb_init,
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
        stage_filters=filters, stage_downsamplers=downsamplers,
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
