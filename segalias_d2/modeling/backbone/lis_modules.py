"""The backbone modules of "Instance Segmentation in the Dark" (LIS, IJCV 2023): AWD and SCB, with
the exact re-parameterisation of SCB for deployment.

* :class:`AdaptiveWeightedDownsample` (AWD, the released ``AdaDConv``): a per-channel, per-location
  3x3 convex filter predicted from the input and evaluated at stride ``s``. In the released
  caffe-style R50 it replaces the stride-2 sub-sampling in front of res3, res4 and res5 (the stages
  then run at stride 1).
* :class:`SmoothBranch` (the training-time branch of SCB, the released ``SmoothPriorBottleneck``):
  beside a 3x3 conv, a softmax-normalised learnable depthwise 3x3 low-pass (``llpf``) followed by a
  1x1 conv (``learnable_conv1``); the two are summed before the conv's norm. Both branches are
  linear with the same stride and zero padding, so the branch folds exactly into the 3x3 weight:
  :func:`fold_scb_weight` (``W'[o, i] = W[o, i] + W1[o, i] * K_i``, the low-pass filter indexed by
  the INPUT channel ``i``; the released ``utils/reparameter.py`` indexes it by the output channel,
  which is wrong whenever the channels' filters differ) and :func:`fold_scb_state_dict` for a whole
  checkpoint (``tools/fold_scb.py``).

Pure modules with plain arguments; placement lives in :mod:`.aa_resnet`, configuration in
:mod:`.build`. Formulas and the released behaviour they follow: docs/lis_modules.md.
"""

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .norm import FrozenStatsBatchNorm2d

__all__ = [
    "AdaptiveWeightedDownsample",
    "SmoothBranch",
    "SCB_INITS",
    "SCB_FOLDED_MARKER",
    "scb_lowpass_kernel",
    "fold_scb_weight",
    "fold_scb_state_dict",
    "awd_num_params",
    "scb_num_params",
]

#: the binomial kernel the released ``LLPFConv`` starts from ([1 2 1; 2 4 2; 1 2 1] / 16)
_BINOMIAL_3X3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
#: "released": the logits are the binomial VALUES, so the effective (softmax) kernel is near-box
#: (corners 0.1057, edges 0.1125, centre 0.1275); "gaussian" (variant): logits = log(binomial),
#: effective kernel = the binomial
SCB_INITS = ("released", "gaussian")
#: key (relative to the ResNet body) that :func:`fold_scb_state_dict` adds to a folded checkpoint
SCB_FOLDED_MARKER = "scb_folded"


class AdaptiveWeightedDownsample(nn.Module):
    """AWD: ``y[b,c,i,j] = sum_t K[b,c,t,i,j] * reflect_pad(x)[b, c, s*i + u, s*j + v]``, ``t = 3u +
    v``, with ``K = softmax_t(a[b,c] * BN(depthwise_conv3x3_stride_s(x))[b, c, t])`` and the channel
    factor ``a = W_b ReLU(W_a GAP(x))`` (1x1 convs ``C -> C/4 -> C``, no bias, no sigmoid: a
    per-image temperature/sign).

    As released (``AdaDConv`` with ``groups = C``, ``use_nin=False``): the logit conv zero-pads, the
    aggregated patches are reflect-padded; the BN is always in eval mode (the released
    ``norm_eval=True`` covers it), so its statistics stay at their initial (0, 1) and only its
    affine trains; PyTorch default initialisation everywhere. Output ``floor((H - 1) / s) + 1`` per
    side, like the stride-``s`` 1x1 conv it replaces. The weighted sum runs over 9 strided views of
    the padded input (:class:`_TapAggregate`), not the released unfold.

    Parameters: ``81 C`` (logit conv) + ``18 C`` (BN affine) + ``C^2 / 2`` (channel convs) = ``99 C
    + C^2 / 2``.

    Args:
        channels: C (input = output channels).
        stride: 2 (the released caffe-style R50: AWD is the downsampler) or 1 (a content-adaptive
            pre-filter).
        reduction: channel-factor compression (released: 4).
    """

    def __init__(self, channels, stride=2, reduction=4):
        super().__init__()
        if channels < 1 or channels // reduction < 1:
            raise ValueError(
                f"AdaptiveWeightedDownsample: channels ({channels}) // reduction ({reduction}) "
                "must be >= 1"
            )
        if stride not in (1, 2):
            raise ValueError(f"AdaptiveWeightedDownsample: stride must be 1 or 2, got {stride!r}")
        self.channels = channels
        self.stride = stride
        # released "weight_net": 9 tap logits per channel from that channel's own 3x3 neighbourhood
        self.tap_conv = nn.Conv2d(
            channels, 9 * channels, 3, stride=stride, padding=1, groups=channels, bias=False
        )
        self.tap_norm = FrozenStatsBatchNorm2d(9 * channels)
        # released "channel_net" (its sigmoid is commented out in the released code)
        self.channel_reduce = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.channel_expand = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def kernels(self, x):
        """The predicted kernels, ``(B, C, 9, H', W')``, each non-negative with unit sum over the 9
        taps."""
        b, c = x.shape[:2]
        logits = self.tap_norm(self.tap_conv(x))
        h_out, w_out = logits.shape[-2:]
        factor = self.channel_expand(F.relu(self.channel_reduce(x.mean(dim=(2, 3), keepdim=True))))
        return torch.softmax(logits.view(b, c, 9, h_out, w_out) * factor.view(b, c, 1, 1, 1), dim=2)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"AdaptiveWeightedDownsample({self.channels}) expects (N, {self.channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < 2:
            raise ValueError(
                f"AdaptiveWeightedDownsample needs H, W >= 2 for its reflect padding, got "
                f"{tuple(x.shape[-2:])}"
            )
        return _TapAggregate.apply(
            self.kernels(x), F.pad(x, (1, 1, 1, 1), mode="reflect"), self.stride
        )

    def extra_repr(self):
        return f"channels={self.channels}, stride={self.stride}"


