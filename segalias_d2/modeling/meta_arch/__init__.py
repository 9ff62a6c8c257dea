from .sliding_window import SlidingWindowSemanticSegmentor, sliding_window_logits

__all__ = ["SlidingWindowSemanticSegmentor", "sliding_window_logits"]
