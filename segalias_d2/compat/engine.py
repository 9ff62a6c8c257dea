"""Trainer behaviours that differ between Detectron2 builds, each detected by feature.

Used by :class:`segalias_d2.engine.Trainer`:

* :func:`trainer_saves_optimizer_state`: main (and the backport) checkpoint the optimizer through
  ``DefaultTrainer.state_dict``; older v0.6 builds need it added as a checkpointable.
* :func:`cpu_models_get_no_ddp_device_ids`: ``create_ddp_model`` passes ``device_ids=[local_rank]``
  to DistributedDataParallel, which rejects ``device_ids`` for a CPU module, so CPU multi-process
  training through ``launch`` (GLOO) would fail on Detectron2 main.
* :func:`end_checkpointer_load`: main's ``DetectionCheckpointer.load`` keeps the URL of the file
  being loaded in ``_parsed_url_during_load`` and asserts it is None on entry, but does not reset it
  when reading fails, so the next ``load`` (the --resume fallback to an older checkpoint) would trip
  that assertion.
* :func:`start_data_loader_iterator`: main creates the data-loader iterator lazily, inside the first
  training step; creating it draws DataLoader's base seed from torch's global RNG, which would break
  bit-exact resume.
"""

import contextlib

from detectron2.engine import DefaultTrainer, defaults

__all__ = [
    "trainer_saves_optimizer_state",
    "cpu_models_get_no_ddp_device_ids",
    "start_data_loader_iterator",
    "end_checkpointer_load",
]


def trainer_saves_optimizer_state() -> bool:
    """Detectron2 main (and our backport) checkpoint the optimizer via
    ``DefaultTrainer.state_dict``."""

    return "state_dict" in DefaultTrainer.__dict__


@contextlib.contextmanager
def cpu_models_get_no_ddp_device_ids():
    """Within the block, Detectron2's ``create_ddp_model`` wraps a CPU model with
    ``device_ids=None``.

    ``DefaultTrainer.__init__`` calls ``detectron2.engine.defaults.create_ddp_model(model, ...)``,
    which (on main) adds ``device_ids=[comm.get_local_rank()]`` unless the caller passed
    ``device_ids``; DistributedDataParallel raises ValueError for ``device_ids`` with a CPU module.
    An explicit ``device_ids=None`` for a CPU model is what DDP expects on every Detectron2 (both
    builds honour an explicit value), so no version check is needed. CUDA models are untouched, and
    the original function is restored on exit.
    """

    original = defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if "device_ids" not in kwargs and not any(p.is_cuda for p in model.parameters()):
            kwargs["device_ids"] = None
        return original(model, **kwargs)

    defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = original


def start_data_loader_iterator(simple_trainer) -> bool:
    """Create the inner trainer's data-loader iterator now, outside any training step.

    On Detectron2 main ``SimpleTrainer._data_loader_iter`` is a property that calls
    ``iter(data_loader)`` on first use, i.e. inside ``run_step`` after the ``before_step`` hooks
    have seeded the RNGs; ``iter()`` draws DataLoader's base seed from torch's global RNG. An
    uninterrupted run then draws it in step 0, a resumed run in its first step after the checkpoint,
    so the resumed run's RPN/ROI sampling diverges (observed: ``backbone.fpn_lateral2.weight``
    differs after 2 + resume + 2 iterations). Creating the iterator up front, as v0.6 does in the
    constructor, keeps every step's random stream a function of (seed, iteration) alone.

    Returns True when the build creates it lazily (and it was created now).
    """
    lazy = isinstance(getattr(type(simple_trainer), "_data_loader_iter", None), property)
    if lazy:
        simple_trainer._data_loader_iter  # noqa: B018  (the property creates the iterator)
    return lazy


def end_checkpointer_load(checkpointer) -> None:
    """Reset the per-load state a failed ``DetectionCheckpointer.load`` leaves behind (Detectron2
    main; v0.6 has no such state)."""
    if getattr(checkpointer, "_parsed_url_during_load", None) is not None:
        checkpointer._parsed_url_during_load = None
