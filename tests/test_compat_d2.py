"""Detectron2 on today's stack: each test exercises one compatibility fix of the v0.6 backport
(dev/d2_backport/patches/) against an independent expectation. On an official Detectron2 the same
behaviour must hold (the fixes are upstream there); where a build lacks a feature (deformable conv
on CPU tensors in official builds), the test checks what segalias_d2.compat says the build
supports."""

import copy
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata

import detectron2
import numpy as np
import pytest
import torch
from detectron2 import _C
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.datasets import load_coco_json
from detectron2.data.transforms import CropTransform, ExtentTransform, ResizeTransform
from detectron2.evaluation import COCOEvaluator, SemSegEvaluator
from detectron2.layers import DeformConv, ModulatedDeformConv, ROIAlignRotated, nms_rotated
from detectron2.structures import (
    Boxes,
    Instances,
    PolygonMasks,
    RotatedBoxes,
    pairwise_iou_rotated,
    polygons_to_bitmask,
)
from detectron2.utils.analysis import FlopCountAnalysis
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segalias_d2 import compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_polygon_rasterisation_and_nonempty():

    # axis-aligned square with corners on pixel borders: pixels 2..5 inside -> 4x4
    square = [np.array([2, 2, 6, 2, 6, 6, 2, 6], dtype=np.float64)]
    mask = polygons_to_bitmask(square, 10, 10)
    assert mask.dtype == bool and mask.shape == (10, 10)
    expected = np.zeros((10, 10), bool)
    expected[2:6, 2:6] = True
    assert (mask == expected).all()
    masks = PolygonMasks(
        [square, []]
    )  # the second instance has no polygon left (e.g. after a crop)
    keep = masks.nonempty()
    assert keep.dtype == torch.bool and keep.tolist() == [True, False]
    assert masks.area().tolist() == [16.0, 0.0]


def test_pil_resize_transforms_match_pil():

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    out = ResizeTransform(20, 30, 10, 15, Image.BILINEAR).apply_image(img)
    expected = np.asarray(Image.fromarray(img).resize((15, 10), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    # ExtentTransform's default interpolation was Image.LINEAR (removed in Pillow 10)
    ext = ExtentTransform((0, 0, 30, 20), (10, 15))
    assert ext.interp == Image.BILINEAR
    assert ext.apply_image(img).shape == (10, 15, 3)


def test_map_dataset_falls_back_when_mapper_returns_none():

    data = DatasetFromList(list(range(6)), copy=False, serialize=False)
    mapped = MapDataset(data, lambda x: None if x % 2 else x * 10)
    outs = [mapped[i] for i in range(6)]
    assert outs[0] == 0 and outs[2] == 20 and outs[4] == 40
    assert all(o in (0, 20, 40) for o in outs)  # odd items replaced by valid ones


def test_polygon_crop_clips_to_box():

    # square 0..10 cropped at x0=5,y0=5,w=10,h=10 -> remaining part 0..5 in crop coordinates
    poly = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=np.float64)
    out = CropTransform(5, 5, 10, 10).apply_polygons([poly])
    assert len(out) == 1
    xs, ys = out[0][:, 0], out[0][:, 1]
    assert xs.min() == pytest.approx(0) and xs.max() == pytest.approx(5)
    assert ys.min() == pytest.approx(0) and ys.max() == pytest.approx(5)


def _register_tiny_sem_seg(tmp, name):

    gt = np.zeros((4, 6), np.uint8)
    gt[:, 3:] = 1
    gt[0, 0] = 255  # ignored
    path = os.path.join(tmp, "gt.png")
    Image.fromarray(gt).save(path)
    DatasetCatalog.register(name, lambda: [{"file_name": path, "sem_seg_file_name": path}])
    MetadataCatalog.get(name).set(
        stuff_classes=["a", "b"], ignore_label=255, evaluator_type="sem_seg"
    )
    return gt


def test_sem_seg_evaluator_tiny_dataset():

    name = "_segalias_test_tiny_semseg"
    with tempfile.TemporaryDirectory() as tmp:
        gt = _register_tiny_sem_seg(tmp, name)
        try:
            pred = np.zeros((4, 6), np.int64)
            pred[:, 2:] = 1  # column 2 wrong: 4 pixels of class a predicted as b
            logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 2).permute(2, 0, 1).float()
            ev = SemSegEvaluator(name, distributed=False, output_dir=None)
            ev.reset()
            ev.process([{"file_name": os.path.join(tmp, "gt.png")}], [{"sem_seg": logits}])
            res = ev.evaluate()["sem_seg"]
        finally:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    # hand count (ignore pixel excluded): class a: gt 11, pred 7, tp 7; class b: gt 12, pred 16, tp
    # 12
    iou_a, iou_b = 7 / 11, 12 / 16
    assert res["IoU-a"] == pytest.approx(100 * iou_a)
    assert res["IoU-b"] == pytest.approx(100 * iou_b)
    assert res["mIoU"] == pytest.approx(100 * (iou_a + iou_b) / 2)
    assert res["pACC"] == pytest.approx(100 * 19 / 23)
    assert gt.shape == (4, 6)


