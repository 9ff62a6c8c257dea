"""Image files of a dataset checked against their records: existence, declared size, pixel format,
decoding.

**Declared size.** A record's ``height`` / ``width`` is the frame its annotations are drawn in. The
mapper scales annotations to the decoded image only for half-resolution inputs, so the rule depends
on the format (:func:`declared_size_problem`):

* sRGB and rendered raw-RGB files (PNG/JPEG/TIFF/.npy): the declared size must equal the file's size
  (Detectron2's rule);
* camera RAW files (any format; they decode to half the visible sensor area, ``raw.sizes`` // 2) and
  ``raw_packed`` files (a packed file is half its full-resolution frame): the declared frame may be
  any size with the decoded image's orientation and aspect ratio, within :data:`ASPECT_TOLERANCE` (1
  %). That admits the full-resolution frame (2x the decoded size, odd sizes included), the decoded
  size itself, and a rendering's frame (LIS declares 1200x800 for its 6744x4502 sensor area); a
  transposed or anisotropic frame would rescale the annotations by different factors in x and y, and
  is an error.

**Cost.** At load (:func:`check_record_files`), every image is ``stat``-ed (about 2 us) and, with
``image_checks="header"`` (the default), its header is read: PIL (PNG/JPEG/TIFF: about 0.07 ms), the
PNG IHDR for the bit depth, ``numpy.load(mmap_mode="r")`` for ``.npy``, rawpy's ``open_file``
without unpacking for camera RAW (about 0.8 ms; measured on this machine, warm cache). Headers are
memoised per process by (path, size, mtime), so the several ``DatasetCatalog.get`` calls of one run
read them once; 100k images cost seconds on a local disk, more on a network file system, where
``image_checks="exists"`` keeps only the ``stat``. Decoding every image is the job of the check pass
(:func:`verify_dataset_images`, ``tools/check_dataset.py``).
"""

import contextlib
import logging
import os
import struct
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from detectron2.data import DatasetCatalog
from PIL import Image

from ..config import load_config
from .dataset_mapper import LowLightDatasetMapper
from .label_io import read_label_map
from .raw_io import ImageReadError, LowLightDataError, UnsupportedFormatError, is_camera_raw

__all__ = [
    "ImageSizeError",
    "ImageHeader",
    "ASPECT_TOLERANCE",
    "IMAGE_CHECK_MODES",
    "decodes_at_half_resolution",
    "declared_size_problem",
    "read_image_header",
    "check_record_files",
    "verify_dataset_images",
    "load_checks_deferred",
    "DatasetCheck",
    "check_dataset",
]

logger = logging.getLogger(__name__)

#: relative difference allowed between the x and y scale factors of a half-resolution record
ASPECT_TOLERANCE = 0.01
#: ``image_checks`` of :func:`check_record_files`: "none" is for ground-truth-only use (scoring
#: saved predictions), where the images are not read and need not be present
IMAGE_CHECK_MODES = ("header", "exists", "none")
#: at most this many problems are listed in an error message
_LISTED = 5

#: set by :func:`load_checks_deferred`: the check pass does the load-time file checks itself, per
#: record
_DEFERRED = []

#: what the reader will return: ``height`` x ``width`` (decoded), ``bits`` per sample (None:
#: unknown)
ImageHeader = namedtuple("ImageHeader", "height width bits")
_HEADERS = {}


class ImageSizeError(LowLightDataError, ValueError):
    """A record's declared height/width does not fit its image file (see the module docstring)."""


def decodes_at_half_resolution(path, image_format):
    """True for records whose annotations the mapper scales to the decoded image (camera RAW, packed
    Bayer)."""
    return image_format in ("raw", "raw_packed") or is_camera_raw(path)


def declared_size_problem(declared_hw, decoded_hw, half_resolution):
    """None if a record declaring ``declared_hw`` fits an image decoding to ``decoded_hw``, else
    what is wrong."""
    (h0, w0), (h, w) = (
        (int(declared_hw[0]), int(declared_hw[1])),
        (int(decoded_hw[0]), int(decoded_hw[1])),
    )
    if (h0, w0) == (h, w):
        return None
    if not half_resolution:
        return (
            f"declares {w0}x{h0} (width x height) but the file is {w}x{h}; the annotations are in "
            "the declared frame, so the JSON or the file is wrong"
        )
    sy, sx = h / h0, w / w0
    if abs(sy / sx - 1.0) <= ASPECT_TOLERANCE:
        return None
    return (
        f"declares {w0}x{h0} (width x height) but the file decodes to {w}x{h}: the annotations "
        "would be scaled by "
        f"{sx:.4g} in x and {sy:.4g} in y (half-resolution inputs may declare any frame of the "
        "same aspect ratio, "
        f"within {ASPECT_TOLERANCE:.0%}, e.g. the full-resolution {2 * w}x{2 * h})"
    )


# ------------------------------------------------------------------------------------------ headers
def _png_header(f):
    head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height, bits = struct.unpack(">IIB", head[16:25])
    return ImageHeader(height, width, bits)


