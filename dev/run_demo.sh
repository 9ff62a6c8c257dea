#!/usr/bin/env bash
# The main job on the embedded demo data, on CPU:
#   set-up (idempotent) -> demo dataset (built once from pinned real photos) ->
#   train DAF+FreqMix Mask R-CNN on synthetic RAW-dark -> --eval-only on the final checkpoint
#   (box/mask AP + boundary error types) -> prediction and error-map visualisations.
# Everything is written to output/demo/ (override with DEMO_OUTPUT=...).
# Extra arguments are config overrides, e.g.: bash dev/run_demo.sh SOLVER.MAX_ITER 50
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup_env.sh
source dev/_python.sh
export MPLBACKEND=Agg PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning}"
OUT="${DEMO_OUTPUT:-output/demo}"
CONFIG=configs/LIS-InstanceSegmentation/mask_rcnn_R_50_AAFPN_demo_raw_dark.yaml
START=$(date +%s)
mkdir -p "$OUT"

# run a step with its full log in a file, showing only progress and results
step() {
  local log="$1"; shift
  set +e
  "$@" 2>&1 | tee "$log" | grep --line-buffered -E "eta:|Starting training|Overall training|Inference done|copypaste"
  local rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc -ne 0 ]]; then echo "FAILED (exit $rc); last lines of $log:"; tail -n 30 "$log"; exit "$rc"; fi
}

echo "== 1/4 demo dataset (\$DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-datasets})"
"$PY" datasets/prepare_demo.py

echo "== 2/4 training DAF+FreqMix Mask R-CNN on lis_demo_raw_dark_train (CPU; log: $OUT/log.txt)"
step "$OUT/train_stdout.txt" "$PY" tools/train_net.py --config-file "$CONFIG" OUTPUT_DIR "$OUT" "$@"

echo "== 3/4 --eval-only on $OUT/model_final.pth"
step "$OUT/eval_stdout.txt" "$PY" tools/train_net.py --config-file "$CONFIG" --eval-only \
  MODEL.WEIGHTS "$OUT/model_final.pth" OUTPUT_DIR "$OUT/eval" "$@"

echo "== 4/4 visualisations of predictions and error maps"
step "$OUT/visualize_stdout.txt" "$PY" tools/visualize_errors.py --config-file "$CONFIG" \
  --dataset lis_demo_raw_dark_test --images all --output "$OUT/visualizations" \
  MODEL.WEIGHTS "$OUT/model_final.pth" OUTPUT_DIR "$OUT/eval" "$@"

"$PY" - "$OUT/eval/eval_results.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
for dataset, tasks in res.items():
    print(f"\nResults on {dataset} (from --eval-only):")
    for task in ("bbox", "segm", "boundary_ap"):
        if task in tasks:
            r = {k: float("nan") if tasks[task].get(k) is None else tasks[task][k] for k in ("AP", "AP50", "AP75")}
            print(f"  {task:11s} AP {r['AP']:6.2f}  AP50 {r['AP50']:6.2f}  AP75 {r['AP75']:6.2f}")
    be = tasks.get("boundary_errors", {})
    if be:
        print("  boundary errors (%): " + "  ".join(f"{k} {be[k]:.2f}" if be[k] is not None else f"{k} n/a"
                                                 for k in ("mIoU", "BIoU", "BAcc", "FErr", "MErr", "DErr") if k in be))
PY
echo
echo "Done in $(( $(date +%s) - START )) s. Outputs:"
echo "  $OUT/model_final.pth            trained weights"
echo "  $OUT/eval/eval_results.json     metrics (also the CSV/JSON of the evaluator under $OUT/eval/inference/)"
echo "  $OUT/visualizations/            <image>_predictions.png and <image>_errors.png"
echo "  $OUT/*_stdout.txt, log.txt      full logs"
