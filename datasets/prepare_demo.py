#!/usr/bin/env python
"""Build the tiny LIS-layout and Cityscapes-layout demo datasets (thin CLI over
datasets/demo_builder.py).

    python datasets/prepare_demo.py [--root DIR] [--force]

Default root: $DETECTRON2_DATASETS or ./datasets. Fetches the pinned labelme sdist once (pip
download, sha256-checked, cached); a second run returns immediately unless the builder's code, its
pinned input or its parameters changed. See datasets/README.md for the layouts.
"""

import argparse
import logging
import sys

from demo_builder import ensure_demo_datasets
from pinned_sources import PinnedFileUnavailable


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", default=None, help="dataset root (default: $DETECTRON2_DATASETS or 'datasets')"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    try:
        paths = ensure_demo_datasets(args.root, force=args.force)
    except PinnedFileUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