def _tap_slices(stride, h_out, w_out):
    """(rows, cols) of tap t = 3u + v in the padded input: ``s * i + u`` for ``i < h_out`` (likewise
    columns)."""
    return [
        (
            slice(u, u + stride * (h_out - 1) + 1, stride),
            slice(v, v + stride * (w_out - 1) + 1, stride),
        )
        for u in range(3)
        for v in range(3)
    ]


class _TapAggregate(torch.autograd.Function):
    """``y = sum_t K[:, :, t] * xp[tap t]`` over 9 strided views of the padded input ``xp``.

    The released code unfolds ``xp`` into a 9x patch tensor; autograd through 9 strided views
    instead would zero-fill a full-size gradient per view. Here the forward accumulates in place and
    the backward writes each tap's gradient into one ``K``-sized and one ``xp``-sized buffer (same
    values, about 3x faster fwd+bwd on CPU). Computed in the promoted dtype of the two inputs
    (autocast: the softmax kernel is float32).
    """

    @staticmethod
    def forward(ctx, kernel, xp, stride):
        dtype = torch.promote_types(kernel.dtype, xp.dtype)
        ctx.dtypes = (kernel.dtype, xp.dtype)
        kernel, xp = kernel.to(dtype), xp.to(dtype)
        taps = _tap_slices(stride, *kernel.shape[-2:])
        rows, cols = taps[0]
        out = kernel[:, :, 0] * xp[:, :, rows, cols]
        for t in range(1, 9):
            rows, cols = taps[t]
            out.addcmul_(kernel[:, :, t], xp[:, :, rows, cols])
        ctx.save_for_backward(kernel, xp)
        ctx.stride = stride
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        kernel, xp = ctx.saved_tensors
        grad = grad.to(kernel.dtype)
        taps = _tap_slices(ctx.stride, *kernel.shape[-2:])
        grad_kernel = grad_xp = None
        if ctx.needs_input_grad[0]:
            grad_kernel = torch.empty_like(kernel)
            for t, (rows, cols) in enumerate(taps):
                torch.mul(grad, xp[:, :, rows, cols], out=grad_kernel[:, :, t])
            grad_kernel = grad_kernel.to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_xp = torch.zeros_like(xp)
            for t, (rows, cols) in enumerate(taps):
                grad_xp[:, :, rows, cols].addcmul_(grad, kernel[:, :, t])
            grad_xp = grad_xp.to(ctx.dtypes[1])
        return grad_kernel, grad_xp, None


def scb_lowpass_kernel(lowpass_logits):
    """softmax over the 9 taps of each channel: ``(P, 1, 3, 3)`` logits -> ``(P, 1, 3, 3)`` convex
    kernels."""
    p = lowpass_logits.shape[0]
    return torch.softmax(lowpass_logits.reshape(p, 9), dim=1).reshape(p, 1, 3, 3)


def fold_scb_weight(conv_weight, proj_weight, lowpass_logits):
    """The 3x3 weight equal to ``conv(x) + proj(lowpass(x))``: ``W'[o, i, u, v] = W[o, i, u, v] +
    W1[o, i] K_i[u, v]``.

    ``conv_weight`` (P_out, P_in, 3, 3), ``proj_weight`` (P_out, P_in, 1, 1) or (P_out, P_in),
    ``lowpass_logits`` (P_in, 1, 3, 3): K is indexed by the INPUT channel (the depthwise filter runs
    before the 1x1 mixes channels). Differentiable (the fused training forward uses it).
    """
    if conv_weight.dim() != 4 or tuple(conv_weight.shape[-2:]) != (3, 3):
        raise ValueError(
            "fold_scb_weight: conv weight must be (P_out, P_in, 3, 3), got "
            f"{tuple(conv_weight.shape)}"
        )
    p_out, p_in = conv_weight.shape[:2]
    w1 = proj_weight.reshape(proj_weight.shape[0], -1)
    if tuple(w1.shape) != (p_out, p_in) or tuple(lowpass_logits.shape) != (p_in, 1, 3, 3):
        raise ValueError(
            f"fold_scb_weight: expected proj ({p_out}, {p_in}[, 1, 1]) and low-pass ({p_in}, 1, 3, "
            f"3) for a {tuple(conv_weight.shape)} conv, got {tuple(proj_weight.shape)} and "
            f"{tuple(lowpass_logits.shape)}"
        )
    k = scb_lowpass_kernel(lowpass_logits).reshape(1, p_in, 3, 3)
    return conv_weight + w1[:, :, None, None].to(conv_weight.dtype) * k.to(conv_weight.dtype)


