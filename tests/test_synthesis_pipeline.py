"""Synthesis as released (LIS AddNoisyImg + process.py) and the mapper's train/test resize.

Independent expectations: the released camera-parameter list typed in here, transcriptions of the
released ``process.py`` / even-size resize written from their description, OpenCV's own resizes of
the uint8 image (what mmcv calls), and the bilinear-demosaic identity at the output resolution.
"""

import zlib

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from segalias_d2.config import add_segalias_config
from segalias_d2.data import synthesis as S
from segalias_d2.data.dataset_mapper import LowLightDatasetMapper

LIS_CONFIGS = "configs/LIS-InstanceSegmentation/"
# G_shape of the ELD/LIS CanonEOS5D4 camera-parameter file, in file order, times 70
RELEASED_G_SHAPE_X70 = [11, 10, 6, 6, 14, 14, 7, 6, 4, 5, 2, 2, 1, 2, 6, 5, 8, 8]
# the distinct values as quoted (rounded) in the LIS report
REPORT_LAMBDA_SET = {0.014, 0.029, 0.057, 0.071, 0.086, 0.100, 0.114, 0.143, 0.157, 0.200}
# released unprocess.py get_calibrated_cam2rgb (float32 there)
RELEASED_CAM2RGB = np.array(
    [
        [2.04840695, -1.27161572, 0.22320878],
        [-0.22163155, 1.77694640, -0.55531485],
        [-0.00770995, -0.59257895, 1.60028890],
    ],
    dtype=np.float32,
)


def _smooth_u8(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.45 + 0.25 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None]
    img = base + rng.uniform(-0.1, 0.1, (h, w, 3))
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------ noise parameters
def test_tukey_lambda_list_is_the_released_array_with_repeats():
    assert len(S.TUKEY_LAMBDAS) == 18
    np.testing.assert_allclose(
        S.TUKEY_LAMBDAS, np.array(RELEASED_G_SHAPE_X70) / 70.0, rtol=0, atol=1e-12
    )
    assert {round(v, 3) for v in S.TUKEY_LAMBDAS} == REPORT_LAMBDA_SET
    assert (S.K_MIN, S.K_MAX, S.SATURATION) == (0.2182, 13.964, 15871)
    np.testing.assert_allclose(S.CAM2RGB, RELEASED_CAM2RGB, atol=1e-7)


def test_lambda_sampler_frequencies_follow_the_repeats():
    rng = np.random.default_rng(123)
    n = 9000
    draws = np.array([S.sample_noise_params(rng).tukey_lambda for _ in range(n)])
    values, counts = np.unique(np.round(draws * 70).astype(int), return_counts=True)
    mult = {k: RELEASED_G_SHAPE_X70.count(k) for k in set(RELEASED_G_SHAPE_X70)}
    assert set(values) == set(mult)
    # 6/70 appears 4 times in 18 entries (p = 0.222; a sampler over the 10 distinct values gives
    # 0.1), 2/70 three times, 1/70 once (0.056; the distinct-value sampler gives 0.1): tolerance
    # 0.02
    for v, c in zip(values, counts):
        assert c / n == pytest.approx(mult[v] / 18, abs=0.02), (v, c / n, mult[v] / 18)


# ------------------------------------------------------------------------- 8-bit released render
def _released_process(packed, w, h):
    """Transcription of released process.py + the channel swap of NoiseModel.unprocess (to_rgb)."""
    ph, pw = packed.shape[:2]
    cfa = np.zeros((2 * ph, 2 * pw), dtype=np.float32)
    cfa[0::2, 0::2], cfa[0::2, 1::2] = packed[..., 0], packed[..., 1]
    cfa[1::2, 1::2], cfa[1::2, 0::2] = packed[..., 2], packed[..., 3]
    bayer = (cfa * 255.0).round().astype(np.uint8)
    rgb = cv2.resize(cv2.cvtColor(bayer, cv2.COLOR_BAYER_RG2RGB), (w, h))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


