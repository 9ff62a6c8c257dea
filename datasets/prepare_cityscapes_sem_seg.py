#!/usr/bin/env python
"""Create Cityscapes ``*_gtFine_labelTrainIds.png`` maps from the ``*_gtFine_labelIds.png`` maps.

    python datasets/prepare_cityscapes_sem_seg.py [--root DIR] [--overwrite]

``--root`` is the Cityscapes folder (default: $DETECTRON2_DATASETS/cityscapes or
./datasets/cityscapes); every ``gtFine/**/_gtFine_labelIds.png`` gets a labelTrainIds map written
next to it (19 train ids, 255 = ignore), using segalias_d2.data.cityscapes.LABEL_ID_TO_TRAIN_ID.
Existing maps are kept unless --overwrite. Needed by ``segalias_cityscapes_sem_seg_{train,val}``.
"""

import argparse
import os
import sys

from segalias_d2.data.cityscapes import convert_label_id_files


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "cityscapes"
    )
    parser.add_argument("--root", default=default, help=f"Cityscapes root (default: {default})")
    parser.add_argument(
        "--overwrite", action="store_true", help="rewrite existing labelTrainIds maps"
    )
    args = parser.parse_args(argv)

    gt = os.path.join(args.root, "gtFine")
    if not os.path.isdir(gt):
        print(
            f"error: '{gt}' does not exist (expected "
            "<root>/gtFine/<split>/<city>/*_gtFine_labelIds.png)",
            file=sys.stderr,
        )
        return 2
    written, skipped = convert_label_id_files(gt, overwrite=args.overwrite)
    print(f"wrote {written} labelTrainIds maps under '{gt}' ({skipped} already present)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
