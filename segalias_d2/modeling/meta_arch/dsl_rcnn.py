"""DSL (disturbance suppression learning, LIS, IJCV 2023): Detectron2's ``GeneralizedRCNN`` trained
on clean/noisy pairs, as the released ``MaskRCNNNoiseInv``.

Training, per iteration: the whole detector runs on the clean twin (``"clean_image"`` of each input)
and on the noisy image (``"image"``), with the same ground truth; RPN and ROI sampling run
independently in each pass. The loss is

    L = L_det(noisy) + L_det(clean)
        + sum_l LOSS_WEIGHT * mean( min((F_l(noisy) - F_l(clean))^2, CLAMP) )

over the backbone STAGE outputs ``F_l`` (``MODEL.SEGALIAS.DSL.IN_FEATURES``, C2-C5 = the FPN inputs,
not its outputs), mean over every element (padding included), no stop-gradient on either branch
(released: 0.01, 0.1). Loss keys: the noisy pass's own (``loss_cls``, ``loss_rpn_cls``, ...), the
clean pass's with a ``clean_`` prefix (as released), and ``loss_dsl``; each level's term is logged
as ``dsl/<level>``. Inference is the ordinary single pass of ``GeneralizedRCNN`` on ``"image"``; the
parameters are those of ``GeneralizedRCNN`` (checkpoints load either way).
"""

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

__all__ = ["DSLGeneralizedRCNN", "dsl_feature_loss"]

CLEAN_PREFIX = "clean_"


def dsl_feature_loss(noisy, clean, weight=0.01, clamp=0.1):
    """``(sum_l weight * mean(min((noisy[l] - clean[l])^2, clamp)), {l: term})`` over the keys of
    ``noisy``.

    Gradients reach both inputs (``d/d noisy = -d/d clean``) and vanish where the squared difference
    exceeds ``clamp``. Computed in float32 at least (features may be bf16/fp16 under autocast).
    """
    terms = {}
    for name, a in noisy.items():
        if name not in clean:
            raise KeyError(f"dsl_feature_loss: clean features lack '{name}' (have {sorted(clean)})")
        b = clean[name]
        if a.shape != b.shape:
            raise ValueError(
                f"dsl_feature_loss: '{name}' is {tuple(a.shape)} for the noisy image and "
                f"{tuple(b.shape)} for the clean twin; the pair must have the same geometry"
            )
        dtype = torch.promote_types(a.dtype, torch.float32)
        diff = a.to(dtype) - b.to(dtype)
        terms[name] = weight * (diff * diff).clamp(max=clamp).mean()
    if not terms:
        raise ValueError("dsl_feature_loss: no features to compare")
    return sum(terms.values()), terms


