"""The data path against values the test writes itself (issue 17): exposure ratio through the mapper
(16-bit PNG, and a real Sony ARW pair whose EXIF exposure times differ by a known factor), channel
order of a pure-red image for INPUT.FORMAT RGB / BGR, the train / test resize interpolation keys on
a checkerboard, and DecodeCache eviction (LRU order, max items, disk cache, through the mapper)."""

import os
import struct

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

from segalias_d2.config import add_segalias_config
from segalias_d2.data import dataset_mapper, raw_io
from segalias_d2.data.dataset_mapper import LowLightDatasetMapper
from segalias_d2.data.decode_cache import DecodeCache


def _cfg(fmt="RGB", min_test=0, **segalias):
    cfg = get_cfg()
    add_segalias_config(cfg)
    cfg.INPUT.FORMAT = fmt
    cfg.INPUT.MIN_SIZE_TEST = (
        min_test  # 0: no test-time resize (Detectron2's ResizeShortestEdge no-op)
    )
    cfg.INPUT.RANDOM_FLIP = "none"
    for key, value in segalias.items():
        cfg.INPUT.SEGALIAS[key] = value
    return cfg


def _png16(path, rgb16):
    """Write an RGB uint16 array as a 16-bit PNG (OpenCV stores BGR)."""
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb16[:, :, ::-1]))
    return str(path)


def _hwc(t):
    return t.permute(1, 2, 0).numpy().astype(np.float64)


# ----------------------------------------------------------------------------------- exposure ratio
@pytest.fixture
def dark_png16(tmp_path):
    """A dark 16-bit raw-RGB PNG with known DN values: 0..2000 ramps, one channel with saturating
    values."""
    h, w = 6, 10
    yy, xx = np.mgrid[0:h, 0:w]
    rgb16 = np.stack([100 * xx + 7 * yy, 30 * xx + 200 * yy, 9000 + 1000 * xx], axis=-1).astype(
        np.uint16
    )
    return _png16(tmp_path / "dark.png", rgb16), rgb16


@pytest.mark.parametrize("where", ["record", "config"])
def test_mapper_amplifies_a_16bit_png_by_the_exposure_ratio(dark_png16, where):
    path, rgb16 = dark_png16
    ratio = 6.0
    record = {"file_name": path, "image_id": 0, "height": 6, "width": 10, "image_format": "raw_rgb"}
    if where == "record":
        record["exposure_ratio"] = ratio
        cfg = _cfg(EXPOSURE_RATIO=2.0)  # the record's own ratio wins over the config's default
    else:
        cfg = _cfg(EXPOSURE_RATIO=ratio)
    out = LowLightDatasetMapper(cfg, is_train=False)(record)["image"]
    expected = np.clip(rgb16.astype(np.float64) / 65535.0 * ratio, 0.0, 1.0) * 255.0
    assert (expected == 255.0).any() and (expected < 255.0).any()  # some values clip, some do not
    np.testing.assert_allclose(_hwc(out), expected, rtol=0, atol=1e-3)


def test_16bit_png_reader_applies_the_ratio_then_clips(dark_png16):
    path, rgb16 = dark_png16
    got = raw_io.read_lowlight_image(path, "raw_rgb", exposure_ratio=6.0)
    np.testing.assert_allclose(got, np.clip(rgb16 / 65535.0 * 6.0, 0, 1), rtol=0, atol=1e-6)
    unclipped = raw_io.read_lowlight_image(path, "raw_rgb", exposure_ratio=6.0, clip=False)
    np.testing.assert_allclose(unclipped, rgb16 / 65535.0 * 6.0, rtol=1e-6, atol=0)
    assert unclipped.max() > 1.0
    levels = raw_io.read_lowlight_image(
        path, "raw_rgb", black_level=100, white_level=20100, exposure_ratio=3.0
    )
    np.testing.assert_allclose(
        levels, np.clip((rgb16 - 100.0) / 20000.0 * 3.0, 0, 1), rtol=0, atol=1e-6
    )


