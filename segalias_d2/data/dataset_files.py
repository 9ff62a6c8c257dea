"""Dataset helpers shared by the low-light loaders and the mappers: class remapping of instances,
the clean twin of a LIS dark image, and the missing-files check of a registered dataset. Re-exported
by :mod:`.lowlight`."""

import os

import torch
from detectron2.utils.file_io import PathManager

from .raw_io import LowLightDataError, lis_pair_file_name


class DatasetNotFoundError(LowLightDataError, FileNotFoundError):
    """Files of a registered dataset are missing (raised at first use, not at registration)."""


def remap_instances(instances, index_map):
    """Relabel a Detectron2 ``Instances`` with ``pred_classes`` (or ``gt_classes``) by
    ``index_map``.

    Instances whose class maps to -1 are dropped. Returns a new ``Instances``.
    """

    field = "pred_classes" if instances.has("pred_classes") else "gt_classes"
    classes = instances.get(field)
    m = torch.as_tensor(index_map, device=classes.device)
    new = m[classes]
    keep = new >= 0
    out = instances[keep]
    out.set(field, new[keep])
    return out


#: LIS dark-image folder -> (folder of its normal-exposure twins, their extension); LIS README
#: layout
LIS_NORMAL_TWIN_FOLDERS = {"RAW-dark": ("RAW-normal", ".png"), "RGB-dark": ("RGB-normal", ".png")}


def lis_clean_twin_file_name(dark_file_name):
    """The normal-exposure twin of a LIS dark image: ``<root>/RAW-dark/JPEGImages/<n>.png`` ->
    ``<root>/RAW-normal/JPEGImages/<n-1>.png`` (:data:`LIS_NORMAL_TWIN_FOLDERS`; pairs are numbered
    normal n - 1, dark n). Raises :class:`LowLightDataError` for a file outside those folders."""
    path = os.path.normpath(str(dark_file_name))
    parts = path.split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in LIS_NORMAL_TWIN_FOLDERS:
            folder, ext = LIS_NORMAL_TWIN_FOLDERS[parts[i]]
            normal = lis_pair_file_name(os.sep.join(parts[:i] + [folder] + parts[i + 1 :]))
            return os.path.splitext(normal)[0] + ext
    raise LowLightDataError(
        f"cannot derive the clean twin of '{dark_file_name}': it is not under a LIS dark folder "
        f"{sorted(LIS_NORMAL_TWIN_FOLDERS)}; register the dataset with clean_image_root=... (or "
        "give each record a 'clean_file_name')"
    )


def require_paths(dataset_name, paths, env_var="DETECTRON2_DATASETS", hint=""):
    """Raise :class:`DatasetNotFoundError` listing every path in ``paths`` that does not exist."""

    missing = [p for p in paths if not PathManager.exists(p)]
    if missing:
        root = os.environ.get(env_var)
        where = (
            f"${env_var}='{root}'"
            if root
            else f"${env_var} is not set, so the default 'datasets' was used"
        )
        raise DatasetNotFoundError(
            f"dataset '{dataset_name}' is missing {len(missing)} path(s):\n  "
            + "\n  ".join(os.path.abspath(p) for p in missing)
            + f"\n(looked under the dataset root; {where}). See datasets/README.md for the "
            "expected layout." + (f" {hint}" if hint else "")
        )
