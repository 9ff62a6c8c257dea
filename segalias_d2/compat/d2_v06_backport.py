"""Detectron2 v0.6 backport: provisioning and every compatibility fix for today's stack, in one place.

Detectron2 is not on the package index. The only source reachable is the ``pb1-detectron2==0.6``
source distribution, whose Python files are identical to the official v0.6 tag but which has no
C++ sources (its setup.py cannot build). This module turns it into a pure-Python distribution
named ``detectron2`` (so ``pip show``/``pip uninstall detectron2`` behave normally), with the small
source fixes listed in :data:`PATCHES` applied at build time.

Why fix at build time instead of monkeypatching at import: the fixes then hold whatever the import
order (``import detectron2`` before ``segalias_d2`` included), they never touch numpy/PIL globally,
and an official Detectron2 build is never modified (provisioning is skipped when one is present).

Standard library only: run it before Detectron2 exists, by path::

    python segalias_d2/compat/d2_v06_backport.py --install     # no-op if a Detectron2 is importable
    python segalias_d2/compat/d2_v06_backport.py --status
"""
import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_PROJECT = "pb1-detectron2"
SDIST_FILENAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
#: bump when PATCHES or the _C stand-in change, so set-up rebuilds the backport
BACKPORT_REVISION = 2
DIST_VERSION = f"0.6+segalias.backport{BACKPORT_REVISION}"
MARKER_MODULE = "_segalias_backport"

# numpy 1.24 removed these aliases of builtins (numpy 2 brought back only np.bool).
_NUMPY_ALIAS_RE = re.compile(r"\bnp\.(bool|int|float|str|object)\b(?!_|\d)")
_NUMPY_ALIAS_FILES = [
    "detectron2/data/build.py",
    "detectron2/data/datasets/pascal_voc.py",
    "detectron2/evaluation/pascal_voc_evaluation.py",
    "detectron2/evaluation/sem_seg_evaluation.py",
    "detectron2/structures/masks.py",
    "detectron2/utils/video_visualizer.py",
    "detectron2/utils/visualizer.py",
]

_DEFORM_CONV_FALLBACK = '''

# --- segalias_d2 backport: no compiled extension, so route deformable convolution through
# torchvision.ops.deform_conv2d, which computes the same operator (same offset/mask layout:
# (dy, dx) pairs per kernel tap and deformable group) and has its own autograd.
if not getattr(_C, "COMPILED", True):
    from torchvision.ops import deform_conv2d as _tv_deform_conv2d

    def deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, groups=1,
                    deformable_groups=1, im2col_step=64):
        # groups and deformable_groups are implied by the weight and offset shapes
        return _tv_deform_conv2d(input, offset, weight, None, _pair(stride), _pair(padding),
                                 _pair(dilation))

    def modulated_deform_conv(input, offset, mask, weight, bias=None, stride=1, padding=0,
                              dilation=1, groups=1, deformable_groups=1):
        return _tv_deform_conv2d(input, offset, weight, bias, _pair(stride), _pair(padding),
                                 _pair(dilation), mask)
'''

_TRAINER_STATE = '''
    def state_dict(self):
        # segalias_d2 backport: also save the inner trainer (optimizer state), as Detectron2 main does
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    def resume_or_load(self, resume=True):'''

