"""Shared test helpers: configs with the segalias keys, backbone configs, the small sliding-window
semantic model, and a temporary LIS-class dataset registration, so that a test file states only what
it changes."""

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from segalias_d2 import add_segalias_config
from segalias_d2.data import LIS_CLASSES, register_lowlight_dataset

STAGES = ["res2", "res3", "res4", "res5"]


def set_keys(cfg, overrides):
    """Set config keys given as ``{"MODEL.RESNETS.DEPTH": 101}`` (or ``MODEL__RESNETS__DEPTH``);
    values are set as they are (no string parsing), so a typo in a key is a KeyError, not a new
    key."""
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.replace("__", ".").split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"no config key {key!r}")
        node[leaf] = value
    return cfg


def segalias_cfg(overrides=None, **dotted):
    """Detectron2's default config with the segalias keys, then ``overrides`` / ``dotted``
    (``A__B=value``)."""
    cfg = add_segalias_config(get_cfg())
    set_keys(cfg, dict(overrides or {}))
    return set_keys(cfg, dotted)


def make_backbone_cfg(fpn=False, daf=True, freqmix=True, **overrides):
    """Backbone config with BN, no frozen stages, PyTorch-style strides and all four stages out.

    ``overrides`` use ``__`` as the key separator, e.g. ``MODEL__RESNETS__DEPTH=101``.
    """
    cfg = segalias_cfg()
    cfg.MODEL.BACKBONE.NAME = (
        "build_segalias_resnet_fpn_backbone" if fpn else "build_segalias_resnet_backbone"
    )
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.FPN.IN_FEATURES = list(STAGES)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.SEGALIAS.DAF.ENABLED = daf
    cfg.MODEL.SEGALIAS.FREQMIX.ENABLED = freqmix
    return set_keys(cfg, overrides)


def sliding_window_semseg_cfg(num_classes, window, stride=None, narrow=False):
    """CPU ``SlidingWindowSemanticSegmentor`` on the segalias R50-FPN; ``window`` / ``stride`` as
    [h, w] (stride None: the config default, sliding off unless enabled); ``narrow``: 8x fewer
    channels, the same computation."""
    cfg = segalias_cfg(
        {
            "MODEL.META_ARCHITECTURE": "SlidingWindowSemanticSegmentor",
            "MODEL.DEVICE": "cpu",
            "MODEL.BACKBONE.NAME": "build_segalias_resnet_fpn_backbone",
            "MODEL.RESNETS.DEPTH": 50,
            "MODEL.RESNETS.OUT_FEATURES": list(STAGES),
            "MODEL.FPN.IN_FEATURES": list(STAGES),
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES": num_classes,
            "TEST.SEGALIAS.SLIDING_WINDOW.SIZE": list(window),
        }
    )
    if stride is not None:
        cfg.TEST.SEGALIAS.SLIDING_WINDOW.ENABLED = True
        cfg.TEST.SEGALIAS.SLIDING_WINDOW.STRIDE = list(stride)
    if narrow:
        set_keys(
            cfg,
            {
                "MODEL.RESNETS.STEM_OUT_CHANNELS": 16,
                "MODEL.RESNETS.RES2_OUT_CHANNELS": 32,
                "MODEL.RESNETS.WIDTH_PER_GROUP": 8,
                "MODEL.FPN.OUT_CHANNELS": 32,
                "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
            },
        )
    return cfg


def register_lis_json(name, json_file, image_root, image_format="srgb", **kw):
    """Register a LIS-class low-light COCO JSON under ``name``, replacing an earlier registration of
    that name (tests re-register the same name with other files)."""
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)
    register_lowlight_dataset(
        name,
        str(json_file),
        str(image_root),
        image_format=image_format,
        thing_classes=LIS_CLASSES,
        **kw,
    )
    return name
