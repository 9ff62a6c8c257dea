#!/usr/bin/env python
"""Train or evaluate segalias_d2 models.

    python tools/train_net.py \\
        --config-file configs/LIS-InstanceSegmentation/mask_rcnn_R_50_AAFPN_1x_raw_dark.yaml
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
    # continue from OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --config-file CONFIG --resume
    python tools/train_net.py --config-file CONFIG --num-gpus 8      # one machine, 8 GPUs (NCCL)
    --allow-partial-weights   load MODEL.WEIGHTS that fill too little of the model (deliberate
                              partial load)
    --force-output-dir        write into an OUTPUT_DIR whose lock names another live run
    python tools/train_net.py --config-file CONFIG --num-gpus 8 --num-machines 2 --machine-rank 0 \\
        --dist-url tcp://HOST:PORT                                    # multi-machine (run on each)

Without GPUs, ``--num-gpus N`` runs N CPU processes with the GLOO backend.
"""

import os
import sys

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import segalias_d2  # noqa: F401  (registers backbones, datasets, evaluators)
from segalias_d2.checkpoint import SafeDetectionCheckpointer
from segalias_d2.engine import (
    OutputDirLock,
    SegAliasSetupError,
    Trainer,
    check_datasets,
    check_num_classes,
    check_numeric_options,
    check_weights,
    load_config,
    weights_match_policy,
)


def _resuming(args, cfg) -> bool:
    return args.resume and os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))


def check_setup(args):
    """Config, datasets and weights are usable; raises SegAliasSetupError (one line) otherwise."""
    cfg = load_config(args.config_file, args.opts)
    check_datasets(cfg, train=not args.eval_only)
    check_num_classes(cfg, train=not args.eval_only)
    check_numeric_options(cfg)
    if not _resuming(args, cfg):  # a resumed run loads OUTPUT_DIR's checkpoint, not MODEL.WEIGHTS
        check_weights(cfg)
    return cfg


def setup(args):
    cfg = load_config(args.config_file, args.opts, cpu_if_no_cuda=True)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        SafeDetectionCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, match_policy=weights_match_policy(cfg, True)
        ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="load MODEL.WEIGHTS even when they fill too little of the model (sets "
        "MODEL.SEGALIAS.ALLOW_PARTIAL_WEIGHTS True)",
    )
    parser.add_argument(
        "--force-output-dir",
        action="store_true",
        help="write into OUTPUT_DIR even when its lock file names another live run",
    )
    return parser


def parse_args(argv=None):
    args = argument_parser().parse_args(argv)
    if args.allow_partial_weights:
        args.opts = list(args.opts) + ["MODEL.SEGALIAS.ALLOW_PARTIAL_WEIGHTS", "True"]
    return args


def invoke_main(argv=None):
    args = parse_args(argv)
    lock = None
    try:
        cfg = check_setup(args)  # fail fast, once, in the parent process
        if cfg.OUTPUT_DIR and args.machine_rank == 0 and comm.is_main_process():
            # the launching process outlives its workers: it holds the lock for all of them
            lock = OutputDirLock(cfg.OUTPUT_DIR, force=args.force_output_dir).acquire()
        print("Command Line Args:", args)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except SegAliasSetupError as e:  # set-up checks, and weights refused when loaded (one process)
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    invoke_main()  # pragma: no cover