#: (file, old text, new text, why). Every ``old`` must occur in the pinned sources (checked).
PATCHES = [
    (
        "detectron2/data/transforms/transform.py",
        "interp=Image.LINEAR",
        "interp=Image.BILINEAR",
        "Pillow>=10 removed Image.LINEAR (an alias of BILINEAR); it was evaluated at import.",
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        "import pkg_resources\n",
        "",
        "pkg_resources is gone from current setuptools.",
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
        'cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
        "Locate packaged model-zoo configs without pkg_resources.",
    ),
    (
        "detectron2/data/common.py",
        "cur_idx = self._rng.sample(self._fallback_candidates, k=1)[0]",
        "cur_idx = self._rng.sample(list(self._fallback_candidates), k=1)[0]",
        "Python 3.11 random.sample no longer accepts a set (MapDataset fallback when a mapper returns None).",
    ),
    (
        "detectron2/layers/mask_ops.py",
        "mask = np.array(mask, copy=False)",
        "mask = np.asarray(mask)",
        "numpy 2: np.array(copy=False) raises when a copy is needed.",
    ),
    (
        "detectron2/export/__init__.py",
        "from .api import *\n",
        "try:\n    from .api import *\nexcept ImportError as _caffe2_error:  # caffe2 is not part of PyTorch any more\n"
        "    _CAFFE2_IMPORT_ERROR = _caffe2_error\n",
        "detectron2.export imported caffe2 unconditionally, which also broke detectron2.utils.analysis "
        "(the FLOP counter). The caffe2 exporters stay unavailable; TracingAdapter/torchscript work.",
    ),
    (
        "detectron2/evaluation/coco_evaluation.py",
        "coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)",
        "from detectron2 import _C as _d2_C\n\n"
        "    # segalias_d2 backport: the fast C++ COCOeval needs the compiled extension; use pycocotools\n"
        "    use_fast_impl = use_fast_impl and getattr(_d2_C, \"COMPILED\", True)\n"
        "    coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)",
        "COCO evaluation falls back to the official pycocotools COCOeval without the compiled fast path.",
    ),
    (
        "detectron2/layers/nms.py",
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)",
        "    from detectron2 import _C as _d2_C\n\n"
        "    if not getattr(_d2_C, \"COMPILED\", True):\n"
        "        return _d2_C.nms_rotated(boxes, scores, iou_threshold)  # raises a clear error\n"
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)",
        "Rotated NMS is a compiled op: raise the documented error instead of 'No such operator'.",
    ),
    (
        "detectron2/layers/deform_conv.py",
        "__END_OF_FILE__",
        _DEFORM_CONV_FALLBACK,
        "Deformable convolution through torchvision.ops.deform_conv2d (exact, pure PyTorch/torchvision).",
    ),
    (
        "detectron2/engine/defaults.py",
        "\n    def resume_or_load(self, resume=True):",
        _TRAINER_STATE,
        "v0.6 DefaultTrainer did not checkpoint optimizer state, so --resume silently lost momentum.",
    ),
    (
        "detectron2/engine/hooks.py",
        "isinstance(self.scheduler, torch.optim.lr_scheduler._LRScheduler)",
        "isinstance(self.scheduler, getattr(torch.optim.lr_scheduler, \"LRScheduler\", torch.optim.lr_scheduler._LRScheduler))",
        "torch>=2 schedulers subclass the public LRScheduler; v0.6 only saved _LRScheduler state on resume.",
    ),
    (
        "detectron2/engine/launch.py",
        'assert torch.cuda.is_available(), "cuda is not available. Please check your installation."',
        "has_gpu = torch.cuda.is_available()  # segalias_d2 backport: CPU processes use GLOO, as on main",
        "v0.6 launch() required CUDA; like Detectron2 main, N CPU processes now use the GLOO backend.",
    ),
    (
        "detectron2/engine/launch.py",
        'backend="NCCL",',
        'backend="NCCL" if has_gpu else "GLOO",',
        "(same fix) choose GLOO without GPUs.",
    ),
    (
        "detectron2/engine/launch.py",
        "    assert num_gpus_per_machine <= torch.cuda.device_count()\n    torch.cuda.set_device(local_rank)",
        "    if has_gpu:\n        assert num_gpus_per_machine <= torch.cuda.device_count()\n        torch.cuda.set_device(local_rank)",
        "(same fix) only bind a GPU when there is one.",
    ),
    (
        "detectron2/engine/defaults.py",
        '    if "device_ids" not in kwargs:\n        kwargs["device_ids"] = [comm.get_local_rank()]',
        '    if "device_ids" not in kwargs and any(p.is_cuda for p in model.parameters()):\n'
        '        kwargs["device_ids"] = [comm.get_local_rank()]  # CPU modules: DDP needs device_ids=None',
        "DistributedDataParallel rejects device_ids for CPU models (CPU/GLOO multi-process training).",
    ),
]

