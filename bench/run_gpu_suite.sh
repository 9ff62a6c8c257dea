#!/usr/bin/env bash
# All GPU benchmarks of bench/ in one run (a few minutes on one current GPU), tables written to one file.
#
#   bash bench/run_gpu_suite.sh [OUTFILE]        (default: bench/gpu_results_<UTC date-time>.md)
#   PYTHON=/path/to/python bash bench/run_gpu_suite.sh
#
# Needs the project environment (torch with CUDA, the Detectron2 backport, segalias_d2 importable). Every script
# runs with --device cuda: CUDA-event timing with synchronisation, warm-up, fp32 + fp16/bf16 autocast rows,
# torch.cuda.max_memory_allocated peaks. The data-pipeline bench runs only its training step (its data stages
# are CPU code, and the GPU machine may not have the pinned RAW file); the evaluator end-to-end bench runs with the
# logits on the GPU (argmax there, uint8 labels copied to the host; the counting is CPU code); the metric-core
# bench bench_boundary_evaluator.py is CPU-only (NumPy/OpenCV) and is not part of this suite, nor is
# bench_lowpass_forms.py (it compares the CPU's three low-pass forms; CUDA always uses the transforms).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${1:-bench/gpu_results_$(date -u +%Y%m%d_%H%M).md}

"$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("run_gpu_suite.sh: no CUDA device visible to torch " + torch.__version__)
EOF

run() {  # title, command...
    echo
    echo "## $1"
    echo
    echo "\`${*:2}\`"
    echo
    local t0=$SECONDS
    "${@:2}" || echo "**FAILED with exit code $?** (the suite goes on with the next script)"
    echo
    echo "(took $((SECONDS - t0)) s)"
}

{
    echo "# GPU benchmark run, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())"
    run "Fourier filters" "$PY" bench/bench_fourier_filters.py --device cuda --reps 20
    run "Backbone, batch 1" "$PY" bench/bench_backbone.py --device cuda --reps 10 --batch 1 --models plain new keep old
    run "Backbone, batch 8 (the released per-GPU batch)" "$PY" bench/bench_backbone.py --device cuda --reps 10 --batch 8
    run "Backbone profile, batch 8, fp16" "$PY" bench/bench_backbone.py --device cuda --batch 8 --amp fp16 --profile 20
    run "Mask R-CNN training step" "$PY" bench/bench_data_pipeline.py --device cuda --train-only --train-iters 10
    run "Boundary-error evaluator end to end, logits on the GPU" "$PY" bench/bench_evaluator_e2e.py --device cuda --n 3 --reps 5
} 2>&1 | tee "$OUT"
echo "wrote $OUT"
