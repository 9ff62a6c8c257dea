"""segalias_d2: `pip install -e .`

Dependencies carry loose lower bounds so users can bring their own torch and Detectron2.
Detectron2 itself is not on the package index: use an official build (`bash dev/setup_env.sh` builds
one from SEGALIAS_D2_SOURCE=<folder | archive | git URL>), or let `bash dev/setup_env.sh` provision
the pure-Python Detectron2 v0.6 backport (dev/d2_backport/). The pinned development set lives in
requirements/build.txt and requirements/dev.txt.
"""

from setuptools import find_packages, setup

setup(
    name="segalias_d2",
    version="0.1.0",
    description="Frequency-aliasing-aware segmentation (DAF, FreqMix, boundary error types) "
    "and low-light RAW/sRGB data for Detectron2",
    packages=find_packages(include=["segalias_d2", "segalias_d2.*"]),
    python_requires=">=3.8",
    install_requires=[
        "torch>=1.10",
        "torchvision>=0.11",
        "numpy>=1.20",
        "fvcore>=0.1.5",
        "iopath>=0.1.7",
        "pycocotools>=2.0.2",
        "opencv-python-headless>=4.5",
        "rawpy>=0.17",
        "shapely>=1.7",
        "matplotlib>=3.3",
        "tqdm>=4.29",
        "tensorboard",  # Detectron2 trainers write TensorBoard events
        "scipy>=1.5",
    ],
    extras_require={"dev": ["pytest>=7"]},
)
