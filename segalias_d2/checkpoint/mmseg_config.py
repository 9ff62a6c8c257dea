"""The Detectron2 config of a released MMSeg checkpoint (:mod:`.mmseg`): made from the architecture
inferred from the weights (:func:`mmseg_model_config`), or a given config checked against it
(:func:`check_config`)."""

import logging

from ..config import load_config
from .mmseg import MMSegConversionError

__all__ = ["mmseg_model_config", "check_config"]

logger = logging.getLogger(__name__)


def mmseg_model_config(arch, meta_summary=None, cfg=None):
    """A config for ``arch`` (our UPerNet-R50-V1c model keys); ``cfg`` (default: a fresh one) is
    updated in place.

    DAF is not visible in the weights: on when ``meta`` says ``blur_type='flc'`` (cut-off =
    ``freq_thres``), off for the identity-blur baseline or ``blur_type`` 'none'/'blur'; otherwise on
    for a FreqMix (NyResNet) checkpoint (the paper model) and off without FreqMix, with a warning.
    """

    cfg = load_config("") if cfg is None else cfg
    m = cfg.MODEL
    m.META_ARCHITECTURE = "SlidingWindowSemanticSegmentor"
    m.MASK_ON = False
    m.BACKBONE.NAME = "build_segalias_resnet_backbone"
    m.BACKBONE.FREEZE_AT = 0
    m.RESNETS.DEPTH = arch.depth
    m.RESNETS.NORM = "BN"
    m.RESNETS.STRIDE_IN_1X1 = False
    m.RESNETS.RES5_DILATION = 1
    m.RESNETS.STEM_OUT_CHANNELS = 64
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.PIXEL_MEAN = [123.675, 116.28, 103.53]
    m.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"
    sa = m.SEGALIAS
    sa.STEM_TYPE = "deep"
    sa.FREQMIX.ENABLED = bool(arch.freqmix_stages)
    if arch.freqmix_stages:
        sa.FREQMIX.STAGES = list(arch.freqmix_stages)
        sa.FREQMIX.REDUCTION = int(arch.freqmix_reduction)
        sa.FREQMIX.GATE = "released"
        sa.FREQMIX.CUTOFF = 0.35
    meta_summary = meta_summary or {}
    blur_type = meta_summary.get("blur_type")
    if arch.identity_blur or blur_type in ("none", "blur"):
        sa.DAF.ENABLED = False
    elif blur_type == "flc":
        sa.DAF.ENABLED = True
        sa.DAF.CUTOFF = float(
            meta_summary.get("freq_thres", 0.25)
        )  # class default 0.25 when not overridden
        sa.DAF.STAGES = ["res3", "res4", "res5"]
    else:
        sa.DAF.ENABLED = bool(arch.freqmix_stages)
        sa.DAF.CUTOFF = 0.35
        logger.warning(
            "The checkpoint cannot tell whether the DAF was on (it has no weights) and meta has no "
            "blur_type: assuming DAF %s (the paper's %s)",
            "on, cut-off 0.35" if sa.DAF.ENABLED else "off",
            "NyResNet" if sa.DAF.ENABLED else "ResNetV1c baseline",
        )
    sa.BLURPOOL.ENABLED = False
    m.SEM_SEG_HEAD.NAME = "UPerNetHead"
    m.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m.SEM_SEG_HEAD.NUM_CLASSES = arch.num_classes
    m.SEM_SEG_HEAD.CONVS_DIM = arch.head_channels
    m.SEM_SEG_HEAD.COMMON_STRIDE = 4
    m.SEM_SEG_HEAD.NORM = "BN"
    m.SEM_SEG_HEAD.IGNORE_VALUE = 255
    up = sa.UPERNET
    if arch.num_pool_scales != len(up.POOL_SCALES):
        raise MMSegConversionError(
            f"{arch.num_pool_scales} PPM branches; the default pool scales are "
            f"{list(up.POOL_SCALES)}: pass a config with MODEL.SEGALIAS.UPERNET.POOL_SCALES"
        )
    up.AUX.ENABLED = arch.aux
    if arch.aux:
        up.AUX.CHANNELS, up.AUX.NUM_CONVS = arch.aux_channels, arch.aux_num_convs
        up.AUX.IN_FEATURE = arch.aux_in_feature
    return cfg


