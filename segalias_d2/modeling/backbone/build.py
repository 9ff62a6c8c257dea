"""Builders of the anti-aliased ResNet and ResNet-FPN backbones from config (registered in
Detectron2's ``BACKBONE_REGISTRY`` at import); the modules themselves are in :mod:`.aa_resnet`.

* ``build_segalias_resnet_backbone``     -> :class:`AAResNet` (res2..res5, Detectron2 names/strides)
* ``build_segalias_resnet_fpn_backbone`` -> Detectron2 ``FPN`` on top of it, with
  ``LastLevelMaxPool``
"""

from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ..fourier_filters import BlurPool, DeAliasingFilter, check_freqmix_gate
from .aa_resnet import (
    _BLOCKS_PER_DEPTH,
    STAGE_NAMES,
    STEM_TYPES,
    AABottleneckBlock,
    AAResNet,
    DeepStem,
)
from .lis_modules import SCB_INITS, AdaptiveWeightedDownsample
from .norm import check_head_norms, resolve_norm


def _stage_list(value, key):
    if isinstance(value, str):
        raise ValueError(
            f"{key} must be a list of stage names such as ['res3', 'res4'], got the string "
            f"{value!r}"
        )
    names = list(value)
    for n in names:
        if n not in STAGE_NAMES:
            raise ValueError(
                f"{key}: unknown stage {n!r}; expected a subset of {list(STAGE_NAMES)}"
            )
    return names


def _check_cutoff_key(value, key):
    if not isinstance(value, (int, float)) or not (0.0 < float(value) <= 0.5):
        raise ValueError(f"{key} must be a cut-off in (0, 0.5] cycles/pixel, got {value!r}")
    return float(value)


def _segalias_node(cfg):
    if "SEGALIAS" not in cfg.MODEL:
        raise KeyError(
            "cfg.MODEL.SEGALIAS is missing: call segalias_d2.add_segalias_config(cfg) before "
            "building the backbone"
        )
    return cfg.MODEL.SEGALIAS


def _lis_module_options(sa, res5_dilation, num_groups):
    """(AWD stages, AWD stride, SCB stages, SCB init) from MODEL.SEGALIAS.AWD / SCB, checked."""
    awd_stages, scb_stages = [], []
    awd_stride = int(sa.AWD.STRIDE)
    if sa.AWD.ENABLED:
        awd_stages = _stage_list(sa.AWD.STAGES, "MODEL.SEGALIAS.AWD.STAGES")
        if "res2" in awd_stages:
            raise ValueError(
                "MODEL.SEGALIAS.AWD.STAGES: res2 has no stride to take over (the stem's max-pool "
                "stays, as released); expected a subset of ['res3', 'res4', 'res5']"
            )
        if awd_stride not in (1, 2):
            raise ValueError(
                f"MODEL.SEGALIAS.AWD.STRIDE must be 2 (downsampler, released caffe R50) or 1 "
                f"(pre-filter), got {sa.AWD.STRIDE!r}"
            )
        if awd_stride == 2 and "res5" in awd_stages and res5_dilation == 2:
            raise ValueError(
                "MODEL.SEGALIAS.AWD with STRIDE 2 on res5 and MODEL.RESNETS.RES5_DILATION 2: a "
                "dilated "
                "res5 has no stride to take over; use AWD.STRIDE 1 or leave res5 out of AWD.STAGES"
            )
    if sa.SCB.ENABLED:
        scb_stages = _stage_list(sa.SCB.STAGES, "MODEL.SEGALIAS.SCB.STAGES")
        if sa.SCB.INIT not in SCB_INITS:
            raise ValueError(
                f"MODEL.SEGALIAS.SCB.INIT must be one of {SCB_INITS}, got {sa.SCB.INIT!r}"
            )
        if num_groups != 1:
            raise ValueError(
                f"MODEL.SEGALIAS.SCB needs MODEL.RESNETS.NUM_GROUPS 1 (its dense 1x1 branch cannot "
                f"fold into a grouped conv2), got {num_groups}"
            )
        if "res5" in scb_stages and res5_dilation == 2:
            raise ValueError(
                "MODEL.SEGALIAS.SCB on res5 with MODEL.RESNETS.RES5_DILATION 2: the branch cannot "
                "fold into a dilated conv2; leave res5 out of SCB.STAGES"
            )
    return awd_stages, awd_stride, scb_stages, sa.SCB.INIT


