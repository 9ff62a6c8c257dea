#!/usr/bin/env python
"""Check, before a long run, that every image of a registered dataset exists, decodes and fits its
record.

    python tools/check_dataset.py --dataset lis_raw_dark_train
    # every dataset of a config (DATASETS.TRAIN + TEST)
    python tools/check_dataset.py \\
        --config-file configs/LIS-InstanceSegmentation/mask_rcnn_R_50_DAF_FPN_1x_raw_dark.yaml

Each image is read as the test-time mapper reads it (the config's INPUT options; camera RAW through
rawpy), and checked: it exists and is a file, its pixels are finite, its size fits the record's
height/width, no 16-bit file is registered as sRGB, pair / clean-twin files exist, semantic label
maps decode with the image's size. Prints "N ok, M bad" per dataset and the bad files with their
reasons (a progress bar on stderr meanwhile).
Exit code: 0 all good, 1 a bad file or annotation, 2 a setup error (unknown dataset, bad config).
The logic: segalias_d2.data.image_checks.check_dataset.
"""

import argparse
import difflib
import logging
import sys

from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

import segalias_d2  # noqa: F401  (registers the built-in datasets)
from segalias_d2.config import SegAliasSetupError, load_config
from segalias_d2.data.image_checks import check_dataset


def get_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME",
        help="a registered dataset (several allowed; default: the config's DATASETS.TRAIN + TEST)",
    )
    p.add_argument(
        "--config-file",
        default="",
        metavar="FILE",
        help="config whose INPUT options read the images",
    )
    p.add_argument("--workers", type=int, default=4, help="threads decoding images")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def _datasets(args, cfg):

    names = list(args.dataset) or list(
        dict.fromkeys(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    )
    if not names:
        raise SegAliasSetupError(
            "name a dataset (--dataset) or a config with DATASETS.TRAIN / TEST"
        )
    for name in names:
        if name not in DatasetCatalog.list():
            close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3, cutoff=0.5)
            raise SegAliasSetupError(
                f"unknown dataset '{name}'"
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )
    return names


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="segalias_d2")
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.config_file, args.opts)
        names = _datasets(args, cfg)
    except (SegAliasSetupError, ValueError, KeyError, OSError) as e:
        print(
            f"check_dataset.py: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}",
            file=sys.stderr,
        )
        return 2
    results = [check_dataset(name, cfg, args.workers, not args.no_progress) for name in names]
    for result in results:
        print(result.summary())
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
