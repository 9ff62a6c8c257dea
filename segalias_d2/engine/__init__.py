from .predictor import LowLightPredictor
from .trainer import SeedEveryIterationHook, Trainer, write_results_json
from .validation import SegAliasSetupError, check_datasets, check_weights, load_config

__all__ = [
    "Trainer",
    "LowLightPredictor",
    "SeedEveryIterationHook",
    "SegAliasSetupError",
    "load_config",
    "check_datasets",
    "check_weights",
    "write_results_json",
]
