from .output_lock import OutputDirInUseError, OutputDirLock
from .predictor import LowLightPredictor
from .trainer import SeedEveryIterationHook, Trainer, write_results_json
from .validation import (
    SegAliasSetupError,
    check_datasets,
    check_num_classes,
    check_numeric_options,
    check_weights,
    load_config,
    weights_match_policy,
)

__all__ = [
    "Trainer",
    "LowLightPredictor",
    "SeedEveryIterationHook",
    "SegAliasSetupError",
    "load_config",
    "check_datasets",
    "check_weights",
    "write_results_json",
    "check_num_classes",
    "check_numeric_options",
    "weights_match_policy",
    "OutputDirLock",
    "OutputDirInUseError",
]