class SmoothBranch(nn.Module):
    """SCB's parallel branch of a 3x3 conv: ``proj(depthwise_3x3(x, softmax(lowpass_logits)))``,
    zero padding 1, the conv's stride, no bias. Its output is added to the conv's output before the
    conv's norm.

    Parameters: ``9 P_in + P_in P_out`` (released: ``9 P + P^2``). Initialisation as released: the
    low-pass logits are the binomial values (``init="released"``; ``"gaussian"`` = logits
    log(binomial), a variant whose effective kernel is the binomial itself); ``proj`` keeps
    PyTorch's default (not zero: the pretrained block's function changes from step 0, as in the
    released training).
    """

    def __init__(self, in_channels, out_channels=None, stride=1, init="released"):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if init not in SCB_INITS:
            raise ValueError(f"SmoothBranch: init must be one of {SCB_INITS}, got {init!r}")
        self.in_channels, self.out_channels, self.stride, self.init = (
            in_channels,
            out_channels,
            stride,
            init,
        )
        base = _BINOMIAL_3X3 if init == "released" else _BINOMIAL_3X3.log()
        self.lowpass_logits = nn.Parameter(base.expand(in_channels, 1, 3, 3).clone())
        self.proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def lowpass_kernel(self):
        return scb_lowpass_kernel(self.lowpass_logits)

    def forward(self, x):
        """The branch alone (two-branch form, as released)."""
        low = F.conv2d(
            x, self.lowpass_kernel().to(x.dtype), None, self.stride, 1, 1, self.in_channels
        )
        return self.proj(low)

    def fold(self, conv_weight):
        """``conv_weight`` with this branch folded in (see :func:`fold_scb_weight`)."""
        return fold_scb_weight(conv_weight, self.proj.weight, self.lowpass_logits)

    def extra_repr(self):
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}, init={self.init!r}"


_SCB_KEY = re.compile(r"^(?P<body>.*?)(?P<block>res[2-5]\.\d+\.)scb\.lowpass_logits$")


def fold_scb_state_dict(state_dict):
    """Fold every SCB branch of a state dict into its block's ``conv2.weight`` (exactly, in
    float64).

    For each ``...resN.i.scb.lowpass_logits`` the block's ``conv2.weight`` becomes
    :func:`fold_scb_weight` of it, and the block's ``scb.*`` entries are removed. A marker ``<body
    prefix>scb_folded`` is added, so that a model with SCB switched on refuses the folded weights
    (the branch would be counted twice) while the plain model (``MODEL.SEGALIAS.SCB.ENABLED False``)
    loads them. Returns ``(new OrderedDict, [folded block prefixes])``. Values may be tensors or
    numpy arrays; output tensors keep each conv weight's dtype.
    """
    sd = OrderedDict(
        (k, v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in state_dict.items()
    )
    folded, bodies = [], set()
    for key in list(sd):
        m = _SCB_KEY.match(key)
        if not m:
            continue
        block = m.group("body") + m.group("block")
        conv_key, proj_key = block + "conv2.weight", block + "scb.proj.weight"
        for needed in (conv_key, proj_key):
            if needed not in sd:
                raise KeyError(
                    f"fold_scb_state_dict: '{key}' has no partner '{needed}' in the checkpoint"
                )
        w = sd[conv_key]
        sd[conv_key] = fold_scb_weight(w.double(), sd[proj_key].double(), sd[key].double()).to(
            w.dtype
        )
        folded.append(block)
        bodies.add(m.group("body"))
    if not folded:
        raise ValueError(
            "fold_scb_state_dict: no SCB branch ('res*.*.scb.lowpass_logits') in the checkpoint"
        )
    stale = [k for k in sd if any(k.startswith(b + "scb.") for b in folded)]
    leftover = [k for k in sd if ".scb." in k and k not in stale]
    if leftover:
        raise KeyError(
            f"fold_scb_state_dict: SCB entries without a low-pass filter: {leftover[:4]}"
        )
    for k in stale:
        del sd[k]
    for body in sorted(bodies):
        sd[body + SCB_FOLDED_MARKER] = torch.tensor(True)
    return sd, folded


def awd_num_params(channels, reduction=4):
    """``99 C + 2 C (C / reduction)``: logit conv 81 C, BN affine 18 C, the two channel convs (for
    docs/bench)."""
    return 81 * channels + 18 * channels + 2 * channels * (channels // reduction)


def scb_num_params(channels):
    """``9 P + P^2`` per block (for docs/bench)."""
    return 9 * channels + channels * channels
