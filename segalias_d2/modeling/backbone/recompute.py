"""Recompute a cheap, parameter-free filter's output in backward instead of keeping it.

In the anti-aliased ResNet the DAF output of res3/res4/res5 is the input of the stage's first
block, whose conv1 and shortcut conv save it for their weight gradients: the largest part of the
training-step memory the filters add (BENCHMARKS.md, issue 15). The filter's input (the previous
stage's output) is kept anyway in the usual set-ups (FPN's lateral conv saves it, and so does that
stage's last ReLU when the stage trains), so the output can be dropped after the forward and
recomputed from the input when backward needs it: one more filter pass per stage, the same
gradients. Where nothing else keeps the input, the recompute keeps it instead of the output (the
same size): no saving, no loss.

:func:`recompute_saved_copies_of` does this with ``torch.autograd.graph.saved_tensors_hooks``:
while the stage runs, every tensor that autograd saves and that *is* the filter output (same
storage, offset, shape, strides and dtype) is replaced by a token that recomputes it (once, shared
by all nodes that saved it) in backward. Tensors derived from it (an autocast half copy, a padded
copy) are saved as usual.

Limits: the hooks take precedence over any outer ``saved_tensors_hooks`` (e.g. CPU offloading)
for the tensors saved inside the stage, and the recomputed value is made without a graph, so a
double backward (``create_graph=True``) through the stage input is not supported in this mode.
"""

import contextlib

import torch

__all__ = ["recompute_saved_copies_of"]


class _RecomputeToken:
    """Stands in for a saved tensor; the value is computed at the first unpack and shared."""

    __slots__ = ("_fn", "_value")

    def __init__(self, fn):
        self._fn, self._value = fn, None

    def get(self):
        if self._value is None:
            with torch.no_grad():
                self._value = self._fn()
        return self._value


def _identity(t):
    try:
        return (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype)
    except (RuntimeError, NotImplementedError):  # no plain storage (sparse, nested, ...): not ours
        return None


@contextlib.contextmanager
def recompute_saved_copies_of(tensor, recompute):
    """Within the block, autograd saves ``tensor`` as a token that calls ``recompute()`` (which must
    return a tensor equal to ``tensor``) in backward, instead of keeping ``tensor`` alive.

    A no-op when no graph is being recorded. ``tensor`` need not require grad: a frozen filter
    input still has its copy saved by the next trainable conv (for the weight gradient). The
    token must not hold ``tensor`` itself (every saved tensor keeps a reference to what pack
    returned), only what ``recompute`` closes over.
    """
    if not torch.is_grad_enabled():
        yield
        return
    key = _identity(tensor)
    token = _RecomputeToken(recompute)

    def pack(t):
        return token if _identity(t) == key else t

    def unpack(saved):
        return saved.get() if isinstance(saved, _RecomputeToken) else saved

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield
