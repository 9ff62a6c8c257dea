"""Anti-aliased ResNet and ResNet-FPN backbones (Seg-Aliasing, ICLR 2024) for Detectron2.

The modules; their builders from config (``build_segalias_resnet_backbone``,
``build_segalias_resnet_fpn_backbone``, registered in ``BACKBONE_REGISTRY``) are in :mod:`.build`.

What differs from Detectron2's ResNet:

* DAF (or the BlurPool baseline) filters the *input* of the configured stages (paper: res3, res4,
  res5), i.e. the copy that flows into the next stage; the features returned to FPN/heads are the
  unfiltered stage outputs.
* :class:`AABottleneckBlock` puts FreqMix after conv2 and before conv2's norm (paper: every
  bottleneck of res3-res5). State-dict keys are those of Detectron2's ``BottleneckBlock`` plus
  ``*.freqmix.*``, so stock Detectron2/MSRA/torchvision conversions load unchanged.
* Optional ResNet-V1c "deep" stem (3x3 convs 32/32/64 + max-pool), as in the paper's ResNet-50-V1c.
* LIS modules (:mod:`.lis_modules`, docs/lis_modules.md): AWD (``awd.resN.*``) runs on a stage's
  input after the DAF/BlurPool slot; with stride 2 it takes over the stage's stride (the released
  caffe-style R50). SCB (``resN.i.scb.*``) adds its low-pass branch to conv2's output, before
  FreqMix and conv2's norm.
"""

import contextlib

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, FrozenBatchNorm2d, get_norm
from detectron2.modeling.backbone import BottleneckBlock, ResNet
from torch import nn

from ..fourier_filters import FreqMix
from .lis_modules import SCB_FOLDED_MARKER, SmoothBranch
from .recompute import recompute_saved_copies_of

__all__ = [
    "AABottleneckBlock",
    "DeepStem",
    "AAResNet",
]

STAGE_NAMES = ("res2", "res3", "res4", "res5")
STEM_TYPES = ("basic", "deep")
_BLOCKS_PER_DEPTH = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class _ConvNormAfter(Conv2d):
    """Detectron2 ``Conv2d`` whose forward is the convolution only: the block applies ``.norm``
    itself, after FreqMix. Keeping the norm as the ``conv2.norm`` attribute keeps Detectron2's
    state-dict keys."""

    def forward(self, x):
        return nn.Conv2d.forward(self, x)