def test_16bit_png_levels_per_channel_and_one_sided(dark_png16):
    path, rgb16 = dark_png16
    x = rgb16.astype(np.float64)
    # four black levels in LIS order [R, G1, B, G2] on a 3-channel image: [R, mean(G1, G2), B]
    got = raw_io.read_lowlight_image(
        path, "raw_rgb", black_level=[100, 200, 300, 600], white_level=20000, clip=False
    )
    black = np.array([100.0, 400.0, 300.0])
    np.testing.assert_allclose(got, (x - black) / (20000.0 - black), rtol=1e-5, atol=1e-6)
    only_white = raw_io.read_lowlight_image(path, "raw_rgb", white_level=10000, clip=False)
    np.testing.assert_allclose(only_white, x / 10000.0, rtol=1e-5, atol=1e-7)
    only_black = raw_io.read_lowlight_image(path, "raw_rgb", black_level=50, clip=False)
    np.testing.assert_allclose(only_black, (x - 50.0) / (65535.0 - 50.0), rtol=1e-5, atol=1e-7)
    assert only_black.min() < 0  # unclipped: below the black level stays negative


def test_float_npy_is_taken_as_unit_range_and_the_lis_partner_name(tmp_path):
    arr = np.linspace(0.0, 0.9, 6 * 10 * 3, dtype=np.float32).reshape(6, 10, 3)
    np.save(tmp_path / "4.npy", arr)
    got = raw_io.read_lowlight_image(str(tmp_path / "4.npy"), "raw_rgb", exposure_ratio=2.0)
    np.testing.assert_allclose(
        got, np.clip(arr * 2.0, 0, 1), rtol=0, atol=1e-7
    )  # float data: scale 1, not 255
    assert raw_io.lis_pair_file_name("/d/LIS/RAW-dark/4.ARW") == "/d/LIS/RAW-dark/3.ARW"
    assert (
        raw_io.lis_pair_file_name("/d/LIS/RAW-dark/4.ARW", pair_root="/d/LIS/RAW-normal")
        == "/d/LIS/RAW-normal/3.ARW"
    )


def _exif_exposure_time_offset(data):
    """Byte offset of the EXIF ExposureTime rational (tag 0x829A) of a little-endian TIFF-based
    RAW."""
    assert data[:4] == b"II*\x00"

    def entries(offset):
        n = struct.unpack_from("<H", data, offset)[0]
        return {
            struct.unpack_from("<H", data, offset + 2 + 12 * i)[0]: struct.unpack_from(
                "<HII", data, offset + 4 + 12 * i
            )
            for i in range(n)
        }

    exif = entries(struct.unpack_from("<I", data, 4)[0])[0x8769][2]  # IFD0 -> EXIF IFD pointer
    kind, count, offset = entries(exif)[0x829A]
    assert (kind, count) == (5, 1)  # one RATIONAL
    return offset


def test_real_raw_pair_with_exif_ratio_8_through_the_mapper(sony_arw, tmp_path):
    """LIS layout: dark 2.ARW (the real capture, 1/640 s) and normal 1.ARW (the same mosaic, EXIF
    1/80 s)."""
    import rawpy

    data = bytearray(open(sony_arw, "rb").read())
    offset = _exif_exposure_time_offset(data)
    num, den = struct.unpack_from("<II", data, offset)
    assert (num, den) == (1, 640)
    dark, normal = tmp_path / "2.ARW", tmp_path / "1.ARW"
    os.symlink(sony_arw, dark)
    struct.pack_into("<II", data, offset, 1, 80)
    normal.write_bytes(bytes(data))
    assert raw_io.exposure_ratio_from_pair(str(dark), str(normal)) == pytest.approx(8.0, rel=1e-6)

    record = {
        "file_name": str(dark),
        "pair_file_name": str(normal),
        "image_id": 2,
        "height": 3464,
        "width": 5184,
        "image_format": "raw",
        "raw_output": "packed",
        "exposure_ratio": "exif",
    }
    out = LowLightDatasetMapper(_cfg(), is_train=False)(record)
    assert (out["height"], out["width"]) == (3464, 5184)
    got = out["image"]
    assert tuple(got.shape) == (4, 1732, 2592)
    with rawpy.imread(
        sony_arw
    ) as raw:  # independent packing: [R, G1, B, G2] from the pattern, black 512, white 16383
        mosaic = raw.raw_image_visible.astype(np.float64)
        assert np.array(raw.raw_pattern).tolist() == [[0, 1], [3, 2]]
    planes = [mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 1::2], mosaic[1::2, 0::2]]
    for c, plane in enumerate(
        planes
    ):  # every 3rd row and column of each plane (the full 18 Mpx compare is slow)
        plane = plane[::3, ::3]
        expected = np.clip(np.clip((plane - 512.0) / (16383.0 - 512.0), 0, 1) * 8.0, 0, 1) * 255.0
        np.testing.assert_allclose(
            got[c, ::3, ::3].numpy(), expected, rtol=0, atol=2e-3, err_msg=f"plane {c}"
        )
    assert float(got[1].mean()) == pytest.approx(
        8 * 255 * 0.0198, rel=0.05
    )  # the dark frame, 8x brighter


