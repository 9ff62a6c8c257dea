"""``DecodeCache``: decode each image once, for the dataset mapper
(``DATALOADER.SEGALIAS.DECODE_CACHE``)."""

import hashlib
import json
import os
from collections import OrderedDict

import numpy as np

__all__ = ["DecodeCache"]


class DecodeCache:
    """Decode each image once: an in-memory LRU (``max_items``) and/or an on-disk ``.npy`` cache.

    Keys hash the absolute path, its mtime and size, and the decode options, so a changed file or
    different options never hit a stale entry. The memory cache lives in each DataLoader worker
    process; the disk cache is shared (files are written atomically).
    """

    def __init__(self, max_items=32, cache_dir=None):
        self.max_items = int(max_items)
        self.cache_dir = cache_dir or None
        self._mem = OrderedDict()
        self.hits = self.misses = 0
        if self.cache_dir:
            os.makedirs(self.cache_dir, exist_ok=True)

    @staticmethod
    def key(path, options):
        st = os.stat(path)
        blob = json.dumps(
            [os.path.abspath(path), st.st_mtime_ns, st.st_size, options],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha1(blob.encode()).hexdigest()

    def get(self, path, options, decode):
        try:
            key = self.key(path, options)
        except OSError:  # not a local file (or missing): let the decoder report it
            return decode()
        if key in self._mem:
            self._mem.move_to_end(key)
            self.hits += 1
            return self._mem[key]
        arr = None
        disk = os.path.join(self.cache_dir, key + ".npy") if self.cache_dir else None
        if disk and os.path.exists(disk):
            try:
                arr = np.load(disk)
                self.hits += 1
            except (OSError, ValueError):
                arr = None
        if arr is None:
            self.misses += 1
            arr = decode()
            if disk:
                tmp = f"{disk}.{os.getpid()}.tmp.npy"
                np.save(tmp, arr)
                os.replace(tmp, disk)
        if self.max_items > 0:
            self._mem[key] = arr
            while len(self._mem) > self.max_items:
                self._mem.popitem(last=False)
        return arr
