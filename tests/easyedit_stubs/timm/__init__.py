"""TEST STUB of ``timm`` (see tests/easyedit_stubs/__init__.py); not the real package."""

__version__ = "0.0.0+stub"