def check_config(arch, cfg, meta_summary=None, name="the config"):
    """Raise :class:`MMSegConversionError` naming every key of ``cfg`` that does not fit the
    checkpoint."""
    m, sa = cfg.MODEL, cfg.MODEL.SEGALIAS
    up = sa.UPERNET
    want = [
        (
            "MODEL.META_ARCHITECTURE",
            m.META_ARCHITECTURE,
            ("SemanticSegmentor", "SlidingWindowSemanticSegmentor"),
        ),
        ("MODEL.BACKBONE.NAME", m.BACKBONE.NAME, ("build_segalias_resnet_backbone",)),
        ("MODEL.SEGALIAS.STEM_TYPE", sa.STEM_TYPE, ("deep",)),
        ("MODEL.RESNETS.DEPTH", m.RESNETS.DEPTH, (arch.depth,)),
        ("MODEL.RESNETS.STRIDE_IN_1X1", m.RESNETS.STRIDE_IN_1X1, (False,)),
        ("MODEL.RESNETS.STEM_OUT_CHANNELS", m.RESNETS.STEM_OUT_CHANNELS, (64,)),
        ("MODEL.SEM_SEG_HEAD.NAME", m.SEM_SEG_HEAD.NAME, ("UPerNetHead",)),
        ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", m.SEM_SEG_HEAD.NUM_CLASSES, (arch.num_classes,)),
        ("MODEL.SEM_SEG_HEAD.CONVS_DIM", m.SEM_SEG_HEAD.CONVS_DIM, (arch.head_channels,)),
        ("len(MODEL.SEGALIAS.UPERNET.POOL_SCALES)", len(up.POOL_SCALES), (arch.num_pool_scales,)),
        ("MODEL.SEGALIAS.UPERNET.AUX.ENABLED", bool(up.AUX.ENABLED), (arch.aux,)),
        ("MODEL.SEGALIAS.FREQMIX.ENABLED", bool(sa.FREQMIX.ENABLED), (bool(arch.freqmix_stages),)),
    ]
    if arch.aux:
        want += [
            ("MODEL.SEGALIAS.UPERNET.AUX.CHANNELS", up.AUX.CHANNELS, (arch.aux_channels,)),
            ("MODEL.SEGALIAS.UPERNET.AUX.NUM_CONVS", up.AUX.NUM_CONVS, (arch.aux_num_convs,)),
            ("MODEL.SEGALIAS.UPERNET.AUX.IN_FEATURE", up.AUX.IN_FEATURE, (arch.aux_in_feature,)),
        ]
    if arch.freqmix_stages:
        want += [
            (
                "MODEL.SEGALIAS.FREQMIX.STAGES",
                sorted(sa.FREQMIX.STAGES),
                (sorted(arch.freqmix_stages),),
            ),
            ("MODEL.SEGALIAS.FREQMIX.REDUCTION", sa.FREQMIX.REDUCTION, (arch.freqmix_reduction,)),
            # the weights were trained with the released computation; the variants would misuse them
            ("MODEL.SEGALIAS.FREQMIX.GATE", sa.FREQMIX.GATE, ("released",)),
        ]
    blur_type = (meta_summary or {}).get("blur_type")
    if arch.identity_blur or blur_type in ("none", "blur"):
        want.append(("MODEL.SEGALIAS.DAF.ENABLED", bool(sa.DAF.ENABLED), (False,)))
    elif blur_type == "flc":
        want.append(("MODEL.SEGALIAS.DAF.ENABLED", bool(sa.DAF.ENABLED), (True,)))
        if "freq_thres" in meta_summary and sa.DAF.ENABLED:
            want.append(
                (
                    "MODEL.SEGALIAS.DAF.CUTOFF",
                    round(float(sa.DAF.CUTOFF), 10),
                    (round(float(meta_summary["freq_thres"]), 10),),
                )
            )
    bad = [
        f"{key} = {value!r} (checkpoint needs {' or '.join(repr(v) for v in ok)})"
        for key, value, ok in want
        if value not in ok
    ]
    if bad:
        raise MMSegConversionError(f"{name} does not fit the checkpoint: " + "; ".join(bad))