class AABottleneckBlock(BottleneckBlock):
    """Detectron2's ``BottleneckBlock`` with optional SCB and FreqMix between conv2 and conv2's
    norm.

    conv1 -> norm -> ReLU -> conv2 [+ SCB branch] -> [FreqMix] -> norm -> ReLU -> conv3 -> norm ->
    (+ shortcut) -> ReLU. Detectron2 builds and initialises every layer; the block adds
    ``self.freqmix`` (PyTorch's default init, paper: "allno0init") and ``self.scb``
    (:class:`SmoothBranch`, released init), so state-dict keys are those of ``BottleneckBlock`` plus
    ``freqmix.*`` / ``scb.*`` (tokens for the LR multipliers). SCB sits before FreqMix so that it
    stays foldable into conv2. ``scb_fused`` (default) runs conv2 with the folded weight
    ``W2 + W1 K_i`` (one conv, mathematically the released two-branch sum); ``False`` runs the two
    branches. With neither module it is Detectron2's block unchanged.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        freqmix=False,
        freqmix_cutoff=0.35,
        freqmix_reduction=16,
        freqmix_gate="released",
        scb=False,
        scb_init="released",
        scb_fused=True,
        **kwargs,
    ):
        super().__init__(in_channels, out_channels, **kwargs)
        self.freqmix = None
        self.scb = None
        self.scb_fused = scb_fused
        if freqmix or scb:
            # conv2 stays the module Detectron2 built and initialised (weights, norm, RNG draws);
            # re-classing it changes only its forward, so its norm can run after SCB/FreqMix
            self.conv2.__class__ = _ConvNormAfter
        if scb:
            c = self.conv2
            if c.groups != 1 or c.dilation != (1, 1) or c.padding != (1, 1):
                raise ValueError(
                    "SCB needs a plain 3x3 conv2 (groups 1, dilation 1, padding 1) to stay "
                    f"foldable; got groups={c.groups}, dilation={c.dilation}"
                )
            self.scb = SmoothBranch(
                c.in_channels, c.out_channels, stride=c.stride[0], init=scb_init
            )
        if freqmix:
            self.freqmix = FreqMix(
                self.conv2.out_channels, freqmix_cutoff, freqmix_reduction, freqmix_gate
            )

    def _conv2(self, x):
        c = self.conv2
        if self.scb is None:
            return c(x)  # the convolution only (_ConvNormAfter)
        if self.scb_fused:  # one conv with W2 + W1 K_i (conv2's forward hooks do not fire here)
            return F.conv2d(
                x, self.scb.fold(c.weight), c.bias, c.stride, c.padding, c.dilation, c.groups
            )
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
        out += self.shortcut(x) if self.shortcut is not None else x  # in place, as Detectron2 does
        return F.relu_(out)


class DeepStem(CNNBlockBase):
    """ResNet-V1c deep stem: 3x3 s2 (in->out/2), 3x3 (out/2->out/2), 3x3 (out/2->out), each
    norm+ReLU, then max-pool 3x3 s2 p1. Stride 4. With ``out_channels=64`` this is mmcv's ResNetV1c
    stem (32/32/64)."""

    def __init__(self, in_channels=3, out_channels=64, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        if out_channels % 2:
            raise ValueError(f"DeepStem out_channels must be even, got {out_channels}")
        mid = out_channels // 2
        self.in_channels = in_channels
        self.conv1 = Conv2d(
            in_channels, mid, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, mid)
        )
        self.conv2 = Conv2d(mid, mid, 3, stride=1, padding=1, bias=False, norm=get_norm(norm, mid))
        self.conv3 = Conv2d(
            mid, out_channels, 3, stride=1, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.conv1, self.conv2, self.conv3):
            weight_init.c2_msra_fill(layer)

    def forward(self, x):
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class AAResNet(ResNet):
    """Detectron2 ``ResNet`` whose stage inputs can be low-pass filtered (DAF or BlurPool) and
    downsampled (AWD).

    Args:
        stem, stages, num_classes, out_features, freeze_at: as in Detectron2's ``ResNet``.
        stage_filters (dict[str, nn.Module]): stage name -> filter applied to that stage's input.
            Filters for stages not built (because of ``out_features``) are dropped.
        stage_downsamplers (dict[str, nn.Module]): stage name -> module with a ``stride`` attribute
            (AWD) applied to that stage's input after its filter; its stride counts towards the
            stage's output stride. Frozen with its stage (``freeze_at``).
        recompute_filter_outputs (bool): when a graph is recorded, do not keep a stage filter's
            output for backward but recompute it from the filter's input (which is kept anyway)
            when backward needs it: same gradients, less memory, one more filter pass per stage
            (:mod:`.recompute`). Only for parameter-free filters (DAF, BlurPool).
    """

    def __init__(
        self,
        stem,
        stages,
        num_classes=None,
        out_features=None,
        freeze_at=0,
        stage_filters=None,
        stage_downsamplers=None,
        recompute_filter_outputs=True,
    ):
        super().__init__(
            stem, stages, num_classes=num_classes, out_features=out_features, freeze_at=freeze_at
        )
        built = {}
        for kind, modules in (
            ("stage_filters", stage_filters),
            ("stage_downsamplers", stage_downsamplers),
        ):
            modules = dict(modules or {})
            for name in modules:
                if name not in STAGE_NAMES:
                    raise ValueError(
                        f"{kind}: unknown stage {name!r}; expected one of {STAGE_NAMES}"
                    )
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
            if (
                name in self.awd and freeze_at >= idx
            ):  # Detectron2's rule: freeze_at >= 2 freezes res2, ...
                for p in self.awd[name].parameters():
                    p.requires_grad_(False)
                self.awd[name] = FrozenBatchNorm2d.convert_frozen_batchnorm(self.awd[name])
        self.recompute_filter_outputs = bool(recompute_filter_outputs)
        if self.recompute_filter_outputs:
            for name, filt in self.aa_filters.items():
                if list(filt.parameters()):
                    raise ValueError(
                        f"recompute_filter_outputs needs parameter-free stage filters; the filter "
                        f"of {name} ({type(filt).__name__}) has parameters"
                    )
        self._has_scb = any(
            getattr(b, "scb", None) is not None for stage in self.stages for b in stage
        )

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(
                f"AAResNet takes an input of shape (N, C, H, W). Got {tuple(x.shape)} instead!"
            )
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = self._filtered_stage(name, stage, x)
            if name in self._out_features:
                outputs[name] = x
        if self.num_classes is not None:
            x = self.avgpool(x).flatten(1)
            x = self.linear(x)
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs

    def _filtered_stage(self, name, stage, x):
        """[filter] -> [AWD] -> stage. Only the copy flowing into the stage is filtered; the caller
        keeps the stage outputs (the raw features)."""
        filt = self.aa_filters[name] if name in self.aa_filters else None
        y = x if filt is None else filt(x)
        keep = filt is None or not self.recompute_filter_outputs
        with contextlib.nullcontext() if keep else recompute_saved_copies_of(y, lambda: filt(x)):
            return stage(self.awd[name](y) if name in self.awd else y)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # SCB checkpoints: a folded one (marker) loads into the plain model only, an unfolded one
        # into SCB only
        marker = prefix + SCB_FOLDED_MARKER
        if self._has_scb and marker in state_dict:
            raise ValueError(
                f"the checkpoint has its SCB branches folded into conv2 ('{marker}'): load it with "
                "MODEL.SEGALIAS.SCB.ENABLED False (this model has SCB on and would add the branch "
                "twice)"
            )
        if not self._has_scb:
            state_dict.pop(marker, None)
            branch = next((k for k in state_dict if k.startswith(prefix) and ".scb." in k), None)
            if branch is not None:
                raise ValueError(
                    f"the checkpoint has SCB branches ('{branch}') but this model has SCB off: "
                    "build it with MODEL.SEGALIAS.SCB.ENABLED True, or fold the checkpoint first "
                    "(tools/fold_scb.py) and load the folded file"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
