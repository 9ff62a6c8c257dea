#!/usr/bin/env python
"""Fold the SCB branches of a trained checkpoint into the 3x3 convs (deployment form;
docs/lis_modules.md).

    python tools/fold_scb.py output/.../model_final.pth output/.../model_final_scb_folded.pth

Every ``resN.i.scb.*`` (low-pass logits, 1x1 weight) is folded exactly into that block's
``conv2.weight`` (``W2 + W1[o, i] softmax(theta_i)``, the low-pass filter indexed by the input
channel) and removed; optimizer and scheduler state are dropped (they belong to the training form).
Run the folded model with the training config and the SCB switch off:

    python tools/train_net.py --config-file CONFIG --eval-only MODEL.SEGALIAS.SCB.ENABLED False \\
        MODEL.WEIGHTS output/.../model_final_scb_folded.pth

It computes what the trained model computes (to float rounding) without the branch's cost. The file
carries a marker, so a model with SCB still on refuses it instead of adding the branch twice.
"""

import argparse
import os
import sys

from segalias_d2.checkpoint.convert import read_checkpoint_file, save_d2_checkpoint
from segalias_d2.modeling.backbone.lis_modules import fold_scb_state_dict


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Fold SCB branches into conv2 (deployment checkpoint)."
    )
    parser.add_argument(
        "src", help="trained checkpoint (.pth from tools/train_net.py, or a Detectron2 .pkl)"
    )
    parser.add_argument("dst", help="output checkpoint (.pth or .pkl)")
    args = parser.parse_args(argv)
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        parser.error("dst must differ from src (the training checkpoint stays as it is)")
    try:
        obj = read_checkpoint_file(args.src)
    except FileNotFoundError:
        parser.error(f"checkpoint not found: {args.src}")
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        parser.error(f"{args.src}: expected a checkpoint dict with a 'model' state dict")
    try:
        folded, blocks = fold_scb_state_dict(state)
    except (KeyError, ValueError) as e:
        parser.error(f"{args.src}: {e.args[0] if e.args else e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)) or ".", exist_ok=True)
    save_d2_checkpoint(
        folded,
        args.dst,
        prefix="",
        author=f"segalias_d2 tools/fold_scb.py from {os.path.basename(args.src)}",
    )
    print(
        f"Folded {len(blocks)} SCB branches ({blocks[0]} ... {blocks[-1]}) -> {args.dst}\n"
        f"Run it with MODEL.SEGALIAS.SCB.ENABLED False MODEL.WEIGHTS {args.dst}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