@META_ARCH_REGISTRY.register()
class DSLGeneralizedRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` with the DSL training objective (module docstring);
    ``MODEL.META_ARCHITECTURE`` switch."""

    @configurable
    def __init__(self, *, dsl_in_features, dsl_loss_weight=0.01, dsl_clamp=0.1, **kwargs):
        """
        Args:
            dsl_in_features: backbone stage outputs compared (e.g.
                ``["res2", "res3", "res4", "res5"]``); taken from ``backbone.bottom_up`` for FPN
                backbones, from the backbone's own outputs otherwise.
            dsl_loss_weight, dsl_clamp: the per-level weight and the clamp of the squared
                difference.
            kwargs: ``GeneralizedRCNN``'s arguments.
        """
        super().__init__(**kwargs)
        self.dsl_in_features = list(dsl_in_features)
        self.dsl_loss_weight = float(dsl_loss_weight)
        self.dsl_clamp = float(dsl_clamp)
        if not self.dsl_in_features:
            raise ValueError("DSLGeneralizedRCNN: MODEL.SEGALIAS.DSL.IN_FEATURES is empty")
        if self.dsl_loss_weight < 0 or self.dsl_clamp <= 0:
            raise ValueError(
                "DSLGeneralizedRCNN: MODEL.SEGALIAS.DSL.LOSS_WEIGHT must be >= 0 and CLAMP > 0, "
                f"got {dsl_loss_weight} and {dsl_clamp}"
            )
        stage_net = getattr(self.backbone, "bottom_up", self.backbone)
        available = list(stage_net.output_shape())
        missing = [f for f in self.dsl_in_features if f not in available]
        if missing:
            raise ValueError(
                f"MODEL.SEGALIAS.DSL.IN_FEATURES {missing} are not outputs of the backbone's "
                f"stages {available} (MODEL.RESNETS.OUT_FEATURES)"
            )

    @classmethod
    def from_config(cls, cfg):
        if "SEGALIAS" not in cfg.MODEL or "SEGALIAS" not in cfg.INPUT:
            raise KeyError(
                "cfg.MODEL.SEGALIAS is missing: call segalias_d2.add_segalias_config(cfg) first"
            )
        inp = cfg.INPUT.SEGALIAS
        if inp.CLEAN_TWIN == "none" and not (inp.SYNTHESIS.ENABLED and inp.SYNTHESIS.RETURN_CLEAN):
            raise ValueError(
                "MODEL.META_ARCHITECTURE 'DSLGeneralizedRCNN' trains on clean/noisy pairs: set "
                "INPUT.SEGALIAS.CLEAN_TWIN to 'synthetic' (with INPUT.SEGALIAS.SYNTHESIS.ENABLED) "
                "or 'pair' (real pairs, records with 'clean_file_name')"
            )
        ret = super().from_config(cfg)
        dsl = cfg.MODEL.SEGALIAS.DSL
        ret.update(
            dsl_in_features=dsl.IN_FEATURES, dsl_loss_weight=dsl.LOSS_WEIGHT, dsl_clamp=dsl.CLAMP
        )
        return ret

    def _detector_pass(self, images, gt_instances):
        """One ordinary training pass: (losses, stage features for DSL, proposals)."""
        stage_net = getattr(self.backbone, "bottom_up", None)
        captured = {}
        if (
            stage_net is not None
        ):  # FPN: its forward calls bottom_up internally and returns only p2..p6
            handle = stage_net.register_forward_hook(
                lambda module, inputs, outputs: captured.update(outputs)
            )
            try:
                features = self.backbone(images.tensor)
            finally:
                handle.remove()
        else:
            features = self.backbone(images.tensor)
            captured = features
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses = dict(detector_losses)
        losses.update(proposal_losses)
        return losses, {k: captured[k] for k in self.dsl_in_features}, proposals

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        if self.proposal_generator is None:
            raise ValueError(
                "DSLGeneralizedRCNN needs a proposal generator (precomputed proposals are not "
                "supported)"
            )
        for i, x in enumerate(batched_inputs):
            missing = [k for k in ("clean_image", "instances") if k not in x]
            if missing:
                raise KeyError(
                    f"DSLGeneralizedRCNN: training input {i} ({x.get('file_name', '?')}) has no "
                    f"{missing}: DSL needs each image's clean twin (INPUT.SEGALIAS.CLEAN_TWIN) and "
                    "its instances"
                )
            if x["clean_image"].shape != x["image"].shape:
                raise ValueError(
                    f"DSLGeneralizedRCNN: training input {i} ({x.get('file_name', '?')}): clean "
                    "twin "
                    f"{tuple(x['clean_image'].shape)} vs image {tuple(x['image'].shape)}; the pair "
                    "must share its geometry"
                )
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        # released order: the clean image first, then its noisy twin, same ground truth
        clean = self.preprocess_image([{"image": x["clean_image"]} for x in batched_inputs])
        clean_losses, clean_features, _ = self._detector_pass(clean, gt_instances)
        noisy = self.preprocess_image(batched_inputs)
        losses, noisy_features, proposals = self._detector_pass(noisy, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        for k, v in clean_losses.items():
            losses[CLEAN_PREFIX + k] = v
        total, terms = dsl_feature_loss(
            noisy_features, clean_features, self.dsl_loss_weight, self.dsl_clamp
        )
        losses["loss_dsl"] = total
        storage = get_event_storage()
        for name, value in terms.items():
            storage.put_scalar(f"dsl/{name}", float(value.detach()))
        return losses
