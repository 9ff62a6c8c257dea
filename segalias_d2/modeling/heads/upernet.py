"""UPerNet decode head with an auxiliary FCN head (MMSegmentation 0.25 ``UPerHead`` + ``FCNHead``),
the head of the Seg-Aliasing paper model (UPerNet-R50-V1c, 128 channels, auxiliary FCN on res4 with
loss weight 0.4).

Pure modules with plain arguments: :class:`PPM`, :class:`UPerNetDecoder`, :class:`FCNAuxHead`; the
Detectron2 head :class:`UPerNetHead` (``SEM_SEG_HEADS_REGISTRY`` name ``"UPerNetHead"``) combines
them, computes the losses and reads its arguments from the config in ``from_config`` only.

Data flow (every conv+norm+ReLU is a Detectron2 ``Conv2d`` without bias, with ``norm`` and ReLU;
every resize is bilinear with ``align_corners``):

1. PPM on res5: per pool scale s (1, 2, 3, 6): adaptive average pool to s x s -> 1x1 conv -> resize
   back; concat [res5, pooled...] -> 3x3 conv ("ppm_bottleneck") = the fourth lateral.
2. 1x1 lateral convs on res2..res4; top-down: lateral[i-1] += resize(lateral[i]) for i = 3, 2, 1
   (the PPM lateral itself is not modified).
3. 3x3 FPN convs on laterals 0..2 (the PPM lateral is used as is); resize levels 1..3 to level 0;
   concat [lvl0, lvl1, lvl2, PPM] -> 3x3 conv ("fpn_bottleneck") -> Dropout2d -> 1x1 conv with bias
   ("predictor").
4. Auxiliary FCN on res4 (training only): ``num_convs`` 3x3 convs -> Dropout2d -> 1x1 conv with
   bias.

Losses (MMSeg semantics): logits are resized to the label size, softmax cross-entropy with the
ignore label; ``loss_normalization="all_pixels"`` (MMSeg 0.25 ``avg_non_ignore=False``) divides the
summed loss by ALL pixels of the batch, ignored and padded ones included; ``"valid_pixels"``
(variant, Detectron2's usual mean) by the non-ignored ones. Total = loss_weight * CE(decode) +
aux_loss_weight * CE(aux).

Initialisation as MMSeg: conv+norm convs Kaiming-normal (fan_out, ReLU), norms weight 1 / bias 0;
the two predictors normal(std 0.01), bias 0.

Inference output: logits resized to ``common_stride`` x the res2 size (= the input size when it is a
multiple of ``common_stride``; Detectron2's ``sem_seg_postprocess`` then crops to the image and
resizes to the original size).
"""

from typing import Dict, List, Optional, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

__all__ = [
    "PPM",
    "UPerNetDecoder",
    "FCNAuxHead",
    "UPerNetHead",
    "LOSS_NORMALIZATIONS",
    "sem_seg_cross_entropy",
]

#: "all_pixels" = MMSeg 0.25 (avg_non_ignore=False, released); "valid_pixels" = Detectron2's mean
#: (variant)
LOSS_NORMALIZATIONS = ("all_pixels", "valid_pixels")


def _conv_norm_relu(in_channels, out_channels, kernel_size, norm):
    # MMSeg ConvModule(conv without bias, norm, ReLU), Kaiming-normal fan_out init, bias-free
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=kernel_size // 2,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )
    weight_init.c2_msra_fill(conv)
    return conv


def _predictor(in_channels, num_classes):
    conv = Conv2d(in_channels, num_classes, kernel_size=1, bias=True)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, 0.0)
    return conv


