"""RAW reading: real Sony ARW (pinned), 16-bit PNGs, packed PNGs, black/white levels, decode
cache."""

import json
import os
import struct

import cv2
import numpy as np
import pytest
from common import segalias_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from pinned_sources import (  # datasets/pinned_sources.py; fixture sony_arw: tests/conftest.py
    PINS,
    SONY_ARW,
)

from segalias_d2.data import LIS_CLASSES, raw_io, register_lowlight_dataset
from segalias_d2.data.dataset_mapper import LowLightDatasetMapper
from segalias_d2.data.decode_cache import DecodeCache
from segalias_d2.data.raw_layout import first_missing_block, tiff_data_blocks

LIBRAW_CFFI = PINS["libraw-cffi"]
ARW_MEMBER = SONY_ARW.member
ARW_SHA256 = SONY_ARW.sha256


def _independent_pack(path):
    import rawpy

    with rawpy.imread(path) as raw:
        vis = raw.raw_image_visible.astype(np.float64)
        pattern = np.array(raw.raw_pattern)
        black = np.array(raw.black_level_per_channel, dtype=np.float64)
        white = float(raw.white_level)
    planes = {}
    for dy in (0, 1):
        for dx in (0, 1):
            c = int(pattern[dy, dx])
            planes[c] = np.clip((vis[dy::2, dx::2] - black[c]) / (white - black[c]), 0, 1)
    return planes, pattern, black, white


def test_sony_arw_packs_like_rawpy(sony_arw):
    packed = raw_io.read_camera_raw(sony_arw, "packed")
    planes, pattern, black, white = _independent_pack(sony_arw)
    assert pattern.tolist() == [[0, 1], [3, 2]]  # RGGB with G2 on the blue row
    assert black.tolist() == [512, 512, 512, 512] and white == 16383
    assert packed.shape == (3464 // 2, 5184 // 2, 4) and packed.dtype == np.float32
    for c in range(4):  # [R, G1, B, G2]
        np.testing.assert_allclose(packed[..., c], planes[c], rtol=0, atol=1e-6)
    assert 0.0 <= packed.min() and packed.max() <= 1.0
    # a dark frame: mean levels are a few percent of the range, and G > R
    means = packed.reshape(-1, 4).mean(0)
    assert 0.001 < means[0] < 0.01 and 0.01 < means[1] < 0.04

    rgb = raw_io.read_camera_raw(sony_arw, "raw_rgb")
    assert rgb.shape == (1732, 2592, 3)
    np.testing.assert_allclose(rgb[..., 0], planes[0], atol=1e-6)
    np.testing.assert_allclose(rgb[..., 1], 0.5 * (planes[1] + planes[3]), atol=1e-6)
    np.testing.assert_allclose(rgb[..., 2], planes[2], atol=1e-6)


def test_sony_arw_exposure_ratio_and_time(sony_arw):
    t = raw_io.read_exposure_time(sony_arw)
    assert t == pytest.approx(1 / 640, rel=1e-3)
    base = raw_io.read_camera_raw(sony_arw, "packed")
    amp = raw_io.read_camera_raw(sony_arw, "packed", exposure_ratio=8.0)
    np.testing.assert_allclose(amp, np.clip(base * 8.0, 0, 1), atol=1e-6)
    assert raw_io.exposure_ratio_from_pair(sony_arw, sony_arw) == pytest.approx(1.0)
    # black/white overrides
    custom = raw_io.read_camera_raw(sony_arw, "packed", black_level=[0, 0, 0, 0], white_level=16383)
    assert custom.mean() > base.mean()


def test_16bit_png_keeps_precision(tmp_path):

    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, size=(20, 30, 3), dtype=np.uint16)
    p = str(tmp_path / "x.png")
    cv2.imwrite(p, rgb16[:, :, ::-1])
    out = raw_io.read_lowlight_image(p, "raw_rgb")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, rgb16 / 65535.0, atol=1e-7)  # not squashed to 8 bits
    # black / white level in file DN
    out = raw_io.read_lowlight_image(p, "raw_rgb", black_level=1000, white_level=60000)
    np.testing.assert_allclose(out, np.clip((rgb16 - 1000.0) / 59000.0, 0, 1), atol=1e-6)


def test_8bit_srgb_and_packed_png(tmp_path):

    img = np.zeros((8, 10, 3), np.uint8)
    img[..., 0] = 255  # red in RGB
    p = str(tmp_path / "r.png")
    cv2.imwrite(p, img[:, :, ::-1])
    out = raw_io.read_lowlight_image(p, "srgb")
    assert out.shape == (8, 10, 3) and out[..., 0].min() == 1.0 and out[..., 1:].max() == 0.0
    packed = np.zeros((4, 5, 4), np.uint16)
    packed[..., 2] = 65535  # B plane
    q = str(tmp_path / "p.png")
    cv2.imwrite(q, packed)
    out = raw_io.read_lowlight_image(q, "raw_packed")
    assert out.shape == (4, 5, 4) and out[..., 2].min() == 1.0 and out[..., [0, 1, 3]].max() == 0.0
    npy = str(tmp_path / "p.npy")
    np.save(npy, packed.astype(np.float32) / 65535.0)
    np.testing.assert_allclose(raw_io.read_lowlight_image(npy, "raw_packed"), out)