# ------------------------------------------------------------------------------------ channel order
@pytest.mark.parametrize("fmt,red_channel", [("RGB", 0), ("BGR", 2)])
@pytest.mark.parametrize("image_format", ["srgb", "raw_rgb"])
def test_pure_red_image_lands_in_the_channel_of_input_format(
    tmp_path, fmt, red_channel, image_format
):
    red = np.zeros((4, 5, 3), np.uint8)
    red[..., 0] = 200  # R of RGB
    path = str(tmp_path / "red.png")
    assert cv2.imwrite(path, red[:, :, ::-1])  # stored as BGR by OpenCV: a red PNG
    record = {
        "file_name": path,
        "image_id": 0,
        "height": 4,
        "width": 5,
        "image_format": image_format,
    }
    cfg = _cfg(fmt)
    cfg.INPUT.MIN_SIZE_TRAIN = (4,)  # training keeps the size too
    for is_train in (False, True):
        img = LowLightDatasetMapper(cfg, is_train=is_train)(dict(record))["image"]
        expected = torch.zeros(3, 4, 5)
        expected[red_channel] = 200.0
        torch.testing.assert_close(img, expected, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------ resize interpolation keys
def _checkerboard(tmp_path):
    yy, xx = np.mgrid[0:8, 0:10]
    board = (((yy // 2 + xx // 2) % 2) * 255).astype(np.uint8)  # 2-px squares of 0 / 255
    path = str(tmp_path / "board.png")
    assert cv2.imwrite(path, np.repeat(board[..., None], 3, axis=2))
    return path, board.astype(np.float64)


def _nearest_by_hand(src, out_h, out_w):
    rows = (np.arange(out_h) * src.shape[0]) // out_h  # source pixel floor(dst * in / out)
    cols = (np.arange(out_w) * src.shape[1]) // out_w
    return src[rows][:, cols]


def _bilinear_by_hand(src, out_h, out_w):
    """Half-pixel-centre bilinear (upsampling), written out: x_src = (x + 0.5) * in / out - 0.5,
    edges clamped."""

    def axis(n_out, n_in):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, x - lo

    r0, r1, fy = axis(out_h, src.shape[0])
    c0, c1, fx = axis(out_w, src.shape[1])
    top = src[r0][:, c0] * (1 - fx) + src[r0][:, c1] * fx
    bottom = src[r1][:, c0] * (1 - fx) + src[r1][:, c1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


@pytest.mark.parametrize(
    "train_interp,test_interp", [("nearest", "bilinear"), ("bilinear", "nearest")]
)
def test_resize_interp_keys_choose_the_train_and_test_interpolation(
    tmp_path, train_interp, test_interp
):
    path, board = _checkerboard(tmp_path)  # 8x10 -> shortest edge 12: 12x15 (scale 1.5)
    record = {"file_name": path, "image_id": 0, "height": 8, "width": 10, "image_format": "srgb"}
    cfg = _cfg(min_test=12, RESIZE_INTERP=train_interp, RESIZE_INTERP_TEST=test_interp)
    cfg.INPUT.MIN_SIZE_TRAIN = (12,)
    by_hand = {"nearest": _nearest_by_hand, "bilinear": _bilinear_by_hand}
    for is_train, interp in ((True, train_interp), (False, test_interp)):
        img = LowLightDatasetMapper(cfg, is_train=is_train)(dict(record))["image"]
        assert tuple(img.shape) == (3, 12, 15)
        expected = by_hand[interp](board, 12, 15)
        for c in range(3):
            np.testing.assert_allclose(
                img[c].numpy(), expected, rtol=0, atol=1e-3, err_msg=f"{interp} train={is_train}"
            )
        levels = set(np.unique(np.round(img.numpy(), 3)).tolist())
        if interp == "nearest":
            assert levels == {0.0, 255.0}
        else:
            assert len(levels) > 2  # bilinear makes intermediate values at the square edges


# -------------------------------------------------------------------------------------- DecodeCache
def _files(tmp_path, names):
    paths = {}
    for n in names:
        p = tmp_path / f"{n}.bin"
        p.write_bytes(n.encode())
        paths[n] = str(p)
    return paths


class _Decoder:
    def __init__(self):
        self.calls = []

    def __call__(self, name):
        def decode():
            self.calls.append(name)
            return np.full((2, 3, 1), float(ord(name[0])), np.float32)

        return decode


def test_decode_cache_evicts_the_least_recently_used_entry(tmp_path):
    paths = _files(tmp_path, "abc")
    dec = _Decoder()
    cache = DecodeCache(max_items=2)
    for name in ["a", "b", "a", "c"]:  # a is used again after b, so c evicts b, not a
        cache.get(paths[name], {}, dec(name))
    assert dec.calls == ["a", "b", "c"] and (cache.hits, cache.misses) == (1, 3)
    assert len(cache._mem) == 2
    cache.get(paths["a"], {}, dec("a"))  # still cached
    assert dec.calls == ["a", "b", "c"]
    value = cache.get(paths["b"], {}, dec("b"))  # evicted: decoded again (and now c is the oldest)
    assert dec.calls == ["a", "b", "c", "b"] and float(value[0, 0, 0]) == ord("b")
    cache.get(paths["c"], {}, dec("c"))
    assert dec.calls[-1] == "c" and (cache.hits, cache.misses) == (2, 5)


def test_decode_cache_without_memory_items_and_with_a_disk_cache(tmp_path):
    paths = _files(tmp_path, "ab")
    dec = _Decoder()
    nothing = DecodeCache(max_items=0)
    for _ in range(3):
        nothing.get(paths["a"], {}, dec("a"))
    assert dec.calls == ["a"] * 3 and not nothing._mem  # max_items 0: no memory cache at all

    disk = str(tmp_path / "npy")
    dec = _Decoder()
    first = DecodeCache(max_items=0, cache_dir=disk)
    a = first.get(paths["a"], {"f": 1}, dec("a"))
    first.get(paths["b"], {"f": 1}, dec("b"))
    files = sorted(os.listdir(disk))
    assert len(files) == 2 and all(
        f.endswith(".npy") and len(f) == 40 + 4 for f in files
    )  # sha1 names, no .tmp
    fresh = DecodeCache(max_items=1, cache_dir=disk)  # another process: read from disk, no decode
    np.testing.assert_array_equal(fresh.get(paths["a"], {"f": 1}, dec("a")), a)
    assert dec.calls == ["a", "b"] and (fresh.hits, fresh.misses) == (1, 0)
    fresh.get(paths["a"], {"f": 2}, dec("a"))  # other decode options: another entry
    assert dec.calls == ["a", "b", "a"] and len(os.listdir(disk)) == 3
    key = DecodeCache.key(paths["b"], {"f": 1})
    with open(os.path.join(disk, key + ".npy"), "wb") as f:
        f.write(b"\x93NUMPY broken")  # a damaged entry is decoded again and rewritten
    again = DecodeCache(max_items=0, cache_dir=disk)
    assert (
        float(again.get(paths["b"], {"f": 1}, dec("b"))[0, 0, 0]) == ord("b")
        and dec.calls[-1] == "b"
    )
    assert float(np.load(os.path.join(disk, key + ".npy"))[0, 0, 0]) == ord("b")


def test_mapper_decode_cache_decodes_each_file_once_and_outputs_stay_equal(
    tmp_path, monkeypatch, dark_png16
):
    path, rgb16 = dark_png16
    calls = []
    real = dataset_mapper.read_lowlight_image
    monkeypatch.setattr(
        dataset_mapper, "read_lowlight_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    )
    cfg = _cfg()
    cfg.DATALOADER.SEGALIAS.DECODE_CACHE.ENABLED = True
    cfg.DATALOADER.SEGALIAS.DECODE_CACHE.MAX_ITEMS = 4
    record = {
        "file_name": path,
        "image_id": 0,
        "height": 6,
        "width": 10,
        "image_format": "raw_rgb",
        "exposure_ratio": 3.0,
    }
    mapper = LowLightDatasetMapper(cfg, is_train=False)
    outs = [mapper(dict(record))["image"] for _ in range(3)]
    assert calls == [path]  # decoded once
    other = mapper(dict(record, exposure_ratio=5.0))["image"]  # the ratio is part of the key
    assert calls == [path, path]
    expected = np.clip(rgb16 / 65535.0 * 3.0, 0, 1) * 255.0
    for img in outs:  # the cached array was not modified in place by the first mapping
        np.testing.assert_allclose(_hwc(img), expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(
        _hwc(other), np.clip(rgb16 / 65535.0 * 5.0, 0, 1) * 255.0, rtol=0, atol=1e-3
    )