def _resize(x, size, align_corners):
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class PPM(nn.Module):
    """Pyramid pooling: per scale, adaptive average pool -> 1x1 conv+norm+ReLU -> bilinear resize
    back. Returns the list of resized maps in ``pool_scales`` order (the input itself is not
    included)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        pool_scales=(1, 2, 3, 6),
        norm="BN",
        align_corners=False,
    ):
        super().__init__()
        self.pool_scales = tuple(int(s) for s in pool_scales)
        if not self.pool_scales or any(s < 1 for s in self.pool_scales):
            raise ValueError(f"PPM pool_scales must be positive ints, got {pool_scales!r}")
        self.align_corners = bool(align_corners)
        self.convs = nn.ModuleList(
            _conv_norm_relu(in_channels, channels, 1, norm) for _ in self.pool_scales
        )

    def forward(self, x):
        size = x.shape[-2:]
        return [
            _resize(conv(F.adaptive_avg_pool2d(x, s)), size, self.align_corners)
            for s, conv in zip(self.pool_scales, self.convs)
        ]


class UPerNetDecoder(nn.Module):
    """UPerNet decoder (MMSeg ``UPerHead``) on four feature maps of increasing stride.

    Args:
        in_channels: channels of the four inputs (e.g. 256, 512, 1024, 2048 for res2..res5).
        channels: width of every internal conv (paper: 128; MMSeg default 512).
        num_classes: output channels of the predictor.
        pool_scales, norm, align_corners: as in MMSeg.
        dropout: ``Dropout2d`` probability before the predictor (0 = none).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        pool_scales=(1, 2, 3, 6),
        norm="BN",
        dropout=0.1,
        align_corners=False,
    ):
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if len(in_channels) != 4:
            raise ValueError(
                "UPerNetDecoder expects four input levels (res2..res5), got "
                f"in_channels={in_channels}"
            )
        self.align_corners = bool(align_corners)
        self.ppm = PPM(in_channels[-1], channels, pool_scales, norm, align_corners)
        self.ppm_bottleneck = _conv_norm_relu(
            in_channels[-1] + len(self.ppm.pool_scales) * channels, channels, 3, norm
        )
        self.lateral_convs = nn.ModuleList(
            _conv_norm_relu(c, channels, 1, norm) for c in in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            _conv_norm_relu(channels, channels, 3, norm) for _ in in_channels[:-1]
        )
        self.fpn_bottleneck = _conv_norm_relu(len(in_channels) * channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predictor = _predictor(channels, num_classes)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the resolution of ``feats[0]``."""
        top = feats[-1]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats[:-1])]
        laterals.append(self.ppm_bottleneck(torch.cat([top] + self.ppm(top), dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(
                laterals[i], laterals[i - 1].shape[-2:], self.align_corners
            )
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [_resize(o, size, self.align_corners) for o in outs[1:]]
        return self.predictor(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNAuxHead(nn.Module):
    """MMSeg ``FCNHead`` with ``concat_input=False``: ``num_convs`` 3x3 conv+norm+ReLU -> Dropout2d
    -> 1x1 conv."""

    def __init__(
        self, in_channels: int, channels: int, num_classes: int, num_convs=1, norm="BN", dropout=0.1
    ):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"FCNAuxHead num_convs must be >= 1, got {num_convs}")
        self.convs = nn.ModuleList(
            _conv_norm_relu(in_channels if i == 0 else channels, channels, 3, norm)
            for i in range(num_convs)
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predictor = _predictor(channels, num_classes)

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.predictor(self.dropout(x))


def sem_seg_cross_entropy(
    logits, targets, ignore_value=255, normalization="all_pixels", align_corners=False
):
    """Cross-entropy of ``logits`` (N, K, h, w) resized (bilinear) to ``targets`` (N, H, W).

    ``"all_pixels"``: sum over pixels / (N * H * W), ignored pixels count as 0 (MMSeg 0.25 default);
    ``"valid_pixels"``: mean over non-ignored pixels (Detectron2's ``reduction="mean"``).
    """
    if normalization not in LOSS_NORMALIZATIONS:
        raise ValueError(
            f"loss normalization must be one of {LOSS_NORMALIZATIONS}, got {normalization!r}"
        )
    logits = _resize(logits, targets.shape[-2:], align_corners)
    if normalization == "valid_pixels":
        return F.cross_entropy(logits, targets, reduction="mean", ignore_index=ignore_value)
    return F.cross_entropy(logits, targets, reduction="sum", ignore_index=ignore_value) / max(
        targets.numel(), 1
    )


@SEM_SEG_HEADS_REGISTRY.register()
class UPerNetHead(nn.Module):
    """Detectron2 semantic-segmentation head: :class:`UPerNetDecoder` plus an optional
    :class:`FCNAuxHead`.

    ``forward(features, targets)`` returns ``(logits, {})`` at inference (resized to
    ``common_stride`` x the first level) and ``(None, losses)`` in training with ``loss_sem_seg``
    and, with the auxiliary head, ``loss_sem_seg_aux``. The auxiliary head runs in training only.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_features: List[str],
        num_classes: int,
        channels: int = 128,
        pool_scales=(1, 2, 3, 6),
        norm="BN",
        dropout=0.1,
        align_corners=False,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        loss_normalization: str = "all_pixels",
        common_stride: int = 4,
        aux_in_feature: Optional[str] = "res4",
        aux_channels: int = 256,
        aux_num_convs: int = 1,
        aux_loss_weight: float = 0.4,
    ):
        super().__init__()
        in_features = list(in_features)
        missing = [
            f
            for f in in_features + ([aux_in_feature] if aux_in_feature else [])
            if f not in input_shape
        ]
        if missing:
            raise ValueError(
                f"UPerNetHead: feature(s) {missing} not produced by the backbone "
                f"(available: {sorted(input_shape)})"
            )
        if len(in_features) != 4:
            raise ValueError(
                f"UPerNetHead needs four input features (res2..res5), got {in_features}"
            )
        strides = [input_shape[f].stride for f in in_features]
        if strides != sorted(strides) or strides[0] != common_stride:
            raise ValueError(
                f"UPerNetHead: features {in_features} have strides {strides}; expected increasing "
                f"strides starting at the common stride {common_stride}"
            )
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"MODEL.SEGALIAS.UPERNET.LOSS_NORMALIZATION must be one of {LOSS_NORMALIZATIONS}, "
                f"got {loss_normalization!r}"
            )
        self.in_features = in_features
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.loss_normalization = loss_normalization
        self.common_stride = common_stride
        self.align_corners = bool(align_corners)
        self.decoder = UPerNetDecoder(
            [input_shape[f].channels for f in in_features],
            channels,
            num_classes,
            pool_scales,
            norm,
            dropout,
            align_corners,
        )
        self.aux_in_feature = aux_in_feature or None
        self.aux_loss_weight = aux_loss_weight
        self.aux = None
        if self.aux_in_feature:
            self.aux = FCNAuxHead(
                input_shape[aux_in_feature].channels,
                aux_channels,
                num_classes,
                aux_num_convs,
                norm,
                dropout,
            )

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        up = cfg.MODEL.SEGALIAS.UPERNET
        return {
            "input_shape": {k: v for k, v in input_shape.items()},
            "in_features": head.IN_FEATURES,
            "num_classes": head.NUM_CLASSES,
            "channels": head.CONVS_DIM,
            "pool_scales": tuple(up.POOL_SCALES),
            "norm": head.NORM,
            "dropout": up.DROPOUT,
            "align_corners": up.ALIGN_CORNERS,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
            "loss_normalization": up.LOSS_NORMALIZATION,
            "common_stride": head.COMMON_STRIDE,
            "aux_in_feature": up.AUX.IN_FEATURE if up.AUX.ENABLED else None,
            "aux_channels": up.AUX.CHANNELS,
            "aux_num_convs": up.AUX.NUM_CONVS,
            "aux_loss_weight": up.AUX.LOSS_WEIGHT,
        }

    def layers(self, features):
        """Decoder logits at the first level's resolution (stride ``common_stride``)."""
        return self.decoder([features[f] for f in self.in_features])

    def forward(self, features, targets=None):
        logits = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError(
                    "UPerNetHead: training needs targets (the 'sem_seg' of every input)"
                )
            return None, self.losses(logits, features, targets)
        size = [self.common_stride * s for s in logits.shape[-2:]]
        return _resize(logits, size, self.align_corners), {}

    def losses(self, logits, features, targets):
        ce = dict(
            ignore_value=self.ignore_value,
            normalization=self.loss_normalization,
            align_corners=self.align_corners,
        )
        losses = {"loss_sem_seg": self.loss_weight * sem_seg_cross_entropy(logits, targets, **ce)}
        if self.aux is not None:
            aux_logits = self.aux(features[self.aux_in_feature])
            losses["loss_sem_seg_aux"] = self.aux_loss_weight * sem_seg_cross_entropy(
                aux_logits, targets, **ce
            )
        return losses
