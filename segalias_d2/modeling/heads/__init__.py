"""Semantic-segmentation heads; importing this module registers them in Detectron2's
SEM_SEG_HEADS_REGISTRY."""

from .upernet import PPM, FCNAuxHead, UPerNetDecoder, UPerNetHead, sem_seg_cross_entropy  # noqa: F401