#: Pure-Python stand-in for the compiled ``detectron2._C``.
_C_STANDIN = '''"""Stand-in for Detectron2's compiled extension, installed by the segalias_d2 v0.6 backport.

This Detectron2 is a pure-Python build: the ops below need the C++/CUDA extension and raise
CompiledOpUnavailableError when called. Deformable convolution and COCO evaluation work without it
(torchvision.ops.deform_conv2d and pycocotools). Everything else in Detectron2 is unaffected.
"""
COMPILED = False

#: compiled op -> what uses it
UNAVAILABLE_OPS = {
    "box_iou_rotated": "RotatedBoxes IoU (detectron2.structures.pairwise_iou_rotated, RRPN)",
    "nms_rotated": "rotated NMS (detectron2.layers.nms_rotated, RRPN / RotatedFastRCNN)",
    "roi_align_rotated_forward": "ROIAlignRotated",
    "roi_align_rotated_backward": "ROIAlignRotated",
    "deform_conv_forward": "low-level deformable conv kernel (DeformConv uses torchvision instead)",
    "deform_conv_backward_input": "low-level deformable conv kernel",
    "deform_conv_backward_filter": "low-level deformable conv kernel",
    "modulated_deform_conv_forward": "low-level deformable conv kernel",
    "modulated_deform_conv_backward": "low-level deformable conv kernel",
    "InstanceAnnotation": "fast COCOeval (COCOEvaluator falls back to pycocotools)",
    "COCOevalEvaluateImages": "fast COCOeval (COCOEvaluator falls back to pycocotools)",
    "COCOevalAccumulate": "fast COCOeval (COCOEvaluator falls back to pycocotools)",
}


class CompiledOpUnavailableError(RuntimeError):
    """A Detectron2 op that needs the compiled extension was called on the pure-Python backport."""


def _unavailable(name):
    def op(*args, **kwargs):
        raise CompiledOpUnavailableError(
            f"Detectron2 op '{name}' ({UNAVAILABLE_OPS.get(name, 'compiled op')}) needs Detectron2's "
            "compiled extension (detectron2._C), which the pure-Python Detectron2 v0.6 backport "
            "installed by segalias_d2 does not have. To use it, install an official Detectron2 "
            "built from source into this environment (see segalias_d2's README, section "
            "'Using an official Detectron2'); segalias_d2 then uses it untouched."
        )

    op.__name__ = name
    return op


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _unavailable(name)


def get_compiler_version():
    return "none (pure-Python Detectron2 v0.6 backport)"


def get_cuda_version():
    return "none"


def has_cuda():
    return False
'''

_MARKER = '''"""Marks this Detectron2 as the pure-Python v0.6 backport built by segalias_d2."""
SOURCE = "{sdist} (sha256 {sha})"
REVISION = {rev}
PATCHES = {patches!r}
'''


def _apply_patches(src_root: Path):
    for rel in _NUMPY_ALIAS_FILES:
        path = src_root / rel
        text = path.read_text()
        new, count = _NUMPY_ALIAS_RE.subn(lambda m: m.group(1), text)
        if count == 0:
            raise RuntimeError(f"backport patch 'numpy aliases' found nothing to fix in {rel}")
        path.write_text(new)
    for rel, old, new, why in PATCHES:
        path = src_root / rel
        text = path.read_text()
        if old == "__END_OF_FILE__":
            text = text + new
        else:
            if text.count(old) < 1:
                raise RuntimeError(f"backport patch for {rel} ({why}) does not apply: text not found")
            text = text.replace(old, new)
        path.write_text(text)
    (src_root / "detectron2" / "_C.py").write_text(_C_STANDIN)
    (src_root / "detectron2" / f"{MARKER_MODULE}.py").write_text(
        _MARKER.format(
            sdist=SDIST_FILENAME,
            sha=SDIST_SHA256,
            rev=BACKPORT_REVISION,
            patches=["numpy>=1.24 aliases"] + [p[3] for p in PATCHES],
        )
    )