def test_coco_evaluation_without_compiled_fast_path():
    """COCOEvaluator (default use_fast_impl=True) equals pycocotools run directly."""

    gt = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 60, "width": 80},
            {"id": 2, "file_name": "b.jpg", "height": 60, "width": 80},
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [10, 10, 20, 15],
                "area": 300,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "bbox": [40, 20, 30, 30],
                "area": 900,
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 2,
                "category_id": 1,
                "bbox": [5, 5, 40, 40],
                "area": 1600,
                "iscrowd": 0,
            },
        ],
    }
    dets = {  # image_id -> list of (xywh, category_id, score)
        1: [([11, 10, 20, 14], 1, 0.9), ([42, 24, 30, 30], 2, 0.8), ([0, 0, 10, 10], 1, 0.3)],
        2: [([5, 8, 38, 40], 1, 0.7), ([50, 30, 10, 10], 2, 0.6)],
    }
    name = "_segalias_test_tiny_coco"
    with tempfile.TemporaryDirectory() as tmp:
        json_file = os.path.join(tmp, "gt.json")
        with open(json_file, "w") as f:
            json.dump(gt, f)
        DatasetCatalog.register(name, lambda: load_coco_json(json_file, tmp, name))
        MetadataCatalog.get(name).set(json_file=json_file, evaluator_type="coco")
        try:
            DatasetCatalog.get(name)  # sets the id -> contiguous id mapping
            id_map = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
            ev = COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=tmp)
            ev.reset()
            for image_id, items in dets.items():
                inst = Instances((60, 80))
                inst.pred_boxes = Boxes(
                    torch.tensor(
                        [[x, y, x + w, y + h] for (x, y, w, h), _, _ in items], dtype=torch.float32
                    )
                )
                inst.scores = torch.tensor([s for _, _, s in items])
                inst.pred_classes = torch.tensor([id_map[c] for _, c, _ in items])
                ev.process([{"image_id": image_id}], [{"instances": inst}])
            ours = ev.evaluate()["bbox"]
            coco_gt = COCO(json_file)
            results = [
                {"image_id": i, "bbox": b, "category_id": c, "score": s}
                for i, items in dets.items()
                for b, c, s in items
            ]
            direct = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
            direct.evaluate()
            direct.accumulate()
            direct.summarize()
        finally:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    assert ours["AP"] == pytest.approx(100 * direct.stats[0], abs=1e-6)
    assert ours["AP50"] == pytest.approx(100 * direct.stats[1], abs=1e-6)
    assert ours["AP75"] == pytest.approx(100 * direct.stats[2], abs=1e-6)


