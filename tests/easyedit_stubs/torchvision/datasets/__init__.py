"""TEST STUB of ``torchvision.datasets``."""