_SETUP_PY = """from setuptools import find_namespace_packages, setup

setup(
    name="detectron2",
    version="{version}",
    description="Detectron2 v0.6 (pure-Python backport built by segalias_d2 from {sdist})",
    license="Apache-2.0",
    # namespace discovery so the model-zoo config folders ship as package data
    packages=find_namespace_packages(include=["detectron2", "detectron2.*"]),
    package_data={{"": ["*.yaml", "*.py"]}},
    include_package_data=True,
    python_requires=">=3.7",
)
"""


def _load_fetcher():
    path = Path(__file__).resolve().parents[1] / "utils" / "pypi_fetch.py"
    spec = importlib.util.spec_from_file_location("_segalias_pypi_fetch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_source_tree(dest: Path) -> Path:
    """Fetch the pinned sdist, extract the detectron2 package and apply the patches into ``dest``."""
    fetch = _load_fetcher()
    archive = fetch.fetch_sdist(SDIST_PROJECT, SDIST_FILENAME, SDIST_SHA256)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("pb1-detectron2-0.6/detectron2/")]
        # the "data" filter refuses unsafe paths (Python >= 3.11.4 / 3.8.17)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **kwargs)
    root = dest / "pb1-detectron2-0.6"
    for name in ("LICENSE",):
        with tarfile.open(archive) as tar:
            member = tar.extractfile(f"pb1-detectron2-0.6/{name}")
            (root / name).write_bytes(member.read())
    _apply_patches(root)
    (root / "setup.py").write_text(_SETUP_PY.format(version=DIST_VERSION, sdist=SDIST_FILENAME))
    return root


def detectron2_status(python: str = sys.executable) -> str:
    """'missing', 'official', or 'backport-<revision>' for the Detectron2 importable by ``python``."""
    code = (
        "import importlib.util, sys\n"
        "if importlib.util.find_spec('detectron2') is None: print('missing'); sys.exit()\n"
        f"spec = importlib.util.find_spec('detectron2.{MARKER_MODULE}')\n"
        "if spec is None: print('official'); sys.exit()\n"
        f"from detectron2 import {MARKER_MODULE} as m\n"
        "print('backport-%d' % m.REVISION)\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"could not inspect Detectron2 with {python}:\n{out.stderr}")
    return out.stdout.strip()


def install(python: str = sys.executable, force: bool = False) -> str:
    """Install the backport into ``python``'s environment unless a Detectron2 is already there.

    An official Detectron2 is never touched. An older backport revision is replaced.
    """
    status = detectron2_status(python)
    if status == "official" and not force:
        print("[segalias_d2] an official Detectron2 is importable: using it untouched", file=sys.stderr)
        return status
    if status == f"backport-{BACKPORT_REVISION}" and not force:
        return status
    with tempfile.TemporaryDirectory(prefix="segalias_d2_backport_") as tmp:
        root = build_source_tree(Path(tmp))
        print(f"[segalias_d2] installing Detectron2 {DIST_VERSION} (pure-Python backport)", file=sys.stderr)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(root)],
            check=True,
        )
        shutil.rmtree(root, ignore_errors=True)
    return detectron2_status(python)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true", help="install the backport unless a Detectron2 exists")
    parser.add_argument("--force", action="store_true", help="(re)install even over an existing Detectron2")
    parser.add_argument("--status", action="store_true", help="print missing / official / backport-N")
    parser.add_argument("--python", default=sys.executable, help="interpreter whose environment to use")
    parser.add_argument("--source-tree", metavar="DIR", help="only write the patched source tree to DIR")
    args = parser.parse_args(argv)
    if args.source_tree:
        print(build_source_tree(Path(args.source_tree)))
    elif args.install or args.force:
        print(install(args.python, force=args.force))
    else:
        print(detectron2_status(args.python))


if __name__ == "__main__":
    main()
