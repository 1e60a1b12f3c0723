"""TEST STUBS for ``torchvision`` and ``timm`` (not real packages; used only by tests/test_easyedit*.py).

The EasyEdit wheel (easyeditor==0.0.1.dev0) and EasyEdit main import ``torchvision`` and ``timm`` at
package import time for their multimodal (BLIP-2 / MiniGPT-4) trainers. Neither package has a CPU
build installable next to torch 2.13 here, and no text-editing path uses them. :func:`install` puts
these stub packages on ``sys.path`` only when the real ones are absent; every stub function raises
``RuntimeError`` if it is ever called, so a test can never silently depend on them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

STUB_ROOT = Path(__file__).resolve().parent
STUBBED = ("torchvision", "timm")


def install() -> list[str]:
    """Make ``torchvision``/``timm`` importable (stubs where missing); returns the names stubbed."""
    import transformers  # noqa: F401  - fixes transformers' availability flags before stubs appear

    missing = [name for name in STUBBED if name not in sys.modules and importlib.util.find_spec(name) is None]
    if missing and str(STUB_ROOT) not in sys.path:
        sys.path.append(str(STUB_ROOT))
    return missing
