#!/usr/bin/env python
"""Prepare the SBD part of PASCAL VOC 2012 + SBD ("VOC12aug", MMSeg layout) for
``segalias_voc2012_sem_seg_aug``.

    python datasets/prepare_voc_sem_seg.py --sbd DIR [--voc DIR] [--overwrite]

SBD's labels (``benchmark_RELEASE/dataset/cls/*.mat``, ``GTcls.Segmentation``) go to
``<voc>/SegmentationClassAug/*.png`` (8-bit index PNGs) and
``ImageSets/Segmentation/{aug,trainaug}.txt`` are written, as MMSeg's
``tools/convert_datasets/voc_aug.py`` does (aug = SBD train+val minus VOC train and val: 9,118 ids).
Needs SciPy. Skip it when you already have MMSeg's ``SegmentationClassAug`` and ``aug.txt``. VOC's
own ``SegmentationClass`` palette PNGs need no preparation: they are read as the class indices they
store.

``--voc`` default: $DETECTRON2_DATASETS/VOCdevkit/VOC2012 (or ./datasets/VOCdevkit/VOC2012).
"""

import argparse
import os
import sys

from segalias_d2.data.voc import convert_sbd_mat, write_aug_lists


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "VOCdevkit", "VOC2012"
    )
    parser.add_argument("--voc", default=default, help=f"VOC2012 folder (default: {default})")
    parser.add_argument("--sbd", required=True, help="SBD benchmark_RELEASE/dataset folder")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing label PNGs")
    args = parser.parse_args(argv)

    if not os.path.isdir(os.path.join(args.voc, "ImageSets", "Segmentation")):
        print(
            f"error: '{args.voc}/ImageSets/Segmentation' does not exist (expected the VOC2012 "
            "folder)",
            file=sys.stderr,
        )
        return 2
    cls = os.path.join(args.sbd, "cls")
    if not os.path.isdir(cls):
        print(
            f"error: '{cls}' does not exist (expected SBD's benchmark_RELEASE/dataset/cls/*.mat)",
            file=sys.stderr,
        )
        return 2
    written, skipped = convert_sbd_mat(
        cls, os.path.join(args.voc, "SegmentationClassAug"), args.overwrite
    )
    print(f"wrote {written} SBD label PNGs to SegmentationClassAug ({skipped} already present)")
    n_aug, n_trainaug = write_aug_lists(args.voc, args.sbd)
    print(f"wrote ImageSets/Segmentation/aug.txt ({n_aug} ids) and trainaug.txt ({n_trainaug} ids)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
