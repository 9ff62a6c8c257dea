"""Bench-only experiment: do not keep the DAF outputs for backward, recompute them (saved-tensor hooks).

In the DAF+FreqMix backbone the DAF output of res3/res4/res5 is the input of the stage's first block, whose
1x1 conv1 and 1x1 shortcut conv save it for their weight gradients: 114 MiB at 800x1344, batch 1, most of
the training-step memory overhead. The DAF input (the previous stage's output) is kept anyway (FPN's lateral
conv saves it), so the DAF output can be replaced, in the saved tensors of that stage, by a token that
recomputes it in backward (one more filter pass per stage). ``use_daf_recompute(model)`` patches an
``AAResNet``'s forward to do this; it measures what such a change in aa_resnet.py would give. Not part of the
package: the backbone module is unchanged.
"""
import types

import torch

from segalias_d2.modeling.backbone.aa_resnet import AAResNet


class _Recompute:
    def __init__(self, fn):
        self.fn, self.value = fn, None

    def get(self):
        if self.value is None:
            with torch.no_grad():
                self.value = self.fn()
        return self.value


def _hooks_replacing(y, fn):
    token = _Recompute(fn)
    # identity only: every tensor saved under the hooks keeps a reference to pack(), so a reference to y here
    # would keep y alive until backward
    key = (y.data_ptr(), tuple(y.shape), y.dtype)

    def pack(t):
        return token if (t.data_ptr(), tuple(t.shape), t.dtype) == key else t

    def unpack(t):
        return t.get() if isinstance(t, _Recompute) else t

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


def _forward(self, x):  # AAResNet.forward with the filtered stages run under the hooks
    outputs = {}
    x = self.stem(x)
    if "stem" in self._out_features:
        outputs["stem"] = x
    for name, stage in zip(self.stage_names, self.stages):
        if name in self.aa_filters:
            src, filt = x, self.aa_filters[name]
            x = filt(x)
            with _hooks_replacing(x, lambda src=src, filt=filt: filt(src)):
                x = stage(x)
        else:
            x = stage(x)
        if name in self._out_features:
            outputs[name] = x
    return outputs


def use_daf_recompute(model):
    """Patch every AAResNet inside ``model`` (in place); returns ``model``."""
    for m in model.modules():
        if isinstance(m, AAResNet):
            if m.num_classes is not None:
                raise ValueError("use_daf_recompute: only for feature backbones (num_classes=None)")
            m.forward = types.MethodType(_forward, m)
    return model
