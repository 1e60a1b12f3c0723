"""TEST STUB of ``torchvision.transforms.functional``."""

import enum

from _easyedit_stub_helper import module_getattr


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


__getattr__ = module_getattr(__name__)
