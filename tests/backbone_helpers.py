"""Shared by the backbone tests: a config for the segalias ResNet / ResNet-FPN backbones."""
from detectron2.config import get_cfg

from segalias_d2 import add_segalias_config

STAGES = ["res2", "res3", "res4", "res5"]


def make_backbone_cfg(fpn=False, daf=True, freqmix=True, **overrides):
    """Backbone config with BN, no frozen stages, PyTorch-style strides and all four stages out.

    ``overrides`` use ``__`` as the key separator, e.g. ``MODEL__RESNETS__DEPTH=101``.
    """
    cfg = get_cfg()
    add_segalias_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_segalias_resnet_fpn_backbone" if fpn else "build_segalias_resnet_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.FPN.IN_FEATURES = list(STAGES)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.SEGALIAS.DAF.ENABLED = daf
    cfg.MODEL.SEGALIAS.FREQMIX.ENABLED = freqmix
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg
