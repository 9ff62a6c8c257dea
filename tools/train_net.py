#!/usr/bin/env python
"""Train or evaluate segalias_d2 models.

    python tools/train_net.py --config-file configs/LIS-InstanceSegmentation/mask_rcnn_R_50_AAFPN_1x_raw_dark.yaml
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CONFIG --resume            # continue from OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --config-file CONFIG --num-gpus 8        # one machine, 8 GPUs (NCCL)
    python tools/train_net.py --config-file CONFIG --num-gpus 8 --num-machines 2 --machine-rank 0 \\
        --dist-url tcp://HOST:PORT                                      # multi-machine (run on each)

Without GPUs, ``--num-gpus N`` runs N CPU processes with the GLOO backend.
"""
import os
import sys

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import segalias_d2  # noqa: F401  (registers backbones, datasets, evaluators)
from segalias_d2.engine import SegAliasSetupError, Trainer, check_datasets, check_weights, load_config


def _resuming(args, cfg) -> bool:
    return args.resume and os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))


def check_setup(args):
    """Config, datasets and weights are usable; raises SegAliasSetupError (one line) otherwise."""
    cfg = load_config(args.config_file, args.opts)
    check_datasets(cfg, train=not args.eval_only)
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
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main(argv=None):
    args = default_argument_parser().parse_args(argv)
    try:
        check_setup(args)  # fail fast, once, in the parent process
    except SegAliasSetupError as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()  # pragma: no cover
