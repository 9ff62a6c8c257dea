#!/usr/bin/env python
"""Prepare PASCAL VOC 2012 + SBD ("VOC12aug", MMSeg layout) for ``segalias_voc2012_sem_seg_{train,aug,val}``.

    python datasets/prepare_voc_sem_seg.py [--voc DIR] [--sbd DIR] [--overwrite]

1. ``<voc>/SegmentationClass/*.png`` (palette PNGs: pixel = class index 0..20, 255 = void) are written as plain 8-bit
   index PNGs to ``<voc>/SegmentationClass_detectron2/`` (Detectron2's mapper would read palette colours as grey
   levels);
2. with ``--sbd`` (SBD's ``benchmark_RELEASE/dataset``, with ``cls/*.mat``, ``train.txt``, ``val.txt``): the SBD labels
   go to ``<voc>/SegmentationClassAug/*.png`` and ``ImageSets/Segmentation/{aug,trainaug}.txt`` are written, as MMSeg's
   ``tools/convert_datasets/voc_aug.py`` does (aug = SBD train+val minus VOC train and val: 9,118 ids). Needs SciPy.
   Skip it when you already have MMSeg's ``SegmentationClassAug`` and ``aug.txt``.

``--voc`` default: $DETECTRON2_DATASETS/VOCdevkit/VOC2012 (or ./datasets/VOCdevkit/VOC2012).
"""
import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "VOCdevkit", "VOC2012")
    parser.add_argument("--voc", default=default, help=f"VOC2012 folder (default: {default})")
    parser.add_argument("--sbd", default="", help="SBD benchmark_RELEASE/dataset folder (optional)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing label PNGs")
    args = parser.parse_args(argv)
    from segalias_d2.data.voc import convert_palette_labels, convert_sbd_mat, write_aug_lists

    src = os.path.join(args.voc, "SegmentationClass")
    if not os.path.isdir(src):
        print(f"error: '{src}' does not exist (expected <VOC2012>/SegmentationClass/*.png)", file=sys.stderr)
        return 2
    written, skipped = convert_palette_labels(src, os.path.join(args.voc, "SegmentationClass_detectron2"),
                                              args.overwrite)
    print(f"wrote {written} index PNGs to SegmentationClass_detectron2 ({skipped} already present)")
    if args.sbd:
        cls = os.path.join(args.sbd, "cls")
        if not os.path.isdir(cls):
            print(f"error: '{cls}' does not exist (expected SBD's benchmark_RELEASE/dataset/cls/*.mat)", file=sys.stderr)
            return 2
        written, skipped = convert_sbd_mat(cls, os.path.join(args.voc, "SegmentationClassAug"), args.overwrite)
        print(f"wrote {written} SBD label PNGs to SegmentationClassAug ({skipped} already present)")
        n_aug, n_trainaug = write_aug_lists(args.voc, args.sbd)
        print(f"wrote ImageSets/Segmentation/aug.txt ({n_aug} ids) and trainaug.txt ({n_trainaug} ids)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
