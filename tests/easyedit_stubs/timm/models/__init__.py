"""TEST STUB of ``timm.models``."""
