"""Bench-only experiment: do not keep the DAF outputs for backward, recompute them (saved-tensor
hooks).

In the DAF+FreqMix backbone the DAF output of res3/res4/res5 is the input of the stage's first
block, whose
1x1 conv1 and 1x1 shortcut conv save it for their weight gradients: 114 MiB at 800x1344, batch 1,
most of the training-step memory overhead. The DAF input (the previous stage's output) is kept
anyway (FPN's lateral conv saves it), so the DAF output can be replaced, in the saved tensors of
that stage, by a token that recomputes it in backward (one more filter pass per stage).
``use_daf_recompute(model)`` does this with module hooks (DAF forward hook: remember input and
output; stage pre-hook / hook: run the stage under ``torch.autograd.graph.saved_tensors_hooks`` that
swap that output for the token). It measures what the same change made in ``AAResNet.forward`` would
give; the package is unchanged.
"""

import torch

from segalias_d2.modeling.backbone.aa_resnet import AAResNet
from segalias_d2.modeling.fourier_filters import DeAliasingFilter


class _Recompute:
    def __init__(self, fn):
        self.fn, self.value = fn, None

    def get(self):
        if self.value is None:
            with torch.no_grad():
                self.value = self.fn()
        return self.value


def _key(t):
    return t.data_ptr(), tuple(t.shape), t.dtype


def _hooks_replacing(key, fn):
    # identity only: every tensor saved under the hooks keeps a reference to pack(), so holding the
    # DAF output here would keep it alive until backward
    token = _Recompute(fn)
    return torch.autograd.graph.saved_tensors_hooks(
        lambda t: token if _key(t) == key else t,
        lambda t: t.get() if isinstance(t, _Recompute) else t,
    )


def use_daf_recompute(model):
    """Install the hooks on every DAF-filtered stage of every AAResNet inside ``model``; returns
    ``model``."""
    for net in [m for m in model.modules() if isinstance(m, AAResNet)]:
        for name, filt in net.aa_filters.items():
            if not isinstance(filt, DeAliasingFilter):
                continue
            slot = {}

            def remember(mod, inp, out, slot=slot):
                if torch.is_grad_enabled():
                    slot.update(src=inp[0], key=_key(out), filt=mod)

            def enter(mod, inp, slot=slot):
                if slot and _key(inp[0]) == slot["key"]:
                    src, filt = slot["src"], slot["filt"]
                    slot["ctx"] = _hooks_replacing(slot["key"], lambda: filt(src))
                    slot["ctx"].__enter__()

            def leave(mod, inp, out, slot=slot):
                ctx = slot.pop("ctx", None)
                slot.clear()
                if ctx is not None:
                    ctx.__exit__(None, None, None)

            filt.register_forward_hook(remember)
            stage = getattr(net, name)
            stage.register_forward_pre_hook(enter)
            stage.register_forward_hook(leave)
    return model
