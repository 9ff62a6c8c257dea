#!/usr/bin/env python
"""Build the tiny LIS-layout and Cityscapes-layout demo datasets (thin CLI over segalias_d2.data.demo).

    python datasets/prepare_demo.py [--root DIR] [--force]

Default root: $DETECTRON2_DATASETS or ./datasets. Downloads the pinned labelme sdist once (cached);
a second run returns immediately. See datasets/README.md for the layouts.
"""
import argparse
import logging
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="dataset root (default: $DETECTRON2_DATASETS or 'datasets')")
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    from segalias_d2.data.demo import ensure_demo_datasets

    paths = ensure_demo_datasets(args.root, force=args.force)
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