def test_rotated_ops_compute_or_raise_the_documented_error():

    boxes = torch.tensor([[5.0, 5.0, 4.0, 4.0, 0.0], [6.0, 5.0, 4.0, 4.0, 30.0]])
    if compat.has_compiled_ops():  # official build: the compiled ops compute
        same = torch.tensor(
            [[5.0, 5.0, 4.0, 4.0, 0.0], [5.0, 5.0, 4.0, 4.0, 0.0], [20.0, 20.0, 2.0, 2.0, 0.0]]
        )
        iou = pairwise_iou_rotated(RotatedBoxes(same), RotatedBoxes(same))
        torch.testing.assert_close(iou[0], torch.tensor([1.0, 1.0, 0.0]))
        # 4x4 boxes, one shifted by 1 px in x: overlap 3x4 = 12, union 20
        assert float(
            pairwise_iou_rotated(
                RotatedBoxes(boxes[:1]), RotatedBoxes(torch.tensor([[6.0, 5.0, 4.0, 4.0, 0.0]]))
            )
        ) == pytest.approx(12 / 20)
        assert nms_rotated(same, torch.tensor([0.5, 0.9, 0.7]), 0.5).tolist() == [1, 2]
        pooled = ROIAlignRotated((2, 2), 1.0, 0)(
            torch.full((1, 1, 8, 8), 3.0), torch.tensor([[0, 4.0, 4.0, 2.0, 2.0, 30.0]])
        )
        torch.testing.assert_close(pooled, torch.full((1, 1, 2, 2), 3.0))
        return
    with pytest.raises(_C.CompiledOpUnavailableError, match="nms_rotated"):
        nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5)
    with pytest.raises(_C.CompiledOpUnavailableError, match="box_iou_rotated.*official Detectron2"):
        pairwise_iou_rotated(RotatedBoxes(boxes), RotatedBoxes(boxes))
    with pytest.raises(_C.CompiledOpUnavailableError, match="roi_align_rotated"):
        ROIAlignRotated((2, 2), 1.0, 0)(
            torch.zeros(1, 1, 8, 8), torch.tensor([[0, 4.0, 4.0, 2.0, 2.0, 0.0]])
        )
    assert isinstance(_C.CompiledOpUnavailableError("x"), RuntimeError)


def _deform_conv_case(feature):
    """Skip (naming the build) only when this Detectron2 genuinely lacks ``feature`` on CPU tensors.

    The v0.6 backport routes every deformable-conv feature through torchvision, so there it is
    required.
    """
    if compat.deform_conv_cpu_support()[feature]:
        return
    assert not compat.is_v06_backport(), (
        f"the v0.6 backport must support deformable conv '{feature}' on CPU"
    )
    pytest.skip(
        f"{compat.detectron2_source()}: deformable conv '{feature}' is not implemented for CPU "
        "tensors in this build (it needs CUDA)"
    )


def test_deform_conv_zero_offset_equals_conv2d():

    _deform_conv_case("forward")
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    conv = DeformConv(4, 6, 3, padding=1, groups=2)
    out = conv(x, torch.zeros(2, 2 * 9, 9, 11))
    torch.testing.assert_close(
        out, torch.nn.functional.conv2d(x, conv.weight, None, 1, 1, 1, 2), atol=1e-5, rtol=1e-5
    )
    # an integer offset of +1 px in x samples the input shifted left by one pixel
    off = torch.zeros(2, 2 * 9, 9, 11)
    off[:, 1::2] = 1.0
    shifted = torch.nn.functional.pad(x[..., 1:], (0, 1))
    ref = torch.nn.functional.conv2d(shifted, conv.weight, None, 1, 1, 1, 2)
    # column 0 differs by construction: its left tap samples x[..., 0] there but padding in
    # `shifted`
    torch.testing.assert_close(conv(x, off)[..., 1:], ref[..., 1:], atol=1e-5, rtol=1e-5)


def test_deform_conv_with_two_deformable_groups_equals_conv2d():

    _deform_conv_case("deformable_groups > 1")
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    conv = DeformConv(4, 6, 3, padding=1, groups=2, deformable_groups=2)
    out = conv(x, torch.zeros(2, 2 * 2 * 9, 9, 11))
    torch.testing.assert_close(
        out, torch.nn.functional.conv2d(x, conv.weight, None, 1, 1, 1, 2), atol=1e-5, rtol=1e-5
    )


