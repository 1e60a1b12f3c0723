"""TEST STUB of ``timm.models.layers``: every attribute raises when called."""

from _easyedit_stub_helper import module_getattr

__getattr__ = module_getattr(__name__)
