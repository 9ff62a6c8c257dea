"""Run-time compatibility with the Detectron2 builds segalias_d2 supports, all in one place.

Official Detectron2 (any recent commit, with or without compiled ops) and the pure-Python v0.6
backport that ``dev/setup_env.sh`` builds when no official build is importable (its build-time
source fixes live in ``dev/d2_backport/``, not here). Everything here is feature detection:
segalias_d2 code never branches on ``detectron2.__version__``, which is "0.6" on both the v0.6 tag
and current main.

* :mod:`.build_info`: which Detectron2 it is (backport revision, or official version and commit),
  whether its compiled ops are present, what its deformable convolution computes on CPU;
* :mod:`.engine`: trainer behaviours that differ (optimizer state on resume, DDP of CPU models,
  lazily created data-loader iterators).
"""

from .build_info import (
    compiled_op_status,
    deform_conv_cpu_support,
    detectron2_build_info,
    detectron2_source,
    frozen_batchnorm_keeps_bn_counter,
    has_compiled_ops,
    is_v06_backport,
)
from .engine import (
    cpu_models_get_no_ddp_device_ids,
    end_checkpointer_load,
    start_data_loader_iterator,
    trainer_saves_optimizer_state,
)

__all__ = [
    "detectron2_source",
    "detectron2_build_info",
    "is_v06_backport",
    "has_compiled_ops",
    "compiled_op_status",
    "deform_conv_cpu_support",
    "frozen_batchnorm_keeps_bn_counter",
    "trainer_saves_optimizer_state",
    "cpu_models_get_no_ddp_device_ids",
    "start_data_loader_iterator",
    "end_checkpointer_load",
]
