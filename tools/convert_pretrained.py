#!/usr/bin/env python
"""Convert pretrained weights for the segalias models (see docs/backbone.md).

    python tools/convert_pretrained.py SRC DST --format {torchvision,mmcv_v1c,d2_pkl} [--prefix P]
                                       [--bayer-pattern RGGB]            # ImageNet ResNet backbones
    # COCO-80 Mask R-CNN -> 8 LIS classes
    python tools/convert_pretrained.py model_final_f10217.pkl \\
        pretrained/mask_rcnn_R_50_FPN_3x_coco80_to_lis8.pkl \\
        --format d2_coco_detector [--class-layers {slice,reinit}]
    # released MMSeg UPerNet checkpoint
    python tools/convert_pretrained.py iter_80000.pth pretrained/segalias_upernet_cityscapes.pth \\
        --format mmseg [--unsafe-load] [--config-file \\
        configs/Cityscapes-SemanticSegmentation/upernet_R_50_V1c_DAF_FreqMix_c128_768_80k_bs8.yaml]

Needs the package installed (``pip install -e .``).
"""

import sys

from segalias_d2.checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
