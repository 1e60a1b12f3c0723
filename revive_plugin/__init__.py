"""revive-plugin: REVIVE dominant-subspace protection for sequential knowledge editing.

The core (projection, basis cache, :class:`Reviver`) needs only torch and safetensors;
EasyEdit is imported only by ``revive_plugin.easyedit``.
"""

from .cache import BasisCache, StaleCacheWarning, default_cache_dir, weight_fingerprint
from .config import ReviveConfig, ReviveConfigError, check_tau
from .projection import DominantBasis, dominant_rank, literal_algorithm1
from .reviver import Reviver, get_parameter

__version__ = "0.1.0"

__all__ = [
    "BasisCache",
    "DominantBasis",
    "ReviveConfig",
    "ReviveConfigError",
    "Reviver",
    "StaleCacheWarning",
    "check_tau",
    "default_cache_dir",
    "dominant_rank",
    "get_parameter",
    "literal_algorithm1",
    "weight_fingerprint",
    "__version__",
]
