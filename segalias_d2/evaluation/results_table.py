"""Plain-text tables and CSV files of evaluation results (percent; a metric that was not measured is
"-").

Used by ``tools/evaluate_predictions.py``; the inputs are result dicts as the evaluators return them
(``{"boundary_errors": {...}, "boundary_iou": {...}}`` or ``{"bbox", "segm", "boundary_ap",
"boundary_errors"}``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Dict, List, Sequence

from .evaluator_utils import dump_json

__all__ = [
    "semantic_rows",
    "instance_rows",
    "format_table",
    "summary_lines",
    "write_csv",
    "write_report",
    "SEMANTIC_COLUMNS",
    "INSTANCE_COLUMNS",
]

#: per-class columns: (header, result task, key prefix)
SEMANTIC_COLUMNS = [
    ("IoU", "boundary_errors", "IoU"),
    ("Acc", "boundary_errors", "Acc"),
    ("BIoU", "boundary_errors", "BIoU"),
    ("BAcc", "boundary_errors", "BAcc"),
    ("FErr", "boundary_errors", "FErr"),
    ("MErr", "boundary_errors", "MErr"),
    ("DErr", "boundary_errors", "DErr"),
    ("BoundaryIoU", "boundary_iou", "BoundaryIoU"),
]
_SEMANTIC_MEANS = {
    "IoU": "mIoU",
    "Acc": "mAcc",
    "BIoU": "BIoU",
    "BAcc": "BAcc",
    "FErr": "FErr",
    "MErr": "MErr",
    "DErr": "DErr",
    "BoundaryIoU": "mBoundaryIoU",
}
INSTANCE_COLUMNS = [
    ("box AP", "bbox", "AP"),
    ("mask AP", "segm", "AP"),
    ("boundary AP", "boundary_ap", "AP"),
    ("IoU", "boundary_errors", "IoU"),
    ("BIoU", "boundary_errors", "BIoU"),
    ("FErr", "boundary_errors", "FErr"),
    ("MErr", "boundary_errors", "MErr"),
    ("DErr", "boundary_errors", "DErr"),
]
_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_ERROR_KEYS = (
    "mIoU",
    "mAcc",
    "aAcc",
    "BIoU",
    "BAcc",
    "BaAcc",
    "FErr",
    "FErr_a",
    "MErr",
    "MErr_a",
    "DErr",
    "DErr_a",
)


def _num(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):.2f}"


def semantic_rows(results: Dict[str, dict], class_names: Sequence[str]) -> List[List[str]]:
    """Header, one row per class, and the "mean" row (class means of the evaluators)."""
    rows = [["class"] + [c[0] for c in SEMANTIC_COLUMNS]]
    for name in class_names:
        rows.append(
            [name]
            + [
                _num(results.get(task, {}).get(f"{key}-{name}"))
                for _, task, key in SEMANTIC_COLUMNS
            ]
        )
    rows.append(
        ["mean"]
        + [_num(results.get(task, {}).get(_SEMANTIC_MEANS[h])) for h, task, _ in SEMANTIC_COLUMNS]
    )
    return rows


def instance_rows(results: Dict[str, dict], class_names: Sequence[str]) -> List[List[str]]:
    """Header, one row per class (AP at IoU .50:.95 and the boundary errors of the class), and
    "all"."""
    cols = [c for c in INSTANCE_COLUMNS if c[1] in results]
    rows = [["class"] + [c[0] for c in cols]]
    for name in class_names:
        rows.append([name] + [_num(results[t].get(f"{k}-{name}")) for _, t, k in cols])
    mean_key = {
        "AP": "AP",
        "IoU": "mIoU",
        "BIoU": "BIoU",
        "FErr": "FErr",
        "MErr": "MErr",
        "DErr": "DErr",
    }
    rows.append(["all"] + [_num(results[t].get(mean_key[k])) for _, t, k in cols])
    return rows


def format_table(rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_lines(results: Dict[str, dict]) -> List[str]:
    """One line per task: the overall metrics."""
    lines = []
    for task in ("bbox", "segm", "boundary_ap"):
        if task in results and results[task]:
            lines.append(
                f"{task:<15} " + "  ".join(f"{k} {_num(results[task].get(k))}" for k in _AP_KEYS)
            )
    if results.get("boundary_errors"):
        lines.append(
            "boundary_errors "
            + "  ".join(f"{k} {_num(results['boundary_errors'].get(k))}" for k in _ERROR_KEYS)
        )
    if results.get("boundary_iou"):
        lines.append(
            f"boundary_iou    mBoundaryIoU {_num(results['boundary_iou'].get('mBoundaryIoU'))}"
        )
    return lines


def write_csv(rows: List[List[str]], path: str, comment: Sequence) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["#"] + list(comment))
        w.writerows(rows)


def write_report(
    results: Dict[str, dict], rows: List[List[str]], output_dir: str, info: dict
) -> Dict[str, str]:
    """``evaluate_predictions.{json,csv,txt}`` in ``output_dir``: strict JSON (``info`` +
    ``"metrics"``), the per-class rows as CSV (``info`` in the first line), and the text of
    :func:`format_report`."""

    os.makedirs(output_dir, exist_ok=True)
    base = os.path.join(output_dir, "evaluate_predictions")
    with open(base + ".json", "w") as f:
        dump_json(dict(info, units="percent", metrics=results), f, indent=2)
    write_csv(
        rows,
        base + ".csv",
        [
            f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
            for k, v in info.items()
            if k != "classes"
        ],
    )
    with open(base + ".txt", "w") as f:
        f.write(format_report(results, rows, info) + "\n")
    return {"json": base + ".json", "csv": base + ".csv", "txt": base + ".txt"}


def format_report(results: Dict[str, dict], rows: List[List[str]], info: dict) -> str:
    """Header line (what was scored, settings), overall lines, per-class table."""
    settings = ", ".join(f"{k} {v}" for k, v in info.get("settings", {}).items())
    head = (
        f"{info.get('kind')} predictions {info.get('predictions')} vs {info.get('ground_truth')}: "
        f"{info.get('num_images')} images, {len(info.get('classes', []))} classes ({settings}); "
        "percent"
    )
    return "\n".join([head, *summary_lines(results), "", format_table(rows)])
