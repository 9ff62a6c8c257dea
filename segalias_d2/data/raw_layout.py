"""What a TIFF-based camera RAW file (CR2, ARW, NEF, DNG, PEF, ORF, RW2, ...) declares about its
data.

Why: LibRaw does not notice most truncated files. Its loaders read the image with unchecked
``fread`` calls, so a file cut short decodes "successfully" with the missing rows filled with
whatever the decoder produces (not necessarily zeros: a Sony ARW cut to 1 MB decodes to a mosaic
whose last row is not zero), and its data-error counter, which rawpy checks after ``unpack``, stays
at 0. The file itself says how long it should be: every IFD lists the offset and byte count of
its strips / tiles (the raw image and the previews) and JPEG data, and the offset of every tag
value that does not fit in the entry. A file that ends before one of those blocks is truncated.

:func:`tiff_data_blocks` walks the header only (IFD0 and its chain, SubIFDs, the EXIF, GPS and
Interoperability IFDs; MakerNote internals are not walked, their offsets are vendor-defined) and
returns the declared blocks; it reads a few kilobytes, never the image data. Files that are not
TIFF-structured (CR3, RAF, X3F, ...) return ``None``.
"""

import os
import struct
from collections import namedtuple

__all__ = ["DataBlock", "tiff_data_blocks", "first_missing_block"]

#: one declared data block: ``what`` (human description), ``offset`` and ``length`` in bytes;
#: ``is_raw`` marks the blocks of the largest image (the raw data LibRaw decodes)
DataBlock = namedtuple("DataBlock", "what offset length is_raw")

# TIFF magic numbers: standard TIFF, Olympus ORF ("RO", "SR"), Panasonic RW2
_MAGICS = (42, 0x4F52, 0x5352, 0x55)
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_IFD_POINTERS = {0x14A: "SubIFD", 0x8769: "EXIF", 0x8825: "GPS", 0xA005: "Interop"}
# (offsets tag, byte-counts tag, kind)
_DATA_TAGS = ((0x111, 0x117, "strip"), (0x144, 0x145, "tile"), (0x201, 0x202, "JPEG data"))
_MAX_IFDS = 256
_MAX_ENTRIES = 4096  # more entries than any real IFD: not an IFD (corrupt file), not walked


def _read(f, size, offset, n):
    if offset < 0 or offset + n > size:
        return None
    f.seek(offset)
    b = f.read(n)
    return b if len(b) == n else None


def _values(f, size, bo, typ, count, field):
    """Integer values of an entry (types SHORT / LONG / IFD), or None if they lie beyond the
    file."""
    code = {3: "H", 4: "I", 13: "I"}.get(typ)
    if code is None:
        return None
    n = struct.calcsize(code) * count
    raw = field[:n] if n <= 4 else _read(f, size, struct.unpack(bo + "I", field)[0], n)
    return None if raw is None else list(struct.unpack(f"{bo}{count}{code}", raw))


def tiff_data_blocks(path):
    """Declared data blocks of a TIFF-structured RAW file, or None if ``path`` is not
    TIFF-structured.

    Returns a list of :class:`DataBlock`: every IFD itself, every out-of-line tag value, every
    strip / tile / JPEG block. Blocks may extend past the end of the file (that is the point).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = _read(f, size, 0, 8)
        if head is None or head[:2] not in (b"II", b"MM"):
            return None
        bo = "<" if head[:2] == b"II" else ">"
        magic, first = struct.unpack(bo + "HI", head[2:8])
        if magic not in _MAGICS:
            return None
        blocks, images = [], []  # images: (ifd name, kind, [(offset, length)], width, height)
        tables_cut = False  # an offsets / byte-counts table lies beyond the end of the file
        queue, seen = [(first, "IFD0", True)], set()
        chain = 0
        while queue and len(seen) < _MAX_IFDS:
            offset, name, in_chain = queue.pop(0)
            if offset == 0 or offset in seen:
                continue
            seen.add(offset)
            count_field = _read(f, size, offset, 2)
            if count_field is None:
                blocks.append(DataBlock(f"{name} (image file directory)", offset, 2, False))
                continue
            n = struct.unpack(bo + "H", count_field)[0]
            if n == 0 or n > _MAX_ENTRIES:
                continue
            blocks.append(
                DataBlock(
                    f"{name} (image file directory, {n} entries)", offset, 2 + 12 * n + 4, False
                )
            )
            table = _read(f, size, offset + 2, 12 * n + 4)
            if table is None:
                continue
            entries = {}
            for i in range(n):
                tag, typ, count, field = struct.unpack(bo + "HHI4s", table[12 * i : 12 * i + 12])
                entries[tag] = (typ, count, field)
                length = _TYPE_SIZES.get(typ, 0) * count
                if length > 4:  # the value lives elsewhere in the file
                    at = struct.unpack(bo + "I", field)[0]
                    blocks.append(
                        DataBlock(f"the value of tag 0x{tag:04x} in {name}", at, length, False)
                    )
            for tag, label in _IFD_POINTERS.items():
                if tag in entries:
                    for k, sub in enumerate(_values(f, size, bo, *entries[tag]) or []):
                        sub_name = f"{name}/{label}{k if label == 'SubIFD' else ''}"
                        queue.append((sub, sub_name, False))
            dims = [
                (_values(f, size, bo, *entries[t]) or [None])[0] if t in entries else None
                for t in (0x100, 0x101)
            ]
            for off_tag, len_tag, kind in _DATA_TAGS:
                if off_tag in entries and len_tag in entries:
                    offs = _values(f, size, bo, *entries[off_tag])
                    lens = _values(f, size, bo, *entries[len_tag])
                    tables_cut |= offs is None or lens is None
                    images.append((name, kind, list(zip(offs or [], lens or [])), *dims))
            if in_chain:
                nxt = struct.unpack(bo + "I", table[12 * n : 12 * n + 4])[0]
                chain += 1
                queue.append((nxt, f"IFD{chain}", True))
    # the raw data is the largest image; unknowable when a table is cut (its image may be larger)
    raw_index = (
        None
        if tables_cut
        else max(range(len(images)), key=lambda i: sum(n for _, n in images[i][2]), default=None)
    )
    for i, (name, kind, parts, w, h) in enumerate(images):
        dims = f", {w}x{h}" if w and h else ""
        for k, (off, length) in enumerate(parts):
            what = f"{kind} {k + 1} of {len(parts)} in {name}{dims}"
            blocks.append(
                DataBlock(
                    ("raw data (" + what + ")") if i == raw_index else what,
                    off,
                    length,
                    i == raw_index,
                )
            )
    return blocks


def first_missing_block(blocks, size):
    """The declared block to report for a file of ``size`` bytes (raw data first), and how many are
    cut."""
    short = [b for b in blocks if b.length > 0 and b.offset + b.length > size]
    if not short:
        return None, 0
    return max(short, key=lambda b: (b.is_raw, b.offset + b.length)), len(short)
