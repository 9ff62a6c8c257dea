"""Print the environment segalias_d2 runs in: ``python -m segalias_d2.collect_env``."""

import importlib
import os
import platform
import sys

import torch
from tabulate import tabulate


def _version(module_name):
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # report, never crash: this is a diagnostics tool
        return f"not importable ({type(e).__name__}: {e})"
    return getattr(module, "__version__", "unknown version")


def collect_env_info() -> str:

    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("numpy", _version("numpy")),
        ("PyTorch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
        ("torchvision", _version("torchvision")),
        ("CUDA available", str(torch.cuda.is_available())),
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            rows.append((f"GPU {i}", torch.cuda.get_device_name(i)))
        rows.append(("CUDA (torch build)", str(torch.version.cuda)))
    try:
        import detectron2  # noqa: PLC0415  (reports a missing or broken Detectron2)

        from segalias_d2 import compat  # noqa: PLC0415  (imports Detectron2: reports a broken one)

        info = compat.detectron2_build_info()
        rows += [
            ("detectron2", f"{detectron2.__version__} @ {os.path.dirname(detectron2.__file__)}"),
            ("detectron2 source", compat.detectron2_source()),
            (
                "detectron2 compiled ops",
                "present (detectron2._C)" if info["compiled_ops"] else "absent",
            ),
        ]
        if info["kind"] == "official":
            rows.append(
                ("detectron2 installed from", info["source"] or "unknown (no direct_url.json)")
            )
        rows += [(f"op: {feature}", status) for feature, status in compat.compiled_op_status()]
    except ImportError as e:
        rows.append(("detectron2", f"not importable ({e}); run: bash dev/setup_env.sh"))
    for name in (
        "segalias_d2",
        "fvcore",
        "iopath",
        "pycocotools",
        "cv2",
        "PIL",
        "rawpy",
        "shapely",
    ):
        rows.append((name, _version(name)))
    rows.append(("machine", f"{platform.machine()}, {os.cpu_count()} CPU cores"))
    return tabulate(rows)


def main():
    print(collect_env_info())


if __name__ == "__main__":
    main()
