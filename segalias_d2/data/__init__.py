"""Low-light data layer: RAW reading, low-light synthesis, dataset registration, mapper, demo data.

Importing this package registers the built-in datasets (LIS, Cityscapes, demo) lazily.
"""

from . import builtin  # noqa: F401  (registers datasets)
from .dataset_mapper import LowLightDatasetMapper  # noqa: F401
from .lowlight import (  # noqa: F401
    LIS_CLASSES,
    LIS_ORIGINAL_JSON_CLASSES,
    AnnotationError,
    DatasetNotFoundError,
    class_index_map,
    register_lowlight_dataset,
    remap_instances,
)
from .raw_io import (  # noqa: F401
    IMAGE_FORMATS,
    ImageReadError,
    LowLightDataError,
    RawDecodeError,
    UnsupportedFormatError,
    pack_raw_bayer,
    packed_to_raw_rgb,
    read_camera_raw,
    read_lowlight_image,
)
from .synthesis import synthesize_lowlight  # noqa: F401