def test_packed_to_raw_rgb_and_pattern_lookup():
    mosaic = np.array([[10, 20], [40, 30]], dtype=np.uint16)  # RGGB: R=10, G1=20, G2=40, B=30
    p = raw_io.pack_raw_bayer(mosaic, [[0, 1], [3, 2]], [0, 0, 0, 0], 100)
    np.testing.assert_allclose(p[0, 0], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(raw_io.packed_to_raw_rgb(p)[0, 0], [0.1, 0.3, 0.3])
    # BGGR camera: B at (0,0)
    p = raw_io.pack_raw_bayer(mosaic, [[2, 1], [3, 0]], [0, 0, 0, 0], 100)
    np.testing.assert_allclose(p[0, 0], [0.3, 0.2, 0.1, 0.4])


def test_decode_cache(tmp_path):

    f = tmp_path / "a.bin"
    f.write_bytes(b"x")
    calls = []

    def decode():
        calls.append(1)
        return np.ones((2, 2, 3), np.float32) * len(calls)

    cache = DecodeCache(max_items=4, cache_dir=str(tmp_path / "cache"))
    a = cache.get(str(f), {"fmt": "raw"}, decode)
    b = cache.get(str(f), {"fmt": "raw"}, decode)
    assert len(calls) == 1 and np.array_equal(a, b)
    cache2 = DecodeCache(max_items=0, cache_dir=str(tmp_path / "cache"))  # fresh process: disk hit
    cache2.get(str(f), {"fmt": "raw"}, decode)
    assert len(calls) == 1
    cache.get(str(f), {"fmt": "raw", "exposure_ratio": 2}, decode)  # other options: new entry
    assert len(calls) == 2
    os.utime(f, ns=(1, 1))  # file changed (mtime): stale entries are not used
    cache2.get(str(f), {"fmt": "raw"}, decode)
    assert len(calls) == 3


def test_camera_raw_dataset_with_exif_ratio_through_mapper(sony_arw, tmp_path):

    (tmp_path / "raw").mkdir()
    for n in (1, 2):  # LIS numbering: normal 1, dark 2 (here the same capture, so the ratio is 1)
        os.symlink(sony_arw, tmp_path / "raw" / f"{n}.ARW")
    ann = {
        "images": [{"id": 1, "file_name": "2.ARW", "height": 3464, "width": 5184}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 5,
                "iscrowd": 0,
                "area": 4e6,
                "bbox": [1000, 1000, 2000, 2000],
            }
        ],
        "categories": [{"id": i, "name": n} for i, n in enumerate(LIS_CLASSES)],
    }
    (tmp_path / "a.json").write_text(json.dumps(ann))
    name = "test_raw_exif_ratio"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_lowlight_dataset(
        name,
        str(tmp_path / "a.json"),
        str(tmp_path / "raw"),
        image_format="raw",
        thing_classes=LIS_CLASSES,
        exposure_ratio="exif",
        raw_output="packed",
    )
    rec = DatasetCatalog.get(name)[0]
    assert rec["pair_file_name"].endswith(os.path.join("raw", "1.ARW"))
    cfg = segalias_cfg(INPUT__MIN_SIZE_TRAIN=(173,), INPUT__RANDOM_FLIP="none", INPUT__FORMAT="RGB")
    out = LowLightDatasetMapper(cfg, True)(rec)
    img = out["image"]
    assert img.shape == (4, 173, 259)  # packed (1732x2592) resized: annotations scaled to it
    box = out["instances"].gt_boxes.tensor[0].tolist()
    assert box == pytest.approx([1000 / 20.02, 1000 / 20.02, 3000 / 20.02, 3000 / 20.02], rel=0.01)
    # ratio 1: the packed planes are the plain normalised data (x 255)
    assert float(img[1].mean()) == pytest.approx(255 * 0.0198, rel=0.05)