def _read_header(path):
    ext = os.path.splitext(path)[1].lower()
    if is_camera_raw(path):
        import rawpy  # noqa: PLC0415  (optional dependency)

        raw = rawpy.RawPy()
        try:
            raw.open_file(path)  # metadata only, no unpack
            sizes = raw.sizes
        finally:
            raw.close()
        return ImageHeader(
            sizes.height // 2, sizes.width // 2, None
        )  # packed / raw-RGB: half the visible area
    if ext == ".npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if arr.ndim not in (2, 3):
            raise ValueError(f"an image array has 2 or 3 dimensions, this one {arr.shape}")
        return ImageHeader(arr.shape[0], arr.shape[1], arr.dtype.itemsize * 8)
    with open(path, "rb") as f:
        png = _png_header(f)
    if png is not None:
        return png

    with Image.open(path) as im:
        bits = (
            16
            if im.mode.startswith("I;16")
            else (8 if im.mode in ("L", "P", "RGB", "RGBA", "CMYK") else None)
        )
        tiff_bits = getattr(im, "tag_v2", {}).get(
            258
        )  # BitsPerSample: PIL shows 16-bit RGB(A) TIFFs as "RGB(A)"
        if tiff_bits:
            bits = max(tiff_bits) if isinstance(tiff_bits, tuple) else int(tiff_bits)
        return ImageHeader(im.size[1], im.size[0], bits)


def read_image_header(path, stat=None):
    """The :class:`ImageHeader` of ``path`` (memoised by path, size and mtime);
    :class:`ImageReadError` if the header cannot be read."""
    st = stat or os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _HEADERS:
        try:
            _HEADERS[key] = _read_header(path)
        except Exception as e:  # noqa: BLE001  (PIL, rawpy and numpy raise many types)
            raise ImageReadError(
                f"cannot read the header of '{path}' (not an image, or corrupt): "
                f"{type(e).__name__}: {e}"
            ) from e
    return _HEADERS[key]


# ------------------------------------------------------------------------------------------ at load
def _record_problem(rec, image_format, mode):
    """(kind, message) of the first problem of one record's files, or None."""
    path = rec["file_name"]
    fmt = rec.get("image_format") or image_format
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", f"'{path}' does not exist"
    except OSError as e:
        return "unreadable", f"'{path}' cannot be accessed: {e}"
    if not os.path.isfile(path):
        return "not_a_file", f"'{path}' is a directory, not an image file" if os.path.isdir(
            path
        ) else f"'{path}' is not a regular file"
    for key in ("pair_file_name", "clean_file_name"):
        if rec.get(key) and not os.path.exists(rec[key]):
            return "missing", f"its {key} '{rec[key]}' does not exist"
    if mode != "header":
        return None
    try:
        header = read_image_header(path, st)
    except ImageReadError as e:
        return "unreadable", str(e)
    if fmt == "srgb" and header.bits == 16:
        return "format", (
            f"'{path}' is a 16-bit image registered as image_format 'srgb' (8-bit photos); "
            "register 16-bit raw-RGB renderings as 'raw_rgb' (4-channel: 'raw_packed')"
        )
    problem = declared_size_problem(
        (rec["height"], rec["width"]),
        (header.height, header.width),
        decodes_at_half_resolution(path, fmt),
    )
    return ("size", f"'{path}' {problem}") if problem else None


_ERRORS = {
    "missing": ImageReadError,
    "unreadable": ImageReadError,
    "not_a_file": ImageReadError,
    "format": UnsupportedFormatError,
    "size": ImageSizeError,
}
_WHAT = {
    "missing": "missing",
    "unreadable": "unreadable",
    "not_a_file": "not files",
    "format": "in the wrong format",
    "size": "of another size than declared",
}


def check_record_files(records, image_format, where, mode="header", workers=8):
    """Check every record's image (and pair / clean twin) file; raise one error naming ``where``
    (dataset and JSON), how many records fail and the first few. ``mode``: "header" (stat + header),
    "exists" (stat only) or "none" (nothing)."""
    if mode not in IMAGE_CHECK_MODES:
        raise ValueError(f"image_checks must be one of {IMAGE_CHECK_MODES}, got {mode!r}")
    if mode == "none" or _DEFERRED:
        return
    check = lambda rec: _record_problem(rec, image_format, mode)  # noqa: E731
    if (
        mode == "header" and len(records) > 64 and workers > 1
    ):  # I/O bound: threads overlap the reads
        with ThreadPoolExecutor(workers) as pool:
            problems = list(pool.map(check, records))
    else:
        problems = [check(r) for r in records]
    bad = [(rec, p) for rec, p in zip(records, problems) if p is not None]
    if not bad:
        return
    kind = bad[0][1][0]
    same = [(rec, msg) for rec, (k, msg) in bad if k == kind]
    listed = "; ".join(f"image id={rec.get('image_id')!r}: {msg}" for rec, msg in same[:_LISTED])
    more = f"; and {len(same) - _LISTED} more" if len(same) > _LISTED else ""
    others = (
        f" ({len(bad) - len(same)} more records have other problems)"
        if len(bad) > len(same)
        else ""
    )
    raise _ERRORS[kind](
        f"{where}: {len(same)} of {len(records)} images are {_WHAT[kind]}: {listed}{more}{others}"
    )


