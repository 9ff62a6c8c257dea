"""Marks this Detectron2 as the pure-Python v0.6 backport built by segalias_d2 (dev/d2_backport/).

The build writes ``_segalias_backport.json`` next to this file: the pinned source, the backport
revision, the key of the build inputs and the one-line summary of every source fix applied.
"""
import json as _json
import os as _os

with open(_os.path.join(_os.path.dirname(__file__), "_segalias_backport.json")) as _f:
    _INFO = _json.load(_f)

SOURCE = _INFO["source"]
REVISION = _INFO["revision"]
BUILD_KEY = _INFO["build_key"]
PATCHES = _INFO["patches"]