# ------------------------------------------------------------------------------ truncated RAW files
@pytest.mark.parametrize("keep", ["1MB", "half", "all_but_1KB"])
def test_truncated_sony_arw_is_rejected_naming_what_is_missing(sony_arw, tmp_path, keep):
    data = open(sony_arw, "rb").read()
    size = len(data)
    assert size == 18649856
    cut = {"1MB": 1 << 20, "half": size // 2, "all_but_1KB": size - 1024}[keep]
    bad = tmp_path / f"cut_{keep}.ARW"
    bad.write_bytes(data[:cut])
    with pytest.raises(raw_io.RawDecodeError) as e:
        raw_io.read_camera_raw(str(bad))
    msg = str(e.value)
    # the raw strip of this file (SubIFD 0 of IFD0: StripOffsets 581632, StripByteCounts 18068224,
    # read from the file with exiftool-style tag dumps) ends exactly at the end of the intact file
    assert f"cut_{keep}.ARW" in msg and "truncated" in msg
    assert "declares 18068224 bytes at offset 581632" in msg and f"the file has {cut} bytes" in msg
    assert f"({size - cut} missing)" in msg
    with pytest.raises(raw_io.RawDecodeError, match=f"cut_{keep}.ARW"):
        raw_io.read_lowlight_image(
            str(bad), "raw_rgb"
        )  # the dataset path goes through the same check


def test_libraw_alone_does_not_notice_a_truncated_arw(sony_arw, tmp_path):
    """Why the header check exists: LibRaw decodes a 1 MB cut without an error and without zero
    rows."""
    import rawpy

    bad = tmp_path / "cut.ARW"
    bad.write_bytes(open(sony_arw, "rb").read()[: 1 << 20])
    with rawpy.imread(str(bad)) as raw:
        mosaic = raw.raw_image_visible
        assert (
            mosaic.shape == (3464, 5184) and mosaic[-1].any()
        )  # the old zero-last-row test misses it

    assert first_missing_block(tiff_data_blocks(sony_arw), 18649856) == (
        None,
        0,
    )  # intact: nothing missing
    # (the intact file decoding through read_camera_raw is test_sony_arw_packs_like_rawpy)


def _hand_made_tiff():
    """Big-endian TIFF: IFD0 (SubIFDs, JPEG preview) -> SubIFD with 2 tiles, layout written out by
    hand.

    0 header | 8 IFD0 (4 entries, 54 B) | 62 SubIFD (5 entries, 66 B) | 128 tile offsets (2 LONG) |
    136 tile byte counts | 144 JPEG (100 B) | 244 tile 1 (300 B) | 544 tile 2 (300 B) | 844 = end
    """

    def ifd(entries):
        out = struct.pack(">H", len(entries))
        for tag, typ, count, value in entries:
            field = struct.pack(">HH", value, 0) if typ == 3 else struct.pack(">I", value)
            out += struct.pack(">HHI", tag, typ, count) + field
        return out + struct.pack(">I", 0)

    head = b"MM" + struct.pack(">HI", 42, 8)
    ifd0 = ifd([(0xFE, 4, 1, 1), (0x14A, 4, 1, 62), (0x201, 4, 1, 144), (0x202, 4, 1, 100)])
    sub = ifd(
        [
            (0xFE, 4, 1, 0),
            (0x100, 3, 1, 64),
            (0x101, 3, 1, 32),
            (0x144, 4, 2, 128),
            (0x145, 4, 2, 136),
        ]
    )
    body = (
        struct.pack(">2I", 244, 544) + struct.pack(">2I", 300, 300) + b"\xff" * 100 + b"\x01" * 600
    )
    data = head + ifd0 + sub + body
    assert (len(head + ifd0), len(head + ifd0 + sub), len(data)) == (62, 128, 844)
    return data


def test_tiff_layout_of_a_hand_made_file(tmp_path):

    p = tmp_path / "x.dng"
    p.write_bytes(_hand_made_tiff())
    got = sorted((b.offset, b.length, b.is_raw) for b in tiff_data_blocks(str(p)))
    assert got == [
        (8, 54, False),
        (62, 66, False),
        (128, 8, False),
        (136, 8, False),
        (144, 100, False),
        (244, 300, True),
        (544, 300, True),
    ]
    not_tiff = tmp_path / "y.cr3"
    not_tiff.write_bytes(b"\x00\x00\x00\x18ftypcrx " + bytes(100))
    assert tiff_data_blocks(str(not_tiff)) is None


@pytest.mark.parametrize(
    "cut,expected",
    [
        (
            843,
            r"raw data \(tile 2 of 2 in IFD0/SubIFD0, 64x32\) declares 300 bytes at offset 544 "
            r".*\(1 missing\)",
        ),
        (
            400,
            r"raw data \(tile 2 of 2 in IFD0/SubIFD0, 64x32\) declares 300 bytes at offset 544 "
            r".*has 400 bytes",
        ),
        (200, r"tile 2 of 2 .*; 2 more declared block"),  # tiles and the JPEG preview are cut
        # the tile tables are cut: which image is the raw one is unknown, the last-ending block is
        # named
        (
            130,
            r"truncated: JPEG data 1 of 1 in IFD0 declares 100 bytes at offset 144 .*; 2 more "
            r"declared block",
        ),
        (40, r"IFD0 \(image file directory, 4 entries\) declares 54 bytes at offset 8"),
    ],
)
def test_truncated_hand_made_tiff(tmp_path, cut, expected):
    p = tmp_path / "x.dng"
    p.write_bytes(_hand_made_tiff()[:cut])
    with pytest.raises(raw_io.RawDecodeError, match=expected) as e:
        raw_io.read_camera_raw(str(p))
    assert (
        "x.dng" in str(e.value) and e.value.__cause__ is None
    )  # found from the header, before LibRaw
