"""MMSeg 0.25 PhotoMetricDistortion as a Detectron2 augmentation (data/augmentation.py), against
hand-computed pixels and against a transcription of MMSeg's __call__ (upernet_recipes.md section
2.1: on the BGR uint8 image, each step with p = 0.5, float32 then clip + astype(uint8) after each
step; brightness + U(-32, 32); contrast x U(0.5, 1.5) first or last by a coin; saturation x U(0.5,
1.5) on OpenCV's S; hue + randint(-18, 18) mod 180 on OpenCV's H); and MMSeg's ResizeToMultiple for
the ADE20K test."""

import cv2
import numpy as np
import pytest
from detectron2.data import transforms as T

from segalias_d2.config import load_config
from segalias_d2.data.augmentation import (
    PhotometricDistortion,
    PhotometricDistortionTransform,
    ResizeToMultiple,
    build_sem_seg_train_aug,
)


def _px(*rgb):
    return np.array([list(rgb)], np.uint8)  # one row of pixels, shape (1, N, 3)


def test_brightness_and_contrast_truncate_and_clip_after_each_step_by_hand():
    img = _px((100, 250, 3), (10, 0, 128))
    # brightness +10.7: 110.7 -> 110, 260.7 -> 255, 13.7 -> 13; 20.7 -> 20, 10.7 -> 10, 138.7 -> 138
    out = PhotometricDistortionTransform(brightness=10.7).apply_image(img)
    assert out.tolist() == [[[110, 255, 13], [20, 10, 138]]]
    # MMSeg order: brightness, contrast (if first), saturation, hue, contrast (if last)
    first = PhotometricDistortionTransform(brightness=10.7, contrast=1.5).apply_image(img)
    # 110*1.5 = 165, 255*1.5 -> 255, 13*1.5 = 19.5 -> 19; 20*1.5 = 30, 15, 138*1.5 = 207
    assert first.tolist() == [[[165, 255, 19], [30, 15, 207]]]
    last = PhotometricDistortionTransform(
        brightness=-20.3, contrast=1.5, contrast_last=True
    ).apply_image(img)
    # 100-20.3 = 79.7 -> 79 -> 118.5 -> 118; 229.7 -> 229 -> 343.5 -> 255; -17.3 -> 0 -> 0;
    # 10-20.3 -> 0; 0 -> 0; 107.7 -> 107 -> 160.5 -> 160
    assert last.tolist() == [[[118, 255, 0], [0, 0, 160]]]


def test_saturation_and_hue_on_opencv_hsv_by_hand():
    red, blue, grey = (255, 0, 0), (0, 0, 255), (90, 90, 90)
    # red: HSV (0, 255, 255); S x 0.5 = 127.5 -> 127; back: V = 255, min = 255 (1 - 127/255) = 128
    assert PhotometricDistortionTransform(saturation=0.5).apply_image(_px(red, grey)).tolist() == [
        [[255, 128, 128], [90, 90, 90]]
    ]  # grey has S = 0: unchanged
    # hue +10: H 0 -> 10 (20 deg): G = 255 * 20/60 = 85; hue -10: H -> 170 (340 deg, wraps mod 180):
    # B = 85; blue H 120 + 10 = 130 (260 deg): R = 255 * 20/60 = 85
    assert PhotometricDistortionTransform(hue=10).apply_image(_px(red, blue)).tolist() == [
        [[255, 85, 0], [85, 0, 255]]
    ]
    assert PhotometricDistortionTransform(hue=-10).apply_image(_px(red)).tolist() == [
        [[255, 0, 85]]
    ]


def test_float_images_are_8_bit_levels_and_segmentation_is_untouched():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = PhotometricDistortionTransform(brightness=5.5, contrast=0.8, saturation=1.3, hue=-7)
    out = t.apply_image(u8.astype(np.float32) / 255)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), t.apply_image(u8))
    seg = rng.integers(0, 20, (5, 7)).astype(np.uint8)
    assert t.apply_segmentation(seg) is seg
    assert PhotometricDistortionTransform().apply_image(u8) is u8  # nothing drawn: no-op


def _mmseg_photometric_bgr(img, rnd, delta=32, lo=0.5, hi=1.5, hue_delta=18):
    """Transcription of MMSeg 0.25 PhotoMetricDistortion.__call__ (numpy.random as ``rnd``, BGR
    uint8)."""

    def convert(x, alpha=1, beta=0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def contrast(x):
        return convert(x, alpha=rnd.uniform(lo, hi)) if rnd.randint(2) else x

    if rnd.randint(2):
        img = convert(img, beta=rnd.uniform(-delta, delta))
    mode = rnd.randint(2)
    if mode == 1:
        img = contrast(img)
    if rnd.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=rnd.uniform(lo, hi))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rnd.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + rnd.randint(-hue_delta, hue_delta)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
        img = contrast(img)
    return img


def test_augmentation_equals_mmseg_transcription_with_the_same_numpy_draws():
    """Same seed -> same draws in MMSeg's order; our RGB image gives MMSeg's BGR result,
    channel-flipped."""
    img_rgb = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    aug = PhotometricDistortion()
    for seed in range(40):
        np.random.seed(seed)
        ours = T.AugmentationList([aug])(T.AugInput(img_rgb.copy())).apply_image(img_rgb)
        np.random.seed(seed)
        ref = _mmseg_photometric_bgr(img_rgb[:, :, ::-1].copy(), np.random)[:, :, ::-1]
        np.testing.assert_array_equal(ours, ref, err_msg=f"seed {seed}")


def test_draw_probabilities_and_ranges():
    np.random.seed(0)
    aug = PhotometricDistortion()
    ts = [aug.get_transform(np.zeros((2, 2, 3), np.uint8)) for _ in range(4000)]
    for name in ("brightness", "saturation", "hue", "contrast"):
        share = np.mean([getattr(t, name) is not None for t in ts])
        assert abs(share - 0.5) < 0.04, (name, share)
    hues = {t.hue for t in ts if t.hue is not None}
    assert min(hues) == -18 and max(hues) == 17  # numpy randint excludes the upper bound
    br = [t.brightness for t in ts if t.brightness is not None]
    assert -32 <= min(br) < -30 and 30 < max(br) <= 32
    assert abs(np.mean([t.contrast_last for t in ts]) - 0.5) < 0.04


def test_semantic_train_aug_appends_it_after_the_flip_and_resize_to_multiple_stretches_up():
    cfg = load_config("")
    cfg.INPUT.SEGALIAS.PHOTOMETRIC_DISTORTION.ENABLED = True
    augs = build_sem_seg_train_aug(cfg)
    assert isinstance(augs[-2], T.RandomFlip) and isinstance(augs[-1], PhotometricDistortion)
    t = ResizeToMultiple(32).get_transform(np.zeros((375, 500, 3), np.float32))
    assert (t.h, t.w, t.new_h, t.new_w) == (375, 500, 384, 512)
    assert isinstance(ResizeToMultiple(32).get_transform(np.zeros((384, 512, 3))), T.NoOpTransform)
    with pytest.raises(ValueError, match="RESIZE_TO_MULTIPLE_TEST"):
        ResizeToMultiple(0)