# --------------------------------------------------------------------------------------- check pass
def _progress(total, enabled):
    """A callable advancing a tqdm bar (or logging every 10 %) and a closer."""
    try:
        from tqdm import tqdm  # noqa: PLC0415  (optional dependency)
    except ImportError:
        tqdm = None
    if tqdm is not None and enabled:
        bar = tqdm(total=total, unit="img", dynamic_ncols=True)
        return bar.update, bar.close
    start, done = time.perf_counter(), [0]

    def step(n=1):
        done[0] += n
        if enabled and (done[0] == total or done[0] % max(1, total // 10) == 0):
            logger.info(f"checked {done[0]}/{total} images ({time.perf_counter() - start:.1f} s)")

    return step, lambda: None


def verify_dataset_images(records, read_image, workers=4, progress=True, default_format="srgb"):
    """Check every record's files as the loader does (exists, a file, header, twins), decode it with
    ``read_image(record) -> (HWC array, image_format)`` (the mapper's reader) and check the pixels
    are finite and the size fits the declaration. Returns ``[(record, message)]`` of the failures
    (all of them)."""

    def one(rec):
        problem = _record_problem(rec, rec.get("image_format") or default_format, "header")
        if problem:
            return problem[1]
        try:
            image, fmt = read_image(dict(rec))
        except Exception as e:  # noqa: BLE001  (report every failure, do not stop at the first)
            return f"{type(e).__name__}: {e}"
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            return f"'{rec['file_name']}' decodes to {bad} non-finite pixel values"
        if "height" in rec and "width" in rec:
            problem = declared_size_problem(
                (rec["height"], rec["width"]),
                image.shape[:2],
                decodes_at_half_resolution(rec["file_name"], fmt),
            )
            if problem:
                return f"'{rec['file_name']}' {problem}"
        if rec.get("sem_seg_file_name"):
            try:
                labels = read_label_map(rec["sem_seg_file_name"])
            except Exception as e:  # noqa: BLE001
                return f"its label map: {type(e).__name__}: {e}"
            if labels.shape != image.shape[:2] and not decodes_at_half_resolution(
                rec["file_name"], fmt
            ):
                return (
                    f"its label map '{rec['sem_seg_file_name']}' is "
                    f"{labels.shape[1]}x{labels.shape[0]}, the "
                    f"image {image.shape[1]}x{image.shape[0]}"
                )
        return None

    step, close = _progress(len(records), progress)
    failures = []
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:  # decoders (cv2, LibRaw) release the GIL
            for rec, msg in zip(records, pool.map(one, records)):
                step(1)
                if msg:
                    failures.append((rec, msg))
    finally:
        close()
    return failures


@contextlib.contextmanager
def load_checks_deferred():
    """Within: loaders skip :func:`check_record_files`, so a dataset with bad files still loads and
    the check pass can list every bad file (not only the first kind)."""
    _DEFERRED.append(True)
    try:
        yield
    finally:
        _DEFERRED.pop()


class DatasetCheck(namedtuple("DatasetCheck", "name total failures load_error")):
    """Result of :func:`check_dataset`: ``failures`` = ``[(file_name, reason)]``; ``load_error``:
    why the dataset could not be loaded at all (its annotations), else None."""

    @property
    def ok(self):
        return self.load_error is None and not self.failures

    def summary(self, listed=50):
        if self.load_error is not None:
            return f"dataset '{self.name}': cannot be loaded: {self.load_error}"
        lines = [
            f"dataset '{self.name}': {self.total - len(self.failures)} ok, {len(self.failures)} bad"
        ]
        lines += [f"  {file_name}: {reason}" for file_name, reason in self.failures[:listed]]
        if len(self.failures) > listed:
            lines.append(f"  ... and {len(self.failures) - listed} more")
        return "\n".join(lines)


def check_dataset(name, cfg=None, workers=4, progress=True):
    """Load the registered dataset ``name`` and decode every image as the test-time mapper reads it
    (``cfg``: its INPUT options; None: the defaults); returns a :class:`DatasetCheck`. The load-time
    file checks are done per record here, so every bad file is listed; annotation errors stop the
    load (``load_error``)."""

    cfg = cfg if cfg is not None else load_config("")
    mapper = LowLightDatasetMapper(cfg, is_train=False)
    try:
        with load_checks_deferred():
            records = DatasetCatalog.get(name)
    except LowLightDataError as e:
        return DatasetCheck(name, 0, [], f"{type(e).__name__}: {e}")
    failures = verify_dataset_images(
        records, mapper.read_image, workers, progress, mapper.default_image_format
    )
    return DatasetCheck(
        name, len(records), [(rec["file_name"], msg) for rec, msg in failures], None
    )