@pytest.mark.parametrize("h,w", [(40, 60), (41, 59)])
def test_process_8bit_equals_released_transcription(h, w):
    packed = np.random.default_rng(h).uniform(0, 1, (h // 2, w // 2, 4))
    ours = S.process_raw_rgb(packed, (h, w), "bilinear", bit_depth=8)
    np.testing.assert_array_equal(
        np.round(ours * 255).astype(np.uint8), _released_process(packed, w, h)
    )
    np.testing.assert_allclose(ours * 255, np.round(ours * 255), atol=1e-4)  # on multiples of 1/255


def _released_clean(img_u8, wb):
    """Transcription of the released clean branch (even-size resize, unprocess, mosaic, process)."""
    h, w = img_u8.shape[:2]
    x = cv2.resize(img_u8, (w // 2 * 2, h // 2 * 2)).astype(np.float32) / 255.0
    x = 0.5 - np.sin(np.arcsin(1.0 - 2.0 * np.clip(x, 0, 1)) / 3.0)
    x = np.maximum(x, 1e-8) ** 2.2
    x = np.tensordot(x, np.linalg.inv(RELEASED_CAM2RGB), [[-1], [-1]])
    red, blue, brightness = wb
    gains = (np.array([1.0 / red, 1.0, 1.0 / blue]) / brightness)[None, None, :]
    mask = (np.maximum(x.mean(-1, keepdims=True) - 0.9, 0.0) / 0.1) ** 2.0
    x = np.clip(x * np.maximum(mask + (1.0 - mask) * gains, gains), 0.0, 1.0)
    packed = np.stack(
        [x[0::2, 0::2, 0], x[0::2, 1::2, 1], x[1::2, 1::2, 2], x[1::2, 0::2, 1]], axis=-1
    )
    return _released_process(packed, w, h)


@pytest.mark.parametrize("h,w", [(48, 64), (47, 63)])
def test_released_clean_render_with_odd_size_resize(h, w):
    img = _smooth_u8(h, w)
    wb = (2.1, 1.7, 1.25)
    ours = S.synthesize_lowlight(img, 0, noise=False, wb_gains=wb, **S.RELEASED_SYNTHESIS)["clean"]
    ref = _released_clean(img, wb).astype(np.float32) / 255.0
    assert ours.shape == (h, w, 3)
    diff = (
        np.abs(ours - ref) * 255
    )  # float32 (released) vs float64 (ours) unprocess: rare 1-level flips
    assert diff.max() <= 1.0 + 1e-4 and (diff > 0.5).mean() < 0.01
    # the padding variant differs on odd sizes (no bilinear resize in and out)
    pad = S.synthesize_lowlight(img, 0, noise=False, wb_gains=wb, bit_depth=8, odd_size="pad")[
        "clean"
    ]
    assert (h % 2 == 0) == np.array_equal(pad, ours)


def test_8bit_outputs_lie_on_the_255_grid_and_16bit_do_not():
    img = _smooth_u8(37, 53)
    rng = np.random.default_rng(4)
    res = S.synthesize_lowlight(img, rng, return_clean=True, **S.RELEASED_SYNTHESIS)
    for key in ("noisy", "clean"):
        v = res[key].astype(np.float64) * 255
        np.testing.assert_allclose(v, np.round(v), atol=1e-4)
    packed = (
        S.synthesize_lowlight(img, 5, output="packed", bit_depth=8, odd_size="resize")["noisy"]
        * 255.0
    )
    assert packed.shape == (18, 26, 4)
    np.testing.assert_allclose(packed, np.round(packed), atol=1e-4)  # the mosaic before demosaic
    v16 = S.synthesize_lowlight(img, 4, bit_depth=16)["noisy"].astype(np.float64) * 255
    assert (np.abs(v16 - np.round(v16)) > 1e-3).mean() > 0.9


def test_clean_twin_comes_from_the_same_unprocess_draw():
    img = np.full((32, 48, 3), 200, np.uint8)
    mean = lambda a: a.reshape(-1, 3).mean(0)  # noqa: E731
    for seed in range(4):
        res = S.synthesize_lowlight(
            img, seed, ratio=10.0, return_clean=True, **S.RELEASED_SYNTHESIS
        )
        twin = S.synthesize_lowlight(
            img, 99, noise=False, wb_gains=res["wb_gains"], **S.RELEASED_SYNTHESIS
        )
        np.testing.assert_array_equal(res["clean"], twin["clean"])
        # the noisy image carries the clean twin's white balance / brightness (per-channel means
        # within 3 % at r = 10), while another unprocess draw moves some channel by more than 5 %
        np.testing.assert_allclose(mean(res["noisy"]) / mean(res["clean"]), 1.0, atol=0.03)
        other = S.synthesize_lowlight(img, seed + 50, noise=False, **S.RELEASED_SYNTHESIS)["clean"]
        assert np.abs(mean(other) / mean(res["clean"]) - 1).max() > 0.05


# ------------------------------------------------------------------------------ mapper: order
def _record(tmp_path, img_u8, fmt="srgb", name="img.png"):
    path = str(tmp_path / name)
    cv2.imwrite(path, np.ascontiguousarray(img_u8[:, :, ::-1]))
    h, w = img_u8.shape[:2]
    return {
        "file_name": path,
        "image_id": 1,
        "height": h,
        "width": w,
        "image_format": fmt,
        "annotations": [
            {
                "bbox": [10.0, 8.0, 30.0, 20.0],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "iscrowd": 0,
            }
        ],
    }


def _mapper(order, seed=5, ratio=(100.0, 100.0), short=48, flip=1.0):
    augs = [T.ResizeShortestEdge(short, 1000, interp=Image.NEAREST), T.RandomFlip(prob=flip)]
    syn = {"seed": seed, "return_clean": True, "ratio_range": ratio, "order": order}
    return LowLightDatasetMapper(
        is_train=True, augmentations=augs, image_format="RGB", synthesis=syn
    )


def _hwc(t):
    return t.permute(1, 2, 0).numpy() / 255.0


def test_mapper_synthesises_the_resized_flipped_image(tmp_path):
    img = _smooth_u8(96, 144)
    d = _record(tmp_path, img)
    out = _mapper("after_augment")(d)
    # expectation: OpenCV nearest resize of the uint8 image (mmcv), flip, then the released
    # synthesis
    small = cv2.resize(img, (72, 48), interpolation=cv2.INTER_NEAREST)[:, ::-1]
    rng = np.random.default_rng([5, zlib.crc32(d["file_name"].encode()), 1])  # docs/data.md seeding
    ref = S.synthesize_lowlight(
        small, rng, (100.0, 100.0), return_clean=True, **S.RELEASED_SYNTHESIS
    )
    np.testing.assert_allclose(_hwc(out["image"]), ref["noisy"], atol=1e-6)
    np.testing.assert_allclose(_hwc(out["clean_image"]), ref["clean"], atol=1e-6)
    # the flip reached the boxes: x0 = 72 - (10 + 30) / 2 = 52
    np.testing.assert_allclose(
        out["instances"].gt_boxes.tensor[0].tolist(), [52.0, 4.0, 67.0, 14.0], atol=1e-4
    )
    p = out["synthesis_params"]
    twin = S.synthesize_lowlight(
        small,
        0,
        noise=False,
        wb_gains=(p["red_gain"], p["blue_gain"], p["brightness"]),
        **S.RELEASED_SYNTHESIS,
    )["clean"]
    np.testing.assert_allclose(_hwc(out["clean_image"]), twin, atol=1e-6)


def _demosaic_residual(rgb):
    """|R at the G sites of the R rows - mean of its two R neighbours|, 8-bit levels, interior only.

    Zero up to OpenCV's rounding (<= 0.5) when the RGGB lattice of a bilinear demosaic sits at
    this image's own resolution; large when the image is a resized full-resolution rendering."""
    r = rgb[..., 0] * 255.0
    return np.abs(r[2:-2:2, 3:-3:2] - 0.5 * (r[2:-2:2, 2:-4:2] + r[2:-2:2, 4:-2:2]))


def test_released_order_puts_the_bayer_lattice_at_the_output_resolution(tmp_path):
    d = _record(tmp_path, np.full((96, 144, 3), 128, np.uint8))
    for seed in range(3):
        after = _demosaic_residual(_hwc(_mapper("after_augment", seed)(d)["image"]))
        before = _demosaic_residual(_hwc(_mapper("before_augment", seed)(d)["image"]))
        assert after.max() <= 0.5 + 1e-3, seed
        assert before.mean() > 2.0, (seed, before.mean())


def test_before_augment_variant_resizes_the_full_resolution_rendering(tmp_path):
    img = _smooth_u8(96, 144)
    d = _record(tmp_path, img)
    out = _mapper("before_augment", flip=0.0)(d)
    rng = np.random.default_rng([5, zlib.crc32(d["file_name"].encode()), 1])
    full = S.synthesize_lowlight(
        img, rng, (100.0, 100.0), return_clean=True, **S.RELEASED_SYNTHESIS
    )
    ref = cv2.resize(full["noisy"], (72, 48), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_allclose(_hwc(out["image"]), ref, atol=1e-6)


# ------------------------------------------------------------------------- mapper: resize interp
def _lis_cfg(name):
    cfg = get_cfg()
    add_segalias_config(cfg)
    cfg.merge_from_file(LIS_CONFIGS + name)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.RANDOM_FLIP = "none"
    return cfg


def test_train_nearest_picks_the_pixels_of_opencv_nearest_on_uint8(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (100, 150, 3)).astype(np.uint8)
    d = _record(tmp_path, img)
    augs = [T.ResizeShortestEdge(64, 1000, interp=Image.NEAREST)]
    out = LowLightDatasetMapper(is_train=True, augmentations=augs, image_format="RGB")(d)
    got = np.round(_hwc(out["image"]) * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, cv2.resize(img, (96, 64), interpolation=cv2.INTER_NEAREST))
    pil = np.asarray(Image.fromarray(img).resize((96, 64), Image.NEAREST))
    assert not np.array_equal(
        got, pil
    )  # PIL's centre rule (Detectron2's uint8 path) picks other pixels


def test_lis_test_resize_is_bilinear_and_train_nearest(tmp_path):
    yy, xx = np.mgrid[0:800, 0:1200]
    board = np.repeat(
        (((yy + xx) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2
    )  # 1-px checkerboard
    d = _record(tmp_path, board, fmt="raw_rgb")
    cfg = _lis_cfg("mask_rcnn_R_50_FPN_1x_raw_dark.yaml")
    assert (cfg.INPUT.SEGALIAS.RESIZE_INTERP, cfg.INPUT.SEGALIAS.RESIZE_INTERP_TEST) == (
        "nearest",
        "bilinear",
    )
    test = LowLightDatasetMapper(cfg, is_train=False)(d)["image"]
    assert tuple(test.shape) == (3, 400, 600)
    torch.testing.assert_close(
        test, torch.full_like(test, 127.5), atol=1e-4, rtol=0
    )  # 2x bilinear: mean
    ref = cv2.resize(board, (600, 400), interpolation=cv2.INTER_LINEAR).astype(
        np.float32
    )  # mmcv test resize
    assert np.abs(test.permute(1, 2, 0).numpy() - ref).max() <= 0.5 + 1e-4
    # a non-integer scale (1000x750 -> 533x400): OpenCV's fixed-point uint8 bilinear within one
    # level
    noise = np.random.default_rng(1).integers(0, 256, (750, 1000, 3)).astype(np.uint8)
    got = LowLightDatasetMapper(cfg, is_train=False)(_record(tmp_path, noise, "raw_rgb", "n.png"))[
        "image"
    ]
    ref = cv2.resize(noise, (533, 400), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    diff = np.abs(got.permute(1, 2, 0).numpy() - ref)
    assert diff.max() < 1.0 and diff.mean() < 0.3
    near = cv2.resize(noise, (533, 400), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    assert np.abs(near - ref).mean() > 20  # nearest would be far off
    train = LowLightDatasetMapper(cfg, is_train=True)(d)["image"]
    assert set(torch.unique(train).tolist()) == {0.0}  # nearest keeps pixel (2y, 2x): all black
    # released SynCOCO2LIS tests with nearest
    syn = LowLightDatasetMapper(
        _lis_cfg("mask_rcnn_R_50_AAFPN_1x_syncoco2lis.yaml"), is_train=False
    )(d)["image"]
    assert set(torch.unique(syn).tolist()) == {0.0}


def test_syncoco_config_is_the_released_synthesis_and_bad_keys_are_named():
    cfg = _lis_cfg("mask_rcnn_R_50_AAFPN_1x_syncoco2lis.yaml")
    syn = LowLightDatasetMapper(cfg, is_train=True).synthesis
    assert (
        syn["order"],
        syn["bit_depth"],
        syn["odd_size"],
        syn["quantization"],
        syn["method"],
    ) == ("after_augment", 8, "resize", "scalar", "bilinear")
    assert syn["ratio_range"] == (10.0, 100.0) and cfg.INPUT.SEGALIAS.RESIZE_INTERP == "nearest"
    fresh = get_cfg()
    add_segalias_config(fresh)  # defaults are the released pipeline too
    s = fresh.INPUT.SEGALIAS.SYNTHESIS
    assert (s.ORDER, s.BIT_DEPTH, s.ODD_SIZE, s.QUANTIZATION) == (
        "after_augment",
        8,
        "resize",
        "scalar",
    )
    for key, bad in (("ORDER", "sometimes"), ("BIT_DEPTH", 12), ("ODD_SIZE", "crop")):
        c = cfg.clone()
        c.INPUT.SEGALIAS.SYNTHESIS[key] = bad
        with pytest.raises(ValueError, match=f"INPUT.SEGALIAS.SYNTHESIS.{key}"):
            LowLightDatasetMapper(c, is_train=True)
    c = cfg.clone()
    c.INPUT.SEGALIAS.RESIZE_INTERP_TEST = "lanczos"
    with pytest.raises(ValueError, match="INPUT.SEGALIAS.RESIZE_INTERP_TEST"):
        LowLightDatasetMapper(c, is_train=False)


def test_packed_output_after_augment_scales_the_annotations_to_half_resolution(tmp_path):
    d = _record(tmp_path, _smooth_u8(96, 144))
    augs = [T.ResizeShortestEdge(48, 1000, interp=Image.NEAREST)]
    mapper = LowLightDatasetMapper(
        is_train=True,
        augmentations=augs,
        image_format="RGB",
        synthesis={"seed": 1, "output": "packed"},
    )
    out = mapper(d)
    assert tuple(out["image"].shape) == (4, 24, 36)
    packed = out["image"].numpy()
    np.testing.assert_allclose(packed, np.round(packed), atol=1e-3)  # 8-bit planes
    # box [10, 8, 40, 28] in the 144x96 frame -> x0.5 (resize) -> x0.5 (packing)
    np.testing.assert_allclose(
        out["instances"].gt_boxes.tensor[0].tolist(), [2.5, 2.0, 10.0, 7.0], atol=1e-4
    )
