#!/usr/bin/env python
"""Convert ImageNet ResNet weights for the segalias backbones (see docs/backbone.md).

    python tools/convert_pretrained.py SRC DST --format {torchvision,mmcv_v1c,d2_pkl} [--prefix P]
                                       [--bayer-pattern RGGB]

Needs the package installed (``pip install -e .``).
"""
import sys

from segalias_d2.checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