def test_deform_conv_backward_equals_conv2d_backward():

    _deform_conv_case("backward")
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    conv = DeformConv(4, 6, 3, padding=1, groups=2)
    conv(x, torch.zeros(2, 2 * 9, 9, 11)).square().sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    torch.nn.functional.conv2d(
        x_ref, conv.weight.detach(), None, 1, 1, 1, 2
    ).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)


def test_modulated_deform_conv_half_mask_shift():

    _deform_conv_case("modulated")
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    # an integer offset of +1 px in x and mask 0.5 -> 0.5 * conv of the shifted input
    mconv = ModulatedDeformConv(4, 6, 3, padding=1, bias=True)
    off = torch.zeros(2, 2 * 9, 9, 11)
    off[:, 1::2] = 1.0
    mask = torch.full((2, 9, 9, 11), 0.5)
    shifted = torch.nn.functional.pad(x[..., 1:], (0, 1))
    ref = 0.5 * torch.nn.functional.conv2d(shifted, mconv.weight, None, 1, 1) + mconv.bias.view(
        1, -1, 1, 1
    )
    torch.testing.assert_close(mconv(x, off, mask)[..., 1:], ref[..., 1:], atol=1e-5, rtol=1e-5)


def test_deform_conv_support_probe_matches_the_build():
    support = compat.deform_conv_cpu_support()
    assert set(support) == {"forward", "deformable_groups > 1", "backward", "modulated"}
    assert support["forward"]  # every build computes the plain forward on CPU
    if compat.is_v06_backport():
        assert all(support.values()), support  # torchvision covers all of it
    elif not compat.has_compiled_ops():
        pytest.fail("an official Detectron2 without its compiled ops")


def test_flop_counter_imports_and_counts():

    model = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    flops = FlopCountAnalysis(model, (torch.zeros(1, 3, 10, 10),))
    assert flops.total() == 3 * 8 * 9 * 10 * 10  # fvcore counts one multiply-add as one flop


@pytest.mark.parametrize("order", ["detectron2 first", "segalias_d2 first"])
def test_import_order_does_not_matter(order):
    first, second = (
        ("detectron2.data", "segalias_d2")
        if order == "detectron2 first"
        else ("segalias_d2", "detectron2.data")
    )
    code = (
        f"import {first}, {second}\nfrom detectron2.data.transforms import ExtentTransform\n"
        "from detectron2.modeling import BACKBONE_REGISTRY\nimport numpy, PIL.Image\n"
        # nothing is patched globally for other libraries
        "assert not hasattr(PIL.Image, 'LINEAR') or PIL.Image.LINEAR == PIL.Image.BILINEAR\n"
        "assert not hasattr(numpy, 'float')\nprint('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_collect_env_reports_detectron2_source():
    out = subprocess.run(
        [sys.executable, "-m", "segalias_d2.collect_env"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert (
        "detectron2 source" in out.stdout
        and "PyTorch" in out.stdout
        and "CUDA available" in out.stdout
    )
    assert (
        compat.detectron2_source() in out.stdout.replace("\n", " ")
        or "official build" in out.stdout
    )
    ops = next(
        line for line in out.stdout.splitlines() if line.startswith("detectron2 compiled ops")
    )
    assert ops.split(None, 3)[3].startswith("present" if compat.has_compiled_ops() else "absent")


def test_detectron2_build_is_identified_by_its_own_records():

    info = compat.detectron2_build_info()
    assert info["version"] == detectron2.__version__ == "0.6"  # the same on v0.6 and on main
    assert info["distribution"] == metadata.version("detectron2")
    if compat.is_v06_backport():
        from detectron2 import _segalias_backport as marker

        assert info["kind"] == "v0.6 backport" and info["revision"] == marker.REVISION
        assert (
            info["distribution"] == f"0.6+segalias.backport{marker.REVISION}"
            and not info["compiled_ops"]
        )
        assert f"revision {marker.REVISION}" in compat.detectron2_source()
    else:
        assert info["kind"] == "official"
        label = info["distribution"].partition("+g")[2]  # dev/setup_env.sh builds '0.6+g<commit>'
        if label:
            assert info["commit"] == label and f"commit {label}" in compat.detectron2_source()
