"""Stand-in for Detectron2's compiled extension, installed by the segalias_d2 v0.6 backport.

This Detectron2 is a pure-Python build: the ops below need the C++/CUDA extension and raise
CompiledOpUnavailableError when called. Deformable convolution and COCO evaluation work without it
(torchvision.ops.deform_conv2d and pycocotools). Everything else in Detectron2 is unaffected.
"""
COMPILED = False

#: compiled op -> what uses it
UNAVAILABLE_OPS = {
    "box_iou_rotated": "RotatedBoxes IoU (detectron2.structures.pairwise_iou_rotated, RRPN)",
    "nms_rotated": "rotated NMS (detectron2.layers.nms_rotated, RRPN / RotatedFastRCNN)",
    "roi_align_rotated_forward": "ROIAlignRotated",
    "roi_align_rotated_backward": "ROIAlignRotated",
    "deform_conv_forward": "low-level deformable conv kernel (DeformConv uses torchvision instead)",
    "deform_conv_backward_input": "low-level deformable conv kernel",
    "deform_conv_backward_filter": "low-level deformable conv kernel",
    "modulated_deform_conv_forward": "low-level deformable conv kernel",
    "modulated_deform_conv_backward": "low-level deformable conv kernel",
    "InstanceAnnotation": "fast COCOeval (COCOEvaluator falls back to pycocotools)",
    "COCOevalEvaluateImages": "fast COCOeval (COCOEvaluator falls back to pycocotools)",
    "COCOevalAccumulate": "fast COCOeval (COCOEvaluator falls back to pycocotools)",
}


class CompiledOpUnavailableError(RuntimeError):
    """A Detectron2 op that needs the compiled extension was called on the pure-Python backport."""


def _unavailable(name):
    def op(*args, **kwargs):
        raise CompiledOpUnavailableError(
            f"Detectron2 op '{name}' ({UNAVAILABLE_OPS.get(name, 'compiled op')}) needs Detectron2's "
            "compiled extension (detectron2._C), which the pure-Python Detectron2 v0.6 backport "
            "installed by segalias_d2 does not have. To use it, install an official Detectron2 "
            "built from source into this environment (see segalias_d2's README, section "
            "'Using an official Detectron2'); segalias_d2 then uses it untouched."
        )

    op.__name__ = name
    return op


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _unavailable(name)


def get_compiler_version():
    return "none (pure-Python Detectron2 v0.6 backport)"


def get_cuda_version():
    return "none"


def has_cuda():
    return False
