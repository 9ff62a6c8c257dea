"""Detectron2's DetectionCheckpointer made safe against faults (used by the trainer and
tools/train_net.py).

* Atomic writes: every file the checkpointer writes (``model_*.pth``, ``model_final.pth``,
  ``last_checkpoint``) goes to a temporary file in the same folder, is fsync'ed and then
  ``os.replace``'d over the target, so a kill or a full disk mid-save leaves the previous file
  intact (never a truncated ``.pth``).
* Unreadable files (a truncated ``.pth``, a text file) raise :class:`CheckpointReadError` naming the
  file, instead of torch's traceback (which advises ``weights_only=False``: never needed for our
  checkpoints).
* ``resume_or_load(resume=True)``: when the newest checkpoint (named by ``last_checkpoint``) cannot
  be read, or ``last_checkpoint`` itself is corrupt, a warning names it and the newest intact
  ``model_*.pth`` of the folder is loaded; none intact is a :class:`CheckpointReadError`.
* ``min_match``: weights that fill too few of the model's tensors are refused
  (:class:`WeightsMismatchError`, reporting N of M tensors) before anything runs on a randomly
  initialised model.
"""

import logging
import os
import re
from dataclasses import dataclass
from typing import Optional

from detectron2.checkpoint import DetectionCheckpointer

from .. import compat
from ..config import SegAliasSetupError

__all__ = [
    "SafeDetectionCheckpointer",
    "CheckpointReadError",
    "WeightsMismatchError",
    "WeightsMatchPolicy",
    "atomic_open",
    "checkpoint_candidates",
    "RESUME_MIN_FRACTION",
]

logger = logging.getLogger(__name__)


class CheckpointReadError(SegAliasSetupError):
    """A checkpoint / weights file that cannot be read (one line naming it)."""


class WeightsMismatchError(SegAliasSetupError):
    """Weights whose names/shapes fill too few tensors of the model."""


