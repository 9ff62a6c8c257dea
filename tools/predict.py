#!/usr/bin/env python
"""Run a trained segalias_d2 model on your own files: camera RAW, raw-RGB / packed PNGs, sRGB
photos.

    python tools/predict.py --config-file CONFIG.yaml --input "photos/*.ARW" --output out/ \\
        --exposure-ratio 8 MODEL.WEIGHTS model_final.pth

Inputs (--input, several allowed): files, glob patterns, folders (their image files). Each file is
prepared exactly as the evaluator prepares the config's test images
(segalias_d2.engine.LowLightPredictor). Writes to --output: vis/<name>.png (the input rendered
display-ready with the predictions drawn), labels/<name>.png (semantic models) or
coco_instances_results.json + coco_images.json (instance models), and summary.json. A file that
cannot be read is reported by name and skipped; the exit code is 1 when any file failed, 2 for a
setup error.
"""

import argparse
import logging
import sys

from detectron2.utils.logger import setup_logger

import segalias_d2  # noqa: F401  (registers backbones and datasets)
from segalias_d2.config import SegAliasSetupError, load_config
from segalias_d2.data.raw_io import IMAGE_FORMATS
from segalias_d2.engine.predict_io import (
    CocoIds,
    collect_inputs,
    decode_options,
    format_summary,
    run_predictions,
)
from segalias_d2.engine.predictor import LowLightPredictor
from segalias_d2.engine.validation import check_weights


def get_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument(
        "--input", nargs="+", required=True, help="files, glob patterns (quote them) or folders"
    )
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--input-format",
        default="auto",
        choices=("auto",) + IMAGE_FORMATS,
        help="how to read the inputs (auto: the format of the config's dataset; camera RAW files "
        "through rawpy)",
    )
    p.add_argument(
        "--raw-output",
        default=None,
        choices=("raw_rgb", "packed"),
        help="camera RAW decoding for 'raw' models (default: the dataset's / "
        "INPUT.SEGALIAS.RAW_OUTPUT)",
    )
    p.add_argument(
        "--exposure-ratio",
        default=None,
        metavar="R|exif|none",
        help="amplification of dark frames: a number, 'exif' (t_normal / t_dark of the RAW pair, "
        "normal = file number - 1, LIS numbering) or 'none' (default: the config's)",
    )
    p.add_argument(
        "--pair-dir",
        default=None,
        help="folder of the normal-exposure partners for --exposure-ratio exif "
        "(default: the dark file's folder)",
    )
    p.add_argument(
        "--black-level", default=None, help="black level in file DN: one value or R,G1,B,G2"
    )
    p.add_argument("--white-level", default=None, help="white (saturation) level in file DN")
    p.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="instances drawn in the visualisation (default: TEST.SEGALIAS.INSTANCE_SCORE_THRESH); "
        "the COCO results keep every detection",
    )
    p.add_argument(
        "--vis-max-size",
        type=int,
        default=1600,
        help="long side (px) above which the visualisation is drawn downscaled (0: full size)",
    )
    p.add_argument(
        "--brightness", default="auto", help="display gain of the visualisation: 'auto' or a number"
    )
    ids = p.add_mutually_exclusive_group()
    ids.add_argument(
        "--coco-gt",
        default=None,
        help="COCO JSON whose image/category ids the results use "
        "(matched by file name / class name)",
    )
    ids.add_argument("--dataset", default=None, help="registered dataset whose ids the results use")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="segalias_d2")
    logger = logging.getLogger("segalias_d2.predict")
    try:
        cfg = load_config(args.config_file, args.opts, cpu_if_no_cuda=True)
        check_weights(cfg)
        options = decode_options(
            args.input_format,
            args.exposure_ratio,
            args.pair_dir,
            args.black_level,
            args.white_level,
            args.raw_output,
        )
        brightness = args.brightness if args.brightness == "auto" else float(args.brightness)
        predictor = LowLightPredictor(cfg)
        classes = predictor.metadata.get("thing_classes", None)
        coco_ids = (
            CocoIds.from_coco_json(args.coco_gt, classes)
            if args.coco_gt
            else CocoIds.from_dataset(args.dataset)
            if args.dataset
            else None
        )
    except (SegAliasSetupError, ValueError, KeyError, OSError) as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 2
    paths, problems = collect_inputs(args.input)
    thresh = (
        cfg.TEST.SEGALIAS.INSTANCE_SCORE_THRESH if args.score_thresh is None else args.score_thresh
    )
    logger.info(
        f"{len(paths)} input file(s), model input format '{predictor.image_format}' -> "
        f"{args.output}"
    )
    summary = run_predictions(
        predictor,
        paths,
        args.output,
        options=options,
        score_thresh=thresh,
        brightness=brightness,
        coco_ids=coco_ids,
        input_problems=problems,
        progress=not args.no_progress,
        vis_max_size=args.vis_max_size,
    )
    print(format_summary(summary))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
