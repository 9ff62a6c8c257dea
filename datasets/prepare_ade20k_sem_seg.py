#!/usr/bin/env python
"""Write ADE20K's reduced label maps for ``segalias_ade20k_sem_seg_{train,val}`` (same files as
Detectron2's own ``datasets/prepare_ade20k_sem_seg.py``, which can be used instead).

    python datasets/prepare_ade20k_sem_seg.py [--root DIR] [--overwrite]

``<root>/annotations/{training,validation}/*.png`` (0 = "other", 1..150 = classes) ->
``<root>/annotations_detectron2/{training,validation}/*.png`` with MMSeg's reduce_zero_label (0 ->
255 = ignore, k -> k - 1). ``--root`` default: $DETECTRON2_DATASETS/ADEChallengeData2016 (or
./datasets/ADEChallengeData2016).
"""

import argparse
import os
import sys

from segalias_d2.data.ade20k import prepare_ade20k_annotations


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "ADEChallengeData2016"
    )
    parser.add_argument(
        "--root", default=default, help=f"ADEChallengeData2016 folder (default: {default})"
    )
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing maps")
    args = parser.parse_args(argv)

    try:
        done = prepare_ade20k_annotations(args.root, overwrite=args.overwrite)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, (written, skipped) in done.items():
        print(
            f"{split}: wrote {written} maps to annotations_detectron2/{split} ({skipped} already "
            "present)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