class _AtomicFile:
    """A write-mode file on ``<dir>/.<name>.tmp-<pid>``; ``close()`` flushes, fsyncs and renames it
    onto the target, a failure (exception inside ``with``) removes it and leaves the target as it
    was."""

    def __init__(self, path, mode):
        self.path = path
        self.tmp = os.path.join(
            os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp-{os.getpid()}"
        )
        self._f = open(self.tmp, mode)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def close(self):
        if self._f.closed:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except BaseException:
            self.abort()
            raise
        self._f.close()
        os.replace(self.tmp, self.path)
        try:  # make the rename itself durable
            fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def abort(self):
        self._f.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def atomic_open(path, mode="wb"):
    """``open(path, mode)`` for writing, atomically (see :class:`_AtomicFile`)."""
    if not any(c in mode for c in "wax"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    return _AtomicFile(path, mode)


class _AtomicWritePathManager:
    """Detectron2's PathManager with local write-mode ``open`` made atomic; everything else
    delegated."""

    def __init__(self, path_manager):
        self._pm = path_manager

    def __getattr__(self, name):
        return getattr(self._pm, name)

    def open(self, path, mode="r", **kwargs):
        if any(c in mode for c in "wax") and "://" not in str(path):
            return atomic_open(path, mode)
        return self._pm.open(path, mode, **kwargs)


#: share of the model's tensors a checkpoint must fill for --resume and --eval-only (a trained model
#: of this project fills all of them; a few re-initialised class layers still pass)
RESUME_MIN_FRACTION = 0.9
_ITER = re.compile(r"^model_(\d+)\.pth$")


def checkpoint_candidates(save_dir):
    """``model_final.pth`` then ``model_<iter>.pth`` by decreasing iteration: the order to try on
    resume."""
    names = os.listdir(save_dir) if os.path.isdir(save_dir) else []
    its = sorted(((int(m.group(1)), n) for n in names if (m := _ITER.match(n))), reverse=True)
    return (["model_final.pth"] if "model_final.pth" in names else []) + [n for _, n in its]


def _reason(e):
    """A short reason for an unreadable file (torch's first line; its weights_only advice left
    out)."""
    line = (str(e).strip().splitlines() or [""])[0]
    if "weights_only" in line or "Weights only load failed" in line:
        line = "not a PyTorch checkpoint of tensors"
    return f"{type(e).__name__}: {line[:160]}" if line else type(e).__name__


@dataclass
class WeightsMatchPolicy:
    """How much of the model loaded weights must fill: ``min_fraction`` of the tensors whose names
    start with ``scope`` ("" = the whole model; a prefix such as ``backbone.bottom_up.`` for a
    pretrained backbone). ``allow_partial`` turns a shortfall into a warning (a deliberate partial
    load); nothing matched is always refused."""

    min_fraction: float = 0.5
    scope: str = ""
    allow_partial: bool = False
    what: str = "MODEL.WEIGHTS"


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic writes, named read errors, resume fallback and a
    weights-match check."""

    def __init__(
        self,
        model,
        save_dir="",
        *,
        save_to_disk=None,
        match_policy: Optional[WeightsMatchPolicy] = None,
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = _AtomicWritePathManager(self.path_manager)
        self.match_policy = match_policy
        self.last_match = None  # (matched, total, scope) of the last load
        self._loading = ""
        self._final_state_dict = None

    @classmethod
    def from_checkpointer(cls, checkpointer, match_policy=None):
        """The same model, folder and checkpointables as ``checkpointer`` (e.g.
        DefaultTrainer's)."""
        return cls(
            checkpointer.model,
            checkpointer.save_dir,
            save_to_disk=checkpointer.save_to_disk,
            match_policy=match_policy,
            **checkpointer.checkpointables,
        )

    # ------------------------------------------------------------------ reading
    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except Exception as e:  # noqa: BLE001  (any reader error means: this file is not a usable checkpoint)
            raise CheckpointReadError(f"cannot read checkpoint {filename}: {_reason(e)}") from e

    def _load_model(self, checkpoint):
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
            raise CheckpointReadError("checkpoint holds no state dict of the model ('model' key)")
        self._final_state_dict = None
        incompatible = super()._load_model(checkpoint)
        if self.match_policy is not None and self._final_state_dict is not None:
            self._check_match(set(self._final_state_dict))
        return incompatible

    def _convert_ndarray_to_tensor(self, state_dict):
        # fvcore calls this on the checkpoint's state dict (after Detectron2's name matching), then
        # strips "module." and drops shape-mismatched tensors from that same dict in place before
        # loading it: what is left is exactly what fills the model. (Counting from missing_keys
        # would not do: FrozenBatchNorm fills absent running statistics itself, so they never show
        # up as missing.)
        self._final_state_dict = state_dict
        return super()._convert_ndarray_to_tensor(state_dict)

    def _check_match(self, provided):
        p = self.match_policy
        keys = [k for k in self.model.state_dict() if k.startswith(p.scope)]
        if not keys:  # the scope does not exist in this model: measure the whole model
            keys = list(self.model.state_dict())
        matched = sum(1 for k in keys if k in provided)
        where = (
            f"the model's {p.scope}* tensors"
            if p.scope and len(keys) < len(self.model.state_dict())
            else "the model's tensors"
        )
        self.last_match = (matched, len(keys), p.scope)
        msg = (
            f"{p.what} {self._loading}: filled {matched} of {len(keys)} of {where} "
            f"({100.0 * matched / max(len(keys), 1):.0f}%; at least {100 * p.min_fraction:.0f}% "
            "expected)"
        )
        if matched == 0:
            raise WeightsMismatchError(msg + ": no tensor name/shape matches this model")
        if matched < p.min_fraction * len(keys):
            if not p.allow_partial:
                raise WeightsMismatchError(
                    msg + "; pass --allow-partial-weights "
                    "(MODEL.SEGALIAS.ALLOW_PARTIAL_WEIGHTS True) for a deliberate partial load"
                )
            logger.warning("%s; loading anyway (partial weights allowed)", msg)

    def load(self, path, *args, **kwargs):
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            compat.end_checkpointer_load(self)

    # ------------------------------------------------------------------ resume
    def _named_by_last_checkpoint(self):
        """The file ``last_checkpoint`` names, or None (with a warning) when it names nothing
        usable."""
        tag = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(tag, "rb") as f:
                name = f.read().decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            logger.warning(
                "--resume: %s is unreadable (%s); looking for the newest intact checkpoint",
                tag,
                _reason(e),
            )
            return None
        path = os.path.join(self.save_dir, name)
        if not name or os.path.basename(name) != name or not os.path.isfile(path):
            logger.warning(
                "--resume: %s names %r, which is not a checkpoint file in %s; looking for the "
                "newest intact checkpoint",
                tag,
                name[:80],
                self.save_dir,
            )
            return None
        return path

    def resume_or_load(self, path, *, resume=True):
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        named = self._named_by_last_checkpoint()
        tried = []
        candidates = ([named] if named else []) + [
            os.path.join(self.save_dir, n) for n in checkpoint_candidates(self.save_dir)
        ]
        policy = self.match_policy
        if policy is not None:  # our own checkpoint: it must fill (almost) the whole model
            self.match_policy = WeightsMatchPolicy(
                RESUME_MIN_FRACTION, "", policy.allow_partial, "--resume checkpoint"
            )
        try:
            for cand in dict.fromkeys(candidates):  # unique, in order
                try:
                    return self.load(cand)
                except CheckpointReadError as e:
                    tried.append(os.path.basename(cand))
                    logger.warning("--resume: %s; falling back to the newest intact checkpoint", e)
        finally:
            self.match_policy = policy
        raise CheckpointReadError(
            f"--resume: no intact checkpoint in {self.save_dir} (tried: "
            f"{', '.join(tried) or 'none found'}); start without --resume or restore a checkpoint"
        )
