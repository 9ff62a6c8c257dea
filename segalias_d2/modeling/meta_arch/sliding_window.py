"""Semantic segmentation with optional sliding-window inference (paper, Cityscapes: 768 window,
512 stride, logits averaged where windows overlap)."""

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

__all__ = ["SlidingWindowSemanticSegmentor", "sliding_window_logits"]


def _window_starts(length: int, window: int, stride: int):
    # mmseg's grid: the last window is shifted back so it ends at the border
    count = max(length - window + stride - 1, 0) // stride + 1
    starts = []
    for i in range(count):
        end = min(i * stride + window, length)
        starts.append(max(end - window, 0))
    return starts


def sliding_window_logits(predict, image: torch.Tensor, window, stride) -> torch.Tensor:
    """Average of ``predict(crop) -> (num_classes, h, w)`` logits over a grid of windows.

    image: (C, H, W) normalised tensor; ``predict`` returns (num_classes, h, w) for a (C, h, w)
    crop. Windows larger than the image are clipped to it. Every pixel is covered at least once, so
    the count never is zero.
    """
    _, height, width = image.shape
    win_h, win_w = window
    logits = None  # (num_classes, H, W), allocated once the head tells the class count
    count = image.new_zeros((1, height, width))
    for y0 in _window_starts(height, win_h, stride[0]):
        for x0 in _window_starts(width, win_w, stride[1]):
            y1, x1 = min(y0 + win_h, height), min(x0 + win_w, width)
            crop_logits = predict(image[:, y0:y1, x0:x1])
            if logits is None:
                logits = crop_logits.new_zeros((crop_logits.shape[0], height, width))
            logits[:, y0:y1, x0:x1] += crop_logits
            count[:, y0:y1, x0:x1] += 1
    return logits / count


@META_ARCH_REGISTRY.register()
class SlidingWindowSemanticSegmentor(SemanticSegmentor):
    """Detectron2's SemanticSegmentor; at inference, optionally sliding-window
    (TEST.SEGALIAS.SLIDING_WINDOW)."""

    @configurable
    def __init__(
        self, *, sliding_window: bool = False, window=(768, 768), stride=(512, 512), **kwargs
    ):
        super().__init__(**kwargs)
        self.sliding_window = sliding_window
        self.window = tuple(window)
        self.stride = tuple(stride)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        sw = cfg.TEST.SEGALIAS.SLIDING_WINDOW
        ret.update(sliding_window=sw.ENABLED, window=tuple(sw.SIZE), stride=tuple(sw.STRIDE))
        return ret

    def _predict_crop(self, crop: torch.Tensor) -> torch.Tensor:
        h, w = crop.shape[-2:]
        batch = ImageList.from_tensors([crop], self.backbone.size_divisibility)
        results, _ = self.sem_seg_head(self.backbone(batch.tensor), None)
        return results[0, :, :h, :w]

    def forward(self, batched_inputs):
        if self.training or not self.sliding_window:
            return super().forward(batched_inputs)
        outputs = []
        for x in batched_inputs:
            image = (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
            logits = sliding_window_logits(self._predict_crop, image, self.window, self.stride)
            height, width = x.get("height", image.shape[-2]), x.get("width", image.shape[-1])
            outputs.append(
                {"sem_seg": sem_seg_postprocess(logits, image.shape[-2:], height, width)}
            )
        return outputs
