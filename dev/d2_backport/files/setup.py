"""setup.py of the pure-Python Detectron2 v0.6 backport.

Copied into the patched source tree by dev/d2_backport/build_backport.py, which also writes the
build record detectron2/_segalias_backport.json that the version comes from.
"""
import json
import os

from setuptools import find_namespace_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "detectron2", "_segalias_backport.json")) as f:
    INFO = json.load(f)

setup(
    name="detectron2",
    version=INFO["dist_version"],
    description=f"Detectron2 v0.6 (pure-Python backport built by segalias_d2 from {INFO['source']})",
    license="Apache-2.0",
    # namespace discovery so that the model-zoo config folders ship as package data
    packages=find_namespace_packages(include=["detectron2", "detectron2.*"]),
    package_data={"": ["*.yaml", "*.py", "*.json"]},
    include_package_data=True,
    python_requires=">=3.7",
)
