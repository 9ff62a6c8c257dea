"""Normalisation layers the segalias builders understand beyond Detectron2's ``get_norm`` names.

``"FrozenStatsBN"`` is the BatchNorm of the released LIS backbone (MMDetection
``norm_cfg=dict(type='BN', requires_grad=True)`` with ``norm_eval=True``): the running statistics
never change (the forward always normalises with them, in training too), while the affine weight and
bias are trained. Detectron2's ``FrozenBN`` freezes both; ``BN`` updates both. Stages frozen by
``MODEL.BACKBONE.FREEZE_AT`` are still converted to ``FrozenBatchNorm2d`` by Detectron2 (a subclass
of ``nn.BatchNorm2d`` is converted like any BatchNorm), as the released ``frozen_stages`` does.

Detectron2's ``get_norm`` takes a string from a fixed table or a callable. The segalias backbone/FPN
builders turn our names into the callable (:func:`resolve_norm`); heads that Detectron2 builds from
a config string cannot take them, and :func:`check_head_norms` says so before the model is built
half-way.
"""

import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenStatsBatchNorm2d", "SEGALIAS_NORMS", "resolve_norm", "check_head_norms"]


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics and never updates them.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` in train and eval mode;
    ``weight`` and ``bias`` are ordinary trainable parameters. State-dict keys are those of
    ``nn.BatchNorm2d``, so Detectron2 checkpoints (BN or FrozenBN) load into it unchanged, and
    optimizers treat it as a norm layer (``SOLVER.WEIGHT_DECAY_NORM``).
    """

    def forward(self, x):
        # training=False: normalise with the running statistics and leave them (and the counter)
        # untouched
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


#: our norm names -> factory(channels)
SEGALIAS_NORMS = {"FrozenStatsBN": FrozenStatsBatchNorm2d}


def resolve_norm(norm):
    """Our norm name -> its factory; anything else (Detectron2 names, "", callables) is returned
    unchanged."""
    if isinstance(norm, str) and norm in SEGALIAS_NORMS:
        return SEGALIAS_NORMS[norm]
    return norm


# heads Detectron2 builds with get_norm(cfg string); our names would fail there with a bare KeyError
_HEAD_NORM_KEYS = (
    ("ROI_BOX_HEAD", "NORM"),
    ("ROI_MASK_HEAD", "NORM"),
    ("ROI_KEYPOINT_HEAD", "NORM"),
    ("SEM_SEG_HEAD", "NORM"),
)


def check_head_norms(cfg):
    """Raise a clear error when a Detectron2-built head is configured with one of our norm names."""
    for node, key in _HEAD_NORM_KEYS:
        value = cfg.MODEL.get(node, {}).get(key, "")
        if isinstance(value, str) and value in SEGALIAS_NORMS:
            raise ValueError(
                f"MODEL.{node}.{key} = {value!r}: this norm is provided by segalias_d2 for "
                "MODEL.RESNETS.NORM and "
                "MODEL.FPN.NORM only; heads built by Detectron2 accept its own names (BN, SyncBN, "
                "FrozenBN, GN, ...)"
            )
