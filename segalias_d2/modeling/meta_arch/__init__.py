from .dsl_rcnn import DSLGeneralizedRCNN, dsl_feature_loss
from .sliding_window import SlidingWindowSemanticSegmentor, sliding_window_logits

__all__ = [
    "DSLGeneralizedRCNN",
    "dsl_feature_loss",
    "SlidingWindowSemanticSegmentor",
    "sliding_window_logits",
]