@BACKBONE_REGISTRY.register()
def build_segalias_resnet_backbone(cfg, input_shape=None):
    """Anti-aliased ResNet (DAF / BlurPool and AWD on stage inputs, SCB and FreqMix in bottlenecks)
    from config.

    Input channels come from ``input_shape.channels`` (Detectron2 sets it to
    ``len(cfg.MODEL.PIXEL_MEAN)``, e.g. 4 for packed Bayer RAW).
    """
    sa = _segalias_node(cfg)
    in_ch = input_shape.channels if input_shape is not None else len(cfg.MODEL.PIXEL_MEAN)
    # our names (e.g. "FrozenStatsBN", the released LIS BN) become callables; Detectron2 names pass
    # through
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
        raise ValueError(
            f"MODEL.RESNETS.DEPTH must be one of {sorted(_BLOCKS_PER_DEPTH)} (bottleneck ResNets), "
            f"got {depth}"
        )
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE is not supported by the segalias backbone; "
            "expected all False"
        )
    res5_dilation = cfg.MODEL.RESNETS.RES5_DILATION
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation}")

    daf_on = bool(sa.DAF.ENABLED)
    blur_on = bool(sa.BLURPOOL.ENABLED)
    fm_on = bool(sa.FREQMIX.ENABLED)
    daf_stages = _stage_list(sa.DAF.STAGES, "MODEL.SEGALIAS.DAF.STAGES") if daf_on else []
    blur_stages = (
        _stage_list(sa.BLURPOOL.STAGES, "MODEL.SEGALIAS.BLURPOOL.STAGES") if blur_on else []
    )
    fm_stages = _stage_list(sa.FREQMIX.STAGES, "MODEL.SEGALIAS.FREQMIX.STAGES") if fm_on else []
    both = sorted(set(daf_stages) & set(blur_stages))
    if both:
        raise ValueError(
            f"MODEL.SEGALIAS.DAF and MODEL.SEGALIAS.BLURPOOL both filter stage(s) {both}; "
            f"expected at most one filter per stage input"
        )
    daf_cutoff = _check_cutoff_key(sa.DAF.CUTOFF, "MODEL.SEGALIAS.DAF.CUTOFF") if daf_on else None
    fm_cutoff = (
        _check_cutoff_key(sa.FREQMIX.CUTOFF, "MODEL.SEGALIAS.FREQMIX.CUTOFF") if fm_on else 0.35
    )
    fm_gate = sa.FREQMIX.GATE
    if fm_on:
        check_freqmix_gate(fm_gate, "MODEL.SEGALIAS.FREQMIX.GATE")
    fm_red = sa.FREQMIX.REDUCTION
    if fm_on and (not isinstance(fm_red, int) or fm_red < 1):
        raise ValueError(f"MODEL.SEGALIAS.FREQMIX.REDUCTION must be a positive int, got {fm_red!r}")
    blur_k = sa.BLURPOOL.KERNEL_SIZE
    if blur_on and (not isinstance(blur_k, int) or blur_k < 1):
        raise ValueError(
            f"MODEL.SEGALIAS.BLURPOOL.KERNEL_SIZE must be a positive int, got {blur_k!r}"
        )

    num_groups = cfg.MODEL.RESNETS.NUM_GROUPS
    awd_stages, awd_stride, scb_stages, scb_init = _lis_module_options(
        sa, res5_dilation, num_groups
    )
    bottleneck_channels = num_groups * cfg.MODEL.RESNETS.WIDTH_PER_GROUP
    in_channels = stem_out
    out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    stages, filters, downsamplers = [], {}, {}
    for idx, name in enumerate(STAGE_NAMES):
        n = _BLOCKS_PER_DEPTH[depth][idx]
        dilation = res5_dilation if name == "res5" else 1
        first_stride = 1 if idx == 0 or (name == "res5" and dilation == 2) else 2
        if name in awd_stages:
            # AWD in front of the stage; with stride 2 it takes the stage's stride (the released
            # caffe-style R50: every conv of the stage, shortcut included, runs at stride 1, so
            # STRIDE_IN_1X1 has no effect here)
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
        stem,
        stages,
        out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        stage_filters=filters,
        stage_downsamplers=downsamplers,
        recompute_filter_outputs=cfg.MODEL.SEGALIAS.RECOMPUTE_FILTER_OUTPUTS,
    )


@BACKBONE_REGISTRY.register()
def build_segalias_resnet_fpn_backbone(cfg, input_shape=None):
    """FPN (LastLevelMaxPool, p2..p6) on the anti-aliased ResNet, like Detectron2's
    build_resnet_fpn_backbone.

    Parameter names are ``bottom_up.res*`` inside the backbone (``backbone.bottom_up.res*`` in a
    model).
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
